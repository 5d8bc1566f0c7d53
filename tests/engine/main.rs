//! The run engine and the download transfer: every job kind against the simulator, faults and
//! retries, the at-most-once restore protocol, crashes and resumes, verified downloads.
//!
//! One test binary per area (linking one binary per file dominated `cargo test` on two cores);
//! each file below is a module with its own doc.

#[path = "../common/mod.rs"]
mod common;
#[path = "../download_support/mod.rs"]
mod download_support;
#[path = "../exec_support/mod.rs"]
mod exec_support;

mod download_sim;
mod download_transfer;
mod exec_crash;
mod exec_faults;
mod exec_kinds;
mod exec_options;
