//! The run engine (SPEC §4.1, §5, §7; docs/engine.md): executes one run of any job kind against a
//! VB365 server and records every step in the store, so that a crash at any instant loses
//! nothing and sends no restore twice.
//!
//! - [`engine`]: [`Engine`], claiming a run with a lease (renewed while working), the run's life
//!   cycle from the job version it was queued with to its final state, cancellation, timeouts;
//! - [`session`]: the run's restore session (opened lazily, re-opened when lost, always stopped
//!   at the end unless a download or a restore still needs it) and the per-server limiter of
//!   open sessions (`maxConcurrentSessions`);
//! - [`select`]: mailbox selectors against the session's mailbox list;
//! - [`steps`]: one step's loop: attempts, error classes, retries, operator decisions;
//! - [`restore`]: Restore / RestoreTo / BulkRestore: the at-most-once protocol, reconciliation
//!   of unknown outcomes and following the asynchronous restore to its result;
//! - [`export`]: ExportPst through the download engine; [`search`]: Search and its report;
//! - `freshness`: the freshness guard (`maxRestorePointAge`) and the restore point a run shows;
//! - [`sign_in`]: device-code sign-in (`credentials.deviceCode`): the code, the wait for the
//!   operator, `resolve --continue`;
//! - [`retry`]: backoff with jitter; [`recovery`]: what the daemon does at start;
//! - `run_ctx`: what one execution shares with its steps (the run context, the stop signal,
//!   what an attempt tells the step loop), imported by the engine and every step kind and
//!   importing none of them; [`options`]: [`EngineOptions`] and the clock the engine reads;
//!   `convert`: the job's types as the client's (a leaf).
//!
//! Errors: [`RunError`] is what stops the engine itself (the state database failing, a job
//! version that cannot be rebuilt); everything that goes wrong on the VB365 side or on disk is a
//! step failure recorded in the store with its class, never an error of the engine.

mod convert;
pub mod engine;
pub mod error;
pub mod export;
pub(crate) mod freshness;
pub mod options;
pub mod recovery;
pub mod restore;
pub mod retry;
pub(crate) mod run_ctx;
pub mod search;
pub mod select;
pub mod session;
pub mod sign_in;
pub mod steps;

pub use engine::{Engine, RunOutcome};
pub use error::RunError;
pub use options::EngineOptions;
pub use recovery::{Continued, RecoveryReport, Resolution};
