//! Rules evaluated against status snapshots, sans-IO: [`Evaluator::handle_snapshot`] takes
//! the samples of one snapshot with `now`, updates each series' baseline, rate and
//! forecast once, steps every alert, and returns what to notify. Nothing here sends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use telemetry::baseline::Ewma;
use telemetry::holt_winters::HoltWinters;

use super::expr::{Expr, Rhs, Term};
use super::rules::Rule;
use super::series::Sample;
use super::state::{Phase, Transition};
use crate::status::{AlertState, AlertView};

/// Span of the EWMA baselines, in samples.
pub const BASELINE_SPAN: f64 = 300.0;
/// Holt-Winters: one step per this much time (samples in between are averaged)...
pub const HW_STEP: Duration = Duration::from_secs(60);
/// ...and this many steps per season (a day).
pub const HW_SEASON: usize = 1440;
/// A series unseen this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Resolved alerts kept for `vmvpn alerts`.
pub const RESOLVED_KEPT: usize = 64;

/// Something to notify.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Fired or resolved.
    pub transition: Transition,
    /// The alert.
    pub alert: AlertView,
}

/// A series' labels.
type Labels = Vec<(&'static str, String)>;
/// A series: metric and labels.
type SeriesKey = (&'static str, Labels);
/// An alert: its rule's place and its series' labels.
type AlertKey = (usize, Labels);

/// What is learned about one series.
struct SeriesState {
    baseline: Ewma,
    /// Only for series an `anomaly_hw` rule looks at: a day of steps is 11 KiB.
    hw: Option<HoltWinters>,
    /// The current step's samples, for the next Holt-Winters step.
    step: (f64, u32, Option<Instant>),
    last_hw_score: f64,
    last: Option<(f64, Instant)>,
}

/// The values a rule can look at, for one series at one snapshot.
#[derive(Debug, Clone, Copy, Default)]
struct Derived {
    value: f64,
    rate: Option<f64>,
    z: f64,
    hw: f64,
    baseline: Option<f64>,
    /// The baseline's mean and deviation before this sample, once warmed up.
    spread: Option<(f64, f64)>,
}

struct AlertEntry {
    phase: Phase,
    value: f64,
    changed: Instant,
    labels: Labels,
    seen: bool,
}

/// The alarm state of one host.
pub struct Evaluator {
    rules: Vec<Rule>,
    series: HashMap<SeriesKey, SeriesState>,
    alerts: BTreeMap<AlertKey, AlertEntry>,
    resolved: VecDeque<(Instant, AlertView)>,
}

impl Evaluator {
    /// An evaluator of these rules.
    pub fn new(rules: Vec<Rule>) -> Self {
        Evaluator {
            rules,
            series: HashMap::new(),
            alerts: BTreeMap::new(),
            resolved: VecDeque::new(),
        }
    }

    /// Replace the rules (a reload): alerts of rules that stay (by name and expression)
    /// keep their state; the others are dropped without a notice.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        let old = std::mem::take(&mut self.rules);
        let alerts = std::mem::take(&mut self.alerts);
        for ((i, labels), a) in alerts {
            let Some(r) = old.get(i) else { continue };
            if let Some(j) = rules
                .iter()
                .position(|n| n.alert == r.alert && n.expr == r.expr)
            {
                self.alerts.insert((j, labels), a);
            }
        }
        self.rules = rules;
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluate one snapshot; what fired or resolved.
    pub fn handle_snapshot(&mut self, samples: &[Sample], now: Instant) -> Vec<Notice> {
        let mut notices = Vec::new();
        for a in self.alerts.values_mut() {
            a.seen = false;
        }
        for s in samples {
            if !self.rules.iter().any(|r| r.expr.lhs.metric() == s.metric) {
                continue;
            }
            let d = self.learn(s, now);
            for i in 0..self.rules.len() {
                if self.rules[i].expr.lhs.metric() != s.metric {
                    continue;
                }
                let r = &self.rules[i];
                let Some((lhs, fire)) = check(&r.expr, &d) else {
                    // Not computable this time (no rate yet, a counter reset): the series is
                    // still there, and its alert stays as it is.
                    if let Some(a) = self.alerts.get_mut(&(i, s.labels.clone())) {
                        a.seen = true;
                    }
                    continue;
                };
                let clear = match &r.clear {
                    Some(c) => check(c, &d).is_some_and(|(_, ok)| ok),
                    None => !fire,
                };
                let key = (i, s.labels.clone());
                let a = self.alerts.entry(key).or_insert_with(|| AlertEntry {
                    phase: Phase::Inactive,
                    value: lhs,
                    changed: now,
                    labels: s.labels.clone(),
                    seen: true,
                });
                a.seen = true;
                a.value = lhs;
                let t = a.phase.step(fire, clear, r.hold, now);
                if t != Transition::None {
                    a.changed = now;
                }
                if matches!(t, Transition::Fired | Transition::Resolved) {
                    notices.push((i, s.labels.clone(), t));
                }
            }
        }
        // A series that is gone (a peer removed) cannot hold its condition.
        for ((i, labels), a) in self.alerts.iter_mut().filter(|(_, a)| !a.seen) {
            let hold = self.rules[*i].hold;
            let t = a.phase.step(false, true, hold, now);
            if t == Transition::Resolved {
                a.changed = now;
                notices.push((*i, labels.clone(), t));
            }
        }
        let mut out = Vec::with_capacity(notices.len());
        for (i, labels, t) in notices {
            let Some(a) = self.alerts.get(&(i, labels)) else {
                continue;
            };
            let mut view = view(&self.rules[i], a, now);
            if t == Transition::Resolved {
                view.state = AlertState::Resolved;
                if self.resolved.len() == RESOLVED_KEPT {
                    self.resolved.pop_front();
                }
                self.resolved.push_back((now, view.clone()));
            }
            out.push(Notice {
                transition: t,
                alert: view,
            });
        }
        self.alerts
            .retain(|_, a| a.phase != Phase::Inactive || a.seen);
        // What is learned of a series that left (a removed peer, a VM gone) is dropped.
        self.series.retain(|_, st| {
            st.last
                .is_some_and(|(_, t)| now.saturating_duration_since(t) < FORGET_AFTER)
        });
        out
    }

    /// Pending and firing alerts, then recently resolved ones (newest first).
    pub fn alerts(&self, now: Instant) -> Vec<AlertView> {
        let mut v: Vec<AlertView> = self
            .alerts
            .iter()
            .filter(|(_, a)| a.phase != Phase::Inactive)
            .map(|((i, _), a)| view(&self.rules[*i], a, now))
            .collect();
        v.sort_by_key(|a| (a.state, a.alert.clone()));
        v.extend(self.resolved.iter().rev().map(|(at, a)| AlertView {
            since_s: now.saturating_duration_since(*at).as_secs(),
            ..a.clone()
        }));
        v
    }

    /// Update what is known of a series with one sample; what rules can look at.
    fn learn(&mut self, s: &Sample, now: Instant) -> Derived {
        let hw = self
            .rules
            .iter()
            .any(|r| matches!(&r.expr.lhs, Term::AnomalyHw(m) if m == s.metric));
        let st = self
            .series
            .entry((s.metric, s.labels.clone()))
            .or_insert_with(|| SeriesState {
                baseline: Ewma::with_span(BASELINE_SPAN),
                hw: hw.then(|| HoltWinters::new(HW_SEASON, 0.2, 0.01, 0.2)),
                step: (0.0, 0, None),
                last_hw_score: 0.0,
                last: None,
            });
        let rate = st.last.and_then(|(v, t)| {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            // A counter that went back (a restart) has no rate this time.
            (dt > 0.0 && s.value >= v).then(|| (s.value - v) / dt)
        });
        st.last = Some((s.value, now));
        let before = st.baseline.score(s.value);
        let warm = st.baseline.samples() >= telemetry::baseline::WARM_UP;
        let baseline = warm.then_some(before.mean);
        let spread = warm.then_some((before.mean, before.sd));
        let z = st.baseline.update(s.value).z;
        let (sum, n, started) = &mut st.step;
        *sum += s.value;
        *n += 1;
        let began = *started.get_or_insert(now);
        if now.saturating_duration_since(began) >= HW_STEP {
            if let Some(hw) = st.hw.as_mut() {
                st.last_hw_score = hw.update(*sum / f64::from(*n)).score;
            }
            st.step = (0.0, 0, Some(now));
        }
        Derived {
            value: s.value,
            rate,
            z,
            hw: st.last_hw_score,
            baseline,
            spread,
        }
    }
}

/// The left side's value and whether the comparison holds (None: not computable yet).
fn check(e: &Expr, d: &Derived) -> Option<(f64, bool)> {
    let lhs = match e.lhs {
        Term::Value(_) => d.value,
        Term::Rate(_) => d.rate?,
        Term::Anomaly(_, floor) if floor > 0.0 => match d.spread {
            Some((mean, sd)) => (d.value - mean) / sd.max(floor),
            None => 0.0,
        },
        Term::Anomaly(..) => d.z,
        Term::AnomalyHw(_) => d.hw,
    };
    let rhs = match e.rhs {
        Rhs::Number(n) => n,
        Rhs::Baseline(k, _, c) => k * d.baseline? + c,
    };
    Some((lhs, e.cmp.holds(lhs, rhs)))
}

fn view(r: &Rule, a: &AlertEntry, now: Instant) -> AlertView {
    let mut labels: BTreeMap<String, String> = a
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    labels.extend(r.labels.clone());
    labels.insert("alertname".into(), r.alert.clone());
    labels.insert("severity".into(), r.severity.name().into());
    let annotations = r
        .annotations
        .iter()
        .map(|(k, t)| (k.clone(), render(t, a.value, &labels)))
        .collect();
    AlertView {
        alert: r.alert.clone(),
        state: match a.phase {
            Phase::Firing { .. } => AlertState::Firing,
            _ => AlertState::Pending,
        },
        severity: r.severity,
        labels,
        annotations,
        value: a.value,
        since_s: now.saturating_duration_since(a.changed).as_secs(),
    }
}

/// Fill `{{ $value }}` and `{{ $labels.name }}` in; anything else stays as written.
pub fn render(template: &str, value: f64, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = rest[open + 2..open + close].trim();
        match inner {
            "$value" => out.push_str(&format_value(value)),
            _ => match inner.strip_prefix("$labels.") {
                Some(k) => out.push_str(labels.get(k).map_or("", String::as_str)),
                None => out.push_str(&rest[open..open + close + 2]),
            },
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// Four significant digits, without trailing zeros.
fn format_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::rules::{self, DEFAULT_RULES};
    use std::path::Path;

    const S: Duration = Duration::from_secs(1);

    fn peer(metric: &'static str, value: f64) -> Sample {
        Sample {
            metric,
            labels: vec![
                ("lan", "lan1".into()),
                ("name", "h2".into()),
                ("peer", "10.0.0.2:7401".into()),
            ],
            value,
        }
    }

    #[test]
    fn loss_fires_after_its_hold_once_and_resolves_once_below_the_clear_threshold() {
        let mut ev = Evaluator::new(rules::defaults());
        let t0 = Instant::now();
        let mut fired = Vec::new();
        // 10 s clean, 60 s at 5 % loss, 10 s between the thresholds, 60 s clean.
        let loss = |t: u32| match t {
            0..10 => 0.0,
            10..70 => 0.05,
            70..80 => 0.015,
            _ => 0.0,
        };
        for t in 0..140 {
            for n in
                ev.handle_snapshot(&[peer("vmvpn_peer_rx_loss_ratio_10s", loss(t))], t0 + S * t)
            {
                fired.push((t, n.transition, n.alert));
            }
        }
        let got: Vec<(u32, Transition)> = fired.iter().map(|(t, x, _)| (*t, *x)).collect();
        // Fires 30 s after the loss began; resolves 30 s after it fell below 1 %.
        assert_eq!(got, [(40, Transition::Fired), (110, Transition::Resolved)]);
        let a = &fired[0].2;
        assert_eq!(a.labels["alertname"], "VmvpnPeerLoss");
        assert_eq!(a.labels["severity"], "warning");
        assert_eq!(a.labels["peer"], "10.0.0.2:7401");
        assert_eq!(
            a.annotations["summary"],
            "0.05 of what h2 sends on lan1 is lost"
        );
        let shown = ev.alerts(t0 + S * 140);
        assert_eq!(shown.len(), 1);
        assert_eq!(
            (shown[0].state, shown[0].since_s),
            (AlertState::Resolved, 30)
        );
    }

    #[test]
    fn an_rtt_step_trips_the_anomaly_rule_without_a_threshold() {
        let mut ev = Evaluator::new(
            rules::parse(DEFAULT_RULES, Path::new("d"))
                .expect("defaults")
                .into_iter()
                .filter(|r| r.alert == "VmvpnPeerRttAnomaly")
                .collect(),
        );
        let t0 = Instant::now();
        let mut first = None;
        for t in 0..400u32 {
            // 1 ms ± 50 µs, then +20 ms from t = 300.
            let jitter = f64::from(t % 7) * 1.5e-5;
            let rtt = 0.001 + jitter + if t >= 300 { 0.020 } else { 0.0 };
            for n in ev.handle_snapshot(&[peer("vmvpn_peer_srtt_seconds", rtt)], t0 + S * t) {
                if n.transition == Transition::Fired && first.is_none() {
                    first = Some(t);
                }
            }
        }
        // The step is 20 ms over a band of tens of µs: pending at once, firing after `for`.
        assert_eq!(first, Some(310));
    }

    #[test]
    fn the_default_rtt_rules_stay_quiet_on_a_healthy_tunnels_jitter() {
        // A quiet tunnel: 300 µs ± 20 µs, with a scheduling blip of a few ms now and then,
        // and a p99 that jumps to 13 ms while a bulk transfer fills the queues (what the
        // demo lab showed): nothing an operator should be woken for.
        let mut ev = Evaluator::new(
            rules::defaults()
                .into_iter()
                .filter(|r| r.alert.starts_with("VmvpnPeerRtt"))
                .collect(),
        );
        let t0 = Instant::now();
        for t in 0..600u32 {
            let blip = if t % 37 == 0 { 0.004 } else { 0.0 };
            let srtt = 0.0003 + f64::from(t % 5) * 1e-5 + blip;
            let p99 = if (200..260).contains(&t) {
                0.013
            } else {
                0.0009 + blip
            };
            let samples = [
                peer("vmvpn_peer_srtt_seconds", srtt),
                peer("vmvpn_peer_rtt_p99_seconds", p99),
            ];
            let n = ev.handle_snapshot(&samples, t0 + S * t);
            assert!(n.is_empty(), "at {t}: {n:?}");
            assert!(ev.alerts(t0 + S * t).is_empty(), "pending at {t}");
        }
    }

    #[test]
    fn rtt_over_three_times_its_baseline_fires_and_a_peer_that_vanishes_resolves() {
        let mut ev = Evaluator::new(
            rules::defaults()
                .into_iter()
                .filter(|r| r.alert == "VmvpnPeerRttHigh")
                .collect(),
        );
        let t0 = Instant::now();
        let mut log = Vec::new();
        for t in 0..120u32 {
            let v = if t >= 60 { 0.2 } else { 0.01 };
            let samples = if t < 110 {
                vec![peer("vmvpn_peer_srtt_seconds", v)]
            } else {
                Vec::new()
            };
            for n in ev.handle_snapshot(&samples, t0 + S * t) {
                log.push((t, n.transition));
            }
        }
        // 20x its baseline (190 ms more) from 60 s, for 30 s; the peer is removed at 110 s.
        assert_eq!(log, [(90, Transition::Fired), (110, Transition::Resolved)]);
    }

    #[test]
    fn one_stalled_probe_does_not_hold_the_rtt_rule_for_minutes() {
        // A 120 ms stall of one probe (a starved scheduler) on a 0.3 ms tunnel. The p99 of
        // a 60-120 s window is that probe for minutes, which outlasts any `for`: the old
        // rule on it fired 70 s later (once the window turned, p99 was that probe). The
        // smoothed RTT forgets it within seconds: the high-RTT rule on it never goes
        // pending, and the anomaly rule is pending for the two seconds srtt is off.
        let old = "[[rule]]\nalert = \"Old\"\nexpr = \"vmvpn_peer_rtt_p99_seconds > 3 * baseline(vmvpn_peer_rtt_p99_seconds) + 0.05\"\nfor = \"30s\"\n";
        let mut rules = rules::defaults();
        rules.retain(|r| r.alert.starts_with("VmvpnPeerRtt"));
        rules.extend(rules::parse(old, Path::new("old")).expect("old rule"));
        let mut ev = Evaluator::new(rules);
        let mut rtt = telemetry::RttEstimator::default();
        let t0 = Instant::now();
        let mut fired = Vec::new();
        for t in 0..400u32 {
            let ms = if t == 200 {
                120.0
            } else {
                0.3 + f64::from(t % 3) * 0.01
            };
            rtt.record((ms * 1e6) as u64);
            rtt.rotate(u64::from(t));
            let s = rtt.summary();
            let samples: Vec<Sample> = [
                ("vmvpn_peer_srtt_seconds", s.srtt_us),
                ("vmvpn_peer_rtt_p99_seconds", s.rtt_p99_us),
            ]
            .into_iter()
            .filter_map(|(m, us)| us.map(|us| peer(m, us as f64 / 1e6)))
            .collect();
            for n in ev.handle_snapshot(&samples, t0 + S * t) {
                if n.transition == Transition::Fired {
                    fired.push((n.alert.alert.clone(), t));
                }
            }
            let pending: Vec<_> = ev.alerts(t0 + S * t).into_iter().map(|a| a.alert).collect();
            assert!(
                !pending.iter().any(|a| a == "VmvpnPeerRttHigh"),
                "at {t}: {pending:?}"
            );
        }
        assert_eq!(fired, [("Old".to_string(), 270)], "only the old rule fires");
    }

    #[test]
    fn rates_of_counters_and_a_restarted_counter() {
        let mut ev = Evaluator::new(
            rules::defaults()
                .into_iter()
                .filter(|r| r.alert == "VmvpnDropsRising")
                .collect(),
        );
        let drops = |v: f64| Sample {
            metric: "vmvpn_lan_drops_total",
            labels: vec![("lan", "lan1".into()), ("reason", "replay".into())],
            value: v,
        };
        let t0 = Instant::now();
        let mut fired = None;
        for t in 0..60u32 {
            // 50 drops a second, with a counter reset at t = 20.
            let v = if t < 20 {
                50.0 * f64::from(t)
            } else {
                50.0 * f64::from(t - 20)
            };
            for n in ev.handle_snapshot(&[drops(v)], t0 + S * t) {
                assert_eq!(
                    n.alert.annotations["summary"],
                    "50 drops/s (replay) on lan1"
                );
                fired.get_or_insert(t);
            }
        }
        // Pending from t = 1 (the first rate); the reset at 20 has no rate and is skipped,
        // not taken for a recovery.
        assert_eq!(fired, Some(31));
    }

    #[test]
    fn a_reload_keeps_the_state_of_rules_that_stay() {
        let mut ev = Evaluator::new(rules::defaults());
        let t0 = Instant::now();
        for t in 0..35u32 {
            ev.handle_snapshot(&[peer("vmvpn_peer_rx_loss_ratio_10s", 0.05)], t0 + S * t);
        }
        assert_eq!(ev.alerts(t0 + S * 35)[0].state, AlertState::Firing);
        ev.set_rules(rules::defaults());
        assert_eq!(
            ev.alerts(t0 + S * 35)[0].state,
            "firing",
            "same rule: same alert"
        );
        let n = ev.handle_snapshot(&[peer("vmvpn_peer_rx_loss_ratio_10s", 0.05)], t0 + S * 36);
        assert!(n.is_empty(), "no second notification: {n:?}");
        ev.set_rules(Vec::new());
        assert!(ev.alerts(t0 + S * 37).is_empty());
    }

    #[test]
    fn templates() {
        let labels: BTreeMap<String, String> = [("peer".to_string(), "h2".to_string())]
            .into_iter()
            .collect();
        assert_eq!(
            render(
                "{{ $labels.peer }} at {{$value}}, {{ $labels.none }}.{{ other }}",
                0.123456,
                &labels
            ),
            "h2 at 0.1235, .{{ other }}"
        );
        assert_eq!(
            render("unclosed {{ $value", 1.0, &labels),
            "unclosed {{ $value"
        );
        assert_eq!(format_value(20.0), "20");
        assert_eq!(format_value(0.05), "0.05");
        assert_eq!(format_value(1234.5678), "1235");
    }
}
