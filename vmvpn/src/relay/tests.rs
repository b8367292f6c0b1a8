use std::sync::Arc;

use super::*;
use crate::proto::{HEADER_LEN, Header, OVERHEAD};

const LAN: u32 = 77;

fn key() -> RelayKey {
    RelayKey::from_verifier(&[5; 32])
}

fn core(limit: u32) -> (RelayCore, Arc<RelayCounters>) {
    let c = Arc::new(RelayCounters::default());
    (
        RelayCore::new(HashMap::from([(LAN, key())]), limit, c.clone()),
        c,
    )
}

fn msg(kind: Kind, sender: u32, peer: u32, seq: u64) -> [u8; RELAY_LEN] {
    RelayMsg {
        kind,
        lan: LAN,
        sender,
        seq,
        peer,
        port: 0,
    }
    .emit(&key())
}

/// A sealed-looking data datagram from `sender` (the relay never opens it).
fn data(sender: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0xAB; len.max(HEADER_LEN + OVERHEAD)];
    let h = Header {
        kind: Kind::Data,
        flags: 0,
        lan: LAN,
        sender,
        seq: 1,
    };
    v[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    v
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 9], port))
}

#[test]
fn a_pair_passes_datagrams_between_its_bound_ends_only() {
    let t = Instant::now();
    let (mut r, c) = core(0);
    let req = r
        .handle_request(&msg(Kind::RelayRequest, 1, 2, 10))
        .expect("authentic");
    assert_eq!(r.port_of(&req.pair), None);
    assert_eq!(r.open_pair(req.pair, 5000, t), None);
    let grant = r.grant(&req, 5000).expect("grant");
    let (g, mac) = RelayMsg::parse(&grant).expect("parses").expect("relay");
    assert!(g.verify(&key(), &mac));
    assert_eq!(
        (g.kind, g.port, g.sender, g.peer),
        (Kind::RelayGrant, 5000, 1, 2)
    );
    // The other side's request finds the same pair.
    let req2 = r
        .handle_request(&msg(Kind::RelayRequest, 2, 1, 11))
        .expect("authentic");
    assert_eq!(r.port_of(&req2.pair), Some(5000));

    // Before the other end binds, nothing can go to it.
    assert_eq!(
        r.handle_pair(5000, at(1), &msg(Kind::RelayBind, 1, 2, 20), t),
        PairAction::Bound
    );
    assert_eq!(
        r.handle_pair(5000, at(1), &data(1, 100), t),
        PairAction::Drop(RelayDrop::NoPeer)
    );
    assert_eq!(
        r.handle_pair(5000, at(2), &msg(Kind::RelayBind, 2, 1, 21), t),
        PairAction::Bound
    );
    assert_eq!(
        r.handle_pair(5000, at(1), &data(1, 100), t),
        PairAction::Forward(at(2))
    );
    assert_eq!(
        r.handle_pair(5000, at(2), &data(2, 100), t),
        PairAction::Forward(at(1))
    );
    // A third address, or an end naming the other's id, or another LAN: strangers.
    assert_eq!(
        r.handle_pair(5000, at(3), &data(1, 100), t),
        PairAction::Drop(RelayDrop::Stranger)
    );
    assert_eq!(
        r.handle_pair(5000, at(1), &data(2, 100), t),
        PairAction::Drop(RelayDrop::Stranger)
    );
    assert_eq!(
        r.handle_pair(5000, at(1), &data(3, 100), t),
        PairAction::Drop(RelayDrop::Stranger)
    );
    // A replayed bind from elsewhere moves nothing; a newer one does (NAT rebinding).
    assert_eq!(
        r.handle_pair(5000, at(3), &msg(Kind::RelayBind, 2, 1, 21), t),
        PairAction::Drop(RelayDrop::Replay)
    );
    assert_eq!(
        r.handle_pair(5000, at(1), &data(1, 100), t),
        PairAction::Forward(at(2))
    );
    assert_eq!(
        r.handle_pair(5000, at(4), &msg(Kind::RelayBind, 2, 1, 22), t),
        PairAction::Bound
    );
    assert_eq!(
        r.handle_pair(5000, at(1), &data(1, 100), t),
        PairAction::Forward(at(4))
    );
    let s = c.status(7402, 0, 1);
    assert_eq!(s.forwarded_packets_total, 4);
    assert_eq!(s.binds_total, 3);
    assert_eq!(s.dropped.stranger, 3);
    assert_eq!(s.dropped.replay, 1);
    assert_eq!(s.dropped.no_peer, 1);
    assert_eq!(r.pairs()[0].packets, 4);
    assert!(r.pairs()[0].bound);
}

#[test]
fn requests_need_the_lans_relay_key() {
    let (mut r, c) = core(0);
    let other = RelayMsg {
        kind: Kind::RelayRequest,
        lan: LAN,
        sender: 1,
        seq: 1,
        peer: 2,
        port: 0,
    }
    .emit(&RelayKey::from_verifier(&[6; 32]));
    assert_eq!(r.handle_request(&other), Err(RelayDrop::BadMac));
    let mut unknown = msg(Kind::RelayRequest, 1, 2, 1);
    unknown[4] ^= 1;
    assert_eq!(r.handle_request(&unknown), Err(RelayDrop::UnknownLan));
    assert_eq!(r.handle_request(b"garbage"), Err(RelayDrop::Malformed));
    assert_eq!(r.handle_request(&data(1, 100)), Err(RelayDrop::Malformed));
    assert_eq!(
        r.handle_request(&msg(Kind::RelayBind, 1, 2, 1)),
        Err(RelayDrop::Malformed),
        "a bind goes to the pair socket"
    );
    assert_eq!(
        r.handle_request(&msg(Kind::RelayRequest, 1, 1, 1)),
        Err(RelayDrop::Malformed),
        "a pair of one"
    );
    let s = c.status(7402, 0, 1);
    assert_eq!(
        (
            s.dropped.bad_mac,
            s.dropped.unknown_lan,
            s.dropped.malformed
        ),
        (1, 1, 4)
    );
    assert_eq!(s.requests_total, 0);
}

#[test]
fn the_limit_holds_the_rate_and_idle_pairs_close() {
    let t = Instant::now();
    let (mut r, c) = core(8); // 1 MB/s, burst 128 KiB
    let req = r
        .handle_request(&msg(Kind::RelayRequest, 1, 2, 1))
        .expect("ok");
    r.open_pair(req.pair, 6000, t);
    r.handle_pair(6000, at(1), &msg(Kind::RelayBind, 1, 2, 2), t);
    r.handle_pair(6000, at(2), &msg(Kind::RelayBind, 2, 1, 3), t);
    // One second of 1400-byte datagrams at 10 MB/s offered: about burst + 1 MB pass.
    let d = data(1, 1400);
    let mut passed = 0usize;
    for i in 0..7000u64 {
        let now = t + Duration::from_micros(i * 140);
        if r.handle_pair(6000, at(1), &d, now) == PairAction::Forward(at(2)) {
            passed += d.len();
        }
    }
    assert!(
        (1_000_000..1_000_000 + 140 * 1024).contains(&passed),
        "{passed} bytes in ~1 s at 8 Mbit/s"
    );
    assert!(c.status(0, 8, 1).dropped.limit > 5000);
    assert!(r.poll_idle(t + Duration::from_secs(2)).is_empty());
    assert_eq!(
        r.poll_idle(t + PAIR_IDLE + Duration::from_secs(2)),
        vec![6000]
    );
    assert_eq!(r.port_of(&req.pair), None);
    assert_eq!(
        r.handle_pair(6000, at(1), &d, t),
        PairAction::Drop(RelayDrop::Stranger)
    );
}

#[test]
fn a_full_relay_closes_its_least_recently_used_pair() {
    let t = Instant::now();
    let (mut r, _) = core(0);
    for i in 0..MAX_PAIRS as u32 {
        let k = PairKey::of(LAN, 2 * i + 1, 2 * i + 2);
        r.open_pair(
            k,
            10_000 + i as u16,
            t + Duration::from_millis(u64::from(i)),
        );
    }
    let k = PairKey::of(LAN, 1_000_001, 1_000_002);
    assert_eq!(
        r.open_pair(k, 9000, t + Duration::from_secs(60)),
        Some(10_000)
    );
    assert_eq!(r.port_of(&PairKey::of(LAN, 1, 2)), None);
    assert_eq!(r.port_of(&k), Some(9000));
}
