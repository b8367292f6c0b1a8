//! Rate limits per VM and per LAN (so that one greedy or misbehaving VM cannot
//! take a LAN's or a host's whole capacity):
//! token buckets that police frames at the TAP, each direction apart. `out` is what a VM
//! sends (read from the TAP), `in` what it receives (written to the TAP); a LAN-wide limit
//! covers all of this host's VMs on the LAN together. A frame over its VM's or its LAN's
//! bucket is dropped and counted here, not among the LAN's drops: a limit that works is
//! not a fault, and must not raise the drops alarm.
//!
//! The check is O(1) in the frame and allocates nothing: a LAN without limits pays one
//! branch; with limits, a scan of its few limited MACs (an operator limits a handful of
//! VMs, not thousands) and a bucket refill from the frame's `now`. Segments of a TSO frame
//! are policed one by one, so a burst smaller than 64 KB still passes part of one.
//!
//! A VM's limit may shape what it sends instead (`shape_ms`): frames over the rate wait
//! in a queue of that many milliseconds at the rate (slots allocated when the LAN is
//! joined), and leave as tokens come, so TCP sees delay rather than loss. Only a full
//! queue drops.

use std::collections::HashMap;
use std::time::Instant;

use super::macdb::Mac;
pub use crate::status::{LimitCounters, LimitDirection as Direction, LimitStatus};

impl Direction {
    fn covers_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
    fn covers_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
}

/// One configured limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    /// The VM's MAC; None: the whole LAN on this host.
    pub mac: Option<Mac>,
    /// The VM's libvirt name, when the limit named it (`vm = "…"`), for the views.
    pub vm: Option<String>,
    /// Bits per second.
    pub rate_bps: u64,
    /// Bytes the bucket holds: how far a burst may go over the rate.
    pub burst_bytes: u64,
    /// What it covers.
    pub direction: Direction,
    /// Shape what the VM sends: hold up to this many milliseconds of frames at the rate
    /// (0: police, drop at once). Per-VM limits only.
    pub shape_ms: u32,
}

impl super::Engine {
    /// Put new limits in force on the LAN named `lan` (see [`Limits::replace`]).
    pub fn set_limits(&mut self, lan: &str, specs: &[LimitSpec]) -> Result<(), String> {
        let l = self.lan_named_mut(lan)?;
        l.limits.replace(specs, l.spec.max_frame);
        l.spec.limits = specs.to_vec();
        Ok(())
    }
}

/// A token bucket in bytes.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bytes per nanosecond.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    /// A full bucket of `burst_bytes`, filling at `rate_bps` bits per second.
    pub fn new(rate_bps: u64, burst_bytes: u64) -> Self {
        Bucket {
            rate: rate_bps as f64 / 8e9,
            burst: burst_bytes as f64,
            tokens: burst_bytes as f64,
            last: None,
        }
    }

    /// Refill for the time since the last frame; true if `bytes` fit now (not taken).
    #[inline]
    fn fits(&mut self, bytes: usize, now: Instant) -> bool {
        // Frames of one batch share their `now`: the bucket refills once per batch. Time
        // only moves forward: arrival times, converted from the kernel's wall-clock stamps
        // batch by batch, may step back a little (a clock adjustment between batches).
        match self.last {
            Some(last) if now <= last => {}
            Some(last) => {
                let ns = now.duration_since(last).as_nanos() as f64;
                self.tokens = (self.tokens + ns * self.rate).min(self.burst);
                self.last = Some(now);
            }
            None => self.last = Some(now),
        }
        self.tokens >= bytes as f64
    }

    #[inline]
    fn take(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// Take `bytes` if they fit now.
    #[inline]
    pub fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        let ok = self.fits(bytes, now);
        if ok {
            self.take(bytes);
        }
        ok
    }
}

impl LimitCounters {
    #[inline]
    fn count(&mut self, ok: bool, bytes: usize) {
        if ok {
            self.passed_frames_total += 1;
            self.passed_bytes_total += bytes as u64;
        } else {
            self.dropped_frames_total += 1;
            self.dropped_bytes_total += bytes as u64;
        }
    }
}

/// Frames a shaping limit holds back, first in first out, in slots allocated up front.
#[derive(Debug, Clone)]
struct Held {
    slots: Vec<u8>,
    lens: Vec<usize>,
    slot: usize,
    head: usize,
    count: usize,
    bytes: usize,
    max_bytes: usize,
}

impl Held {
    fn new(max_bytes: usize, slot: usize) -> Self {
        let n = max_bytes.div_ceil(slot.max(1)).max(1);
        Held {
            slots: vec![0; n * slot],
            lens: vec![0; n],
            slot,
            head: 0,
            count: 0,
            bytes: 0,
            max_bytes,
        }
    }

    fn push(&mut self, frame: &[u8]) -> bool {
        let n = self.lens.len();
        if self.count == n || frame.len() > self.slot || self.bytes + frame.len() > self.max_bytes {
            return false;
        }
        let i = (self.head + self.count) % n;
        self.slots[i * self.slot..i * self.slot + frame.len()].copy_from_slice(frame);
        self.lens[i] = frame.len();
        self.count += 1;
        self.bytes += frame.len();
        true
    }

    fn front_len(&self) -> Option<usize> {
        (self.count > 0).then(|| self.lens[self.head])
    }

    /// Copy the oldest frame into `out` and let it go; its length.
    fn pop_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let len = self.front_len()?;
        let dst = out.get_mut(..len)?;
        let i = self.head;
        dst.copy_from_slice(&self.slots[i * self.slot..i * self.slot + len]);
        self.head = (self.head + 1) % self.lens.len();
        self.count -= 1;
        self.bytes -= len;
        Some(len)
    }
}

/// One limit at work: a bucket per direction it covers.
#[derive(Debug, Clone)]
struct Limiter {
    spec: LimitSpec,
    rx: Option<Bucket>,
    tx: Option<Bucket>,
    count_in: LimitCounters,
    count_out: LimitCounters,
    /// The shaping queue of what the VM sends (`shape_ms` > 0).
    held: Option<Held>,
    delayed: u64,
}

impl Limiter {
    /// The bucket and counts of one direction, if this limit covers it.
    fn side(&mut self, inbound: bool) -> Option<(&mut Bucket, &mut LimitCounters)> {
        if inbound {
            self.rx.as_mut().map(|b| (b, &mut self.count_in))
        } else {
            self.tx.as_mut().map(|b| (b, &mut self.count_out))
        }
    }

    fn new(spec: LimitSpec, max_frame: usize) -> Self {
        let bucket = || Bucket::new(spec.rate_bps, spec.burst_bytes);
        let shape_bytes = spec.rate_bps / 8 * u64::from(spec.shape_ms) / 1000;
        let held = (spec.shape_ms > 0 && spec.mac.is_some() && spec.direction.covers_out())
            .then(|| Held::new((shape_bytes as usize).max(max_frame), max_frame));
        Limiter {
            held,
            delayed: 0,
            rx: spec.direction.covers_in().then(bucket),
            tx: spec.direction.covers_out().then(bucket),
            spec,
            count_in: LimitCounters::default(),
            count_out: LimitCounters::default(),
        }
    }
}

/// What becomes of a frame a VM sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within its limits: on it goes.
    Pass,
    /// Over: dropped (counted).
    Drop,
    /// Over, and its VM's limit shapes: held, to leave through [`Limits::poll_release`].
    Held,
}

/// The limits of one LAN on this host.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    vms: Vec<Limiter>,
    /// `vms` by MAC, past [`SCAN_MAX`] of them (built with them, never per frame).
    index: Option<HashMap<Mac, usize>>,
    lan: Option<Limiter>,
    /// The frame now going out was released from a shaping queue: its VM's tokens are
    /// spent already.
    released: bool,
}

/// Limited VMs up to which a frame's VM is found by comparing MACs in a row (a few
/// nanoseconds each, cheaper than hashing); past it, through a hash index, so the cost
/// per frame stays flat however many VMs are limited.
const SCAN_MAX: usize = 16;

impl Limits {
    /// The limiter of the VM `mac`, if it has one.
    #[inline]
    fn vm_index(&self, mac: &Mac) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(mac).copied(),
            None => self
                .vms
                .iter()
                .position(|v| v.spec.mac.as_ref() == Some(mac)),
        }
    }

    /// Build the index when there are enough VMs to need one.
    fn reindex(&mut self) {
        self.index = (self.vms.len() > SCAN_MAX).then(|| {
            self.vms
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.spec.mac.map(|m| (m, i)))
                .collect()
        });
    }

    /// The LAN's limits; the last of several for the same MAC (or for the LAN) wins.
    /// `max_frame`: the largest frame a shaping queue must hold.
    pub fn new(specs: &[LimitSpec], max_frame: usize) -> Self {
        let mut l = Limits::default();
        for s in specs {
            match s.mac {
                None => l.lan = Some(Limiter::new(s.clone(), max_frame)),
                Some(mac) => {
                    l.vms.retain(|v| v.spec.mac != Some(mac));
                    l.vms.push(Limiter::new(s.clone(), max_frame));
                }
            }
        }
        l.reindex();
        l
    }

    /// New specs (a reload, or libvirt naming a VM's MACs): a limit whose spec did not
    /// change keeps its bucket, counts and queue; the rest start afresh.
    pub fn replace(&mut self, specs: &[LimitSpec], max_frame: usize) {
        let mut old: Vec<Limiter> = self.vms.drain(..).chain(self.lan.take()).collect();
        let fresh = Limits::new(specs, max_frame);
        let mut keep = |l: Limiter| match old.iter().position(|o| o.spec == l.spec) {
            Some(i) => old.swap_remove(i),
            None => l,
        };
        self.vms = fresh.vms.into_iter().map(&mut keep).collect();
        self.lan = fresh.lan.map(keep);
        self.released = false;
        self.reindex();
    }

    /// The specs in force.
    pub fn specs(&self) -> Vec<LimitSpec> {
        self.lan
            .iter()
            .chain(&self.vms)
            .map(|l| l.spec.clone())
            .collect()
    }

    /// No limit at all: the data path skips the rest.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.vms.is_empty() && self.lan.is_none()
    }

    /// A frame sent by the VM `src`: on, dropped, or held by its VM's shaping queue.
    #[inline]
    pub fn admit_out(&mut self, src: &Mac, frame: &[u8], now: Instant) -> Admit {
        if self.is_empty() {
            return Admit::Pass;
        }
        if std::mem::take(&mut self.released) {
            // Charged to its VM when released; the LAN's limit still applies.
            return match self.lan.as_mut().and_then(|l| l.side(false)) {
                Some((b, c)) => {
                    let ok = b.admit(frame.len(), now);
                    c.count(ok, frame.len());
                    if ok { Admit::Pass } else { Admit::Drop }
                }
                None => Admit::Pass,
            };
        }
        if let Some(i) = self.vm_index(src) {
            let v = &mut self.vms[i];
            if let Some(held) = v.held.as_mut() {
                // Behind frames already waiting, or over the rate: wait too (order kept).
                let waiting = held.count > 0;
                let fits = !waiting && v.tx.as_mut().is_some_and(|b| b.fits(frame.len(), now));
                if !fits {
                    if held.push(frame) {
                        v.delayed += 1;
                        return Admit::Held;
                    }
                    v.count_out.count(false, frame.len());
                    return Admit::Drop;
                }
            }
        }
        if self.admit(src, frame.len(), now, false) {
            Admit::Pass
        } else {
            Admit::Drop
        }
    }

    /// The oldest held frame whose VM has the tokens for it now, copied into `out`; its
    /// length. Send it through the data path as if just read: [`Limits::admit_out`]
    /// lets it pass its VM's limit once.
    pub fn poll_release(&mut self, out: &mut [u8], now: Instant) -> Option<usize> {
        for v in &mut self.vms {
            let Some(held) = v.held.as_mut() else {
                continue;
            };
            let Some(len) = held.front_len() else {
                continue;
            };
            let Some(b) = v.tx.as_mut() else { continue };
            if !b.fits(len, now) {
                continue;
            }
            let n = held.pop_into(out)?;
            b.take(n);
            v.count_out.count(true, n);
            self.released = true;
            return Some(n);
        }
        None
    }

    /// When the next held frame may leave (None: nothing held).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.vms
            .iter()
            .filter_map(|v| {
                let len = v.held.as_ref()?.front_len()?;
                let b = v.tx.as_ref()?;
                let last = b.last?;
                let missing = (len as f64 - b.tokens).max(0.0);
                let ns = if b.rate > 0.0 { missing / b.rate } else { 1e9 };
                Some(last + std::time::Duration::from_nanos(ns.ceil() as u64))
            })
            .min()
    }

    /// A frame of `bytes` for the VM `dst` (a group address: only the LAN's limit): true
    /// if it may be delivered.
    #[inline]
    pub fn admit_in(&mut self, dst: &Mac, bytes: usize, now: Instant) -> bool {
        if self.is_empty() {
            return true;
        }
        self.admit(dst, bytes, now, true)
    }

    fn admit(&mut self, mac: &Mac, bytes: usize, now: Instant, inbound: bool) -> bool {
        let at = self.vm_index(mac);
        let Limits { vms, lan, .. } = self;
        let vm = at.and_then(|i| vms.get_mut(i));
        let mut sides = [
            vm.and_then(|v| v.side(inbound)),
            lan.as_mut().and_then(|v| v.side(inbound)),
        ];
        // Both buckets must have room before either is charged: a frame the LAN's limit
        // drops must not use up its VM's tokens.
        let ok = sides.iter_mut().flatten().all(|(b, _)| b.fits(bytes, now));
        for (b, c) in sides.into_iter().flatten() {
            if ok {
                b.take(bytes);
            }
            c.count(ok, bytes);
        }
        ok
    }

    /// Each limit and its counts, the LAN's first.
    pub fn status(&self) -> Vec<LimitStatus> {
        self.lan
            .iter()
            .chain(&self.vms)
            .map(|l| LimitStatus {
                mac: l.spec.mac.map(|m| common::text::mac(&m)),
                vm: l.spec.vm.clone(),
                direction: l.spec.direction,
                rate_bps: l.spec.rate_bps,
                burst_bytes: l.spec.burst_bytes,
                rx: l.rx.is_some().then_some(l.count_in),
                tx: l.tx.is_some().then_some(l.count_out),
                shape_ms: l.held.as_ref().map(|_| l.spec.shape_ms),
                delayed_frames_total: l.delayed,
                held_bytes: l.held.as_ref().map_or(0, |h| h.bytes),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const VM: Mac = [2, 0, 0, 0, 0, 1];
    const OTHER: Mac = [2, 0, 0, 0, 0, 2];

    fn limit(mac: Option<Mac>, mbps: u64, burst: u64, direction: Direction) -> LimitSpec {
        LimitSpec {
            mac,
            rate_bps: mbps * 1_000_000,
            burst_bytes: burst,
            direction,
            shape_ms: 0,
            vm: None,
        }
    }

    /// Offers `offered_mbps` of 1500-byte frames for `secs`; returns the Mbit/s let through.
    fn run(l: &mut Limits, mac: &Mac, offered_mbps: u64, secs: u64, inbound: bool) -> f64 {
        let t0 = Instant::now();
        let frames = offered_mbps * 1_000_000 * secs / (1500 * 8);
        let gap = Duration::from_secs(secs).as_nanos() as u64 / frames;
        let mut passed = 0u64;
        for i in 0..frames {
            let now = t0 + Duration::from_nanos(i * gap);
            let ok = if inbound {
                l.admit_in(mac, 1500, now)
            } else {
                l.admit_out(mac, &[0u8; 1500], now) == Admit::Pass
            };
            passed += u64::from(ok) * 1500;
        }
        passed as f64 * 8.0 / secs as f64 / 1e6
    }

    #[test]
    fn a_vm_over_its_rate_gets_the_rate_and_others_are_untouched() {
        let mut l = Limits::new(&[limit(Some(VM), 50, 64_000, Direction::Out)], 1514);
        let got = run(&mut l, &VM, 200, 10, false);
        // The rate, plus the first burst spread over the run.
        assert!((50.0..=50.1).contains(&got), "{got} Mbit/s");
        assert!((run(&mut l, &OTHER, 200, 1, false) - 200.0).abs() < 0.1);
        // `out` only: what the VM receives is not limited.
        assert!((run(&mut l, &VM, 200, 1, true) - 200.0).abs() < 0.1);
        let s = l.status();
        let tx = s[0].tx.expect("out counted");
        assert!(s[0].rx.is_none());
        assert_eq!(
            tx.passed_frames_total + tx.dropped_frames_total,
            200 * 1_000_000 * 10 / 12_000
        );
        assert!(tx.dropped_frames_total > tx.passed_frames_total * 2);
    }

    #[test]
    fn many_limited_vms_are_found_through_the_index_and_a_reload_keeps_it() {
        let mac = |k: u16| {
            let [a, b] = k.to_be_bytes();
            [2, 0, 0, 9, a, b]
        };
        let specs: Vec<LimitSpec> = (0..200u16)
            .map(|k| limit(Some(mac(k)), 1, 1500, Direction::Out))
            .collect();
        let mut l = Limits::new(&specs, 1514);
        assert!(l.index.is_some(), "200 limits: indexed");
        // Each limited VM meets its own 1 Mbit/s; a VM without a limit passes.
        for k in [0u16, 117, 199] {
            assert!(run(&mut l, &mac(k), 100, 1, false) < 1.1, "VM {k}");
        }
        assert!((run(&mut l, &OTHER, 100, 1, false) - 100.0).abs() < 0.1);
        // A reload down to a few limits scans again; the index follows the new order.
        l.replace(&specs[190..], 1514);
        assert!(l.index.is_none());
        assert!(run(&mut l, &mac(195), 100, 1, false) < 1.1);
        assert!((run(&mut l, &mac(5), 100, 1, false) - 100.0).abs() < 0.1);
        l.replace(&specs[..50], 1514);
        assert_eq!(l.vm_index(&mac(49)), Some(49));
        assert_eq!(l.vm_index(&mac(50)), None);
    }

    #[test]
    fn under_the_rate_nothing_is_dropped() {
        let mut l = Limits::new(&[limit(Some(VM), 50, 16_000, Direction::Both)], 1514);
        assert!((run(&mut l, &VM, 45, 5, false) - 45.0).abs() < 0.1);
        assert!((run(&mut l, &VM, 45, 5, true) - 45.0).abs() < 0.1);
        assert_eq!(l.status()[0].tx.expect("tx").dropped_frames_total, 0);
    }

    #[test]
    fn a_lan_limit_caps_all_vms_together_and_charges_no_vm_for_its_drops() {
        let mut l = Limits::new(
            &[
                limit(None, 100, 32_000, Direction::In),
                limit(Some(VM), 80, 32_000, Direction::In),
            ],
            1514,
        );
        let t0 = Instant::now();
        let mut passed = [0u64; 2];
        // Both VMs offered 100 Mbit/s each for 5 s.
        let frames = 100_000_000 * 5 / 12_000;
        for i in 0..frames {
            let now = t0 + Duration::from_nanos(i * 120_000);
            for (k, mac) in [VM, OTHER].iter().enumerate() {
                passed[k] += u64::from(l.admit_in(mac, 1500, now)) * 1500;
            }
        }
        let total = (passed[0] + passed[1]) as f64 * 8.0 / 5.0 / 1e6;
        assert!((99.0..=101.0).contains(&total), "{total} Mbit/s in all");
        let vm = passed[0] as f64 * 8.0 / 5.0 / 1e6;
        assert!(vm <= 80.5, "{vm} Mbit/s for the limited VM");
        let s = l.status();
        assert_eq!(s[0].mac, None, "the LAN's limit comes first");
        assert_eq!(s[1].mac.as_deref(), Some("02:00:00:00:00:01"));
    }

    #[test]
    fn group_frames_meet_only_the_lan_limit_and_no_limits_cost_nothing() {
        let mut none = Limits::new(&[], 1514);
        assert!(none.is_empty());
        assert!((run(&mut none, &VM, 1000, 1, true) - 1000.0).abs() < 0.1);
        let mut l = Limits::new(&[limit(Some(VM), 1, 1500, Direction::Both)], 1514);
        assert!((run(&mut l, &[0xff; 6], 100, 1, true) - 100.0).abs() < 0.1);
    }

    #[test]
    fn the_last_limit_for_a_mac_wins() {
        let l = Limits::new(
            &[
                limit(Some(VM), 10, 1500, Direction::Both),
                limit(Some(VM), 20, 1500, Direction::Out),
            ],
            1514,
        );
        let s = l.status();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].rate_bps, s[0].direction),
            (20_000_000, Direction::Out)
        );
    }
}

#[cfg(test)]
mod shaping {
    use super::*;
    use std::time::Duration;

    const VM: Mac = [2, 0, 0, 0, 0, 1];

    fn shaped(mbps: u64, shape_ms: u32) -> Limits {
        Limits::new(
            &[LimitSpec {
                mac: Some(VM),
                rate_bps: mbps * 1_000_000,
                burst_bytes: 16 * 1024,
                direction: Direction::Out,
                shape_ms,
                vm: None,
            }],
            1514,
        )
    }

    /// Offers 1500-byte frames at `offered_mbps` for `secs`, releasing held frames as the
    /// data plane does (at each frame and at each poll_timeout); bytes out, frames dropped.
    fn run(l: &mut Limits, offered_mbps: u64, secs: u64) -> (u64, u64, u64) {
        let t0 = Instant::now();
        let gap_ns = 1500 * 8 * 1000 / offered_mbps;
        let frames = secs * 1_000_000_000 / gap_ns;
        let (mut out, mut dropped, mut order) = (0u64, 0u64, 0u64);
        let mut buf = vec![0u8; 2000];
        let mut next_id = 0u64;
        let mut release = |l: &mut Limits, now: Instant, out: &mut u64, order: &mut u64| {
            while let Some(n) = l.poll_release(&mut buf, now) {
                // Released frames pass the VM's limit once, and leave in order.
                assert_eq!(l.admit_out(&VM, &buf[..n], now), Admit::Pass);
                let id = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                assert_eq!(id, *order, "held frames leave in order");
                *order += 1;
                *out += n as u64;
            }
        };
        for i in 0..frames {
            let now = t0 + Duration::from_nanos(i * gap_ns);
            if let Some(t) = l.poll_timeout()
                && t <= now
            {
                release(l, t, &mut out, &mut order);
            }
            let mut f = [0u8; 1500];
            f[..8].copy_from_slice(&next_id.to_be_bytes());
            match l.admit_out(&VM, &f, now) {
                Admit::Pass => {
                    assert_eq!(next_id, order, "a frame overtook held ones");
                    order += 1;
                    out += 1500;
                    next_id += 1;
                }
                Admit::Held => next_id += 1,
                Admit::Drop => dropped += 1,
            }
        }
        (out, dropped, frames)
    }

    #[test]
    fn a_shaped_vm_gets_its_rate_in_order_and_only_a_full_queue_drops() {
        let mut l = shaped(50, 50);
        let (out, dropped, frames) = run(&mut l, 200, 5);
        let mbps = out as f64 * 8.0 / 5.0 / 1e6;
        assert!((49.0..=51.0).contains(&mbps), "{mbps} Mbit/s");
        // Four times the rate offered: about three in four frames find the queue full.
        assert!(dropped > frames / 2, "{dropped} of {frames} dropped");
        let s = &l.status()[0];
        assert_eq!(s.shape_ms, Some(50));
        assert!(s.delayed_frames_total > 0);
        // The queue holds at most 50 ms at the rate.
        assert!(s.held_bytes <= 50_000_000 / 8 * 50 / 1000);
    }

    #[test]
    fn a_shaped_vm_just_over_its_rate_loses_nothing_in_a_burst() {
        let mut l = shaped(50, 200);
        // 60 Mbit/s for 1 s: 10 Mbit of excess, under the 200 ms (1.25 MB) queue.
        let (_, dropped, _) = run(&mut l, 60, 1);
        assert_eq!(dropped, 0);
        assert!(l.status()[0].held_bytes > 0, "the excess waits");
        assert!(l.poll_timeout().is_some());
    }
}

#[cfg(test)]
mod replacing {
    use super::*;

    fn spec(mac: u8, mbps: u64) -> LimitSpec {
        LimitSpec {
            mac: Some([2, 0, 0, 0, 0, mac]),
            vm: None,
            rate_bps: mbps * 1_000_000,
            burst_bytes: 1500,
            direction: Direction::Out,
            shape_ms: 0,
        }
    }

    #[test]
    fn an_unchanged_limit_keeps_its_counts_and_a_changed_one_starts_afresh() {
        let mut l = Limits::new(&[spec(1, 1), spec(2, 1)], 1514);
        let now = Instant::now();
        for mac in [1, 2] {
            assert_eq!(
                l.admit_out(&[2, 0, 0, 0, 0, mac], &[0; 1000], now),
                Admit::Pass
            );
            assert_eq!(
                l.admit_out(&[2, 0, 0, 0, 0, mac], &[0; 1000], now),
                Admit::Drop
            );
        }
        l.replace(&[spec(1, 1), spec(2, 5), spec(3, 1)], 1514);
        let s = l.status();
        let tx = |i: usize| s[i].tx.expect("out");
        assert_eq!(s.len(), 3);
        assert_eq!(
            (tx(0).passed_frames_total, tx(0).dropped_frames_total),
            (1, 1)
        );
        assert_eq!(
            (tx(1).passed_frames_total, tx(1).dropped_frames_total),
            (0, 0)
        );
        assert_eq!(l.specs().len(), 3);
        // Its bucket is as it was: still empty at the same instant.
        assert_eq!(
            l.admit_out(&[2, 0, 0, 0, 0, 1], &[0; 1000], now),
            Admit::Drop
        );
        l.replace(&[], 1514);
        assert!(l.is_empty());
    }
}
