//! The VB365 REST API v8 client: one [`Client`] per configured server.
//!
//! - [`client`]: the client, its TLS/timeout setup and the handle every call hangs on.
//! - [`auth`]: bearer tokens (password grant, refresh ahead of expiry and after a 401, logout).
//! - `connection`: a request described as a call, sent once; decoding; building [`ApiError`]s.
//! - `execute`: sending a call with a token, the one resend after a 401, classifying a failure
//!   (with the lost-session probe), paged collections.
//! - `endpoints`: one public method per endpoint, grouped by resource (organisations and
//!   explore, restore sessions, mailboxes, restore, export, search).
//! - [`error`]: [`ApiError`], the retry classes and the one function that decides them.
//! - [`model`]: response wire types; [`request`]: request bodies and restore credentials.
//! - [`paging`]: following paged collections (offset/limit, `setId`).
//! - [`export`]: the PST export stream handle and `Content-Range` parsing.
//! - [`operation`]: every endpoint the client can call is an [`Operation`]; [`all_operations`]
//!   lists them with the exact OpenAPI path templates so a contract test can check them against
//!   the vendor schema.
//!
//! Dependencies between the client's files run one way: `endpoints` and `execute` import
//! `client`, which imports `auth` and `connection`; `auth` imports `connection`; all of them
//! import the leaves (`operation`, `error`, `model`, `request`, `paging`, `export`), which import
//! none of them. This file only declares and re-exports.

pub mod auth;
pub mod client;
mod connection;
mod endpoints;
pub mod error;
mod execute;
pub mod export;
pub mod model;
pub mod operation;
pub mod paging;
pub mod request;

pub use client::{Client, ClientError};
pub use endpoints::{RestoreSessionFilter, SessionOrder};
pub use error::{ApiError, ErrorClass, ErrorCode, ErrorKind, Replay, Transport};
pub use export::{ContentRange, PstExport};
pub use model::*;
pub use operation::{Operation, all_operations};
pub use paging::Cursor;
pub use request::*;
