//! Frames between VMs: broadcast and learned unicast, local destinations, MAC moves,
//! peers from the bulletin, and delivery against a reference model.

use super::sim::*;

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
    let p = net.peer(1, 2);
    assert_eq!(p.source, "static");
    // A reload that no longer lists a static peer removes it; a bulletin peer stays.
    net.hosts[0].add_peer(LAN, extra, PeerSource::Bulletin, None);
    assert!(
        !net.hosts[0].unlist_peer(LAN, extra),
        "not the config's to remove"
    );
    // A path MTU probe queued for addr(2), the second peer, then the first removed: the
    // probe still goes to addr(2), now the first (the peers after a removed one move down).
    net.hosts[0].pmtu_probes.push_back((LAN, addr(2), 1400));
    assert!(net.hosts[0].unlist_peer(LAN, addr(1)));
    assert!(
        !net.lan(0)
            .peers
            .iter()
            .any(|p| p.address == addr(1).to_string())
    );
    let mut out = vec![0u8; 2048];
    let mut sent = Vec::new();
    while let Some((to, n)) = net.hosts[0].poll_transmit(&mut out) {
        sent.push((to, n));
    }
    assert!(
        sent.contains(&(addr(2), 1400 - 28)),
        "the probe queued for addr(2) went to it: {sent:?}"
    );
    assert!(net.hosts[0].pmtu_probes.is_empty());
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

proptest! {
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
fn frames_a_vm_sends_that_cannot_be_carried_count_against_it() {
    // No timeout yet: no tunnel is up, so nothing can be carried.
    let mut net = Net::new(2);
    let f = tcp_frame((1, [10, 0, 0, 1], 40000), (2, [10, 0, 0, 2], 80), SYN, 0);
    assert_eq!(net.send(0, &f), Some(DropReason::NoRoute));
    assert_eq!(net.send(0, &f), Some(DropReason::NoRoute));
    let t = net.hosts[0].traffic(None, None);
    let vm = t[0].vms.iter().find(|v| v.mac == mac(1)).expect("the VM");
    assert_eq!((vm.tx_drops_total, vm.tcp_syn_total), (2, 2));
    // Once the tunnels are up the same frames go through and nothing more is counted.
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    assert_eq!(net.send(0, &f), None);
    let t = net.hosts[0].traffic(None, None);
    let vm = t[0].vms.iter().find(|v| v.mac == mac(1)).expect("the VM");
    assert_eq!(vm.tx_drops_total, 2);
}

#[test]
fn a_limit_polices_received_frames_by_when_they_arrived_not_when_they_were_read() {
    use crate::engine::limits::{Direction, LimitSpec};
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    // Host 1's VM may receive 8 Mbit/s (1 MB/s), with a bucket of 16 KB.
    let spec = LimitSpec {
        mac: Some(mac(2)),
        vm: None,
        rate_bps: 8_000_000,
        burst_bytes: 16 * 1024,
        direction: Direction::In,
        shape_ms: 0,
    };
    net.hosts[1].set_limits("lan1", &[spec]).expect("limits");
    // 100 frames of about 1 KB from host 0's VM, sealed (fresh sequence numbers each call).
    let seal = |net: &mut Net| -> Vec<Vec<u8>> {
        (0..100u32)
            .map(|i| {
                let f = frame(mac(2), mac(1), &[i as u8; 986]);
                let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
                buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
                match net.hosts[0].handle_tap_frame(LAN, &mut buf, f.len(), net.now) {
                    TapAction::Unicast(_, n) => buf[..n].to_vec(),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    };
    // They arrived 1 ms apart (the limit's rate) and are all read in one late round. Read
    // as arriving when read, all but the first 16 would be a burst.
    let sealed = seal(&mut net);
    let start = net.now + Duration::from_secs(1);
    let read = start + Duration::from_millis(100);
    let delivered = |net: &mut Net, sealed: &[Vec<u8>], by_arrival: bool, from: Instant| {
        sealed
            .iter()
            .enumerate()
            .filter(|(i, d)| {
                let mut d = d.to_vec();
                let arrived = from + Duration::from_millis(*i as u64);
                let at = if by_arrival { arrived } else { read };
                matches!(
                    net.hosts[1].handle_datagram_at(addr(0), false, &mut d, read, at),
                    RxAction::Tap { .. }
                )
            })
            .count()
    };
    assert_eq!(delivered(&mut net, &sealed[..], true, start), 100);
    // 100 more (copies would be replays), all arriving as they are read, 1 ms after the
    // last: a burst, and the bucket passes 16 KB of it.
    let more = seal(&mut net);
    let burst = delivered(&mut net, &more[..], false, start);
    assert!(
        (16..=17).contains(&burst),
        "{burst} of a 100-frame burst passed a 16 KB bucket"
    );
}

#[test]
fn a_segment_whose_checksum_the_sender_computed_says_so_and_nothing_else_does() {
    use crate::proto::{FLAG_CHECKSUMS, Packet};
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    // (summed by the sender?, by a flood?) -> the flag on the wire, and what the receiver says.
    for (summed, to) in [(true, mac(2)), (false, mac(2)), (true, BCAST)] {
        let f = frame(to, mac(1), &[7u8; 600]);
        let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        let n = match net.hosts[0].handle_tap_segment(LAN, &mut buf, f.len(), net.now, summed) {
            TapAction::Unicast(_, n) => n,
            TapAction::Flood { len, .. } => len,
            other => panic!("{other:?}"),
        };
        let flags = Packet::new_checked(&buf[..n])
            .expect("a datagram")
            .header()
            .flags;
        let unicast = to != BCAST;
        assert_eq!(
            flags & FLAG_CHECKSUMS != 0,
            summed && unicast,
            "summed {summed}, unicast {unicast}: flags {flags:#x}"
        );
        match net.hosts[1].handle_datagram(addr(0), false, &mut buf[..n], net.now) {
            RxAction::Tap { summed: said, .. } => assert_eq!(said, summed && unicast),
            other => panic!("{other:?}"),
        }
    }
}

/// With `seal_elsewhere` (the send thread), unicast data leaves the core as header and
/// plain frame with room for the tag; sealed afterwards, in any order with the core's
/// own sealed datagrams, the peer opens each. Floods are still sealed in the core.
#[test]
fn data_left_for_the_send_thread_is_sealed_later_and_opens() {
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    let f = frame(mac(2), mac(1), &[9u8; 1200]);
    let fresh = || {
        let mut b = vec![0u8; buffer_len(MAX_FRAME)];
        b[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        b
    };
    net.hosts[0].seal_elsewhere(true);
    let mut later = fresh();
    let TapAction::Unsealed(to, n, key) =
        net.hosts[0].handle_tap_frame(LAN, &mut later, f.len(), net.now)
    else {
        panic!("left unsealed");
    };
    assert_eq!(
        (to, n),
        (addr(1), HEADER_LEN + f.len() + crate::proto::TAG_LEN)
    );
    assert_eq!(
        later[HEADER_LEN..HEADER_LEN + f.len()],
        f[..],
        "the plain frame"
    );
    let key = std::sync::Arc::clone(key.0);
    // The core seals the next one itself; it reaches the peer first.
    net.hosts[0].seal_elsewhere(false);
    let mut now_sealed = fresh();
    let TapAction::Unicast(_, m) =
        net.hosts[0].handle_tap_frame(LAN, &mut now_sealed, f.len(), net.now)
    else {
        panic!("sealed");
    };
    assert_eq!(key.seal_datagram(&mut later[..n]), Some(n));
    for d in [&mut now_sealed[..m], &mut later[..n]] {
        match net.hosts[1].handle_datagram(addr(0), false, d, net.now) {
            RxAction::Tap { frame, .. } => assert_eq!(frame.len(), f.len()),
            other => panic!("{other:?}"),
        }
    }
    // A flood is sealed in the core whatever the mode.
    net.hosts[0].seal_elsewhere(true);
    let b = frame(BCAST, mac(1), b"who-has");
    let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
    buf[HEADER_LEN..HEADER_LEN + b.len()].copy_from_slice(&b);
    let TapAction::Flood { len, .. } =
        net.hosts[0].handle_tap_frame(LAN, &mut buf, b.len(), net.now)
    else {
        panic!("a flood");
    };
    assert!(matches!(
        net.hosts[1].handle_datagram(addr(0), false, &mut buf[..len], net.now),
        RxAction::Tap { .. }
    ));
}

/// `[host] threads = 4`: unicast data opened on another thread with a snapshot of the
/// receive keys (`engine::opened`) is taken as opened; a datagram that did not
/// authenticate there is an auth failure; anything but data is left to the engine; and a
/// verdict reached under keys the peer's restart replaced is dropped as from no session.
#[test]
fn data_opened_beside_the_engine_is_taken_and_stale_keys_are_dropped() {
    use crate::engine::opened::{PreOpen, open_data};
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    let f = frame(mac(2), mac(1), &[7u8; 1000]);
    let seal = |net: &mut Net| {
        let mut b = vec![0u8; buffer_len(MAX_FRAME)];
        b[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        let TapAction::Unicast(_, n) = net.hosts[0].handle_tap_frame(LAN, &mut b, f.len(), net.now)
        else {
            panic!("sealed");
        };
        b.truncate(n);
        b
    };
    let epoch = net.hosts[1].rx_keys_epoch();
    let keys = net.hosts[1].rx_keys();
    assert_eq!(keys.len(), 1, "one session's keys");
    // Opened beside: the frame, in place, taken as it is.
    let mut d = seal(&mut net);
    let pre = open_data(&keys, &mut d);
    assert!(
        matches!(pre, PreOpen::Opened { n, .. } if n == f.len()),
        "{pre:?}"
    );
    let now = net.now;
    match net.hosts[1].handle_datagram_opened(addr(0), false, &mut d, now, now, pre) {
        RxAction::Tap { frame, .. } => assert_eq!(frame.len(), f.len()),
        other => panic!("{other:?}"),
    }
    assert_eq!(&d[HEADER_LEN..HEADER_LEN + f.len()], &f[..]);
    // Taken again (its copy): a replay, as if the engine had opened it.
    let mut again = d.clone();
    let r = net.hosts[1].handle_datagram_opened(addr(0), false, &mut again, now, now, pre);
    assert_eq!(r, RxAction::Drop(DropReason::Replay));
    // Tampered with: it fails beside, and counts as an auth failure here.
    let mut bad = seal(&mut net);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let pre = open_data(&keys, &mut bad);
    assert!(matches!(pre, PreOpen::Failed { .. }), "{pre:?}");
    let r = net.hosts[1].handle_datagram_opened(addr(0), false, &mut bad, now, now, pre);
    assert_eq!(r, RxAction::Drop(DropReason::AuthFailure));
    // Hellos, keepalives, floods are left for the engine.
    net.tick();
    let control: Vec<Vec<u8>> = net
        .sent
        .iter()
        .filter(|(from, _, b)| *from == 0 && b[1] != Kind::Data as u8)
        .map(|(_, _, b)| b.clone())
        .collect();
    assert!(!control.is_empty());
    for mut c in control {
        assert_eq!(open_data(&keys, &mut c), PreOpen::No);
    }
    assert_eq!(open_data(&keys, &mut [0u8; 3]), PreOpen::No, "garbage");
    // The peer restarts: new keys, a new epoch. Its data under the new keys fails under
    // the old snapshot, and datagrams of its old run opened under it are stale too.
    let mut old_run = seal(&mut net);
    let old_pre = open_data(&keys, &mut old_run);
    assert!(matches!(old_pre, PreOpen::Opened { .. }));
    net.hosts[0] = engine(0, 2, 1, 2000);
    net.tick();
    assert!(net.all_up());
    assert_ne!(net.hosts[1].rx_keys_epoch(), epoch, "new keys, new epoch");
    net.send(1, &frame(BCAST, mac(2), b"learn again"));
    let mut new_run = seal(&mut net);
    let pre = open_data(&keys, &mut new_run);
    assert!(matches!(pre, PreOpen::Failed { .. }), "{pre:?}");
    let now = net.now;
    for (d, pre) in [(&mut new_run, pre), (&mut old_run, old_pre)] {
        let r = net.hosts[1].handle_datagram_opened(addr(0), false, d, now, now, pre);
        assert_eq!(r, RxAction::Drop(DropReason::NoSession));
    }
    // With the new snapshot it opens.
    let keys = net.hosts[1].rx_keys();
    let mut d = seal(&mut net);
    let pre = open_data(&keys, &mut d);
    assert!(matches!(
        net.hosts[1].handle_datagram_opened(addr(0), false, &mut d, now, now, pre),
        RxAction::Tap { .. }
    ));
}

/// Flow ports: with `spread_flows`, unicast data to a peer whose hellos say it takes them
/// carries the label of its flow (TCP connections spread, one connection keeps its label;
/// ARP and floods none); a labelled datagram from another source port of the peer is
/// taken without moving the peer's address, an unlabelled one moves it (NAT rebinding);
/// to a peer without `SPREADS` (an older build) or reached through a NAT mapping, nothing
/// is labelled.
#[test]
fn flows_are_labelled_for_their_ports_and_labelled_data_never_moves_the_peer() {
    use crate::proto::{Packet, flow_label};
    let mut net = Net::new(2);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    net.hosts[0].spread_flows(8);
    assert_eq!(net.hosts[0].flow_ports(), 8);
    let label_of = |net: &mut Net, f: &[u8]| -> (u8, Vec<u8>) {
        let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(f);
        let n = match net.hosts[0].handle_tap_frame(LAN, &mut buf, f.len(), net.now) {
            TapAction::Unicast(_, n) => n,
            TapAction::Flood { len, .. } => len,
            other => panic!("{other:?}"),
        };
        let flags = Packet::new_checked(&buf[..n])
            .expect("a datagram")
            .header()
            .flags;
        (flow_label(flags), buf[..n].to_vec())
    };
    let conn = |sport: u16| tcp_frame((1, [10, 0, 0, 1], sport), (2, [10, 0, 0, 2], 80), 0x10, 100);
    let mut seen = std::collections::BTreeSet::new();
    for sport in 40000..40032 {
        let (l, _) = label_of(&mut net, &conn(sport));
        assert!((1..=8).contains(&l), "label {l}");
        assert_eq!(
            label_of(&mut net, &conn(sport)).0,
            l,
            "one connection, one label"
        );
        seen.insert(l);
    }
    assert!(seen.len() >= 6, "32 connections over 8 ports used {seen:?}");
    assert!(net.peer(0, 1).flows_spread);
    assert_eq!(
        label_of(&mut net, &frame(mac(2), mac(1), b"arp")).0,
        0,
        "not IP"
    );
    assert_eq!(
        label_of(&mut net, &frame(BCAST, mac(1), b"arp")).0,
        0,
        "flood"
    );

    // B takes a labelled datagram from another port of A, and A's address stays.
    let (l, mut d) = label_of(&mut net, &conn(40001));
    assert_ne!(l, 0);
    let side = SocketAddr::new(addr(0).ip(), 40999);
    assert!(matches!(
        net.hosts[1].handle_datagram(side, false, &mut d, net.now),
        RxAction::Tap { .. }
    ));
    assert_eq!(net.peer(1, 0).address, addr(0).to_string(), "not moved");
    // Unlabelled (ARP), from a new port: the peer moved (its NAT rebound).
    let (_, mut d) = label_of(&mut net, &frame(mac(2), mac(1), b"arp"));
    assert!(matches!(
        net.hosts[1].handle_datagram(side, false, &mut d, net.now),
        RxAction::Tap { .. }
    ));
    assert_eq!(net.lan(1).peers[0].address, side.to_string(), "moved");
    let back = SocketAddr::new(addr(0).ip(), addr(0).port());
    let (_, mut d) = label_of(&mut net, &frame(mac(2), mac(1), b"arp"));
    net.hosts[1].handle_datagram(back, false, &mut d, net.now);

    // A peer whose hellos lack the flag (an older build) gets nothing labelled.
    net.hosts[0].lans[0].peers[0].spreads = false;
    assert_eq!(label_of(&mut net, &conn(40002)).0, 0, "older peer");
    assert!(!net.peer(0, 1).flows_spread);
    net.hosts[0].lans[0].peers[0].spreads = true;
    // Nor one reached through its NAT's mapping rather than its listed address.
    net.hosts[0].lans[0].peers[0].addr = SocketAddr::from(([198, 51, 100, 9], 30000));
    assert_eq!(label_of(&mut net, &conn(40002)).0, 0, "punched");
    net.hosts[0].lans[0].peers[0].addr = addr(1);
    // And with no flow ports, nothing is labelled at all.
    net.hosts[0].spread_flows(0);
    assert_eq!(label_of(&mut net, &conn(40002)).0, 0, "off");
}
