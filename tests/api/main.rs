//! The VB365 client and the built-in simulator: the client against the simulator and against
//! hostile servers, the contract with the vendor's OpenAPI document, and the simulator's own API,
//! exports, faults, restores, search and TLS.
//!
//! One test binary per area (linking one binary per file dominated `cargo test` on two cores);
//! each file below is a module with its own doc.

#[path = "../common/mod.rs"]
mod common;
#[path = "../sim_support/mod.rs"]
mod sim_support;

mod client_sim;
mod contract;
mod sim_api;
mod sim_export;
mod sim_faults;
mod sim_restore;
mod sim_search;
mod sim_tls;
mod vb365_client;
