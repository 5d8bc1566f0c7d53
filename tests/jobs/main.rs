//! Job files: every invalid fixture, parser and hostile-input fuzzing, the normalised spec hash,
//! secret redaction in validation output.
//!
//! One test binary per area (linking one binary per file dominated `cargo test` on two cores);
//! each file below is a module with its own doc.

#[path = "../common/mod.rs"]
mod common;

mod hostile_fuzz;
mod invalid_fixtures;
mod notify_fields;
mod parser_fuzz;
mod secrets_redaction;
mod spec_hash;
