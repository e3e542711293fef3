//! `blast stats`: how long installs and captures take (from the samples of [`crate::metrics`]), how
//! much the environments and the store weigh, what sharing objects saves, and how full the filesystem
//! holding the store is.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{self, Level, MetricKind, Summary};
use crate::store::Store;

/// Above this share of its filesystem in use, the store's disk is an alert.
pub const DISK_ALERT_PERCENT: f64 = 90.0;

#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub install: InstallStats,
    pub capture: Durations,
    /// Every environment with a readable HEAD, by label.
    pub envs: Vec<EnvSize>,
    /// Bytes of the store's objects, layers and snapshots (as `blast status` counts them).
    pub store_bytes: u64,
    /// File bytes of all environments' HEADs added up, as if nothing were shared.
    pub logical_bytes: u64,
    /// Bytes of the distinct objects those files use.
    pub unique_bytes: u64,
    /// `logical_bytes / unique_bytes` (1 when there is nothing yet).
    pub dedup_ratio: f64,
    pub disk: DiskUsage,
}

/// Durations of one kind of sample, in seconds; the figures are `None` when there is no sample.
#[derive(Debug, Serialize)]
pub struct Durations {
    pub count: usize,
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

impl Durations {
    fn of(summary: Option<&Summary>) -> Durations {
        Durations {
            count: summary.map_or(0, |s| s.count),
            p50_seconds: summary.map(|s| s.p50),
            p95_seconds: summary.map(|s| s.p95),
            max_seconds: summary.map(|s| s.max),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InstallStats {
    #[serde(flatten)]
    pub durations: Durations,
    /// Judged on the 95th percentile against the thresholds below; `ok` without samples.
    pub level: Level,
    pub warning_over_seconds: f64,
    pub alert_over_seconds: f64,
    pub critical_over_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct EnvSize {
    pub env: String,
    pub path: String,
    /// File bytes of its HEAD (what `blast status` calls `env_bytes`).
    pub bytes: u64,
    pub files: usize,
}

/// The filesystem holding the store, as `statvfs` reports it (what `df` shows).
#[derive(Debug, Serialize)]
pub struct DiskUsage {
    /// The store's directory.
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What an unprivileged user can still write.
    pub available_bytes: u64,
    /// `used / (used + available)`, as `df` computes it.
    pub used_percent: f64,
    /// `alert` over [`DISK_ALERT_PERCENT`], else `ok`.
    pub level: Level,
    pub alert_over_percent: f64,
}

pub fn stats(store: &Store) -> Result<StatsReport> {
    let durations = |kind| -> Result<Option<Summary>> {
        let samples = metrics::samples(store, kind)?;
        let seconds: Vec<f64> = samples.iter().map(|s| s.seconds).collect();
        Ok(Summary::of(&seconds))
    };
    let install = durations(MetricKind::Install)?;
    let capture = durations(MetricKind::Capture)?;
    let sizes = super::inspect::head_sizes(store)?;
    let mut envs: Vec<EnvSize> = sizes
        .envs
        .iter()
        .map(|(env, bytes, files)| EnvSize {
            env: env.label().to_owned(),
            path: env.path.clone(),
            bytes: *bytes,
            files: *files,
        })
        .collect();
    envs.sort_by(|a, b| a.env.cmp(&b.env));
    Ok(StatsReport {
        install: InstallStats {
            durations: Durations::of(install.as_ref()),
            level: install
                .as_ref()
                .map_or(Level::Ok, |s| Level::of_install_seconds(s.p95)),
            warning_over_seconds: metrics::INSTALL_WARNING_SECONDS,
            alert_over_seconds: metrics::INSTALL_ALERT_SECONDS,
            critical_over_seconds: metrics::INSTALL_CRITICAL_SECONDS,
        },
        capture: Durations::of(capture.as_ref()),
        envs,
        store_bytes: super::inspect::store_bytes(store)?,
        logical_bytes: sizes.logical_bytes,
        unique_bytes: sizes.unique_bytes,
        dedup_ratio: if sizes.unique_bytes == 0 {
            1.0
        } else {
            sizes.logical_bytes as f64 / sizes.unique_bytes as f64
        },
        disk: disk_usage(store)?,
    })
}

fn disk_usage(store: &Store) -> Result<DiskUsage> {
    let home = store.home();
    let fs = nix::sys::statvfs::statvfs(home).map_err(|e| Error::Io {
        action: "reading the filesystem usage of",
        path: home.to_owned(),
        source: e.into(),
    })?;
    let unit = fs.fragment_size();
    let total_bytes = fs.blocks().saturating_mul(unit);
    let used_bytes = fs
        .blocks()
        .saturating_sub(fs.blocks_free())
        .saturating_mul(unit);
    let available_bytes = fs.blocks_available().saturating_mul(unit);
    let usable = used_bytes.saturating_add(available_bytes);
    let used_percent = if usable == 0 {
        0.0
    } else {
        used_bytes as f64 * 100.0 / usable as f64
    };
    Ok(DiskUsage {
        path: home.display().to_string(),
        total_bytes,
        used_bytes,
        available_bytes,
        used_percent,
        level: if used_percent > DISK_ALERT_PERCENT {
            Level::Alert
        } else {
            Level::Ok
        },
        alert_over_percent: DISK_ALERT_PERCENT,
    })
}
