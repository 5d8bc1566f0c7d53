//! Logging and the metrics recorder of the process (SPEC §8).
//!
//! Logs: `tracing-subscriber` on stderr, human text on a terminal (colours only there), one JSON
//! object per line when `log.format: json` (for journald and collectors). `RUST_LOG`, when set,
//! replaces `log.level`. sqlx logs every statement at `info`; it is held at `warn` unless the
//! filter names it explicitly.
//!
//! Metrics: one Prometheus recorder per process, installed as the global `metrics` recorder on
//! first use so the `metrics::counter!`-style macros of every module reach it. Gauges that are
//! not refreshed for [`GAUGE_IDLE_TIMEOUT`] disappear from the output (a removed job stops
//! reporting a next fire); that needs [`PrometheusHandle::run_upkeep`], which the daemon calls
//! periodically.
//!
//! Durations are Prometheus histograms with [`DURATION_BUCKETS`] (every series whose name ends in
//! `_duration_seconds`), not the exporter's default summaries: quantiles of summaries cannot be
//! aggregated across jobs or replicas, `histogram_quantile` over summed buckets can.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// How long a gauge survives without being set again.
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Upper bounds (seconds) of the duration histograms: runs last minutes to hours (a PST export
/// waits up to hours for the server to build the file), so 10 s up to a day.
pub const DURATION_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    43200.0, 86400.0,
];

/// Installs the process's log subscriber. Returns false when one was already installed (tests
/// that start several daemons in one process keep the first).
pub fn init_logging(log: &LogConfig) -> bool {
    let filter = log_filter(log);
    let ansi = std::io::stderr().is_terminal();
    match log.format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .try_init()
            .is_ok(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
            .is_ok(),
    }
}

/// The filter: `RUST_LOG` when set and valid, else `log.level`; sqlx at `warn` unless named.
pub fn log_filter(log: &LogConfig) -> EnvFilter {
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() && EnvFilter::try_new(&v).is_ok() => v,
        _ => log.level.clone(),
    };
    let directives = if directives.contains("sqlx") {
        directives
    } else {
        format!("{directives},sqlx=warn")
    };
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
}

/// The process's Prometheus handle, installing the recorder on first call.
///
/// When another global recorder is already installed (a test harness), a detached recorder is
/// returned instead: its output then only holds what is recorded through it, which the daemon's
/// store-driven series do not need (see [`crate::daemon::metrics`]).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    DURATION_BUCKETS,
                )
                // The only error is an empty bucket list, and the list is a non-empty constant.
                .expect("DURATION_BUCKETS is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics shows only ours");
            }
            handle
        })
        .clone()
}
