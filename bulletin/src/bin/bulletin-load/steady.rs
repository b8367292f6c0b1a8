//! `--mode dashboard`: the bulletin at steady state with every host reporting, hosts
//! churning and dashboard pages open.
//!
//! Every simulated host reports each `--report-s` what a real one does: a tunnel to every
//! other host of its LAN (RTT with a few % of jitter around a value of its own, no loss)
//! and two VM pairs with steady rates; it heartbeats each `--heartbeat-s`. Hosts leave
//! (graceful `Unregister`) and others rejoin at `--churn-pct-per-min`. `--pages` pages
//! follow `/api/v1/events?lan=…` over plain HTTP on loopback, counting the bytes they get.
//! Measured over `--steady-s` after `--warmup-s`: the server's CPU and RSS, bytes per
//! second per page, the time for a join or leave to reach every other host of its LAN
//! (p50/p99 over every delivery), and the dashboard's build time (from `/metrics`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bulletin::client::{Client, SessionTx};
use bulletin::proof::Verifier;
use bulletin::proto::{ClientMsg, LanReport, PairReport, PeerReport, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Args, Live, Seen, cpu_seconds, pct, reader, register_one, rss_kib};

/// What the run shares.
pub(crate) struct Ctx<'a> {
    pub(crate) args: &'a Args,
    pub(crate) client: &'a Arc<Client>,
    pub(crate) verifier: &'a Verifier,
    pub(crate) seen: &'a Arc<Mutex<Seen>>,
    pub(crate) pid: u32,
    pub(crate) web: SocketAddr,
    pub(crate) lans: usize,
}

/// A page's count of bytes, split at the start of the measurement.
#[derive(Default)]
struct PageBytes {
    total: AtomicU64,
    /// Bytes of its first event (the snapshot) once it is whole.
    snapshot: AtomicU64,
    deltas: AtomicU64,
    reconnects: AtomicU64,
}

/// A small deterministic jitter source (xorshift): the same run each time.
struct Jitter(u64);

impl Jitter {
    /// A factor in [1 - pct/100, 1 + pct/100].
    fn factor(&mut self, pct: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + pct / 100.0 * (2.0 * unit - 1.0)
    }
}

/// Host `i`'s report: a tunnel to every other host of its LAN, two VM pairs.
fn report(i: usize, lan: usize, members: &[usize], elapsed_s: f64, j: &mut Jitter) -> LanReport {
    let peers = members
        .iter()
        .filter(|&&k| k != i)
        .map(|&k| {
            // Each tunnel has an RTT of its own (200-800 µs), jittering by 3 %.
            let base = 200.0 + ((i * 7919 + k * 104_729) % 600) as f64;
            let p50 = (base * j.factor(3.0)) as u64;
            PeerReport {
                host_id: Some(1 + k as u32),
                name: format!("sim{k}"),
                tunnel: Tunnel {
                    health: "ok".into(),
                    rtt_p50_us: Some(p50),
                    rtt_p99_us: Some((2.0 * base * j.factor(3.0)) as u64),
                    loss_tx_ratio: 0.0,
                    loss_rx_ratio: 0.0,
                    tx_rate_bps: (400_000.0 * j.factor(3.0)) as u64,
                    rx_rate_bps: (400_000.0 * j.factor(3.0)) as u64,
                },
            }
        })
        .collect();
    let vm = |host: usize, n: u8| {
        let h = (host as u32 + 1).to_be_bytes();
        [0x52, 0x54, h[1], h[2], h[3], n]
    };
    let next = members
        .iter()
        .position(|&k| k == i)
        .map_or(i, |p| members[(p + 1) % members.len()]);
    // 1 Mbit/s and 200 kbit/s between VMs, counted since the start.
    let pairs = [(1, 125_000.0), (2, 25_000.0)]
        .into_iter()
        .map(|(n, bytes_per_s)| {
            let bytes = (bytes_per_s * elapsed_s) as u64;
            PairReport {
                src_mac: vm(i, n),
                src_ip: Some(std::net::IpAddr::from([
                    192,
                    168,
                    (i >> 7) as u8,
                    // Two VMs a host: .2k+0 and .2k+1 (128 hosts per /24).
                    ((i & 0x7f) << 1) as u8 + (n - 1),
                ])),
                dst_mac: vm(next, n),
                dst_ip: None,
                packets: bytes / 1000,
                bytes,
            }
        })
        .collect();
    LanReport {
        lan: format!("lan{lan}"),
        peers,
        pairs,
    }
}

/// Follow `/api/v1/events?lan=L` as a page does, counting what arrives; reconnects when
/// the stream ends, until `until`.
async fn page(web: SocketAddr, lan: String, bytes: Arc<PageBytes>, until: Instant) {
    while Instant::now() < until {
        let Ok(mut s) = tokio::net::TcpStream::connect(web).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let req = format!(
            "GET /api/v1/events?lan={lan} HTTP/1.1\r\nHost: {web}\r\nAccept: text/event-stream\r\n\r\n"
        );
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 64 * 1024];
        // The snapshot is whole when the first blank line after `event: snapshot` comes.
        let (mut first, mut tail) = (true, Vec::<u8>::new());
        loop {
            let n = tokio::select! {
                r = s.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = tokio::time::sleep_until(until.into()) => return,
            };
            bytes.total.fetch_add(n as u64, Ordering::Relaxed);
            let chunk = &buf[..n];
            bytes.deltas.fetch_add(
                chunk.windows(12).filter(|w| w == b"event: delta").count() as u64,
                Ordering::Relaxed,
            );
            if first {
                tail.extend_from_slice(chunk);
                if let Some(at) = tail
                    .windows(15)
                    .position(|w| w == b"event: snapshot")
                    .and_then(|s| {
                        tail[s..]
                            .windows(2)
                            .position(|w| w == b"\n\n")
                            .map(|e| s + e)
                    })
                {
                    bytes.snapshot.store(at as u64, Ordering::Relaxed);
                    first = false;
                    tail = Vec::new();
                }
            }
        }
        bytes.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// `GET /metrics`: the named samples.
async fn metrics(web: SocketAddr, names: &[&str]) -> Result<Vec<f64>> {
    let mut s = tokio::net::TcpStream::connect(web).await?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .context("/metrics took over 5 s")??;
    names
        .iter()
        .map(|n| {
            text.lines()
                .find_map(|l| l.strip_prefix(n)?.strip_prefix(' ')?.trim().parse().ok())
                .with_context(|| format!("/metrics has no {n}"))
        })
        .collect()
}

const BUILD: [&str; 3] = [
    "bulletin_dashboard_build_seconds_sum",
    "bulletin_dashboard_build_seconds_count",
    "bulletin_dashboard_build_max_seconds",
];

/// Run the steady state on the registered `sessions`, print and write the results.
pub(crate) async fn run(
    ctx: Ctx<'_>,
    sessions: Vec<Live>,
    registration: serde_json::Value,
) -> Result<()> {
    let a = ctx.args;
    let n = sessions.len();
    let t_start = Instant::now();
    let until = t_start + Duration::from_secs(a.warmup_s + a.steady_s + 1);
    // Slot per simulated host: its sending half while it is registered.
    let mut live: Vec<Option<SessionTx>> = (0..n).map(|_| None).collect();
    let mut lan_of = vec![0usize; n];
    for (id, lan, tx) in sessions {
        let i = id as usize - 1;
        lan_of[i] = lan;
        live[i] = Some(tx);
    }
    let members: Vec<Vec<usize>> = (0..ctx.lans)
        .map(|l| (0..n).filter(|&i| lan_of[i] == l).collect())
        .collect();
    if let Ok(mut s) = ctx.seen.lock() {
        s.fanout.clear();
        s.record_fanout = true;
    }
    let pages = open_pages(&ctx, until);

    // Churn: one host leaves every `gap`, and the one that left before it rejoins.
    let churn_gap =
        Duration::from_secs_f64(60.0 / (n as f64 * a.churn_pct_per_min / 100.0).max(1e-3));
    let mut next_churn = t_start + churn_gap;
    let mut churn_k = 0usize;
    let mut away: Option<usize> = None;
    let mut closing: Vec<SessionTx> = Vec::new();
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::unbounded_channel();
    // When each event was caused, and how many hosts of its LAN were registered then
    // (each must hear of it): (joined, host id) → (instant, hosts).
    let mut caused: HashMap<(bool, u32), (Instant, usize)> = HashMap::new();
    let registered = |live: &[Option<SessionTx>], lan: usize| {
        members[lan].iter().filter(|&&k| live[k].is_some()).count()
    };
    let (mut leaves, mut joins, mut reports, mut join_errors) = (0u64, 0u64, 0u64, 0u64);

    let report = Duration::from_secs(a.report_s.max(1));
    let hb_every = (a.heartbeat_s / a.report_s.max(1)).max(1);
    let gap = report.div_f64(n as f64);
    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15);
    let warm_at = t_start + Duration::from_secs(a.warmup_s);
    let mut marks: Option<(f64, u64, Vec<u64>, Vec<f64>)> = None;
    let mut round = 0u64;
    'run: loop {
        let round_start = t_start + report * round as u32;
        for i in 0..n {
            let at = round_start + gap * i as u32;
            tokio::time::sleep_until(at.into()).await;
            let now = Instant::now();
            if now >= until {
                break 'run;
            }
            if marks.is_none() && now >= warm_at {
                let bytes = pages
                    .iter()
                    .map(|p| p.total.load(Ordering::Relaxed))
                    .collect();
                marks = Some((
                    cpu_seconds(ctx.pid)?,
                    leaves + joins,
                    bytes,
                    metrics(ctx.web, &BUILD).await?,
                ));
                if let Ok(mut s) = ctx.seen.lock() {
                    s.fanout.clear();
                }
                caused.clear();
            }
            while let Ok((k, tx, sent)) = joined_rx.try_recv() {
                caused.insert((true, 1 + k as u32), (sent, registered(&live, lan_of[k])));
                live[k] = Some(tx);
                joins += 1;
            }
            if now >= next_churn {
                next_churn += churn_gap;
                for tx in closing.drain(..) {
                    tx.close();
                }
                // The one away rejoins; the next in turn (spread over the LANs) leaves.
                if let Some(k) = away.take() {
                    rejoin(&ctx, k, lan_of[k], joined_tx.clone());
                }
                let k = (churn_k * 7919) % n;
                churn_k += 1;
                if let Some(mut tx) = live[k].take() {
                    caused.insert(
                        (false, 1 + k as u32),
                        (Instant::now(), registered(&live, lan_of[k])),
                    );
                    tx.send(&ClientMsg::Unregister).await?;
                    closing.push(tx);
                    leaves += 1;
                    away = Some(k);
                }
            }
            if live[i].is_none() {
                continue;
            }
            let r = report_for(
                i,
                lan_of[i],
                &members[lan_of[i]],
                &live,
                t_start,
                &mut jitter,
            );
            let Some(tx) = live[i].as_mut() else { continue };
            if tx.send(&ClientMsg::Report(vec![r])).await.is_err() {
                join_errors += 1;
                continue;
            }
            reports += 1;
            if round.is_multiple_of(hb_every) {
                tx.send(&ClientMsg::Heartbeat).await?;
            }
        }
        round += 1;
    }
    let Some((cpu0, churned0, bytes0, build0)) = marks else {
        bail!("the run ended before the warm-up did: raise --steady-s");
    };
    let window = a.steady_s as f64;
    let cpu = cpu_seconds(ctx.pid)? - cpu0;
    let rss = rss_kib(ctx.pid);
    let build1 = metrics(ctx.web, &BUILD).await?;
    let heap = metrics(ctx.web, &["bulletin_heap_bytes"])
        .await
        .ok()
        .map(|v| v[0]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (lat_ms, delivered, expected) = fanout(ctx.seen, &caused);
    let page_bps: Vec<f64> = pages
        .iter()
        .zip(&bytes0)
        .map(|(p, b0)| (p.total.load(Ordering::Relaxed) - b0) as f64 / window)
        .collect();
    let mut sorted = page_bps.clone();
    sorted.sort_by(f64::total_cmp);
    let builds = (build1[1] - build0[1]).max(1.0);
    let result = serde_json::json!({
        "mode": "dashboard",
        "hosts": n,
        "lans": ctx.lans,
        "hosts_per_lan": a.per_lan,
        "registration": registration,
        "report_interval_s": a.report_s,
        "heartbeat_interval_s": a.heartbeat_s,
        "tunnels_per_report": a.per_lan - 1,
        "reports_sent": reports,
        "churn_pct_per_min": a.churn_pct_per_min,
        "warmup_s": a.warmup_s,
        "window_s": window,
        "leaves_and_joins_in_window": leaves + joins - churned0,
        "server_cpu_pct": 100.0 * cpu / window,
        "server_rss_kib": rss,
        "server_heap_bytes": heap,
        "pages": a.pages,
        "page_bytes_per_s": page_bps,
        "page_bytes_per_s_max": sorted.last().copied().unwrap_or(0.0),
        "page_snapshot_bytes": pages.iter().map(|p| p.snapshot.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "page_delta_events": pages.iter().map(|p| p.deltas.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "page_reconnects": pages.iter().map(|p| p.reconnects.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "fanout_events": caused.len(),
        "fanout_deliveries": delivered,
        "fanout_expected": expected,
        "fanout_ms_p50": pct(&lat_ms, 0.5),
        "fanout_ms_p99": pct(&lat_ms, 0.99),
        "fanout_ms_max": pct(&lat_ms, 1.0),
        "overview_build_ms_mean": 1e3 * (build1[0] - build0[0]) / builds,
        "overview_build_ms_max": 1e3 * build1[2],
        "report_send_errors": join_errors,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&result)?)?;
    }
    for tx in live.iter().flatten().chain(&closing) {
        tx.close();
    }
    if delivered < expected {
        bail!("{delivered} of {expected} join and leave deliveries arrived");
    }
    Ok(())
}

/// `--pages` dashboard pages following their LAN's events until `until`, spread over
/// the LANs.
fn open_pages(ctx: &Ctx<'_>, until: Instant) -> Vec<Arc<PageBytes>> {
    let pages: Vec<Arc<PageBytes>> = (0..ctx.args.pages).map(|_| Arc::default()).collect();
    for (p, b) in pages.iter().enumerate() {
        tokio::spawn(page(
            ctx.web,
            format!("lan{}", p % ctx.lans),
            b.clone(),
            until,
        ));
    }
    pages
}

/// Register simulated host `k` again on its LAN in the background; its sending half (and
/// when its registration was sent) comes back on `done`.
fn rejoin(ctx: &Ctx<'_>, k: usize, lan: usize, done: Joined) {
    let (client, v, seen, lan) = (
        ctx.client.clone(),
        ctx.verifier.clone(),
        ctx.seen.clone(),
        format!("lan{lan}"),
    );
    tokio::spawn(async move {
        match register_one(&client, &v, k, &lan).await {
            Ok((s, sent)) => {
                let (tx, rx) = s.split();
                tokio::spawn(reader(rx, seen, 1 + k as u32));
                let _ = done.send((k, tx, sent));
            }
            Err(e) => eprintln!("rejoin of sim{k} failed: {e:#}"),
        }
    });
}

/// Where a rejoined host's sending half comes back.
type Joined = tokio::sync::mpsc::UnboundedSender<(usize, SessionTx, Instant)>;

/// Fan-out: every delivery of every event `caused` ((joined, host id) → when, and how
/// many hosts were to hear of it): the delays in ms, sorted, the deliveries seen and
/// those expected.
fn fanout(
    seen: &Mutex<Seen>,
    caused: &HashMap<(bool, u32), (Instant, usize)>,
) -> (Vec<f64>, usize, usize) {
    let mut lat_ms: Vec<f64> = Vec::new();
    let (mut delivered, mut expected) = (0usize, 0usize);
    if let Ok(s) = seen.lock() {
        for (key, (at, hosts)) in caused {
            expected += hosts;
            if let Some(got) = s.fanout.get(key) {
                delivered += got.len();
                lat_ms.extend(
                    got.iter()
                        .map(|t| t.saturating_duration_since(*at).as_secs_f64() * 1e3),
                );
            }
        }
    }
    lat_ms.sort_by(f64::total_cmp);
    (lat_ms, delivered, expected)
}

/// Host `i`'s report, with tunnels only to the hosts of its LAN that are registered.
fn report_for(
    i: usize,
    lan: usize,
    members: &[usize],
    live: &[Option<SessionTx>],
    t0: Instant,
    j: &mut Jitter,
) -> LanReport {
    // Members away (churned out) are not measured: a real host drops their tunnels.
    let up: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&k| live[k].is_some())
        .collect();
    report(i, lan, &up, t0.elapsed().as_secs_f64(), j)
}
