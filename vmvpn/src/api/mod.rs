//! What the daemon tells the outside: the control
//! socket that serves the status (`crate::status`) to the CLI (`control`), and the Prometheus exposition (`metrics`).

pub mod control;
pub mod metrics;
