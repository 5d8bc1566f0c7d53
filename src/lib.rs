//! restorectl: declarative, crash-safe restores and compliance PST exports of Microsoft 365
//! mailboxes through the Veeam Backup for Microsoft 365 (VB365) REST API v8.
//!
//! # Layout
//!
//! - [`config`]: the daemon config file (`restorectl.yaml`): raw YAML shapes, validation into
//!   [`config::Config`], secret references and their resolution, the retry policy.
//! - [`jobs`]: job files: discovery in the job directory, parsing (YAML → raw spec), validation
//!   (raw spec → [`jobs::Job`]) with located error codes, the validated `schedule:` section
//!   ([`jobs::schedule_spec`]), mailbox selection, path templates, the normalised spec hash and
//!   the JSON Schema.
//! - [`schedule`]: when scheduled jobs fire (pure time arithmetic): cron parsing, DST-correct
//!   next fire instants with Debian cron's rules, the catch-up plan after downtime,
//!   `concurrencyPolicy`, the injectable clock, and [`schedule::explain()`] (what daylight
//!   saving does to a fire, for `plan`).
//! - [`daemon`]: the daemon's lifecycle (docs/daemon.md): single-instance lock, job-directory
//!   watcher and reconciliation, the scheduler task that turns due fires into runs
//!   ([`daemon::fires`]), operator requests, the executor seam to [`exec`], health/metrics
//!   HTTP, systemd notification, signals, `--dev`.
//! - [`vb365`]: the VB365 REST API v8 client: tokens, typed requests and responses, the call
//!   and its classification, one method per endpoint grouped by resource, paging, the PST
//!   export stream and the error classes (retryable, permanent, auth, session lost, ambiguous)
//!   that drive retries.
//! - [`store`]: the state database on SQLite (embedded) or PostgreSQL: jobs, runs, steps, restore
//!   sessions, downloads and published files, operator requests, the daemon instances and the
//!   append-only event log. All SQL lives here.
//! - [`sim`]: the built-in VB365 REST API v8 simulator (tests, `daemon --dev`, `simulate`):
//!   deterministic world, sessions, restores, PST/ZIP exports, search, fault injection, a
//!   request journal, and [`sim::schema`], the request validator against the vendor schema.
//! - [`panics`]: the message of a caught panic and the test fault injection that raises one.
//! - [`private_dir`]: creating the directories restorectl writes into, mode 0700.
//! - `house` (tests only): the house rules the compiler does not check — no import circles
//!   between the files of a module, no upward import across the layering above.
//! - [`telemetry`]: log subscriber setup (text or JSON) and the Prometheus recorder.
//! - [`download`]: downloading exports: resumable, verified PST/ZIP exports streamed to
//!   `<final>.partial`, published atomically with a checksum manifest; path safety under
//!   `exportRoot`; retention.
//! - [`exec`]: the run engine: claims runs, opens and always stops restore sessions, resolves
//!   mailbox selectors, runs the steps of every job kind with retries, the at-most-once restore
//!   protocol with reconciliation, asynchronous restore following, recovery after a crash.
//! - [`cli`]: the command line, one file per subcommand; the operator commands (`plan`, `jobs`,
//!   `runs`, `show`, `run`, `cancel`, `resolve`) read the state database directly and write
//!   request rows for the daemon; [`cli::output`] draws the tables; [`cli::main`] is the one
//!   place that decides the process exit code.
//!
//! # Error policy
//!
//! Each domain module exposes its own `thiserror` error type that names its subject (file, job,
//! mailbox, URL) and, where a caller has to decide whether to retry, a class. `anyhow` is used
//! only at the binary edge (`cli`), which prints the chain once and picks the exit code.
//! Library code never exits the process and never panics on bad input.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod download;
pub mod exec;
mod house;
pub mod jobs;
pub mod panics;
pub mod private_dir;
pub mod schedule;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod vb365;
