//! The web dashboard, served by the bulletin (the whole overlay: `bulletin serve --web`)
//! and by a host (its own view: `[host] web`): the page and its assets, embedded in the
//! binary (`assets`); the read-only JSON API and live events behind it (`api`); who may
//! look (`auth`); the typed view (`view`) and the series (`history`); and how the
//! bulletin builds its view (`global`). A host builds its own in vmvpn's `api::dashboard`.
//!
//! A producer publishes an [`Overview`](view::Overview) into a [`Feed`] once a second and
//! feeds the history; every open page gets it over Server-Sent Events.

pub mod api;
pub mod assets;
pub mod auth;
pub mod delta;
pub mod global;
pub mod history;
pub mod view;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use history::History;
use view::Overview;

/// Points a series keeps by default: an hour at the usual 5 s reports, 10 minutes at a
/// host's 1 s.
pub const HISTORY_POINTS: usize = 720;
/// Series kept at most (tunnel directions and VMs): 720 points of 32 bytes is about 23 KB
/// a series, so this bounds the history near 94 MB in the worst case.
pub const MAX_SERIES: usize = 4096;

/// Where the producer puts the view and the series, and the API reads them.
#[derive(Clone)]
pub struct Feed {
    overview: watch::Sender<Arc<Overview>>,
    history: Arc<Mutex<History>>,
    builds: Arc<Builds>,
}

/// How long building the view takes (the bulletin's `/metrics`).
#[derive(Default)]
struct Builds {
    count: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
    last_us: AtomicU64,
}

/// Views built, and their build time: (count, total, longest, latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildTimes {
    /// Views built.
    pub count: u64,
    /// Time spent building them.
    pub total: Duration,
    /// The longest build.
    pub max: Duration,
    /// The latest build.
    pub last: Duration,
}

impl Feed {
    /// A feed showing `initial` until the first publish.
    pub fn new(initial: Overview, history: History) -> Self {
        Feed {
            overview: watch::Sender::new(Arc::new(initial)),
            history: Arc::new(Mutex::new(history)),
            builds: Arc::default(),
        }
    }

    /// Count a view that took `took` to build (from what the server holds to `publish`).
    pub fn record_build(&self, took: Duration) {
        let us = took.as_micros() as u64;
        let b = &self.builds;
        b.count.fetch_add(1, Ordering::Relaxed);
        b.total_us.fetch_add(us, Ordering::Relaxed);
        b.max_us.fetch_max(us, Ordering::Relaxed);
        b.last_us.store(us, Ordering::Relaxed);
    }

    /// The build times so far.
    pub fn build_times(&self) -> BuildTimes {
        let b = &self.builds;
        BuildTimes {
            count: b.count.load(Ordering::Relaxed),
            total: Duration::from_micros(b.total_us.load(Ordering::Relaxed)),
            max: Duration::from_micros(b.max_us.load(Ordering::Relaxed)),
            last: Duration::from_micros(b.last_us.load(Ordering::Relaxed)),
        }
    }

    /// Show `o`. Pages are told only when something besides the time changed.
    pub fn publish(&self, o: Overview) {
        self.overview.send_if_modified(|cur| {
            let changed = cur.lans != o.lans || cur.alerts != o.alerts || cur.name != o.name;
            *cur = Arc::new(o);
            changed
        });
    }

    /// The view now.
    pub fn overview(&self) -> Arc<Overview> {
        self.overview.borrow().clone()
    }

    /// Watch the view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Overview>> {
        self.overview.subscribe()
    }

    /// The series (held briefly: the producer and the API share it).
    pub fn history(&self) -> MutexGuard<'_, History> {
        // A panic while holding it would leave the rings consistent: keep serving.
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}
