//! The exporters' UDP sockets: one per address family, sending without waiting (a full
//! socket buffer is a counted error, never a stall).

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tracing::warn;

/// A socket for IPv4 collectors and one for IPv6 ones (either may be missing).
pub struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Sockets {
    /// Both sockets, on any free port; None when neither opens.
    pub async fn open() -> Option<Self> {
        let v4 = UdpSocket::bind("0.0.0.0:0").await.ok();
        let v6 = UdpSocket::bind("[::]:0").await.ok();
        if v4.is_none() && v6.is_none() {
            warn!("exports: cannot open a UDP socket; nothing will be exported");
            return None;
        }
        Some(Sockets { v4, v6 })
    }

    /// Send `data` to every collector: how many took it, how many sends failed, and the
    /// last failure.
    pub fn send_all(&self, data: &[u8], to: &[SocketAddr]) -> (u64, u64, Option<String>) {
        let (mut ok, mut failed, mut last) = (0, 0, None);
        for c in to {
            match self.send(data, *c) {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    last = Some(e);
                }
            }
        }
        (ok, failed, last)
    }

    /// Send `data` to `to` now or not at all; the error, if it failed.
    pub fn send(&self, data: &[u8], to: SocketAddr) -> Result<(), String> {
        let s = if to.is_ipv4() { &self.v4 } else { &self.v6 };
        let Some(s) = s else {
            return Err(format!("no socket for {to}"));
        };
        match s.try_send_to(data, to) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("send to {to}: {e}")),
        }
    }
}
