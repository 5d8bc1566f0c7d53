//! Errors of the download engine and the retry class the run engine decides on.
//!
//! Every variant names its subject: the export being fetched (as described by its
//! [`ByteSource`](super::ByteSource)), or the file on disk. Messages never contain tokens or
//! passwords: the source description is built by the caller from non-secret parts (mailbox,
//! URL without credentials).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::paths::PathError;

pub use crate::vb365::ErrorClass;

/// Opening the export failed before any status line was read (connection refused, TLS, token
/// refresh failed, restore session gone). Produced by [`ByteSource`](super::ByteSource)
/// implementations; the class decides whether the transfer resumes at once.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// How the transfer should treat it.
    pub class: ErrorClass,
    /// What went wrong, without secrets.
    pub message: String,
    /// The underlying error, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// A failure that is worth retrying (connection errors, timeouts, 5xx, 429).
    pub fn retryable(message: impl Into<String>) -> Self {
        SourceError {
            class: ErrorClass::Retryable,
            message: message.into(),
            source: None,
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        SourceError {
            class: ErrorClass::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Errors of [`fetch`](super::fetch), [`publish()`](super::publish()) and the retention helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The export could not be opened.
    #[error("{subject}: cannot open the export: {source}")]
    Open {
        subject: String,
        #[source]
        source: SourceError,
    },
    /// The server answered with a status the transfer cannot use.
    #[error("{subject}: unexpected HTTP status {status}")]
    Status { subject: String, status: u16 },
    /// 416 Range Not Satisfiable for `Range: bytes={offset}-`.
    #[error(
        "{subject}: the server refused the resume from byte {offset} (HTTP 416 Range Not Satisfiable)"
    )]
    RangeNotSatisfiable { subject: String, offset: u64 },
    /// A 206 answer whose `Content-Range` is missing, malformed or does not match the request.
    #[error("{subject}: bad Content-Range for a resume from byte {offset}: {problem}")]
    ContentRange {
        subject: String,
        offset: u64,
        problem: String,
    },
    /// A length in the answer no file can have (`Content-Length` above 2^63 − 1).
    #[error("{subject}: unusable answer to the export request from byte {offset}: {problem}")]
    BadLength {
        subject: String,
        offset: u64,
        problem: String,
    },
    /// A resume was answered for an export of another length than the one the partial file was
    /// downloaded from: the server's export changed. The partial file is already discarded.
    #[error(
        "{subject}: the export changed on the server: {known} bytes when the download started, but the answer to `Range: bytes={offset}-` ({answer}) announces {announced}; the {offset} bytes downloaded were discarded and the next attempt starts over from byte 0"
    )]
    ExportChanged {
        subject: String,
        offset: u64,
        known: u64,
        announced: u64,
        /// The answer as received, e.g. `HTTP 200 with Content-Length 500000`.
        answer: String,
    },
    /// The connection broke (or the stream returned an error) while reading the body.
    #[error("{subject}: connection dropped after {offset} bytes: {source}")]
    Body {
        subject: String,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// No status line and first body byte within the first-byte timeout.
    #[error("{subject}: no data within the first-byte timeout of {}", humantime::format_duration(*after))]
    FirstByteTimeout { subject: String, after: Duration },
    /// No body bytes for the idle-read timeout.
    #[error("{subject}: no data for {} after {offset} bytes (idle-read timeout)", humantime::format_duration(*after))]
    IdleTimeout {
        subject: String,
        offset: u64,
        after: Duration,
    },
    /// The body ended at a length that differs from `Content-Length`/`Content-Range`.
    #[error(
        "{subject}: length check failed: the server announced {expected} bytes but the body ended after {received}; the file is not published"
    )]
    LengthMismatch {
        subject: String,
        expected: u64,
        received: u64,
    },
    /// The immediate resumes inside one call were used up; the run engine retries later.
    #[error("{subject}: gave up after {resumes} immediate resumes: {last}")]
    ResumesExhausted {
        subject: String,
        resumes: u32,
        #[source]
        last: Box<DownloadError>,
    },
    /// Not enough free space before starting.
    #[error(
        "{}: not enough free space: {needed} bytes needed (largest previous export of this mailbox, less what is already downloaded), {available} available",
        path.display()
    )]
    InsufficientSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    /// The file system filled up while writing; the partial file is kept for a later resume.
    #[error(
        "{}: disk full after {written} bytes ({}); {} available; the partial file is kept and the download resumes on the next attempt",
        path.display(),
        match needed { Some(n) => format!("{n} more bytes needed"), None => "total size unknown".to_owned() },
        match available { Some(a) => format!("{a} bytes"), None => "unknown".to_owned() }
    )]
    DiskFull {
        path: PathBuf,
        written: u64,
        needed: Option<u64>,
        available: Option<u64>,
    },
    /// A local file operation failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The progress store failed to load or record progress.
    #[error("{subject}: cannot {action} download progress: {source}")]
    Progress {
        subject: String,
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The first bytes are neither a PST (`!BDN`) nor a ZIP (`PK\x03\x04`).
    #[error(
        "{}: not a PST or ZIP export (first bytes: {first_bytes}); the file is not published",
        path.display()
    )]
    UnknownFormat { path: PathBuf, first_bytes: String },
    /// The final file (or its manifest) already exists; restorectl never overwrites one.
    #[error(
        "{}: already exists; restorectl never overwrites an export (use {{run}} or {{date}} in export.path so each run writes a new path)",
        path.display()
    )]
    AlreadyExists { path: PathBuf },
    /// A path escapes `exportRoot` or cannot be resolved.
    #[error(transparent)]
    Path(#[from] PathError),
}

impl DownloadError {
    /// How the run engine should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            DownloadError::Open { source, .. } => source.class,
            DownloadError::Status { status, .. } => {
                if *status >= 500 || *status == 429 || *status == 408 {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Permanent
                }
            }
            DownloadError::Body { .. }
            | DownloadError::FirstByteTimeout { .. }
            | DownloadError::IdleTimeout { .. }
            | DownloadError::ResumesExhausted { .. }
            | DownloadError::InsufficientSpace { .. }
            | DownloadError::DiskFull { .. }
            | DownloadError::Progress { .. } => ErrorClass::Retryable,
            // The partial file belonged to the old export and is gone; a download from byte 0
            // (no `Range` header, so no range answer to get wrong) is likely to work. Not
            // resumed at once: the run engine's backoff gives a server rebuilding its export time,
            // and the step records the error.
            DownloadError::ExportChanged { .. } => ErrorClass::Retryable,
            // A server that answers a range with nonsense will answer the same range the same way
            // again: retrying would only repeat it, so the operator hears about it at once.
            DownloadError::RangeNotSatisfiable { .. }
            | DownloadError::ContentRange { .. }
            | DownloadError::BadLength { .. }
            | DownloadError::LengthMismatch { .. }
            | DownloadError::Io { .. }
            | DownloadError::UnknownFormat { .. }
            | DownloadError::AlreadyExists { .. }
            | DownloadError::Path(_) => ErrorClass::Permanent,
        }
    }

    /// Whether the transfer resumes at once (inside the same call) after this error: a broken
    /// body, an idle stall, a 5xx/429 or a retryable open failure. A first-byte timeout is not
    /// resumed at once (the server may need hours to build the PST; the run engine decides),
    /// nor is a full disk.
    pub(crate) fn resumable_now(&self) -> bool {
        match self {
            DownloadError::Body { .. } | DownloadError::IdleTimeout { .. } => true,
            DownloadError::Status { .. } => self.class() == ErrorClass::Retryable,
            DownloadError::Open { source, .. } => source.class == ErrorClass::Retryable,
            _ => false,
        }
    }
}
