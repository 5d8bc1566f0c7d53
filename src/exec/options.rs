//! [`EngineOptions`]: the engine's tunables, taken from the daemon config.

use std::time::Duration;

/// Tunables of the engine. [`EngineOptions::from_config`] takes them from the daemon config.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The lease owner written on claimed runs (the daemon instance id).
    pub owner: String,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// Poll interval of a submitted restore (config `engine.pollInterval`).
    pub poll_interval: Duration,
    /// Wait after an unknown restore outcome before "no trace" counts as "not received"
    /// (config `engine.reconcileGrace`, at least the server's `requestTimeout`).
    pub reconcile_grace: Duration,
    /// Backoffs up to this are slept inside the run, longer ones park it in `waiting_retry`.
    pub inline_backoff: Duration,
    /// Restore sessions one run may re-open after losing them before its steps fail.
    pub max_session_reopens: u32,
}

impl EngineOptions {
    /// Options from the daemon config for lease owner `owner`.
    pub fn from_config(config: &crate::config::Config, owner: impl Into<String>) -> Self {
        EngineOptions {
            owner: owner.into(),
            lease: Duration::from_secs(60),
            poll_interval: config.engine.poll_interval.max(Duration::from_millis(10)),
            reconcile_grace: config.engine.reconcile_grace,
            inline_backoff: config.engine.inline_backoff,
            max_session_reopens: 3,
        }
    }
}
