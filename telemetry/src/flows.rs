//! The flow table: transport 5-tuples between VMs, both directions in one entry, with
//! idle timeout, TCP connection state from SYN/FIN/RST, and an LRU cap with evictions
//! counted. Updated per frame on the data-plane thread; allocation only for a new flow.
//!
//! With export on ([`FlowTable::set_export`]), every flow that ends (idle, closed,
//! evicted) and every long one at its active timeout leaves a [`FlowRecord`] of what it
//! carried since its last record, in a queue of fixed capacity that the exporter empties
//! (IPFIX, RFC 7011 with RFC 5103 biflows).

use std::num::NonZeroUsize;

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::frame::{FlowKey, FrameInfo, Mac, PROTO_TCP, TcpFlags};

/// Default flow table size per LAN.
pub const DEFAULT_FLOWS: usize = 16384;
/// Default idle timeout of a flow.
pub const DEFAULT_IDLE_S: u64 = 120;
/// A TCP flow that saw FIN or RST is kept this long after its last frame.
pub const CLOSED_IDLE_S: u64 = 10;

/// TCP state as far as a passive observer can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// A SYN without ACK was seen, no answer yet.
    Opening,
    /// Both sides talk (SYN-ACK seen, or picked up mid-connection).
    Established,
    /// A FIN was seen.
    Closing,
    /// RST, or FIN from both sides.
    Closed,
}

impl TcpState {
    /// The spelling in JSON and the tables.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Opening => "opening",
            TcpState::Established => "established",
            TcpState::Closing => "closing",
            TcpState::Closed => "closed",
        }
    }
}

/// One flow, seen from its initiator (`key.src`).
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Initiator first (the sender of the first frame seen).
    pub key: FlowKey,
    /// Frames initiator -> responder.
    pub fwd_packets: u64,
    /// Bytes initiator -> responder (Ethernet frame).
    pub fwd_bytes: u64,
    /// Frames responder -> initiator.
    pub rev_packets: u64,
    /// Bytes responder -> initiator.
    pub rev_bytes: u64,
    /// Owner's clock (s) at the first frame.
    pub first_s: u64,
    /// Owner's clock (s) at the last frame.
    pub last_s: u64,
    /// TCP only.
    pub tcp: Option<TcpState>,
    fin_fwd: bool,
    fin_rev: bool,
    /// Initiator's MAC.
    pub src_mac: Mac,
    /// Responder's MAC.
    pub dst_mac: Mac,
    /// TCP flags seen from the initiator (FIN 1, SYN 2, RST 4, ACK 16, OR-ed).
    pub fwd_flags: u8,
    /// TCP flags seen from the responder.
    pub rev_flags: u8,
    /// Counts at the last record (fwd packets, fwd bytes, rev packets, rev bytes), and
    /// when it was made.
    exported: ([u64; 4], u64),
}

/// Why a flow record was made (IPFIX flowEndReason, RFC 5102).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum EndReason {
    /// No frame for the idle timeout.
    Idle = 1,
    /// Still running at the active timeout: the next record continues it.
    Active = 2,
    /// TCP FIN from both sides, or RST.
    EndOfFlow = 3,
    /// The exporter stopped (daemon shutdown).
    Forced = 4,
    /// Evicted from a full table.
    LackOfResources = 5,
}

/// What one flow carried since its last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// The flow, initiator first.
    pub key: FlowKey,
    /// Initiator's MAC.
    pub src_mac: Mac,
    /// Responder's MAC.
    pub dst_mac: Mac,
    /// Frames initiator -> responder.
    pub packets: u64,
    /// Ethernet bytes initiator -> responder.
    pub bytes: u64,
    /// Frames responder -> initiator.
    pub rev_packets: u64,
    /// Ethernet bytes responder -> initiator.
    pub rev_bytes: u64,
    /// TCP flags from the initiator, OR-ed.
    pub flags: u8,
    /// TCP flags from the responder, OR-ed.
    pub rev_flags: u8,
    /// Owner's clock (s) at the first frame this record covers.
    pub start_s: u64,
    /// Owner's clock (s) at the last frame.
    pub end_s: u64,
    /// Why it was made.
    pub reason: EndReason,
}

struct Export {
    active_s: u64,
    capacity: usize,
    records: Vec<FlowRecord>,
    dropped: u64,
}

fn flag_bits(t: &TcpFlags) -> u8 {
    u8::from(t.fin) | u8::from(t.syn) << 1 | u8::from(t.rst) << 2 | u8::from(t.ack) << 4
}

/// Table counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    /// Flows in the table now.
    pub flows: usize,
    /// TCP flows open now (opening or established).
    pub tcp_active: usize,
    /// Flows created.
    pub flows_created_total: u64,
    /// Flows ended by idle timeout.
    pub flows_expired_total: u64,
    /// Flows evicted to make room (table full).
    pub flows_evicted_total: u64,
    /// TCP SYN without ACK (connection attempts).
    pub tcp_syn_total: u64,
    /// TCP FIN segments.
    pub tcp_fin_total: u64,
    /// TCP RST segments.
    pub tcp_rst_total: u64,
}

/// One flow, for views.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowRow {
    /// "tcp", "udp", "icmp", "icmpv6" or the protocol number.
    pub proto: String,
    /// Initiator address.
    pub src: String,
    /// Initiator port (0 without ports).
    pub src_port: u16,
    /// Responder address.
    pub dst: String,
    /// Responder port.
    pub dst_port: u16,
    /// Frames initiator -> responder.
    pub tx_packets: u64,
    /// Bytes initiator -> responder.
    pub tx_bytes: u64,
    /// Frames responder -> initiator.
    pub rx_packets: u64,
    /// Bytes responder -> initiator.
    pub rx_bytes: u64,
    /// Seconds since the first frame.
    pub age_s: u64,
    /// Seconds since the last frame.
    pub idle_s: u64,
    /// TCP state (null for other protocols).
    pub tcp_state: Option<TcpState>,
}

/// The flows of one LAN.
pub struct FlowTable {
    flows: LruCache<FlowKey, Flow>,
    idle_s: u64,
    stats: FlowStats,
    export: Option<Export>,
}

impl FlowTable {
    /// A table of at most `cap` flows, expiring after `idle_s` without a frame.
    pub fn new(cap: usize, idle_s: u64) -> Self {
        FlowTable {
            flows: LruCache::new(NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN)),
            idle_s: idle_s.max(1),
            stats: FlowStats::default(),
            export: None,
        }
    }

    /// Make a record of every flow that ends, and of every flow still running
    /// `active_s` after its last record, keeping at most `capacity` until taken (more are
    /// counted as dropped). None: no records.
    pub fn set_export(&mut self, export: Option<(u64, usize)>) {
        self.export = export.map(|(active_s, capacity)| Export {
            active_s: active_s.max(1),
            capacity,
            records: Vec::with_capacity(capacity),
            dropped: 0,
        });
    }

    /// Swap the records made so far with `empty` (cleared; it holds the next ones, so an
    /// exporter that hands back the buffer it got allocates nothing here). Returns the
    /// records dropped so far.
    pub fn take_records(&mut self, empty: &mut Vec<FlowRecord>) -> u64 {
        empty.clear();
        match self.export.as_mut() {
            Some(e) => {
                empty.reserve(e.capacity);
                std::mem::swap(&mut e.records, empty);
                e.dropped
            }
            None => 0,
        }
    }

    /// End every flow now (at shutdown), each with a record.
    pub fn flush(&mut self) {
        while let Some((_, f)) = self.flows.pop_lru() {
            Self::record(&mut self.export, &f, EndReason::Forced);
        }
    }

    /// Queue a record of what `f` carried since its last one, if anything.
    fn record(export: &mut Option<Export>, f: &Flow, reason: EndReason) -> bool {
        let Some(e) = export.as_mut() else {
            return false;
        };
        let [p, b, rp, rb] = f.exported.0;
        let r = FlowRecord {
            key: f.key,
            src_mac: f.src_mac,
            dst_mac: f.dst_mac,
            packets: f.fwd_packets - p,
            bytes: f.fwd_bytes - b,
            rev_packets: f.rev_packets - rp,
            rev_bytes: f.rev_bytes - rb,
            flags: f.fwd_flags,
            rev_flags: f.rev_flags,
            start_s: f.exported.1,
            end_s: f.last_s,
            reason,
        };
        if r.packets + r.rev_packets == 0 {
            return false;
        }
        if e.records.len() < e.records.capacity() {
            e.records.push(r);
        } else {
            e.dropped += 1;
        }
        true
    }

    /// Count one frame (`len` bytes) at the owner's clock `now_s`.
    pub fn observe(&mut self, f: &FrameInfo, len: usize, now_s: u64) {
        self.observe_many(f, 1, len as u64, now_s);
    }

    /// Count `packets` frames of one flow, `bytes` in all, at once (the segments of one
    /// TSO frame; `f` carries the union of their flags).
    pub fn observe_many(&mut self, f: &FrameInfo, packets: u64, bytes: u64, now_s: u64) {
        let Some(key) = f.flow else { return };
        let tcp = key.proto == PROTO_TCP;
        if tcp {
            self.stats.tcp_syn_total += u64::from(f.tcp.syn && !f.tcp.ack);
            self.stats.tcp_fin_total += u64::from(f.tcp.fin);
            self.stats.tcp_rst_total += u64::from(f.tcp.rst);
        }
        // Keyed by the canonical orientation; the entry keeps the initiator's.
        let slot = key.canonical();
        let (forward, entry) = if let Some(e) = self.flows.get_mut(&slot) {
            (e.key == key, e)
        } else {
            let fresh = Flow {
                key,
                fwd_packets: 0,
                fwd_bytes: 0,
                rev_packets: 0,
                rev_bytes: 0,
                first_s: now_s,
                last_s: now_s,
                tcp: tcp.then_some(if f.tcp.syn && !f.tcp.ack {
                    TcpState::Opening
                } else {
                    TcpState::Established
                }),
                fin_fwd: false,
                fin_rev: false,
                src_mac: f.src,
                dst_mac: f.dst,
                fwd_flags: 0,
                rev_flags: 0,
                exported: ([0; 4], now_s),
            };
            self.stats.flows_created_total += 1;
            if let Some((k, old)) = self.flows.push(slot, fresh)
                && k != slot
            {
                self.stats.flows_evicted_total += 1;
                Self::record(&mut self.export, &old, EndReason::LackOfResources);
            }
            let Some(e) = self.flows.get_mut(&slot) else {
                return;
            };
            (true, e)
        };
        entry.last_s = now_s;
        if forward {
            entry.fwd_packets += packets;
            entry.fwd_bytes += bytes;
            entry.fwd_flags |= flag_bits(&f.tcp);
        } else {
            entry.rev_packets += packets;
            entry.rev_bytes += bytes;
            entry.rev_flags |= flag_bits(&f.tcp);
        }
        if let Some(state) = entry.tcp.as_mut() {
            if f.tcp.rst {
                *state = TcpState::Closed;
            } else if f.tcp.fin {
                if forward {
                    entry.fin_fwd = true;
                } else {
                    entry.fin_rev = true;
                }
                *state = if entry.fin_fwd && entry.fin_rev {
                    TcpState::Closed
                } else {
                    TcpState::Closing
                };
            } else if *state == TcpState::Opening && !forward {
                *state = TcpState::Established;
            } else if f.tcp.syn && !f.tcp.ack && forward && *state == TcpState::Closed {
                // The same 5-tuple reused for a new connection.
                *state = TcpState::Opening;
                entry.fin_fwd = false;
                entry.fin_rev = false;
            }
        }
    }

    /// Expire idle flows (on the owner's tick). Closed TCP flows go after
    /// [`CLOSED_IDLE_S`].
    pub fn expire(&mut self, now_s: u64) {
        let idle = self.idle_s;
        let gone: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                let quiet = now_s.saturating_sub(f.last_s);
                quiet >= idle || (matches!(f.tcp, Some(TcpState::Closed)) && quiet >= CLOSED_IDLE_S)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(f) = self.flows.pop(&k) {
                let reason = if matches!(f.tcp, Some(TcpState::Closed)) {
                    EndReason::EndOfFlow
                } else {
                    EndReason::Idle
                };
                Self::record(&mut self.export, &f, reason);
            }
            self.stats.flows_expired_total += 1;
        }
        // Long flows: a record at each active timeout, counted from the last one.
        if let Some(active) = self.export.as_ref().map(|e| e.active_s) {
            for (_, f) in self.flows.iter_mut() {
                if now_s.saturating_sub(f.exported.1) >= active {
                    if Self::record(&mut self.export, f, EndReason::Active) {
                        f.exported = (
                            [f.fwd_packets, f.fwd_bytes, f.rev_packets, f.rev_bytes],
                            now_s,
                        );
                    } else {
                        f.exported.1 = now_s;
                    }
                }
            }
        }
    }

    /// Counters, with the flows and open TCP connections now.
    pub fn stats(&self) -> FlowStats {
        FlowStats {
            flows: self.flows.len(),
            tcp_active: self
                .flows
                .iter()
                .filter(|(_, f)| matches!(f.tcp, Some(TcpState::Opening | TcpState::Established)))
                .count(),
            ..self.stats
        }
    }

    /// For each of `macs`, the TCP connections open now (opening or established) with it
    /// at either end, into `out` (as long as `macs`; zeroed first). Walks the table:
    /// once a second for a service's local backends, never per frame.
    pub fn open_tcp_by_mac(&self, macs: &[Mac], out: &mut [u32]) {
        out.fill(0);
        for (_, f) in self.flows.iter() {
            if !matches!(f.tcp, Some(TcpState::Opening | TcpState::Established)) {
                continue;
            }
            for (m, n) in macs.iter().zip(out.iter_mut()) {
                if f.src_mac == *m || f.dst_mac == *m {
                    *n += 1;
                }
            }
        }
    }

    /// Flows, busiest (bytes both ways) first; at most `top` when given.
    pub fn rows(&self, now_s: u64, top: Option<usize>) -> Vec<FlowRow> {
        let mut v: Vec<&Flow> = self.flows.iter().map(|(_, f)| f).collect();
        v.sort_by_key(|f| std::cmp::Reverse(f.fwd_bytes + f.rev_bytes));
        v.truncate(top.unwrap_or(usize::MAX));
        v.into_iter()
            .map(|f| FlowRow {
                proto: match f.key.proto {
                    6 => "tcp".into(),
                    17 => "udp".into(),
                    1 => "icmp".into(),
                    58 => "icmpv6".into(),
                    n => n.to_string(),
                },
                src: f.key.src.to_string(),
                src_port: f.key.sport,
                dst: f.key.dst.to_string(),
                dst_port: f.key.dport,
                tx_packets: f.fwd_packets,
                tx_bytes: f.fwd_bytes,
                rx_packets: f.rev_packets,
                rx_bytes: f.rev_bytes,
                age_s: now_s.saturating_sub(f.first_s),
                idle_s: now_s.saturating_sub(f.last_s),
                tcp_state: f.tcp,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::inspect;
    use crate::frame::tests::tcp;

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];

    fn seg(t: &mut FlowTable, from_client: bool, flags: &str, now: u64) {
        let f = if from_client {
            tcp(C, S, (40000, 80), flags, 10)
        } else {
            tcp(S, C, (80, 40000), flags, 10)
        };
        let i = inspect(&f).expect("frame");
        t.observe(&i, f.len(), now);
    }

    #[test]
    fn tcp_connection_lifecycle() {
        let mut t = FlowTable::new(16, 120);
        seg(&mut t, true, "S", 0);
        assert_eq!(t.rows(0, None)[0].tcp_state, Some(TcpState::Opening));
        seg(&mut t, false, "SA", 0);
        seg(&mut t, true, "A", 1);
        let s = t.stats();
        assert_eq!((s.flows, s.tcp_active, s.tcp_syn_total), (1, 1, 1));
        let r = &t.rows(2, None)[0];
        assert_eq!(r.tcp_state, Some(TcpState::Established));
        assert_eq!(
            (r.src.as_str(), r.src_port, r.dst_port),
            ("10.0.0.1", 40000, 80)
        );
        assert_eq!(
            (r.tx_packets, r.rx_packets, r.age_s, r.idle_s),
            (2, 1, 2, 1)
        );
        seg(&mut t, true, "FA", 3);
        assert_eq!(t.rows(3, None)[0].tcp_state, Some(TcpState::Closing));
        assert_eq!(t.stats().tcp_active, 0);
        seg(&mut t, false, "FA", 3);
        assert_eq!(t.rows(3, None)[0].tcp_state, Some(TcpState::Closed));
        assert_eq!(t.stats().tcp_fin_total, 2);
        // Closed flows go sooner than idle ones.
        t.expire(3 + CLOSED_IDLE_S - 1);
        assert_eq!(t.stats().flows, 1);
        t.expire(3 + CLOSED_IDLE_S);
        assert_eq!((t.stats().flows, t.stats().flows_expired_total), (0, 1));
    }

    #[test]
    fn open_connections_by_mac() {
        use crate::frame::tests::{A, B};
        let mut t = FlowTable::new(16, 120);
        for port in [40000, 40001, 40002] {
            let f = tcp(C, S, (port, 80), "S", 0);
            t.observe(&inspect(&f).expect("frame"), f.len(), 0);
        }
        // One ends (RST); UDP never counts.
        let f = tcp(C, S, (40001, 80), "R", 0);
        t.observe(&inspect(&f).expect("frame"), f.len(), 1);
        let mut out = [7u32; 3];
        t.open_tcp_by_mac(&[A, B, [2, 9, 9, 9, 9, 9]], &mut out);
        assert_eq!(out, [2, 2, 0]);
    }

    #[test]
    fn records_of_ended_and_long_flows_add_up_to_the_counts() {
        let mut t = FlowTable::new(2, 30);
        t.set_export(Some((60, 3)));
        seg(&mut t, true, "S", 0);
        seg(&mut t, false, "SA", 0);
        for s in 1..=70 {
            seg(&mut t, true, "A", s);
        }
        t.expire(70);
        let mut got = Vec::new();
        assert_eq!(t.take_records(&mut got), 0);
        assert_eq!(got.len(), 1, "one active-timeout record at 60 s");
        let a = got[0];
        assert_eq!(a.reason, EndReason::Active);
        assert_eq!(
            (a.packets, a.rev_packets, a.start_s, a.end_s),
            (71, 1, 0, 70)
        );
        assert_eq!((a.flags, a.rev_flags), (0x12, 0x12), "SYN|ACK each way");
        let client = inspect(&tcp(C, S, (40000, 80), "A", 10)).expect("frame");
        assert_eq!(
            (a.src_mac, a.dst_mac),
            (client.src, client.dst),
            "initiator first"
        );
        seg(&mut t, true, "FA", 71);
        seg(&mut t, false, "FA", 71);
        t.expire(71 + CLOSED_IDLE_S);
        let mut more = Vec::new();
        t.take_records(&mut more);
        assert_eq!(more.len(), 1);
        let e = more[0];
        assert_eq!(e.reason, EndReason::EndOfFlow);
        assert_eq!((e.packets, e.rev_packets, e.start_s), (1, 1, 70));
        let len = tcp(C, S, (40000, 80), "A", 10).len() as u64;
        assert_eq!(
            a.bytes + e.bytes,
            72 * len,
            "every frame from the client counted once over both records"
        );
        // A full table evicts with a record; a full queue counts a drop.
        let mut t = FlowTable::new(1, 30);
        t.set_export(Some((600, 1)));
        seg(&mut t, true, "A", 0);
        let f = tcp(C, [10, 0, 0, 3], (1, 2), "A", 10);
        let i = inspect(&f).expect("frame");
        t.observe(&i, f.len(), 1);
        t.observe(
            &inspect(&tcp(C, [10, 0, 0, 4], (1, 2), "A", 10)).expect("frame"),
            64,
            2,
        );
        let mut r = Vec::new();
        assert_eq!(
            t.take_records(&mut r),
            1,
            "the second eviction found the queue full"
        );
        assert_eq!(r[0].reason, EndReason::LackOfResources);
        t.flush();
        t.take_records(&mut r);
        assert_eq!(
            r.iter().map(|x| x.reason).collect::<Vec<_>>(),
            vec![EndReason::Forced]
        );
    }

    #[test]
    fn rst_closes_and_idle_flows_expire() {
        let mut t = FlowTable::new(16, 30);
        seg(&mut t, true, "A", 0);
        // Picked up mid-connection: established.
        assert_eq!(t.stats().tcp_active, 1);
        seg(&mut t, false, "R", 1);
        assert_eq!((t.stats().tcp_active, t.stats().tcp_rst_total), (0, 1));
        let mut t = FlowTable::new(16, 30);
        seg(&mut t, true, "A", 0);
        t.expire(29);
        assert_eq!(t.stats().flows, 1);
        t.expire(30);
        assert_eq!(t.stats().flows, 0);
    }

    #[test]
    fn capped_with_evictions_and_top() {
        let mut t = FlowTable::new(8, 120);
        for port in 0..20u16 {
            let f = tcp(C, S, (1000 + port, 80), "A", usize::from(port));
            let i = inspect(&f).expect("frame");
            t.observe(&i, f.len(), 0);
        }
        let s = t.stats();
        assert_eq!(
            (s.flows, s.flows_created_total, s.flows_evicted_total),
            (8, 20, 12)
        );
        let top = t.rows(0, Some(3));
        assert_eq!(top.len(), 3);
        // Busiest first: the largest payloads are the newest (kept) ones.
        assert_eq!(top[0].src_port, 1019);
        assert!(top[0].tx_bytes >= top[1].tx_bytes && top[1].tx_bytes >= top[2].tx_bytes);
    }

    proptest::proptest! {
        /// Whatever the frames, the table never exceeds its cap, and every frame with a
        /// flow is counted in exactly one direction of one entry (or its evicted entry).
        #[test]
        fn bounded_and_conserving(frames in proptest::collection::vec((0u8..4, 0u8..4, 0u16..6, proptest::bool::ANY), 1..300)) {
            let mut t = FlowTable::new(5, 1000);
            let mut counted = 0u64;
            for (a, b, p, syn) in frames {
                let f = tcp([10, 0, 0, a], [10, 0, 0, b], (p, 80), if syn { "S" } else { "A" }, 0);
                let i = inspect(&f).expect("frame");
                t.observe(&i, f.len(), 0);
                counted += 1;
            }
            let s = t.stats();
            proptest::prop_assert!(s.flows <= 5);
            proptest::prop_assert_eq!(s.flows as u64 + s.flows_evicted_total, s.flows_created_total);
            let in_table: u64 = t.rows(0, None).iter().map(|r| r.tx_packets + r.rx_packets).sum();
            proptest::prop_assert!(in_table <= counted);
        }
    }
}
