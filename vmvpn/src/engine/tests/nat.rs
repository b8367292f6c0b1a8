//! Hosts behind NAT: hellos to every candidate punch through both NATs, the first
//! authentic answer wins, a lost mapping opens again, and removal still finds the peer.

use super::sim::*;

/// Two hosts in private subnets, each behind a port-keeping NAT with a public address,
/// told of each other by the bulletin: the private address and, when `candidates`, the
/// public one.
fn behind_nat(candidates: bool) -> Net {
    let private = [
        SocketAddr::from(([10, 77, 1, 1], 7401)),
        SocketAddr::from(([10, 77, 2, 1], 7401)),
    ];
    let public = [
        SocketAddr::from(([203, 0, 113, 1], 7401)),
        SocketAddr::from(([198, 51, 100, 2], 7401)),
    ];
    let mut net = Net::with(2, |i| engine_at(i, private[i], spec(1, Vec::new())));
    net.addrs = private.to_vec();
    net.public = public.iter().copied().map(Some).collect();
    for (i, h) in net.hosts.iter_mut().enumerate() {
        let j = 1 - i;
        let reached = Reached {
            host_id: candidates.then_some(100 + j as u32),
            others: if candidates { vec![public[j]] } else { vec![] },
        };
        h.add_peer_reached(LAN, private[j], reached, PeerSource::Bulletin, Some(24));
    }
    net
}

#[test]
fn hellos_to_every_candidate_punch_through_both_nats() {
    let mut net = behind_nat(true);
    net.hop = Duration::from_millis(10);
    net.tick();
    net.advance(Duration::from_millis(200));
    assert!(net.all_up(), "{:?}", net.lan(0).peers);
    for (h, public) in [(0, "198.51.100.2:7401"), (1, "203.0.113.1:7401")] {
        let p = &net.lan(h).peers[0];
        assert_eq!(p.path, "punched", "{p:?}");
        assert_eq!(p.address, public, "the peer answers at its NAT's address");
        assert_eq!(p.candidates.len(), 2);
        assert!(
            !p.candidates[0].answered && p.candidates[1].answered,
            "{p:?}"
        );
        assert!(p.candidates.iter().all(|c| c.hellos_sent >= 1), "{p:?}");
        // The answering candidate's round trip (hops of 10 ms), none for the silent one.
        let rtt = p.candidates[1].rtt_ms.expect("the punched candidate's RTT");
        assert!((10.0..=100.0).contains(&rtt), "{rtt} ms: {p:?}");
        assert_eq!(p.candidates[0].rtt_ms, None, "{p:?}");
        let took = p.path_open_ms.expect("the open time");
        assert!(took <= 100, "{took} ms for a few hops");
        // The peer was listed once and answered elsewhere: one entry, not two.
        assert_eq!(net.lan(h).peers.len(), 1);
    }
    net.send(0, &frame(mac(2), mac(1), b"through"));
    net.send(1, &frame(mac(1), mac(2), b"back"));
    assert_eq!(net.taps[1].len(), 1);
    assert_eq!(net.taps[0].len(), 1);
}

#[test]
fn without_the_public_candidate_nothing_opens() {
    let mut net = behind_nat(false);
    net.tick();
    net.advance(Duration::from_secs(3));
    assert!(net.lan(0).peers.iter().all(|p| p.state == "handshaking"));
    assert!(net.lan(1).peers.iter().all(|p| p.state == "handshaking"));
}

#[test]
fn a_lost_mapping_opens_again_from_both_sides() {
    let mut net = behind_nat(true);
    net.tick();
    assert!(net.all_up());
    // The NATs forget everything (a router restart, `conntrack -F`).
    net.mappings.clear();
    net.send(0, &frame(mac(2), mac(1), b"lost"));
    assert!(net.taps[1].is_empty(), "the first frame finds no mapping");
    // Probes and keepalives go on both ways: the first from each side reopens its NAT.
    for _ in 0..10 {
        net.advance(Duration::from_millis(200));
    }
    net.clear_taps();
    net.send(0, &frame(mac(2), mac(1), b"again"));
    assert_eq!(net.taps[1].len(), 1, "{:?}", net.lan(0).peers);
    assert!(net.all_up());
}

#[test]
fn a_punched_peer_is_removed_by_the_address_it_was_listed_with() {
    let mut net = behind_nat(true);
    net.tick();
    assert!(net.all_up());
    net.hosts[0].remove_peer(LAN, SocketAddr::from(([10, 77, 2, 1], 7401)));
    assert!(net.lan(0).peers.is_empty());
}

#[test]
fn a_host_behind_a_port_changing_nat_is_found_by_its_id() {
    // Host 0 public, host 1 behind a NAT that gives its mappings another port: the
    // bulletin's candidate (public address, data port) is wrong, but host 1's hellos reach
    // host 0 and open its own mapping for the answers.
    let mut net = behind_nat(true);
    net.public[0] = None;
    net.public[1] = Some(SocketAddr::from(([198, 51, 100, 2], 40000)));
    net.addrs[0] = SocketAddr::from(([203, 0, 113, 1], 7401));
    net.hosts[1].remove_peer(LAN, SocketAddr::from(([10, 77, 1, 1], 7401)));
    net.hosts[1].add_peer(LAN, net.addrs[0], PeerSource::Bulletin, Some(24));
    net.tick();
    assert!(net.all_up(), "{:?}", net.lan(0).peers);
    let p = &net.lan(0).peers;
    assert_eq!(p.len(), 1, "one entry, found by its id: {p:?}");
    assert_eq!(p[0].address, "198.51.100.2:40000");
    assert_eq!(p[0].path, "punched");
    assert_eq!(net.lan(1).peers[0].path, "direct");
}

/// The relay's public control address in the relay tests.
const RELAY: ([u8; 4], u16) = ([192, 0, 2, 9], 7402);

/// `behind_nat` with a relay both hosts know, each NAT symmetric or not.
/// Two hosts behind symmetric NATs, 5 s on: their tunnel runs through the relay.
fn relayed_pair() -> Net {
    let mut net = with_relay([true, true]);
    net.tick();
    for _ in 0..25 {
        net.advance(Duration::from_millis(200));
    }
    assert_eq!(net.lan(0).peers[0].path, "relayed");
    net
}

fn with_relay(symmetric: [bool; 2]) -> Net {
    let mut net = behind_nat(true);
    net.symmetric = symmetric.to_vec();
    let relay = SocketAddr::from(RELAY);
    let key = crate::engine::relays::relay_key_of(&crate::proto::crypto::LanSecret([1; 32]));
    let keys = std::collections::HashMap::from([(crate::proto::crypto::lan_id("lan1"), key)]);
    let counters = std::sync::Arc::new(crate::relay::RelayCounters::default());
    net.relay = Some((relay, crate::relay::RelayCore::new(keys, 0, counters)));
    for h in &mut net.hosts {
        h.set_relays(vec![relay]);
    }
    net
}

fn relay_pairs(net: &Net) -> Vec<crate::relay::counters::PairStatus> {
    net.relay
        .as_ref()
        .map(|(_, c)| c.pairs())
        .unwrap_or_default()
}

#[test]
fn behind_two_symmetric_nats_the_relay_carries_the_tunnel_end_to_end() {
    let mut net = with_relay([true, true]);
    net.hop = Duration::from_millis(5);
    net.tick();
    // No candidate works: nothing opens before the relay is asked (3 s).
    for _ in 0..10 {
        net.advance(Duration::from_millis(200));
    }
    assert!(
        !net.all_up(),
        "no direct path can open: {:?}",
        net.lan(0).peers
    );
    assert!(relay_pairs(&net).is_empty(), "asked before 3 s");
    for _ in 0..15 {
        net.advance(Duration::from_millis(200));
    }
    assert!(net.all_up(), "{:?}", net.lan(0).peers);
    let pairs = relay_pairs(&net);
    assert_eq!(
        pairs.len(),
        1,
        "one socket for the pair, whoever asked first: {pairs:?}"
    );
    assert!(pairs[0].bound);
    let pair_addr = SocketAddr::from((RELAY.0, pairs[0].port)).to_string();
    for h in 0..2 {
        let p = &net.lan(h).peers[0];
        assert_eq!(p.path, "relayed", "{p:?}");
        assert_eq!(p.address, pair_addr, "{p:?}");
        assert!(p.candidates.iter().any(|c| c.relay && c.answered), "{p:?}");
    }
    // Frames go through it and come out; the relay saw them pass, sealed.
    let before = relay_pairs(&net)[0].packets;
    net.clear_taps();
    net.send(0, &frame(mac(2), mac(1), b"via the relay"));
    net.send(1, &frame(mac(1), mac(2), b"and back"));
    assert_eq!(net.taps[1].len(), 1);
    assert_eq!(net.taps[0].len(), 1);
    assert!(relay_pairs(&net)[0].packets >= before + 2);
    // Probes are end to end: RTT through the relay (2 hops each way of 5 ms).
    for _ in 0..15 {
        net.advance(Duration::from_millis(200));
    }
    let p = &net.lan(0).peers[0];
    assert_eq!(p.state, "up");
    assert!(p.rtt.rtt_p50_us.is_some(), "{p:?}");
    // A broadcast reaches the relayed peer: it is a subnet of its own.
    net.clear_taps();
    net.send(0, &frame(BCAST, mac(1), b"who-has"));
    assert_eq!(net.taps[1].len(), 1, "{:?}", net.lan(0).flood);
}

#[test]
fn where_a_punch_works_the_relay_is_never_asked() {
    let mut net = with_relay([false, false]);
    net.tick();
    for _ in 0..30 {
        net.advance(Duration::from_millis(200));
    }
    assert!(net.all_up());
    assert!(relay_pairs(&net).is_empty(), "the relay was asked");
    assert_eq!(net.lan(0).peers[0].path, "punched");
}

#[test]
fn one_symmetric_nat_and_one_cone_still_meet_through_the_relay() {
    // The cone side's hellos reach the symmetric side's NAT at a port that NAT never
    // opened, and the other way the symmetric side's mapping port is unknown.
    let mut net = with_relay([true, false]);
    net.tick();
    for _ in 0..30 {
        net.advance(Duration::from_millis(200));
    }
    assert!(net.all_up(), "{:?}", net.lan(0).peers);
    assert_eq!(net.lan(0).peers[0].path, "relayed");
    assert_eq!(net.lan(1).peers[0].path, "relayed");
}

#[test]
fn a_grant_forged_or_from_a_stranger_is_dropped() {
    let mut net = with_relay([true, true]);
    net.tick();
    let now = net.now;
    let grant = crate::proto::relay::RelayMsg {
        kind: crate::proto::Kind::RelayGrant,
        lan: crate::proto::crypto::lan_id("lan1"),
        sender: 100,
        seq: 1,
        peer: 101,
        port: 50_000,
    };
    // The right key, from an address that is not one of our relays.
    let key = crate::engine::relays::relay_key_of(&crate::proto::crypto::LanSecret([1; 32]));
    let mut b = grant.emit(&key).to_vec();
    let stranger = SocketAddr::from(([192, 0, 2, 66], 7402));
    assert!(matches!(
        net.hosts[0].handle_datagram(stranger, false, &mut b, now),
        RxAction::Drop(DropReason::AuthFailure)
    ));
    // From the relay's address, under another LAN secret's key.
    let wrong = crate::engine::relays::relay_key_of(&crate::proto::crypto::LanSecret([2; 32]));
    let mut b = grant.emit(&wrong).to_vec();
    assert!(matches!(
        net.hosts[0].handle_datagram(SocketAddr::from(RELAY), false, &mut b, now),
        RxAction::Drop(DropReason::AuthFailure)
    ));
    assert!(net.lan(0).peers[0].candidates.iter().all(|c| !c.relay));
}

#[test]
fn a_relayed_tunnel_moves_to_a_direct_path_once_one_opens() {
    let mut net = relayed_pair();
    // The NATs start keeping ports (reconfigured): the hellos that keep going to the
    // direct candidates now punch through, and both sides move there.
    net.symmetric = vec![false, false];
    for _ in 0..30 {
        net.advance(Duration::from_millis(200));
    }
    for h in 0..2 {
        let p = &net.lan(h).peers[0];
        assert!(p.state == "up" && p.path == "punched", "{p:?}");
    }
    // From then on nothing goes through the relay.
    let before = relay_pairs(&net)[0].packets;
    net.clear_taps();
    net.send(0, &frame(mac(2), mac(1), b"direct now"));
    assert_eq!(net.taps[1].len(), 1);
    for _ in 0..15 {
        net.advance(Duration::from_millis(200));
    }
    assert_eq!(relay_pairs(&net)[0].packets, before, "still relayed");
}

#[test]
fn an_up_direct_path_is_not_given_up_for_the_relay() {
    // Host 0 has found a direct path (up, at its peer's public candidate) while host 1
    // still sends through the relay: host 0 takes what comes and stays direct.
    let mut net = relayed_pair();
    net.send(0, &frame(mac(2), mac(1), b"here"));
    net.clear_taps();
    let direct: SocketAddr = "198.51.100.2:7401".parse().expect("addr");
    net.hosts[0].move_peer_for_test(LAN, direct);
    assert_eq!(net.lan(0).peers[0].path, "punched");
    let through = relay_pairs(&net)[0].packets;
    net.send(1, &frame(mac(1), mac(2), b"via the relay"));
    assert_eq!(net.taps[0].len(), 1, "it arrives");
    assert!(relay_pairs(&net)[0].packets > through, "through the relay");
    let p = &net.lan(0).peers[0];
    assert_eq!(p.address, direct.to_string(), "{p:?}");
    assert_eq!(p.path, "punched", "{p:?}");
}

#[test]
fn a_relayed_tunnel_comes_back_within_seconds_after_the_nats_forget_their_mappings() {
    let mut net = relayed_pair();
    net.send(0, &frame(mac(2), mac(1), b"before"));
    net.send(1, &frame(mac(1), mac(2), b"before"));
    // Both NATs forget everything: each side's datagrams reach the relay from a new
    // port, which it refuses until a bind (MAC'd) tells it so.
    net.flush_nats();
    net.clear_taps();
    net.send(0, &frame(mac(2), mac(1), b"lost"));
    assert!(
        net.taps[1].is_empty(),
        "the relay knows the old mapping only"
    );
    // Probes go unanswered; 1.5 s of silence sends a bind at once (not at the next
    // keepalive interval, 10 s).
    for _ in 0..15 {
        net.advance(Duration::from_millis(200));
    }
    net.clear_taps();
    net.send(0, &frame(mac(2), mac(1), b"again"));
    net.send(1, &frame(mac(1), mac(2), b"and back"));
    assert_eq!(net.taps[1].len(), 1, "{:?}", net.lan(0).peers[0]);
    assert_eq!(net.taps[0].len(), 1, "{:?}", net.lan(1).peers[0]);
    assert_eq!(net.lan(0).peers[0].path, "relayed");
}
