//! The public methods of [`super::Client`], one per VB365 endpoint, grouped by the resource they
//! act on. Each builds a call and leaves sending, the token, retries of a 401, classification
//! and paging to [`super::execute`].
//!
//! - [`organizations`]: organisations and explore (opening a restore session);
//! - [`sessions`]: restore sessions, their events and statistics;
//! - [`mailboxes`]: the mailboxes of a session;
//! - [`restore`]: the three at-most-once restore POSTs;
//! - [`export`]: the PST export stream;
//! - [`search`]: item search;
//! - [`restore_points`]: the newest restore point of an organisation (the freshness guard).
//!
//! The token endpoints (`/v8/token`, `/v8/token/logout`) belong to [`super::auth`].

mod export;
mod mailboxes;
mod organizations;
mod restore;
mod restore_points;
mod search;
mod sessions;

pub use sessions::{RestoreSessionFilter, SessionOrder};
