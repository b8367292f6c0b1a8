//! The TAP device of one LAN: opened (created if absent), MTU set, brought up, optionally
//! attached to a bridge; removed on exit unless configured to stay.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use thiserror::Error;
use tun_tap::{Iface, Mode};

use crate::io::netdev;

/// Why a TAP could not be set up.
#[derive(Debug, Error)]
pub enum TapError {
    /// /dev/net/tun could not be opened or the TAP not created.
    #[error(
        "cannot open TAP {name}: {cause} (needs root or CAP_NET_ADMIN and /dev/net/tun; EBUSY means another process holds it)"
    )]
    Open {
        /// TAP name.
        name: String,
        /// OS error.
        cause: io::Error,
    },
    /// A setting failed.
    #[error("cannot {what} on TAP {name}: {cause}")]
    Configure {
        /// TAP name.
        name: String,
        /// What was being done.
        what: String,
        /// OS error.
        cause: io::Error,
    },
}

/// An open TAP.
pub struct TapDevice {
    dev: Dev,
    existed: bool,
}

enum Dev {
    /// Plain frames, through tun-tap.
    Plain(Iface),
    /// Opened here with `IFF_VNET_HDR` and TSO/checksum offloads: every read and write
    /// carries a 10-byte virtio-net header (see `gso.rs`).
    Vnet { fd: OwnedFd, name: String },
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Open `/dev/net/tun` as TAP `name` with a virtio-net header and TSO offloads.
fn open_vnet(name: &str) -> io::Result<OwnedFd> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other("interface name too long"));
    }
    // SAFETY: open(2) on a constant NUL-terminated path; the result is checked.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads and writes an ifreq, which IfReq matches in size and layout.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its flags by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offloads) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// How to set up a TAP.
pub struct TapOptions<'a> {
    /// Device name.
    pub name: &'a str,
    /// MTU to set.
    pub mtu: u32,
    /// Bridge to attach to.
    pub bridge: Option<&'a str>,
    /// Keep the device after exit.
    pub keep: bool,
    /// Ask for TSO/checksum offloads (a virtio-net header on every frame).
    pub offload: bool,
}

impl TapDevice {
    /// Open or create the TAP, set it up, and make it non-blocking.
    pub fn open(o: &TapOptions<'_>) -> Result<Self, TapError> {
        let existed = netdev::exists(o.name);
        let open_err = |cause| TapError::Open {
            name: o.name.to_string(),
            cause,
        };
        let vnet = if o.offload {
            match open_vnet(o.name) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    // Older kernels or a TAP held with other flags: carry on without.
                    tracing::warn!(tap = o.name, error = %e, "TAP offloads unavailable; one frame per read");
                    None
                }
            }
        } else {
            None
        };
        let dev = match vnet {
            Some(fd) => Dev::Vnet {
                fd,
                name: o.name.to_string(),
            },
            None => Dev::Plain(Iface::without_packet_info(o.name, Mode::Tap).map_err(open_err)?),
        };
        let cfg = |what: &str, r: io::Result<()>| {
            r.map_err(|cause| TapError::Configure {
                name: o.name.to_string(),
                what: what.to_string(),
                cause,
            })
        };
        if let Dev::Plain(iface) = &dev {
            cfg("set non-blocking mode", iface.set_non_blocking())?;
        }
        let fd = match &dev {
            Dev::Plain(i) => i.as_raw_fd(),
            Dev::Vnet { fd, .. } => fd.as_raw_fd(),
        };
        // A TAP that existed before us was made persistent by someone: leave it as it was.
        if o.keep && !existed {
            cfg("make persistent", netdev::set_persist(fd, true))?;
        }
        cfg(
            &format!("set MTU {}", o.mtu),
            netdev::set_mtu(o.name, o.mtu),
        )?;
        if let Some(br) = o.bridge {
            cfg(
                &format!("attach to bridge {br} (does it exist?)"),
                netdev::bridge_add(br, o.name),
            )?;
        }
        cfg("bring up", netdev::set_up(o.name))?;
        Ok(TapDevice { dev, existed })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        match &self.dev {
            Dev::Plain(i) => i.name(),
            Dev::Vnet { name, .. } => name,
        }
    }

    /// Frames carry a virtio-net header (offloads on).
    pub fn offload(&self) -> bool {
        matches!(self.dev, Dev::Vnet { .. })
    }

    /// Whether the device existed before we opened it.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// Read one frame (non-blocking: `WouldBlock` when none is queued). With offloads,
    /// the virtio-net header comes first.
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.dev {
            Dev::Plain(i) => i.recv(buf),
            Dev::Vnet { fd, .. } => {
                // SAFETY: reads into a valid, writable slice.
                syscall_len(unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                    )
                })
            }
        }
    }

    /// Write one frame. With offloads, `frame` must start with a virtio-net header.
    #[inline]
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        match &self.dev {
            Dev::Plain(i) => i.send(frame),
            Dev::Vnet { fd, .. } => {
                // SAFETY: writes from a valid slice.
                syscall_len(unsafe {
                    libc::write(
                        fd.as_raw_fd(),
                        frame.as_ptr() as *const libc::c_void,
                        frame.len(),
                    )
                })
            }
        }
    }
}

/// A byte count from `read`/`write`, or the error behind -1.
fn syscall_len(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        match &self.dev {
            Dev::Plain(i) => i.as_raw_fd(),
            Dev::Vnet { fd, .. } => fd.as_raw_fd(),
        }
    }
}
