//! Services on arbitrary input: frames from a VM (ARP, IPv6 neighbour discovery, flows to
//! a service's MAC) and peers' service-state reports never panic; a frame keeps its
//! length; an answer is written only in place.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use vmvpn::engine::PeerId;
use vmvpn::engine::service::{
    BackendSpec, Policy, ServiceSpec, Services, Verdict, Where, virtual_mac,
};

fuzz_target!(|data: &[u8]| {
    let spec = |name: &str, vip: &str, from: &str, policy| ServiceSpec {
        name: name.into(),
        vip: vip.parse().expect("address"),
        vmac: virtual_mac("lan1", name),
        backends: (1..=3u8)
            .map(|k| BackendSpec {
                mac: Some([2, 0, 0, k, 0, 0]),
                ip: None,
                vm: None,
                weight: u32::from(k),
            })
            .collect(),
        ports: vec![80],
        policy,
        probe_from: Some(from.parse().expect("address")),
    };
    let mut s = Services::new(&[
        spec("web", "192.168.1.200", "192.168.1.250", Policy::LeastLoad),
        spec("web6", "fd00::200", "fd00::250", Policy::Hash),
    ]);
    let t0 = Instant::now();
    s.tick(t0, 0, true, |m| Where::Peer {
        peer: PeerId::at(usize::from(m[3] % 2)),
        up: m[3] != 3,
        quiet: false,
        rtt_us: Some(300),
    });
    // Split on a marker: each piece is a frame, or (odd pieces starting 0xff) a report.
    for (i, piece) in data.split(|b| *b == 0xa5).enumerate() {
        if piece.first() == Some(&0xff) {
            let _ = s.handle_report(PeerId::at(i % 2), &piece[1..]);
            continue;
        }
        let mut frame = piece.to_vec();
        // Half the frames go to the services' MACs, as a client's would.
        if i % 2 == 1 && frame.len() >= 6 {
            let to = if i % 4 == 1 { "web" } else { "web6" };
            frame[..6].copy_from_slice(&virtual_mac("lan1", to));
        }
        let len = frame.len();
        let v = s.handle_frame(&mut frame);
        assert_eq!(frame.len(), len);
        if v == Verdict::Rewritten {
            assert!(frame[..6] == [2, 0, 0, 1, 0, 0] || frame[..6] == [2, 0, 0, 2, 0, 0]);
        }
        if i % 8 == 0 {
            // Now and then the backends are local: probes go out, answers come in.
            let local = i % 16 == 8;
            let at = t0 + std::time::Duration::from_millis(500 * i as u64);
            s.tick(at, i as u64, true, |m| {
                if local {
                    Where::Local {
                        ip: Some(std::net::IpAddr::from([192, 168, 1, m[3]])),
                        bytes: i as u64,
                    }
                } else {
                    Where::Unknown
                }
            });
            let mut out = [0u8; 128];
            while s.poll_probe(&mut out).is_some() {}
        }
    }
    let mut out = [0u8; 2048];
    let _ = s.report(&mut out);
    while s.poll_probe(&mut out).is_some() {}
    let _ = s.status(|_| String::new());
});
