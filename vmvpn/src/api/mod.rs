//! What the daemon tells the outside: the control socket that serves the status
//! (`crate::status`) to the CLI (`control`), and its HTTP server (`http`) with the
//! Prometheus exposition (`metrics`).

pub mod control;
pub mod http;
pub mod metrics;
