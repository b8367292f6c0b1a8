//! `bulletin-abuse`: an abusive client of a bulletin, for the hardening tests (loopback or
//! a test's own namespaces only). Every mode is bounded in time and in connections, and
//! prints one JSON line of what happened.
//!
//! - `query-flood`: authenticated connections pipeline `Query` requests without reading a
//!   single answer (what once grew a bulletin by gigabytes).
//! - `unauth-flood`: the same without a credential.
//! - `silent`: connections that say `Hello` and then nothing; counts how many the bulletin
//!   closed, and how many it refused at admission. With `--reopen`, every connection the
//!   bulletin closes or refuses is opened again at once, until `--seconds` pass.
//! - `register`: `--connections` times in a row, a new connection registers a host of
//!   `lan1` (with --secret-file) and leaves; prints how long each handshake (to the
//!   challenge) and each registration took, to measure fairness while another client
//!   floods.
//! - `tcp-idle`: plain TCP connections to `--target` (a dashboard) that never send a byte,
//!   re-opened as soon as the server closes them, until `--seconds` pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bulletin::client::{Client, ReadAuth};
use bulletin::proof::Verifier;
use bulletin::proto::{ClientMsg, LanJoin, Register, ServerMsg};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    QueryFlood,
    UnauthFlood,
    Silent,
    TcpIdle,
    Register,
}

/// Abusive bulletin client (tests only).
#[derive(Parser)]
#[command(name = "bulletin-abuse", version, about)]
struct Args {
    /// What to do.
    mode: Mode,
    /// The bulletin (every mode but tcp-idle).
    #[arg(long, required_unless_present = "target")]
    server: Option<SocketAddr>,
    /// Its fingerprint (every mode but tcp-idle).
    #[arg(long, required_unless_present = "target")]
    fingerprint: Option<String>,
    /// tcp-idle: the TCP listener to hold connections to.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// silent: open again every connection the bulletin closes or refuses.
    #[arg(long)]
    reopen: bool,
    /// Operator token file (query-flood).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Register this many hosts in LAN `lan1` first (with --secret-file), so answers are big.
    #[arg(long, default_value_t = 0)]
    hosts: u32,
    /// The secret of `lan1`, for --hosts.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// How long to keep at it (at most 120).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    if a.seconds > 120 || a.connections > 5000 || a.hosts > 5000 {
        bail!("bounded: --seconds <= 120, --connections <= 5000, --hosts <= 5000");
    }
    let until = Instant::now() + Duration::from_secs(a.seconds);
    if let Mode::TcpIdle = a.mode {
        let Some(target) = a.target else {
            bail!("tcp-idle needs --target")
        };
        println!("{}", tcp_idle(target, a.connections, until).await);
        return Ok(());
    }
    let (Some(server), Some(fingerprint)) = (a.server, &a.fingerprint) else {
        bail!("--server and --fingerprint are needed")
    };
    let client = Client::new(server, fingerprint)?;
    let mut keep = Vec::new();
    if a.hosts > 0 {
        let Some(f) = &a.secret_file else {
            bail!("--hosts needs --secret-file")
        };
        let v = Verifier::from_secret(
            &bulletin::proof::read_secret_file(f).map_err(|m| anyhow::anyhow!(m))?,
        );
        for id in 1..=a.hosts {
            let mut s = client.connect().await?;
            let nonce = s.terms.nonce;
            s.register(Register {
                host_id: 0x4000_0000 + id,
                name: format!("abuse{id}"),
                underlay: [127, 0, 0, 1].into(),
                prefix: 8,
                port: 7401,
                lans: vec![LanJoin {
                    name: "lan1".into(),
                    segment: "192.168.0.0/16".into(),
                    proof: v.prove(&nonce, 0x4000_0000 + id, "lan1"),
                }],
            })
            .await?;
            keep.push(s);
        }
    }
    let report = match a.mode {
        Mode::QueryFlood | Mode::UnauthFlood => {
            let auth = match (a.mode, &a.token_file) {
                (Mode::QueryFlood, Some(t)) => ReadAuth::Operator(Verifier::from_secret(
                    &bulletin::proof::read_secret_file(t).map_err(|m| anyhow::anyhow!(m))?,
                )),
                (Mode::QueryFlood, None) => bail!("query-flood needs --token-file"),
                _ => ReadAuth::None,
            };
            let mut tasks = Vec::new();
            let mut connect_ms = Vec::new();
            for _ in 0..a.connections {
                let t = Instant::now();
                let s = client.connect_reader(&auth).await?;
                connect_ms.push(t.elapsed().as_millis() as u64);
                let (mut tx, rx) = s.split();
                tasks.push(tokio::spawn(async move {
                    let _never_read = rx;
                    let mut sent = 0u64;
                    // Each send waits when flow control says stop; the deadline bounds it.
                    while Instant::now() < until {
                        let q = tx.send(&ClientMsg::Query { lan: None });
                        match tokio::time::timeout_at(until.into(), q).await {
                            Ok(Ok(())) => sent += 1,
                            _ => break,
                        }
                        // quinn's writes complete at once while the window is open and
                        // never yield by themselves: without this, the flooders starve
                        // this process's own next handshake (a "no challenge within 5 s"
                        // that was this client's, not the bulletin's).
                        tokio::task::yield_now().await;
                    }
                    tx.close();
                    sent
                }));
            }
            let mut sent = 0;
            for t in tasks {
                sent += t.await.unwrap_or(0);
            }
            serde_json::json!({ "mode": "flood", "requests_sent": sent, "connect_ms": connect_ms })
        }
        Mode::TcpIdle => serde_json::Value::Null,
        Mode::Register => {
            let Some(f) = &a.secret_file else {
                bail!("register needs --secret-file")
            };
            let v = Verifier::from_secret(
                &bulletin::proof::read_secret_file(f).map_err(|m| anyhow::anyhow!(m))?,
            );
            let (mut hello_ms, mut register_ms) = (Vec::new(), Vec::new());
            for i in 0..a.connections as u32 {
                let id = 0x5000_0000 + i;
                let t = Instant::now();
                let mut s = client.connect().await?;
                hello_ms.push(t.elapsed().as_millis() as u64);
                let nonce = s.terms.nonce;
                let t = Instant::now();
                s.register(Register {
                    host_id: id,
                    name: format!("timed{i}"),
                    underlay: [127, 0, 0, 2].into(),
                    prefix: 8,
                    port: 7401,
                    lans: vec![LanJoin {
                        name: "lan1".into(),
                        segment: "192.168.0.0/16".into(),
                        proof: v.prove(&nonce, id, "lan1"),
                    }],
                })
                .await?;
                register_ms.push(t.elapsed().as_millis() as u64);
                // Leave, and wait until the bulletin says so (a close could overtake it).
                s.send(&ClientMsg::Unregister).await?;
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), s.recv()).await {
                        Ok(Ok(ServerMsg::Ack { .. })) => break,
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => bail!("no answer to unregister within 5 s"),
                    }
                }
                s.close();
                if Instant::now() >= until {
                    break;
                }
            }
            serde_json::json!({ "mode": "register", "hello_ms": hello_ms, "register_ms": register_ms })
        }
        Mode::Silent if a.reopen => silent_reopen(client, a.connections, until).await,
        Mode::Silent => {
            let (mut opened, mut refused) = (0u64, 0u64);
            let mut rxs = Vec::new();
            for _ in 0..a.connections {
                match client.connect().await {
                    Ok(s) => {
                        opened += 1;
                        rxs.push(s.split());
                    }
                    Err(_) => refused += 1,
                }
            }
            // Wait for the bulletin to close them (or the deadline).
            let mut closed = 0u64;
            for (_tx, mut rx) in rxs {
                let r = tokio::time::timeout_at(until.into(), async {
                    loop {
                        match rx.recv().await {
                            Ok(ServerMsg::Event(_)) => continue,
                            Ok(_) => continue,
                            Err(_) => break,
                        }
                    }
                })
                .await;
                if r.is_ok() {
                    closed += 1;
                }
            }
            serde_json::json!({ "mode": "silent", "opened": opened, "refused": refused, "closed_by_server": closed })
        }
    };
    println!("{report}");
    for s in keep {
        s.close();
    }
    Ok(())
}

/// Keep `n` silent connections open until `until`: each one the bulletin closes, or
/// refuses, is opened again at once (at most 32 handshakes in flight).
async fn silent_reopen(client: Client, n: usize, until: Instant) -> serde_json::Value {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let opened = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (opened, refused, closed, gate, client) = (
            opened.clone(),
            refused.clone(),
            closed.clone(),
            gate.clone(),
            client.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let permit = gate.acquire().await;
                let c = tokio::time::timeout_at(until.into(), client.connect()).await;
                drop(permit);
                match c {
                    Err(_) => break,
                    Ok(Err(_)) => {
                        refused.fetch_add(1, Relaxed);
                        // A refusal comes back at once: pace this one a little.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(Ok(s)) => {
                        opened.fetch_add(1, Relaxed);
                        let (_tx, mut rx) = s.split();
                        let r = tokio::time::timeout_at(until.into(), async {
                            while rx.recv().await.is_ok() {}
                        })
                        .await;
                        if r.is_ok() {
                            closed.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    serde_json::json!({
        "mode": "silent-reopen",
        "opened": opened.load(Relaxed),
        "refused": refused.load(Relaxed),
        "closed_by_server": closed.load(Relaxed),
    })
}

/// Hold `n` idle TCP connections to `target` until `until`, re-opening each one the server
/// closes (at most 32 connects in flight).
async fn tcp_idle(target: SocketAddr, n: usize, until: Instant) -> serde_json::Value {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use tokio::io::AsyncReadExt;
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (opened, failed, closed, gate) =
            (opened.clone(), failed.clone(), closed.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let permit = gate.acquire().await;
                let c =
                    tokio::time::timeout_at(until.into(), tokio::net::TcpStream::connect(target))
                        .await;
                drop(permit);
                match c {
                    Err(_) => break,
                    Ok(Err(_)) => {
                        failed.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(Ok(mut s)) => {
                        opened.fetch_add(1, Relaxed);
                        let mut b = [0u8; 512];
                        let r = tokio::time::timeout_at(until.into(), async {
                            while matches!(s.read(&mut b).await, Ok(k) if k > 0) {}
                        })
                        .await;
                        if r.is_ok() {
                            closed.fetch_add(1, Relaxed);
                            // Closed at once (refused): pace the next try a little.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    serde_json::json!({
        "mode": "tcp-idle",
        "opened": opened.load(Relaxed),
        "failed": failed.load(Relaxed),
        "closed_by_server": closed.load(Relaxed),
    })
}
