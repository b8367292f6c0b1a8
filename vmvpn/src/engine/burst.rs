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

/// Frames of one flow delivered one after another, not yet in the tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    info: FrameInfo,
    /// The run's [`same_segment_key`], when it has one.
    key: Option<SegmentKey>,
    packets: u64,
    bytes: u64,
}

/// The bytes that make a plain TCP segment (ACK, no SYN, FIN or RST; IPv4 without options
/// or fragments, or IPv6 without extension headers) part of its flow: MACs, addresses and
/// ports, with the IP version first. Two frames with the same key give the same
/// [`FrameInfo`], so a run grows without a look into the frame (about 80 ns).
type SegmentKey = [u8; 49];

#[inline]
fn same_segment_key(f: &[u8]) -> Option<SegmentKey> {
    let mut k = [0u8; 49];
    k[1..13].copy_from_slice(f.get(..12)?);
    let be = |at: usize| {
        Some(usize::from(u16::from_be_bytes([
            *f.get(at)?,
            *f.get(at + 1)?,
        ])))
    };
    // The IP length must cover the frame exactly and the TCP header fit in it, as a look
    // into the frame would require; anything else is looked into.
    let (tcp, addrs, ports) = match f.get(12..15)? {
        // IPv4, 20-byte header: TCP, not a fragment.
        [0x08, 0x00, 0x45]
            if f.get(23) == Some(&6)
                && f.get(20)? & 0x3f == 0
                && f[21] == 0
                && be(16)? + 14 == f.len() =>
        {
            (34, f.get(26..34)?, f.get(34..38)?)
        }
        [0x86, 0xdd, v] if v >> 4 == 6 && f.get(20) == Some(&6) && be(18)? + 54 == f.len() => {
            (54, f.get(22..54)?, f.get(54..58)?)
        }
        _ => return None,
    };
    let offset = usize::from(f.get(tcp + 12)? >> 4) * 4;
    if offset < 20 || tcp + offset > f.len() {
        return None;
    }
    let flags = *f.get(tcp + 13)?;
    // ACK set; SYN, FIN and RST clear (PSH and the rest telemetry does not look at).
    if flags & 0x17 != 0x10 {
        return None;
    }
    k[0] = if addrs.len() == 8 { 4 } else { 6 };
    k[13..13 + addrs.len()].copy_from_slice(addrs);
    k[13 + addrs.len()..17 + addrs.len()].copy_from_slice(ports);
    Some(k)
}

impl super::lan::Lan {
    /// Count a frame delivered to a local VM, joining the run it continues.
    #[inline]
    pub(crate) fn count_rx(&mut self, frame: &[u8], second: u64) {
        let len = frame.len() as u64;
        let key = same_segment_key(frame);
        if let (Some(k), Some(r)) = (key, self.measure.rx_run.as_mut())
            && r.key == Some(k)
        {
            r.packets += 1;
            r.bytes += len;
            return;
        }
        let Some(info) = inspect(frame) else { return };
        // Flags that move a flow's state end a run and count alone, in order.
        let plain = info.flow.is_some() && !(info.tcp.syn || info.tcp.fin || info.tcp.rst);
        if plain && let Some(r) = self.measure.rx_run.as_mut().filter(|r| r.info == info) {
            r.packets += 1;
            r.bytes += len;
            return;
        }
        self.end_rx_run(second);
        if plain {
            self.measure.rx_run = Some(Run {
                info,
                key,
                packets: 1,
                bytes: len,
            });
        } else {
            self.measure.vms.observe(&info, frame.len(), false, second);
            self.measure.flows.observe(&info, frame.len(), second);
        }
    }

    /// Count the run held, if any.
    pub(crate) fn end_rx_run(&mut self, second: u64) {
        if let Some(r) = self.measure.rx_run.take() {
            self.measure
                .vms
                .observe_many(&r.info, r.packets, r.bytes, false, second);
            self.measure
                .flows
                .observe_many(&r.info, r.packets, r.bytes, second);
        }
    }
}

impl Engine {
    /// Count the runs of received frames held on every LAN. The runtime calls it after
    /// each batch of datagrams, before it reads anything else, so figures read between
    /// batches are whole.
    pub fn end_runs(&mut self) {
        let second = self.measure.last_second.unwrap_or(0);
        for l in &mut self.lans {
            l.end_rx_run(second);
        }
    }

    /// The segments of `frame` (a TSO frame as read from the TAP of `lan`, before it is
    /// cut) follow through [`Engine::handle_tap_frame`]: count them once, at
    /// [`Engine::end_burst`].
    pub fn begin_burst(&mut self, lan: LanId, frame: &[u8]) {
        if !self.measure.accounting.flows {
            return;
        }
        if let Some(l) = self.lans.get_mut(lan.index()) {
            l.measure.burst = Some(Burst {
                flags: inspect(frame).map(|i| i.tcp).unwrap_or_default(),
                info: None,
                packets: 0,
                bytes: 0,
            });
        }
    }

    /// The last segment of the TSO frame begun on `lan` has been handled.
    pub fn end_burst(&mut self, lan: LanId) {
        let second = self.measure.last_second.unwrap_or(0);
        let Some(l) = self.lans.get_mut(lan.index()) else {
            return;
        };
        let Some(b) = l.measure.burst.take() else {
            return;
        };
        if let Some(mut info) = b.info {
            info.tcp = b.flags;
            l.measure
                .vms
                .observe_many(&info, b.packets, b.bytes, true, second);
            l.measure
                .flows
                .observe_many(&info, b.packets, b.bytes, second);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Ethernet + IPv4 (DF) + TCP, `flags`, 100 bytes of payload.
    fn v4(flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        f.extend_from_slice(&[
            0x45, 0, 0, 140, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f.resize(154, 7);
        f
    }

    /// Ethernet + IPv6 + TCP, `flags`.
    fn v6(flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 120, 6, 64]);
        f.extend((0..32).map(|i| if i % 16 == 0 { 0xfd } else { i }));
        f.extend_from_slice(&[
            0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f.resize(174, 7);
        f
    }

    #[test]
    fn only_plain_tcp_segments_have_a_key() {
        for f in [v4(0x10), v4(0x18), v6(0x10), v6(0x18)] {
            assert!(same_segment_key(&f).is_some(), "{f:?}");
        }
        for flags in [0x02, 0x12, 0x11, 0x14, 0x04, 0x00] {
            assert_eq!(same_segment_key(&v4(flags)), None, "flags {flags:#x}");
            assert_eq!(same_segment_key(&v6(flags)), None, "flags {flags:#x}");
        }
        let mut frag = v4(0x10);
        frag[20] = 0x20; // more fragments
        assert_eq!(same_segment_key(&frag), None);
        let mut udp = v4(0x10);
        udp[23] = 17;
        assert_eq!(same_segment_key(&udp), None);
        assert_eq!(same_segment_key(&v4(0x10)[..40]), None, "truncated");
        assert_ne!(same_segment_key(&v4(0x10)), same_segment_key(&v6(0x10)));
    }

    proptest! {
        /// A key stands for what telemetry sees: equal keys, equal frame infos.
        #[test]
        fn equal_keys_mean_equal_infos(
            base in prop::bool::ANY,
            edits_a in prop::collection::vec((0usize..80, any::<u8>()), 0..6),
            edits_b in prop::collection::vec((0usize..80, any::<u8>()), 0..6),
        ) {
            let frame = if base { v4(0x10) } else { v6(0x10) };
            let (mut a, mut b) = (frame.clone(), frame);
            for (i, v) in edits_a { a[i] = v; }
            for (i, v) in edits_b { b[i] = v; }
            if let (Some(ka), Some(kb)) = (same_segment_key(&a), same_segment_key(&b))
                && ka == kb
            {
                let (ia, ib) = (inspect(&a), inspect(&b));
                prop_assert_eq!(ia, ib);
                prop_assert!(ia.is_some_and(|i| i.flow.is_some()));
            }
        }
    }
}
