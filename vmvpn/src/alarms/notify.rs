//! What notifications say and when, sans-IO: notices are held for [`GROUP_WAIT`] so that
//! alerts that change together (ten peers down at once) leave as one message per rule and
//! state, not ten; firing alerts are sent to Alertmanager again every [`RESEND_EVERY`], as
//! Prometheus does, so that Alertmanager does not resolve them on its own. The payloads
//! are Alertmanager's: the `/api/v2/alerts` body, and the webhook JSON (version 4) that
//! Alertmanager itself sends to webhook receivers, which the exec hook gets on stdin too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::eval::Notice;
use super::state::Transition;
use crate::status::AlertView;

/// How long a notice waits for others of its rule and state.
pub const GROUP_WAIT: Duration = Duration::from_secs(2);
/// How often firing alerts go to Alertmanager again.
pub const RESEND_EVERY: Duration = Duration::from_secs(60);
/// Alerts per message at most; the rest are counted in `truncatedAlerts`.
pub const MAX_ALERTS: usize = 100;
/// Messages at most in a burst...
pub const BURST: u32 = 10;
/// ...then one per this long: under an alert storm, groups wait and grow instead of
/// flooding the receivers (nothing is dropped; `vmvpn alerts` is current meanwhile).
pub const REFILL: Duration = Duration::from_secs(6);

/// One alert as Alertmanager's API and webhooks carry it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmAlert {
    /// "firing" or "resolved" (webhook only; the API infers it from `endsAt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// Labels, `alertname` among them.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it began firing (RFC 3339).
    pub starts_at: String,
    /// When it resolved, or when it will be taken as resolved without news.
    pub ends_at: String,
    /// Where it came from.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// A webhook message (Alertmanager's webhook JSON, version 4).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// "4".
    pub version: &'static str,
    /// The group's identity.
    pub group_key: String,
    /// Alerts left out beyond [`MAX_ALERTS`].
    pub truncated_alerts: usize,
    /// "firing" or "resolved".
    pub status: &'static str,
    /// "vmvpn".
    pub receiver: &'static str,
    /// The labels the group shares by construction (`alertname`).
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert of the message has.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert of the message has.
    pub common_annotations: BTreeMap<String, String>,
    /// Where to look.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<AmAlert>,
}

/// One group, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The rule.
    pub alertname: String,
    /// Fired or resolved.
    pub firing: bool,
    /// Its alerts.
    pub alerts: Vec<AmAlert>,
}

struct Held {
    since: Instant,
    alerts: Vec<AmAlert>,
}

/// The grouping state.
#[derive(Default)]
pub struct Outbox {
    /// (alertname, firing) → alerts waiting.
    held: BTreeMap<(String, bool), Held>,
    /// Firing alerts by their labels, with when they started, for resends.
    firing: BTreeMap<Vec<(String, String)>, AmAlert>,
    next_resend: Option<Instant>,
    /// This host, for `generatorURL`.
    host: String,
    /// Messages that may leave now, and when the next one is added.
    tokens: u32,
    refilled: Option<Instant>,
}

/// RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Outbox {
    /// An outbox for alerts of `host`.
    pub fn new(host: &str) -> Self {
        Outbox {
            host: host.into(),
            tokens: BURST,
            ..Outbox::default()
        }
    }

    /// Take what the evaluator said at `now` (`wall` is the same moment on the clock).
    pub fn handle_notices(&mut self, notices: &[Notice], now: Instant, wall: SystemTime) {
        for n in notices {
            let firing = match n.transition {
                Transition::Fired => true,
                Transition::Resolved => false,
                Transition::None | Transition::Pending => continue,
            };
            let a = self.am_alert(&n.alert, firing, wall);
            let key: Vec<(String, String)> = a.labels.clone().into_iter().collect();
            if firing {
                self.firing.insert(key, a.clone());
            } else {
                self.firing.remove(&key);
            }
            self.held
                .entry((n.alert.alert.clone(), firing))
                .or_insert_with(|| Held {
                    since: now,
                    alerts: Vec::new(),
                })
                .alerts
                .push(a);
        }
        if !self.firing.is_empty() && self.next_resend.is_none() {
            self.next_resend = Some(now + RESEND_EVERY);
        }
    }

    fn am_alert(&self, v: &AlertView, firing: bool, wall: SystemTime) -> AmAlert {
        let since = wall
            .checked_sub(Duration::from_secs(if firing { 0 } else { v.since_s }))
            .unwrap_or(wall);
        AmAlert {
            status: Some(if firing { "firing" } else { "resolved" }),
            labels: v.labels.clone(),
            annotations: v.annotations.clone(),
            starts_at: rfc3339(since),
            // Firing: Alertmanager takes it as resolved if no resend comes in time.
            ends_at: rfc3339(if firing {
                wall + RESEND_EVERY * 4
            } else {
                wall
            }),
            generator_url: format!("vmvpn://{}/alerts", self.host),
        }
    }

    /// When [`poll_batch`](Self::poll_batch) or [`poll_resend`](Self::poll_resend) next has
    /// something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ready = self.held.values().map(|h| h.since + GROUP_WAIT).min();
        // Without a token, a ready group waits for the next one.
        let ready = match (ready, self.tokens, self.refilled) {
            (Some(r), 0, Some(t)) => Some(r.max(t + REFILL)),
            (r, _, _) => r,
        };
        ready.into_iter().chain(self.next_resend).min()
    }

    fn refill(&mut self, now: Instant) {
        let last = *self.refilled.get_or_insert(now);
        let n = (now.saturating_duration_since(last).as_secs_f64() / REFILL.as_secs_f64()) as u32;
        if n > 0 {
            self.tokens = (self.tokens + n).min(BURST);
            self.refilled = Some(last + REFILL * n);
        }
        if self.tokens == BURST {
            self.refilled = Some(now);
        }
    }

    /// A group whose wait is over.
    pub fn poll_batch(&mut self, now: Instant) -> Option<Batch> {
        self.refill(now);
        if self.tokens == 0 {
            return None;
        }
        let key = self
            .held
            .iter()
            .find(|(_, h)| now >= h.since + GROUP_WAIT)
            .map(|(k, _)| k.clone())?;
        let held = self.held.remove(&key)?;
        self.tokens -= 1;
        Some(Batch {
            alertname: key.0,
            firing: key.1,
            alerts: held.alerts,
        })
    }

    /// The firing alerts, for Alertmanager again, when the resend is due (their `endsAt`
    /// moved on).
    pub fn poll_resend(&mut self, now: Instant, wall: SystemTime) -> Option<Vec<AmAlert>> {
        if self.next_resend.is_none_or(|t| now < t) {
            return None;
        }
        if self.firing.is_empty() {
            self.next_resend = None;
            return None;
        }
        self.next_resend = Some(now + RESEND_EVERY);
        let ends = rfc3339(wall + RESEND_EVERY * 4);
        Some(
            self.firing
                .values_mut()
                .map(|a| {
                    a.ends_at = ends.clone();
                    a.clone()
                })
                .collect(),
        )
    }
}

impl Batch {
    /// The Alertmanager API body for this batch (`POST /api/v2/alerts`).
    pub fn api_alerts(&self) -> Vec<AmAlert> {
        self.alerts
            .iter()
            .map(|a| AmAlert {
                status: None,
                ..a.clone()
            })
            .collect()
    }

    /// The webhook message (also the exec hook's stdin).
    pub fn webhook(&self) -> Webhook {
        let common = |f: fn(&AmAlert) -> &BTreeMap<String, String>| {
            let mut c = self
                .alerts
                .first()
                .map(|a| f(a).clone())
                .unwrap_or_default();
            for a in &self.alerts[1.min(self.alerts.len())..] {
                c.retain(|k, v| f(a).get(k) == Some(v));
            }
            c
        };
        let group_labels: BTreeMap<String, String> =
            [("alertname".to_string(), self.alertname.clone())]
                .into_iter()
                .collect();
        Webhook {
            version: "4",
            group_key: format!("{{}}:{{alertname=\"{}\"}}", self.alertname),
            truncated_alerts: self.alerts.len().saturating_sub(MAX_ALERTS),
            status: if self.firing { "firing" } else { "resolved" },
            receiver: "vmvpn",
            group_labels,
            common_labels: common(|a| &a.labels),
            common_annotations: common(|a| &a.annotations),
            external_url: String::new(),
            alerts: self.alerts.iter().take(MAX_ALERTS).cloned().collect(),
        }
    }

    /// A subject line and plain-text body for email.
    pub fn email(&self, host: &str) -> (String, String) {
        let state = if self.firing { "FIRING" } else { "RESOLVED" };
        let subject = format!(
            "[{state}:{}] {} on {host}",
            self.alerts.len(),
            self.alertname
        );
        let mut body = String::new();
        for a in &self.alerts {
            let summary = a.annotations.get("summary").map_or("", String::as_str);
            let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            body += &format!(
                "{summary}\n  {}\n  since {}\n\n",
                labels.join(" "),
                a.starts_at
            );
        }
        (subject, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::AlertState;

    fn notice(t: Transition, peer: &str) -> Notice {
        Notice {
            transition: t,
            alert: AlertView {
                alert: "VmvpnPeerDown".into(),
                state: AlertState::Firing,
                labels: [
                    ("alertname", "VmvpnPeerDown"),
                    ("severity", "critical"),
                    ("lan", "lan1"),
                    ("peer", peer),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                annotations: [("summary".to_string(), format!("{peer} is down"))]
                    .into_iter()
                    .collect(),
                since_s: 30,
                ..AlertView::default()
            },
        }
    }

    #[test]
    fn ten_peers_down_together_are_one_message() {
        let mut o = Outbox::new("h1");
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ten: Vec<Notice> = (0..10)
            .map(|i| notice(Transition::Fired, &format!("10.0.0.{i}:7401")))
            .collect();
        o.handle_notices(&ten[..4], t0, wall);
        o.handle_notices(&ten[4..], t0 + Duration::from_secs(1), wall);
        assert_eq!(o.poll_timeout(), Some(t0 + GROUP_WAIT));
        assert_eq!(
            o.poll_batch(t0 + Duration::from_secs(1)),
            None,
            "still waiting"
        );
        let b = o.poll_batch(t0 + GROUP_WAIT).expect("one batch");
        assert_eq!(b.alerts.len(), 10);
        assert!(o.poll_batch(t0 + GROUP_WAIT * 5).is_none(), "and only one");
        let w = b.webhook();
        let j = serde_json::to_value(&w).expect("json");
        assert_eq!(j["version"], "4");
        assert_eq!(j["status"], "firing");
        assert_eq!(j["groupLabels"]["alertname"], "VmvpnPeerDown");
        assert_eq!(j["commonLabels"]["lan"], "lan1");
        assert!(j["commonLabels"].get("peer").is_none(), "peers differ");
        assert_eq!(j["alerts"].as_array().map(Vec::len), Some(10));
        assert_eq!(j["alerts"][0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(j["alerts"][0]["status"], "firing");
        let api = serde_json::to_value(b.api_alerts()).expect("json");
        assert!(api[0].get("status").is_none(), "the API takes no status");
        assert_eq!(api[0]["labels"]["alertname"], "VmvpnPeerDown");
        let (subject, body) = b.email("h1");
        assert_eq!(subject, "[FIRING:10] VmvpnPeerDown on h1");
        assert!(body.contains("10.0.0.3:7401 is down"), "{body}");
    }

    #[test]
    fn firing_alerts_are_resent_until_they_resolve() {
        let mut o = Outbox::new("h1");
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        o.handle_notices(&[notice(Transition::Fired, "p")], t0, wall);
        let _ = o.poll_batch(t0 + GROUP_WAIT);
        assert!(o.poll_resend(t0 + Duration::from_secs(59), wall).is_none());
        let again = o
            .poll_resend(t0 + RESEND_EVERY, wall + RESEND_EVERY)
            .expect("resend");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].ends_at, rfc3339(wall + RESEND_EVERY * 5));
        let t1 = t0 + Duration::from_secs(70);
        o.handle_notices(&[notice(Transition::Resolved, "p")], t1, wall);
        let b = o.poll_batch(t1 + GROUP_WAIT).expect("resolved batch");
        assert!(!b.firing);
        assert_eq!(b.alerts[0].status, Some("resolved"));
        assert!(
            o.poll_resend(t0 + RESEND_EVERY * 2, wall).is_none(),
            "nothing firing"
        );
        assert_eq!(o.poll_timeout(), None);
    }

    #[test]
    fn an_alert_storm_is_slowed_and_merged_not_dropped() {
        let mut o = Outbox::new("h1");
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut sent = Vec::new();
        // A new rule fires every second for 60 s, each for one more peer.
        for t in 0..300u32 {
            let now = t0 + Duration::from_secs(u64::from(t));
            if t < 60 {
                let mut n = notice(Transition::Fired, &format!("10.0.0.{t}:7401"));
                n.alert.alert = format!("Rule{}", t % 20);
                o.handle_notices(&[n], now, wall);
            }
            while let Some(b) = o.poll_batch(now) {
                sent.push((t, b.alerts.len()));
            }
        }
        let total: usize = sent.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 60, "every alert left, none dropped");
        // 10 at once, then one per 6 s.
        let first_minute = sent.iter().filter(|(t, _)| *t < 60).count();
        assert!(
            first_minute <= 10 + 60 / 6,
            "{first_minute} messages in the first minute"
        );
        assert!(sent.len() < 60, "merged: {} messages", sent.len());
    }
}
