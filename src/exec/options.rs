//! [`EngineOptions`]: the engine's tunables, taken from the daemon config, and the clock it
//! reads time from.

use std::sync::Arc;
use std::time::Duration;

use crate::schedule::{Clock, SystemClock};

/// How long before a lease ends its holder stops acting on it when it could not renew it (the
/// database is away, the host is cut off): a quarter of the lease. It covers the difference
/// between two hosts' clocks and the time to stop, so a run (or the lead) has been given up
/// before another replica can take it over.
pub fn lease_margin(lease: Duration) -> Duration {
    lease / 4
}

/// Tunables of the engine. [`EngineOptions::from_config`] takes them from the daemon config.
#[derive(Clone)]
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
    /// Where every timestamp the engine writes or compares comes from: the daemon's clock
    /// ([`EngineOptions::with_clock`]), else the system clock. Waiting itself stays on tokio's
    /// timers: a manual clock decides what is due, it does not make the engine sleep less.
    pub clock: Arc<dyn Clock>,
    /// Whether other live replicas may hold leases on the same database (the daemon on
    /// PostgreSQL, [`EngineOptions::shared`]): recovery then leaves their runs and restore
    /// sessions alone instead of expiring every foreign lease.
    pub shared: bool,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .field("poll_interval", &self.poll_interval)
            .field("reconcile_grace", &self.reconcile_grace)
            .field("inline_backoff", &self.inline_backoff)
            .field("max_session_reopens", &self.max_session_reopens)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl EngineOptions {
    /// Options from the daemon config for lease owner `owner`, on the system clock.
    pub fn from_config(config: &crate::config::Config, owner: impl Into<String>) -> Self {
        EngineOptions {
            owner: owner.into(),
            lease: config.engine.lease,
            poll_interval: config.engine.poll_interval.max(Duration::from_millis(10)),
            reconcile_grace: config.engine.reconcile_grace,
            inline_backoff: config.engine.inline_backoff,
            max_session_reopens: 3,
            clock: Arc::new(SystemClock),
            shared: false,
        }
    }

    /// The same options for a database other replicas share (see [`EngineOptions::shared`]).
    #[must_use]
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// The same options reading time from `clock` (the daemon passes its own).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
