//! The forwarding core's receive path on arbitrary datagrams: dropped and counted, never a
//! panic, whatever the header claims.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vmvpn::crypto::{LanSecret, lan_id};
use vmvpn::flood::FloodMode;
use vmvpn::forward::{Engine, HostIdentity, LanSpec, RxAction, Timers};

fuzz_target!(|data: &[u8]| {
    let spec = LanSpec {
        name: "lan1".into(),
        id: lan_id("lan1"),
        secret: LanSecret([7; 32]),
        max_frame: 1518,
        peers: vec!["10.0.0.2:7401".parse().expect("addr")],
        mac_capacity: 16,
        mac_max_age: Duration::from_secs(300),
        segment: "192.168.0.0/24".into(),
        tap: "fz0".into(),
        mtu: 1500,
        flood: FloodMode::Auto,
        cipher: vmvpn::crypto::Cipher::default(),
        group: Some("239.77.0.1:7401".parse().expect("group")),
    };
    let host = HostIdentity {
        id: 1,
        name: "fuzz".into(),
        secret: [3; 32],
        start_ns: 1,
        underlay: Some(("10.0.0.1".parse().expect("ip"), 24)),
    };
    let mut e = Engine::new(host, vec![spec], Timers::default());
    let mut buf = data.to_vec();
    let from = "10.0.0.2:7401".parse().expect("from");
    let multicast = data.first().is_some_and(|b| b & 1 == 1);
    if let RxAction::Tap { frame, .. } = e.on_datagram(from, multicast, &mut buf, Instant::now()) {
        // Only an authentic frame may reach a TAP; without the peer's keys nothing does.
        panic!("unauthenticated bytes reached the TAP: {:?}", &buf[frame]);
    }
});
