//! The shared state of a running simulator ([`SimState`]): configuration, world, journal,
//! fault rules, the mutable session data behind one lock, the request counter and the
//! background tasks. Every handler gets it; it imports none of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::SimConfig;
use super::faults::Faults;
use super::journal::Journal;
use super::sessions::Data;
use super::world::World;

/// Shared state of a running simulator.
#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    pub(crate) world: World,
    pub(crate) journal: Journal,
    pub(crate) faults: Faults,
    data: Mutex<Data>,
    seq: AtomicU64,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl SimState {
    /// The state of a simulator that has not served anything yet.
    pub(crate) fn new(config: SimConfig, world: World, faults: Faults) -> SimState {
        SimState {
            world,
            config,
            journal: Journal::default(),
            faults,
            data: Mutex::new(Data::default()),
            seq: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Runs `f` on the data under the lock (never held across an `.await`). A poisoned lock
    /// (a panic elsewhere) still yields the data: the simulator keeps serving.
    pub(crate) fn with_data<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
        let mut guard = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}
