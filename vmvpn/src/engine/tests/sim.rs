//! The in-memory network the engine's tests run on: several engines, a clock, and the
//! datagrams between them (delivered, dropped by MTU, or multicast within a /24).

// What every topic file uses, in one glob.
pub(super) use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
pub(super) use std::net::SocketAddr;
pub(super) use std::time::{Duration, Instant};

pub(super) use proptest::prelude::*;
pub(super) use telemetry::DropReason;

pub(super) use crate::engine::flood::FloodMode;
pub(super) use crate::engine::probes::PING_BIT;
pub(super) use crate::engine::*;
pub(super) use crate::proto::crypto::LanSecret;
pub(super) use crate::proto::{HEADER_LEN, Kind, Packet};
pub(super) use crate::status::{LanStatus, PeerStatus};

pub(super) const MAX_FRAME: usize = 1518;
pub(super) const LAN: LanId = LanId(0);

pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 77, 1, i as u8 + 1], 7401))
}

pub(super) fn spec(secret: u8, peers: Vec<SocketAddr>) -> LanSpec {
    LanSpec {
        name: "lan1".into(),
        id: crate::proto::crypto::lan_id("lan1"),
        secret: LanSecret([secret; 32]),
        max_frame: MAX_FRAME,
        peers,
        mac_capacity: 1024,
        mac_max_age: Duration::from_secs(300),
        segment: "192.168.100.0/24".into(),
        tap: "vl1".into(),
        mtu: 1500,
        flood: FloodMode::Unicast,
        cipher: crate::proto::crypto::Cipher::default(),
        limits: Vec::new(),
        services: Vec::new(),
        group: None,
    }
}

pub(super) fn engine(i: usize, n: usize, secret: u8, start: u64) -> Engine {
    let peers = (0..n).filter(|&j| j != i).map(addr).collect();
    Engine::new(
        HostIdentity {
            id: 100 + i as u32,
            name: format!("h{i}"),
            secret: [(i as u8 + 1) ^ (start as u8).wrapping_mul(31); 32],
            start_ns: start,
            underlay: Some((addr(i).ip(), 24)),
        },
        vec![spec(secret, peers)],
        Timers::default(),
    )
}

/// Host `i` of the tests' usual identity, at `underlay` (a /24), with one LAN.
pub(super) fn engine_at(i: usize, underlay: SocketAddr, lan: LanSpec) -> Engine {
    Engine::new(
        HostIdentity {
            id: 100 + i as u32,
            name: format!("h{i}"),
            secret: [i as u8 + 1; 32],
            start_ns: 1000,
            underlay: Some((underlay.ip(), 24)),
        },
        vec![lan],
        Timers::default(),
    )
}

/// Frames a VM would send: Ethernet header plus a payload.
pub(super) fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(payload);
    f
}

pub(super) struct Net {
    pub(super) hosts: Vec<Engine>,
    pub(super) now: Instant,
    /// Frames written to each host's TAP.
    pub(super) taps: Vec<Vec<Vec<u8>>>,
    /// Every sealed datagram sent, as (sender index, destination, bytes).
    pub(super) sent: Vec<(usize, SocketAddr, Vec<u8>)>,
    pub(super) queue: Vec<(usize, SocketAddr, Vec<u8>)>,
    /// Each host's underlay address.
    pub(super) addrs: Vec<SocketAddr>,
    /// The LAN's multicast group, delivered within a /24.
    pub(super) group: Option<SocketAddr>,
    /// Hosts whose multicast is blocked (they neither send nor receive it).
    pub(super) blocked: Vec<bool>,
    /// One-way delay of every hop: each round of deliveries advances the clock by it.
    pub(super) hop: Duration,
    /// Datagrams larger than this (as IPv4 packets: + 28 bytes) vanish without a word,
    /// as behind a link with a smaller MTU that sends no ICMP.
    pub(super) path_mtu: Option<usize>,
    /// Hosts behind NAT: the public address their datagrams leave with (port kept).
    /// Their own address is reachable only from their subnet.
    pub(super) public: Vec<Option<SocketAddr>>,
    /// NAT mappings open for answers: (host behind NAT, remote it sent to). Only a
    /// datagram from that remote comes in (address- and port-dependent filtering, as
    /// Linux conntrack does).
    pub(super) mappings: HashSet<(usize, SocketAddr)>,
    /// Hosts behind a NAT that gives each remote its own public port (symmetric, as
    /// carrier-grade NATs do): no candidate the bulletin knows is the one a peer sees.
    pub(super) symmetric: Vec<bool>,
    /// The public port each symmetric NAT picked per (host, remote).
    nat_ports: HashMap<(usize, SocketAddr), SocketAddr>,
    /// The next port a symmetric NAT picks (never one it gave before).
    next_nat_port: u16,
    /// A relay at this public address (its control port), serving the LAN.
    pub(super) relay: Option<(SocketAddr, crate::relay::RelayCore)>,
}

impl Net {
    pub(super) fn new(n: usize) -> Self {
        Net::with(n, |i| engine(i, n, 1, 1000))
    }

    pub(super) fn with(n: usize, f: impl Fn(usize) -> Engine) -> Self {
        Net {
            hosts: (0..n).map(f).collect(),
            now: Instant::now(),
            taps: vec![Vec::new(); n],
            sent: Vec::new(),
            queue: Vec::new(),
            addrs: (0..n).map(addr).collect(),
            group: None,
            blocked: vec![false; n],
            hop: Duration::ZERO,
            path_mtu: None,
            public: vec![None; n],
            mappings: HashSet::new(),
            symmetric: vec![false; n],
            nat_ports: HashMap::new(),
            next_nat_port: 40_000,
            relay: None,
        }
    }

    /// Hosts in several /24 subnets (10.77.S.K), flooding in `mode` with a group.
    pub(super) fn subnets(sizes: &[usize], mode: FloodMode) -> Self {
        let addrs: Vec<SocketAddr> = sizes
            .iter()
            .enumerate()
            .flat_map(|(s, &k)| {
                (0..k).map(move |h| SocketAddr::from(([10, 77, s as u8 + 1, h as u8 + 1], 7401)))
            })
            .collect();
        let group = SocketAddr::from(([239, 77, 0, 1], 7401));
        let n = addrs.len();
        let hosts = (0..n)
            .map(|i| {
                // Peers come from the bulletin here, with their prefix, as in a real deployment.
                let mut sp = spec(1, Vec::new());
                sp.flood = mode;
                sp.group = Some(group);
                let mut e = engine_at(i, addrs[i], sp);
                for (_, a) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
                    e.add_peer(LAN, *a, PeerSource::Bulletin, Some(24));
                }
                e
            })
            .collect();
        Net {
            hosts,
            now: Instant::now(),
            taps: vec![Vec::new(); n],
            sent: Vec::new(),
            queue: Vec::new(),
            addrs,
            group: Some(group),
            blocked: vec![false; n],
            hop: Duration::ZERO,
            path_mtu: None,
            public: vec![None; n],
            mappings: HashSet::new(),
            symmetric: vec![false; n],
            nat_ports: HashMap::new(),
            next_nat_port: 40_000,
            relay: None,
        }
    }

    pub(super) fn same_subnet(&self, a: usize, b: usize) -> bool {
        let (x, y) = (self.addrs[a].ip(), self.addrs[b].ip());
        match (x, y) {
            (std::net::IpAddr::V4(x), std::net::IpAddr::V4(y)) => {
                x.octets()[..3] == y.octets()[..3]
            }
            _ => false,
        }
    }

    pub(super) fn index_of(&self, a: SocketAddr) -> Option<usize> {
        self.addrs.iter().position(|x| *x == a)
    }

    pub(super) fn drain_transmits(&mut self) {
        let mut buf = vec![0u8; 65_536];
        for i in 0..self.hosts.len() {
            while let Some((to, n)) = self.hosts[i].poll_transmit(&mut buf) {
                self.queue.push((i, to, buf[..n].to_vec()));
            }
        }
    }

    /// Deliver everything in flight until the network is quiet.
    pub(super) fn settle(&mut self) {
        for _ in 0..50 {
            self.drain_transmits();
            if self.queue.is_empty() {
                // As the runtime does after each batch of datagrams.
                for h in &mut self.hosts {
                    h.end_runs();
                }
                return;
            }
            self.now += self.hop;
            for (from, to, bytes) in std::mem::take(&mut self.queue) {
                self.sent.push((from, to, bytes.clone()));
                if self.path_mtu.is_some_and(|m| bytes.len() + 28 > m) {
                    continue;
                }
                let Some((src, to)) = self.through_nat(from, to) else {
                    continue;
                };
                if self.relay.as_ref().is_some_and(|(r, _)| r.ip() == to.ip()) {
                    for (rsrc, rto, b) in self.at_relay(src, to, &bytes) {
                        if let Some(dst) = self.inbound(rsrc, rto) {
                            self.deliver(dst, rsrc, false, b);
                        }
                    }
                    continue;
                }
                let targets: Vec<(usize, bool)> = if Some(to) == self.group {
                    if self.blocked[from] {
                        Vec::new()
                    } else {
                        (0..self.hosts.len())
                            .filter(|&d| d != from && !self.blocked[d] && self.same_subnet(d, from))
                            .map(|d| (d, true))
                            .collect()
                    }
                } else {
                    self.index_of(to)
                        .map(|d| vec![(d, false)])
                        .unwrap_or_default()
                };
                for (dst, multicast) in targets {
                    self.deliver(dst, src, multicast, bytes.clone());
                }
            }
        }
        panic!("network did not settle");
    }

    /// Every NAT forgets its mappings (`conntrack -F`, a router restart): a symmetric one
    /// picks new ports from then on.
    pub(super) fn flush_nats(&mut self) {
        self.mappings.clear();
        self.nat_ports.clear();
    }

    /// One datagram handed to host `dst`, as from `src`: its frame to the TAP, its relay
    /// copies queued.
    fn deliver(&mut self, dst: usize, src: SocketAddr, multicast: bool, mut b: Vec<u8>) {
        let copies = |r: Option<Relay<'_>>| -> Vec<(usize, SocketAddr, Vec<u8>)> {
            r.map(|r| {
                r.to.iter()
                    .map(|t| (dst, *t, r.datagram.to_vec()))
                    .collect()
            })
            .unwrap_or_default()
        };
        let (frame, relayed) =
            match self.hosts[dst].handle_datagram(src, multicast, &mut b, self.now) {
                RxAction::Tap { frame, relay, .. } => (Some(b[frame].to_vec()), copies(relay)),
                RxAction::TapReassembled { relay, .. } => {
                    let c = copies(relay);
                    (Some(self.hosts[dst].reassembled().to_vec()), c)
                }
                RxAction::Relay { relay, .. } => (None, copies(Some(relay))),
                _ => return,
            };
        if let Some(f) = frame {
            self.taps[dst].push(f);
        }
        self.queue.extend(relayed);
    }

    /// A datagram that came to the relay: what it sends, each (from, to, bytes).
    fn at_relay(
        &mut self,
        src: SocketAddr,
        to: SocketAddr,
        b: &[u8],
    ) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let now = self.now;
        let Some((control, core)) = self.relay.as_mut() else {
            return Vec::new();
        };
        if to == *control {
            let Ok(req) = core.handle_request(b) else {
                return Vec::new();
            };
            let port = core.port_of(&req.pair).unwrap_or_else(|| {
                let port = 50_000 + core.pairs().len() as u16;
                core.open_pair(req.pair, port, now);
                port
            });
            return core
                .grant(&req, port)
                .map(|g| vec![(*control, src, g.to_vec())])
                .unwrap_or_default();
        }
        match core.handle_pair(to.port(), src, b, now) {
            crate::relay::PairAction::Forward(dst) => vec![(to, dst, b.to_vec())],
            _ => Vec::new(),
        }
    }

    /// A datagram from outside (`src`, a public address) to `to`: the host it reaches
    /// through the NATs, if any.
    fn inbound(&self, src: SocketAddr, to: SocketAddr) -> Option<usize> {
        if let Some(d) = self.index_of(to) {
            return self.public[d].is_none().then_some(d);
        }
        (0..self.hosts.len())
            .find(|&d| self.mappings.contains(&(d, src)) && self.public_of(d, src) == Some(to))
    }

    /// The public address host `d`'s datagrams to `remote` leave with.
    fn public_of(&self, d: usize, remote: SocketAddr) -> Option<SocketAddr> {
        if self.symmetric[d] {
            self.nat_ports.get(&(d, remote)).copied()
        } else {
            self.public[d]
        }
    }

    /// A datagram from host `from` to `to` through the NATs: the source it arrives with
    /// and where it goes (a public address becomes the host behind it), or None where a
    /// NAT drops it.
    fn through_nat(&mut self, from: usize, to: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
        let dst = self.index_of(to);
        let local = dst.is_some_and(|d| self.same_subnet(d, from));
        if local || Some(to) == self.group {
            return Some((self.addrs[from], to));
        }
        if dst.is_some_and(|d| self.public[d].is_some()) {
            // A private address behind another NAT: not routed.
            return None;
        }
        let src = match self.public[from] {
            Some(p) => {
                self.mappings.insert((from, to));
                if self.symmetric[from] {
                    let next = self.next_nat_port;
                    let src = *self
                        .nat_ports
                        .entry((from, to))
                        .or_insert(SocketAddr::new(p.ip(), next));
                    if src.port() == next {
                        self.next_nat_port += 1;
                    }
                    src
                } else {
                    p
                }
            }
            None => self.addrs[from],
        };
        let behind =
            (0..self.hosts.len()).find(|&d| self.public[d].is_some_and(|p| p.ip() == to.ip()));
        match behind {
            Some(d) if self.mappings.contains(&(d, src)) && self.public_of(d, src) == Some(to) => {
                Some((src, self.addrs[d]))
            }
            Some(_) => None,
            None => Some((src, to)),
        }
    }

    pub(super) fn tick(&mut self) {
        for h in &mut self.hosts {
            h.handle_timeout(self.now);
        }
        self.settle();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.tick();
    }

    /// A VM on host `h` sends `f`; returns the action's kind.
    pub(super) fn send(&mut self, h: usize, f: &[u8]) -> Option<DropReason> {
        let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(f);
        let now = self.now;
        let out: Vec<(SocketAddr, Vec<u8>)> =
            match self.hosts[h].handle_tap_frame(LAN, &mut buf, f.len(), now) {
                TapAction::Unicast(to, n) => vec![(to, buf[..n].to_vec())],
                // What the send thread does (`Engine::seal_elsewhere`).
                TapAction::Unsealed(to, n, key) => match key.seal(&mut buf[..n]) {
                    Some(n) => vec![(to, buf[..n].to_vec())],
                    None => panic!("an unsealed datagram too short to seal"),
                },
                TapAction::Fragments { to, len, seg } => {
                    buf[..len].chunks(seg).map(|d| (to, d.to_vec())).collect()
                }
                TapAction::Flood {
                    to,
                    len,
                    seg,
                    relay_to,
                    relay,
                } => to
                    .iter()
                    .flat_map(|a| buf[..len].chunks(seg).map(|d| (*a, d.to_vec())))
                    .chain(
                        relay_to
                            .iter()
                            .flat_map(|a| relay.chunks(seg).map(|d| (*a, d.to_vec()))),
                    )
                    .collect(),
                TapAction::Drop(r) => return Some(r),
                TapAction::Limited => panic!("the simulation sets no rate limits"),
                TapAction::Consumed => return None,
                TapAction::Reply(n) => {
                    self.taps[h].push(buf[HEADER_LEN..HEADER_LEN + n].to_vec());
                    return None;
                }
            };
        for (to, b) in out {
            self.queue.push((h, to, b));
        }
        self.settle();
        None
    }

    pub(super) fn lan(&self, h: usize) -> LanStatus {
        self.hosts[h].lan_status(self.now).remove(LAN.index())
    }

    /// Host `h`'s entry for host `of`; panics if `h` does not list it.
    pub(super) fn peer(&self, h: usize, of: usize) -> PeerStatus {
        self.lan(h)
            .peers
            .into_iter()
            .find(|p| p.address == addr(of).to_string())
            .unwrap_or_else(|| panic!("host {h} does not list host {of}"))
    }

    pub(super) fn all_up(&self) -> bool {
        (0..self.hosts.len()).all(|h| self.lan(h).peers.iter().all(|p| p.state == "up"))
    }

    pub(super) fn clear_taps(&mut self) {
        for t in &mut self.taps {
            t.clear();
        }
    }
}

pub(super) fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}
pub(super) const BCAST: [u8; 6] = [0xff; 6];

/// An IPv4/TCP frame between two VMs (hand-built: no test-only dependency).
pub(super) fn tcp_frame(
    src: (u8, [u8; 4], u16),
    dst: (u8, [u8; 4], u16),
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.1);
    ip.extend_from_slice(&dst.1);
    let total = (20 + 20 + payload) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src.2.to_be_bytes());
    tcp.extend_from_slice(&dst.2.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let mut body = ip;
    body.extend_from_slice(&tcp);
    body.extend(std::iter::repeat_n(0u8, payload));
    frame(mac(dst.0), mac(src.0), &body)
}

/// TCP flags.
pub(super) const SYN: u8 = 0x02;
pub(super) const ACK: u8 = 0x10;
pub(super) const FIN: u8 = 0x01;
