//! The churn soak, shared by `vmvpn-lab soak-churn` (the hour, outside CI) and the
//! 10-minute test in CI: two stable hosts ping each other (20 a second) while four others
//! join, leave and crash every 3 s through a bulletin. Each minute it samples the RSS of
//! the stable daemons and the bulletin, and the C allocator's own figures, which they log
//! with `VMVPN_HEAP_LOG_S` (what the program holds, apart from what the allocator keeps).

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Lab, rss_kib};

/// The processes watched: the stable pair and the bulletin.
pub const WATCHED: [&str; 3] = ["s1", "s2", "bulletin"];
/// Seconds between heap lines in the watched processes' logs.
const HEAP_EVERY_S: u64 = 15;

/// One process at one minute.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Bytes the program holds (malloc'd, not freed), from its latest heap line.
    pub heap_in_use: Option<u64>,
    /// Bytes free inside the allocator's arenas.
    pub heap_free: Option<u64>,
}

/// Every watched process at one minute.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Minutes since the churn began.
    pub minute: u64,
    /// In [`WATCHED`] order.
    pub memory: [Memory; 3],
}

/// How one process's memory moved after it settled.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// Which process.
    pub process: &'static str,
    /// From this minute on.
    pub from_minute: u64,
    /// RSS at `from_minute` and at the end, KiB.
    pub rss_kib: (u64, u64),
    /// Largest minus smallest RSS since `from_minute`, over the RSS then, percent.
    pub rss_range_pct: f64,
    /// Heap in use at `from_minute` and at the end, bytes.
    pub heap_in_use: (Option<u64>, Option<u64>),
    /// End minus start over start, percent.
    pub heap_growth_pct: Option<f64>,
}

/// What a churn soak saw.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnSoak {
    /// Minutes of churn.
    pub minutes: u64,
    /// ping's summary line for the stable pair.
    pub ping: String,
    /// The stable pair lost a ping.
    pub lost: bool,
    /// Graceful leaves, crashes and restarts of the churning hosts.
    pub leaves: u64,
    /// Crashes.
    pub crashes: u64,
    /// Joins (restarts).
    pub joins: u64,
    /// One sample a minute, the first before the churn.
    pub samples: Vec<Sample>,
}

/// The allocator's figures in the last heap line of `log`: (in use, free).
pub fn last_heap_line(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains(" in_use="))?;
    let field = |name: &str| -> Option<u64> {
        let at = line.find(name)? + name.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((field(" in_use=")?, field(" free=")?))
}

/// Run the churn soak for `minutes`, printing a line a minute. `VMVPN_HEAP_LOG_S` must be
/// in the environment before the lab starts (see [`heap_log_env`]).
pub fn churn_soak(minutes: u64) -> ChurnSoak {
    let churners = ["c1", "c2", "c3", "c4"];
    let mut lab = Lab::builder("churn")
        .subnet(&["s1", "c1", "c2"])
        .subnet(&["s2", "c3", "c4"])
        .lan(
            "lan1",
            [192, 168, 100],
            &["s1", "s2", "c1", "c2", "c3", "c4"],
            1,
        )
        .bulletin(6, 2)
        .start();
    for h in ["s1", "s2"] {
        lab.wait_tunnels(h, "lan1", 5, Duration::from_secs(20));
    }
    // One heap line in every log before the first sample.
    std::thread::sleep(Duration::from_secs(HEAP_EVERY_S + 1));
    let (a, z) = (
        lab.vm("s1", "lan1", 0).clone(),
        lab.vm("s2", "lan1", 0).clone(),
    );
    let sample = |lab: &Lab, minute: u64| {
        let logs = [lab.log("s1"), lab.log("s2"), lab.bulletin_log()];
        let pids = [
            lab.pid("s1"),
            lab.pid("s2"),
            lab.bulletin_pid().unwrap_or(0),
        ];
        let memory = std::array::from_fn(|i| {
            let heap = last_heap_line(&logs[i]);
            Memory {
                rss_kib: rss_kib(pids[i]),
                heap_in_use: heap.map(|h| h.0),
                heap_free: heap.map(|h| h.1),
            }
        });
        let s = Sample { minute, memory };
        println!(
            "minute {minute}: {}",
            WATCHED
                .iter()
                .zip(&s.memory)
                .map(|(n, m)| format!(
                    "{n} RSS {} KiB heap {} B",
                    m.rss_kib,
                    m.heap_in_use.map_or("?".into(), |h| h.to_string())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s
    };
    let mut samples = vec![sample(&lab, 0)];
    // Pings all along, from a process of their own: 20 a second for the whole soak.
    let count = minutes * 60 * 20;
    let pinger = Command::new("ip")
        .args([
            "netns", "exec", &a.ns, "ping", "-n", "-q", "-i", "0.05", "-W", "1",
        ])
        .args(["-c", &count.to_string(), &z.ip.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let t0 = Instant::now();
    let (mut step, mut events) = (0usize, [0u64; 3]);
    while t0.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(3));
        let h = churners[step % churners.len()];
        if lab.running(h) {
            // Alternate a graceful leave and a crash.
            if (events[0] + events[1]) % 2 == 0 {
                lab.stop(h);
                events[0] += 1;
            } else {
                lab.kill(h);
                events[1] += 1;
            }
        } else {
            lab.restart(h);
            events[2] += 1;
        }
        step += 1;
        let m = t0.elapsed().as_secs() / 60;
        if m > samples.last().map_or(0, |s| s.minute) {
            samples.push(sample(&lab, m));
        }
    }
    let out = match pinger.and_then(|c| c.wait_with_output()) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("ping: {e}"),
    };
    let ping = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("no ping summary")
        .to_string();
    ChurnSoak {
        minutes,
        lost: !ping.contains(" 0% packet loss"),
        ping,
        leaves: events[0],
        crashes: events[1],
        joins: events[2],
        samples,
    }
}

/// Put `VMVPN_HEAP_LOG_S` in this process's environment, for the daemons it starts.
pub fn heap_log_env() {
    // SAFETY: called while the caller has only its main thread, before any lab starts.
    unsafe { std::env::set_var(bulletin::process::HEAP_LOG_ENV, HEAP_EVERY_S.to_string()) };
}

impl ChurnSoak {
    /// How each watched process moved from minute `from` to the end.
    pub fn drift(&self, from: u64) -> Vec<Drift> {
        let tail: Vec<&Sample> = self.samples.iter().filter(|s| s.minute >= from).collect();
        WATCHED
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let first = tail.first().map(|s| s.memory[i]).unwrap_or_default();
                let last = tail.last().map(|s| s.memory[i]).unwrap_or_default();
                let rss: Vec<u64> = tail.iter().map(|s| s.memory[i].rss_kib).collect();
                let (lo, hi) = (
                    rss.iter().copied().min().unwrap_or(0),
                    rss.iter().copied().max().unwrap_or(0),
                );
                Drift {
                    process: name,
                    from_minute: from,
                    rss_kib: (first.rss_kib, last.rss_kib),
                    rss_range_pct: 100.0 * (hi - lo) as f64 / first.rss_kib.max(1) as f64,
                    heap_in_use: (first.heap_in_use, last.heap_in_use),
                    heap_growth_pct: match (first.heap_in_use, last.heap_in_use) {
                        (Some(a), Some(b)) if a > 0 => {
                            Some(100.0 * (b as f64 - a as f64) / a as f64)
                        }
                        _ => None,
                    },
                }
            })
            .collect()
    }
}
