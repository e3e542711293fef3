//! Timing samples kept in the index, and the figures `blast stats` draws from them.
//!
//! Two kinds of sample: how long an installer transaction took (`blast install`, `uninstall`, `pip`)
//! and how long a change took to become a committed snapshot once it was complete (the session
//! watcher's capture latency). Each is kept under `metric/<kind>/…` in the index (SPEC §13); only the
//! newest [`KEPT_PER_KIND`] of a kind are kept, older ones are deleted as new ones are written.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::index::Batch;
use crate::store::Store;

/// How many samples of one kind the index keeps.
pub const KEPT_PER_KIND: usize = 1000;

/// Install durations over these many seconds are a warning, an alert, critical.
pub const INSTALL_WARNING_SECONDS: f64 = 30.0;
pub const INSTALL_ALERT_SECONDS: f64 = 60.0;
pub const INSTALL_CRITICAL_SECONDS: f64 = 120.0;

/// What a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// The whole transaction of `blast install`, `uninstall` or `pip`, from the command's start to the
    /// moved HEAD (or to "nothing changed").
    Install,
    /// From the moment a change was complete (an installer's exit, the last file event of a live
    /// session) to its committed snapshot.
    Capture,
}

impl MetricKind {
    /// Its name in index keys and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Install => "install",
            MetricKind::Capture => "capture",
        }
    }
}

/// One timing, as the index keeps it (postcard: the fields in this order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub env_id: String,
    /// Unix milliseconds when it was recorded.
    pub time_ms: i64,
    pub seconds: f64,
}

/// Records that something of `kind` took `seconds` in environment `env_id`, dropping the oldest samples
/// of that kind beyond [`KEPT_PER_KIND`] in the same write.
pub fn record(store: &Store, kind: MetricKind, env_id: &str, seconds: f64) -> Result<()> {
    record_keeping(store, kind, env_id, seconds, KEPT_PER_KIND)
}

fn record_keeping(
    store: &Store,
    kind: MetricKind,
    env_id: &str,
    seconds: f64,
    keep: usize,
) -> Result<()> {
    let sample = MetricSample {
        env_id: env_id.to_owned(),
        time_ms: jiff::Timestamp::now().as_millisecond(),
        seconds,
    };
    let existing = store.index().metric_samples(kind)?;
    let mut batch = Batch::default();
    let excess = (existing.len() + 1).saturating_sub(keep);
    for old in existing.iter().take(excess) {
        batch.delete_metric(kind, old);
    }
    batch.put_metric(kind, &sample);
    store.index().write(batch)
}

/// Samples of `kind`, oldest first.
pub fn samples(store: &Store, kind: MetricKind) -> Result<Vec<MetricSample>> {
    store.index().metric_samples(kind)
}

/// How a duration compares with the thresholds of installs: over 30 s is a warning, over 60 s an alert,
/// over 120 s critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Alert,
    Critical,
}

impl Level {
    /// The level of an install duration; a value exactly at a threshold is still below it.
    pub fn of_install_seconds(seconds: f64) -> Level {
        if seconds > INSTALL_CRITICAL_SECONDS {
            Level::Critical
        } else if seconds > INSTALL_ALERT_SECONDS {
            Level::Alert
        } else if seconds > INSTALL_WARNING_SECONDS {
            Level::Warning
        } else {
            Level::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Alert => "alert",
            Level::Critical => "critical",
        }
    }
}

/// Count, median, 95th percentile and maximum of a set of durations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Summary {
    /// Nearest-rank percentiles (the smallest value with at least p% of the values at or below it);
    /// `None` when there are no values.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let rank = |p: usize| {
            // ceil(p × n / 100), at least 1: the 1-based rank of the percentile.
            let rank = (p * sorted.len()).div_ceil(100).max(1);
            sorted[rank - 1]
        };
        Some(Summary {
            count: sorted.len(),
            p50: rank(50),
            p95: rank(95),
            max: sorted[sorted.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(
            Summary::of(&[4.0]),
            Some(Summary {
                count: 1,
                p50: 4.0,
                p95: 4.0,
                max: 4.0
            })
        );
        // 1..=20 in any order: p50 is the 10th value, p95 the 19th.
        let mut values: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        values.swap(3, 17);
        assert_eq!(
            Summary::of(&values),
            Some(Summary {
                count: 20,
                p50: 10.0,
                p95: 19.0,
                max: 20.0
            })
        );
        // 1..=100: the percentiles are the values themselves.
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&hundred).unwrap();
        assert_eq!((s.p50, s.p95, s.max), (50.0, 95.0, 100.0));
        // Three values: ranks ceil(1.5) = 2 and ceil(2.85) = 3.
        let s = Summary::of(&[0.5, 0.1, 0.3]).unwrap();
        assert_eq!((s.count, s.p50, s.p95, s.max), (3, 0.3, 0.5, 0.5));
        // What is not a number is left out.
        let s = Summary::of(&[f64::NAN, 2.0, f64::INFINITY]).unwrap();
        assert_eq!((s.count, s.p50), (1, 2.0));
    }

    #[test]
    fn only_the_newest_samples_of_a_kind_are_kept() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        for i in 1..=5 {
            record_keeping(&store, MetricKind::Install, "e1", f64::from(i), 3).unwrap();
            // Distinct milliseconds, so the keys sort in the order written.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        record(&store, MetricKind::Capture, "e2", 0.25).unwrap();
        let kept: Vec<f64> = samples(&store, MetricKind::Install)
            .unwrap()
            .iter()
            .map(|s| s.seconds)
            .collect();
        assert_eq!(kept, [3.0, 4.0, 5.0]);
        let capture = samples(&store, MetricKind::Capture).unwrap();
        assert_eq!(capture.len(), 1);
        assert_eq!(
            (capture[0].env_id.as_str(), capture[0].seconds),
            ("e2", 0.25)
        );
    }

    #[test]
    fn install_levels_at_the_edges() {
        let cases = [
            (0.0, Level::Ok),
            (30.0, Level::Ok),
            (30.001, Level::Warning),
            (60.0, Level::Warning),
            (60.5, Level::Alert),
            (120.0, Level::Alert),
            (120.01, Level::Critical),
            (10_000.0, Level::Critical),
        ];
        for (seconds, level) in cases {
            assert_eq!(Level::of_install_seconds(seconds), level, "{seconds} s");
        }
    }
}
