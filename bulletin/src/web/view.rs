//! What the dashboard shows, as typed JSON: the whole [`Overview`] (`GET /api/v1/overview`),
//! and what a page's event stream carries (`GET /api/v1/events?lan=L`): one [`Snapshot`]
//! of the LAN it shows and a line per LAN, then [`Delta`]s with only what changed. The
//! same shapes from the bulletin (the whole overlay) and from a host (what that host
//! sees). The README's "Dashboard" section documents them for scripts.

use serde::{Deserialize, Serialize};

use crate::matrix::VmFlow;
use crate::proto::{AlertReport, Tunnel};

/// Whose view this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The bulletin's: every host's reports.
    Overlay,
    /// One host's: its tunnels and its VMs.
    Host,
}

/// The whole dashboard at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// Bulletin or host.
    pub scope: Scope,
    /// The bulletin's fingerprint, or the host's name.
    pub name: String,
    /// When it was built, ms since the Unix epoch.
    pub at_ms: u64,
    /// Points each series keeps, and their spacing (ms).
    pub history: HistoryInfo,
    /// One entry per LAN, by name.
    pub lans: Vec<LanView>,
    /// Alerts raised (firing and pending), by LAN then host.
    pub alerts: Vec<AlertRow>,
}

/// How much history the series hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryInfo {
    /// Points kept per series.
    pub points: usize,
    /// About this many ms between points (the report interval, or 1 s on a host).
    pub step_ms: u64,
}

/// One LAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanView {
    /// LAN name.
    pub lan: String,
    /// Physical subnets with hosts of this LAN, and their designated forwarders.
    pub subnets: Vec<SubnetView>,
    /// Hosts, by name.
    pub hosts: Vec<HostView>,
    /// Measured tunnel directions: `from` probed `to`.
    pub links: Vec<LinkView>,
    /// VM pairs, busiest first (counted at the source VM's host).
    pub pairs: Vec<PairView>,
    /// VMs with their rates, busiest first.
    pub vms: Vec<VmView>,
    /// Service addresses and their backends, as this host sends to them (a host's own
    /// dashboard; the bulletin does not hear of services, so its view has none).
    #[serde(default)]
    pub services: Vec<ServiceView>,
}

/// One service address of a LAN and its backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Its name.
    pub service: String,
    /// The address clients send to.
    pub address: String,
    /// `least-load` or `hash`.
    pub policy: String,
    /// Backends that take new flows.
    pub backends_up: usize,
    /// Frames to it that found no backend (dropped).
    pub no_backend_frames_total: u64,
    /// Its backends, in config order.
    pub backends: Vec<ServiceBackendView>,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceBackendView {
    /// As configured: MAC or address.
    pub backend: String,
    /// `up`, `down` or `unknown` (not seen yet).
    pub state: String,
    /// `local`, the host it is behind, or `unknown`.
    pub location: String,
    /// Its weight.
    pub weight: u32,
    /// Its traffic both ways, Mbit/s, as its host measured it.
    pub load_mbps: f64,
    /// TCP connections open with it, as its host counted them.
    #[serde(default)]
    pub open_connections: u32,
    /// RTT from this host to its host, ms.
    pub rtt_ms: f64,
    /// New flows this host gave it.
    pub flows_total: u64,
    /// Those with a frame in the last 10 s.
    pub active_flows: u64,
    /// Its share of this host's new flows over the last minute (0 to 1).
    pub share_last_minute: f64,
}

/// A physical subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetView {
    /// `10.0.1.0/24`.
    pub subnet: String,
    /// Name of its designated forwarder (the lowest host id among its hosts that are up).
    pub forwarder: Option<String>,
}

/// A host's state as the dashboard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Reporting on time, and not down for every peer that measures it.
    Up,
    /// Its report is overdue, or every peer that measures it finds it down.
    Down,
    /// Registered, but it sends no reports (`[telemetry] report_interval_s = 0`).
    Unreported,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// Host name.
    pub name: String,
    /// Host id (`0x…` in tables), when known.
    pub id: Option<u32>,
    /// Underlay address.
    pub underlay: String,
    /// Its physical subnet (`SubnetView::subnet`); empty when unknown.
    pub subnet: String,
    /// Up, down or unreported.
    pub state: HostState,
    /// It is its subnet's designated forwarder.
    pub forwarder: bool,
    /// Age of its latest report, ms (none: no report).
    pub report_age_ms: Option<u64>,
    /// When its latest report arrived, ms since the Unix epoch (none: no report). Event
    /// streams send a host again only when something else changed: a page works the age
    /// out from this.
    pub reported_at_ms: Option<u64>,
}

/// One measured tunnel direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// The host that measured.
    pub from: String,
    /// Its peer.
    pub to: String,
    /// Health, RTT p50/p99 (µs), loss each way and rates, as `from` measured them.
    #[serde(flatten)]
    pub tunnel: Tunnel,
    /// Which path the tunnel takes, as `from` reported it (none from an older host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<crate::proto::TunnelPath>,
}

/// Traffic from one VM to another: `bulletin matrix`'s pair, with its rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairView {
    /// Who, where, and frames and bytes since counting began.
    #[serde(flatten)]
    pub flow: VmFlow,
    /// bit/s over the last interval (none before a second sample).
    pub rate_bps: Option<u64>,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    /// MAC, `aa:bb:cc:dd:ee:ff` (the key of its series).
    pub mac: String,
    /// Its libvirt name, when its host knows it.
    pub name: Option<String>,
    /// Newest IP seen, when known.
    pub ip: Option<String>,
    /// Host it is behind, when known.
    pub host: String,
    /// bit/s it sends.
    pub tx_rate_bps: u64,
    /// bit/s sent to it.
    pub rx_rate_bps: u64,
    /// Busiest sample over the mean of those kept (none while idle or unknown).
    pub peak_to_mean: Option<f64>,
}

/// One alert of one host: what the host reported, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// LAN.
    pub lan: String,
    /// Host that raised it.
    pub host: String,
    /// Rule, state ("firing" or "pending"), severity, labels besides the LAN, summary,
    /// value, and seconds in this state as of now.
    #[serde(flatten)]
    pub alert: AlertReport,
}

/// One LAN in a line: the LAN picker and the counts of the LANs a page does not show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanSummary {
    /// LAN name.
    pub lan: String,
    /// Hosts, and how many are up and down.
    pub hosts: usize,
    /// Hosts up.
    pub up: usize,
    /// Hosts down.
    pub down: usize,
    /// Measured tunnel directions, and how many are degraded or down.
    pub links: usize,
    /// Tunnel directions degraded or down.
    pub unhealthy: usize,
}

impl LanSummary {
    /// The line of `l`.
    pub fn of(l: &LanView) -> Self {
        let count = |s: HostState| l.hosts.iter().filter(|h| h.state == s).count();
        LanSummary {
            lan: l.lan.clone(),
            hosts: l.hosts.len(),
            up: count(HostState::Up),
            down: count(HostState::Down),
            links: l.links.len(),
            unhealthy: l
                .links
                .iter()
                .filter(|k| matches!(k.tunnel.health.as_str(), "degraded" | "down"))
                .count(),
        }
    }
}

/// The first event of a page's stream (`event: snapshot`): everything it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Bulletin or host.
    pub scope: Scope,
    /// The bulletin's fingerprint, or the host's name.
    pub name: String,
    /// When the view was built, ms since the Unix epoch.
    pub at_ms: u64,
    /// Points each series keeps, and their spacing.
    pub history: HistoryInfo,
    /// Every LAN in a line, by name.
    pub lans: Vec<LanSummary>,
    /// The LAN the page asked for (or the first), whole; none while there is no LAN.
    pub lan: Option<LanView>,
    /// Alerts raised, of every LAN.
    pub alerts: Vec<AlertRow>,
}

/// A later event (`event: delta`): only what changed since the page's previous event.
/// A list that is absent did not change; `*_gone` name what left.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// When the view was built.
    pub at_ms: u64,
    /// Every LAN in a line, when a line changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lans: Option<Vec<LanSummary>>,
    /// Every alert, when one was raised, cleared or changed state (not for its age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<AlertRow>>,
    /// The series' depth, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryInfo>,
    /// What changed in the page's LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan: Option<LanDelta>,
}

/// What changed in one LAN: entries added or changed (whole), and the keys of those gone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LanDelta {
    /// Subnets and forwarders, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<SubnetView>>,
    /// Hosts added or changed (state, forwarder, address; not the report's age).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostView>,
    /// Names of hosts gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts_gone: Vec<String>,
    /// Tunnel directions added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkView>,
    /// `[from, to]` of tunnel directions gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links_gone: Vec<[String; 2]>,
    /// VM pairs added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<PairView>,
    /// `[src_host, src_mac, dst_mac]` of VM pairs gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs_gone: Vec<[String; 3]>,
    /// VMs added or changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmView>,
    /// MACs of VMs gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms_gone: Vec<String>,
    /// Every service, when one changed (a short list: sent whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceView>>,
}

impl LanDelta {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self == &LanDelta::default()
    }
}
