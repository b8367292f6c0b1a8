//! What the daemon tells the outside: the control socket that serves the status
//! (`crate::status`) to the CLI (`control`), the Prometheus exposition (`metrics`) and the
//! web dashboard of this host's view (`dashboard`) on the HTTP stack shared with the
//! bulletin (`bulletin::http`), the alarm task that evaluates the rules (`alerting`), and
//! live reconfiguration (`reload`).

pub mod alerting;
pub mod control;
pub mod dashboard;
pub mod metrics;
pub mod notifier;
pub mod reload;
