//! LANs joined and left while running: the LANs kept keep their sessions under their new
//! place, a LAN added comes up, and one that is gone leaves nothing behind.

use super::sim::*;

fn named(name: &str, peers: Vec<SocketAddr>) -> LanSpec {
    LanSpec {
        name: name.into(),
        id: crate::proto::crypto::lan_id(name),
        tap: format!("tap-{name}"),
        ..spec(2, peers)
    }
}

#[test]
fn a_lan_added_comes_up_and_removing_another_keeps_its_session() {
    let mut net = Net::new(2);
    for _ in 0..3 {
        net.advance(Duration::from_millis(300));
    }
    assert!(net.all_up());
    for i in 0..2 {
        let li = net.hosts[i]
            .add_lan(named("lan2", vec![addr(1 - i)]))
            .expect("a new LAN");
        assert_eq!(li, LanId(1));
    }
    let dup = net.hosts[0].add_lan(named("lan2", Vec::new()));
    assert!(dup.is_err_and(|e| e.contains("same name")), "a LAN twice");
    for _ in 0..3 {
        net.advance(Duration::from_millis(300));
    }
    let up = |net: &Net, h: usize, li: usize| {
        net.hosts[h].lan_status(net.now)[li]
            .peers
            .iter()
            .all(|p| p.state == "up")
    };
    assert!(up(&net, 0, 1) && up(&net, 1, 1), "the LAN added came up");
    let key = net.hosts[0].tx_key_fingerprint(LanId(1), addr(1));
    assert!(key.is_some());
    // A probe queued on the LAN that leaves, and one on the LAN that moves up.
    net.hosts[0]
        .pmtu_probes
        .push_back((LanId(0), addr(1), 1400));
    net.hosts[0]
        .pmtu_probes
        .push_back((LanId(1), addr(1), 1300));

    for i in 0..2 {
        assert_eq!(net.hosts[i].remove_lan("lan1"), Some(LanId(0)));
    }
    assert_eq!(net.hosts[0].remove_lan("lan1"), None, "already gone");
    assert_eq!(net.hosts[0].lan_count(), 1);
    assert_eq!(net.hosts[0].lan_index("lan2"), Some(LAN));
    assert_eq!(
        net.hosts[0].tx_key_fingerprint(LAN, addr(1)),
        key,
        "the LAN kept re-keyed"
    );
    assert_eq!(
        net.hosts[0].pmtu_probes.iter().copied().collect::<Vec<_>>(),
        vec![(LAN, addr(1), 1300)],
        "queued work follows its LAN to its new place"
    );
    // Frames flow on the LAN kept, now at place 0, without a new handshake.
    net.clear_taps();
    assert_eq!(net.send(0, &frame(BCAST, mac(1), b"still here")), None);
    assert_eq!(net.taps[1].len(), 1);
    let st = net.hosts[1].lan_status(net.now);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].name, "lan2");
}
