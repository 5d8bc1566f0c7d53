//! The daemon (`restorectl daemon`, SPEC §4.2–§4.3, §6.1, §8): this module owns its lifecycle.
//!
//! - [`watch`]: the job-directory watcher, which turns file system events and a periodic timer
//!   into "rescan needed" signals.

pub mod watch;
