//! Accounting of a TSO frame once for all its segments. The kernel hands over TCP (and
//! UDP) frames of up to 64 KB that the data plane cuts into segments; each segment is
//! still sealed, limited and sent on its own, but the VM and flow tables see the whole
//! frame once: its segments share every header field the tables key on, so counting them
//! one by one (a look into the frame and four table lookups each) bought nothing.

use telemetry::{FrameInfo, TcpFlags, inspect};

use super::{Engine, LanId};

/// The segments of one TSO frame counted so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Burst {
    /// The TSO frame's TCP flags: the union of its segments' (the first alone carries
    /// CWR, the last alone FIN and PSH).
    flags: TcpFlags,
    /// The first segment as the data path handled it (after a service rewrote its
    /// destination, so it names the backend VM).
    info: Option<FrameInfo>,
    packets: u64,
    bytes: u64,
}

impl Burst {
    /// One more segment (`frame`), admitted and about to be sent.
    #[inline]
    pub(crate) fn add(&mut self, frame: &[u8]) {
        if self.info.is_none() {
            self.info = inspect(frame);
        }
        self.packets += 1;
        self.bytes += frame.len() as u64;
    }

    /// Whether a segment was counted: the first learned the VM's MAC for all of them.
    #[inline]
    pub(crate) fn started(&self) -> bool {
        self.packets > 0
    }
}

impl Engine {
    /// The segments of `frame` (a TSO frame as read from the TAP of `lan`, before it is
    /// cut) follow through [`Engine::handle_tap_frame`]: count them once, at
    /// [`Engine::end_burst`].
    pub fn begin_burst(&mut self, lan: LanId, frame: &[u8]) {
        if !self.accounting.flows {
            return;
        }
        if let Some(l) = self.lans.get_mut(lan.index()) {
            l.burst = Some(Burst {
                flags: inspect(frame).map(|i| i.tcp).unwrap_or_default(),
                info: None,
                packets: 0,
                bytes: 0,
            });
        }
    }

    /// The last segment of the TSO frame begun on `lan` has been handled.
    pub fn end_burst(&mut self, lan: LanId) {
        let second = self.last_second.unwrap_or(0);
        let Some(l) = self.lans.get_mut(lan.index()) else {
            return;
        };
        let Some(b) = l.burst.take() else { return };
        if let Some(mut info) = b.info {
            info.tcp = b.flags;
            l.vms.observe_many(&info, b.packets, b.bytes, true, second);
            l.flows.observe_many(&info, b.packets, b.bytes, second);
        }
    }
}
