//! Service addresses (a group of VMs serving one address, balanced in the
//! overlay itself): a LAN's service
//! has an address (a VIP) that every host answers ARP for from its TAP with one virtual
//! MAC, the same on every host; a frame a local VM sends to that MAC is rewritten to one
//! backend VM's MAC, chosen per flow, and goes on as any unicast frame. The backend
//! answers the client directly (layer-2 direct server return: it holds the VIP on a
//! loopback and does not answer ARP for it), so nothing else is rewritten and any
//! protocol works.
//!
//! A new flow's backend is chosen by the service's policy (`choice.rs`): Maglev
//! consistent hashing of the 5-tuple (`maglev.rs`), or the lesser loaded of two
//! candidates the table draws (power of two choices over the figures the backends' hosts
//! report). The choice is pinned (`pins.rs`), so the flow's later frames follow it
//! whatever the figures do, until its backend goes down (`health.rs`): then the flow
//! moves on its next frame.
//!
//! Each host probes the backends that run on it and tells its peers their health and
//! load ([`Services::report`], [`Services::handle_report`]); a backend whose host is
//! down is down. No central point: each host decides for the flows its own VMs start.
//!
//! Sans-IO: frames in, a rewritten frame, an ARP answer or a probe out; nothing here
//! allocates per frame (tables are built when the LAN is joined).

mod choice;
mod flow;
pub mod health;
mod maglev;
mod nd;
mod pins;
pub mod probe;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use self::flow::flow_of;
use self::health::Health;
pub use self::maglev::{TABLE_SIZE, maglev, virtual_mac};
use self::pins::Pins;
use self::probe::{Answer, Probe};
use super::PeerId;
use super::macdb::Mac;
use crate::proto::WireError;
use crate::proto::service::{self as wire, BackendReport};

/// How long a peer's report stays fresh: its load figure counts, and its health verdict
/// stands, this long after it came.
pub const REPORT_FRESH_S: u64 = 3;

/// How a service chooses a new flow's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The lesser loaded of two candidates (load, new flows, RTT, weight).
    #[default]
    LeastLoad,
    /// Maglev consistent hashing of the 5-tuple, by weight only.
    Hash,
}

impl Policy {
    /// Its name in the config and status.
    pub fn name(self) -> &'static str {
        match self {
            Policy::LeastLoad => "least-load",
            Policy::Hash => "hash",
        }
    }
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Its MAC, when the config gives one.
    pub mac: Option<Mac>,
    /// Its address, when the config gives one (the MAC is learned from its traffic).
    pub ip: Option<IpAddr>,
    /// Its libvirt domain name, when the config gives one (the MAC comes from libvirt on
    /// the host that runs it, and from that host's reports elsewhere).
    pub vm: Option<String>,
    /// Its share of new flows, relative to the others'.
    pub weight: u32,
}

impl BackendSpec {
    /// The key its table permutation derives from: the same text on every host.
    fn key(&self) -> String {
        match (self.mac, self.ip, &self.vm) {
            (Some(m), _, _) => common::text::mac(&m),
            (None, Some(ip), _) => ip.to_string(),
            (None, None, Some(name)) => name.clone(),
            (None, None, None) => String::new(),
        }
    }

    /// Its key's 32-bit FNV-1a: how a report names a backend its receiver may know by
    /// name only (not yet by MAC).
    fn key_hash(&self) -> u32 {
        self.key().bytes().fold(0x811c_9dc5, |h: u32, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }
}

/// One service of a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its name.
    pub name: String,
    /// The address clients send to.
    pub vip: IpAddr,
    /// The MAC every host answers ARP for the address with.
    pub vmac: Mac,
    /// Its backends.
    pub backends: Vec<BackendSpec>,
    /// Only these destination ports (TCP and UDP); empty: every port.
    pub ports: Vec<u16>,
    /// How new flows choose.
    pub policy: Policy,
    /// The address a TCP health check connects from (with `ports`: to the first port);
    /// None: backends are checked by ARP or neighbour discovery only.
    pub probe_from: Option<IpAddr>,
}

impl ServiceSpec {
    /// The TCP check's source address and port, when the service has one.
    pub fn tcp_check(&self) -> Option<(IpAddr, u16)> {
        Some((self.probe_from?, *self.ports.first()?))
    }
}

/// Per backend: frames and bytes sent to it, flows and TCP connections given to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounts {
    /// Frames rewritten to it.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// TCP connections opened to it (SYN without ACK).
    pub connections: u64,
    /// Flows this host gave it.
    pub flows: u64,
    /// Flows that left it for another backend because it went down.
    pub moved_away: u64,
}

/// Where a backend's MAC is, as the engine knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Where {
    /// Not seen yet.
    #[default]
    Unknown,
    /// On this host; its address if known, and its bytes both ways so far.
    Local {
        /// Its address (the ARP or neighbour probe's target).
        ip: Option<IpAddr>,
        /// Bytes it sent and received, all time.
        bytes: u64,
    },
    /// Behind a peer.
    Peer {
        /// The peer.
        peer: PeerId,
        /// The tunnel is up and its probes do not find the host down.
        up: bool,
        /// Nothing heard from its host for [`QUIET`]: new flows go elsewhere while
        /// another backend is up, but flows pinned to it stay until it is called down.
        quiet: bool,
        /// Smoothed RTT to it, µs.
        rtt_us: Option<u64>,
    },
}

/// Silence from a backend's host after which new flows avoid it: its host sends probes
/// and service reports every second, so 1.5 s without a word means two missed.
pub const QUIET: std::time::Duration = std::time::Duration::from_millis(1500);

/// A peer's last report of a backend.
#[derive(Debug, Clone, Copy)]
struct Report {
    peer: PeerId,
    healthy: bool,
    load_kbps: u32,
    open_tcp: u32,
    at_s: u64,
}

/// A backend as the data path holds it.
#[derive(Debug, Clone, Default)]
struct Backend {
    /// Its MAC as known now (from the config, learned by its address, from libvirt or
    /// from its host's report).
    mac: Option<Mac>,
    /// [`BackendSpec::key_hash`].
    key_hash: u32,
    /// Named by libvirt on this host (a report does not override it).
    named_here: bool,
    at: Where,
    health: Health,
    /// The source port of the last TCP check: its answer must come to it.
    check_port: u16,
    /// The SYN-ACK of a TCP check to reset: (our port, its acknowledgement).
    reset: Option<(u16, u32)>,
    report: Option<Report>,
    /// The verdict new flows and moved flows go by.
    up: bool,
    /// Its host has been quiet a moment: new flows avoid it (see [`Where::Peer`]).
    suspect: bool,
    /// Its traffic both ways, kbit/s: measured here when local, reported when not (0
    /// when the report is stale: an old figure must not steer new flows).
    load_kbps: u32,
    /// TCP connections open with it: counted here when local (once a second, by
    /// [`Services::set_open_tcp`]), reported when not (0 when the report is stale).
    open_tcp: u32,
    rtt_us: u64,
    /// Bytes at the last second, for the local rate.
    last_bytes: Option<u64>,
    /// Flows this host gave it in the current and the previous second.
    recent: [u32; 2],
    /// Flows this host gave it in each second of the last minute, by second % 60.
    minute: Minute,
    counts: BackendCounts,
}

/// Counts per second of the last minute (arrays over 32 have no `Default`).
#[derive(Debug, Clone)]
struct Minute([u32; 60]);

impl Default for Minute {
    fn default() -> Self {
        Minute([0; 60])
    }
}

/// What [`Services::handle_frame`] made of a frame from a local VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for a service: forward as it is.
    Pass,
    /// To a service: its destination MAC is now this backend's; forward it.
    Rewritten,
    /// An ARP request for a service address, turned into its answer in place: write it
    /// back to the TAP.
    Answer,
    /// The answer to one of our health probes: taken, nothing to forward.
    Consumed,
    /// To a service with no backend to take it: drop (counted).
    NoBackend,
}

/// A service as the data path holds it.
#[derive(Debug)]
struct Service {
    spec: ServiceSpec,
    /// Backend index per slot.
    table: Vec<u16>,
    backends: Vec<Backend>,
    pins: Pins,
    /// Frames to the service that found no backend to go to.
    no_backend: u64,
    /// ARP requests for the address answered.
    arp_answered: u64,
}

/// The services of one LAN.
#[derive(Debug, Default)]
pub struct Services {
    list: Vec<Service>,
    /// The owner's clock, seconds (from [`tick`](Self::tick)): pins and reports age by it.
    now_s: u64,
    /// Probes to write to the TAP: (service, backend, a reset rather than a check).
    probes: Vec<(u16, u16, bool)>,
    /// Reports refused (a malformed body).
    pub bad_reports: u64,
    /// A local backend's verdict changed on an answer: its host reports at the next tick.
    flipped: bool,
}

impl Services {
    /// Build each service's tables (allocates: at join or reload only).
    pub fn new(specs: &[ServiceSpec]) -> Self {
        Services {
            list: specs
                .iter()
                .map(|s| Service {
                    table: maglev(&s.backends),
                    backends: s
                        .backends
                        .iter()
                        .map(|b| Backend {
                            mac: b.mac,
                            key_hash: b.key_hash(),
                            ..Backend::default()
                        })
                        .collect(),
                    pins: Pins::new(),
                    no_backend: 0,
                    arp_answered: 0,
                    spec: s.clone(),
                })
                .collect(),
            ..Services::default()
        }
    }

    /// Put `specs` in force (a reload; allocates). A service that keeps its name keeps,
    /// for each backend it still has (by MAC or address), its flows (pins), health and
    /// counters: a long transfer stays with its backend while weights or the policy
    /// change. Flows of a backend that left choose again on their next frame.
    pub fn replace(&mut self, specs: &[ServiceSpec]) {
        let mut fresh = Services::new(specs);
        for s in &mut fresh.list {
            let Some(i) = self.list.iter().position(|o| o.spec.name == s.spec.name) else {
                continue;
            };
            let mut old = self.list.swap_remove(i);
            let keys: Vec<String> = s.spec.backends.iter().map(BackendSpec::key).collect();
            let map: Vec<Option<u16>> = old
                .spec
                .backends
                .iter()
                .map(|b| {
                    let k = b.key();
                    keys.iter().position(|n| *n == k).map(|j| j as u16)
                })
                .collect();
            for (oi, ni) in map.iter().enumerate() {
                if let (Some(ni), Some(b)) = (ni, old.backends.get_mut(oi)) {
                    s.backends[usize::from(*ni)] = std::mem::take(b);
                }
            }
            old.pins.remap(&map);
            s.pins = old.pins;
            s.no_backend = old.no_backend;
            s.arp_answered = old.arp_answered;
        }
        fresh.now_s = self.now_s;
        fresh.bad_reports = self.bad_reports;
        *self = fresh;
    }

    /// Per service, (name, backends up, backends) into `out` (its strings reused: the
    /// alarm figures, once a second).
    pub fn up_counts(&self, out: &mut Vec<(String, u32, u32)>) {
        out.resize_with(self.list.len(), Default::default);
        for (s, o) in self.list.iter().zip(out.iter_mut()) {
            if o.0 != s.spec.name {
                o.0.clone_from(&s.spec.name);
            }
            o.1 = s
                .backends
                .iter()
                .filter(|b| b.up && b.mac.is_some())
                .count() as u32;
            o.2 = s.backends.len() as u32;
        }
    }

    /// Whether the LAN has services (else frames are never looked at).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Learn the MACs of backends given by address, through `mac_of` (the LAN's VM
    /// table), and of those given by libvirt name, through `named` (this host's libvirt:
    /// the domain's MACs, the one on this host first, `here`); called once a second, not
    /// per frame. A name this host's libvirt does not know is left to the reports of the
    /// host that runs it.
    pub fn resolve<'a>(
        &mut self,
        mac_of: impl Fn(IpAddr) -> Option<Mac>,
        named: impl Fn(&str) -> Option<&'a [Mac]>,
        here: impl Fn(&Mac) -> bool,
    ) {
        for s in &mut self.list {
            for (spec, b) in s.spec.backends.iter().zip(s.backends.iter_mut()) {
                if spec.mac.is_none()
                    && let Some(ip) = spec.ip
                    && let Some(found) = mac_of(ip)
                {
                    b.mac = Some(found);
                }
                if let Some(name) = &spec.vm {
                    let macs = named(name).unwrap_or_default();
                    let found = macs.iter().find(|m| here(m)).or(macs.first());
                    b.named_here = found.is_some();
                    if let Some(m) = found {
                        b.mac = Some(*m);
                    }
                }
            }
        }
    }

    /// The MACs of the backends on this host (as the last tick located them) into `out`,
    /// for their open connections to be counted (once a second; `out` reused).
    pub fn local_backends(&self, out: &mut Vec<Mac>) {
        out.clear();
        for b in self.list.iter().flat_map(|s| &s.backends) {
            if let (Some(m), Where::Local { .. }) = (b.mac, b.at)
                && !out.contains(&m)
            {
                out.push(m);
            }
        }
    }

    /// The open TCP connections of the local backends `macs` (from
    /// [`local_backends`](Self::local_backends)), counted by the LAN's flow table.
    pub fn set_open_tcp(&mut self, macs: &[Mac], open: &[u32]) {
        for b in self.list.iter_mut().flat_map(|s| &mut s.backends) {
            if let (Some(m), Where::Local { .. }) = (b.mac, b.at) {
                b.open_tcp = macs
                    .iter()
                    .position(|x| *x == m)
                    .and_then(|i| open.get(i).copied())
                    .unwrap_or(0);
            }
        }
    }

    /// Every timer tick: where each backend is (`locate`), probes due for the local
    /// ones, the verdicts, and once a second the local load figures. True when a local
    /// backend's health changed (its host reports at once, not at the next second).
    pub fn tick(
        &mut self,
        now: Instant,
        second: u64,
        new_second: bool,
        locate: impl Fn(&Mac) -> Where,
    ) -> bool {
        self.now_s = second;
        let mut changed = std::mem::take(&mut self.flipped);
        for (si, s) in self.list.iter_mut().enumerate() {
            for (bi, (b, spec)) in s.backends.iter_mut().zip(&s.spec.backends).enumerate() {
                b.at = b.mac.as_ref().map_or(Where::Unknown, &locate);
                // The configured address is the one to probe; else the VM's own.
                if let (Where::Local { ip, .. }, Some(a)) = (&mut b.at, spec.ip) {
                    *ip = Some(a);
                }
                if let (Where::Unknown, Some(r)) = (b.at, b.report)
                    && second.saturating_sub(r.at_s) <= REPORT_FRESH_S
                {
                    // Not seen here yet, but its host says where it is.
                    b.at = Where::Peer {
                        peer: r.peer,
                        up: true,
                        quiet: false,
                        rtt_us: None,
                    };
                }
                match b.at {
                    Where::Local { ip, bytes } => {
                        if ip.is_some() || s.spec.tcp_check().is_some() {
                            let (due, flipped) = b.health.due(now);
                            changed |= flipped;
                            if due && self.probes.len() < 1024 {
                                self.probes.push((si as u16, bi as u16, false));
                            }
                        }
                        if new_second {
                            let last = b.last_bytes.replace(bytes).unwrap_or(bytes);
                            b.load_kbps = (bytes.saturating_sub(last) * 8 / 1000)
                                .try_into()
                                .unwrap_or(u32::MAX);
                        }
                        b.rtt_us = 0;
                        b.up = b.health.healthy;
                        b.suspect = false;
                    }
                    Where::Peer {
                        peer,
                        up,
                        quiet,
                        rtt_us,
                    } => {
                        b.suspect = quiet;
                        b.last_bytes = None;
                        let report = b.report.filter(|r| r.peer == peer);
                        let fresh =
                            report.filter(|r| second.saturating_sub(r.at_s) <= REPORT_FRESH_S);
                        b.load_kbps = fresh.map_or(0, |r| r.load_kbps);
                        b.open_tcp = fresh.map_or(0, |r| r.open_tcp);
                        b.rtt_us = rtt_us.unwrap_or(0);
                        // Its host's last word on its health stands while the tunnel
                        // is up; a host that never reports (an older vmvpn) is trusted.
                        b.up = up && report.is_none_or(|r| r.healthy);
                    }
                    Where::Unknown => {
                        b.up = false;
                        b.load_kbps = 0;
                        b.open_tcp = 0;
                    }
                }
                if new_second {
                    b.recent = [0, b.recent[0]];
                    b.minute.0[(second % 60) as usize] = 0;
                }
            }
        }
        changed
    }

    /// The next health probe (or reset of a TCP check's answer) to write to the TAP,
    /// into `out` (≥ [`probe::PROBE_LEN`] bytes); its length.
    pub fn poll_probe(&mut self, out: &mut [u8]) -> Option<usize> {
        while let Some((si, bi, reset)) = self.probes.pop() {
            let Some(s) = self.list.get_mut(usize::from(si)) else {
                continue;
            };
            let check = s.spec.tcp_check();
            let (vip, vmac) = (s.spec.vip, s.spec.vmac);
            let Some(b) = s.backends.get_mut(usize::from(bi)) else {
                continue;
            };
            let (Some(mac), Where::Local { ip, .. }) = (b.mac, b.at) else {
                continue;
            };
            let p = match (check, reset, ip) {
                (Some((from, port)), true, _) => {
                    let Some((sport, seq)) = b.reset.take() else {
                        continue;
                    };
                    Probe::Tcp {
                        from,
                        to: vip,
                        sport,
                        port,
                        seq,
                        rst: true,
                    }
                }
                (Some((from, port)), false, _) => {
                    // A port of its own per check (an old answer is not this one's), and
                    // a sequence number nobody can guess from the port.
                    b.check_port = 49152 + (b.health.probes % 16384) as u16;
                    Probe::Tcp {
                        from,
                        to: vip,
                        sport: b.check_port,
                        port,
                        seq: maglev::mix(
                            b.health.probes
                                ^ u64::from_ne_bytes([
                                    mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0,
                                ]),
                        ) as u32,
                        rst: false,
                    }
                }
                (None, _, Some(IpAddr::V4(a))) => Probe::Arp(a),
                (None, _, Some(IpAddr::V6(a))) => Probe::Nd(a),
                (None, _, None) => continue,
            };
            let n = probe::write(out, &vmac, &mac, p);
            if n > 0 {
                return Some(n);
            }
        }
        None
    }

    /// What this host reports of its local backends, into `out` (≥ 1 + `MAX_ENTRIES` × `ENTRY_LEN` bytes);
    /// None when it has none.
    pub fn report(&self, out: &mut [u8]) -> Option<usize> {
        let mut entries = [BackendReport {
            service: [0; 6],
            backend: [0; 6],
            healthy: false,
            load_kbps: 0,
            open_tcp: 0,
            key: 0,
        }; wire::MAX_ENTRIES];
        let mut n = 0;
        for s in &self.list {
            for b in &s.backends {
                if let (Some(mac), Where::Local { .. }) = (b.mac, b.at)
                    && n < wire::MAX_ENTRIES
                {
                    entries[n] = BackendReport {
                        service: s.spec.vmac,
                        backend: mac,
                        healthy: b.health.healthy,
                        load_kbps: b.load_kbps,
                        open_tcp: b.open_tcp,
                        key: b.key_hash,
                    };
                    n += 1;
                }
            }
        }
        (n > 0).then(|| wire::emit(&entries[..n], out))
    }

    /// A peer's report of its backends: kept for the next tick's verdicts.
    pub fn handle_report(&mut self, peer: PeerId, body: &[u8]) -> Result<(), WireError> {
        let entries = wire::parse(body).inspect_err(|_| self.bad_reports += 1)?;
        for e in entries {
            let Some(s) = self.list.iter_mut().find(|s| s.spec.vmac == e.service) else {
                continue;
            };
            // By MAC; else a backend named by libvirt that this host cannot name itself,
            // whose MAC the report gives.
            let i = s
                .backends
                .iter()
                .position(|b| b.mac == Some(e.backend))
                .or_else(|| {
                    s.spec
                        .backends
                        .iter()
                        .zip(&s.backends)
                        .position(|(spec, b)| {
                            spec.vm.is_some() && !b.named_here && b.key_hash == e.key
                        })
                });
            if let Some(b) = i.and_then(|i| s.backends.get_mut(i)) {
                b.mac = Some(e.backend);
                let changed = b.report.is_none_or(|r| r.healthy != e.healthy);
                b.report = Some(Report {
                    peer,
                    healthy: e.healthy,
                    load_kbps: e.load_kbps,
                    open_tcp: e.open_tcp,
                    at_s: self.now_s,
                });
                // A verdict that changed applies at once, not at the next tick.
                if changed && matches!(b.at, Where::Peer { peer: p, up: true, .. } if p == peer) {
                    b.up = e.healthy;
                }
            }
        }
        Ok(())
    }

    /// Look at a frame a local VM sent (`frame`, writable): answer ARP for a service
    /// address, take the answer to a health probe, or send a frame to a service's MAC to
    /// the flow's backend.
    pub fn handle_frame(&mut self, frame: &mut [u8]) -> Verdict {
        if frame.len() < 14 {
            return Verdict::Pass;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype == 0x0806 {
            return self.handle_arp(frame);
        }
        if ethertype == 0x86dd
            && let Some(target) = nd::solicited(frame)
        {
            let Some(s) = self
                .list
                .iter_mut()
                .find(|s| s.spec.vip == target || s.spec.probe_from == Some(target))
            else {
                return Verdict::Pass;
            };
            nd::advertise(frame, &s.spec.vmac);
            s.arp_answered += 1;
            return Verdict::Answer;
        }
        let now_s = self.now_s as u32;
        let Some(si) = self.list.iter().position(|s| frame[..6] == s.spec.vmac) else {
            return Verdict::Pass;
        };
        let Some(flow) = flow_of(frame) else {
            self.list[si].no_backend += 1;
            return Verdict::NoBackend;
        };
        // A probe's answer (ICMPv6, or TCP to the probe address): looked at only then, so
        // a client's frame pays no second parse.
        let probe_from = self.list[si].spec.probe_from;
        if (flow.proto == 58 || (flow.proto == 6 && probe_from.is_some_and(|p| flow.is_to(p))))
            && let Some(a) = probe::answer(frame, probe_from)
        {
            return self.handle_answer(si, a);
        }
        let s = &mut self.list[si];
        if !s.spec.ports.is_empty()
            && (flow.proto == 6 || flow.proto == 17)
            && !s.spec.ports.contains(&flow.dport)
        {
            s.no_backend += 1;
            return Verdict::NoBackend;
        }
        let hash = flow.hash();
        // A SYN on the 5-tuple of a connection the client closed is a new connection (its
        // port came round again): it chooses afresh, as its old backend holds nothing of
        // it. A retransmitted SYN keeps the pin its first one made.
        let pinned = s
            .pins
            .get(hash, now_s)
            .filter(|&(_, closed)| !(closed && flow.syn))
            .map(|(b, _)| b);
        let chosen = match pinned {
            Some(b) if s.backends.get(usize::from(b)).is_some_and(|b| b.up) => Some(b),
            _ => {
                let c = s.choose(hash);
                if let Some(c) = c {
                    s.pins.put(hash, c, now_s);
                    let nb = &mut s.backends[usize::from(c)];
                    nb.counts.flows += 1;
                    nb.recent[0] += 1;
                    nb.minute.0[(now_s % 60) as usize] += 1;
                    if let Some(old) = pinned.and_then(|p| s.backends.get_mut(usize::from(p))) {
                        old.counts.moved_away += 1;
                    }
                }
                c
            }
        };
        if flow.fin {
            s.pins.close(hash);
        }
        let Some(b) = chosen.and_then(|c| s.backends.get_mut(usize::from(c))) else {
            s.no_backend += 1;
            return Verdict::NoBackend;
        };
        let Some(mac) = b.mac else {
            s.no_backend += 1;
            return Verdict::NoBackend;
        };
        frame[..6].copy_from_slice(&mac);
        b.counts.frames += 1;
        b.counts.bytes += frame.len() as u64;
        if flow.syn {
            b.counts.connections += 1;
        }
        Verdict::Rewritten
    }

    /// ARP from a local VM: a request for a service address (answered in place) or the
    /// answer to a health probe (taken).
    fn handle_arp(&mut self, frame: &mut [u8]) -> Verdict {
        if let Some(si) = self.list.iter().position(|s| frame[..6] == s.spec.vmac)
            && let Some(a) = probe::answer(frame, None)
        {
            return self.handle_answer(si, a);
        }
        self.answer_arp(frame)
    }

    /// A local VM's answer to a probe of service `si`: the backend it comes from is
    /// answered when it answers the probe its health goes by (the TCP check when the
    /// service has one, else ARP or neighbour discovery of its address). A SYN-ACK is
    /// reset whoever it is for, so no VM keeps a half-open connection of ours.
    fn handle_answer(&mut self, si: usize, a: Answer) -> Verdict {
        let s = &mut self.list[si];
        let tcp = s.spec.tcp_check().is_some();
        let (mac, ok) = match a {
            Answer::Arp(m) | Answer::Nd(m, _) => (m, true),
            Answer::Tcp {
                from,
                sport,
                accepted,
                ack,
            } => {
                if accepted
                    && let Some(bi) = s.backends.iter().position(|b| b.mac == Some(from))
                    && self.probes.len() < 1024
                {
                    s.backends[bi].reset = Some((sport, ack));
                    self.probes.push((si as u16, bi as u16, true));
                }
                (from, accepted)
            }
        };
        for (b, spec) in s.backends.iter_mut().zip(&s.spec.backends) {
            let answers = match a {
                Answer::Nd(_, target) => !tcp && spec.ip.is_none_or(|ip| ip == IpAddr::V6(target)),
                Answer::Tcp { sport, .. } => tcp && sport == b.check_port,
                Answer::Arp(_) => !tcp,
            };
            if b.mac != Some(mac) || !answers {
                continue;
            }
            // A refused connection is a miss at once; silence is one at the next probe.
            self.flipped |= if ok {
                b.health.answered()
            } else {
                b.health.refused()
            };
            b.up = b.health.healthy;
        }
        Verdict::Consumed
    }

    /// An ARP request (Ethernet, IPv4) for a service address: made its reply in place.
    fn answer_arp(&mut self, frame: &mut [u8]) -> Verdict {
        const ARP: usize = 14;
        if frame.len() < ARP + 28
            || frame[ARP..ARP + 6] != [0, 1, 8, 0, 6, 4]
            || frame[ARP + 6..ARP + 8] != [0, 1]
        {
            return Verdict::Pass;
        }
        let target = Ipv4Addr::new(
            frame[ARP + 24],
            frame[ARP + 25],
            frame[ARP + 26],
            frame[ARP + 27],
        );
        let Some(s) = self.list.iter_mut().find(|s| {
            s.spec.vip == IpAddr::V4(target) || s.spec.probe_from == Some(IpAddr::V4(target))
        }) else {
            return Verdict::Pass;
        };
        let mut asker_mac = [0u8; 6];
        asker_mac.copy_from_slice(&frame[ARP + 8..ARP + 14]);
        let mut asker_ip = [0u8; 4];
        asker_ip.copy_from_slice(&frame[ARP + 14..ARP + 18]);
        let vmac = s.spec.vmac;
        frame[..6].copy_from_slice(&asker_mac);
        frame[6..12].copy_from_slice(&vmac);
        frame[ARP + 7] = 2; // reply
        frame[ARP + 8..ARP + 14].copy_from_slice(&vmac);
        frame[ARP + 14..ARP + 18].copy_from_slice(&target.octets());
        frame[ARP + 18..ARP + 24].copy_from_slice(&asker_mac);
        frame[ARP + 24..ARP + 28].copy_from_slice(&asker_ip);
        s.arp_answered += 1;
        Verdict::Answer
    }

    /// Each service as `vmvpn status` shows it; `peer_name` names a peer.
    pub fn status(
        &self,
        peer_name: impl Fn(PeerId) -> String,
    ) -> Vec<crate::status::ServiceStatus> {
        let now_s = self.now_s as u32;
        self.list
            .iter()
            .map(|s| {
                let active = s.pins.active(s.backends.len(), now_s, 10);
                let minute = |b: &Backend| b.minute.0.iter().map(|&n| u64::from(n)).sum::<u64>();
                let all: u64 = s.backends.iter().map(minute).sum();
                crate::status::ServiceStatus {
                    name: s.spec.name.clone(),
                    address: s.spec.vip.to_string(),
                    mac: common::text::mac(&s.spec.vmac),
                    policy: s.spec.policy.name().into(),
                    check: match s.spec.tcp_check() {
                        Some((from, port)) => format!("tcp from {from} to port {port}"),
                        None => "arp/nd".into(),
                    },
                    backends_up: s
                        .backends
                        .iter()
                        .filter(|b| b.up && b.mac.is_some())
                        .count(),
                    no_backend_frames_total: s.no_backend,
                    arp_answered_total: s.arp_answered,
                    pins_evicted_total: s.pins.evicted,
                    backends: s
                        .spec
                        .backends
                        .iter()
                        .zip(&s.backends)
                        .zip(active)
                        .map(|((spec, b), active)| crate::status::BackendStatus {
                            backend: spec.key(),
                            mac: b.mac.as_ref().map(common::text::mac),
                            weight: spec.weight,
                            state: match (b.at, b.up, b.suspect) {
                                (Where::Unknown, _, _) => "unknown",
                                (_, true, true) => "quiet",
                                (_, true, false) => "up",
                                (_, false, _) => "down",
                            }
                            .into(),
                            location: match b.at {
                                Where::Unknown => "unknown".into(),
                                Where::Local { .. } => "local".into(),
                                Where::Peer { peer, .. } => peer_name(peer),
                            },
                            load_mbps: f64::from(b.load_kbps) / 1000.0,
                            open_connections: b.open_tcp,
                            rtt_ms: b.rtt_us as f64 / 1000.0,
                            flows_total: b.counts.flows,
                            active_flows: active,
                            new_flows_last_minute: minute(b),
                            share_last_minute: if all == 0 {
                                0.0
                            } else {
                                minute(b) as f64 / all as f64
                            },
                            moved_away_total: b.counts.moved_away,
                            probes_total: b.health.probes,
                            downs_total: b.health.downs,
                            frames_total: b.counts.frames,
                            bytes_total: b.counts.bytes,
                            connections_total: b.counts.connections,
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

impl super::Engine {
    /// This host's libvirt domains, (name, MACs), for services whose backends are named
    /// (from the inventory after each refresh that changed them; applied at the next
    /// second).
    pub fn set_vm_names(&mut self, names: Vec<(String, Vec<Mac>)>) {
        self.vm_names = names;
    }

    /// Put `specs` in force as LAN `lan`'s services (a reload): see
    /// [`Services::replace`].
    pub fn set_services(&mut self, lan: &str, specs: &[ServiceSpec]) -> Result<(), String> {
        let l = self.lan_named_mut(lan)?;
        l.services.replace(specs);
        l.spec.services = specs.to_vec();
        l.share_service_addresses();
        Ok(())
    }

    /// Every tick, each LAN's services: backends located, local ones probed, and this
    /// host's report of them sent to every peer up once a second, or at once when a
    /// verdict changed.
    pub(super) fn run_services(&mut self, now: Instant, second: u64, new_second: bool) {
        use super::macdb::Location;
        let mut body = [0u8; 1 + wire::MAX_ENTRIES * wire::ENTRY_LEN];
        let (mut macs, mut open) = (Vec::new(), Vec::new());
        for li in 0..self.lans.len() {
            let l = &mut self.lans[li];
            if l.services.is_empty() {
                continue;
            }
            if new_second {
                let (vms, macs_db, names) = (&l.measure.vms, &l.macs, &self.vm_names);
                l.services.resolve(
                    |ip| vms.by_ip(ip),
                    |name| {
                        names
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, m)| m.as_slice())
                    },
                    |mac| macs_db.lookup(mac, now) == Some(Location::Local),
                );
                // Its backends' open connections, from the flow table (a walk of it,
                // once a second, not per frame).
                l.services.local_backends(&mut macs);
                open.resize(macs.len(), 0);
                l.measure.flows.open_tcp_by_mac(&macs, &mut open);
                l.services.set_open_tcp(&macs, &open);
            }
            let (macs, vms, peers) = (&l.macs, &l.measure.vms, &l.peers);
            let changed =
                l.services
                    .tick(now, second, new_second, |mac| match macs.lookup(mac, now) {
                        Some(Location::Local) => {
                            let e = vms.get(mac);
                            Where::Local {
                                ip: e.and_then(|e| e.ip),
                                bytes: e.map_or(0, |e| e.tx_bytes + e.rx_bytes),
                            }
                        }
                        Some(Location::Peer(pi)) => {
                            peers
                                .get(pi.index())
                                .map_or(Where::Unknown, |p| Where::Peer {
                                    peer: pi,
                                    up: p.tunnel.is_up()
                                        && p.health(now) != crate::status::Health::Down,
                                    quiet: p
                                        .link
                                        .last_heard
                                        .is_none_or(|h| now.saturating_duration_since(h) >= QUIET),
                                    rtt_us: p.probe.rtt.summary().srtt_us,
                                })
                        }
                        None => Where::Unknown,
                    });
            if !(new_second || changed) {
                continue;
            }
            let Some(n) = l.services.report(&mut body) else {
                continue;
            };
            let up: Vec<PeerId> = (0..l.peers.len())
                .filter(|&i| l.peers[i].tunnel.is_up())
                .map(PeerId::at)
                .collect();
            for pi in up {
                self.queue_sealed(
                    super::LanId(li),
                    pi,
                    crate::proto::Kind::ServiceState,
                    &body[..n],
                    now,
                );
            }
        }
    }

    /// The next frame the engine writes to a TAP itself (a service health probe): into
    /// `buf[HEADER_LEN..]`, with its LAN and length. Call after
    /// [`handle_timeout`](super::Engine::handle_timeout) until None.
    pub fn poll_tap_write(&mut self, buf: &mut [u8]) -> Option<(super::LanId, usize)> {
        let out = buf.get_mut(crate::proto::HEADER_LEN..)?;
        if out.len() < probe::PROBE_LEN {
            return None;
        }
        self.lans
            .iter_mut()
            .enumerate()
            .find_map(|(i, l)| l.services.poll_probe(out).map(|n| (super::LanId(i), n)))
    }
}
