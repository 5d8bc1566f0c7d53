//! The seam between the transfer ([`fetch`](super::fetch)) and durable progress (the `downloads` table).
//!
//! The transfer records progress only after `sync_data`, so whatever a [`ProgressStore`] holds is
//! on disk: after a crash the partial file is truncated to [`Checkpoint::bytes_durable`] and the
//! hasher restored from [`Checkpoint::hasher_state`].

use std::fmt;
use std::future::Future;

use super::artefact::Published;

/// Boxed error of a [`ProgressStore`] implementation (a store error naming its subject).
pub type ProgressError = Box<dyn std::error::Error + Send + Sync>;

/// Durable progress of one download, as last recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Bytes of the partial file known to be on disk.
    pub bytes_durable: u64,
    /// Serialised SHA-256 state after exactly `bytes_durable` bytes (`None` when nothing was
    /// recorded; the transfer then re-hashes the prefix).
    pub hasher_state: Option<Vec<u8>>,
    /// Total size announced by the server (`Content-Length`/`Content-Range`), when known.
    pub expected_bytes: Option<u64>,
    /// Offsets resumed from, oldest first (also those the server answered with a full body).
    pub resumed_from: Vec<u64>,
    /// How many times the download started over from byte 0.
    pub restarts: u32,
}

/// Why a download started over from byte 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartReason {
    /// The server answered a `Range: bytes=N-` request with 200 and the whole body.
    RangeIgnored { offset: u64 },
    /// A resume was answered for an export of `announced` bytes, but the partial file was
    /// downloaded from one of `known` bytes.
    ExportChanged {
        offset: u64,
        known: u64,
        announced: u64,
    },
    /// Progress said `durable` bytes were on disk but the partial file is gone.
    PartialMissing { durable: u64 },
    /// The partial file is shorter than the recorded durable size.
    PartialShort { durable: u64, found: u64 },
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartReason::RangeIgnored { offset } => write!(
                f,
                "the server ignored `Range: bytes={offset}-` and sent the whole export (HTTP 200); starting over from byte 0"
            ),
            RestartReason::ExportChanged {
                offset,
                known,
                announced,
            } => write!(
                f,
                "the answer to `Range: bytes={offset}-` announces an export of {announced} bytes, but it was {known} bytes when the download started; the partial file belongs to the old export; starting over from byte 0"
            ),
            RestartReason::PartialMissing { durable } => write!(
                f,
                "the partial file is missing although {durable} bytes were recorded as durable; starting over from byte 0"
            ),
            RestartReason::PartialShort { durable, found } => write!(
                f,
                "the partial file has {found} bytes but {durable} were recorded as durable; starting over from byte 0"
            ),
        }
    }
}

/// Durable progress of one download. Implemented over the state database by the run engine;
/// every method is one short write (never held across network reads).
///
/// Methods return `impl Future + Send` so the transfer's future stays `Send` for generic stores;
/// implementations may simply write `async fn`.
pub trait ProgressStore: Sync {
    /// The last recorded checkpoint, `None` for a download that never started.
    fn load(&self) -> impl Future<Output = Result<Option<Checkpoint>, ProgressError>> + Send;

    /// Records that `bytes_durable` bytes are synced to disk, with the hasher state after exactly
    /// those bytes and the total size when known.
    fn record_durable(
        &self,
        bytes_durable: u64,
        hasher_state: &[u8],
        expected_bytes: Option<u64>,
    ) -> impl Future<Output = Result<(), ProgressError>> + Send;

    /// Records that a request with `Range: bytes={offset}-` is about to be sent (appends to
    /// `resumed_from`).
    fn record_resume(&self, offset: u64) -> impl Future<Output = Result<(), ProgressError>> + Send;

    /// Records a restart from byte 0: `bytes_durable`, the hasher state and the expected total
    /// are reset (the next answer announces the total of what is downloaded from then on), the
    /// restart counter incremented, and the reason kept for the history.
    fn record_restart(
        &self,
        reason: &RestartReason,
    ) -> impl Future<Output = Result<(), ProgressError>> + Send;

    /// Records that the file and its manifest are published.
    fn mark_published(
        &self,
        published: &Published,
    ) -> impl Future<Output = Result<(), ProgressError>> + Send;
}
