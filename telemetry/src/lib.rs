//! Telemetry for vmvpn: counters and (later) estimators, time series and exporters.
//!
//! Everything here is plain data updated by the data-plane thread that owns it: no
//! sockets, no clocks, no locks. The daemon snapshots it for the control socket.

pub mod drops;
pub mod rtt;
pub mod sequence;
pub mod series;
pub mod traffic;

pub use drops::{DropCounters, DropReason};
pub use rtt::{RttEstimator, RttSummary};
pub use sequence::{SeqStats, SeqTracker};
pub use series::{Rates, Series};
pub use traffic::TrafficCounters;
