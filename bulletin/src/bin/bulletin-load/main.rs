//! `bulletin-load`: a load generator for the bulletin, on loopback only.
//!
//! Starts a real `bulletin serve` (the binary beside this one) on 127.0.0.1, registers
//! thousands of simulated hosts over QUIC, then measures, in `--mode lapse`: registration
//! rate; the server's CPU while every host heartbeats; and, for hosts that go silent, the
//! time from their lease lapsing to the leave event reaching another host of their LAN.
//! With `--store etcd://…` the registry lives in etcd and `--bulletins 2` runs two
//! bulletins on it, hosts alternating between them, so half of every LAN hears of the
//! other half through etcd; the fan-out of a join then crosses bulletins too.
//! In `--mode dashboard` (`steady`): every host also reports telemetry, hosts churn, and
//! dashboard pages follow the event stream (see `steady.rs`). Bounded in count and time;
//! stops the server by its PID and removes its files at the end.

mod steady;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bulletin::client::{Client, SessionRx, SessionTx};
use bulletin::proof::Verifier;
use bulletin::proto::{ClientMsg, Event, LanJoin, Register, ServerMsg};
use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Registration, heartbeats, and the leave events of hosts whose lease lapses.
    Lapse,
    /// Steady state: reports, churn and open dashboard pages.
    Dashboard,
}

/// Load generator for the bulletin (loopback only).
#[derive(Parser)]
#[command(name = "bulletin-load", version, about)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Lapse)]
    mode: Mode,
    /// Simulated hosts.
    #[arg(long, default_value_t = 2000)]
    hosts: usize,
    /// Hosts per LAN (each LAN is a tenant's network; events fan out within it).
    #[arg(long, default_value_t = 50)]
    per_lan: usize,
    /// Hosts that go silent to measure lease lapse → leave event (one per LAN).
    #[arg(long, default_value_t = 20)]
    lapse: usize,
    /// Lease length given to the bulletin (production default). Registration of all hosts
    /// must finish within it, or the first ones lapse before they heartbeat.
    #[arg(long, default_value_t = 30)]
    ttl_s: u64,
    /// Heartbeat interval given to the bulletin (production default).
    #[arg(long, default_value_t = 10)]
    heartbeat_s: u64,
    /// Heartbeat window over which server CPU is measured.
    #[arg(long, default_value_t = 20)]
    window_s: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Dashboard mode: seconds between a host's telemetry reports.
    #[arg(long, default_value_t = 5)]
    report_s: u64,
    /// Dashboard mode: hosts that leave (and others that rejoin) per minute, percent.
    #[arg(long, default_value_t = 1.0)]
    churn_pct_per_min: f64,
    /// Dashboard mode: pages following the event stream (page i shows LAN i modulo the
    /// LANs).
    #[arg(long, default_value_t = 10)]
    pages: usize,
    /// Dashboard mode: seconds from the first reports until the measurement starts.
    #[arg(long, default_value_t = 20)]
    warmup_s: u64,
    /// Dashboard mode: seconds measured.
    #[arg(long, default_value_t = 120)]
    steady_s: u64,
    /// Dashboard mode: where the bulletin serves its dashboard (default: a free loopback
    /// port), e.g. for a browser to look while the load runs.
    #[arg(long)]
    web: Option<SocketAddr>,
    /// Keep the registry in etcd (`bulletin serve --store`), e.g. etcd://127.0.0.1:2379.
    #[arg(long, value_name = "etcd://HOST:PORT")]
    store: Option<String>,
    /// Bulletins serving the registry (more than one needs `--store`); host i uses
    /// bulletin i modulo this.
    #[arg(long, default_value_t = 1)]
    bulletins: usize,
}

#[derive(Default)]
struct Seen {
    /// host id → join events about it received, and when the last arrived.
    joins: HashMap<u32, (usize, Instant)>,
    /// host id → when a leave for it last reached a host (every host of its LAN, once
    /// all have heard).
    leaves_last: HashMap<u32, Instant>,
    /// host id → (when its last ack arrived, lease left then).
    last_ack: HashMap<u32, (Instant, u64)>,
    /// host id → when a leave for it first reached any other host.
    leaves: HashMap<u32, Instant>,
    /// Join events received (snapshots not counted).
    events: u64,
    /// Dashboard mode: (joined, host id) → when each event about it reached a host.
    fanout: HashMap<(bool, u32), Vec<Instant>>,
    /// Record `fanout`.
    record_fanout: bool,
}

struct ServerProc {
    child: Child,
    dir: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of the child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Start bulletin number `k` (its files in a directory of its own); with `state_from`,
/// a copy of that state directory (one certificate for all).
fn start_server(
    args: &Args,
    verifier: &Verifier,
    lans: usize,
    web: Option<SocketAddr>,
    k: usize,
    state_from: Option<&std::path::Path>,
) -> Result<(ServerProc, SocketAddr, String)> {
    let dir = std::env::temp_dir().join(format!("bulletin-load-{}-{k}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if let Some(from) = state_from {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(dir.join("state"))
            .status()?
            .success();
        if !ok {
            bail!("cannot copy {}", from.display());
        }
    }
    let mut cfg = format!(
        // Every simulated host comes from 127.0.0.1: lift the per-address caps (the
        // unauthenticated one is 16 by default, and registrations run 64 at a time).
        "lease_ttl_s = {}\nheartbeat_s = {}\nmax_connections = 1000000\nmax_connections_per_ip = 1000000\nmax_unauthenticated_per_ip = 1000000\nmax_web_connections_per_ip = 64\n",
        args.ttl_s, args.heartbeat_s
    );
    for l in 0..lans {
        cfg += &format!(
            "[[lan]]\nname = \"lan{l}\"\nverifier = \"{}\"\n",
            verifier.to_base64()
        );
    }
    std::fs::write(dir.join("bulletin.toml"), cfg)?;
    // A free loopback port: bind, note, release.
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let bin = std::env::current_exe()?.with_file_name("bulletin");
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", &addr.to_string(), "--state-dir"])
        .arg(dir.join("state"))
        .arg("--config")
        .arg(dir.join("bulletin.toml"))
        .args(
            web.map(|w| ["--web".to_string(), w.to_string()])
                .into_iter()
                .flatten(),
        )
        .args(
            args.store
                .as_ref()
                .map(|s| ["--store".to_string(), s.clone()])
                .into_iter()
                .flatten(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let server = ServerProc { child, dir };
    let fp = line.trim().to_string();
    if !fp.starts_with("sha256:") {
        bail!("bulletin did not print its fingerprint (got {fp:?})");
    }
    Ok((server, addr, fp))
}

async fn reader(mut rx: SessionRx, seen: Arc<Mutex<Seen>>, id: u32) {
    while let Ok(m) = rx.recv().await {
        let now = Instant::now();
        let Ok(mut s) = seen.lock() else { return };
        match m {
            ServerMsg::Ack { lease_ms } => {
                s.last_ack.insert(id, (now, lease_ms));
            }
            ServerMsg::Event(Event::Leave { host_id, .. }) => {
                s.leaves.entry(host_id).or_insert(now);
                s.leaves_last.insert(host_id, now);
                if s.record_fanout {
                    s.fanout.entry((false, host_id)).or_default().push(now);
                }
            }
            ServerMsg::Event(Event::Join(r)) => {
                s.events += 1;
                let j = s.joins.entry(r.host_id).or_insert((0, now));
                *j = (j.0 + 1, now);
                if s.record_fanout {
                    s.fanout.entry((true, r.host_id)).or_default().push(now);
                }
            }
            _ => {}
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.hosts == 0 || args.per_lan == 0 || args.hosts > 100_000 || args.window_s > 600 {
        bail!("--hosts must be 1..=100000, --per-lan at least 1, --window-s at most 600");
    }
    let lans = args.hosts.div_ceil(args.per_lan);
    let lapse = args.lapse.min(lans);
    let secret = [0x5au8; 32];
    let verifier = Verifier::from_secret(&secret);
    let web = match (args.mode, args.web) {
        (Mode::Lapse, _) => None,
        (Mode::Dashboard, Some(w)) => Some(w),
        (Mode::Dashboard, None) => Some(SocketAddr::from((
            [127, 0, 0, 1],
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
        ))),
    };
    if let Some(w) = web
        && !w.ip().is_loopback()
    {
        bail!("--web {w}: the load runs on loopback only");
    }
    if args.bulletins == 0 || args.bulletins > 8 || (args.bulletins > 1 && args.store.is_none()) {
        bail!("--bulletins must be 1..=8, and more than one needs --store");
    }
    let (server, addr, fp) = start_server(&args, &verifier, lans, web, 0, None)?;
    let pid = server.child.id();
    let client = Arc::new(Client::new(addr, &fp)?);
    let mut others = Vec::new();
    let mut clients = vec![client.clone()];
    for k in 1..args.bulletins {
        let (srv, a, _) = start_server(
            &args,
            &verifier,
            lans,
            None,
            k,
            Some(&server.dir.join("state")),
        )?;
        clients.push(Arc::new(Client::new(a, &fp)?));
        others.push(srv);
    }
    let pids: Vec<u32> = std::iter::once(pid)
        .chain(others.iter().map(|s| s.child.id()))
        .collect();
    let cpu = || -> Result<f64> { pids.iter().map(|p| cpu_seconds(*p)).sum() };
    let seen = Arc::new(Mutex::new(Seen::default()));

    // Phase 1: registration.
    let cpu0 = cpu()?;
    let t0 = Instant::now();
    let (mut sessions, retries) = register_all(&args, &clients, &verifier, &seen).await?;
    let reg_s = t0.elapsed().as_secs_f64();
    let reg_cpu = cpu()? - cpu0;
    sessions.sort_by_key(|s| s.0);
    eprintln!(
        "registered {} hosts in {lans} LANs in {reg_s:.2} s",
        sessions.len()
    );
    if let (Mode::Dashboard, Some(web)) = (args.mode, web) {
        let registration = serde_json::json!({
            "register_s": reg_s,
            "register_per_s": args.hosts as f64 / reg_s,
            "register_server_cpu_s": reg_cpu,
            "register_retries": retries,
        });
        let ctx = steady::Ctx {
            args: &args,
            client: &client,
            verifier: &verifier,
            seen: &seen,
            pid,
            web,
            lans,
        };
        let result = steady::run(ctx, sessions, registration).await;
        drop(server);
        return result;
    }
    if reg_s >= args.ttl_s as f64 {
        bail!(
            "registration took {reg_s:.1} s, longer than the lease ({} s): raise --ttl-s",
            args.ttl_s
        );
    }

    // Phase 2: every host heartbeats once per interval, spread evenly; server CPU measured.
    let hb = Duration::from_secs(args.heartbeat_s.max(1));
    let rounds = (args.window_s / args.heartbeat_s.max(1)).max(1);
    let cpu1 = cpu()?;
    let t1 = Instant::now();
    let gap = hb.div_f64(sessions.len() as f64);
    let mut sent = 0u64;
    for r in 0..rounds {
        let round_start = t1 + hb * r as u32;
        for (k, (_, _, tx)) in sessions.iter_mut().enumerate() {
            tokio::time::sleep_until((round_start + gap * k as u32).into()).await;
            tx.send(&ClientMsg::Heartbeat).await?;
            sent += 1;
        }
    }
    tokio::time::sleep_until((t1 + hb * rounds as u32).into()).await;
    let window = t1.elapsed().as_secs_f64();
    let hb_cpu = cpu()? - cpu1;
    let rss = rss_kib(pid);
    eprintln!("{sent} heartbeats in {window:.1} s");

    // Phase 2b: one new host per LAN of the coming lapses registers (at the bulletin its
    // number picks); the time until every host of its LAN has its join is the fan-out.
    let mut fanout_ms = Vec::new();
    let mut newcomers = Vec::new();
    for l in 0..lapse {
        let i = args.hosts + l;
        let lan = format!("lan{l}");
        let id = 1 + i as u32;
        let members = args.per_lan.min(args.hosts - l * args.per_lan);
        let c = &clients[i % clients.len()];
        let (sess, sent_at) = register_one(c, &verifier, i, &lan).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = seen
                .lock()
                .ok()
                .and_then(|s| s.joins.get(&id).copied())
                .filter(|(n, _)| *n >= members);
            if let Some((_, last)) = got {
                fanout_ms.push(last.saturating_duration_since(sent_at).as_secs_f64() * 1e3);
                break;
            }
            if Instant::now() > deadline {
                bail!("the join of host {id} did not reach all {members} hosts of {lan} in 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Gone again at once: it is no victim and must not lapse during the next phase.
        let (mut tx, _rx) = sess.split();
        tx.send(&ClientMsg::Unregister).await?;
        newcomers.push(tx);
    }
    fanout_ms.sort_by(f64::total_cmp);

    // Phase 3: the first host of `lapse` LANs goes silent; the others keep heartbeating.
    let victims: Vec<u32> = (0..lapse).map(|l| (l * args.per_lan) as u32 + 1).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(newcomers);
    if let Ok(mut s) = seen.lock() {
        s.leaves.clear();
        s.leaves_last.clear();
    }
    let until = Instant::now() + Duration::from_secs(args.ttl_s + 3);
    while Instant::now() < until {
        let round_start = Instant::now();
        for (k, (id, _, tx)) in sessions.iter_mut().enumerate() {
            if victims.contains(id) {
                continue;
            }
            tokio::time::sleep_until((round_start + gap * k as u32).into()).await;
            tx.send(&ClientMsg::Heartbeat).await?;
        }
        tokio::time::sleep_until((round_start + hb).into()).await;
    }
    let mut lat_ms: Vec<f64> = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        victims
            .iter()
            .filter_map(|v| {
                let (ack_at, lease_ms) = s.last_ack.get(v)?;
                let expiry = *ack_at + Duration::from_millis(*lease_ms);
                // The last host of the LAN to hear of it.
                let leave = s.leaves_last.get(v)?;
                Some(leave.saturating_duration_since(expiry).as_secs_f64() * 1e3)
            })
            .collect()
    };
    lat_ms.sort_by(f64::total_cmp);
    let (events, unexpected) = seen
        .lock()
        .map(|s| {
            (
                s.events,
                s.leaves.keys().filter(|h| !victims.contains(h)).count(),
            )
        })
        .unwrap_or((0, 0));
    for (_, _, tx) in &sessions {
        tx.close();
    }

    let result = serde_json::json!({
        "hosts": args.hosts,
        "store": if args.store.is_some() { "etcd" } else { "memory" },
        "bulletins": args.bulletins,
        "lans": lans,
        "hosts_per_lan": args.per_lan,
        "register_s": reg_s,
        "register_per_s": args.hosts as f64 / reg_s,
        "register_server_cpu_s": reg_cpu,
        "register_retries": retries,
        "join_events_delivered": events,
        "heartbeat_interval_s": args.heartbeat_s,
        "heartbeats_per_s": sent as f64 / window,
        "heartbeat_server_cpu_pct": 100.0 * hb_cpu / window,
        "heartbeat_server_cpu_us_each": 1e6 * hb_cpu / sent.max(1) as f64,
        "server_rss_kib": rss,
        "lapsed_hosts": victims.len(),
        "leaves_seen": lat_ms.len(),
        "unexpected_leaves": unexpected,
        "lapse_to_leave_ms_p50": pct(&lat_ms, 0.5),
        "lapse_to_leave_ms_max": pct(&lat_ms, 1.0),
        "join_fanout_ms_p50": pct(&fanout_ms, 0.5),
        "join_fanout_ms_max": pct(&fanout_ms, 1.0),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&result)?)?;
    }
    drop(others);
    drop(server);
    if unexpected > 0 {
        bail!("{unexpected} hosts that kept heartbeating lapsed: the generator fell behind");
    }
    if lat_ms.len() != victims.len() {
        bail!(
            "only {} of {} lapsed hosts produced a leave event",
            lat_ms.len(),
            victims.len()
        );
    }
    Ok(())
}

/// A live simulated host: id, LAN index, sending half.
type Live = (u32, usize, SessionTx);

/// Register `--hosts` hosts, `--concurrency` at a time, each with a reader recording what
/// it hears into `seen`. Returns the sessions and the retries it took.
async fn register_all(
    args: &Args,
    clients: &[Arc<Client>],
    verifier: &Verifier,
    seen: &Arc<Mutex<Seen>>,
) -> Result<(Vec<Live>, u32)> {
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let per_lan = args.per_lan;
    for i in 0..args.hosts {
        let client = clients[i % clients.len()].clone();
        let (sem, seen, v) = (sem.clone(), seen.clone(), verifier.clone());
        let lan = format!("lan{}", i / per_lan);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let id = 1 + i as u32;
            // As real hosts do, retry a timed-out attempt (counted in the results).
            let mut retries = 0u32;
            let s = loop {
                match register_one(&client, &v, i, &lan).await {
                    Ok(s) => break s,
                    Err(e) if retries >= 3 => {
                        return Err(e.context(format!("host {id} after {retries} retries")));
                    }
                    Err(_) => retries += 1,
                }
            };
            let (tx, rx) = s.0.split();
            tokio::spawn(reader(rx, seen, id));
            anyhow::Ok((id, i / per_lan, tx, retries))
        });
    }
    let mut sessions: Vec<(u32, usize, SessionTx)> = Vec::with_capacity(args.hosts);
    let mut retries = 0u32;
    while let Some(r) = set.join_next().await {
        let (id, lan, tx, tries) = r.context("task")??;
        retries += tries;
        sessions.push((id, lan, tx));
    }
    Ok((sessions, retries))
}

/// Register simulated host `i` (id `i + 1`, named `sim<i>`) in `lan`: its session, and
/// when its registration was sent.
async fn register_one(
    client: &Client,
    v: &Verifier,
    i: usize,
    lan: &str,
) -> Result<(bulletin::client::Session, Instant)> {
    let id = 1 + i as u32;
    let mut s = client.connect().await?;
    let proof = v.prove(&s.terms.nonce, id, lan);
    let sent = Instant::now();
    s.register(Register {
        host_id: id,
        name: format!("sim{i}"),
        // Subnets of 25 hosts, as racks: the dashboard groups a LAN by them.
        underlay: std::net::IpAddr::from([
            10,
            ((i / 25) >> 8) as u8,
            (i / 25) as u8,
            (i % 25) as u8 + 1,
        ]),
        prefix: 24,
        port: 7401,
        lans: vec![LanJoin {
            name: lan.to_string(),
            segment: "192.168.0.0/16".into(),
            proof,
        }],
    })
    .await?;
    Ok((s, sent))
}
