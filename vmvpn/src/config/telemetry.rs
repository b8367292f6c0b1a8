//! `[telemetry]`: what is measured beyond counters, and how much of it is kept.

use serde::Deserialize;
use toml::Spanned;

use super::*;

/// `[telemetry]`. Everything is on by default; turning parts off is for measuring their
/// cost or for very constrained hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Probe each tunnel about once a second (RTT, jitter, loss each way, health).
    #[serde(default = "yes")]
    pub probes: bool,
    /// Per-VM traffic, the VM matrix and the flow table (looks into each frame).
    #[serde(default = "yes")]
    pub flows: bool,
    /// The underlay link speed in Mbit/s: adds utilisation to status and metrics.
    pub link_speed_mbps: Option<Spanned<u64>>,
    /// VMs tracked per LAN (least recently active evicted beyond).
    #[serde(default = "default_vm_table")]
    pub vm_table_size: Spanned<u64>,
    /// Flows tracked per LAN.
    #[serde(default = "default_flow_table")]
    pub flow_table_size: Spanned<u64>,
    /// Seconds without a frame before a flow is forgotten.
    #[serde(default = "default_flow_idle")]
    pub flow_idle_s: Spanned<u64>,
    /// Seconds between reports to the bulletin (0: none); needs `[bulletin]`.
    #[serde(default = "default_report")]
    pub report_interval_s: Spanned<u64>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            probes: true,
            flows: true,
            link_speed_mbps: None,
            vm_table_size: default_vm_table(),
            flow_table_size: default_flow_table(),
            flow_idle_s: default_flow_idle(),
            report_interval_s: default_report(),
        }
    }
}

impl TelemetryConfig {
    /// What the forwarding core measures.
    pub fn accounting(&self) -> crate::engine::Accounting {
        let d = crate::engine::Accounting::default();
        let vms = usize::try_from(*self.vm_table_size.get_ref()).unwrap_or(usize::MAX);
        crate::engine::Accounting {
            probes: self.probes,
            flows: self.flows,
            vms,
            pairs: vms.saturating_mul(4),
            flow_cap: usize::try_from(*self.flow_table_size.get_ref()).unwrap_or(usize::MAX),
            flow_idle_s: *self.flow_idle_s.get_ref(),
            port_series: d.port_series,
            link_speed_bps: self
                .link_speed_mbps
                .as_ref()
                .map(|m| m.get_ref().saturating_mul(1_000_000)),
        }
    }

    /// Seconds between reports to the bulletin, if any.
    pub fn report_every(&self) -> Option<Duration> {
        let s = *self.report_interval_s.get_ref();
        (s > 0).then(|| Duration::from_secs(s))
    }
}

fn default_vm_table() -> Spanned<u64> {
    unspanned(::telemetry::vms::DEFAULT_VMS as u64)
}
fn default_flow_table() -> Spanned<u64> {
    unspanned(::telemetry::flows::DEFAULT_FLOWS as u64)
}
fn default_flow_idle() -> Spanned<u64> {
    unspanned(::telemetry::flows::DEFAULT_IDLE_S)
}
fn default_report() -> Spanned<u64> {
    unspanned(5)
}

impl Config {
    /// `[telemetry]`: numbers in range.
    pub(super) fn check_telemetry(&self, text: &str) -> Result<(), ConfigError> {
        use super::limits::*;
        let t = &self.telemetry;
        self.in_range(
            text,
            &t.vm_table_size,
            "telemetry.vm_table_size".into(),
            VM_TABLE,
        )?;
        self.in_range(
            text,
            &t.flow_table_size,
            "telemetry.flow_table_size".into(),
            FLOW_TABLE,
        )?;
        self.in_range(
            text,
            &t.flow_idle_s,
            "telemetry.flow_idle_s".into(),
            FLOW_IDLE_S,
        )?;
        self.in_range(
            text,
            &t.report_interval_s,
            "telemetry.report_interval_s".into(),
            REPORT_INTERVAL_S,
        )?;
        if let Some(l) = &t.link_speed_mbps {
            self.in_range(text, l, "telemetry.link_speed_mbps".into(), LINK_SPEED_MBPS)?;
        }
        Ok(())
    }
}
