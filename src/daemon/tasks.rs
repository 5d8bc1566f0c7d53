//! The daemon's tasks: every long-lived task runs on one [`TaskTracker`] under a name, and a
//! panic in any of them stops the daemon.
//!
//! tokio catches a panicking task and lets the others go on, so without supervision a bug in
//! the scheduler (or the heartbeat, the request consumer, an executor worker…) would leave a
//! daemon that answers `/readyz` 200 while nothing is scheduled any more. [`Tasks::spawn`]
//! catches the panic of its task instead: the first one is logged with its task name, `/readyz`
//! answers 503 naming it, and [`Tasks::failed`] completes, on which the daemon stops like on
//! SIGTERM (runs in progress checkpoint within `shutdownTimeout`) and exits 1. systemd's
//! `Restart=on-failure` (or the container runtime) starts it again and recovery resumes the
//! interrupted runs; a task left dead inside a live process would never be.
//!
//! A panic inside one run's execution does not get here: the run engine catches it, fails that
//! run and goes on (see `exec::engine`).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first panic of a supervised task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPanic {
    /// The task's name (`scheduler`, `executor`, …).
    pub task: &'static str,
    /// The panic's message.
    pub message: String,
}

/// The daemon's tasks and their supervision. Cheap to clone; clones share everything.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    failure: Arc<Failure>,
}

#[derive(Default)]
struct Failure {
    /// Cancelled at the first panic.
    token: CancellationToken,
    first: Mutex<Option<TaskPanic>>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("tracker", &self.tracker)
            .field("panicked", &self.panicked())
            .finish()
    }
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `future` as the task `task`, supervised: a panic in it is recorded and completes
    /// [`Tasks::failed`].
    pub fn spawn<F>(&self, task: &'static str, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let failure = Arc::clone(&self.failure);
        let supervised = async move {
            crate::panics::inject("task", task);
            future.await;
        };
        // Unwind safety: the task's state dies with it; what it shared with other tasks is
        // the store (transactions roll back) and tokio primitives that do not poison.
        self.tracker.spawn(async move {
            if let Err(payload) = std::panic::AssertUnwindSafe(supervised)
                .catch_unwind()
                .await
            {
                failure.record(task, crate::panics::message(&*payload));
            }
        });
    }

    /// The first panic, if a task panicked.
    pub fn panicked(&self) -> Option<TaskPanic> {
        self.failure
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Completes at the first panic of a task, with it.
    pub async fn failed(&self) -> TaskPanic {
        self.failure.token.cancelled().await;
        // The token is cancelled only after the panic is recorded.
        self.panicked().unwrap_or(TaskPanic {
            task: "unknown",
            message: String::new(),
        })
    }

    /// No more tasks will be spawned ([`Tasks::wait`] can complete).
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Waits until every task has returned (after [`Tasks::close`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}

impl Failure {
    fn record(&self, task: &'static str, message: String) {
        tracing::error!(
            task,
            panic = %message,
            "daemon task {task} panicked; the daemon stops (its service manager restarts it, and recovery resumes the interrupted runs)"
        );
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(TaskPanic { task, message });
        }
        drop(first);
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_the_others_finish() {
        let tasks = Tasks::new();
        let stop = CancellationToken::new();
        let survivor = stop.clone();
        tasks.spawn("survivor", async move { survivor.cancelled().await });
        tasks.spawn("broken", async { panic!("broken on purpose") });
        tasks.close();
        let panic = tasks.failed().await;
        assert_eq!(panic.task, "broken");
        assert_eq!(panic.message, "broken on purpose");
        stop.cancel();
        tasks.wait().await;
        assert_eq!(tasks.panicked(), Some(panic));
    }
}
