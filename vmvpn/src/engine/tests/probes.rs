//! Telemetry inside the tunnels: loss, reordering, RTT, rates, health, the VM matrix and
//! flows, `vmvpn ping`.

use super::sim::*;
use crate::aqm::signal::Signal;

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
    let p = net.peer(1, 0);
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
    let seen_by_1 = net.peer(1, 0);
    let seen_by_0 = net.peer(0, 1);
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

#[test]
fn a_tso_frame_counted_once_equals_its_segments_counted_one_by_one() {
    let a = (1, [10, 0, 0, 1], 40000);
    let b = (2, [10, 0, 0, 2], 5201);
    // The segments the data plane cuts from one TSO frame: the last carries FIN.
    let segments: Vec<Vec<u8>> = (0..10)
        .map(|i| tcp_frame(a, b, if i == 9 { ACK | FIN } else { ACK }, 1000 + i))
        .collect();
    let tso = tcp_frame(a, b, ACK | FIN, 10_045);
    let mut counted = Vec::new();
    for once in [false, true] {
        let mut net = Net::new(2);
        net.tick();
        net.send(1, &frame(BCAST, mac(2), b"hello"));
        net.send(0, &tcp_frame(a, b, SYN, 0));
        if once {
            net.hosts[0].begin_burst(LAN, &tso);
        }
        for s in &segments {
            assert_eq!(net.send(0, s), None);
        }
        if once {
            // Nothing is counted before the TSO frame's end.
            let t = net.hosts[0].traffic(None, Some(5)).remove(0);
            let va = t.vms.iter().find(|v| v.mac == mac(1)).expect("vm a");
            assert_eq!(va.tx_packets, 1, "the SYN alone");
            net.hosts[0].end_burst(LAN);
        }
        net.advance(Duration::from_secs(1));
        let t = net.hosts[0].traffic(None, Some(5)).remove(0);
        let va = t.vms.iter().find(|v| v.mac == mac(1)).expect("vm a");
        let vb = t.vms.iter().find(|v| v.mac == mac(2)).expect("vm b");
        let pair = t
            .pairs
            .iter()
            .find(|p| p.src_mac == mac(1) && p.dst_mac == mac(2))
            .expect("pair");
        let f = &t.flows[0];
        let st = net.lan(0);
        counted.push((
            (va.tx_packets, va.tx_bytes, vb.rx_packets, vb.rx_bytes),
            (pair.packets, pair.bytes),
            (f.tx_packets, f.tx_bytes, f.tcp_state),
            (st.flow_table.tcp_fin_total, st.flow_table.tcp_active),
        ));
        // The receiving host counts the segments it delivers in runs of one flow: the
        // same figures, and the FIN that ends the run is seen.
        let t1 = net.hosts[1].traffic(None, Some(5)).remove(0);
        let v1 = t1.vms.iter().find(|v| v.mac == mac(1)).expect("vm a at 1");
        assert_eq!((v1.tx_packets, v1.tx_bytes), (va.tx_packets, va.tx_bytes));
        assert_eq!(
            (
                t1.flows[0].tx_packets,
                t1.flows[0].tx_bytes,
                t1.flows[0].tcp_state
            ),
            (f.tx_packets, f.tx_bytes, f.tcp_state)
        );
        assert_eq!(net.lan(1).flow_table.tcp_fin_total, 1);
    }
    assert_eq!(counted[0].0.0, 11, "{:?}", counted[0]);
    assert_eq!(counted[1], counted[0], "once per TSO frame = one by one");
}

#[test]
fn received_runs_of_interleaved_flows_are_counted_exactly() {
    let mut net = Net::new(2);
    net.tick();
    let b = (2, [10, 0, 0, 2], 5201);
    net.send(1, &frame(BCAST, mac(2), b"hello"));
    // Two VMs on host 0 send to one on host 1: runs of 3, 1, 2 and 1 segments.
    let a = (1, [10, 0, 0, 1], 40000);
    let c = (3, [10, 0, 0, 3], 40001);
    // All sealed first, then delivered in one batch, as a receive batch would bring them.
    let mut batch = Vec::new();
    for (from, n, len) in [
        (a, 3, 500),
        (c, 1, 500),
        (a, 2, 500),
        (c, 1, 500),
        (a, 2, 100),
    ] {
        for _ in 0..n {
            batch.push(tcp_frame(from, b, ACK, len));
        }
    }
    let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
    for f in &batch {
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(f);
        match net.hosts[0].handle_tap_frame(LAN, &mut buf, f.len(), net.now) {
            TapAction::Unicast(to, n) => net.queue.push((0, to, buf[..n].to_vec())),
            other => panic!("not unicast: {other:?}"),
        }
    }
    net.settle();
    let t = net.hosts[1].traffic(None, Some(5)).remove(0);
    let vm = |m: u8| t.vms.iter().find(|v| v.mac == mac(m)).expect("vm").clone();
    assert_eq!((vm(1).tx_packets, vm(1).tx_bytes), (7, 5 * 554 + 2 * 154));
    assert_eq!((vm(3).tx_packets, vm(3).tx_bytes), (2, 2 * 554));
    assert_eq!(vm(2).rx_packets, 9);
    let pairs: u64 = t
        .pairs
        .iter()
        .filter(|p| p.dst_mac == mac(2))
        .map(|p| p.packets)
        .sum();
    assert_eq!(pairs, 9);
}

#[test]
fn congestion_signals_are_counted_on_the_peer_whose_frame_carried_them() {
    let mut net = Net::new(3);
    net.tick();
    net.send(1, &frame(BCAST, mac(2), b"learn"));
    // One frame from each of hosts 0 and 2 to host 1's VM; the receive path names the
    // peer each came from.
    let mut peers = Vec::new();
    for from in [0usize, 2] {
        let f = frame(mac(2), mac(from as u8 + 1), b"bulk");
        let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        let mut d = match net.hosts[from].handle_tap_frame(LAN, &mut buf, f.len(), net.now) {
            TapAction::Unicast(_, n) => buf[..n].to_vec(),
            other => panic!("{other:?}"),
        };
        match net.hosts[1].handle_datagram(addr(from), false, &mut d, net.now) {
            RxAction::Tap { lan, peer, .. } => peers.push((lan, peer)),
            other => panic!("{other:?}"),
        }
    }
    let [(lan, p0), (_, p2)] = peers[..] else {
        panic!("{peers:?}")
    };
    assert_ne!(p0, p2);
    // CoDel drops two of host 0's frames and marks one of host 2's.
    net.hosts[1].note_congestion(lan, p0, Signal::Drop);
    net.hosts[1].note_congestion(lan, p0, Signal::Drop);
    net.hosts[1].note_congestion(lan, p2, Signal::Marked);
    net.hosts[1].note_congestion(lan, p2, Signal::Spared);
    let (from0, from2) = (net.peer(1, 0), net.peer(1, 2));
    assert_eq!(from0.drops.get(DropReason::Aqm), 2, "{:?}", from0.drops);
    assert_eq!(from0.aqm_marks_total, 0);
    assert_eq!(from2.drops.get(DropReason::Aqm), 0, "{:?}", from2.drops);
    assert_eq!(from2.aqm_marks_total, 1);
    assert_eq!(net.lan(1).drops.get(DropReason::Aqm), 2);
    // A peer id from another LAN's numbering, or a LAN that is gone, is ignored.
    net.hosts[1].note_congestion(LanId(7), p0, Signal::Drop);
    assert_eq!(net.lan(1).drops.get(DropReason::Aqm), 2);
}
