//! Alarms, the sans-IO core: rules in a file shaped like Prometheus alerting rules
//! (`rules`), their conditions over vmvpn's own series (`expr`, `series`), each alert's
//! life with hold times and hysteresis (`state`), the evaluation of every rule against
//! status snapshots with baselines, rates and forecasts (`eval`), and what each
//! notification says and when it is due (`notify`). The daemon's alarm task
//! (`api/alerting.rs`, `api/notifier.rs`) runs the evaluation and sends the notifications; the README's
//! *Alarms* section is the operator's view.

pub mod eval;
pub mod expr;
pub mod notify;
pub mod rules;
pub mod series;
pub mod state;

/// The alerts as of the last evaluation, shared with the views and the bulletin reports.
pub type SharedAlerts = std::sync::Arc<std::sync::Mutex<Vec<crate::status::AlertView>>>;
