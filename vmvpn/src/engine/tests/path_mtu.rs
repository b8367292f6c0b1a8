//! Frames larger than the path: overlay fragments, path MTU discovery without ICMP, and
//! MSS clamping.

use super::sim::*;

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
