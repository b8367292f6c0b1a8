//! Unit tests of the services: the table, affinity, health, reports and the choice.

use super::*;

fn mac(i: u8) -> Mac {
    [2, 0, 0, i, 0, 0]
}

fn backends(n: u8, weight: u32) -> Vec<BackendSpec> {
    (1..=n)
        .map(|i| BackendSpec {
            mac: Some(mac(i)),
            ip: None,
            vm: None,
            weight,
        })
        .collect()
}

fn spec(b: Vec<BackendSpec>) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        vip: IpAddr::from([192, 168, 1, 200]),
        vmac: virtual_mac("lan1", "web"),
        backends: b,
        ports: Vec::new(),
        policy: Policy::Hash,
        probe_from: None,
    }
}

/// Every backend behind peer 0, its tunnel up; tick at `second`.
fn all_up(s: &mut Services, second: u64) {
    s.tick(Instant::now(), second, true, |_| Where::Peer {
        peer: PeerId::at(0),
        up: true,
        quiet: false,
        rtt_us: None,
    });
}

/// The backends' counts, in config order.
fn counts(s: &Services) -> Vec<crate::status::BackendStatus> {
    s.status(|_| String::new()).remove(0).backends
}

/// An Ethernet + IPv4 + TCP frame to the service's MAC.
fn tcp(vmac: Mac, src: [u8; 4], sport: u16, flags: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&vmac);
    f.extend_from_slice(&[2, 0, 0, 9, 0, 0]);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&[192, 168, 1, 200]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

fn shares(table: &[u16], n: usize) -> Vec<f64> {
    let mut c = vec![0usize; n];
    for &b in table {
        c[usize::from(b)] += 1;
    }
    c.iter().map(|&x| x as f64 / table.len() as f64).collect()
}

#[test]
fn the_table_splits_by_weight() {
    let even = maglev(&backends(3, 1));
    for s in shares(&even, 3) {
        assert!((s - 1.0 / 3.0).abs() < 0.01, "{s}");
    }
    let mut b = backends(3, 1);
    b[2].weight = 2;
    let s = shares(&maglev(&b), 3);
    assert!(
        (s[2] - 0.5).abs() < 0.01 && (s[0] - 0.25).abs() < 0.01,
        "{s:?}"
    );
}

#[test]
fn one_backend_of_n_leaving_moves_about_its_own_share() {
    for n in [3u8, 5, 10] {
        let all = backends(n, 1);
        let before = maglev(&all);
        // The last one leaves; the others keep their keys, so their permutations.
        let after = maglev(&all[..usize::from(n) - 1]);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && usize::from(**b) != usize::from(n) - 1)
            .count();
        // Maglev moves a little more than the leaver's slots: at most a few percent.
        let extra = moved as f64 / TABLE_SIZE as f64;
        assert!(extra < 0.05, "n={n}: {extra:.3} of the others' slots moved");
    }
}

#[test]
fn every_host_builds_the_same_table() {
    assert_eq!(maglev(&backends(4, 1)), maglev(&backends(4, 1)));
    assert_eq!(virtual_mac("lan1", "web"), virtual_mac("lan1", "web"));
    assert_ne!(virtual_mac("lan1", "web"), virtual_mac("lan2", "web"));
    assert_eq!(virtual_mac("a", "b")[0] & 0x03, 0x02, "local, unicast");
}

#[test]
fn a_flow_keeps_its_backend_and_flows_spread() {
    let mut s = Services::new(&[spec(backends(2, 1))]);
    all_up(&mut s, 0);
    let vmac = virtual_mac("lan1", "web");
    let mut picks = [0usize; 2];
    for port in 0..2000u16 {
        let mut f = tcp(vmac, [192, 168, 1, 9], 30000 + port, 0x02);
        assert_eq!(s.handle_frame(&mut f), Verdict::Rewritten);
        let chosen = f[..6].to_vec();
        picks[usize::from(chosen == mac(2))] += 1;
        // Later frames of the flow go the same way.
        let mut g = tcp(vmac, [192, 168, 1, 9], 30000 + port, 0x10);
        s.handle_frame(&mut g);
        assert_eq!(g[..6], chosen[..]);
    }
    assert!(
        picks.iter().all(|&p| (900..=1100).contains(&p)),
        "{picks:?}"
    );
    let conns: u64 = counts(&s).iter().map(|c| c.connections_total).sum();
    assert_eq!(conns, 2000, "SYNs counted as connections, once each");
    // Other frames pass untouched.
    let mut other = tcp(mac(7), [192, 168, 1, 9], 1, 0x10);
    assert_eq!(s.handle_frame(&mut other), Verdict::Pass);
    assert_eq!(other[..6], mac(7));
}

#[test]
fn backends_by_address_wait_for_their_mac_and_ports_are_kept_to() {
    let mut b = backends(2, 1);
    b[1] = BackendSpec {
        mac: None,
        ip: Some(IpAddr::from([192, 168, 1, 3])),
        vm: None,
        weight: 1,
    };
    let mut sp = spec(b);
    sp.ports = vec![80];
    let mut s = Services::new(&[sp]);
    all_up(&mut s, 0);
    let vmac = virtual_mac("lan1", "web");
    // Unresolved: every flow goes to the backend whose MAC is known.
    for port in 0..200u16 {
        let mut f = tcp(vmac, [192, 168, 1, 9], 1000 + port, 0x02);
        assert_eq!(s.handle_frame(&mut f), Verdict::Rewritten);
        assert_eq!(f[..6], mac(1));
    }
    s.resolve(
        |ip| (ip == IpAddr::from([192, 168, 1, 3])).then_some(mac(3)),
        |_| None,
        |_| false,
    );
    all_up(&mut s, 1);
    let to3 = (0..200u16)
        .filter(|p| {
            let mut f = tcp(vmac, [192, 168, 1, 9], 3000 + p, 0x02);
            s.handle_frame(&mut f);
            f[..6] == mac(3)
        })
        .count();
    assert!((60..=140).contains(&to3), "{to3}");
    // A port the service does not serve: dropped, counted.
    let mut f = tcp(vmac, [192, 168, 1, 9], 5, 0x02);
    f[36..38].copy_from_slice(&443u16.to_be_bytes());
    assert_eq!(s.handle_frame(&mut f), Verdict::NoBackend);
    assert_eq!(s.status(|_| String::new())[0].no_backend_frames_total, 1);
}

#[test]
fn arp_for_the_address_is_answered_with_the_virtual_mac() {
    let mut s = Services::new(&[spec(backends(1, 1))]);
    let asker = [2, 0, 0, 9, 0, 0];
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&asker);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&asker);
    f.extend_from_slice(&[192, 168, 1, 9]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[192, 168, 1, 200]);
    f.resize(60, 0);
    let mut other = f.clone();
    assert_eq!(s.handle_frame(&mut f), Verdict::Answer);
    let vmac = virtual_mac("lan1", "web");
    assert_eq!(f[..6], asker);
    assert_eq!(f[6..12], vmac);
    assert_eq!(f[20..22], [0, 2], "a reply");
    assert_eq!(f[22..28], vmac);
    assert_eq!(f[28..32], [192, 168, 1, 200]);
    assert_eq!(f[32..38], asker);
    assert_eq!(f[38..42], [192, 168, 1, 9]);
    // ARP for another address is the LAN's business.
    other[38..42].copy_from_slice(&[192, 168, 1, 7]);
    assert_eq!(s.handle_frame(&mut other), Verdict::Pass);
    // Garbage and short frames pass untouched.
    let mut short = vec![0u8; 20];
    short[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(s.handle_frame(&mut short), Verdict::Pass);
}

/// New SYNs from `n` client ports starting at `from`: how many went to each backend.
fn split(s: &mut Services, n: u16, from: u16) -> Vec<usize> {
    let vmac = virtual_mac("lan1", "web");
    let k = s.list[0].backends.len();
    let mut picks = vec![0usize; k];
    for p in 0..n {
        let mut f = tcp(vmac, [192, 168, 1, 9], from + p, 0x02);
        if s.handle_frame(&mut f) == Verdict::Rewritten {
            let i = (1..=k as u8)
                .position(|i| f[..6] == mac(i))
                .expect("a backend");
            picks[i] += 1;
        }
    }
    picks
}

fn report(s: &mut Services, backend: u8, healthy: bool, load_kbps: u32) {
    report_open(s, backend, healthy, load_kbps, 0);
}

fn report_open(s: &mut Services, backend: u8, healthy: bool, load_kbps: u32, open_tcp: u32) {
    let mut body = [0u8; 1 + wire::MAX_ENTRIES * wire::ENTRY_LEN];
    let n = wire::emit(
        &[BackendReport {
            service: virtual_mac("lan1", "web"),
            backend: mac(backend),
            healthy,
            load_kbps,
            open_tcp,
            key: 0,
        }],
        &mut body,
    );
    s.handle_report(PeerId::at(0), &body[..n])
        .expect("valid report");
}

#[test]
fn least_load_splits_idle_backends_by_weight() {
    let mut b = backends(2, 1);
    b[1].weight = 2;
    let mut sp = spec(b);
    sp.policy = Policy::LeastLoad;
    let mut s = Services::new(&[sp]);
    // 300 connections over 10 s, as the namespace test opens them.
    let mut picks = vec![0usize; 2];
    for sec in 0..10u16 {
        all_up(&mut s, u64::from(sec));
        for (p, n) in picks.iter_mut().zip(split(&mut s, 30, 1000 + sec * 30)) {
            *p += n;
        }
    }
    assert!(
        picks[0].abs_diff(100) <= 15 && picks[1].abs_diff(200) <= 30,
        "{picks:?}"
    );
}

#[test]
fn least_load_avoids_a_loaded_backend_but_not_on_a_stale_figure() {
    let mut sp = spec(backends(2, 1));
    sp.policy = Policy::LeastLoad;
    let mut s = Services::new(&[sp]);
    all_up(&mut s, 100);
    // Backend 1's host says it moves 800 Mbit/s.
    report(&mut s, 1, true, 800_000);
    all_up(&mut s, 101);
    let picks = split(&mut s, 300, 1000);
    assert!(
        picks[1] >= 270,
        "a fresh figure steers new flows: {picks:?}"
    );
    // The same figure, never renewed: after REPORT_FRESH_S it counts for nothing, and
    // the new flows spread again.
    all_up(&mut s, 101 + REPORT_FRESH_S + 1);
    all_up(&mut s, 101 + REPORT_FRESH_S + 2);
    let picks = split(&mut s, 300, 5000);
    assert!(picks[0] >= 100 && picks[1] >= 100, "stale: {picks:?}");
}

#[test]
fn flows_leave_a_backend_its_host_calls_down_and_new_ones_avoid_it() {
    let mut s = Services::new(&[spec(backends(2, 1))]);
    all_up(&mut s, 0);
    let vmac = virtual_mac("lan1", "web");
    let on1: Vec<u16> = (0..200u16)
        .filter(|p| {
            let mut f = tcp(vmac, [192, 168, 1, 9], 1000 + p, 0x02);
            s.handle_frame(&mut f);
            f[..6] == mac(1)
        })
        .collect();
    assert!(!on1.is_empty());
    report(&mut s, 1, false, 0);
    // At once, before the next tick: the pinned flows move on their next frame.
    for p in &on1 {
        let mut f = tcp(vmac, [192, 168, 1, 9], 1000 + p, 0x10);
        assert_eq!(s.handle_frame(&mut f), Verdict::Rewritten);
        assert_eq!(f[..6], mac(2), "port {p} stayed on the dead backend");
    }
    all_up(&mut s, 1);
    assert_eq!(split(&mut s, 200, 9000), vec![0, 200]);
    let c = counts(&s);
    assert_eq!(c[0].moved_away_total, on1.len() as u64);
    assert_eq!((c[0].state.as_str(), c[1].state.as_str()), ("down", "up"));
    // Its host says it is back: it takes new flows again; the moved ones stay where
    // they went (no second move).
    report(&mut s, 1, true, 0);
    all_up(&mut s, 2);
    assert!(split(&mut s, 200, 12000)[0] > 50);
    let mut f = tcp(vmac, [192, 168, 1, 9], 1000 + on1[0], 0x10);
    s.handle_frame(&mut f);
    assert_eq!(f[..6], mac(2));
    // Its host going down takes it out too, report or not.
    s.tick(Instant::now(), 3, true, |m| Where::Peer {
        peer: PeerId::at(0),
        up: *m != mac(1),
        quiet: false,
        rtt_us: None,
    });
    assert_eq!(split(&mut s, 100, 20000), vec![0, 100]);
    // Both hosts down: nothing goes anywhere, counted.
    s.tick(Instant::now(), 4, true, |_| Where::Peer {
        peer: PeerId::at(0),
        up: false,
        quiet: false,
        rtt_us: None,
    });
    assert_eq!(split(&mut s, 10, 30000), vec![0, 0]);
    assert_eq!(s.status(|_| String::new())[0].no_backend_frames_total, 10);
    assert_eq!(s.status(|_| String::new())[0].backends_up, 0);
}

#[test]
fn a_local_backend_is_probed_and_reported() {
    let mut s = Services::new(&[spec(backends(1, 1))]);
    let t0 = Instant::now();
    let local = |_: &Mac| Where::Local {
        ip: Some(IpAddr::from([192, 168, 1, 2])),
        bytes: 0,
    };
    let vmac = virtual_mac("lan1", "web");
    let mut out = [0u8; 128];
    let mut body = [0u8; 1 + wire::MAX_ENTRIES * wire::ENTRY_LEN];
    assert!(!s.tick(t0, 0, true, local));
    let n = s.poll_probe(&mut out).expect("a probe");
    assert_eq!(
        (n, &out[..6], &out[38..42]),
        (60, &mac(1)[..], &[192, 168, 1, 2][..])
    );
    assert_eq!(s.poll_probe(&mut out), None);
    // Answered: consumed, still healthy.
    let mut answer = out;
    let answer = &mut answer;
    answer[..6].copy_from_slice(&vmac);
    answer[6..12].copy_from_slice(&mac(1));
    answer[21] = 2;
    answer[22..28].copy_from_slice(&mac(1));
    assert_eq!(s.handle_frame(&mut answer[..60]), Verdict::Consumed);
    // Three probes unanswered: down, and the tick says so at once.
    let mut flipped = false;
    // (The first finds the answered probe: no miss; the next three find misses.)
    for k in 1..=4 {
        flipped = s.tick(t0 + health::PROBE_EVERY * k, 1, false, local);
        s.poll_probe(&mut out);
    }
    assert!(flipped);
    let n = s.report(&mut body).expect("a local backend to report");
    let e: Vec<_> = wire::parse(&body[..n]).expect("valid").collect();
    assert_eq!((e[0].backend, e[0].healthy), (mac(1), false));
    // Not local: nothing to report.
    all_up(&mut s, 2);
    assert_eq!(s.report(&mut body), None);
    // A malformed report is refused and counted.
    assert!(s.handle_report(PeerId::at(0), &[3, 1, 2]).is_err());
    assert_eq!(s.bad_reports, 1);
}

#[test]
fn a_reload_keeps_flows_with_the_backends_that_stay() {
    let mut s = Services::new(&[spec(backends(3, 1))]);
    all_up(&mut s, 0);
    let vmac = virtual_mac("lan1", "web");
    // 600 flows, each pinned to the backend its first frame chose.
    let chosen: Vec<Mac> = (0..600u16)
        .map(|p| {
            let mut f = tcp(vmac, [192, 168, 1, 9], 20000 + p, 0x02);
            assert_eq!(s.handle_frame(&mut f), Verdict::Rewritten);
            f[..6].try_into().expect("a MAC")
        })
        .collect();
    // New weights, backend 2 removed, backend 4 added, the policy changed.
    let mut b = backends(4, 5);
    b.remove(1);
    let mut new = spec(b);
    new.policy = Policy::LeastLoad;
    s.replace(&[new]);
    all_up(&mut s, 1);
    assert_eq!(counts(&s)[0].flows_total, {
        chosen.iter().filter(|m| **m == mac(1)).count() as u64
    });
    let mut moved = 0;
    for (p, was) in chosen.iter().enumerate() {
        let mut g = tcp(vmac, [192, 168, 1, 9], 20000 + p as u16, 0x10);
        assert_eq!(s.handle_frame(&mut g), Verdict::Rewritten);
        if *was == mac(2) {
            assert_ne!(g[..6], mac(2), "backend 2 is gone");
            moved += 1;
        } else {
            assert_eq!(g[..6], was[..], "flow {p} kept its backend");
        }
    }
    assert!((150..=250).contains(&moved), "{moved}");
}

#[test]
fn rtt_within_a_site_weighs_nothing_and_a_far_backend_costs_more() {
    let mut b = backends(2, 1);
    b[0].weight = 1;
    let mut s = Services::new(&[spec(b)]);
    let at = |rtt: [u64; 2]| {
        move |m: &Mac| Where::Peer {
            peer: PeerId::at(0),
            up: true,
            quiet: false,
            rtt_us: Some(rtt[usize::from(*m == mac(2))]),
        }
    };
    s.tick(Instant::now(), 0, true, at([300, 4_000]));
    let svc = &s.list[0];
    assert_eq!(svc.cost(0), svc.cost(1), "0.3 ms and 4 ms are one site");
    s.tick(Instant::now(), 0, false, at([300, 25_000]));
    let svc = &s.list[0];
    assert!((svc.cost(1) / svc.cost(0) - 3.0).abs() < 1e-9);
}

#[test]
fn new_flows_avoid_a_backend_whose_host_is_quiet_but_its_flows_stay() {
    let mut sp = spec(backends(2, 1));
    sp.policy = Policy::LeastLoad;
    let mut s = Services::new(&[sp]);
    all_up(&mut s, 0);
    let before = split(&mut s, 200, 1000);
    assert!(before[1] > 50, "{before:?}");
    // Backend 2's host goes quiet (not yet called down).
    let quiet = |q2: bool| {
        move |m: &Mac| Where::Peer {
            peer: PeerId::at(usize::from(*m == mac(2))),
            up: true,
            quiet: q2 && *m == mac(2),
            rtt_us: None,
        }
    };
    s.tick(Instant::now(), 1, true, quiet(true));
    assert_eq!(counts(&s)[1].state, "quiet");
    assert_eq!(split(&mut s, 200, 5000), vec![200, 0], "new flows avoid it");
    // Its pinned flows stay with it: the same ports again.
    let again = split(&mut s, 200, 1000);
    assert_eq!(again, before, "pinned flows kept their backend");
    // Every backend quiet: they still take new flows (quiet is not down).
    s.tick(Instant::now(), 2, true, |_| Where::Peer {
        peer: PeerId::at(0),
        up: true,
        quiet: true,
        rtt_us: None,
    });
    assert_eq!(split(&mut s, 10, 9000).iter().sum::<usize>(), 10);
}

#[test]
fn a_new_connection_on_a_closed_connections_ports_chooses_afresh() {
    let mut s = Services::new(&[spec(backends(2, 1))]);
    all_up(&mut s, 0);
    let vmac = virtual_mac("lan1", "web");
    // A port whose first connection went to backend 1.
    let port = (1000..2000u16)
        .find(|&p| {
            let mut f = tcp(vmac, [192, 168, 1, 9], p, 0x02);
            s.handle_frame(&mut f);
            f[..6] == mac(1)
        })
        .expect("a flow to backend 1");
    // Now backend 2 takes nearly every slot.
    let mut b = backends(2, 1);
    b[1].weight = 100;
    s.replace(&[spec(b)]);
    all_up(&mut s, 1);
    let to = |s: &mut Services, flags: u8| {
        let mut f = tcp(vmac, [192, 168, 1, 9], port, flags);
        s.handle_frame(&mut f);
        f[..6] == mac(1)
    };
    assert!(to(&mut s, 0x02), "a retransmitted SYN keeps its backend");
    assert!(to(&mut s, 0x10), "and so does the connection");
    assert!(to(&mut s, 0x11), "its FIN too");
    assert!(!to(&mut s, 0x02), "a SYN after the FIN is a new connection");
    assert!(!to(&mut s, 0x10), "which keeps its new backend");
}

/// The backend's answer to the TCP check in `syn` (a frame from `poll_probe`): a
/// SYN-ACK when `open`, else a reset.
fn answer_check(syn: &[u8], open: bool) -> Vec<u8> {
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(syn).expect("a probe frame");
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (p.net, p.transport) else {
        panic!("an IPv4 TCP probe: {syn:?}")
    };
    assert!(t.syn() && !t.ack(), "a SYN");
    let (h, mut out) = (ip.header(), Vec::new());
    let b = PacketBuilder::ethernet2(
        syn[..6].try_into().expect("MAC"),
        syn[6..12].try_into().expect("MAC"),
    )
    .ipv4(h.destination(), h.source(), 64)
    .tcp(t.destination_port(), t.source_port(), 1000, 1000)
    .ack(t.sequence_number().wrapping_add(1));
    let b = if open { b.syn() } else { b.rst() };
    b.write(&mut out, &[]).expect("written");
    out
}

#[test]
fn the_tcp_check_connects_to_the_first_port_and_resets_the_answer() {
    let mut sp = spec(backends(1, 1));
    sp.ports = vec![8080, 443];
    sp.probe_from = Some(IpAddr::from([192, 168, 1, 250]));
    let vmac = sp.vmac;
    let mut s = Services::new(&[sp]);
    let t0 = Instant::now();
    // A backend known by MAC only: the TCP check needs no address of it.
    let local = |_: &Mac| Where::Local { ip: None, bytes: 0 };
    let mut out = [0u8; probe::PROBE_LEN];
    let tick = |s: &mut Services, k: u32| s.tick(t0 + health::PROBE_EVERY * k, 1, false, local);
    tick(&mut s, 0);
    let n = s.poll_probe(&mut out).expect("a check");
    let syn = out[..n].to_vec();
    assert_eq!((&syn[..6], &syn[6..12]), (&mac(1)[..], &vmac[..]));
    assert_eq!(
        &syn[26..34],
        &[192, 168, 1, 250, 192, 168, 1, 200],
        "from probe_from to the service"
    );
    assert_eq!(
        u16::from_be_bytes([syn[36], syn[37]]),
        8080,
        "the first port"
    );
    // The VM asks who has probe_from: this host answers with the service's MAC.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&mac(1));
    arp.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&mac(1));
    arp.extend_from_slice(&[192, 168, 1, 2, 0, 0, 0, 0, 0, 0, 192, 168, 1, 250]);
    assert_eq!(s.handle_frame(&mut arp), Verdict::Answer);
    assert_eq!(&arp[22..28], &vmac[..]);
    // The SYN-ACK: taken, and reset at once (sequence = its acknowledgement).
    let mut ok = answer_check(&syn, true);
    assert_eq!(
        s.handle_frame(&mut ok),
        Verdict::Consumed,
        "never forwarded as a flow"
    );
    let n = s.poll_probe(&mut out).expect("the reset");
    let reset = out[..n].to_vec();
    let p = etherparse::SlicedPacket::from_ethernet(&reset).expect("parses");
    let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else {
        panic!("TCP")
    };
    let syn_seq = u32::from_be_bytes(syn[38..42].try_into().expect("4 bytes"));
    assert!(t.rst() && t.sequence_number() == syn_seq.wrapping_add(1));
    assert_eq!(counts(&s)[0].state, "up");
    // Refused (the port closed) three checks in a row: down. An ARP answer does not
    // stand in for the TCP check.
    for k in 1..=4 {
        assert!(!tick(&mut s, k) || k == 4);
        let n = s.poll_probe(&mut out).expect("a check");
        let mut no = answer_check(&out[..n], false);
        assert_eq!(s.handle_frame(&mut no), Verdict::Consumed);
        assert_eq!(s.poll_probe(&mut out), None, "nothing to reset");
        let mut a = out;
        a[..6].copy_from_slice(&vmac);
        a[6..12].copy_from_slice(&mac(1));
        a[12..14].copy_from_slice(&[8, 6]);
        a[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        assert_eq!(s.handle_frame(&mut a[..60]), Verdict::Consumed);
    }
    assert_eq!(counts(&s)[0].state, "down");
    // An answer to an older check (another port) does not count, though it is reset.
    for k in 5..=8 {
        tick(&mut s, k);
        assert!(s.poll_probe(&mut out).is_some());
        let mut stale = answer_check(&syn, true);
        assert_eq!(s.handle_frame(&mut stale), Verdict::Consumed);
        assert!(
            s.poll_probe(&mut out).is_some(),
            "the stale SYN-ACK is reset"
        );
    }
    assert_eq!(counts(&s)[0].state, "down");
    // Three answers in a row bring it back.
    for k in 9..=11 {
        tick(&mut s, k);
        let n = s.poll_probe(&mut out).expect("a check");
        let mut yes = answer_check(&out[..n], true);
        assert_eq!(s.handle_frame(&mut yes), Verdict::Consumed);
        while s.poll_probe(&mut out).is_some() {}
    }
    assert_eq!(counts(&s)[0].state, "up");
}

#[test]
fn an_ipv6_backend_is_checked_by_neighbour_solicitation() {
    let target: std::net::Ipv6Addr = "fd00::2".parse().expect("address");
    let mut sp = spec(vec![BackendSpec {
        mac: None,
        ip: Some(IpAddr::V6(target)),
        vm: None,
        weight: 1,
    }]);
    sp.vip = "fd00::c8".parse().expect("address");
    let vmac = sp.vmac;
    let mut s = Services::new(&[sp]);
    s.resolve(|_| Some(mac(1)), |_| None, |_| false);
    let t0 = Instant::now();
    let local = |_: &Mac| Where::Local { ip: None, bytes: 0 };
    let mut out = [0u8; probe::PROBE_LEN];
    for k in 0..4 {
        s.tick(t0 + health::PROBE_EVERY * k, 1, false, local);
        let n = s.poll_probe(&mut out).expect("a solicitation");
        assert_eq!((n, out[54]), (86, 135));
        assert_eq!(&out[62..78], &target.octets(), "for the configured address");
    }
    assert_eq!(counts(&s)[0].state, "down", "three unanswered");
    for k in 4..8 {
        s.tick(t0 + health::PROBE_EVERY * k, 1, false, local);
        s.poll_probe(&mut out);
        let mut na = out;
        na[..6].copy_from_slice(&vmac);
        na[6..12].copy_from_slice(&mac(1));
        na[54] = 136;
        assert_eq!(s.handle_frame(&mut na), Verdict::Consumed);
    }
    assert_eq!(counts(&s)[0].state, "up");
}

#[test]
fn least_load_counts_a_backends_open_connections() {
    let mut sp = spec(backends(2, 1));
    sp.policy = Policy::LeastLoad;
    let mut s = Services::new(&[sp]);
    all_up(&mut s, 100);
    // Backend 1 holds 200 idle connections (no traffic to speak of), backend 2 none.
    report_open(&mut s, 1, true, 10, 200);
    report_open(&mut s, 2, true, 10, 0);
    all_up(&mut s, 101);
    assert_eq!(counts(&s)[0].open_connections, 200);
    // New flows go to backend 2 until the flows it was just given (counted at once)
    // make up the difference: 300 split about 50 / 250.
    let picks = split(&mut s, 300, 1000);
    assert!(
        (235..=265).contains(&picks[1]),
        "new flows go to the one with fewer: {picks:?}"
    );
    // Stale (no report for 4 s): the count no longer steers.
    all_up(&mut s, 105);
    assert_eq!(counts(&s)[0].open_connections, 0);
    let picks = split(&mut s, 300, 5000);
    assert!(picks[0] >= 100, "{picks:?}");
}

#[test]
fn a_local_backends_open_connections_are_reported() {
    let mut s = Services::new(&[spec(backends(2, 1))]);
    let local = |m: &Mac| {
        if *m == mac(1) {
            Where::Local { ip: None, bytes: 0 }
        } else {
            Where::Unknown
        }
    };
    s.tick(Instant::now(), 0, true, local);
    let mut macs = Vec::new();
    s.local_backends(&mut macs);
    assert_eq!(macs, vec![mac(1)]);
    s.set_open_tcp(&macs, &[42]);
    let mut body = [0u8; 1 + wire::MAX_ENTRIES * wire::ENTRY_LEN];
    let n = s.report(&mut body).expect("a local backend");
    let e: Vec<_> = wire::parse(&body[..n]).expect("valid").collect();
    assert_eq!((e.len(), e[0].open_tcp), (1, 42));
    assert_eq!(counts(&s)[0].open_connections, 42);
}

#[test]
fn a_backend_named_by_libvirt_is_resolved_on_its_host_and_learned_from_reports_elsewhere() {
    let named = |name: &str| BackendSpec {
        mac: None,
        ip: None,
        vm: Some(name.into()),
        weight: 1,
    };
    let sp = spec(vec![named("web1"), named("web2")]);
    // On web1's host: its libvirt names it (two NICs: the one on this LAN is taken).
    let mut here = Services::new(std::slice::from_ref(&sp));
    let domains = [
        ("web1".to_string(), vec![[2, 9, 9, 9, 9, 9], mac(1)]),
        ("db1".to_string(), vec![mac(7)]),
    ];
    let named_here = |n: &str| {
        domains
            .iter()
            .find(|(d, _)| d == n)
            .map(|(_, m)| m.as_slice())
    };
    here.resolve(|_| None, named_here, |m| *m == mac(1));
    let local = |m: &Mac| {
        if *m == mac(1) {
            Where::Local { ip: None, bytes: 0 }
        } else {
            Where::Unknown
        }
    };
    here.tick(Instant::now(), 0, true, local);
    let st = counts(&here);
    assert_eq!(
        (st[0].backend.as_str(), st[0].mac.as_deref()),
        ("web1", Some("02:00:00:01:00:00"))
    );
    assert_eq!(
        (st[1].mac.as_deref(), st[1].state.as_str()),
        (None, "unknown")
    );
    let mut body = [0u8; 1 + wire::MAX_ENTRIES * wire::ENTRY_LEN];
    let n = here.report(&mut body).expect("web1 is local");
    // On the client's host, whose libvirt knows neither: web1's MAC comes with the
    // report, found by the name's hash; web2 stays unknown and takes no flows.
    let mut there = Services::new(&[sp]);
    there.resolve(|_| None, |_| None, |_| false);
    there
        .handle_report(PeerId::at(0), &body[..n])
        .expect("valid");
    all_up(&mut there, 0);
    let st = counts(&there);
    assert_eq!(st[0].mac.as_deref(), Some("02:00:00:01:00:00"));
    assert_eq!(st[0].state, "up");
    assert_eq!(st[1].state, "unknown");
    assert_eq!(split(&mut there, 50, 1000), vec![50, 0]);
    // Both hosts built the same table: the names are the keys.
    assert_eq!(here.list[0].table, there.list[0].table);
}
