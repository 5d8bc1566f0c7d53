//! The daemon (`restorectl daemon`, SPEC §4.2–§4.3, §6.1, §8): this module owns its lifecycle.
//!
//! - [`watch`]: the job-directory watcher, which turns file system events and a periodic timer
//!   into "rescan needed" signals.
//! - [`reconcile`]: a scan of the job directory applied to the store; the table of active job
//!   versions.
//! - [`scheduler`]: the one task that queues scheduled and one-shot runs.

pub mod reconcile;
pub mod scheduler;
pub mod watch;
