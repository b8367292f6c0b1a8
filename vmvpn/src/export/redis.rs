//! The live state into Redis (where other tools read live state from), every
//! `interval_s`, as hashes that expire after three intervals (a host that stops leaves
//! no stale figures), and a stream of events. Keys (`P` is `[export.redis] prefix`, `H`
//! the host name):
//!
//! - `P:H`: the host: `id`, `uptime_s`, `version`, `lans`, `peers`, `peers_up`,
//!   `alerts_firing`, `updated_ms`;
//! - `P:H:peer:LAN:PEER`: one tunnel: `address`, `state`, `health`, `rtt_p50_us`,
//!   `rtt_p99_us`, `loss_tx_ratio`, `loss_rx_ratio`, `tx_rate_bps`, `rx_rate_bps`,
//!   `path_mtu_bytes`, `last_heard_ago_ms`;
//! - `P:H:vm:LAN:MAC`: one VM: `ip`, `location`, `tx_bytes`, `rx_bytes`, `tx_packets`,
//!   `rx_packets`, and for local ones `tx_rate_bps`, `rx_rate_bps`, `peak_to_mean`;
//! - `P:H:service:LAN:SERVICE:BACKEND`: one backend of a service as this host sees it
//!   (`BACKEND` is its MAC or address as configured): `address` (the service's),
//!   `state`, `location`, `weight`, `load_mbps`, `open_connections`, `rtt_ms`,
//!   `flows_total`, `active_flows`,
//!   `share_last_minute`, `connections_total`, `bytes_total`;
//! - `P:H:alerts`: one field per alert (`ALERT{label=value,…}`), its value JSON with
//!   `state`, `severity`, `value`, `summary`, `since_s`;
//! - stream `P:events` (capped near `stream_maxlen`): `host`, `kind` (`peer_up`,
//!   `peer_down`, `mac_move`, `alert_pending`, `alert_firing`, `alert_resolved`), `lan`,
//!   `subject`, `detail`, `at_ms`.
//!
//! A Redis that is away costs nothing but counted errors: the writes wait for the next
//! interval, events wait in a queue of 10 000, connections are retried with backoff.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::SharedExport;
use crate::alarms::SharedAlerts;
use crate::io::dataplane::{Handle, Request};
use crate::status::{
    AlertState, AlertView, Health, LanTraffic, MacRow, PeerState, RedisStatus, Status,
};

/// Events held while Redis is away.
pub const QUEUE: usize = 10_000;
/// Time for one connection attempt or one batch of writes.
pub const TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the sink needs.
pub struct Setup {
    /// Names the VMs (`[libvirt]`), when set.
    pub namer: Option<telemetry::vms::VmNamer>,
    /// `redis://…`.
    pub url: String,
    /// Between writes.
    pub interval: Duration,
    /// Key prefix.
    pub prefix: String,
    /// This host's name.
    pub host: String,
    /// About this many stream entries are kept.
    pub stream_maxlen: usize,
}

/// One event for the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `peer_up`, `peer_down`, `mac_move`, `alert_…`.
    pub kind: &'static str,
    /// LAN.
    pub lan: String,
    /// The peer, MAC or alert.
    pub subject: String,
    /// More, for people.
    pub detail: String,
    /// When it was seen, ms since the Unix epoch.
    pub at_ms: u64,
}

/// What the last snapshot showed, to tell what changed (sans-IO).
#[derive(Default)]
pub struct Changes {
    peers: HashMap<(String, String), bool>,
    macs: HashMap<(String, String), String>,
    alerts: HashMap<String, AlertState>,
    first: bool,
}

fn up(p: &crate::status::PeerStatus) -> bool {
    p.state == PeerState::Up && p.health != Health::Down
}

fn peer_key(p: &crate::status::PeerStatus) -> String {
    if p.name.is_empty() {
        p.address.clone()
    } else {
        p.name.clone()
    }
}

fn alert_key(a: &AlertView) -> String {
    let labels: Vec<String> = a.series_labels().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}{{{}}}", a.alert, labels.join(","))
}

impl Changes {
    /// A fresh memory: the first snapshot only sets it (a restart is not a change).
    pub fn new() -> Self {
        Changes {
            first: true,
            ..Changes::default()
        }
    }

    /// The events between the last snapshot and this one.
    pub fn diff(
        &mut self,
        st: &Status,
        macs: &[MacRow],
        alerts: &[AlertView],
        at_ms: u64,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let first = std::mem::replace(&mut self.first, false);
        for l in &st.lans {
            for p in &l.peers {
                let k = (l.name.clone(), peer_key(p));
                let now = up(p);
                let was = self.peers.insert(k.clone(), now);
                if !first && was != Some(now) && (was.is_some() || now) {
                    out.push(Event {
                        kind: if now { "peer_up" } else { "peer_down" },
                        lan: k.0,
                        subject: k.1,
                        detail: format!("{} health {}", p.address, p.health),
                        at_ms,
                    });
                }
            }
        }
        for m in macs {
            let k = (m.lan.clone(), m.mac.clone());
            let was = self.macs.insert(k.clone(), m.location.clone());
            if let Some(w) = was
                && w != m.location
                && !first
            {
                out.push(Event {
                    kind: "mac_move",
                    lan: k.0,
                    subject: k.1,
                    detail: format!("from {w} to {}", m.location),
                    at_ms,
                });
            }
        }
        if macs.len() < self.macs.len() {
            let seen: std::collections::HashSet<(&str, &str)> = macs
                .iter()
                .map(|m| (m.lan.as_str(), m.mac.as_str()))
                .collect();
            self.macs
                .retain(|(l, m), _| seen.contains(&(l.as_str(), m.as_str())));
        }
        for a in alerts {
            let k = alert_key(a);
            let was = self.alerts.insert(k.clone(), a.state);
            if !first && was != Some(a.state) {
                out.push(Event {
                    kind: match a.state {
                        AlertState::Pending => "alert_pending",
                        AlertState::Firing => "alert_firing",
                        AlertState::Resolved => "alert_resolved",
                    },
                    lan: a.labels.get("lan").cloned().unwrap_or_default(),
                    subject: k,
                    detail: a.annotations.get("summary").cloned().unwrap_or_default(),
                    at_ms,
                });
            }
        }
        out
    }
}

/// The hashes to write: (key, fields).
pub fn hashes(
    s: &Setup,
    st: &Status,
    traffic: &[LanTraffic],
    alerts: &[AlertView],
    at_ms: u64,
) -> Vec<(String, Vec<(String, String)>)> {
    let (p, h) = (&s.prefix, &s.host);
    let mut out = Vec::new();
    let peers: Vec<&crate::status::PeerStatus> = st.lans.iter().flat_map(|l| &l.peers).collect();
    let firing = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    out.push((
        format!("{p}:{h}"),
        vec![
            ("id".into(), format!("{:#010x}", st.host.id)),
            ("uptime_s".into(), st.host.uptime_s.to_string()),
            ("version".into(), st.host.version.clone()),
            (
                "lans".into(),
                st.lans
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("peers".into(), peers.len().to_string()),
            (
                "peers_up".into(),
                peers.iter().filter(|x| up(x)).count().to_string(),
            ),
            ("alerts_firing".into(), firing.to_string()),
            ("updated_ms".into(), at_ms.to_string()),
        ],
    ));
    let opt = |v: Option<u64>| v.map_or(String::new(), |x| x.to_string());
    for l in &st.lans {
        for x in &l.peers {
            out.push((
                format!("{p}:{h}:peer:{}:{}", l.name, peer_key(x)),
                vec![
                    ("address".into(), x.address.clone()),
                    ("state".into(), x.state.to_string()),
                    ("health".into(), x.health.to_string()),
                    ("rtt_p50_us".into(), opt(x.rtt.rtt_p50_us)),
                    ("rtt_p99_us".into(), opt(x.rtt.rtt_p99_us)),
                    ("loss_tx_ratio".into(), x.loss_tx_ratio.to_string()),
                    ("loss_rx_ratio".into(), x.loss_rx_ratio.to_string()),
                    ("tx_rate_bps".into(), x.rates.tx_rate_bps.to_string()),
                    ("rx_rate_bps".into(), x.rates.rx_rate_bps.to_string()),
                    ("path_mtu_bytes".into(), x.path_mtu_bytes.to_string()),
                    ("last_heard_ago_ms".into(), opt(x.last_heard_ago_ms)),
                ],
            ));
        }
    }
    for l in &st.lans {
        for svc in &l.services {
            for b in &svc.backends {
                out.push((
                    format!("{p}:{h}:service:{}:{}:{}", l.name, svc.name, b.backend),
                    vec![
                        ("address".into(), svc.address.clone()),
                        ("state".into(), b.state.clone()),
                        ("location".into(), b.location.clone()),
                        ("weight".into(), b.weight.to_string()),
                        ("load_mbps".into(), format!("{:.3}", b.load_mbps)),
                        ("open_connections".into(), b.open_connections.to_string()),
                        ("rtt_ms".into(), format!("{:.3}", b.rtt_ms)),
                        ("flows_total".into(), b.flows_total.to_string()),
                        ("active_flows".into(), b.active_flows.to_string()),
                        (
                            "share_last_minute".into(),
                            format!("{:.4}", b.share_last_minute),
                        ),
                        ("connections_total".into(), b.connections_total.to_string()),
                        ("bytes_total".into(), b.bytes_total.to_string()),
                    ],
                ));
            }
        }
    }
    for t in traffic {
        for v in &t.vms {
            let mut f = vec![
                ("ip".into(), v.ip.map_or(String::new(), |i| i.to_string())),
                ("location".into(), v.location.name().to_string()),
                ("tx_bytes".into(), v.tx_bytes.to_string()),
                ("rx_bytes".into(), v.rx_bytes.to_string()),
                ("tx_packets".into(), v.tx_packets.to_string()),
                ("rx_packets".into(), v.rx_packets.to_string()),
            ];
            // libvirt's name and UUID, when it knows the VM.
            if let Some(n) = &v.name {
                f.push(("name".into(), n.clone()));
            }
            if let Some(u) = &v.uuid {
                f.push(("uuid".into(), u.clone()));
            }
            if let Some(r) = &v.rates {
                f.push(("tx_rate_bps".into(), r.tx_rate_bps.to_string()));
                f.push(("rx_rate_bps".into(), r.rx_rate_bps.to_string()));
                if let Some(pm) = r.peak_to_mean_60s {
                    f.push(("peak_to_mean".into(), format!("{pm:.3}")));
                }
            }
            out.push((
                format!("{p}:{h}:vm:{}:{}", t.lan, common::text::mac(&v.mac)),
                f,
            ));
        }
    }
    let live: Vec<(String, String)> = alerts
        .iter()
        .filter(|a| a.state != AlertState::Resolved)
        .map(|a| {
            let v = serde_json::json!({
                "state": a.state.name(), "severity": a.severity.name(), "value": a.value,
                "summary": a.annotations.get("summary").cloned().unwrap_or_default(),
                "since_s": a.since_s,
            });
            (alert_key(a), v.to_string())
        })
        .collect();
    if !live.is_empty() {
        out.push((format!("{p}:{h}:alerts"), live));
    }
    out
}

/// `redis://host:port/db` without credentials, for status and logs.
pub fn server_name(url: &str) -> String {
    match url.strip_prefix("redis://") {
        Some(rest) => format!(
            "redis://{}",
            rest.rsplit_once('@').map_or(rest, |(_, host)| host)
        ),
        None => "redis://?".into(),
    }
}

async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, String> {
    match tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
        Err(_) => Err("cannot connect: timed out".into()),
    }
}

/// Write every interval until `stop`.
pub async fn run(
    s: Setup,
    dp: Handle,
    alerts: SharedAlerts,
    shared: SharedExport,
    mut stop: watch::Receiver<bool>,
) {
    let mut status = RedisStatus {
        server: server_name(&s.url),
        ..RedisStatus::default()
    };
    let client = match redis::Client::open(s.url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            warn!(server = %status.server, error = %e, "[export.redis] url is not usable");
            status.last_error = Some(e.to_string());
            if let Ok(mut x) = shared.lock() {
                x.redis = Some(status);
            }
            return;
        }
    };
    let ttl = (s.interval.as_secs() * 3).max(10) as i64;
    let mut con: Option<MultiplexedConnection> = None;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at = tokio::time::Instant::now();
    let mut events: VecDeque<Event> = VecDeque::new();
    let mut changes = Changes::new();
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some((st, mut traffic)) = dp.snapshot().await else {
            return;
        };
        if let Some(name) = &s.namer {
            for t in &mut traffic {
                name(&mut t.vms);
            }
        }
        let macs = dp
            .call(|reply| Request::Macs(None, reply))
            .await
            .and_then(Result::ok)
            .unwrap_or_default();
        let al = alerts.lock().map(|a| a.clone()).unwrap_or_default();
        let at_ms = common::clock::unix_ms();
        for e in changes.diff(&st, &macs, &al, at_ms) {
            if events.len() == QUEUE {
                events.pop_front();
                status.dropped_events_total += 1;
            }
            events.push_back(e);
        }
        if con.is_none() && tokio::time::Instant::now() >= retry_at {
            match connect(&client).await {
                Ok(c) => {
                    info!(server = %status.server, "Redis connected");
                    con = Some(c);
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    debug!(server = %status.server, error = %e, "Redis");
                    status.errors_total += 1;
                    status.last_error = Some(e);
                    retry_at = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        if let Some(c) = con.as_mut() {
            let mut pipe = redis::pipe();
            for (key, fields) in hashes(&s, &st, &traffic, &al, at_ms) {
                pipe.hset_multiple(&key, &fields).ignore();
                pipe.expire(&key, ttl).ignore();
            }
            let n = events.len();
            for e in &events {
                pipe.xadd_maxlen(
                    format!("{}:events", s.prefix),
                    redis::streams::StreamMaxlen::Approx(s.stream_maxlen),
                    "*",
                    &[
                        ("host", s.host.as_str()),
                        ("kind", e.kind),
                        ("lan", e.lan.as_str()),
                        ("subject", e.subject.as_str()),
                        ("detail", e.detail.as_str()),
                        ("at_ms", &e.at_ms.to_string()),
                    ],
                )
                .ignore();
            }
            match tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(c)).await {
                Ok(Ok(())) => {
                    status.writes_total += 1;
                    status.events_total += n as u64;
                    events.clear();
                }
                Ok(Err(e)) => {
                    warn!(server = %status.server, error = %e, "Redis write failed; reconnecting");
                    status.errors_total += 1;
                    status.last_error = Some(format!("write: {e}"));
                    con = None;
                }
                Err(_) => {
                    status.errors_total += 1;
                    status.last_error = Some("write: timed out".into());
                    con = None;
                }
            }
        }
        status.connected = con.is_some();
        if let Ok(mut x) = shared.lock() {
            x.redis = Some(status.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{LanStatus, PeerStatus};

    fn status(peer_up: bool) -> Status {
        Status {
            lans: vec![LanStatus {
                name: "lan1".into(),
                peers: vec![PeerStatus {
                    name: "h2".into(),
                    address: "10.0.0.2:7401".into(),
                    state: if peer_up {
                        PeerState::Up
                    } else {
                        PeerState::Handshaking
                    },
                    health: if peer_up { Health::Ok } else { Health::Down },
                    ..PeerStatus::default()
                }],
                services: vec![crate::status::ServiceStatus {
                    name: "web".into(),
                    address: "192.168.1.200".into(),
                    backends: vec![crate::status::BackendStatus {
                        backend: "192.168.1.2".into(),
                        state: "up".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..LanStatus::default()
            }],
            ..Status::default()
        }
    }

    fn mac(loc: &str) -> MacRow {
        MacRow {
            lan: "lan1".into(),
            mac: "02:00:00:00:00:01".into(),
            location: loc.into(),
            peer_name: None,
            age_ms: 0,
        }
    }

    fn alert(state: AlertState) -> AlertView {
        AlertView {
            alert: "VmvpnPeerDown".into(),
            state,
            labels: [("lan".to_string(), "lan1".to_string())].into(),
            ..AlertView::default()
        }
    }

    #[test]
    fn events_are_the_changes_between_snapshots() {
        let mut c = Changes::new();
        let first = c.diff(&status(true), &[mac("local")], &[], 1);
        assert!(first.is_empty(), "the first snapshot only sets the memory");
        assert!(c.diff(&status(true), &[mac("local")], &[], 2).is_empty());
        let e = c.diff(
            &status(false),
            &[mac("10.0.0.2:7401")],
            &[alert(AlertState::Firing)],
            3,
        );
        let kinds: Vec<&str> = e.iter().map(|x| x.kind).collect();
        assert_eq!(
            kinds,
            vec!["peer_down", "mac_move", "alert_firing"],
            "{e:?}"
        );
        assert_eq!((e[0].lan.as_str(), e[0].subject.as_str()), ("lan1", "h2"));
        assert_eq!(e[1].detail, "from local to 10.0.0.2:7401");
        assert_eq!(e[2].subject, "VmvpnPeerDown{lan=lan1}");
        let e = c.diff(&status(true), &[], &[alert(AlertState::Resolved)], 4);
        let kinds: Vec<&str> = e.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, vec!["peer_up", "alert_resolved"]);
    }

    #[test]
    fn keys_and_fields_are_the_documented_ones() {
        let s = Setup {
            namer: None,
            url: "redis://u:secret@10.0.0.9:6379/2".into(),
            interval: Duration::from_secs(5),
            prefix: "vmvpn".into(),
            host: "h1".into(),
            stream_maxlen: 10,
        };
        let h = hashes(&s, &status(true), &[], &[alert(AlertState::Firing)], 7);
        let keys: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "vmvpn:h1",
                "vmvpn:h1:peer:lan1:h2",
                "vmvpn:h1:service:lan1:web:192.168.1.2",
                "vmvpn:h1:alerts"
            ]
        );
        assert!(h[2].1.contains(&("state".into(), "up".into())));
        let peer: Vec<&str> = h[1].1.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            peer,
            vec![
                "address",
                "state",
                "health",
                "rtt_p50_us",
                "rtt_p99_us",
                "loss_tx_ratio",
                "loss_rx_ratio",
                "tx_rate_bps",
                "rx_rate_bps",
                "path_mtu_bytes",
                "last_heard_ago_ms"
            ]
        );
        assert!(h[0].1.contains(&("alerts_firing".into(), "1".into())));
        assert_eq!(
            server_name(&s.url),
            "redis://10.0.0.9:6379/2",
            "no password shown"
        );
    }
}
