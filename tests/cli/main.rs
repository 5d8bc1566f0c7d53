//! The operator commands through the real binary (`validate`, `plan`, `jobs`, `runs`, `show`,
//! `run`, `cancel`, `resolve`, `simulate`, `schema`), the docs' examples, the deploy files and
//! the shipped example jobs.
//!
//! One test binary per area (linking one binary per file dominated `cargo test` on two cores);
//! each file below is a module with its own doc.

#[path = "../common/mod.rs"]
mod common;

mod alerting;
mod allocator;
mod cli_ops;
mod cli_plan;
mod cli_simulate;
mod cli_validate;
mod deploy;
mod docs;
mod docs_ops;
mod examples;
