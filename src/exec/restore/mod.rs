//! Restore, RestoreTo and BulkRestore: the at-most-once protocol (SPEC §5), reconciliation of a
//! POST whose outcome is unknown, and following an asynchronous v8 restore to its result
//! (API.md §3.6).
//!
//! # At most once
//!
//! Before each restore POST the step is committed `submitting` (which counts the POST in
//! `restore_posts`); after the answer it is `submitted` with the returned `sessionId`. A POST
//! whose outcome is unknown (a timeout or broken connection after the request may have been
//! written, a crash between the two records) leaves the step `submitting`, and only
//! [`reconcile_step`] decides what happens to it:
//!
//! - **received**: a `Restore` event for the step's mailbox(es), started after the step was
//!   committed `submitting` (less a clock-skew allowance), in an operation session created since
//!   then, or in the explore session itself → `submitted`, followed like an answered POST;
//! - **not received**: the explore session is still `Working`, its events and the session list
//!   were read and show no such trace, and the grace time (`engine.reconcileGrace`, at least the
//!   server's `requestTimeout`) has passed since `submitting` → the POST is sent again;
//! - otherwise **unknown** → `in_doubt` (at once when a session that could hold the trace
//!   vanishes while it is read: its contents can no longer be known); the run ends
//!   `needs_attention` and nothing is sent until an operator decides (`restorectl resolve`).
//!
//! Which POSTs get here is decided by [`crate::vb365::error::classify`]: every answer except a
//! refusal before execution (400, 401, 403, 404, 409, 429). "Not received" is a failed attempt
//! under the retry policy.
//!
//! # Whose event is it
//!
//! Events name a mailbox by its address. That identifies only a mailbox whose address is
//! distinct in the session's list; a mailbox without an address, or an archive (it shares its
//! primary's address), is recognised by its id in the statistics (`BulkMailbox` entries) or not
//! at all — an event that may be its own is never taken as proof either way.
//!
//! # Following a restore
//!
//! Both readings of `sessionId` are handled: when it differs from the explore session it is an
//! operation session, done when `Stopped` (its `result`, events and statistics tell the
//! outcome); when it is the explore session, the step is done when every mailbox of the step has
//! a `Restore` event there and none is `Running`, and the explore session's statistics give the
//! counts. Failed items, a `cannotContinueMailboxError` or a failed event fail the step with the
//! server's text; warnings make it `warning`.
//!
//! # Files
//!
//! - `submit.rs`: the at-most-once POST (`submit`);
//! - `reconcile.rs`: deciding the outcome of a POST left `submitting` (`reconcile_step`);
//! - `follow.rs`: following a submitted restore to its outcome (`follow_step`);
//! - `matching.rs`: whose restore an event or a statistics entry is, and the step's outcome from
//!   them;
//! - `credentials.rs`: the job's credentials, secrets resolved, as request credentials.

mod credentials;
mod follow;
mod matching;
mod reconcile;
mod submit;

pub(crate) use follow::follow_step;
pub(crate) use reconcile::reconcile_step;
pub(crate) use submit::submit;
