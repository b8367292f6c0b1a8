//! How a status field becomes a Prometheus family: each status type declares its
//! families beside its fields ([`Exposed::METRICS`]), and `/metrics` writes whatever is
//! declared. A new field with a metric is one entry in the type's table, not a name in
//! one list, an index in another and a line in the renderer.

/// How Prometheus reads a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    /// As `# TYPE` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One family's sample taken from a value of type `T`.
pub struct Metric<T> {
    /// The family's name, its unit in it (Prometheus' base units: bytes, seconds).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// `# HELP`.
    pub help: &'static str,
    /// Labels this sample always carries besides those of the value it is taken from,
    /// written `k="v"` (empty: none).
    pub labels: &'static str,
    /// The sample, or none: an absent series beats a false zero (RTT before a probe
    /// answered, utilisation without a link speed).
    pub value: fn(&T) -> Option<f64>,
}

impl<T> Metric<T> {
    /// The same sample with a constant label, `k="v"`.
    pub const fn labelled(self, labels: &'static str) -> Self {
        Metric { labels, ..self }
    }
}

/// A counter from `value`.
pub const fn counter<T>(
    name: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
) -> Metric<T> {
    metric(Kind::Counter, name, help, value)
}

/// A gauge from `value`.
pub const fn gauge<T>(
    name: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
) -> Metric<T> {
    metric(Kind::Gauge, name, help, value)
}

const fn metric<T>(
    kind: Kind,
    name: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
) -> Metric<T> {
    Metric {
        name,
        kind,
        help,
        labels: "",
        value,
    }
}

/// A status type whose fields `/metrics` exposes. The caller gives the labels that say
/// which value it is (`lan`, `peer`, …); the table gives everything else.
pub trait Exposed: Sized + 'static {
    /// Its families, in the order they are written.
    const METRICS: &'static [Metric<Self>];
}
