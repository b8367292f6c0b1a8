//! `vmvpn-corebench`: the forwarding core alone, without syscalls, so the cost per frame
//! is known apart from the kernel: known unicast (seal on one engine, open on the other),
//! with and without per-VM accounting, with rate limits checked, and with a service address
//! on the LAN (frames to it, and frames not to it); flooding to 10, 100 and 1000 peers; MAC lookups in
//! a 100 000-entry database; splitting a 64 KB TSO frame into segments and coalescing
//! them back (the offload paths); a 64 KB TSO frame's whole send path, its segments
//! counted one by one or once per frame. Wall-clock figures on a shared machine; run it under
//! `valgrind --tool=callgrind` for instruction counts that do not drift.
//!
//! usage: vmvpn-corebench [OUT.json] [--quick]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmvpn::engine::flood::FloodMode;
use vmvpn::engine::limits::{Direction, LimitSpec};
use vmvpn::engine::macdb::{Location, MacDb};
use vmvpn::engine::service::{BackendSpec, Policy, ServiceSpec, virtual_mac};
use vmvpn::engine::{
    Accounting, Engine, HostIdentity, LanId, LanSpec, PeerId, RxAction, TapAction, Timers,
    buffer_len,
};
use vmvpn::offload::gro::Coalescer;
use vmvpn::offload::gso::{self, VnetHdr};
use vmvpn::proto::HEADER_LEN;
use vmvpn::proto::crypto::{Cipher, LanSecret, lan_id};

const MAX_FRAME: usize = 1518;
/// Datagrams the data plane reads in one `recvmmsg`.
const RX_BATCH: u64 = vmvpn::io::udp::BATCH as u64;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7401))
}

/// Rate limits on 8 VMs (the two of the unicast runs among them, last) and on the LAN,
/// each direction, at a rate never reached: what checking them costs.
fn bench_limits() -> Vec<LimitSpec> {
    let mut v: Vec<LimitSpec> = (10..16u8)
        .chain([1, 2])
        .map(|k| LimitSpec {
            mac: Some([2, 0, 0, 0, 0, k]),
            rate_bps: 1 << 50,
            burst_bytes: 1 << 30,
            direction: Direction::Both,
            shape_ms: 0,
            vm: None,
        })
        .collect();
    v.push(LimitSpec {
        mac: None,
        rate_bps: 1 << 50,
        burst_bytes: 1 << 30,
        direction: Direction::Both,
        shape_ms: 0,
        vm: None,
    });
    v
}

/// A service on the LAN whose two backends are VMs 2 and 3 (least-load, every port).
fn bench_service() -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        vip: std::net::IpAddr::from([192, 168, 0, 200]),
        vmac: virtual_mac("lan1", "web"),
        backends: [2u8, 3]
            .iter()
            .map(|&k| BackendSpec {
                mac: Some([2, 0, 0, 0, 0, k]),
                ip: None,
                vm: None,
                weight: 1,
            })
            .collect(),
        ports: Vec::new(),
        policy: Policy::LeastLoad,
        probe_from: None,
    }
}

/// What a unicast run has of services.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Svc {
    /// None on the LAN.
    Off,
    /// One on the LAN; the frames are not to it.
    Other,
    /// One on the LAN; the frames are to it (new flows' first frames and later ones).
    To,
}

fn engine_limited(
    i: usize,
    peers: Vec<SocketAddr>,
    cipher: Cipher,
    flows: bool,
    limits: Vec<LimitSpec>,
) -> Engine {
    engine_with(i, peers, cipher, flows, limits, Vec::new())
}

fn engine_with(
    i: usize,
    peers: Vec<SocketAddr>,
    cipher: Cipher,
    flows: bool,
    limits: Vec<LimitSpec>,
    services: Vec<ServiceSpec>,
) -> Engine {
    let mut e = Engine::new(
        HostIdentity {
            id: 1000 + i as u32,
            name: format!("h{i}"),
            secret: [(i % 251) as u8 + 1; 32],
            start_ns: 1,
            underlay: Some((addr(i).ip(), 8)),
        },
        vec![LanSpec {
            name: "lan1".into(),
            id: lan_id("lan1"),
            secret: LanSecret([9; 32]),
            max_frame: MAX_FRAME,
            peers,
            mac_capacity: 200_000,
            mac_max_age: Duration::from_secs(3600),
            segment: "192.168.0.0/16".into(),
            tap: "b0".into(),
            mtu: 1500,
            flood: FloodMode::Unicast,
            group: None,
            cipher,
            limits,
            services,
        }],
        Timers::default(),
    );
    e.set_accounting(Accounting {
        flows,
        probes: false,
        ..Accounting::default()
    });
    // The core alone, with the frame sizes measured before the MTU work: a 1454-byte frame
    // fits one datagram (on a real 1500-byte path it would be two fragments, and TCP's
    // segments are clamped to 1436 bytes).
    e.set_underlay_mtu(1600);
    e
}

/// Engine 0 with `n` peers, each peer an engine with engine 0 as its only peer; all
/// handshakes done by passing datagrams in memory.
fn star(n: usize, cipher: Cipher, flows: bool) -> Vec<Engine> {
    star_limited(n, cipher, flows, false)
}

/// [`star`], with [`bench_limits`] on every engine when `limited`.
fn star_limited(n: usize, cipher: Cipher, flows: bool, limited: bool) -> Vec<Engine> {
    star_with(n, cipher, flows, limited, false)
}

/// [`star_limited`], with [`bench_service`] on engine 0 when `service`.
fn star_with(n: usize, cipher: Cipher, flows: bool, limited: bool, service: bool) -> Vec<Engine> {
    let limits = || if limited { bench_limits() } else { Vec::new() };
    let services = if service {
        vec![bench_service()]
    } else {
        Vec::new()
    };
    let mut hosts = vec![engine_with(
        0,
        (1..=n).map(addr).collect(),
        cipher,
        flows,
        limits(),
        services,
    )];
    for i in 1..=n {
        // The receivers count what they deliver as the sender counts what it seals.
        hosts.push(engine_limited(i, vec![addr(0)], cipher, flows, limits()));
    }
    let index: HashMap<SocketAddr, usize> = (0..=n).map(|i| (addr(i), i)).collect();
    let mut now = Instant::now();
    let mut buf = vec![0u8; 4096];
    // Hellos, then path MTU probes and their acks: one timer period per round, as the
    // runtime would run them (a second call at the same instant has nothing due).
    for _ in 0..6 {
        now += vmvpn::engine::TICK;
        for h in hosts.iter_mut() {
            h.handle_timeout(now);
        }
        let mut queue = Vec::new();
        for (i, h) in hosts.iter_mut().enumerate() {
            while let Some((to, len)) = h.poll_transmit(&mut buf) {
                queue.push((i, to, buf[..len].to_vec()));
            }
        }
        for (from, to, mut d) in queue {
            if let Some(&j) = index.get(&to) {
                let _ = hosts[j].handle_datagram(addr(from), false, &mut d, now);
            }
        }
    }
    hosts
}

/// An IPv4/TCP frame from VM `src` to VM `dst` with `payload` bytes.
fn tcp_frame(src: u8, dst: u8, payload: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src, 8, 0];
    let total = (40 + payload) as u16;
    f.extend_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, src, 10, 0, 0, dst,
    ]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.resize(14 + 40 + payload, 0);
    f
}

/// The offload paths on a 64,000-byte TCP frame at MSS 1448: TSO split on the sender
/// (headers and checksum per segment), GRO coalescing on the receiver (checks, checksum
/// verification, copy).
fn offload(iters: u64) -> Value {
    const PAYLOAD: usize = 64_000;
    let mut f = tcp_frame(1, 2, PAYLOAD);
    let h = VnetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut out = vec![0u8; 2048];
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let n = gso::split(&h, &mut f, &mut out, 0, |b, n| segs.push(b[..n].to_vec()))
        .unwrap_or_else(|e| panic!("split: {e:?}"));
    let t = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..iters {
        gso::split(&h, &mut f, &mut out, 0, |_, n| bytes += n)
            .unwrap_or_else(|e| panic!("split: {e:?}"));
    }
    let split_t = t.elapsed();
    assert_eq!(
        bytes,
        segs.iter().map(Vec::len).sum::<usize>() * iters as usize
    );
    // Each segment's checksum summed again (a frame from an older peer), or taken as its
    // sender's (`FLAG_CHECKSUMS`, what a peer's TSO segments carry).
    let coalesce = |summed: bool| {
        let mut c = Coalescer::new();
        let mut written = 0usize;
        let t = Instant::now();
        for _ in 0..iters {
            for s in &segs {
                assert!(c.push(0, s, summed, |_, b, _| written += b.len()));
            }
            c.flush(|_, b, _| written += b.len());
        }
        let took = t.elapsed();
        assert_eq!(c.stats().segments, n as u64 * iters, "every segment merged");
        assert!(written > PAYLOAD * iters as usize);
        took
    };
    let gro_t = coalesce(false);
    let summed_t = coalesce(true);
    let gbit = |d: Duration| per_sec(iters, d) * PAYLOAD as f64 * 8.0 / 1e9;
    json!({
        "payload_bytes": PAYLOAD, "segments": n,
        "split_us_per_frame": split_t.as_secs_f64() * 1e6 / iters as f64,
        "coalesce_us_per_frame": gro_t.as_secs_f64() * 1e6 / iters as f64,
        "coalesce_summed_us_per_frame": summed_t.as_secs_f64() * 1e6 / iters as f64,
        "split_gbit_per_s": gbit(split_t), "coalesce_gbit_per_s": gbit(gro_t),
    })
}

/// The send path of a 64,000-byte TCP frame read from an offload TAP: cut into segments at
/// MSS 1448, each handled by the core (limits, MAC lookup, seal) as the data plane does.
/// With `burst`, the VM and flow tables count the frame once (as the data plane does
/// since the per-TSO-frame accounting); without, each segment is counted on its own.
fn tso_send(cipher: Cipher, flows: bool, burst: bool, iters: u64) -> Value {
    const PAYLOAD: usize = 64_000;
    let mut h = star(1, cipher, flows);
    let now = Instant::now();
    let (a, b) = h.split_at_mut(1);
    let (e0, e1) = (&mut a[0], &mut b[0]);
    let back = tcp_frame(2, 1, 0);
    let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
    buf[HEADER_LEN..HEADER_LEN + back.len()].copy_from_slice(&back);
    let n = match e1.handle_tap_frame(LanId(0), &mut buf, back.len(), now) {
        TapAction::Unicast(_, n) => n,
        TapAction::Flood { len, .. } => len,
        other => panic!("learning frame: {other:?}"),
    };
    let _ = e0.handle_datagram(addr(1), false, &mut buf[..n], now);
    let mut f = tcp_frame(1, 2, PAYLOAD);
    let vh = VnetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let (mut segs, mut sealed) = (0u64, 0u64);
    let t = Instant::now();
    for _ in 0..iters {
        if burst {
            e0.begin_burst(LanId(0), &f);
        }
        segs += gso::split(&vh, &mut f, &mut buf, HEADER_LEN, |out, len| {
            if let TapAction::Unicast(..) = e0.handle_tap_frame(LanId(0), out, len, now) {
                sealed += 1;
            }
        })
        .unwrap_or_else(|e| panic!("split: {e:?}")) as u64;
        if burst {
            e0.end_burst(LanId(0));
        }
    }
    let d = t.elapsed();
    assert_eq!(sealed, segs, "every segment must be sealed");
    json!({
        "cipher": cipher.name(), "accounting": flows, "once_per_tso_frame": burst,
        "segments_per_frame": segs / iters.max(1),
        "ns_per_segment": d.as_nanos() as f64 / segs.max(1) as f64,
        "tx_gbit_per_s": per_sec(iters, d) * PAYLOAD as f64 * 8.0 / 1e9,
    })
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Unicast: seal on host 0, open on host 1, `iters` frames of `payload` bytes.
fn unicast(
    cipher: Cipher,
    flows: bool,
    exports: bool,
    limited: bool,
    svc: Svc,
    payload: usize,
    iters: u64,
) -> Value {
    let mut h = star_with(1, cipher, flows, limited, svc != Svc::Off);
    if exports {
        // sFlow at 1 in 1000 and IPFIX records, on both ends (tx samples at e0, rx at e1).
        for e in &mut h {
            e.set_sflow(Some(1000), 7);
            e.set_flow_export(Some(60));
        }
    }
    let now = Instant::now();
    let (a, b) = h.split_at_mut(1);
    let (e0, e1) = (&mut a[0], &mut b[0]);
    // Teach both sides where the VMs are.
    let back = tcp_frame(2, 1, 0);
    let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
    buf[HEADER_LEN..HEADER_LEN + back.len()].copy_from_slice(&back);
    let n = match e1.handle_tap_frame(LanId(0), &mut buf, back.len(), now) {
        TapAction::Unicast(_, n) => n,
        TapAction::Flood { len, .. } => len,
        TapAction::Fragments { .. } => panic!("the learning frame is small"),
        TapAction::Unsealed(..) => panic!("sealed in the core unless asked otherwise"),
        TapAction::Drop(r) => panic!("learning frame dropped: {r:?}"),
        TapAction::Limited | TapAction::Reply(_) | TapAction::Consumed => {
            panic!("no limits or services here")
        }
    };
    let _ = e0.handle_datagram(addr(1), false, &mut buf[..n], now);
    let mut now = now;
    if svc != Svc::Off {
        // The backends located (VM 2 behind host 1; VM 3 is never seen, so it is not up):
        // a timer tick runs the services (past the ticks of the handshakes).
        now += vmvpn::engine::TICK * 10;
        e0.handle_timeout(now);
        while e0.poll_transmit(&mut buf).is_some() {}
    }
    let mut f = tcp_frame(1, 2, payload);
    if svc == Svc::To {
        f[..6].copy_from_slice(&virtual_mac("lan1", "web"));
    }
    let (mut sealed_t, mut opened_t) = (Duration::ZERO, Duration::ZERO);
    let mut delivered = 0u64;
    for i in 0..iters {
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        if svc == Svc::To && i % 16 == 0 {
            // Every 16th frame opens a new flow (another source port): a pin is made.
            let port = (i / 16) as u16;
            buf[HEADER_LEN + 34..HEADER_LEN + 36].copy_from_slice(&port.to_be_bytes());
        }
        let t0 = Instant::now();
        let n = match e0.handle_tap_frame(LanId(0), &mut buf, f.len(), now) {
            TapAction::Unicast(_, n) => n,
            other => panic!("not unicast: {other:?}"),
        };
        let t1 = Instant::now();
        if let RxAction::Tap { .. } = e1.handle_datagram(addr(0), false, &mut buf[..n], now) {
            delivered += 1;
        }
        if i % RX_BATCH == RX_BATCH - 1 {
            // As the data plane does after each receive batch.
            e1.end_runs();
        }
        opened_t += t1.elapsed();
        sealed_t += t1 - t0;
    }
    assert_eq!(delivered, iters, "every frame must arrive");
    json!({
        "cipher": cipher.name(), "accounting": flows, "exports": exports, "limits": limited,
        "service": match svc { Svc::Off => "none", Svc::Other => "not to it", Svc::To => "to it" },
        "frame_bytes": f.len(),
        "tx_ns_per_frame": sealed_t.as_nanos() as f64 / iters as f64,
        "rx_ns_per_frame": opened_t.as_nanos() as f64 / iters as f64,
        "tx_frames_per_s": per_sec(iters, sealed_t),
        "rx_frames_per_s": per_sec(iters, opened_t),
        "tx_gbit_per_s": per_sec(iters, sealed_t) * f.len() as f64 * 8.0 / 1e9,
    })
}

fn flood(peers: usize, iters: u64) -> Value {
    let mut h = star(peers, Cipher::Aes256Gcm, true);
    let now = Instant::now();
    let e0 = &mut h[0];
    let mut f = tcp_frame(1, 2, 64);
    f[..6].copy_from_slice(&[0xff; 6]);
    let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
    let mut copies = 0usize;
    let t0 = Instant::now();
    for _ in 0..iters {
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        if let TapAction::Flood { to, .. } = e0.handle_tap_frame(LanId(0), &mut buf, f.len(), now) {
            copies += to.len();
        }
    }
    let d = t0.elapsed();
    assert_eq!(copies, peers * iters as usize, "one copy per peer");
    json!({"peers": peers, "ns_per_frame": d.as_nanos() as f64 / iters as f64,
           "frames_per_s": per_sec(iters, d), "copies_per_frame": peers})
}

/// What the alarm task asks of the data plane once a second (the `/metrics` scrape's
/// snapshot: every LAN's status, the VM table, the RTT histograms), with `peers` peers and
/// `vms` VMs; then the alarm evaluation of it, which runs off the data plane.
fn snapshot(peers: usize, vms: usize, iters: u32) -> Value {
    let mut h = star(peers, Cipher::Aes256Gcm, true);
    let now = Instant::now();
    let e0 = &mut h[0];
    let mut buf = vec![0u8; buffer_len(MAX_FRAME)];
    for i in 0..vms {
        let mut f = tcp_frame(1, 2, 64);
        f[6..12].copy_from_slice(&[2, 1, 0, 0, (i >> 8) as u8, i as u8]);
        buf[HEADER_LEN..HEADER_LEN + f.len()].copy_from_slice(&f);
        let _ = e0.handle_tap_frame(LanId(0), &mut buf, f.len(), now);
    }
    let t0 = Instant::now();
    let mut n = 0usize;
    let mut last = None;
    for _ in 0..iters {
        let lans = e0.lan_status(now);
        let traffic = e0.traffic(None, Some(0));
        let rtt = e0.rtt_buckets();
        n += lans.len() + traffic.len() + rtt.len();
        last = Some((lans, traffic));
    }
    let data_plane = t0.elapsed() / iters;
    assert!(last.is_some());
    // What the alarm task asks for instead: the figures the default rules read.
    let rules = vmvpn::alarms::rules::defaults();
    let needs = vmvpn::alarms::series::needs(&rules);
    let mut figures = vmvpn::engine::figures::Figures::default();
    e0.alarm_figures(needs, now, &mut figures);
    let t0 = Instant::now();
    for _ in 0..iters {
        e0.alarm_figures(needs, now, &mut figures);
        n += figures.peers.len();
    }
    let light = t0.elapsed() / iters;
    let mut ev = vmvpn::alarms::eval::Evaluator::new(rules);
    let mut windows = vmvpn::alarms::series::Windows::default();
    let t0 = Instant::now();
    let mut samples = 0;
    for k in 0..iters {
        let at = now + Duration::from_secs(u64::from(k));
        let s = vmvpn::alarms::series::samples(&figures, &mut windows, at);
        samples = s.len();
        let _ = ev.handle_snapshot(&s, at);
    }
    let eval = t0.elapsed() / iters;
    assert!(n > 0);
    json!({"peers": peers, "vms": vms, "data_plane_us": data_plane.as_secs_f64() * 1e6,
           "alarm_figures_us": light.as_secs_f64() * 1e6,
           "alarm_eval_us": eval.as_secs_f64() * 1e6, "samples": samples})
}

fn mac_lookups(entries: usize, iters: u64) -> Value {
    let now = Instant::now();
    let mut db = MacDb::new(entries, Duration::from_secs(3600));
    let mac = |i: usize| {
        [
            2,
            0,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ]
    };
    for i in 0..entries {
        db.learn(mac(i), Location::Peer(PeerId((i % 64) as u32)), now);
    }
    let mut x: u64 = 88172645463325252;
    let mut found = 0u64;
    let t0 = Instant::now();
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if db
            .lookup(&mac((x % entries as u64) as usize), now)
            .is_some()
        {
            found += 1;
        }
    }
    let d = t0.elapsed();
    assert_eq!(found, iters);
    json!({"entries": entries, "ns_per_lookup": d.as_nanos() as f64 / iters as f64})
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let k = if quick { 1 } else { 10 };
    let out = args.get(1).filter(|a| !a.starts_with('-'));
    let mut uni = Vec::new();
    for (cipher, flows, exports, limited, svc) in [
        (Cipher::Aes256Gcm, true, false, false, Svc::Off),
        (Cipher::Aes256Gcm, false, false, false, Svc::Off),
        (Cipher::Aes256Gcm, true, true, false, Svc::Off),
        (Cipher::None, true, false, false, Svc::Off),
        (Cipher::None, false, false, false, Svc::Off),
        (Cipher::None, true, true, false, Svc::Off),
        (Cipher::None, false, false, true, Svc::Off),
        (Cipher::None, false, false, false, Svc::Other),
        (Cipher::None, false, false, false, Svc::To),
    ] {
        for payload in [1400, 64] {
            uni.push(unicast(
                cipher,
                flows,
                exports,
                limited,
                svc,
                payload,
                20_000 * k,
            ));
        }
    }
    let floods: Vec<Value> = [10, 100, 1000]
        .iter()
        .map(|&n| flood(n, 2_000 * k))
        .collect();
    let macs = mac_lookups(100_000, 100_000 * k);
    let snaps: Vec<Value> = [(100, 256), (1000, 1024)]
        .iter()
        .map(|&(p, v)| snapshot(p, v, 20 * k as u32))
        .collect();
    let off = offload(500 * k);
    let tso: Vec<Value> = [
        (Cipher::Aes256Gcm, false, false),
        (Cipher::Aes256Gcm, true, false),
        (Cipher::Aes256Gcm, true, true),
        (Cipher::None, false, false),
        (Cipher::None, true, false),
        (Cipher::None, true, true),
    ]
    .iter()
    .map(|&(c, flows, burst)| tso_send(c, flows, burst, 400 * k))
    .collect();
    println!(
        "| unicast frame | cipher | accounting | seal+send path ns | receive path ns | Gbit/s one core (tx) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for u in &uni {
        println!(
            "| {} B | {} | {} | {:.0} | {:.0} | {:.1} |",
            u["frame_bytes"],
            u["cipher"].as_str().unwrap_or(""),
            match (
                u["accounting"] == true,
                u["exports"] == true,
                u["limits"] == true,
                u["service"].as_str().unwrap_or("none"),
            ) {
                (true, true, _, _) => "on + sFlow 1:1000 + IPFIX".to_string(),
                (true, false, _, _) => "on".to_string(),
                (false, _, true, _) => "off, 8 VM limits + a LAN limit".to_string(),
                (false, _, _, "none") => "off".to_string(),
                (false, _, _, svc) => format!("off, a service on the LAN, frames {svc}"),
            },
            u["tx_ns_per_frame"].as_f64().unwrap_or(0.0),
            u["rx_ns_per_frame"].as_f64().unwrap_or(0.0),
            u["tx_gbit_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    println!("\n| flood to | ns per frame (core only) | frames/s |\n| --- | --- | --- |");
    for f in &floods {
        println!(
            "| {} peers | {:.0} | {:.0} |",
            f["peers"],
            f["ns_per_frame"].as_f64().unwrap_or(0.0),
            f["frames_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\n| snapshot | full scrape (/metrics), on the data plane | the alarms' figures (default rules), on the data plane | alarm evaluation (off it) | samples |\n| --- | --- | --- | --- | --- |"
    );
    for s in &snaps {
        println!(
            "| {} peers, {} VMs | {:.0} µs | {:.1} µs | {:.0} µs | {} |",
            s["peers"],
            s["vms"],
            s["data_plane_us"].as_f64().unwrap_or(0.0),
            s["alarm_figures_us"].as_f64().unwrap_or(0.0),
            s["alarm_eval_us"].as_f64().unwrap_or(0.0),
            s["samples"]
        );
    }
    println!(
        "\nMAC lookup, {} entries: {:.0} ns",
        macs["entries"],
        macs["ns_per_lookup"].as_f64().unwrap_or(0.0)
    );
    println!(
        "\n64 KB TCP frame, {} segments: TSO split {:.1} us ({:.1} Gbit/s), GRO coalesce {:.1} us ({:.1} Gbit/s), {:.1} us with the sender's checksums",
        off["segments"],
        off["split_us_per_frame"].as_f64().unwrap_or(0.0),
        off["split_gbit_per_s"].as_f64().unwrap_or(0.0),
        off["coalesce_us_per_frame"].as_f64().unwrap_or(0.0),
        off["coalesce_gbit_per_s"].as_f64().unwrap_or(0.0),
        off["coalesce_summed_us_per_frame"].as_f64().unwrap_or(0.0)
    );
    println!(
        "\n| 64 KB TSO frame sent (split, then each segment through the core) | cipher | accounting | ns per segment | Gbit/s one core |\n| --- | --- | --- | --- | --- |"
    );
    for t in &tso {
        println!(
            "| {} segments | {} | {} | {:.0} | {:.1} |",
            t["segments_per_frame"],
            t["cipher"].as_str().unwrap_or(""),
            match (t["accounting"] == true, t["once_per_tso_frame"] == true) {
                (false, _) => "off",
                (true, false) => "on, per segment",
                (true, true) => "on, once per TSO frame",
            },
            t["ns_per_segment"].as_f64().unwrap_or(0.0),
            t["tx_gbit_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(p) = out {
        let doc = json!({"unicast": uni, "flood": floods, "mac_lookup": macs, "offload": off, "tso_send": tso, "snapshot": snaps});
        if let Err(e) = std::fs::write(p, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            eprintln!("cannot write {p}: {e}");
            std::process::exit(1);
        }
    }
}
