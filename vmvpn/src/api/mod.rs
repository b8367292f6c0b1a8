//! What the daemon tells the outside: the control socket that serves the status
//! (`crate::status`) to the CLI (`control`), its HTTP server (`http`) with the Prometheus
//! exposition (`metrics`), and the alarm task that evaluates the rules (`alerting`).

pub mod alerting;
pub mod control;
pub mod http;
pub mod metrics;
pub mod notifier;
