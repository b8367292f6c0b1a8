//! The server and client together over loopback, in one process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::client::{Client, ClientError, ReadAuth, SessionRx};
use crate::config::Limits;
use crate::proto::{Event, LanJoin, Register, ServerMsg};

struct Harness {
    server: Server,
    addr: SocketAddr,
    fingerprint: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn secret(lan: &str) -> [u8; 32] {
    if lan == "lan1" { [1; 32] } else { [2; 32] }
}

/// The operator token of every harness.
const OPERATOR: [u8; 32] = [3; 32];

fn harness(ttl: Duration, heartbeat: Duration) -> Harness {
    harness_with(ttl, heartbeat, Limits::default())
}

fn harness_with(ttl: Duration, heartbeat: Duration, limits: Limits) -> Harness {
    harness_full(ttl, heartbeat, limits, OUTBOX_BYTES)
}

fn harness_full(ttl: Duration, heartbeat: Duration, limits: Limits, outbox: usize) -> Harness {
    harness_hello(ttl, heartbeat, limits, outbox, Duration::from_millis(500))
}

fn harness_hello(
    ttl: Duration,
    heartbeat: Duration,
    limits: Limits,
    outbox: usize,
    hello_timeout: Duration,
) -> Harness {
    harness_budget(
        ttl,
        heartbeat,
        limits,
        outbox,
        hello_timeout,
        BUFFERED_BUDGET,
    )
}

fn harness_budget(
    ttl: Duration,
    heartbeat: Duration,
    limits: Limits,
    outbox: usize,
    hello_timeout: Duration,
    budget: usize,
) -> Harness {
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("bulletin-harness-{}-{n}", std::process::id()));
    let identity = Identity::load_or_create(&dir).expect("identity");
    let lans: HashMap<String, Verifier> = ["lan1", "lan2"]
        .iter()
        .map(|l| (l.to_string(), Verifier::from_secret(&secret(l))))
        .collect();
    let server = Server::start(
        &identity,
        ServerOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            lans,
            lease_ttl: ttl,
            heartbeat,
            hello_timeout,
            operator: Some(Verifier::from_secret(&OPERATOR)),
            limits,
            outbox_bytes: outbox,
            buffered_budget: budget,
        },
    )
    .expect("start");
    let addr = server.local_addr().expect("addr");
    Harness {
        server,
        addr,
        fingerprint: identity.fingerprint(),
        _dir: TempDir(dir),
    }
}

fn register(
    id: u32,
    lans: &[&str],
    nonce: &[u8; 32],
    secret_for: impl Fn(&str) -> [u8; 32],
) -> Register {
    Register {
        host_id: id,
        name: format!("h{id}"),
        underlay: IpAddr::from([10, 77, 1, id as u8]),
        prefix: 24,
        port: 7401,
        lans: lans
            .iter()
            .map(|l| LanJoin {
                name: l.to_string(),
                segment: "192.168.100.0/24".into(),
                proof: Verifier::from_secret(&secret_for(l)).prove(nonce, id, l),
            })
            .collect(),
    }
}

/// A heartbeat on a registered host's connection is answered within 2 s (events that
/// waited before the answer are skipped).
async fn heartbeat_is_answered(tx: &mut crate::client::SessionTx, rx: &mut SessionRx) {
    tx.send(&crate::proto::ClientMsg::Heartbeat)
        .await
        .expect("hb");
    loop {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("ack in time")
            .expect("recv")
        {
            ServerMsg::Ack { .. } => break,
            _ => continue,
        }
    }
}

/// Connect and register host `id`; returns the receive half after its snapshots.
async fn join(
    h: &Harness,
    id: u32,
    lans: &[&str],
) -> (crate::client::SessionTx, SessionRx, Vec<Event>) {
    let client = Client::new(h.addr, &h.fingerprint).expect("client");
    let mut s = client.connect().await.expect("connect");
    let reg = register(id, lans, &s.terms.nonce, secret);
    s.register(reg).await.expect("register");
    let mut snaps = Vec::new();
    for _ in lans {
        match s.recv().await.expect("snapshot") {
            ServerMsg::Event(e @ Event::Snapshot { .. }) => snaps.push(e),
            other => panic!("expected snapshot, got {other:?}"),
        }
    }
    // Keep the client endpoint alive as long as the session: leak it into the session's
    // lifetime by moving it into a task that ends with the test runtime.
    let (tx, rx) = s.split();
    tokio::spawn(async move {
        let _keep = client;
        std::future::pending::<()>().await;
    });
    (tx, rx, snaps)
}

async fn next_event(rx: &mut SessionRx, within: Duration) -> Event {
    loop {
        match tokio::time::timeout(within, rx.recv())
            .await
            .expect("event in time")
            .expect("recv")
        {
            ServerMsg::Event(e) => return e,
            ServerMsg::Ack { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn joins_and_leaves_reach_the_lans_hosts_at_once() {
    let h = harness(Duration::from_secs(30), Duration::from_secs(10));
    let (_tx1, mut rx1, snaps) = join(&h, 1, &["lan1"]).await;
    assert!(matches!(&snaps[0], Event::Snapshot { records, .. } if records.len() == 1));
    let (_tx3, mut rx3, _) = join(&h, 3, &["lan2"]).await;
    let (mut tx2, _rx2, snaps2) = join(&h, 2, &["lan1"]).await;
    match &snaps2[0] {
        Event::Snapshot { records, .. } => assert_eq!(
            records.iter().map(|r| r.host_id).collect::<Vec<_>>(),
            vec![1, 2]
        ),
        e => panic!("{e:?}"),
    }
    match next_event(&mut rx1, Duration::from_secs(2)).await {
        Event::Join(r) => assert_eq!(
            (r.host_id, r.port, r.underlay),
            (2, 7401, IpAddr::from([10, 77, 1, 2]))
        ),
        e => panic!("{e:?}"),
    }
    let t = Instant::now();
    tx2.send(&crate::proto::ClientMsg::Unregister)
        .await
        .expect("unregister");
    match next_event(&mut rx1, Duration::from_secs(2)).await {
        Event::Leave {
            host_id: 2, reason, ..
        } => assert_eq!(reason, "unregistered"),
        e => panic!("{e:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    // Host 3 (lan2 only) heard nothing of lan1.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx3.recv())
            .await
            .is_err()
    );
    let all = Client::new(h.addr, &h.fingerprint)
        .expect("c")
        .query(&ReadAuth::Operator(Verifier::from_secret(&OPERATOR)), None)
        .await
        .expect("query");
    assert_eq!(
        all.iter().map(|r| r.host_id).collect::<Vec<_>>(),
        vec![1, 3]
    );
}

#[tokio::test]
async fn a_lapsed_lease_is_pushed_as_a_leave() {
    let h = harness(Duration::from_millis(1200), Duration::from_millis(400));
    let (mut tx1, mut rx1, _) = join(&h, 1, &["lan1"]).await;
    let (_tx2, _rx2, _) = join(&h, 2, &["lan1"]).await;
    assert!(matches!(
        next_event(&mut rx1, Duration::from_secs(1)).await,
        Event::Join(_)
    ));
    // Host 1 heartbeats; host 2 is silent and lapses.
    let start = Instant::now();
    let hb = tokio::spawn(async move {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if tx1.send(&crate::proto::ClientMsg::Heartbeat).await.is_err() {
                break;
            }
        }
        tx1
    });
    match next_event(&mut rx1, Duration::from_secs(3)).await {
        Event::Leave {
            host_id: 2, reason, ..
        } => assert_eq!(reason, "lease expired"),
        e => panic!("{e:?}"),
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "leave after {took:?}");
    let _ = hb.await;
    assert_eq!(
        h.server.host_count(),
        1,
        "the heartbeating host is still there"
    );
}

#[tokio::test]
async fn wrong_secret_and_wrong_fingerprint_are_refused() {
    let h = harness(Duration::from_secs(30), Duration::from_secs(10));
    let client = Client::new(h.addr, &h.fingerprint).expect("client");
    let mut s = client.connect().await.expect("connect");
    let reg = register(5, &["lan1"], &s.terms.nonce, |_| [9; 32]);
    match s.register(reg).await {
        Err(ClientError::Refused { code, reason }) => {
            assert_eq!(code, crate::proto::RefuseCode::BadProof);
            assert!(reason.contains("wrong secret for LAN \"lan1\""), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let wrong = crate::tls::fingerprint(b"another certificate");
    let e = Client::new(h.addr, &wrong)
        .expect("client")
        .connect()
        .await
        .err()
        .expect("must refuse");
    match e {
        ClientError::Fingerprint { got, expected, .. } => {
            assert_eq!(got, h.fingerprint);
            assert_eq!(expected, wrong);
        }
        other => panic!("{other:?}"),
    }
    assert!(e_to_string_mentions(
        &Client::new(h.addr, &wrong)
            .expect("c")
            .connect()
            .await
            .err(),
        "bulletin fingerprint"
    ));
}

fn e_to_string_mentions(e: &Option<ClientError>, what: &str) -> bool {
    e.as_ref().is_some_and(|e| e.to_string().contains(what))
}

#[tokio::test]
async fn garbage_half_open_and_oversized_input_do_not_disturb_registered_hosts() {
    let h = harness(Duration::from_secs(30), Duration::from_secs(10));
    let (mut tx1, mut rx1, _) = join(&h, 1, &["lan1"]).await;
    // Garbage datagrams on the port (bounded).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..200u32 {
        let _ = sock.send_to(&i.to_be_bytes().repeat((i % 50) as usize + 1), h.addr);
    }
    // Half-open: a QUIC connection that never says hello is closed by the server.
    let lurker = Client::new(h.addr, &h.fingerprint).expect("client");
    let conn_closed = {
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("a")).expect("ep");
        let (cfg, _) = crate::tls::client_config(&h.fingerprint).expect("cfg");
        let conn = ep
            .connect_with(cfg, h.addr, "vmvpn-bulletin")
            .expect("connect")
            .await
            .expect("handshake");
        tokio::time::timeout(Duration::from_secs(3), conn.closed())
            .await
            .is_ok()
    };
    assert!(
        conn_closed,
        "a silent connection is closed after the hello timeout"
    );
    // Oversized: a frame announcing 100 MB is refused and that connection closed.
    let mut s = lurker.connect().await.expect("connect");
    let conn_for_big = {
        let big = (200u32 << 20).to_be_bytes();
        let (mut tx, mut rx) =
            std::mem::replace(&mut s, lurker.connect().await.expect("c2")).split();
        let _ = tx.send(&crate::proto::ClientMsg::Heartbeat).await; // a valid frame first
        let raw = tx_raw(&mut tx, &big).await;
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if rx.recv().await.is_err() {
                    break;
                }
            }
        })
        .await;
        raw && closed.is_ok()
    };
    assert!(conn_for_big, "an oversized frame closes its connection");
    // The registered host is undisturbed: heartbeat acknowledged, still listed.
    tx1.send(&crate::proto::ClientMsg::Heartbeat)
        .await
        .expect("heartbeat");
    match tokio::time::timeout(Duration::from_secs(2), rx1.recv())
        .await
        .expect("ack in time")
        .expect("recv")
    {
        ServerMsg::Ack { lease_ms } => assert!(lease_ms > 29_000),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.server.host_count(), 1);
}

/// Write raw bytes on a session's stream (to forge an oversized length prefix).
async fn tx_raw(tx: &mut crate::client::SessionTx, bytes: &[u8]) -> bool {
    tx.send_raw(bytes).await.is_ok()
}

fn operator() -> ReadAuth {
    ReadAuth::Operator(Verifier::from_secret(&OPERATOR))
}

fn lan_reader(lan: &str, secret: [u8; 32]) -> ReadAuth {
    ReadAuth::Lan {
        name: lan.into(),
        verifier: Verifier::from_secret(&secret),
    }
}

fn refused_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> crate::proto::RefuseCode {
    match r {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn reads_need_a_credential_and_show_only_what_it_covers() {
    use crate::proto::RefuseCode;
    let h = harness(Duration::from_secs(30), Duration::from_secs(10));
    let (_t1, _r1, _) = join(&h, 1, &["lan1"]).await;
    let (_t2, _r2, _) = join(&h, 2, &["lan2"]).await;
    let c = Client::new(h.addr, &h.fingerprint).expect("client");
    // No credential: nothing, neither records nor reports.
    assert_eq!(
        refused_code(c.query(&ReadAuth::None, None).await),
        RefuseCode::Unauthorized
    );
    assert_eq!(
        refused_code(c.matrix(&ReadAuth::None, None).await),
        RefuseCode::Unauthorized
    );
    // The operator sees every LAN.
    let all = c.query(&operator(), None).await.expect("operator");
    assert_eq!(
        all.iter().map(|r| r.host_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // A LAN secret shows that LAN only, and names no other.
    let l1 = c
        .query(&lan_reader("lan1", secret("lan1")), None)
        .await
        .expect("lan1");
    assert_eq!(l1.iter().map(|r| r.host_id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        refused_code(
            c.query(&lan_reader("lan1", secret("lan1")), Some("lan2".into()))
                .await
        ),
        RefuseCode::Unauthorized
    );
    // Wrong secrets and tokens are refused as such.
    assert_eq!(
        refused_code(c.query(&lan_reader("lan1", [9; 32]), None).await),
        RefuseCode::BadProof
    );
    assert_eq!(
        refused_code(c.query(&lan_reader("nope", [9; 32]), None).await),
        RefuseCode::BadProof
    );
    let wrong_op = ReadAuth::Operator(Verifier::from_secret(&[9; 32]));
    assert_eq!(
        refused_code(c.query(&wrong_op, None).await),
        RefuseCode::BadProof
    );
    // A LAN proof is no operator token, and the reverse.
    let lan_as_op = ReadAuth::Operator(Verifier::from_secret(&secret("lan1")));
    assert_eq!(
        refused_code(c.query(&lan_as_op, None).await),
        RefuseCode::BadProof
    );
    let op_as_lan = lan_reader("lan1", OPERATOR);
    assert_eq!(
        refused_code(c.query(&op_as_lan, None).await),
        RefuseCode::BadProof
    );
}

#[tokio::test]
async fn a_registered_host_reads_its_own_lans_only() {
    let h = harness(Duration::from_secs(30), Duration::from_secs(10));
    let (mut t1, mut r1, _) = join(&h, 1, &["lan1"]).await;
    let (_t2, _r2, _) = join(&h, 2, &["lan2"]).await;
    t1.send(&crate::proto::ClientMsg::Query { lan: None })
        .await
        .expect("send");
    loop {
        match tokio::time::timeout(Duration::from_secs(2), r1.recv())
            .await
            .expect("answer")
            .expect("recv")
        {
            ServerMsg::Records(r) => {
                assert_eq!(r.iter().map(|r| r.host_id).collect::<Vec<_>>(), vec![1]);
                break;
            }
            ServerMsg::Event(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn silent_connections_after_hello_are_closed_and_admission_is_capped() {
    let limits = Limits {
        connections: 6,
        per_ip: 5,
        unauthenticated: 3,
        unauthenticated_per_ip: 2,
    };
    let h = harness_with(Duration::from_secs(30), Duration::from_secs(10), limits);
    let c = Client::new(h.addr, &h.fingerprint).expect("client");
    // Two that say Hello and nothing else fill this address's unauthenticated share.
    let mut lurkers = Vec::new();
    for _ in 0..2 {
        lurkers.push(c.connect().await.expect("connect"));
    }
    assert_eq!(h.server.conn_counts().unauthenticated, 2);
    assert!(
        c.connect().await.is_err(),
        "a third unauthenticated connection from one address is refused"
    );
    assert_eq!(
        h.server
            .conn_counts()
            .admission
            .refused_unauthenticated_per_ip,
        1
    );
    // They are closed once the hello timeout (500 ms here) passes without a credential.
    let t = Instant::now();
    for s in lurkers {
        let (_tx, mut rx) = s.split();
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            while rx.recv().await.is_ok() {}
        })
        .await;
        assert!(closed.is_ok(), "a silent connection is closed");
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = h.server.conn_counts();
    assert_eq!((n.total, n.unauthenticated), (0, 0));
    // Authenticated connections leave the unauthenticated slots free, up to the per-address cap.
    let mut readers = Vec::new();
    for _ in 0..5 {
        readers.push(c.connect_reader(&operator()).await.expect("reader"));
    }
    let n = h.server.conn_counts();
    assert_eq!((n.total, n.unauthenticated), (5, 0));
    assert!(c.connect().await.is_err(), "the per-address cap holds");
    assert_eq!(h.server.conn_counts().admission.refused_per_ip, 1);
    drop(readers);
}

#[tokio::test]
async fn a_full_unauthenticated_table_evicts_its_oldest_for_a_newcomer_never_a_proven_one() {
    let limits = Limits {
        connections: 20,
        per_ip: 20,
        unauthenticated: 2,
        unauthenticated_per_ip: 10,
    };
    // A long hello timeout: only eviction can close the lurkers within this test.
    let h = harness_hello(
        Duration::from_secs(30),
        Duration::from_secs(10),
        limits,
        OUTBOX_BYTES,
        Duration::from_secs(20),
    );
    let c = Client::new(h.addr, &h.fingerprint).expect("client");
    let reader = c.connect_reader(&operator()).await.expect("reader");
    let (mut rtx, mut rrx) = reader.split();
    let first = c.connect().await.expect("first");
    let _second = c.connect().await.expect("second");
    // The table is full; a newcomer is admitted and the oldest silent one closed.
    let t = Instant::now();
    let newcomer = c.connect_reader(&operator()).await;
    assert!(newcomer.is_ok(), "{:?}", newcomer.err());
    let (_tx, mut rx) = first.split();
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        while rx.recv().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the oldest silent connection was closed");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let n = h.server.conn_counts();
    assert_eq!(n.admission.evicted, 1, "{n:?}");
    // The authenticated reader, older than all of them, still reads.
    rtx.send(&ClientMsg::Query { lan: None })
        .await
        .expect("send");
    assert!(matches!(
        rrx.recv().await.expect("answer"),
        ServerMsg::Records(_)
    ));
}

#[tokio::test]
async fn past_half_the_unauthenticated_table_new_sources_must_validate_their_address() {
    let limits = Limits {
        connections: 20,
        per_ip: 20,
        unauthenticated: 4,
        unauthenticated_per_ip: 10,
    };
    let h = harness_with(Duration::from_secs(30), Duration::from_secs(10), limits);
    let c = Client::new(h.addr, &h.fingerprint).expect("client");
    let mut lurkers = Vec::new();
    for _ in 0..3 {
        lurkers.push(c.connect().await.expect("connect"));
    }
    assert_eq!(h.server.conn_counts().admission.retries, 0);
    // A real client answers the Retry by itself and gets in.
    let late = c.connect_reader(&operator()).await;
    assert!(late.is_ok(), "{:?}", late.err());
    assert_eq!(h.server.conn_counts().admission.retries, 1);
    let st = c.status(&operator()).await.expect("status");
    assert_eq!(st.admission.retries, 2);
    assert_eq!(st.limits.unauthenticated_per_ip, 10);
    assert!(st.unauthenticated >= 3, "{st:?}");
}

#[tokio::test]
async fn a_pipelined_query_flood_stays_within_the_outbox() {
    let h = harness(Duration::from_secs(30), Duration::from_secs(10));
    // Fifty hosts make each answer a few KB.
    let mut keep = Vec::new();
    for id in 1..=50 {
        keep.push(join(&h, id, &["lan1"]).await);
    }
    let c = Client::new(h.addr, &h.fingerprint).expect("client");
    let (mut tx, rx) = c.connect_reader(&operator()).await.expect("reader").split();
    let until = Instant::now() + Duration::from_secs(3);
    let mut sent = 0u64;
    let mut most = 0;
    while Instant::now() < until {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tx.send(&crate::proto::ClientMsg::Query { lan: None }),
        )
        .await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {} // flow control holds the flooder back: as it should
        }
        most = most.max(h.server.queued_bytes());
    }
    eprintln!("flood: {sent} requests sent, at most {most} bytes queued");
    assert!(sent > 100, "the flood ran ({sent} requests)");
    assert!(most <= OUTBOX_BYTES + 64 * 1024, "queued {most} bytes");
    // Registered hosts are still served during the flood.
    let (t1, r1, _) = &mut keep[0];
    heartbeat_is_answered(t1, r1).await;
    // When the flooder leaves, what it queued is freed.
    tx.close();
    drop(rx);
    let t = Instant::now();
    while h.server.queued_bytes() > 0 && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.server.queued_bytes(), 0);
}

#[tokio::test]
async fn a_host_too_slow_to_take_its_events_is_disconnected_and_the_rest_go_on() {
    use crate::proto::ClientMsg;
    let h = harness_full(
        Duration::from_secs(30),
        Duration::from_secs(10),
        Limits::default(),
        4096,
    );
    // A host whose QUIC receive window is 2 KB and that never reads: once that window and
    // its 4 KB outbox are full, the next event cannot be queued.
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("a")).expect("ep");
    let (mut cfg, _) = crate::tls::client_config(&h.fingerprint).expect("cfg");
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(2048));
    t.receive_window(quinn::VarInt::from_u32(2048));
    cfg.transport_config(std::sync::Arc::new(t));
    let conn = ep
        .connect_with(cfg, h.addr, "vmvpn-bulletin")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    crate::frames::write(&mut send, &ClientMsg::Hello { version: 1 })
        .await
        .expect("hello");
    let nonce = match crate::frames::read::<ServerMsg>(&mut recv, 1 << 20)
        .await
        .expect("challenge")
    {
        ServerMsg::Challenge { nonce, .. } => nonce,
        other => panic!("{other:?}"),
    };
    crate::frames::write(
        &mut send,
        &ClientMsg::Register(register(99, &["lan1"], &nonce, secret)),
    )
    .await
    .expect("register");
    // A watcher that reads, to see that the others are served throughout.
    let (_tw, mut rw, _) = join(&h, 1, &["lan1"]).await;
    // Other hosts come and go: each is an event for the slow host.
    let mut closed = false;
    for id in 2..400 {
        let (mut tx, _rx, _) = join(&h, id, &["lan1"]).await;
        tx.send(&ClientMsg::Unregister).await.expect("unregister");
        if tokio::time::timeout(Duration::from_millis(1), conn.closed())
            .await
            .is_ok()
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow host was never disconnected");
    let reason = conn
        .close_reason()
        .map(|r| r.to_string())
        .unwrap_or_default();
    assert!(reason.contains("too slow"), "{reason}");
    // The watcher still gets its events and the registry still answers.
    assert!(matches!(
        next_event(&mut rw, Duration::from_secs(2)).await,
        Event::Join(_) | Event::Leave { .. }
    ));
    assert!(h.server.host_count() >= 1);
}

#[tokio::test]
async fn hosts_of_protocol_1_and_2_are_served_and_others_refused() {
    use crate::proto::{ClientMsg, MIN_VERSION, RefuseCode, VERSION};
    let h = harness_full(
        Duration::from_secs(30),
        Duration::from_secs(10),
        Limits::default(),
        1 << 20,
    );
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("a")).expect("ep");
    for (version, served) in [
        (0, false),
        (MIN_VERSION, true),
        (VERSION, true),
        (VERSION + 1, false),
    ] {
        let (cfg, _) = crate::tls::client_config(&h.fingerprint).expect("cfg");
        let conn = ep
            .connect_with(cfg, h.addr, "vmvpn-bulletin")
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        crate::frames::write(&mut send, &ClientMsg::Hello { version })
            .await
            .expect("hello");
        let first = crate::frames::read::<ServerMsg>(&mut recv, 1 << 20)
            .await
            .expect("answer");
        match (first, served) {
            (ServerMsg::Challenge { version: v, .. }, true) => assert_eq!(v, VERSION),
            (ServerMsg::Refused { code, reason }, false) => {
                assert_eq!(code, RefuseCode::Version);
                assert!(reason.contains("upgrade one of them"), "{reason}");
            }
            (other, _) => panic!("version {version}: {other:?}"),
        }
        conn.close(0u32.into(), b"done");
    }
}

#[tokio::test]
async fn over_the_memory_budget_the_most_backlogged_connection_is_shed_and_hosts_stay() {
    // A budget of 1 MiB: a connection whose writer waits on QUIC (its client stopped
    // reading) counts QUIC's 2 MiB window, so it is shed once its client's window fills.
    let h = harness_budget(
        Duration::from_secs(30),
        Duration::from_secs(10),
        Limits {
            per_ip: 1000,
            ..Limits::default()
        },
        OUTBOX_BYTES,
        Duration::from_millis(500),
        1 << 20,
    );
    // 300 hosts make each answer about 25 KB.
    let mut keep = Vec::new();
    for id in 1..=300 {
        keep.push(join(&h, id, &["lan1"]).await);
    }
    let c = Client::new(h.addr, &h.fingerprint).expect("client");
    let (mut tx, _never_read) = c.connect_reader(&operator()).await.expect("reader").split();
    let t = Instant::now();
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(15) {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tx.send(&crate::proto::ClientMsg::Query { lan: None }),
        )
        .await
        {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(_)) => {
                closed = true;
                break;
            }
        }
        if h.server.status().shed_total > 0 {
            closed = true;
            break;
        }
    }
    let st = h.server.status();
    eprintln!(
        "shed after {:?}: {} shed, {} bytes counted",
        t.elapsed(),
        st.shed_total,
        st.buffered_bytes
    );
    assert!(closed && st.shed_total >= 1, "{st:?}");
    // The hosts, which read nothing during this test either but have little waiting,
    // are still served.
    let (t1, r1, _) = &mut keep[0];
    heartbeat_is_answered(t1, r1).await;
    assert_eq!(h.server.host_count(), 300);
}
