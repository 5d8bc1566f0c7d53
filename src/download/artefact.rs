//! What a download produces: a [`Fetched`] partial file (the output of
//! [`fetch`](super::fetch)), and a [`Published`] export with its [`Manifest`] and detected
//! [`Format`] (the output of [`publish()`](super::publish())).
//!
//! A leaf: the transfer, the publisher and the progress seam all speak these types, and it
//! imports none of them.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A complete, length-checked partial file, ready for [`publish()`](super::publish()).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The partial file holding the bytes.
    pub partial_path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
    /// Offsets resumed from across all attempts (from the progress store), oldest first.
    pub resumed_from: Vec<u64>,
    /// Restarts from byte 0 across all attempts.
    pub restarts: u32,
    /// HTTP requests sent by this call (0 when the partial file was already complete).
    pub requests: u32,
}

/// What an export file is, decided from its first bytes (never from headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Outlook personal folders file (`!BDN`).
    Pst,
    /// ZIP of PST parts, sent when the export exceeded the PST size limit (`PK\x03\x04`).
    Zip,
}

impl Format {
    /// Detects the format from the first bytes of a file.
    pub fn detect(first: &[u8]) -> Option<Format> {
        if first.starts_with(b"!BDN") {
            Some(Format::Pst)
        } else if first.starts_with(b"PK\x03\x04") {
            Some(Format::Zip)
        } else {
            None
        }
    }

    /// The file extension (and the value stored in `steps.format`).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Pst => "pst",
            Format::Zip => "zip",
        }
    }
}

/// The `<final>.manifest.json` document: every field of SPEC §7, plus `restarts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub job: String,
    pub run: String,
    pub step: i64,
    pub kind: String,
    pub server: String,
    pub organization: String,
    pub mailbox: String,
    pub mailbox_id: String,
    pub point_in_time: String,
    /// The restore point the export shows (`GET /v8/RestorePoints`), when it was read.
    #[serde(default)]
    pub restore_point_id: Option<String>,
    /// Its `backupTime`.
    #[serde(default)]
    pub backup_time: Option<DateTime<Utc>>,
    pub restore_session_id: String,
    pub keyword: Option<String>,
    pub pst_size_limit_bytes: Option<u64>,
    /// The published file, relative to `exportRoot`.
    pub file: String,
    pub format: Format,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub attempts: u32,
    /// Byte offsets the download resumed from (`Range: bytes=N-`), oldest first.
    pub resumed_from: Vec<u64>,
    /// Restarts from byte 0 (server ignored `Range`, partial file lost).
    pub restarts: u32,
    pub restorectl_version: String,
    pub job_file: String,
    pub job_spec_hash: String,
}

/// A published export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The final file (extension fixed to the detected format).
    pub path: PathBuf,
    /// The path relative to `exportRoot`.
    pub relative: PathBuf,
    /// `<final>.manifest.json`.
    pub manifest_path: PathBuf,
    /// The manifest as written.
    pub manifest: Manifest,
}
