//! One timer table behind [`Engine::poll_timeout`]: each periodic job has its own
//! deadline, and [`Engine::handle_timeout`] runs the jobs that are due. The peers' job
//! (liveness, hellos, probes, keepalives, path MTU, rates) runs every [`TICK`]; the
//! others only when they have work: reassembly while frames are in progress, beacons on
//! LANs with a multicast group, MAC ageing at its sweep interval.

use std::time::{Duration, Instant};

use tracing::info;

use super::probes::{PROBE_BUDGET, PROBE_INTERVAL};
use super::{Engine, LanId, PeerId};
use crate::status::FloodMode;

/// How often the peers' job runs.
pub const TICK: Duration = Duration::from_millis(200);

/// The periodic jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Liveness, hellos, probes, keepalives, path MTU, rates.
    Peers = 0,
    /// Reclaiming fragments that did not complete in time.
    Reassembly = 1,
    /// Beacon freshness and our own beacons.
    Beacons = 2,
    /// MAC ageing.
    MacSweep = 3,
}

const JOBS: [Job; 4] = [Job::Peers, Job::Reassembly, Job::Beacons, Job::MacSweep];

/// When each job runs next (None: it has nothing to do until armed again).
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    at: [Option<Instant>; 4],
    /// The first timeout ran (before it, every job is due).
    started: bool,
}

impl Deadlines {
    fn due(&self, j: Job, now: Instant) -> bool {
        !self.started || self.at[j as usize].is_some_and(|t| now >= t)
    }

    fn set(&mut self, j: Job, at: Option<Instant>) {
        self.at[j as usize] = at;
    }

    /// Arm the reassembly job if it is not (a fragment is waiting for the rest).
    pub(crate) fn arm_reassembly(&mut self, now: Instant) {
        let slot = &mut self.at[Job::Reassembly as usize];
        if slot.is_none() {
            *slot = Some(now + TICK);
        }
    }
}

impl Engine {
    /// When [`handle_timeout`](Self::handle_timeout) next wants to run (None before the
    /// first run: call it at once).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.deadlines.started {
            return None;
        }
        self.deadlines.at.iter().flatten().min().copied()
    }

    /// Run the jobs that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Whatever reads the tables below (expiry, exports, services) sees every frame.
        self.end_runs();
        self.epoch.get_or_insert(now);
        let second = self.ts(now) / 1_000_000_000;
        let new_second = self.measure.last_second != Some(second);
        self.measure.last_second = Some(second);
        for job in JOBS {
            if !self.deadlines.due(job, now) {
                continue;
            }
            let next = match job {
                Job::Peers => {
                    self.run_peers(now, second, new_second);
                    Some(now + TICK)
                }
                Job::Reassembly => {
                    self.reassembly.expire(now);
                    self.count_reassembly_drops(None);
                    (self.reassembly.stats().in_progress > 0).then(|| now + TICK)
                }
                Job::Beacons => {
                    let mut any = false;
                    for li in 0..self.lans.len() {
                        let spec = &self.lans[li].spec;
                        if spec.flood != FloodMode::Unicast && spec.group.is_some() {
                            any = true;
                        }
                        self.run_beacons(LanId(li), now);
                    }
                    any.then(|| now + TICK)
                }
                Job::MacSweep => {
                    let every = self.timers.mac_sweep;
                    for l in &mut self.lans {
                        if l.next_sweep.is_none_or(|s| now >= s) {
                            l.macs.expire(now);
                            l.next_sweep = Some(now + every);
                        }
                    }
                    self.lans.iter().filter_map(|l| l.next_sweep).min()
                }
            };
            self.deadlines.set(job, next);
        }
        self.deadlines.started = true;
    }

    /// Every peer: rates, liveness, hellos while down, path MTU probes, RTT probes or
    /// keepalives while up.
    fn run_peers(&mut self, now: Instant, second: u64, new_second: bool) {
        for l in &mut self.lans {
            for p in &mut l.peers {
                p.count
                    .series
                    .update(second, p.count.traffic.tx_bytes, p.count.traffic.rx_bytes);
                p.probe.rtt.rotate(second);
            }
            if new_second {
                l.measure.vms.tick(second);
                l.measure.flows.expire(second);
            }
        }
        self.run_services(now, second, new_second);
        // About one probe per second per peer, but at most PROBE_BUDGET a second in all.
        let up: usize = self.lans.iter().map(|l| l.flood_members.len()).sum();
        let interval = PROBE_INTERVAL.max(Duration::from_secs_f64(up as f64 / PROBE_BUDGET));
        let t = self.timers;
        for li in 0..self.lans.len() {
            let lan = LanId(li);
            let mut changed = false;
            for i in 0..self.lans[li].peers.len() {
                let pi = PeerId::at(i);
                let l = &mut self.lans[li];
                let p = &mut l.peers[i];
                let heard_ago = p.link.last_heard.map(|h| now.saturating_duration_since(h));
                if heard_ago.is_none_or(|a| a >= t.dead_after)
                    && let Some(e) = p.lapse(lan)
                {
                    changed = true;
                    info!(lan = %l.spec.name, peer = %p.addr, name = %p.name, silent_s = t.dead_after.as_secs(), "tunnel down: nothing heard");
                    self.events.push(e);
                }
                self.run_relay(lan, pi, now);
                let p = &mut self.lans[li].peers[i];
                if !p.tunnel.is_up() {
                    let due = p
                        .link
                        .last_hello
                        .is_none_or(|h| now.saturating_duration_since(h) >= t.hello_interval);
                    if due {
                        self.queue_hello(lan, pi, now, true);
                    }
                    continue;
                }
                // Path MTU probes go beside the RTT probes and keepalives, not instead.
                if let Some(size) = p.path.mtu.poll_probe(now)
                    && self.pmtu_probes.len() < 1024
                {
                    self.pmtu_probes.push_back((lan, p.addr, size));
                }
                if self.measure.accounting.probes && p.probe.next.is_none_or(|t| now >= t) {
                    // Spread peers over the interval so probes do not go out in bursts.
                    let spread =
                        interval.mul_f64(0.8 + 0.4 * ((i * 37 + li * 11) % 100) as f64 / 100.0);
                    p.probe.next = Some(now + spread);
                    self.queue_probe(lan, pi, now);
                } else if p
                    .link
                    .last_sent
                    .is_none_or(|s| now.saturating_duration_since(s) >= t.keepalive_interval)
                {
                    self.queue_keepalive(lan, pi, now);
                }
            }
            if changed {
                self.lans[li].rebuild_flood();
            }
        }
    }
}
