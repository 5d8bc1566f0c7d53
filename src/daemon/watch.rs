//! The job-directory watcher: turns file system activity under `jobsDir` and a periodic timer into
//! "rescan needed" signals. It never says *what* changed; the daemon rescans the whole directory
//! and reconciles by content hash.
//!
//! Why not trust per-path events: editors save by writing a temporary file and renaming it over
//! the job file, and a Kubernetes ConfigMap update creates a new `..2026_…` directory, swaps the
//! `..data` symlink and removes the old directory, so no event ever names the job file a user
//! sees (CRATES.md §4). Every event except pure `Access` (opens, closes, reads: noise from our own
//! scans and from editors) therefore means "rescan", and so do watcher errors and kernel queue
//! overflows. Events are debounced (~500 ms), and a signal that arrives while one is still pending
//! is merged into it. A periodic rescan (default 60 s) is the safety net for what inotify misses;
//! a [`PollWatcher`] replaces inotify on network file systems, which deliver no events.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    DebounceEventResult, Debouncer, NoCache, RecommendedCache, new_debouncer, new_debouncer_opt,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::tasks::Tasks;
use crate::config::WatchConfig;

/// Shortest accepted debounce and poll interval: a zero tick would make the watcher threads spin.
const MIN_TICK: Duration = Duration::from_millis(10);

/// Longest interval between the debouncer's checks for settled events.
const MAX_DEBOUNCE_TICK: Duration = Duration::from_millis(100);

/// How the watcher watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Quiet time after the last event before a signal is sent (default 500 ms).
    pub debounce: Duration,
    /// Period of the full rescan on top of events (default 60 s); zero disables it.
    pub rescan_interval: Duration,
    /// Poll the directory tree instead of using inotify (for NFS, SMB, FUSE mounts).
    pub poll: bool,
    /// How often the poll watcher walks the tree (default 2 s).
    pub poll_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(500),
            rescan_interval: Duration::from_secs(60),
            poll: false,
            poll_interval: Duration::from_secs(2),
        }
    }
}

impl From<&WatchConfig> for WatchOptions {
    fn from(config: &WatchConfig) -> Self {
        WatchOptions {
            rescan_interval: config.rescan_interval,
            poll: config.poll,
            ..WatchOptions::default()
        }
    }
}

/// Why a rescan is needed (for logs and metrics; every reason means "rescan everything").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescanReason {
    /// Something under the directory changed.
    Changed,
    /// The watcher lost track (kernel queue overflow or a watcher error, logged when it happened).
    WatcherTrouble,
    /// The periodic safety-net rescan.
    Periodic,
}

/// Errors starting the watcher. Each names the directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The directory cannot be watched (missing, unreadable, or the OS limit on watches reached).
    #[error("{}: cannot watch the job directory: {source}{hint}", .dir.display())]
    Watch {
        /// The job directory.
        dir: PathBuf,
        /// notify's error.
        #[source]
        source: notify::Error,
        /// What to do about it, when we know (empty otherwise).
        hint: &'static str,
    },
}

/// The receiving end of a running watcher. The watching itself runs in a task on the
/// [`Tasks`] given to [`JobDirWatcher::start`] and stops when the [`CancellationToken`] is
/// cancelled.
#[derive(Debug)]
pub struct JobDirWatcher {
    signals: mpsc::Receiver<RescanReason>,
}

/// The OS watcher, kept alive by the watcher task; dropping it stops watching.
enum ActiveWatcher {
    Native(Debouncer<RecommendedWatcher, RecommendedCache>),
    Poll(Debouncer<PollWatcher, NoCache>),
}

impl JobDirWatcher {
    /// Starts watching `dir` recursively.
    ///
    /// Start the watcher *before* the initial scan of the directory, so a change made during that
    /// scan still produces a signal. No signal is sent at start.
    ///
    /// # Errors
    ///
    /// [`WatchError::Watch`] when the directory cannot be watched.
    pub fn start(
        dir: &Path,
        options: &WatchOptions,
        cancel: CancellationToken,
        tasks: &Tasks,
    ) -> Result<Self, WatchError> {
        // Capacity 1: a signal that finds one pending is merged into it (the rescan covers both).
        let (tx, signals) = mpsc::channel(1);
        let watcher = watch(dir, options, tx.clone())?;
        let rescan_interval = options.rescan_interval;
        tasks.spawn("watcher", async move {
            // Owned by the task: dropping it on cancellation stops the OS watch and the debouncer
            // thread (which holds the other sender).
            let _watcher = watcher;
            let mut periodic = (!rescan_interval.is_zero()).then(|| {
                let mut tick =
                    tokio::time::interval_at(Instant::now() + rescan_interval, rescan_interval);
                // After a stall, one rescan is enough: do not burst the missed ticks.
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                tick
            });
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = async {
                        match periodic.as_mut() {
                            Some(tick) => tick.tick().await,
                            None => std::future::pending().await,
                        }
                    } => signal(&tx, RescanReason::Periodic),
                }
            }
        });
        Ok(JobDirWatcher { signals })
    }

    /// Waits for the next rescan signal. `None` once the watcher has stopped (cancelled).
    pub async fn next(&mut self) -> Option<RescanReason> {
        self.signals.recv().await
    }

    /// A pending signal, if any, without waiting.
    pub fn try_next(&mut self) -> Option<RescanReason> {
        self.signals.try_recv().ok()
    }
}

fn watch(
    dir: &Path,
    options: &WatchOptions,
    tx: mpsc::Sender<RescanReason>,
) -> Result<ActiveWatcher, WatchError> {
    let error = |source: notify::Error| {
        let hint = match source.kind {
            notify::ErrorKind::MaxFilesWatch => {
                " (raise fs.inotify.max_user_watches / max_user_instances, or set `watch.poll: true`)"
            }
            _ => "",
        };
        WatchError::Watch {
            dir: dir.to_path_buf(),
            source,
            hint,
        }
    };
    let debounce = options.debounce.max(MIN_TICK);
    // How often the debouncer looks for settled events: its default is a quarter of the
    // debounce (125 ms), up to that much added to a change's latency; 100 ms at most keeps the
    // latency within a second for a large directory without waking an idle daemon too often.
    let tick = Some((debounce / 4).min(MAX_DEBOUNCE_TICK).max(MIN_TICK));
    let handler = event_handler(dir.to_path_buf(), tx);
    let mut watcher = if options.poll {
        let config =
            notify::Config::default().with_poll_interval(options.poll_interval.max(MIN_TICK));
        ActiveWatcher::Poll(
            new_debouncer_opt::<_, PollWatcher, NoCache>(debounce, tick, handler, NoCache, config)
                .map_err(error)?,
        )
    } else {
        ActiveWatcher::Native(new_debouncer(debounce, tick, handler).map_err(error)?)
    };
    match &mut watcher {
        ActiveWatcher::Native(d) => d.watch(dir, RecursiveMode::Recursive),
        ActiveWatcher::Poll(d) => d.watch(dir, RecursiveMode::Recursive),
    }
    .map_err(error)?;
    Ok(watcher)
}

/// The debouncer's callback, run on its own thread: one signal per relevant batch.
fn event_handler(
    dir: PathBuf,
    tx: mpsc::Sender<RescanReason>,
) -> impl FnMut(DebounceEventResult) + Send + 'static {
    move |result| {
        let reason = match result {
            Ok(events) => {
                if events.iter().any(|e| e.need_rescan()) {
                    Some(RescanReason::WatcherTrouble)
                } else if events
                    .iter()
                    .any(|e| !matches!(e.kind, EventKind::Access(_)))
                {
                    Some(RescanReason::Changed)
                } else {
                    None
                }
            }
            Err(errors) => {
                for error in &errors {
                    tracing::warn!(dir = %dir.display(), %error, "job directory watcher error; rescanning");
                }
                Some(RescanReason::WatcherTrouble)
            }
        };
        if let Some(reason) = reason {
            tracing::debug!(?reason, "job directory activity settled; rescan requested");
            signal(&tx, reason);
        }
    }
}

fn signal(tx: &mpsc::Sender<RescanReason>, reason: RescanReason) {
    // Full: a rescan is already pending and will see this change too. Closed: the daemon is
    // shutting down. Neither needs handling.
    let _ = tx.try_send(reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Generous: only bounds a hang, never asserts speed.
    const PATIENCE: Duration = Duration::from_secs(10);
    /// A silence this long (ten debounce windows) means every earlier change has been signalled.
    const QUIET: Duration = Duration::from_secs(1);

    struct Harness {
        dir: tempfile::TempDir,
        watcher: JobDirWatcher,
        cancel: CancellationToken,
        tracker: Tasks,
    }

    impl Harness {
        /// Starts a watcher over a prepared directory, with the periodic rescan out of the way so
        /// any signal a test sees comes from file events.
        async fn start(poll: bool, prepare: impl FnOnce(&Path)) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            prepare(dir.path());
            let options = WatchOptions {
                debounce: Duration::from_millis(100),
                rescan_interval: Duration::from_secs(3600),
                poll,
                poll_interval: Duration::from_millis(100),
            };
            let cancel = CancellationToken::new();
            let tracker = Tasks::new();
            let watcher =
                JobDirWatcher::start(dir.path(), &options, cancel.clone(), &tracker).unwrap();
            let mut h = Harness {
                dir,
                watcher,
                cancel,
                tracker,
            };
            h.settle().await;
            h
        }

        /// Waits until the watcher has been silent for [`QUIET`] (ten debounce windows),
        /// swallowing the signals of what happened before. A signal the next `expect_change`
        /// sees therefore comes from the next change, not from a late event of an earlier one
        /// (a fixed sleep followed by a drain cannot promise that on a loaded machine).
        async fn settle(&mut self) {
            let start = std::time::Instant::now();
            while tokio::time::timeout(QUIET, self.watcher.next())
                .await
                .is_ok()
            {
                assert!(start.elapsed() < PATIENCE, "the watcher never went quiet");
            }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        async fn expect_change(&mut self, what: &str) {
            let got = tokio::time::timeout(PATIENCE, self.watcher.next()).await;
            match got {
                Ok(Some(RescanReason::Changed | RescanReason::WatcherTrouble)) => {}
                other => panic!("{what}: expected a rescan signal from file events, got {other:?}"),
            }
        }

        async fn stop(self) {
            self.cancel.cancel();
            self.tracker.close();
            tokio::time::timeout(PATIENCE, self.tracker.wait())
                .await
                .expect("the watcher task stops when cancelled");
        }
    }

    #[test]
    fn only_non_access_events_errors_and_overflows_signal() {
        use notify::event::{AccessKind, CreateKind, Flag};
        use notify::{Event, EventKind};
        use notify_debouncer_full::DebouncedEvent;

        let batch = |kinds: &[EventKind]| -> DebounceEventResult {
            Ok(kinds
                .iter()
                .map(|k| DebouncedEvent::new(Event::new(*k), std::time::Instant::now()))
                .collect())
        };
        let (tx, mut rx) = mpsc::channel(1);
        let mut handle = event_handler(PathBuf::from("/jobs"), tx);

        handle(batch(&[EventKind::Access(AccessKind::Any); 3]));
        assert_eq!(rx.try_recv().ok(), None, "pure Access batches are noise");

        handle(batch(&[
            EventKind::Access(AccessKind::Any),
            EventKind::Create(CreateKind::File),
        ]));
        assert_eq!(rx.try_recv().ok(), Some(RescanReason::Changed));

        // Two batches before the daemon looks: merged into one pending signal.
        handle(batch(&[EventKind::Any]));
        handle(batch(&[EventKind::Other]));
        assert_eq!(rx.try_recv().ok(), Some(RescanReason::Changed));
        assert_eq!(rx.try_recv().ok(), None);

        let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        handle(Ok(vec![DebouncedEvent::new(
            overflow,
            std::time::Instant::now(),
        )]));
        assert_eq!(rx.try_recv().ok(), Some(RescanReason::WatcherTrouble));

        handle(Err(vec![notify::Error::generic("inotify queue broke")]));
        assert_eq!(rx.try_recv().ok(), Some(RescanReason::WatcherTrouble));
    }

    #[tokio::test]
    async fn editor_atomic_save_is_seen() {
        let mut h =
            Harness::start(false, |d| fs::write(d.join("job.yaml"), "a: 1\n").unwrap()).await;
        fs::write(h.path(".job.yaml.swp"), "a: 2\n").unwrap();
        fs::rename(h.path(".job.yaml.swp"), h.path("job.yaml")).unwrap();
        h.expect_change("write temp + rename").await;
        h.stop().await;
    }

    /// Lays out a Kubernetes ConfigMap volume: `job.yaml -> ..data/job.yaml`, `..data -> ..v1`.
    fn configmap(d: &Path) {
        fs::create_dir(d.join("..2026_01_01_v1")).unwrap();
        fs::write(d.join("..2026_01_01_v1/job.yaml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink("..2026_01_01_v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/job.yaml", d.join("job.yaml")).unwrap();
    }

    /// Updates it the way the kubelet does: new directory, `..data` swapped by rename, old removed.
    fn configmap_update(d: &Path) {
        fs::create_dir(d.join("..2026_01_02_v2")).unwrap();
        fs::write(d.join("..2026_01_02_v2/job.yaml"), "a: 2\n").unwrap();
        std::os::unix::fs::symlink("..2026_01_02_v2", d.join("..data_tmp")).unwrap();
        fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        fs::remove_dir_all(d.join("..2026_01_01_v1")).unwrap();
    }

    #[tokio::test]
    async fn configmap_data_symlink_swap_is_seen() {
        let mut h = Harness::start(false, configmap).await;
        configmap_update(h.dir.path());
        h.expect_change("..data symlink swap").await;
        assert_eq!(fs::read_to_string(h.path("job.yaml")).unwrap(), "a: 2\n");
        h.stop().await;
    }

    #[tokio::test]
    async fn new_file_in_new_subdirectory_is_seen_and_the_subdirectory_is_watched() {
        let mut h = Harness::start(false, |_| {}).await;
        fs::create_dir(h.path("team")).unwrap();
        fs::write(h.path("team/nightly.yaml"), "a: 1\n").unwrap();
        h.expect_change("new subdirectory with a file").await;
        // Once the first signal is handled, a later edit inside the new directory is seen too.
        h.settle().await;
        fs::write(h.path("team/weekly.yaml"), "a: 2\n").unwrap();
        h.expect_change("file in the new subdirectory").await;
        h.stop().await;
    }

    #[tokio::test]
    async fn deletion_is_seen() {
        let mut h =
            Harness::start(false, |d| fs::write(d.join("job.yml"), "a: 1\n").unwrap()).await;
        fs::remove_file(h.path("job.yml")).unwrap();
        h.expect_change("deletion").await;
        h.stop().await;
    }

    #[tokio::test]
    async fn poll_mode_sees_new_files_and_configmap_swaps() {
        let mut h = Harness::start(true, configmap).await;
        fs::write(h.path("other.yaml"), "a: 1\n").unwrap();
        h.expect_change("poll: new file").await;
        h.settle().await;
        configmap_update(h.dir.path());
        h.expect_change("poll: ..data swap").await;
        h.stop().await;
    }

    #[tokio::test]
    async fn periodic_rescan_without_events_and_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let options = WatchOptions {
            rescan_interval: Duration::from_millis(50),
            ..WatchOptions::default()
        };
        let cancel = CancellationToken::new();
        let tracker = Tasks::new();
        let mut watcher =
            JobDirWatcher::start(dir.path(), &options, cancel.clone(), &tracker).unwrap();
        let got = tokio::time::timeout(PATIENCE, watcher.next())
            .await
            .unwrap();
        assert_eq!(got, Some(RescanReason::Periodic));
        cancel.cancel();
        tracker.close();
        tokio::time::timeout(PATIENCE, tracker.wait())
            .await
            .unwrap();
        // Every sender is gone once the task and the debouncer thread have stopped.
        let end =
            tokio::time::timeout(PATIENCE, async { while watcher.next().await.is_some() {} }).await;
        assert!(end.is_ok(), "the signal stream ends after cancellation");
    }

    #[tokio::test]
    async fn missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = JobDirWatcher::start(
            &missing,
            &WatchOptions::default(),
            CancellationToken::new(),
            &Tasks::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }
}
