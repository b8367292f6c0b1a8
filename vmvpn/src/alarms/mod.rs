//! Alarms (issue 14), the sans-IO core: rules in a file shaped like Prometheus alerting
//! rules (`rules`), their conditions over vmvpn's own series (`expr`, `series`), each
//! alert's life with hold times and hysteresis (`state`), and the evaluation of every
//! rule against status snapshots with baselines, rates and forecasts (`eval`).
//!
//! Not yet wired into the daemon: the notifications (Alertmanager, webhook, email, exec),
//! `vmvpn alerts` and the reports to the bulletin come next.

pub mod eval;
pub mod expr;
pub mod notify;
pub mod rules;
pub mod series;
pub mod state;

/// The alerts as of the last evaluation, shared with the views and the bulletin reports.
pub type SharedAlerts = std::sync::Arc<std::sync::Mutex<Vec<crate::status::AlertView>>>;
