//! Telemetry for vmvpn: counters, estimators, time series, per-VM traffic and flows.
//!
//! Everything here is plain data updated by the data-plane thread that owns it: no
//! sockets, no clocks, no locks. The daemon snapshots it for the control socket. The
//! standard exports are encoded here too (`sflow`, `ipfix`): bytes only, sent elsewhere.

pub mod baseline;
pub mod burstiness;
pub mod drops;
pub mod flows;
pub mod frame;
pub mod holt_winters;
pub mod ipfix;
pub mod rtt;
pub mod sequence;
pub mod series;
pub mod sflow;
pub mod traffic;
pub mod vms;
mod writer;

#[cfg(test)]
mod testing;

pub use drops::{DropCounters, DropReason};
pub use flows::{FlowRow, FlowStats, FlowTable, TcpState};
pub use frame::{FrameInfo, TcpFlags, inspect};
pub use rtt::{RttBuckets, RttEstimator, RttSummary};
pub use sequence::{SeqStats, SeqTracker};
pub use series::{Rates, Series};
pub use traffic::TrafficCounters;
pub use vms::{PairRow, VmLocation, VmRow, VmTable, VmTableStats};
