//! The TAP device of one LAN: opened (created if absent), MTU set, brought up, optionally
//! attached to a bridge; removed on exit unless configured to stay.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use thiserror::Error;
use tun_tap::{Iface, Mode};

use crate::netdev;

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
    iface: Iface,
    existed: bool,
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
}

impl TapDevice {
    /// Open or create the TAP, set it up, and make it non-blocking.
    pub fn open(o: &TapOptions<'_>) -> Result<Self, TapError> {
        let existed = netdev::exists(o.name);
        let iface =
            Iface::without_packet_info(o.name, Mode::Tap).map_err(|cause| TapError::Open {
                name: o.name.to_string(),
                cause,
            })?;
        let cfg = |what: &str, r: io::Result<()>| {
            r.map_err(|cause| TapError::Configure {
                name: o.name.to_string(),
                what: what.to_string(),
                cause,
            })
        };
        cfg("set non-blocking mode", iface.set_non_blocking())?;
        // A TAP that existed before us was made persistent by someone: leave it as it was.
        if o.keep && !existed {
            cfg(
                "make persistent",
                netdev::set_persist(iface.as_raw_fd(), true),
            )?;
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
        Ok(TapDevice { iface, existed })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// Whether the device existed before we opened it.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// Read one frame (non-blocking: `WouldBlock` when none is queued).
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.iface.recv(buf)
    }

    /// Write one frame.
    #[inline]
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.iface.send(frame)
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }
}
