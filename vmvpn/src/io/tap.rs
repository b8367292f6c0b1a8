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
    /// carries a 10-byte virtio-net header (see `gso.rs`). `uso`: the kernel also hands
    /// over UDP GSO frames whole.
    Vnet {
        fd: OwnedFd,
        name: String,
        uso: bool,
    },
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
/// UDP segmentation offload (Linux 6.2); the kernel takes both or neither.
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Ask for checksum, TSO and USO offloads through `set` (TUNSETOFFLOAD), and for the
/// first three alone where the kernel refuses USO (before 6.2 it answers EINVAL to a
/// flag it does not know). Returns whether USO was granted.
fn negotiate_offloads(mut set: impl FnMut(libc::c_ulong) -> io::Result<()>) -> io::Result<bool> {
    let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    match set(base | TUN_F_USO4 | TUN_F_USO6) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => set(base).map(|()| false),
        Err(e) => Err(e),
    }
}

/// Open `/dev/net/tun` as TAP `name` with a virtio-net header and TSO offloads (and USO
/// where the kernel has it: the second value).
fn open_vnet(name: &str) -> io::Result<(OwnedFd, bool)> {
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
    let uso = negotiate_offloads(|flags| {
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })?;
    if !uso {
        tracing::info!(
            tap = name,
            "the kernel has no USO on TAPs (Linux 6.2+): a VM's UDP GSO sends arrive as single datagrams"
        );
    }
    Ok((fd, uso))
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
            Some((fd, uso)) => Dev::Vnet {
                fd,
                name: o.name.to_string(),
                uso,
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

    /// UDP GSO frames are handed over whole too (USO; needs offloads and Linux 6.2).
    pub fn uso(&self) -> bool {
        matches!(self.dev, Dev::Vnet { uso: true, .. })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uso_is_asked_for_and_dropped_where_the_kernel_refuses_it() {
        let mut asked = Vec::new();
        // A kernel with USO.
        assert!(
            negotiate_offloads(|f| {
                asked.push(f);
                Ok(())
            })
            .expect("granted")
        );
        assert_eq!(asked, [0x67]);
        // One without: EINVAL for the unknown flags, then the rest alone.
        asked.clear();
        let granted = negotiate_offloads(|f| {
            asked.push(f);
            if f & (TUN_F_USO4 | TUN_F_USO6) != 0 {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        })
        .expect("TSO still granted");
        assert!(!granted);
        assert_eq!(asked, [0x67, 0x07]);
        // Any other error is the TAP's, not USO's: reported, not retried.
        asked.clear();
        let e = negotiate_offloads(|f| {
            asked.push(f);
            Err(io::Error::from_raw_os_error(libc::EBADF))
        })
        .expect_err("an error");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        assert_eq!(asked, [0x67]);
    }
}
