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
