//! The forwarding core's receive path, past the handshake. Two engines complete a real
//! hello exchange once, at start; then each input is one of:
//! - a frame that host B's VM sends: B seals it (cut into overlay fragments when it does
//!   not fit one datagram) and A opens it (the authenticated path: MAC learning, per-VM
//!   accounting, flows, reassembly), and what reaches A's TAP must be that frame (its
//!   length; a SYN's MSS may be clamped on the way);
//! - one of B's genuine sealed datagrams (data, flood, probe, keepalive, hello) with bytes
//!   flipped, cut or replayed: dropped and counted, never delivered;
//! - raw bytes from B's address.
//!
//! A's datagrams are opened by A's engine, or first beside it as the open thread does
//! (`[host] threads = 4`, `engine::opened`).
//!
//! Never a panic, and nothing unauthenticated reaches a TAP.
#![no_main]
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vmvpn::proto::crypto::{LanSecret, lan_id};
use vmvpn::engine::flood::FloodMode;
use vmvpn::engine::opened::{PreOpen, open_data};
use vmvpn::engine::{Engine, HostIdentity, LanId, LanSpec, RxAction, TapAction, Timers, buffer_len};
use vmvpn::proto::HEADER_LEN;

const MAX_FRAME: usize = 9018;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7401))
}

fn engine(i: usize) -> Engine {
    let spec = LanSpec {
        name: "lan1".into(),
        id: lan_id("lan1"),
        secret: LanSecret([7; 32]),
        max_frame: MAX_FRAME,
        peers: vec![addr(1 - i)],
        mac_capacity: 64,
        mac_max_age: Duration::from_secs(300),
        segment: "192.168.0.0/24".into(),
        tap: format!("fz{i}"),
        mtu: 9000,
        flood: FloodMode::Unicast,
        cipher: vmvpn::proto::crypto::Cipher::default(),
        limits: Vec::new(),
        services: Vec::new(),
        group: None,
    };
    let host = HostIdentity {
        id: 100 + i as u32,
        name: format!("h{i}"),
        secret: [i as u8 + 3; 32],
        start_ns: 1,
        underlay: Some((addr(i).ip(), 24)),
    };
    Engine::new(host, vec![spec], Timers::default())
}

struct World {
    e: [Engine; 2],
    now: Instant,
    /// Genuine datagrams B sent to A, of every kind seen.
    templates: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl World {
    fn new() -> Self {
        let mut w = World {
            e: [engine(0), engine(1)],
            now: Instant::now(),
            templates: Vec::new(),
            buf: vec![0u8; buffer_len(MAX_FRAME)],
        };
        // Handshake, then a few seconds of probes and keepalives to collect templates.
        for _ in 0..40 {
            w.now += Duration::from_millis(100);
            for e in &mut w.e {
                e.handle_timeout(w.now);
            }
            w.exchange(true);
        }
        assert!(w.templates.len() >= 3, "the handshake did not complete");
        w
    }

    /// Deliver everything both engines want to send until quiet.
    fn exchange(&mut self, collect: bool) {
        let mut out = vec![0u8; 65_536];
        for _ in 0..8 {
            let mut any = false;
            for from in 0..2 {
                while let Some((to, n)) = self.e[from].poll_transmit(&mut out) {
                    any = true;
                    let dst = usize::from(to == addr(1));
                    let mut b = out[..n].to_vec();
                    if collect && from == 1 && self.templates.len() < 64 {
                        self.templates.push(b.clone());
                    }
                    let _ = self.e[dst].handle_datagram(addr(from), false, &mut b, self.now);
                }
            }
            if !any {
                return;
            }
        }
    }
}

/// A datagram from B to A; `beside`: opened first as the open thread would
/// (`[host] threads = 4`), with a snapshot of A's keys.
fn receive<'a>(
    a: &'a mut Engine,
    d: &mut [u8],
    multicast: bool,
    now: Instant,
    beside: bool,
) -> RxAction<'a> {
    let pre = if beside {
        open_data(&a.rx_keys(), d)
    } else {
        PreOpen::No
    };
    a.handle_datagram_opened(addr(1), multicast, d, now, now, pre)
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    WORLD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let w = slot.get_or_insert_with(World::new);
        w.now += Duration::from_millis(u64::from(mode >> 2));
        match mode % 3 {
            0 => {
                // B's VM sends `rest` as a frame; A must deliver exactly it, or drop it.
                let len = rest.len().min(MAX_FRAME);
                w.buf[HEADER_LEN..HEADER_LEN + len].copy_from_slice(&rest[..len]);
                let now = w.now;
                // Half the time the data is left for a send thread to seal, as with
                // `[host] threads = 2`.
                w.e[1].seal_elsewhere(mode & 4 != 0);
                // Half the time its flows are labelled for flow ports (`[host] flow_ports`).
                w.e[1].spread_flows(if mode & 16 != 0 { 15 } else { 0 });
                let sealed: Vec<Vec<u8>> = match w.e[1].handle_tap_frame(LanId(0), &mut w.buf, len, now) {
                    TapAction::Unicast(_, n) => vec![w.buf[..n].to_vec()],
                    TapAction::Unsealed(_, n, key) => match key.seal(&mut w.buf[..n]) {
                        Some(n) => vec![w.buf[..n].to_vec()],
                        None => panic!("an unsealed datagram too short to seal"),
                    },
                    TapAction::Fragments { len: n, seg, .. } => {
                        w.buf[..n].chunks(seg).map(<[u8]>::to_vec).collect()
                    }
                    TapAction::Flood { len: n, seg, to, .. } => to
                        .iter()
                        .flat_map(|_| w.buf[..n].chunks(seg).map(<[u8]>::to_vec))
                        .collect(),
                    TapAction::Drop(_) | TapAction::Limited | TapAction::Reply(_) | TapAction::Consumed => {
                        Vec::new()
                    }
                };
                for mut d in sealed {
                    match receive(&mut w.e[0], &mut d, false, now, mode & 8 != 0) {
                        RxAction::Tap { frame, .. } => {
                            assert_eq!(d[frame].len(), len, "A delivered a frame of another length");
                        }
                        RxAction::TapReassembled { .. } => {
                            assert_eq!(w.e[0].reassembled().len(), len, "A reassembled a frame of another length");
                        }
                        _ => {}
                    }
                }
            }
            1 => {
                // A genuine datagram, flipped, cut or replayed as it is.
                let Some((&pick, edits)) = rest.split_first() else {
                    return;
                };
                let mut d = w.templates[usize::from(pick) % w.templates.len()].clone();
                for e in edits.chunks(3) {
                    match e {
                        [0, n, ..] => d.truncate(usize::from(*n)),
                        [p, hi, x] => {
                            let i = (usize::from(*p) | usize::from(*hi) << 8) % d.len().max(1);
                            if let Some(b) = d.get_mut(i) {
                                *b ^= x;
                            }
                        }
                        _ => d.extend_from_slice(e),
                    }
                }
                match receive(&mut w.e[0], &mut d, false, w.now, mode & 8 != 0) {
                    RxAction::Tap { frame, .. } => {
                        panic!("a mutated or replayed datagram reached the TAP: {:?}", &d[frame])
                    }
                    RxAction::TapReassembled { .. } => panic!("a mutated fragment completed a frame"),
                    _ => {}
                }
            }
            _ => {
                let mut d = rest.to_vec();
                match receive(&mut w.e[0], &mut d, mode & 4 != 0, w.now, mode & 8 != 0) {
                    RxAction::Tap { frame, .. } => {
                        panic!("unauthenticated bytes reached the TAP: {:?}", &d[frame])
                    }
                    RxAction::TapReassembled { .. } => panic!("unauthenticated bytes completed a frame"),
                    _ => {}
                }
            }
        }
        // Replies, probes and keepalives both ways, and the timers now and then.
        if mode & 0x80 != 0 {
            let now = w.now;
            for e in &mut w.e {
                e.handle_timeout(now);
            }
        }
        w.exchange(false);
    });
});
