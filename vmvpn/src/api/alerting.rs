//! The daemon's alarm task: every [`EVAL_EVERY`] it takes the figures its rules read from
//! the data plane (`engine::figures`: a light snapshot into buffers it hands back),
//! evaluates the rules on it (`alarms::eval`, sans-IO), logs what fired and resolved, and
//! keeps the alerts for `vmvpn alerts` and `/metrics`. New rules arrive from a reload
//! (`api::reload`: SIGHUP or `vmvpn reload`), already read and checked; alerts of rules
//! that stay keep their state.
//! It runs beside the data plane and never holds it up: a snapshot is one request.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::alarms::eval::{Evaluator, Notice};
use crate::alarms::rules::Rule;
use crate::alarms::series;
use crate::alarms::state::Transition;
use crate::io::dataplane::{Handle, Request};

/// How often the rules are evaluated.
pub const EVAL_EVERY: Duration = Duration::from_secs(1);

pub use crate::alarms::SharedAlerts;

/// Evaluate `rules` until `stop` turns true; rules from `reloads` replace them.
pub async fn run(
    dp: Handle,
    rules: Vec<Rule>,
    mut reloads: mpsc::Receiver<Vec<Rule>>,
    alerts: SharedAlerts,
    notify: Option<mpsc::Sender<Vec<Notice>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut needs = series::needs(&rules);
    let mut ev = Evaluator::new(rules);
    let mut windows = series::Windows::default();
    let mut figures = Box::<crate::engine::figures::Figures>::default();
    let mut tick = tokio::time::interval(EVAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(r) = reloads.recv() => {
                ev.set_rules(r);
                needs = series::needs(ev.rules());
            }
            _ = tick.tick() => {
                let into = std::mem::take(&mut figures);
                let Some(got) = dp
                    .call(|reply| Request::AlarmFigures { needs, into, reply })
                    .await
                else {
                    return;
                };
                figures = got;
                let now = Instant::now();
                let samples = series::samples(&figures, &mut windows, now);
                let notices = ev.handle_snapshot(&samples, now);
                for n in &notices {
                    log(n);
                }
                if let Some(tx) = notify.as_ref().filter(|_| !notices.is_empty())
                    && tx.try_send(notices).is_err()
                {
                    warn!("notifications are behind; these alerts were logged but not sent");
                }
                if let Ok(mut a) = alerts.lock() {
                    *a = ev.alerts(now);
                }
            }
        }
    }
}

fn log(n: &Notice) {
    let a = &n.alert;
    let summary = a.annotations.get("summary").map_or("", String::as_str);
    let labels = a.labels_text();
    match n.transition {
        Transition::Fired => warn!(
            alert = %a.alert, severity = %a.severity, value = a.value,
            labels = %labels, "alert firing: {summary}"
        ),
        Transition::Resolved => info!(
            alert = %a.alert, labels = %labels, "alert resolved: {summary}"
        ),
        Transition::None | Transition::Pending => {}
    }
}
