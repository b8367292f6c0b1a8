//! What the dashboard shows, as typed JSON (`GET /api/v1/overview`, and every event of
//! `GET /api/v1/events`): the same shape from the bulletin (the whole overlay) and from a
//! host (what that host sees). The README's "Dashboard" section documents it for scripts.

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
