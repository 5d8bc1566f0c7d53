//! Downloading exports (SPEC §7): everything between "the server starts sending bytes" and "a
//! verified export with its manifest is published", plus retention of old exports.
//!
//! - [`source`]: the [`ByteSource`] seam the transfer (re)opens the export through.
//! - [`progress`]: the [`ProgressStore`] seam for durable progress (the `downloads` table).
//! - [`transfer`]: [`fetch`], streaming into `<final>.partial` with resume, timeouts, checkpoints.
//! - [`publish`](mod@publish): [`publish()`], format detection, atomic rename, manifest.
//! - [`artefact`]: what they produce: [`Fetched`], [`Published`] with its [`Manifest`] and
//!   [`Format`].
//! - `pipeline`: the hashing and writing threads behind [`fetch`] (ordered SHA-256, `O_DIRECT`
//!   writes, `fdatasync` checkpoints).
//! - [`paths`]: [`resolve_inside`] / [`SafePath`], the proof a path stays in `exportRoot`.
//! - [`space`]: free-space checks.
//! - [`hashing`]: the resumable SHA-256 state.
//! - [`retention`]: `keepLast` / `keepFor`.
//! - [`store_progress`] / [`vb365_source`]: the seams implemented over the state database and
//!   the VB365 client ([`StoreProgress`], [`ExportSource`]).
//!
//! [`download`] chains the space check, [`fetch`] and [`publish()`] for the run engine.

pub mod artefact;
pub mod error;
pub mod hashing;
pub mod paths;
pub(crate) mod pipeline;
pub mod progress;
pub mod publish;
pub mod retention;
pub mod source;
pub mod space;
pub mod store_progress;
pub mod transfer;
pub mod vb365_source;

pub use artefact::{Fetched, Format, Manifest, Published};
pub use error::{DownloadError, ErrorClass, SourceError};
pub use paths::{PathError, SafePath, resolve_inside, sanitize_component};
pub use progress::{Checkpoint, ProgressError, ProgressStore, RestartReason};
pub use publish::{ManifestInfo, publish};
pub use retention::{
    Deleted, ExportRecord, RetentionOutcome, apply_retention, delete_exports, select_expired,
};
pub use source::{BodyStream, ByteSource, OpenedBody};
pub use store_progress::StoreProgress;
pub use transfer::{DownloadOptions, fetch};
pub use vb365_source::ExportSource;

/// Downloads one export and publishes it: checks free space against `required_bytes` (the
/// largest previous export of the same mailbox, when known; less what is already durable),
/// then [`fetch`], then [`publish()`]. If an earlier attempt already published the file and
/// its manifest (a crash before the publication was recorded), only records it.
///
/// # Errors
///
/// [`DownloadError`]; see [`DownloadError::class`].
pub async fn download<S, P>(
    source: &S,
    progress: &P,
    target: &SafePath,
    required_bytes: Option<u64>,
    info: ManifestInfo,
    opts: &DownloadOptions,
) -> Result<Published, DownloadError>
where
    S: ByteSource,
    P: ProgressStore,
{
    let checkpoint = progress
        .load()
        .await
        .map_err(|source| DownloadError::Progress {
            subject: target.absolute().display().to_string(),
            action: "load",
            source,
        })?
        .unwrap_or_default();
    if let Some(published) = publish::find_published(target, &checkpoint) {
        tracing::info!(
            path = %published.path.display(),
            "export already published by an earlier attempt; recording it"
        );
        progress
            .mark_published(&published)
            .await
            .map_err(|source| DownloadError::Progress {
                subject: published.path.display().to_string(),
                action: "record the publication of",
                source,
            })?;
        return Ok(published);
    }
    if let Some(required) = required_bytes {
        let durable = checkpoint.bytes_durable;
        let partial = target.partial_path();
        let needed = required.saturating_sub(durable);
        tokio::task::spawn_blocking(move || space::check_free_space(&partial, needed))
            .await
            .map_err(|e| DownloadError::Io {
                path: target.partial_path(),
                action: "query free space of",
                source: std::io::Error::other(e.to_string()),
            })??;
    }
    let fetched = fetch(source, progress, target, opts).await?;
    publish(progress, target, &fetched, info).await
}
