//! Floods across subnets: multicast where beacons show it works, one relay copy per
//! other subnet, unicast fallbacks, and forwarder changes.

use super::sim::*;

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
