//! systemd integration (SPEC §8) through `sd-notify`: `READY=1` once the jobs are loaded,
//! `STATUS=` with job and run counts, watchdog pings at half of `WATCHDOG_USEC`, `STOPPING=1`.
//!
//! Every call is a no-op without `$NOTIFY_SOCKET` (not under systemd); a failing notification is
//! logged at debug level and otherwise ignored: systemd integration must never stop the daemon.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::store::{JobState, Store, StoreStats};

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// `READY=1` with a first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=…`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The status line: `jobs: 12 active, 1 invalid; runs: 2 running, 3 waiting, 0 need attention`.
pub fn status_line(stats: &StoreStats) -> String {
    format!(
        "jobs: {} active, {} invalid; runs: {} running, {} waiting, {} need attention",
        stats.jobs_in(JobState::Active),
        stats.jobs_in(JobState::Invalid),
        stats.running_runs,
        stats.waiting_runs,
        stats.attention_runs
    )
}

/// The watchdog ping interval: half of `WATCHDOG_USEC` when systemd set one for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Pings the watchdog every `interval` while the state database answers, until `cancel`. A
/// daemon whose database hangs stops pinging, and systemd restarts it.
pub async fn watchdog(interval: Duration, store: Store, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(interval, store.ping()).await {
            Ok(Ok(())) => send(&[NotifyState::Watchdog]),
            Ok(Err(error)) => {
                tracing::warn!(%error, "state database does not answer; watchdog not pinged")
            }
            Err(_) => tracing::warn!("state database ping timed out; watchdog not pinged"),
        }
    }
}
