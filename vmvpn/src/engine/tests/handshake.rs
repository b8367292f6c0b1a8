//! Hellos, sessions and their keys: tunnels come up, wrong secrets and replays are
//! refused, restarts rekey, silence takes tunnels down, and cipher `none`.

use super::sim::*;

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
    let peer = |net: &Net| net.peer(0, 1);
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

fn engine_with_cipher(i: usize, n: usize, cipher: crate::proto::crypto::Cipher) -> Engine {
    let peers = (0..n).filter(|&j| j != i).map(addr).collect();
    engine_at(
        i,
        addr(i),
        LanSpec {
            cipher,
            ..spec(1, peers)
        },
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
            TapAction::Unsealed(..) => panic!("sealed in the core unless asked otherwise"),
            TapAction::Drop(r) => panic!("dropped {r:?}"),
            TapAction::Limited | TapAction::Reply(_) | TapAction::Consumed => {
            panic!("no limits or services here")
        },
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
}

/// The runtime hears of every change into and out of `up`, in order and once: up at the
/// handshake, down at silence, up again when heard, and down then up when the peer
/// restarts with new keys (its old run is gone, not still up).
#[test]
fn tunnel_events_alternate_up_and_down_through_silence_and_a_restart() {
    use crate::engine::Event;
    let kinds = |e: &mut Engine| {
        let mut v = Vec::new();
        while let Some(ev) = e.poll_event() {
            match ev {
                Event::TunnelUp(c) => v.push(("up", c.peer)),
                Event::TunnelDown(c) => v.push(("down", c.peer)),
                Event::Pong(_) => {}
            }
        }
        v
    };
    let mut net = Net::new(2);
    net.tick();
    assert!(net.all_up());
    assert_eq!(kinds(&mut net.hosts[0]), vec![("up", addr(1))]);
    // Silence past dead_after: down, once.
    net.now += Timers::default().dead_after + Duration::from_secs(1);
    net.hosts[0].handle_timeout(net.now);
    net.hosts[0].handle_timeout(net.now + Duration::from_secs(1));
    assert_eq!(kinds(&mut net.hosts[0]), vec![("down", addr(1))]);
    // Heard again: up, once.
    net.tick();
    net.advance(Duration::from_secs(2));
    assert!(net.all_up());
    assert_eq!(kinds(&mut net.hosts[0]), vec![("up", addr(1))]);
    // The peer restarts (new keys): down, then up with the new session.
    net.hosts[1] = engine(1, 2, 1, 5000);
    net.tick();
    assert!(net.all_up());
    assert_eq!(
        kinds(&mut net.hosts[0]),
        vec![("down", addr(1)), ("up", addr(1))]
    );
}

/// (key, sequence number) of every datagram host `from` sealed to `to`: false for the
/// pairwise key, true for the sender's group key (floods). Hellos are not sealed.
fn nonces(net: &Net, from: usize, to: SocketAddr) -> Vec<(bool, u64)> {
    net.sent
        .iter()
        .filter(|(f, t, _)| *f == from && *t == to)
        .filter_map(|(_, _, b)| Packet::new_checked(&b[..]).ok().map(|p| *p.header()))
        .filter(|h| h.kind.is_sealed())
        .map(|h| (matches!(h.kind, Kind::Flood | Kind::FloodFragment), h.seq))
        .collect()
}

/// Three hosts that know each other from the bulletin, up, with traffic: host 0 sends
/// more to host 2 than to host 1. Then host 0 drops host 2: its counters are the highest
/// host 0 retires, so host 1's new counters jump.
fn bulletin_trio() -> Net {
    let mut net = Net::with(3, |i| {
        let mut e = engine(i, 1, 1, 1000);
        for j in (0..3).filter(|&j| j != i) {
            e.add_peer(LAN, addr(j), PeerSource::Bulletin, None);
        }
        e
    });
    net.tick();
    assert!(net.all_up(), "{:?}", net.lan(0).peers);
    net.send(2, &frame(BCAST, mac(3), b"host 2's VM"));
    for k in 0..300 {
        if k < 50 {
            net.send(0, &frame(mac(2), mac(1), b"to 1"));
            net.send(1, &frame(mac(1), mac(2), b"to 0"));
            net.send(0, &frame(BCAST, mac(1), b"to all"));
        }
        net.send(0, &frame(mac(3), mac(1), b"to 2"));
    }
    net.advance(Duration::from_secs(2));
    net.hosts[0].remove_peer(LAN, addr(2));
    net
}

/// After host 0 dropped its entry of host 1 and made a new one (host 1 kept its own):
/// host 0's frames reach host 1 at once, under no nonce it used before, and host 1
/// counts no loss for the jump in host 0's numbers.
fn goes_on_where_it_was(mut net: Net, before: &[(bool, u64)]) {
    for _ in 0..3 {
        net.advance(Duration::from_millis(300));
    }
    let up = |net: &Net, h: usize, peer: usize| {
        net.lan(h)
            .peers
            .iter()
            .any(|p| p.address == addr(peer).to_string() && p.state == "up")
    };
    assert!(up(&net, 0, 1) && up(&net, 1, 0), "{:?}", net.lan(0).peers);
    net.clear_taps();
    let replays = net.lan(1).drops.get(DropReason::Replay);
    for _ in 0..5 {
        net.send(0, &frame(mac(2), mac(1), b"again"));
        net.send(0, &frame(BCAST, mac(1), b"again, to all"));
    }
    assert_eq!(
        net.taps[1].len(),
        10,
        "host 1 takes host 0's frames at once: {:?}",
        net.lan(1).drops
    );
    assert_eq!(net.lan(1).drops.get(DropReason::Replay), replays);
    let after = nonces(&net, 0, addr(1));
    assert!(after.len() >= 10, "{after:?}");
    let used: BTreeSet<_> = before.iter().collect();
    let again: Vec<_> = after.iter().filter(|n| used.contains(n)).collect();
    assert!(
        again.is_empty(),
        "nonces sealed twice under one key: {again:?}"
    );
    let from_0 = net.peer(1, 0);
    assert_eq!(
        from_0.sequence.lost, 0,
        "the jump is no loss: {:?}",
        from_0.sequence
    );
}

#[test]
fn a_peer_dropped_and_listed_again_goes_on_above_every_number_it_sent() {
    let mut net = bulletin_trio();
    let before = nonces(&net, 0, addr(1));
    assert!(before.len() >= 100, "{}", before.len());
    net.sent.clear();
    // The bulletin dropped host 1 (its lease lapsed) and lists it again.
    net.hosts[0].remove_peer(LAN, addr(1));
    assert!(net.lan(0).peers.is_empty());
    net.hosts[0].add_peer(LAN, addr(1), PeerSource::Bulletin, None);
    goes_on_where_it_was(net, &before);
}

#[test]
fn a_lan_left_and_joined_again_goes_on_above_every_number_it_sent() {
    let mut net = bulletin_trio();
    let before = nonces(&net, 0, addr(1));
    net.sent.clear();
    // A reload leaves the LAN, the next joins it again (the same keys: the same run).
    assert_eq!(net.hosts[0].remove_lan("lan1"), Some(LAN));
    assert_eq!(net.hosts[0].add_lan(spec(1, Vec::new())), Ok(LAN));
    net.hosts[0].add_peer(LAN, addr(1), PeerSource::Bulletin, None);
    goes_on_where_it_was(net, &before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Whatever the order of frames, peers dropped and listed again and LANs left and
    /// joined again, no host seals two datagrams to one peer under one key and number.
    #[test]
    fn no_nonce_is_sealed_twice(
        ops in proptest::collection::vec((0u8..4, 0usize..3, 0usize..3), 1..40)
    ) {
        let mut net = Net::with(3, |i| {
            let mut e = engine(i, 1, 1, 1000);
            for j in (0..3).filter(|&j| j != i) {
                e.add_peer(LAN, addr(j), PeerSource::Bulletin, None);
            }
            e
        });
        net.tick();
        for (op, h, k) in ops {
            let other = if k == h { (h + 1) % 3 } else { k };
            match op {
                0 => {
                    net.send(h, &frame(mac(other as u8 + 1), mac(h as u8 + 1), b"unicast"));
                }
                1 => {
                    net.send(h, &frame(BCAST, mac(h as u8 + 1), b"flood"));
                }
                2 => {
                    net.hosts[h].remove_peer(LAN, addr(other));
                    net.hosts[h].add_peer(LAN, addr(other), PeerSource::Bulletin, None);
                }
                _ => {
                    prop_assert_eq!(net.hosts[h].remove_lan("lan1"), Some(LAN));
                    prop_assert_eq!(net.hosts[h].add_lan(spec(1, Vec::new())), Ok(LAN));
                    for j in (0..3).filter(|&j| j != h) {
                        net.hosts[h].add_peer(LAN, addr(j), PeerSource::Bulletin, None);
                    }
                }
            }
            net.advance(Duration::from_millis(300));
        }
        for from in 0..3 {
            for to in (0..3).filter(|&t| t != from) {
                let all = nonces(&net, from, addr(to));
                let unique: BTreeSet<_> = all.iter().collect();
                prop_assert_eq!(unique.len(), all.len(), "host {} to host {}", from, to);
            }
        }
    }
}
