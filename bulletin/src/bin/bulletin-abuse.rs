//! `bulletin-abuse`: an abusive client of a bulletin, for the hardening tests (loopback or
//! a test's own namespaces only). Every mode is bounded in time and in connections, and
//! prints one JSON line of what happened.
//!
//! - `query-flood`: authenticated connections pipeline `Query` requests without reading a
//!   single answer (what once grew a bulletin by gigabytes).
//! - `unauth-flood`: the same without a credential.
//! - `silent`: connections that say `Hello` and then nothing; counts how many the bulletin
//!   closed, and how many it refused at admission.

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
}

/// Abusive bulletin client (tests only).
#[derive(Parser)]
#[command(name = "bulletin-abuse", version, about)]
struct Args {
    /// What to do.
    mode: Mode,
    /// The bulletin.
    #[arg(long)]
    server: SocketAddr,
    /// Its fingerprint.
    #[arg(long)]
    fingerprint: String,
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
    let client = Client::new(a.server, &a.fingerprint)?;
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
    let until = Instant::now() + Duration::from_secs(a.seconds);
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
            for _ in 0..a.connections {
                let s = client.connect_reader(&auth).await?;
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
                    }
                    tx.close();
                    sent
                }));
            }
            let mut sent = 0;
            for t in tasks {
                sent += t.await.unwrap_or(0);
            }
            serde_json::json!({ "mode": "flood", "requests_sent": sent })
        }
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
