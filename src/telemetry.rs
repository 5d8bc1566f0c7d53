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

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// How long a gauge survives without being set again.
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

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
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT));
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics shows only ours");
            }
            handle
        })
        .clone()
}
