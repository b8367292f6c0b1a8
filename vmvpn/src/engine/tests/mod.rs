//! Tests of the forwarding core: several engines wired through an in-memory network.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use telemetry::DropReason;

use super::*;
use crate::engine::flood::FloodMode;
use crate::engine::probes::PING_BIT;
use crate::proto::crypto::LanSecret;
use crate::proto::{HEADER_LEN, Kind, Packet};
use crate::status::LanStatus;

const MAX_FRAME: usize = 1518;
const LAN: LanId = LanId(0);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 77, 1, i as u8 + 1], 7401))
}

fn spec(secret: u8, peers: Vec<SocketAddr>) -> LanSpec {
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
        group: None,
    }
}

fn engine(i: usize, n: usize, secret: u8, start: u64) -> Engine {
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

/// Frames a VM would send: Ethernet header plus a payload.
fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(payload);
    f
}

struct Net {
    hosts: Vec<Engine>,
    now: Instant,
    /// Frames written to each host's TAP.
    taps: Vec<Vec<Vec<u8>>>,
    /// Every sealed datagram sent, as (sender index, destination, bytes).
    sent: Vec<(usize, SocketAddr, Vec<u8>)>,
    queue: Vec<(usize, SocketAddr, Vec<u8>)>,
    /// Each host's underlay address.
    addrs: Vec<SocketAddr>,
    /// The LAN's multicast group, delivered within a /24.
    group: Option<SocketAddr>,
    /// Hosts whose multicast is blocked (they neither send nor receive it).
    blocked: Vec<bool>,
    /// One-way delay of every hop: each round of deliveries advances the clock by it.
    hop: Duration,
    /// Datagrams larger than this (as IPv4 packets: + 28 bytes) vanish without a word,
    /// as behind a link with a smaller MTU that sends no ICMP.
    path_mtu: Option<usize>,
}

impl Net {
    fn new(n: usize) -> Self {
        Net::with(n, |i| engine(i, n, 1, 1000))
    }

    fn with(n: usize, f: impl Fn(usize) -> Engine) -> Self {
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
        }
    }

    /// Hosts in several /24 subnets (10.77.S.K), flooding in `mode` with a group.
    fn subnets(sizes: &[usize], mode: FloodMode) -> Self {
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
                let mut e = Engine::new(
                    HostIdentity {
                        id: 100 + i as u32,
                        name: format!("h{i}"),
                        secret: [i as u8 + 1; 32],
                        start_ns: 1000,
                        underlay: Some((addrs[i].ip(), 24)),
                    },
                    vec![sp],
                    Timers::default(),
                );
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
        }
    }

    fn same_subnet(&self, a: usize, b: usize) -> bool {
        let (x, y) = (self.addrs[a].ip(), self.addrs[b].ip());
        match (x, y) {
            (std::net::IpAddr::V4(x), std::net::IpAddr::V4(y)) => {
                x.octets()[..3] == y.octets()[..3]
            }
            _ => false,
        }
    }

    fn index_of(&self, a: SocketAddr) -> Option<usize> {
        self.addrs.iter().position(|x| *x == a)
    }

    fn drain_transmits(&mut self) {
        let mut buf = vec![0u8; 65_536];
        for i in 0..self.hosts.len() {
            while let Some((to, n)) = self.hosts[i].poll_transmit(&mut buf) {
                self.queue.push((i, to, buf[..n].to_vec()));
            }
        }
    }

    /// Deliver everything in flight until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..50 {
            self.drain_transmits();
            if self.queue.is_empty() {
                return;
            }
            self.now += self.hop;
            for (from, to, bytes) in std::mem::take(&mut self.queue) {
                self.sent.push((from, to, bytes.clone()));
                if self.path_mtu.is_some_and(|m| bytes.len() + 28 > m) {
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
                    let mut b = bytes.clone();
                    let copies = |r: Option<Relay<'_>>| -> Vec<(usize, SocketAddr, Vec<u8>)> {
                        r.map(|r| {
                            r.to.iter()
                                .map(|t| (dst, *t, r.datagram.to_vec()))
                                .collect()
                        })
                        .unwrap_or_default()
                    };
                    let (frame, relayed) = match self.hosts[dst].handle_datagram(
                        self.addrs[from],
                        multicast,
                        &mut b,
                        self.now,
                    ) {
                        RxAction::Tap { frame, relay, .. } => {
                            (Some(b[frame].to_vec()), copies(relay))
                        }
                        RxAction::TapReassembled { relay, .. } => {
                            let c = copies(relay);
                            (Some(self.hosts[dst].reassembled().to_vec()), c)
                        }
                        RxAction::Relay { relay, .. } => (None, copies(Some(relay))),
                        _ => continue,
                    };
                    if let Some(f) = frame {
                        self.taps[dst].push(f);
                    }
                    self.queue.extend(relayed);
                }
            }
        }
        panic!("network did not settle");
    }

    fn tick(&mut self) {
        for h in &mut self.hosts {
            h.handle_timeout(self.now);
        }
        self.settle();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.tick();
    }

    /// A VM on host `h` sends `f`; returns the action's kind.
    fn send(&mut self, h: usize, f: &[u8]) -> Option<DropReason> {
        let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(f);
        let now = self.now;
        let out: Vec<(SocketAddr, Vec<u8>)> =
            match self.hosts[h].handle_tap_frame(LAN, &mut buf, f.len(), now) {
                TapAction::Unicast(to, n) => vec![(to, buf[..n].to_vec())],
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
            };
        for (to, b) in out {
            self.queue.push((h, to, b));
        }
        self.settle();
        None
    }

    fn lan(&self, h: usize) -> LanStatus {
        self.hosts[h].lan_status(self.now).remove(LAN.index())
    }

    fn all_up(&self) -> bool {
        (0..self.hosts.len()).all(|h| self.lan(h).peers.iter().all(|p| p.state == "up"))
    }

    fn clear_taps(&mut self) {
        for t in &mut self.taps {
            t.clear();
        }
    }
}

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}
const BCAST: [u8; 6] = [0xff; 6];

#[test]
fn handshake_brings_every_tunnel_up() {
    let mut net = Net::new(3);
    assert!(!net.all_up());
    net.tick();
    assert!(net.all_up(), "{:?}", net.lan(0).peers);
    for h in 0..3 {
        let l = net.lan(h);
        assert_eq!(l.peers.len(), 2);
        for p in &l.peers {
            assert!(p.id.is_some() && p.name.starts_with('h'), "{p:?}");
            assert_eq!(p.source, "static");
        }
        assert_eq!(l.drops.total(), 0, "{:?}", l.drops);
    }
}

#[test]
fn broadcast_reaches_every_other_host_once_and_replies_go_unicast() {
    let mut net = Net::new(3);
    net.tick();
    let arp = frame(BCAST, mac(1), b"who-has");
    assert_eq!(net.send(0, &arp), None);
    assert!(net.taps[0].is_empty(), "never back to the sender");
    assert_eq!(net.taps[1], vec![arp.clone()]);
    assert_eq!(net.taps[2], vec![arp.clone()]);
    net.clear_taps();
    // The reply goes only to host 0, which learned nothing yet about mac(2) but host 1 knows mac(1).
    let reply = frame(mac(1), mac(2), b"is-at");
    assert_eq!(net.send(1, &reply), None);
    assert_eq!(net.taps[0], vec![reply]);
    assert!(
        net.taps[2].is_empty(),
        "known unicast goes to one peer only"
    );
    net.clear_taps();
    let ping = frame(mac(2), mac(1), b"ping");
    net.send(0, &ping);
    assert_eq!(net.taps[1], vec![ping]);
    assert!(net.taps[2].is_empty());
    let l1 = net.lan(1);
    assert_eq!(
        l1.peers
            .iter()
            .find(|p| p.address == addr(0).to_string())
            .map(|p| p.traffic.rx_packets),
        Some(2)
    );
}

#[test]
fn frame_to_a_local_mac_is_not_sent() {
    let mut net = Net::new(2);
    net.tick();
    net.send(0, &frame(BCAST, mac(1), b"hi"));
    assert_eq!(
        net.send(0, &frame(mac(1), mac(3), b"x")),
        Some(DropReason::LocalDestination)
    );
}

#[test]
fn no_peers_up_is_no_route_and_short_frames_are_malformed() {
    let mut net = Net::new(2);
    assert_eq!(
        net.send(0, &frame(BCAST, mac(1), b"x")),
        Some(DropReason::NoRoute)
    );
    assert_eq!(net.send(0, &[0u8; 10]), Some(DropReason::Malformed));
    let big = frame(BCAST, mac(1), &vec![0u8; MAX_FRAME]);
    assert_eq!(net.send(0, &big), Some(DropReason::Oversize));
    let l = net.lan(0);
    assert_eq!(l.drops.get(DropReason::NoRoute), 1);
    assert_eq!(l.drops.get(DropReason::Malformed), 1);
    assert_eq!(l.drops.get(DropReason::Oversize), 1);
}

#[test]
fn wrong_secret_reaches_nobody_and_counts_auth_failures() {
    let mut net = Net::with(3, |i| engine(i, 3, if i == 2 { 9 } else { 1 }, 1000));
    net.tick();
    net.advance(Duration::from_secs(2));
    let l0 = net.lan(0);
    let p2 = l0
        .peers
        .iter()
        .find(|p| p.address == addr(2).to_string())
        .expect("peer 2");
    assert_eq!(p2.state, "handshaking");
    // Failed hellos are unauthenticated: anyone could send them in its name.
    assert!(p2.unauthenticated_drops_total >= 2, "{p2:?}");
    assert_eq!(p2.drops.get(DropReason::AuthFailure), 0, "{:?}", p2.drops);
    assert!(l0.drops.get(DropReason::AuthFailure) >= 2);
    assert!(net.lan(2).peers.iter().all(|p| p.state == "handshaking"));
    net.send(2, &frame(BCAST, mac(9), b"intruder"));
    assert!(net.taps[0].is_empty() && net.taps[1].is_empty());
    // The two good hosts still talk.
    net.send(0, &frame(BCAST, mac(1), b"ok"));
    assert_eq!(net.taps[1].len(), 1);
    assert!(net.taps[2].is_empty());
}

#[test]
fn replayed_datagrams_are_dropped_and_counted() {
    let mut net = Net::new(2);
    net.tick();
    net.send(0, &frame(BCAST, mac(1), b"a"));
    net.send(1, &frame(mac(1), mac(2), b"b"));
    net.send(1, &frame(BCAST, mac(2), b"c"));
    let before = net.taps[0].len();
    let replays: Vec<_> = net
        .sent
        .iter()
        .filter(|(f, _, b)| *f == 1 && b[1] != Kind::Hello as u8)
        .cloned()
        .collect();
    assert!(replays.len() >= 2);
    for (_, _, mut bytes) in replays {
        let r = net.hosts[0].handle_datagram(addr(1), false, &mut bytes, net.now);
        assert!(matches!(r, RxAction::Drop(DropReason::Replay)), "{r:?}");
    }
    assert_eq!(net.taps[0].len(), before);
    assert!(net.lan(0).drops.get(DropReason::Replay) >= 2);
}

#[test]
fn spoofed_copies_of_a_peers_sequence_numbers_are_not_its_duplicates() {
    let mut net = Net::new(2);
    net.tick();
    net.send(0, &frame(BCAST, mac(1), b"learn me"));
    net.send(1, &frame(mac(1), mac(2), b"one"));
    net.send(1, &frame(mac(1), mac(2), b"two"));
    let data: Vec<_> = net
        .sent
        .iter()
        .filter(|(f, _, b)| *f == 1 && b[1] == Kind::Data as u8)
        .map(|(_, _, b)| b.clone())
        .collect();
    assert!(!data.is_empty());
    let peer = |net: &Net| {
        net.lan(0)
            .peers
            .into_iter()
            .find(|p| p.address == addr(1).to_string())
            .expect("peer 1")
    };
    let before = peer(&net);
    // An attacker who sees the header forges many copies with its own bytes.
    let mut spoofed = 0;
    for b in &data {
        for flip in [HEADER_LEN, b.len() - 1] {
            let mut forged = b.clone();
            forged[flip] ^= 0x55;
            let r = net.hosts[0].handle_datagram(addr(1), false, &mut forged, net.now);
            assert_eq!(r, RxAction::Drop(DropReason::AuthFailure));
            spoofed += 1;
        }
    }
    let after = peer(&net);
    assert_eq!(
        after.sequence.duplicates, before.sequence.duplicates,
        "forged copies are no duplicates"
    );
    assert_eq!(
        after.drops, before.drops,
        "nothing counted against the peer itself"
    );
    assert_eq!(
        after.unauthenticated_drops_total,
        before.unauthenticated_drops_total + spoofed
    );
    assert_eq!(net.lan(0).drops.get(DropReason::AuthFailure), spoofed);
    // A true replay of the peer's own datagram still counts as its duplicate.
    let mut again = data[0].clone();
    let r = net.hosts[0].handle_datagram(addr(1), false, &mut again, net.now);
    assert_eq!(r, RxAction::Drop(DropReason::Replay));
    assert_eq!(
        peer(&net).sequence.duplicates,
        before.sequence.duplicates + 1
    );
}

#[test]
fn mac_that_moves_to_another_host_is_relearned_and_counted() {
    let mut net = Net::new(3);
    net.tick();
    net.send(0, &frame(BCAST, mac(7), b"i am on 0"));
    net.send(2, &frame(BCAST, mac(7), b"now on 2"));
    assert_eq!(net.lan(1).mac_stats.moves, 1);
    net.clear_taps();
    net.send(1, &frame(mac(7), mac(8), b"where"));
    assert!(net.taps[0].is_empty());
    assert_eq!(net.taps[2].len(), 1);
}

#[test]
fn restarted_peer_is_rekeyed_and_stale_hellos_are_refused() {
    let mut net = Net::new(2);
    net.tick();
    let old_hellos: Vec<_> = net
        .sent
        .iter()
        .filter(|(f, _, b)| *f == 1 && b[1] == Kind::Hello as u8)
        .map(|(_, _, b)| b.clone())
        .collect();
    assert!(!old_hellos.is_empty());
    net.hosts[1] = engine(1, 2, 1, 2000);
    net.tick();
    assert!(net.all_up());
    net.send(0, &frame(BCAST, mac(1), b"after restart"));
    assert_eq!(net.taps[1].len(), 1);
    // A replayed hello of the previous run must not take the tunnel back to old keys.
    for mut h in old_hellos {
        let r = net.hosts[0].handle_datagram(addr(1), false, &mut h, net.now);
        assert_eq!(r, RxAction::Drop(DropReason::Replay));
    }
    net.clear_taps();
    net.send(1, &frame(mac(1), mac(2), b"still fine"));
    assert_eq!(net.taps[0].len(), 1);
}

#[test]
fn no_key_nonce_pair_repeats_across_receivers_or_restarts() {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let record = |seen: &mut HashSet<(u64, u64)>, net: &Net, from: usize| {
        for (f, to, b) in &net.sent {
            if *f != from || b[1] == Kind::Hello as u8 {
                continue;
            }
            let p = Packet::new_checked(&b[..]).expect("own packets parse");
            let fp = match p.header().kind {
                Kind::Flood => net.hosts[from].group_key_fingerprint(LAN),
                _ => net.hosts[from].tx_key_fingerprint(LAN, *to),
            }
            .expect("key");
            // A flood is one datagram sent to several receivers: the same bytes, so count once.
            if p.header().kind == Kind::Flood && !seen.insert((fp, p.header().seq)) {
                continue;
            }
            if p.header().kind != Kind::Flood {
                assert!(
                    seen.insert((fp, p.header().seq)),
                    "(key, nonce) reused: {fp:x} {}",
                    p.header().seq
                );
            }
        }
    };
    let mut net = Net::new(3);
    net.tick();
    for i in 0..5u8 {
        net.send(0, &frame(BCAST, mac(1), &[i]));
        net.send(1, &frame(mac(1), mac(2), &[i]));
        net.send(2, &frame(mac(1), mac(3), &[i]));
        net.send(0, &frame(mac(2), mac(1), &[i]));
        net.send(0, &frame(mac(3), mac(1), &[i]));
    }
    net.advance(Duration::from_secs(11)); // keepalives too
    record(&mut seen, &net, 0);
    let first_run = seen.len();
    assert!(first_run >= 15, "{first_run}");
    // Keys differ per receiver.
    let k1 = net.hosts[0].tx_key_fingerprint(LAN, addr(1));
    let k2 = net.hosts[0].tx_key_fingerprint(LAN, addr(2));
    assert_ne!(k1, k2);
    // Restart host 0 (new run, later start time) and send the same traffic again.
    net.hosts[0] = engine(0, 3, 1, 5000);
    net.sent.clear();
    net.tick();
    for i in 0..5u8 {
        net.send(0, &frame(BCAST, mac(1), &[i]));
        net.send(0, &frame(mac(2), mac(1), &[i]));
    }
    record(&mut seen, &net, 0);
    assert!(seen.len() >= first_run + 10);
    assert_ne!(
        net.hosts[0].tx_key_fingerprint(LAN, addr(1)),
        k1,
        "restart gives new keys"
    );
}

#[test]
fn keepalives_keep_tunnels_up_and_silence_takes_them_down() {
    let mut net = Net::new(2);
    net.tick();
    for _ in 0..10 {
        net.advance(Duration::from_secs(10));
    }
    assert!(net.all_up(), "keepalives every 10 s keep the tunnel up");
    // Host 1 goes silent: drop everything it would send.
    let silent_for = Timers::default().dead_after + Duration::from_secs(1);
    net.now += silent_for;
    net.hosts[0].handle_timeout(net.now);
    assert_eq!(net.lan(0).peers[0].state, "handshaking");
}

proptest! {
    /// Every truncation and every single-bit flip of a sealed datagram is rejected and
    /// counted, never panics, and the genuine datagram is still accepted afterwards.
    #[test]
    fn truncations_and_bit_flips_are_rejected_and_counted(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        flips in proptest::collection::vec(any::<prop::sample::Index>(), 1..24),
        unicast in any::<bool>(),
    ) {
        let mut net = Net::new(2);
        net.tick();
        net.send(1, &frame(BCAST, mac(2), b"learn"));
        let dst = if unicast { mac(2) } else { BCAST };
        let f = frame(dst, mac(1), &payload);
        let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        let n = match net.hosts[0].handle_tap_frame(LAN, &mut buf, f.len(), net.now) {
            TapAction::Unicast(_, n) | TapAction::Flood { len: n, .. } => n,
            TapAction::Fragments { .. } => return Ok(()),
            TapAction::Drop(r) => panic!("dropped {r:?}"),
        };
        let good = buf[..n].to_vec();
        let drops_before = net.lan(1).drops.total() + net.hosts[1].host_drops().total();
        let mut rejected = 0u64;
        for len in 0..n {
            let mut t = good[..len].to_vec();
            prop_assert!(matches!(net.hosts[1].handle_datagram(addr(0), false, &mut t, net.now), RxAction::Drop(_)));
            rejected += 1;
        }
        for ix in &flips {
            let bit = ix.index(n * 8);
            let mut t = good.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(matches!(net.hosts[1].handle_datagram(addr(0), false, &mut t, net.now), RxAction::Drop(_)), "bit {bit}");
            rejected += 1;
        }
        let drops_after = net.lan(1).drops.total() + net.hosts[1].host_drops().total();
        prop_assert_eq!(drops_after - drops_before, rejected);
        let mut g = good.clone();
        let ok = net.hosts[1].handle_datagram(addr(0), false, &mut g, net.now);
        prop_assert!(matches!(ok, RxAction::Tap { .. }), "{:?}", ok);
        if let RxAction::Tap { frame, .. } = ok {
            prop_assert_eq!(&g[frame], &f[..]);
        }
    }

    /// Reference model: who must receive each frame. Each host learns where a MAC lives
    /// from frames it receives (and its own VMs from its TAP); a frame goes to the one host
    /// it learned for the destination, to nobody if the destination is local, else to every
    /// other host; never back to the sender.
    #[test]
    fn delivery_matches_the_reference_model(
        ops in proptest::collection::vec((0usize..3, 0u8..5, proptest::option::of(0u8..5)), 1..60)
    ) {
        let mut net = Net::new(3);
        net.tick();
        // model[h][mac] = host where h believes mac lives
        let mut model: Vec<BTreeMap<u8, usize>> = vec![BTreeMap::new(); 3];
        for (h, src, dst) in ops {
            net.clear_taps();
            let dst_mac = dst.map_or(BCAST, |d| mac(d + 10));
            let src_mac = mac(src + 10);
            let f = frame(dst_mac, src_mac, &[h as u8]);
            let r = net.send(h, &f);
            model[h].insert(src, h);
            let expected: BTreeSet<usize> = match dst.and_then(|d| model[h].get(&d).copied()) {
                Some(x) if x == h => BTreeSet::new(),
                Some(x) => [x].into(),
                None => (0..3).filter(|&x| x != h).collect(),
            };
            let got: BTreeSet<usize> = (0..3).filter(|&x| !net.taps[x].is_empty()).collect();
            prop_assert_eq!(&got, &expected, "send {:?} from {} (drop {:?})", f, h, r);
            for &x in &got {
                prop_assert_eq!(net.taps[x].len(), 1, "exactly once");
                model[x].insert(src, h);
            }
        }
    }
}

#[test]
fn bulletin_peers_come_and_go_but_static_peers_stay() {
    let mut net = Net::new(3);
    // Host 0 learns a fourth address from the bulletin, then the bulletin says it left.
    let extra = SocketAddr::from(([10, 77, 9, 9], 7401));
    net.hosts[0].add_peer(LAN, extra, PeerSource::Bulletin, None);
    assert!(
        net.lan(0)
            .peers
            .iter()
            .any(|p| p.address == extra.to_string() && p.source == "bulletin")
    );
    net.tick();
    net.hosts[0].remove_peer(LAN, extra);
    assert!(
        !net.lan(0)
            .peers
            .iter()
            .any(|p| p.address == extra.to_string())
    );
    // A static peer is never removed by the registry, nor turned into a bulletin one.
    net.hosts[0].remove_peer(LAN, addr(1));
    assert_eq!(net.lan(0).peers.len(), 2);
    net.hosts[1].add_peer(LAN, addr(2), PeerSource::Bulletin, None);
    let p = net
        .lan(1)
        .peers
        .into_iter()
        .find(|p| p.address == addr(2).to_string())
        .expect("peer");
    assert_eq!(p.source, "static");
    // Removing a bulletin peer forgets the MACs behind it: frames to them flood again.
    let mut net = Net::with(2, |i| {
        let mut e = engine(i, 1, 1, 1000);
        e.add_peer(LAN, addr(1 - i), PeerSource::Bulletin, None);
        e
    });
    net.tick();
    net.send(1, &frame(BCAST, mac(5), b"from 1"));
    assert_eq!(net.lan(0).macs, 1, "the MAC behind host 1");
    net.hosts[0].remove_peer(LAN, addr(1));
    assert_eq!(net.lan(0).macs, 0);
    assert_eq!(
        net.send(0, &frame(mac(5), mac(6), b"gone")),
        Some(DropReason::NoRoute)
    );
}

/// Datagrams host `h` sent whose type is flood, since `mark`.
fn floods_sent(net: &Net, h: usize, mark: usize) -> (usize, usize) {
    let mut group = 0;
    let mut unicast = 0;
    for (f, to, b) in &net.sent[mark..] {
        if *f == h && b[1] == Kind::Flood as u8 {
            if Some(*to) == net.group {
                group += 1
            } else {
                unicast += 1
            }
        }
    }
    (group, unicast)
}

#[test]
fn one_multicast_and_one_relay_reach_every_host_of_two_subnets_once() {
    // Subnet 1: hosts 0, 1, 2; subnet 2: hosts 3, 4. Host 3 has the lowest id there.
    let mut net = Net::subnets(&[3, 2], FloodMode::Auto);
    net.tick();
    net.advance(Duration::from_secs(1));
    net.advance(Duration::from_secs(1));
    let l0 = net.lan(0);
    assert_eq!(
        l0.flood.subnets[0].mode, "multicast",
        "{:?}",
        l0.flood.subnets
    );
    assert!(l0.flood.forwarder, "host 0 has the lowest id of subnet 1");
    assert_eq!(
        l0.flood.subnets[1].forwarder,
        format!("h3 ({})", net.addrs[3])
    );
    for sender in [0, 1, 4] {
        net.clear_taps();
        let mark = net.sent.len();
        let f = frame(BCAST, mac(sender as u8 + 1), b"hello all");
        assert_eq!(net.send(sender, &f), None);
        for h in 0..5 {
            let want = usize::from(h != sender);
            assert_eq!(
                net.taps[h].len(),
                want,
                "host {h} got {} copies of a flood from {sender}",
                net.taps[h].len()
            );
        }
        // One multicast datagram in the sender's subnet plus one relay copy to the other.
        assert_eq!(floods_sent(&net, sender, mark), (1, 1), "sender {sender}");
    }
    // Host 3 passed frames on as forwarder; host 4 never did.
    assert!(net.lan(3).flood.stats.relayed_frames >= 2);
    assert_eq!(net.lan(4).flood.stats.relayed_frames, 0);
    // Receivers learned the original sender's MAC behind the original sender, not the forwarder.
    let rows = net.hosts[4].mac_rows(None, net.now);
    let row = rows
        .iter()
        .find(|r| r.mac == "02:00:00:00:00:01")
        .expect("mac of host 0's VM");
    assert_eq!(row.location, net.addrs[0].to_string());
    // So the reply goes straight back, by unicast.
    net.clear_taps();
    let mark = net.sent.len();
    net.send(4, &frame(mac(1), mac(5), b"reply"));
    assert_eq!(net.taps[0].len(), 1);
    assert!(
        net.sent[mark..]
            .iter()
            .all(|(f, to, _)| *f == 4 && *to == net.addrs[0])
    );
}

#[test]
fn unicast_mode_sends_one_copy_per_other_host() {
    let mut net = Net::subnets(&[3, 2], FloodMode::Unicast);
    net.tick();
    net.advance(Duration::from_secs(2));
    let mark = net.sent.len();
    net.send(0, &frame(BCAST, mac(1), b"x"));
    assert_eq!(floods_sent(&net, 0, mark), (0, 4));
    assert!((1..5).all(|h| net.taps[h].len() == 1));
    assert_eq!(
        net.lan(0).flood.stats.unicast_datagrams,
        4,
        "one flood, four copies"
    );
}

#[test]
fn a_subnet_without_multicast_falls_back_to_unicast_and_says_why() {
    let mut net = Net::subnets(&[3, 2], FloodMode::Auto);
    net.blocked[1] = true;
    net.tick();
    net.advance(Duration::from_secs(1));
    net.advance(Duration::from_secs(1));
    let l0 = net.lan(0);
    assert_eq!(l0.flood.subnets[0].mode, "mixed");
    assert!(
        l0.flood.subnets[0].reason.contains("h1"),
        "{}",
        l0.flood.subnets[0].reason
    );
    for sender in [0, 1, 3] {
        net.clear_taps();
        net.send(sender, &frame(BCAST, mac(9), b"y"));
        for h in 0..5 {
            assert_eq!(
                net.taps[h].len(),
                usize::from(h != sender),
                "host {h}, sender {sender}"
            );
        }
    }
    // Multicast stops everywhere in subnet 2: its hosts go unicast after the beacon timeout.
    net.blocked[3] = true;
    net.blocked[4] = true;
    for _ in 0..5 {
        net.advance(Duration::from_secs(1));
    }
    assert_eq!(net.lan(3).flood.subnets[0].mode, "unicast");
    net.clear_taps();
    net.send(0, &frame(BCAST, mac(9), b"z"));
    assert!((1..5).all(|h| net.taps[h].len() == 1));
}

#[test]
fn when_the_forwarder_leaves_the_next_lowest_id_takes_over() {
    let mut net = Net::subnets(&[2, 3], FloodMode::Auto);
    for _ in 0..3 {
        net.advance(Duration::from_secs(1));
    }
    // Subnet 2 is hosts 2, 3, 4: host 2 forwards. It leaves (the bulletin says so).
    for h in [0, 1, 3, 4] {
        let a = net.addrs[2];
        net.hosts[h].remove_peer(LAN, a);
    }
    net.blocked[2] = true;
    net.addrs[2] = SocketAddr::from(([192, 0, 2, 1], 1)); // gone from the network
    let l0 = net.lan(0);
    assert_eq!(
        l0.flood.subnets[1].forwarder,
        format!("h3 ({})", net.addrs[3])
    );
    net.clear_taps();
    net.send(0, &frame(BCAST, mac(1), b"after"));
    assert_eq!(
        (net.taps[1].len(), net.taps[3].len(), net.taps[4].len()),
        (1, 1, 1)
    );
}

#[test]
fn loss_reordering_and_duplicates_are_counted_per_peer() {
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    // 300 unicast frames 0 -> 1: drop every tenth, swap two, repeat one.
    let mut datagrams = Vec::new();
    for i in 0..300u32 {
        let f = frame(mac(2), mac(1), &i.to_be_bytes());
        let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        match net.hosts[0].handle_tap_frame(LAN, &mut buf, f.len(), net.now) {
            TapAction::Unicast(_, n) => datagrams.push(buf[..n].to_vec()),
            other => panic!("{other:?}"),
        }
    }
    datagrams.swap(100, 101);
    let dup = datagrams[50].clone();
    datagrams.insert(51, dup);
    let mut delivered = 0;
    for (i, mut d) in datagrams.into_iter().enumerate() {
        if i % 10 == 3 {
            continue;
        }
        if matches!(
            net.hosts[1].handle_datagram(addr(0), false, &mut d, net.now),
            RxAction::Tap { .. }
        ) {
            delivered += 1;
        }
    }
    let p = net
        .lan(1)
        .peers
        .into_iter()
        .find(|p| p.address == addr(0).to_string())
        .expect("peer");
    let lost = 30; // indexes 3, 13, …, 293 of 301 (one of them the duplicate's neighbour)
    assert_eq!(delivered, 301 - lost - 1, "the duplicate is not delivered");
    assert_eq!(p.sequence.duplicates, 1);
    assert_eq!(p.sequence.reordered, 1);
    // Dropped sequence numbers: 3, 13, 23, 33, 43 and 52, 62, …, 292 (after the inserted
    // duplicate, list position p holds p - 1). The newest is 299, so the 6 from 242 up are
    // still inside the 64-packet reorder window: 24 counted so far.
    assert_eq!(p.sequence.lost, 24, "{:?}", p.sequence);
    assert_eq!(p.sequence.received, 270);
    assert!(
        (p.loss_rx_ratio - 24.0 / 294.0).abs() < 1e-9,
        "{}",
        p.loss_rx_ratio
    );
    // Probe replies carry host 1's counts back: host 0 knows its loss towards host 1.
    net.advance(Duration::from_secs(1));
    net.advance(Duration::from_secs(1));
    let seen_by_1 = net
        .lan(1)
        .peers
        .into_iter()
        .find(|p| p.address == addr(0).to_string())
        .expect("peer");
    let seen_by_0 = net
        .lan(0)
        .peers
        .into_iter()
        .find(|p| p.address == addr(1).to_string())
        .expect("peer");
    assert!(seen_by_0.loss_tx_ratio > 0.0);
    // Host 1 counted a packet or two more (host 0's probe replies) after its last report.
    let lost = seen_by_1.sequence.lost as f64;
    let reported = seen_by_0.loss_tx_ratio;
    assert!(
        (lost / (lost + seen_by_1.sequence.received as f64 - 2.0) - reported).abs() < 1e-3,
        "host 0 sees {reported}, host 1 counted {:?}",
        seen_by_1.sequence
    );
    assert_eq!(seen_by_0.health, "degraded", "over 1 % loss towards host 1");
}

#[test]
fn probes_measure_the_round_trip_without_the_reflectors_clock() {
    let mut net = Net::new(2);
    net.hop = Duration::from_millis(3);
    net.tick();
    for _ in 0..5 {
        net.advance(Duration::from_secs(1));
    }
    let p = net.lan(0).peers.remove(0);
    assert!(p.probes_sent_total >= 4, "{p:?}");
    assert_eq!(p.probes_answered_total, p.probes_sent_total, "{p:?}");
    // Two hops of 3 ms, nothing else: RTT 6 ms, no jitter.
    assert_eq!(p.rtt.rtt_p50_us, Some(6_000));
    assert_eq!(p.rtt.rtt_max_us, Some(6_000));
    assert_eq!(p.rtt.srtt_us, Some(6_000));
    assert_eq!(p.rtt.jitter_us, Some(0));
    // Probes travel on the pairwise sequence: no loss seen.
    assert_eq!(p.sequence.lost, 0);
}

#[test]
fn unanswered_probes_leave_the_estimate_alone() {
    let mut net = Net::new(2);
    net.tick();
    net.advance(Duration::from_secs(2));
    let before = net.lan(0).peers.remove(0);
    assert_eq!(before.health, "ok");
    // Host 1 goes quiet: probes are sent, none answered.
    for _ in 0..3 {
        net.now += Duration::from_secs(1);
        net.hosts[0].handle_timeout(net.now);
        let mut buf = [0u8; 512];
        while net.hosts[0].poll_transmit(&mut buf).is_some() {}
    }
    let after = net.lan(0).peers.remove(0);
    assert!(after.probes_sent_total >= before.probes_sent_total + 2);
    assert_eq!(after.probes_answered_total, before.probes_answered_total);
    assert_eq!(after.rtt, before.rtt);
    // Three probes in a row unanswered and nothing heard for as long: down.
    net.now += Duration::from_secs(1);
    net.hosts[0].handle_timeout(net.now);
    assert_eq!(net.lan(0).peers.remove(0).health, "down");
}

#[test]
fn a_data_datagram_flipped_into_a_beacon_is_counted_not_ignored() {
    // Found by the bit-flip property test: a 16-byte frame makes a 52-byte datagram, the
    // length of a beacon, and type 1 ^ 4 = 5 is the beacon type.
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    let f = frame(mac(2), mac(1), &[0, 0]);
    let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
    buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
    let n = match net.hosts[0].handle_tap_frame(LAN, &mut buf, f.len(), net.now) {
        TapAction::Unicast(_, n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(n, crate::proto::BEACON_LEN);
    let mut d = buf[..n].to_vec();
    d[1] ^= 4;
    let before = net.lan(1).drops.total();
    let r = net.hosts[1].handle_datagram(addr(0), false, &mut d, net.now);
    assert_eq!(r, RxAction::Drop(DropReason::AuthFailure));
    assert_eq!(net.lan(1).drops.total(), before + 1);
}

#[test]
fn throughput_rates_come_from_the_tick() {
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    net.advance(Duration::from_secs(1));
    // 50 frames of 1014 bytes in one second, then a quiet second.
    for _ in 0..50 {
        net.send(0, &frame(mac(2), mac(1), &[7u8; 1000]));
    }
    net.advance(Duration::from_secs(1));
    let p = net.lan(0).peers.remove(0);
    // Probes and keepalives went too, but only Ethernet frame bytes count as traffic.
    assert_eq!(p.rates.tx_rate_bps, 50 * 1014 * 8);
    net.advance(Duration::from_secs(1));
    let p = net.lan(0).peers.remove(0);
    assert_eq!(p.rates.tx_rate_bps, 0, "the next second was quiet");
    assert!(p.rates.tx_rate_60s_bps > 0);
    assert!(p.rates.peak_to_mean_60s.is_some_and(|r| r > 1.0));
    let q = net.lan(1).peers.remove(0);
    assert_eq!(
        q.rates.rx_rate_60s_bps, p.rates.tx_rate_60s_bps,
        "what 0 sent, 1 received"
    );
}

#[test]
fn an_authentic_probe_of_the_wrong_length_is_a_counted_drop() {
    // What a peer speaking another probe layout would send: sealed, but 3 bytes long.
    let mut net = Net::new(2);
    net.tick();
    let now = net.now;
    net.hosts[0].queue_sealed(LAN, PeerId(0), Kind::Probe, &[1, 2, 3], now);
    net.hosts[0].queue_sealed(LAN, PeerId(0), Kind::ProbeReply, &[0; 7], now);
    let before = net.lan(1).drops.get(DropReason::Malformed);
    net.settle();
    assert_eq!(net.lan(1).drops.get(DropReason::Malformed), before + 2);
}

/// An IPv4/TCP frame between two VMs (hand-built: no test-only dependency).
fn tcp_frame(
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

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

#[test]
fn vm_traffic_matrix_and_flows_are_counted_on_both_hosts() {
    let mut net = Net::new(2);
    net.tick();
    let a = (1, [10, 0, 0, 1], 40000);
    let b = (2, [10, 0, 0, 2], 5201);
    // Host 1's VM announces itself so that host 0 knows where mac(2) is.
    net.send(1, &frame(BCAST, mac(2), b"hello"));
    net.send(0, &tcp_frame(a, b, SYN, 0));
    net.send(1, &tcp_frame(b, a, SYN | ACK, 0));
    for _ in 0..10 {
        net.send(0, &tcp_frame(a, b, ACK, 1000));
    }
    net.advance(Duration::from_secs(1));
    for h in 0..2 {
        let t = net.hosts[h].traffic(None, Some(5)).remove(0);
        let vms = t.vms;
        let va = vms.iter().find(|v| v.mac == mac(1)).expect("vm a");
        assert_eq!(va.location, if h == 0 { "local" } else { "remote" });
        assert_eq!(va.ip, Some(std::net::IpAddr::from([10, 0, 0, 1])));
        assert_eq!(va.tx_packets, 11, "host {h}: {va:?}");
        assert_eq!(va.tx_bytes, 54 + 10 * 1054);
        let pairs = t.pairs;
        let ab = pairs
            .iter()
            .find(|p| p.src_mac == mac(1) && p.dst_mac == mac(2))
            .expect("pair");
        assert_eq!((ab.packets, ab.at_source), (11, h == 0));
        let flows = t.flows;
        assert_eq!(flows.len(), 1, "{flows:?}");
        let f = &flows[0];
        assert_eq!(
            (f.src.as_str(), f.src_port, f.dst_port),
            ("10.0.0.1", 40000, 5201)
        );
        assert_eq!((f.tx_packets, f.rx_packets), (11, 1));
        assert_eq!(f.tcp_state, Some(telemetry::flows::TcpState::Established));
        let st = net.lan(h);
        assert_eq!(st.flow_table.tcp_active, 1);
        assert_eq!(st.flow_table.tcp_syn_total, 1);
    }
    net.send(0, &tcp_frame(a, b, FIN | ACK, 0));
    net.send(1, &tcp_frame(b, a, FIN | ACK, 0));
    assert_eq!(net.lan(0).flow_table.tcp_active, 0);
    assert_eq!(net.lan(1).flow_table.tcp_fin_total, 2);
}

#[test]
fn accounting_and_probes_can_be_switched_off() {
    let mut net = Net::new(2);
    for h in &mut net.hosts {
        h.set_accounting(Accounting {
            probes: false,
            flows: false,
            ..Accounting::default()
        });
    }
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"hello"));
    net.send(
        0,
        &tcp_frame((1, [10, 0, 0, 1], 1), (2, [10, 0, 0, 2], 2), SYN, 0),
    );
    for _ in 0..3 {
        net.advance(Duration::from_secs(1));
    }
    let st = net.lan(0);
    assert_eq!((st.vm_table.vms, st.flow_table.flows), (0, 0));
    assert_eq!(st.peers[0].probes_sent_total, 0);
    assert_eq!(
        (net.taps[0].len(), net.taps[1].len()),
        (1, 1),
        "forwarding is unaffected"
    );
}

#[test]
fn ping_by_peer_name_address_or_vm_ip() {
    let mut net = Net::new(2);
    net.hop = Duration::from_millis(2);
    net.tick();
    net.send(
        1,
        &tcp_frame((2, [10, 0, 0, 2], 1), (1, [10, 0, 0, 1], 2), ACK, 0),
    );
    let name = net.lan(0).peers[0].name.clone();
    for target in [name.as_str(), &addr(1).to_string(), "10.0.0.2"] {
        let sent = net.hosts[0].ping(target, net.now).expect("ping");
        assert!(sent.id & PING_BIT != 0);
        assert_eq!(sent.address, addr(1));
        assert_eq!(sent.via_vm.is_some(), target == "10.0.0.2", "{target}");
        net.settle();
        let pong = std::iter::from_fn(|| net.hosts[0].poll_event())
            .find_map(|e| match e {
                Event::Pong(p) => Some(p),
                _ => None,
            })
            .expect("pong");
        assert_eq!(
            pong,
            Pong {
                id: sent.id,
                rtt_ns: 4_000_000
            }
        );
    }
    // On-demand probes leave the periodic estimator alone.
    let p = net.lan(0).peers.remove(0);
    assert_eq!(p.probes_answered_total, p.probes_sent_total);
    let e = net.hosts[0].ping("nobody", net.now).expect_err("unknown");
    assert!(e.contains("no peer named \"nobody\""), "{e}");
    // A VM on this host has no tunnel to probe.
    net.send(
        0,
        &tcp_frame((1, [10, 0, 0, 1], 2), (2, [10, 0, 0, 2], 1), ACK, 0),
    );
    let e = net.hosts[0].ping("10.0.0.1", net.now).expect_err("local");
    assert!(e.contains("on this host"), "{e}");
}

#[test]
fn a_peer_that_falls_silent_is_down_not_unknown() {
    let mut net = Net::new(2);
    net.tick();
    net.advance(Duration::from_secs(2));
    assert_eq!(net.lan(0).peers[0].health, "ok");
    // Host 1 dies: host 0 keeps ticking, nothing comes back, long past dead_after.
    for _ in 0..40 {
        net.now += Duration::from_secs(1);
        net.hosts[0].handle_timeout(net.now);
        let mut buf = [0u8; 512];
        while net.hosts[0].poll_transmit(&mut buf).is_some() {}
    }
    let p = net.lan(0).peers.remove(0);
    assert_eq!((p.state.name(), p.health.name()), ("handshaking", "down"));
}

#[test]
fn utilisation_is_the_rate_over_the_configured_link_speed() {
    let mut net = Net::new(2);
    net.hosts[0].set_accounting(Accounting {
        link_speed_bps: Some(1_000_000),
        ..Accounting::default()
    });
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    net.advance(Duration::from_secs(1));
    for _ in 0..10 {
        net.send(0, &frame(mac(2), mac(1), &[7u8; 1236])); // 1250-byte frames
    }
    net.advance(Duration::from_secs(1));
    let p = net.lan(0).peers.remove(0);
    assert_eq!(p.rates.tx_rate_bps, 100_000);
    assert_eq!(p.tx_utilisation_ratio, Some(0.1));
    assert!(
        net.lan(1).peers[0].tx_utilisation_ratio.is_none(),
        "no speed configured"
    );
}

fn engine_with_cipher(i: usize, n: usize, cipher: crate::proto::crypto::Cipher) -> Engine {
    let peers = (0..n).filter(|&j| j != i).map(addr).collect();
    Engine::new(
        HostIdentity {
            id: 100 + i as u32,
            name: format!("h{i}"),
            secret: [i as u8 + 1; 32],
            start_ns: 1000,
            underlay: Some((addr(i).ip(), 24)),
        },
        vec![LanSpec {
            cipher,
            ..spec(1, peers)
        }],
        Timers::default(),
    )
}

#[test]
fn cipher_none_carries_frames_in_the_clear_and_never_pairs_with_aes() {
    use crate::proto::crypto::Cipher;
    let mut net = Net::with(2, |i| engine_with_cipher(i, 2, Cipher::None));
    net.tick();
    assert!(net.all_up());
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    let payload = b"plain for the benchmark";
    net.send(0, &frame(mac(2), mac(1), payload));
    assert_eq!(net.taps[1].last().map(|f| &f[14..]), Some(&payload[..]));
    let (_, _, d) = net
        .sent
        .iter()
        .rev()
        .find(|(f, _, _)| *f == 0)
        .expect("sent");
    assert!(
        d.windows(payload.len()).any(|w| w == payload),
        "not encrypted"
    );
    // A flipped bit in the zero tag is refused (a sender with another cipher).
    let mut bad = d.clone();
    bad[12..20].copy_from_slice(&1000u64.to_be_bytes()); // a fresh sequence number
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let r = net.hosts[1].handle_datagram(addr(0), false, &mut bad, net.now);
    assert_eq!(r, RxAction::Drop(DropReason::AuthFailure));

    // Mixed ciphers: the hellos do not authenticate, so no tunnel comes up.
    let mut net = Net::with(2, |i| {
        engine_with_cipher(
            i,
            2,
            if i == 0 {
                Cipher::None
            } else {
                Cipher::Aes256Gcm
            },
        )
    });
    net.tick();
    net.advance(Duration::from_secs(2));
    assert!(!net.all_up());
    assert!(net.lan(1).drops.total() > 0);
}

/// A SYN from VM 1 (host 0) to VM 2 (host 1) announcing MSS 1460.
fn syn_1460() -> Vec<u8> {
    let mut f = tcp_frame((1, [10, 0, 0, 1], 40000), (2, [10, 0, 0, 2], 80), SYN, 0);
    // Data offset 6 words, one MSS option; lengths and checksum made right.
    let l4 = 14 + 20;
    f[l4 + 12] = 0x60;
    f.splice(l4 + 20..l4 + 20, [2u8, 4, 0x05, 0xb4]);
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    let pseudo = crate::offload::csum::pseudo(&f[26..34], 6, (f.len() - l4) as u32);
    f[l4 + 16..l4 + 18].fill(0);
    let c = !crate::offload::csum::fold(crate::offload::csum::sum(pseudo, &f[l4..]));
    f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    f
}

fn mss_of(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[14 + 20 + 22], f[14 + 20 + 23]])
}

fn tcp_checksum_ok(f: &[u8]) -> bool {
    let pseudo = crate::offload::csum::pseudo(&f[26..34], 6, (f.len() - 34) as u32);
    crate::offload::csum::fold(crate::offload::csum::sum(pseudo, &f[34..])) == 0xffff
}

#[test]
fn frames_larger_than_the_path_arrive_whole_unicast_and_flooded_across_subnets() {
    let mut net = Net::subnets(&[2, 2], FloodMode::Auto);
    net.tick();
    net.advance(Duration::from_secs(1));
    // Every tunnel has confirmed the full 1500-byte path.
    for h in 0..4 {
        assert!(
            net.lan(h).peers.iter().all(|p| p.path_mtu_bytes == 1500),
            "{:?}",
            net.lan(h).peers
        );
    }
    // A full 1518-byte frame (a VM at MTU 1500 with a VLAN tag) needs two datagrams.
    let big: Vec<u8> = (0..1504).map(|i| (i * 13) as u8).collect();
    let b = frame(BCAST, mac(1), &big);
    assert_eq!(b.len(), 1518);
    net.clear_taps();
    net.send(0, &b);
    for h in 1..4 {
        assert_eq!(
            net.taps[h],
            vec![b.clone()],
            "host {h} got the broadcast whole, once"
        );
    }
    let u = frame(mac(1), mac(4), &big);
    net.clear_taps();
    net.send(3, &u);
    assert_eq!(net.taps[0], vec![u.clone()]);
    assert!(net.taps[1].is_empty() && net.taps[2].is_empty());
    let l = net.lan(3);
    assert!(
        l.fragmented_frames_total >= 1 && l.fragments_sent_total >= 2,
        "{l:?}"
    );
    // No datagram exceeded the path, and fragments cost no loss in the telemetry.
    assert!(net.sent.iter().all(|(_, _, d)| d.len() + 28 <= 1500));
    for h in 0..4 {
        assert!(net.lan(h).peers.iter().all(|p| p.sequence.lost == 0));
    }
}

#[test]
fn a_smaller_path_without_icmp_is_found_and_everything_still_arrives() {
    let mut net = Net::new(2);
    net.path_mtu = Some(1400);
    net.tick();
    for _ in 0..60 {
        net.advance(Duration::from_millis(200));
    }
    for h in 0..2 {
        let p = net.lan(h).peers.remove(0);
        assert!(!p.path_mtu_searching, "{p:?}");
        assert!(p.path_mtu_bytes <= 1400 && p.path_mtu_bytes > 1390, "{p:?}");
        // Probes lost by design are not loss.
        assert_eq!(p.sequence.lost, 0, "{p:?}");
    }
    // Full-size frames still arrive, in smaller pieces.
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    let u = frame(mac(2), mac(1), &vec![7u8; 1500]);
    net.clear_taps();
    net.send(0, &u);
    assert_eq!(net.taps[1], vec![u]);
    // A SYN is clamped to the path: 1400 - 28 - 36 - 14 - 20 - 20, checksum still right.
    let pmtu = net.lan(0).peers[0].path_mtu_bytes as usize;
    net.clear_taps();
    net.send(0, &syn_1460());
    let got = net.taps[1].first().expect("the SYN arrived").clone();
    assert_eq!(usize::from(mss_of(&got)), pmtu - 28 - 36 - 14 - 20 - 20);
    assert!(tcp_checksum_ok(&got));
}

#[test]
fn a_syn_is_clamped_on_both_sides_of_the_tunnel() {
    let mut net = Net::new(2);
    // Host 1 sits on a jumbo underlay: its own clamp lets MSS 1460 pass.
    net.hosts[1].set_underlay_mtu(9000);
    net.tick();
    net.advance(Duration::from_secs(1));
    assert_eq!(net.lan(1).peers[0].path_mtu_bytes, 9000);
    assert_eq!(net.lan(0).peers[0].path_mtu_bytes, 1500);
    net.send(0, &frame(BCAST, mac(1), b"learn"));
    let mut syn = syn_1460();
    // From host 1's VM 2 to host 0's VM 1.
    syn[0..6].copy_from_slice(&mac(1));
    syn[6..12].copy_from_slice(&mac(2));
    net.clear_taps();
    net.send(1, &syn);
    // Host 0 clamps what it delivers to the path back to host 1.
    let got = &net.taps[0][0];
    assert_eq!(mss_of(got), 1382);
    assert!(tcp_checksum_ok(got));
    // And host 0's own SYNs leave clamped.
    net.clear_taps();
    net.send(0, &syn_1460());
    assert_eq!(mss_of(&net.taps[1][0]), 1382);
    // A SYN to a MAC nobody has learned is flooded, clamped to the smallest path of the
    // LAN (1500 here), not to the 1280 assumed before any path is known.
    let mut unknown = syn_1460();
    unknown[0..6].copy_from_slice(&mac(9));
    net.clear_taps();
    net.send(0, &unknown);
    assert_eq!(mss_of(&net.taps[1][0]), 1382);
}

/// Every key path of a JSON value, arrays as `[]`, sorted.
fn key_paths(v: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                key_paths(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                key_paths(x, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_status_json_keys_are_the_documented_ones() {
    // The README documents these keys and scripts read them: adding one means updating
    // the README and this list together; removing or renaming one breaks users.
    let mut net = Net::subnets(&[2, 1], FloodMode::Auto);
    net.tick();
    net.advance(Duration::from_secs(2));
    net.send(0, &frame(BCAST, mac(1), b"hello"));
    // The whole status, with a bulletin, so every key is there.
    let (_, st) = sample_status(&net);
    let v = serde_json::to_value(&st).expect("json");
    let mut keys = BTreeSet::new();
    key_paths(&v, "", &mut keys);
    let got: Vec<&str> = keys.iter().map(String::as_str).collect();
    let golden: Vec<&str> = include_str!("../../status_keys.golden").lines().collect();
    let missing: Vec<_> = golden.iter().filter(|k| !keys.contains(**k)).collect();
    let extra: Vec<_> = got.iter().filter(|k| !golden.contains(k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "status keys changed: missing {missing:?}, new {extra:?}"
    );
}

#[test]
fn the_status_contract_reads_back_what_it_writes() {
    // The CLI, /metrics and the reports read the daemon's JSON back into these types: every
    // key must come back, with its value.
    let mut net = Net::subnets(&[2, 1], FloodMode::Auto);
    net.tick();
    net.advance(Duration::from_secs(2));
    net.send(0, &frame(BCAST, mac(1), b"hello"));
    net.advance(Duration::from_secs(2));
    let (st, st2) = sample_status(&net);
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(x: &T) {
        let v = serde_json::to_value(x).expect("json");
        let back: T = serde_json::from_value(v.clone()).expect("reads back");
        assert_eq!(serde_json::to_value(&back).expect("json"), v);
    }
    round_trip(&st);
    round_trip(&st2);
    round_trip(&net.hosts[0].traffic(None, None));
    round_trip(&net.hosts[0].mac_rows(None, net.now));
    // A renamed or missing key is an error, not a zero.
    let mut v = serde_json::to_value(&st).expect("json");
    v["lans"][0]["peers"][0]
        .as_object_mut()
        .expect("peer")
        .remove("path_mtu_bytes");
    let e = serde_json::from_value::<crate::status::Status>(v).expect_err("missing key");
    assert!(e.to_string().contains("path_mtu_bytes"), "{e}");
}

/// Host 0's whole status, without and with a bulletin, as the daemon would report it.
fn sample_status(net: &Net) -> (crate::status::Status, crate::status::Status) {
    let lans = net.hosts[0].lan_status(net.now);
    let st = crate::status::Status {
        host: crate::status::HostStatus {
            name: "h0".into(),
            id: 100,
            listen: "0.0.0.0:7401".into(),
            uptime_s: 5,
            version: "x".into(),
            realtime: false,
        },
        drops: net.hosts[0].host_drops().clone(),
        lans,
        bulletin: None,
        offload: crate::status::OffloadStats::default(),
        reassembly: net.hosts[0].reassembly_stats(),
    };
    let st2 = crate::status::Status {
        bulletin: Some(crate::status::BulletinStatus {
            server: "10.0.0.1:7400".into(),
            state: crate::status::BulletinState::Registered,
            epoch: Some("00ff".into()),
            registered_ago_s: Some(3),
            last_error: None,
            peers: 2,
        }),
        ..st.clone()
    };
    (st, st2)
}
