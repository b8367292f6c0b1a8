//! What the daemon tells the outside: the typed status contract (`status`), the control
//! socket that serves it to the CLI (`control`), and the Prometheus exposition (`metrics`).

pub mod control;
pub mod metrics;
pub mod status;
