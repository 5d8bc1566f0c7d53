//! The daemon: the real binary under signals and kill -9, the scheduler, the engine seam,
//! `--dev`, the chaos suite, secret hygiene in logs, hostile job directories, run-history
//! retention.
//!
//! One test binary per area (linking one binary per file dominated `cargo test` on two cores);
//! each file below is a module with its own doc.

#[path = "../common/mod.rs"]
mod common;
#[path = "../daemon_support/mod.rs"]
mod daemon_support;

mod chaos;
mod daemon_dev;
mod daemon_engine;
mod daemon_postgres;
mod daemon_process;
mod daemon_scheduler;
mod history;
mod hostile_inputs;
mod metrics_exported;
mod notifications;
mod replicas;
mod search_resume;
mod secret_hygiene;
