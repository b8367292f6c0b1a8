//! Per-VM traffic without agents: bytes and packets from and to each VM MAC seen on a LAN,
//! the VM-to-VM matrix, and a time series per local VM port.
//!
//! Both tables are LRU-capped: a full table evicts its least recently active entry and
//! counts the eviction, so memory stays bounded however many MACs a LAN shows.

use std::net::IpAddr;
use std::num::NonZeroUsize;

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::frame::{FrameInfo, Mac, is_group};
use crate::series::{Rates, Series};

/// Default VM table size per LAN.
pub const DEFAULT_VMS: usize = 4096;
/// Default matrix size per LAN.
pub const DEFAULT_PAIRS: usize = 16384;
/// Local VM ports that get a time series (about 32 KB each).
pub const DEFAULT_PORT_SERIES: usize = 64;

/// Traffic of one VM as this host saw it.
#[derive(Debug, Clone)]
pub struct VmEntry {
    /// Its newest usable IPv4 or IPv6 source address.
    pub ip: Option<IpAddr>,
    /// Behind this host's TAP (a local VM port) or behind a peer.
    pub local: bool,
    /// Frames and bytes the VM sent.
    pub tx_packets: u64,
    /// Bytes the VM sent (Ethernet frame).
    pub tx_bytes: u64,
    /// Frames addressed to it (unicast).
    pub rx_packets: u64,
    /// Bytes addressed to it.
    pub rx_bytes: u64,
    /// Owner's clock (s) at its last frame, either way.
    pub last_s: u64,
    /// TCP connections it opened (SYN without ACK): a connection storm or a scan shows.
    pub tcp_syn: u64,
    /// Frames it sent that the overlay could not carry (no route, no session, too large).
    pub tx_drops: u64,
    series: Option<Box<Series>>,
}

/// Traffic from one VM to another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairEntry {
    /// Frames.
    pub packets: u64,
    /// Bytes (Ethernet frame).
    pub bytes: u64,
    /// Counted where it entered the overlay (the source VM is local here). The global
    /// matrix sums only these, so no pair is counted twice.
    pub at_source: bool,
}

/// One VM, for views.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VmRow {
    /// MAC (`aa:bb:cc:dd:ee:ff` in JSON).
    #[serde(serialize_with = "ser_mac", deserialize_with = "de_mac")]
    pub mac: Mac,
    /// Newest IP address seen from it.
    pub ip: Option<IpAddr>,
    /// "local" (a port of this host) or "remote".
    pub location: VmLocation,
    /// Frames the VM sent.
    pub tx_packets: u64,
    /// Bytes the VM sent.
    pub tx_bytes: u64,
    /// Unicast frames to it.
    pub rx_packets: u64,
    /// Bytes to it.
    pub rx_bytes: u64,
    /// Seconds since its last frame.
    pub idle_s: u64,
    /// Rates of a local port (null for remote VMs and ports beyond the series cap).
    pub rates: Option<Rates>,
    /// Hurst exponent of a local port's traffic over the last 512 s (R/S): 0.5 is
    /// memoryless, towards 1 bursty at every time scale. Null without enough traffic.
    #[serde(default)]
    pub hurst: Option<f64>,
    /// TCP connections it opened (SYN without ACK).
    #[serde(default)]
    pub tcp_syn_total: u64,
    /// Frames it sent that the overlay could not carry (no route, no session, too large).
    #[serde(default)]
    pub tx_drops_total: u64,
    /// Its name, from libvirt (`[libvirt]` in vmvpn's config); null when unknown.
    #[serde(default)]
    pub name: Option<String>,
    /// Its libvirt domain UUID; null when unknown.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Its libvirt domain's own figures (state, CPU, memory, disks); null when unknown.
    #[serde(default)]
    pub domain: Option<DomainFigures>,
}

/// A libvirt domain's figures beside its network ones (`virsh domstats`); each is null
/// where the driver does not give it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DomainFigures {
    /// "running", "paused", "shut off", ...
    pub state: Option<String>,
    /// CPU time per second of wall time, all vCPUs (1.0: one core busy).
    pub cpu_cores: Option<f64>,
    /// Memory the guest has (the balloon's current size).
    pub memory_bytes: Option<u64>,
    /// Bytes read from its disks per second.
    pub block_read_bps: Option<f64>,
    /// Bytes written to its disks per second.
    pub block_write_bps: Option<f64>,
}

/// One cell of the VM matrix.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PairRow {
    /// Source MAC.
    #[serde(serialize_with = "ser_mac", deserialize_with = "de_mac")]
    pub src_mac: Mac,
    /// Source IP, when known.
    pub src_ip: Option<IpAddr>,
    /// Destination MAC.
    #[serde(serialize_with = "ser_mac", deserialize_with = "de_mac")]
    pub dst_mac: Mac,
    /// Destination IP, when known.
    pub dst_ip: Option<IpAddr>,
    /// Frames.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Counted at the source's host.
    pub at_source: bool,
}

/// Table counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmTableStats {
    /// VMs in the table.
    pub vms: usize,
    /// Pairs in the matrix.
    pub pairs: usize,
    /// VMs evicted to make room.
    pub vm_evictions_total: u64,
    /// Pairs evicted to make room.
    pub pair_evictions_total: u64,
    /// Local ports that got no series because the cap was reached.
    pub port_series_refused_total: u64,
}

/// Per-VM traffic of one LAN.
pub struct VmTable {
    vms: LruCache<Mac, VmEntry>,
    pairs: LruCache<(Mac, Mac), PairEntry>,
    series_cap: usize,
    series_used: usize,
    stats: VmTableStats,
    /// Addresses several VMs send from (service addresses, answered directly by each
    /// backend): never taken as a VM's own.
    shared: Vec<IpAddr>,
}

impl VmTable {
    /// Tables of these sizes (each at least 1).
    pub fn new(vms: usize, pairs: usize, port_series: usize) -> Self {
        VmTable {
            vms: LruCache::new(NonZeroUsize::new(vms).unwrap_or(NonZeroUsize::MIN)),
            pairs: LruCache::new(NonZeroUsize::new(pairs).unwrap_or(NonZeroUsize::MIN)),
            series_cap: port_series,
            series_used: 0,
            stats: VmTableStats::default(),
            shared: Vec::new(),
        }
    }

    /// Addresses that are not any one VM's (a LAN's service addresses): frames from them
    /// still count, but a VM's address stays the one it has of its own.
    pub fn set_shared(&mut self, ips: Vec<IpAddr>) {
        self.shared = ips;
    }

    /// Count one frame. `from_local`: it came from this host's TAP (the source VM is a
    /// local port); else it arrived through a tunnel for a local VM. `now_s`: the owner's
    /// clock in seconds.
    pub fn observe(&mut self, f: &FrameInfo, len: usize, from_local: bool, now_s: u64) {
        self.observe_many(f, 1, len as u64, from_local, now_s);
    }

    /// Count `packets` frames of one flow, `bytes` in all, at once: the segments of one
    /// TSO frame, whose headers differ only in lengths, sequence numbers and flags (`f`
    /// carries the union of their flags).
    pub fn observe_many(
        &mut self,
        f: &FrameInfo,
        packets: u64,
        bytes: u64,
        from_local: bool,
        now_s: u64,
    ) {
        if is_group(&f.src) {
            return;
        }
        let own_ip = f.src_ip.filter(|ip| !self.shared.contains(ip));
        self.entry(f.src, from_local, now_s, |src| {
            src.tx_packets += packets;
            src.tx_bytes += bytes;
            src.last_s = now_s;
            src.tcp_syn += u64::from(f.tcp.syn && !f.tcp.ack);
            if let Some(ip) = own_ip {
                src.ip = Some(ip);
            }
        });
        if is_group(&f.dst) {
            return;
        }
        self.entry(f.dst, !from_local, now_s, |dst| {
            dst.rx_packets += packets;
            dst.rx_bytes += bytes;
            dst.last_s = now_s;
        });
        let key = (f.src, f.dst);
        if let Some(p) = self.pairs.get_mut(&key) {
            p.packets += packets;
            p.bytes += bytes;
            p.at_source |= from_local;
        } else {
            let fresh = PairEntry {
                packets,
                bytes,
                at_source: from_local,
            };
            if self.pairs.push(key, fresh).is_some_and(|(k, _)| k != key) {
                self.stats.pair_evictions_total += 1;
            }
        }
    }

    /// A frame from `mac` was dropped (counted only for a VM already in the table).
    pub fn note_tx_drop(&mut self, mac: &Mac) {
        if let Some(e) = self.vms.peek_mut(mac) {
            e.tx_drops += 1;
        }
    }

    /// Apply `update` to `mac`'s entry, created if missing: one lookup when present (the
    /// per-frame case).
    fn entry(&mut self, mac: Mac, local: bool, now_s: u64, update: impl FnOnce(&mut VmEntry)) {
        let cap = self.series_cap;
        if let Some(e) = self.vms.get_mut(&mac) {
            settle(e, local, cap, &mut self.series_used, &mut self.stats);
            update(e);
            return;
        }
        let fresh = VmEntry {
            ip: None,
            local,
            tx_packets: 0,
            tx_bytes: 0,
            rx_packets: 0,
            rx_bytes: 0,
            last_s: now_s,
            tcp_syn: 0,
            tx_drops: 0,
            series: None,
        };
        if let Some((k, old)) = self.vms.push(mac, fresh)
            && k != mac
        {
            self.stats.vm_evictions_total += 1;
            if old.series.is_some() {
                self.series_used -= 1;
            }
        }
        if let Some(e) = self.vms.get_mut(&mac) {
            settle(e, local, cap, &mut self.series_used, &mut self.stats);
            update(e);
        }
    }

    /// Feed the local ports' series (on the owner's tick, with its clock in seconds).
    pub fn tick(&mut self, second: u64) {
        for (_, e) in self.vms.iter_mut() {
            if let Some(s) = e.series.as_mut() {
                s.update(second, e.tx_bytes, e.rx_bytes);
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> VmTableStats {
        VmTableStats {
            vms: self.vms.len(),
            pairs: self.pairs.len(),
            ..self.stats
        }
    }

    /// One VM's entry.
    pub fn get(&self, mac: &Mac) -> Option<&VmEntry> {
        self.vms.peek(mac)
    }

    /// The VM with this IP address (newest seen), if any.
    pub fn by_ip(&self, ip: IpAddr) -> Option<Mac> {
        self.vms
            .iter()
            .find(|(_, e)| e.ip == Some(ip))
            .map(|(m, _)| *m)
    }

    /// All VMs, busiest (tx + rx bytes) first.
    pub fn rows(&self, now_s: u64) -> Vec<VmRow> {
        let mut v: Vec<VmRow> = self
            .vms
            .iter()
            .map(|(m, e)| VmRow {
                mac: *m,
                ip: e.ip,
                location: if e.local {
                    VmLocation::Local
                } else {
                    VmLocation::Remote
                },
                tx_packets: e.tx_packets,
                tx_bytes: e.tx_bytes,
                rx_packets: e.rx_packets,
                rx_bytes: e.rx_bytes,
                idle_s: now_s.saturating_sub(e.last_s),
                rates: e.series.as_ref().map(|s| s.rates()),
                hurst: e.series.as_ref().and_then(|s| s.hurst()),
                tcp_syn_total: e.tcp_syn,
                tx_drops_total: e.tx_drops,
                name: None,
                uuid: None,
                domain: None,
            })
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.tx_bytes + r.rx_bytes));
        v
    }

    /// The matrix, busiest pair first.
    pub fn pairs(&self) -> Vec<PairRow> {
        let ip = |m: &Mac| self.vms.peek(m).and_then(|e| e.ip);
        let mut v: Vec<PairRow> = self
            .pairs
            .iter()
            .map(|((s, d), p)| PairRow {
                src_mac: *s,
                src_ip: ip(s),
                dst_mac: *d,
                dst_ip: ip(d),
                packets: p.packets,
                bytes: p.bytes,
                at_source: p.at_source,
            })
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.bytes));
        v
    }
}

fn ser_mac<S: serde::Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&common::text::mac(m))
}

fn de_mac<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
    let text = String::deserialize(d)?;
    common::text::parse_mac(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("not a MAC address: {text:?}")))
}

/// Where a VM is, seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmLocation {
    /// A port of this host (its frames come from the TAP).
    Local,
    /// Behind a peer.
    #[default]
    Remote,
}

impl VmLocation {
    /// "local" or "remote", as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            VmLocation::Local => "local",
            VmLocation::Remote => "remote",
        }
    }
}

/// Compare with the JSON spelling.
impl PartialEq<&str> for VmLocation {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// A MAC seen as a local source becomes a local port, and a local port gets a time series
/// while fewer than `cap` have one.
fn settle(e: &mut VmEntry, local: bool, cap: usize, used: &mut usize, stats: &mut VmTableStats) {
    if local && !e.local {
        // A MAC first seen as a destination turns out to be a local port.
        e.local = true;
    }
    if e.local && e.series.is_none() {
        if *used < cap {
            *used += 1;
            e.series = Some(Box::default());
        } else {
            stats.port_series_refused_total += 1;
        }
    }
}

/// Fills in each row's `name` and `uuid` where it knows the MAC (libvirt's domains):
/// handed to the exporters by the daemon, so they need not know where names come from.
pub type VmNamer = std::sync::Arc<dyn Fn(&mut [VmRow]) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::inspect;
    use crate::frame::tests::tcp;

    fn info(src: u8, dst: u8) -> FrameInfo {
        let mut f = FrameInfo {
            dst: [2, 0, 0, 0, 0, dst],
            src: [2, 0, 0, 0, 0, src],
            src_ip: Some(IpAddr::from([10, 0, 0, src])),
            flow: None,
            tcp: Default::default(),
        };
        if dst == 0xff {
            f.dst = [0xff; 6];
        }
        f
    }

    #[test]
    fn counts_both_ends_and_the_pair() {
        let mut t = VmTable::new(16, 16, 4);
        let f = inspect(&tcp([10, 0, 0, 1], [10, 0, 0, 2], (1, 2), "A", 100)).expect("frame");
        t.observe(&f, 154, true, 5);
        t.observe(&f, 154, true, 6);
        let a = t.get(&f.src).expect("a");
        assert_eq!((a.tx_packets, a.tx_bytes, a.local), (2, 308, true));
        assert_eq!(a.ip, Some(IpAddr::from([10, 0, 0, 1])));
        let b = t.get(&f.dst).expect("b");
        assert_eq!((b.rx_packets, b.rx_bytes, b.local), (2, 308, false));
        let p = t.pairs();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].packets, p[0].bytes, p[0].at_source), (2, 308, true));
        assert_eq!(p[0].src_ip, Some(IpAddr::from([10, 0, 0, 1])));
        // JSON carries them as text.
        let j = serde_json::to_value(&p[0]).expect("json");
        assert_eq!(
            (j["src_mac"].as_str(), j["src_ip"].as_str()),
            (Some("02:00:00:00:00:0a"), Some("10.0.0.1"))
        );
        assert_eq!(t.by_ip(IpAddr::from([10, 0, 0, 1])), Some(f.src));
        let rows = t.rows(10);
        assert_eq!(rows[0].idle_s, 4);
        assert!(
            rows.iter()
                .any(|r| r.location == VmLocation::Local && r.rates.is_some())
        );
        assert!(
            rows.iter()
                .any(|r| r.location == VmLocation::Remote && r.rates.is_none())
        );
    }

    #[test]
    fn a_shared_service_address_is_not_taken_as_a_vms_own() {
        let mut t = VmTable::new(16, 16, 4);
        t.set_shared(vec![IpAddr::from([10, 0, 0, 200])]);
        let own = inspect(&tcp([10, 0, 0, 1], [10, 0, 0, 2], (1, 2), "A", 10)).expect("frame");
        t.observe(&own, 64, true, 1);
        // The backend answers from the service address (direct server return).
        let dsr = inspect(&tcp([10, 0, 0, 200], [10, 0, 0, 2], (80, 2), "A", 10)).expect("f");
        t.observe(&dsr, 64, true, 2);
        let a = t.get(&own.src).expect("a");
        assert_eq!(a.ip, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(a.tx_packets, 2, "its frames still count");
    }

    #[test]
    fn broadcasts_count_for_the_sender_only() {
        let mut t = VmTable::new(16, 16, 4);
        t.observe(&info(1, 0xff), 60, false, 0);
        assert_eq!(t.stats().vms, 1);
        assert_eq!(t.stats().pairs, 0);
        // A frame arriving through a tunnel: the source is remote, the destination local.
        t.observe(&info(1, 2), 60, false, 0);
        assert!(!t.get(&[2, 0, 0, 0, 0, 1]).expect("1").local);
        assert!(t.get(&[2, 0, 0, 0, 0, 2]).expect("2").local);
        assert!(!t.pairs()[0].at_source);
    }

    #[test]
    fn tables_are_capped_and_evictions_counted() {
        let mut t = VmTable::new(4, 3, 1);
        for i in 1..=10u8 {
            t.observe(&info(i, i + 100), 60, true, u64::from(i));
        }
        let s = t.stats();
        assert_eq!((s.vms, s.pairs), (4, 3));
        assert_eq!(s.vm_evictions_total, 16);
        assert_eq!(s.pair_evictions_total, 7);
        // Series follow their VMs out: never more than the cap in use.
        assert!(t.series_used <= 1);
        assert!(s.port_series_refused_total > 0);
        // The newest survive.
        assert!(t.get(&[2, 0, 0, 0, 0, 10]).is_some());
    }

    #[test]
    fn port_series_gives_rates() {
        let mut t = VmTable::new(8, 8, 8);
        for s in 0..5u64 {
            t.tick(s);
            t.observe(&info(1, 2), 1250, true, s);
        }
        t.tick(5);
        let r = t.rows(5);
        let rates = r.iter().find(|r| r.mac[5] == 1).and_then(|r| r.rates);
        assert_eq!(rates.map(|r| r.tx_rate_bps), Some(10_000));
    }

    #[test]
    fn connections_a_vm_opens_are_counted() {
        let mut t = VmTable::new(16, 16, 4);
        let mut syn = info(1, 2);
        syn.tcp.syn = true;
        let mut syn_ack = info(2, 1);
        syn_ack.tcp.syn = true;
        syn_ack.tcp.ack = true;
        for _ in 0..3 {
            t.observe(&syn, 60, true, 1);
            t.observe(&syn_ack, 60, false, 1);
        }
        t.observe(&info(1, 2), 60, true, 1);
        let rows = t.rows(1);
        let of = |m: u8| rows.iter().find(|r| r.mac[5] == m).map(|r| r.tcp_syn_total);
        assert_eq!((of(1), of(2)), (Some(3), Some(0)), "SYN-ACKs open nothing");
    }
}
