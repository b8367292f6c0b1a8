//! The dashboard's time series: one bounded ring of points per tunnel direction and per
//! VM, and a bound on how many series exist. When full, the series fed longest ago makes
//! room only if it went stale (not fed for [`STALE_MS`]: its host or VM has likely left);
//! otherwise the new series waits. At 2000 hosts there are far more tunnel directions
//! than series held, and evicting the oldest live one for each newcomer would keep none
//! long enough to draw, at a full scan per point. Sans-IO: the caller gives every point
//! its time.

use std::collections::VecDeque;

use lru::LruCache;

use serde::{Deserialize, Serialize};

/// Which series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SeriesKey {
    /// What `from` measured towards `to` on `lan`.
    Tunnel {
        /// LAN.
        lan: String,
        /// Measuring host.
        from: String,
        /// Its peer.
        to: String,
    },
    /// One VM's rates.
    Vm {
        /// LAN.
        lan: String,
        /// Its MAC, `aa:bb:cc:dd:ee:ff`.
        mac: String,
    },
}

/// Columns of a tunnel series.
pub const TUNNEL_COLUMNS: [&str; 6] = [
    "rtt_p50_ms",
    "rtt_p99_ms",
    "loss_tx_ratio",
    "loss_rx_ratio",
    "tx_rate_bps",
    "rx_rate_bps",
];
/// Columns of a VM series.
pub const VM_COLUMNS: [&str; 2] = ["tx_rate_bps", "rx_rate_bps"];

/// Most columns a series has.
const WIDTH: usize = TUNNEL_COLUMNS.len();

impl SeriesKey {
    /// The columns of this kind of series.
    pub fn columns(&self) -> &'static [&'static str] {
        match self {
            SeriesKey::Tunnel { .. } => &TUNNEL_COLUMNS,
            SeriesKey::Vm { .. } => &VM_COLUMNS,
        }
    }

    fn lan(&self) -> &str {
        match self {
            SeriesKey::Tunnel { lan, .. } | SeriesKey::Vm { lan, .. } => lan,
        }
    }
}

/// One series as `GET /api/v1/series` returns it: column-major, as charts take it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesData {
    /// Which series.
    pub key: SeriesKey,
    /// Point times, ms since the Unix epoch, oldest first.
    pub t_ms: Vec<u64>,
    /// One vector per column (null: not measured at that point).
    pub columns: Vec<Column>,
}

/// One column of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Name, from [`TUNNEL_COLUMNS`] or [`VM_COLUMNS`].
    pub name: String,
    /// Values, one per point.
    pub values: Vec<Option<f64>>,
}

/// A series not fed for this long gives its place to a new one when the history is full.
pub const STALE_MS: u64 = 60_000;

/// A point: its time and its values as f32, NaN for "not measured": 32 bytes instead of
/// 104 with `Option<f64>`, so 4096 full series take 94 MB, not 307 (a chart needs no more
/// than f32's 7 digits).
struct Ring {
    points: VecDeque<(u64, [f32; WIDTH])>,
}

/// All series.
pub struct History {
    points: usize,
    max_series: usize,
    /// In feed order: the least recently fed first out.
    series: LruCache<SeriesKey, Ring>,
    /// Points of series that found no room (the history was full of live ones).
    refused: u64,
}

impl History {
    /// Keep `points` per series and at most `max_series` series.
    pub fn new(points: usize, max_series: usize) -> Self {
        History {
            points: points.max(1),
            max_series: max_series.max(1),
            series: LruCache::unbounded(),
            refused: 0,
        }
    }

    /// Points kept per series.
    pub fn capacity(&self) -> usize {
        self.points
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// No series held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Add a point (`values` in the order of the key's columns; extra ones are ignored).
    /// A point not later than the newest one is ignored: a report seen twice adds once.
    pub fn push(&mut self, key: SeriesKey, t_ms: u64, values: &[Option<f64>]) {
        let width = key.columns().len();
        if !self.series.contains(&key) {
            if self.series.len() >= self.max_series {
                let stale = self.series.peek_lru().is_some_and(|(_, r)| {
                    r.points
                        .back()
                        .is_none_or(|(t, _)| t.saturating_add(STALE_MS) < t_ms)
                });
                if !stale {
                    self.refused += 1;
                    return;
                }
                self.series.pop_lru();
            }
            self.series.put(
                key.clone(),
                Ring {
                    points: VecDeque::new(),
                },
            );
        }
        // Fed now: to the back of the eviction order.
        let Some(ring) = self.series.get_mut(&key) else {
            return;
        };
        if ring.points.back().is_some_and(|(t, _)| *t >= t_ms) {
            return;
        }
        let mut row = [f32::NAN; WIDTH];
        for (slot, v) in row.iter_mut().zip(values.iter().take(width)) {
            *slot = v.filter(|x| x.is_finite()).map_or(f32::NAN, |x| x as f32);
        }
        if ring.points.len() == self.points {
            ring.points.pop_front();
        }
        ring.points.push_back((t_ms, row));
    }

    /// Points that found no room for their series so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// One series, when held.
    pub fn get(&self, key: &SeriesKey) -> Option<SeriesData> {
        let ring = self.series.peek(key)?;
        let columns = key
            .columns()
            .iter()
            .enumerate()
            .map(|(i, name)| Column {
                name: (*name).to_string(),
                values: ring
                    .points
                    .iter()
                    .map(|(_, v)| (!v[i].is_nan()).then_some(f64::from(v[i])))
                    .collect(),
            })
            .collect();
        Some(SeriesData {
            key: key.clone(),
            t_ms: ring.points.iter().map(|(t, _)| *t).collect(),
            columns,
        })
    }

    /// The busiest point over the mean of all kept, summing every column (a VM's tx + rx):
    /// how bursty the traffic is at the series' spacing. None while idle or with fewer than
    /// 4 points.
    pub fn peak_to_mean(&self, key: &SeriesKey) -> Option<f64> {
        let ring = self.series.peek(key)?;
        if ring.points.len() < 4 {
            return None;
        }
        let sums: Vec<f64> = ring
            .points
            .iter()
            .map(|(_, v)| {
                v.iter()
                    .filter(|x| !x.is_nan())
                    .map(|x| f64::from(*x))
                    .sum()
            })
            .collect();
        let mean = sums.iter().sum::<f64>() / sums.len() as f64;
        let peak = sums.iter().cloned().fold(0.0, f64::max);
        (mean > 0.0).then(|| peak / mean)
    }

    /// Forget series of LANs for which `keep` says no.
    pub fn retain_lans(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<SeriesKey> = self
            .series
            .iter()
            .filter(|(k, _)| !keep(k.lan()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.series.pop(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(to: &str) -> SeriesKey {
        SeriesKey::Tunnel {
            lan: "lan1".into(),
            from: "h1".into(),
            to: to.into(),
        }
    }

    #[test]
    fn rings_are_bounded_ordered_and_column_major() {
        let mut h = History::new(3, 10);
        for t in 1..=5u64 {
            h.push(tunnel("h2"), t * 1000, &[Some(t as f64), None, Some(0.5)]);
        }
        // An old or repeated point is ignored.
        h.push(tunnel("h2"), 5000, &[Some(99.0)]);
        h.push(tunnel("h2"), 1000, &[Some(99.0)]);
        let d = h.get(&tunnel("h2")).expect("held");
        assert_eq!(d.t_ms, vec![3000, 4000, 5000]);
        assert_eq!(d.columns.len(), TUNNEL_COLUMNS.len());
        assert_eq!(d.columns[0].name, "rtt_p50_ms");
        assert_eq!(d.columns[0].values, vec![Some(3.0), Some(4.0), Some(5.0)]);
        assert_eq!(d.columns[1].values, vec![None, None, None]);
        assert_eq!(d.columns[2].values, vec![Some(0.5); 3]);
        assert!(h.get(&tunnel("h3")).is_none());
        // NaN and infinities are not numbers a chart can draw.
        h.push(tunnel("h2"), 6000, &[Some(f64::NAN), Some(f64::INFINITY)]);
        let d = h.get(&tunnel("h2")).expect("held");
        assert_eq!(d.columns[0].values[2], None);
        assert_eq!(d.columns[1].values[2], None);
    }

    #[test]
    fn the_series_fed_longest_ago_makes_room() {
        let mut h = History::new(4, 2);
        h.push(tunnel("a"), 1, &[Some(1.0)]);
        h.push(tunnel("b"), 1, &[Some(1.0)]);
        h.push(tunnel("a"), 2, &[Some(1.0)]);
        // Full of live series: the newcomer waits, and is counted.
        h.push(tunnel("c"), 3, &[Some(1.0)]);
        assert!(h.get(&tunnel("c")).is_none());
        assert_eq!(h.refused(), 1);
        // b went stale: it makes room; a, fed later, stays.
        h.push(tunnel("a"), STALE_MS, &[Some(1.0)]);
        h.push(tunnel("c"), STALE_MS + 2, &[Some(1.0)]);
        assert_eq!(h.len(), 2);
        assert!(h.get(&tunnel("b")).is_none(), "b was fed longest ago");
        assert!(h.get(&tunnel("a")).is_some() && h.get(&tunnel("c")).is_some());
        h.retain_lans(|l| l != "lan1");
        assert!(h.is_empty());
    }

    #[test]
    fn peak_to_mean_of_a_vm() {
        let vm = SeriesKey::Vm {
            lan: "l".into(),
            mac: "02:00:00:00:00:01".into(),
        };
        let mut h = History::new(10, 10);
        for (t, v) in [10.0, 10.0, 10.0].iter().enumerate() {
            h.push(vm.clone(), t as u64, &[Some(*v), Some(0.0)]);
        }
        assert_eq!(h.peak_to_mean(&vm), None, "too few points");
        h.push(vm.clone(), 10, &[Some(50.0), Some(10.0)]);
        // sums 10, 10, 10, 60: mean 22.5, peak 60.
        let p = h.peak_to_mean(&vm).expect("known");
        assert!((p - 60.0 / 22.5).abs() < 1e-9, "{p}");
        let idle = SeriesKey::Vm {
            lan: "l".into(),
            mac: "x".into(),
        };
        for t in 0..5 {
            h.push(idle.clone(), t, &[Some(0.0), Some(0.0)]);
        }
        assert_eq!(h.peak_to_mean(&idle), None);
    }
}
