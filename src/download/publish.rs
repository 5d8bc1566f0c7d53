//! Publishing a complete partial file: format detection, atomic no-clobber rename, directory
//! fsync and the `<final>.manifest.json` evidence file (SPEC §7).
//!
//! Order matters for crash safety: the data file is fsynced, renamed into place without
//! replacing anything (`renameat2(RENAME_NOREPLACE)`), the directory fsynced, and only then is
//! the manifest written (temp file, fsync, rename, directory fsync). A manifest therefore never
//! describes a file that is not durably in place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::artefact::{Fetched, Format, Manifest, Published};
use super::error::DownloadError;
use super::hashing::{hash_file_prefix, hex_digest};
use super::paths::{SafePath, append_suffix};
use super::progress::ProgressStore;

/// The caller-supplied facts of a manifest (everything the download cannot know itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// Job name (`metadata.name`).
    pub job: String,
    /// Run id.
    pub run: String,
    /// Step id.
    pub step: i64,
    /// Job kind (`ExportPst`).
    pub kind: String,
    /// Server name from the config.
    pub server: String,
    /// Organization name.
    pub organization: String,
    /// Mailbox e-mail.
    pub mailbox: String,
    /// Mailbox id.
    pub mailbox_id: String,
    /// The point in time the restore session shows (RFC 3339, or `latest`).
    pub point_in_time: String,
    /// VB365 restore session id the export came from.
    pub restore_session_id: String,
    /// `export.keyword`, if set.
    pub keyword: Option<String>,
    /// `export.pstSizeLimit` in bytes, if set.
    pub pst_size_limit_bytes: Option<u64>,
    /// When the step started downloading.
    pub started_at: DateTime<Utc>,
    /// The restore point the export shows (id), when the run read it.
    pub restore_point_id: Option<String>,
    /// Its `backupTime`.
    pub backup_time: Option<DateTime<Utc>>,
    /// Attempts of the step (1 for a first-time success).
    pub attempts: u32,
    /// The job file the job came from.
    pub job_file: String,
    /// Normalised spec hash of the job version that ran.
    pub job_spec_hash: String,
}

/// Publishes a fetched partial file as `target` (with the extension fixed to the detected
/// format) and writes its manifest, then records it in `progress`.
///
/// An existing final file is never replaced. The one exception keeps a crash harmless: if the
/// final file exists without a manifest and has exactly the fetched SHA-256 (a crash between
/// the rename and the manifest write), the duplicate partial is removed and the manifest written.
///
/// # Errors
///
/// [`DownloadError::UnknownFormat`] (not published), [`DownloadError::AlreadyExists`],
/// [`DownloadError::Io`], [`DownloadError::Progress`].
pub async fn publish<P: ProgressStore>(
    progress: &P,
    target: &SafePath,
    fetched: &Fetched,
    info: ManifestInfo,
) -> Result<Published, DownloadError> {
    let target = target.clone();
    let fetched_owned = fetched.clone();
    let published = tokio::task::spawn_blocking(move || {
        publish_blocking(&target, &fetched_owned, info, Utc::now())
    })
    .await
    .map_err(|e| DownloadError::Io {
        path: fetched.partial_path.clone(),
        action: "publish",
        source: io::Error::other(e.to_string()),
    })??;
    progress
        .mark_published(&published)
        .await
        .map_err(|source| DownloadError::Progress {
            subject: published.path.display().to_string(),
            action: "record the publication of",
            source,
        })?;
    Ok(published)
}

/// Finds an export of `target` that an earlier attempt already published (file and manifest
/// in place, partial file gone) when the recorded progress says the download was complete: the
/// SHA-256 from the recorded hasher state and the size must match the manifest and the file.
/// Covers a crash between writing the manifest and recording the publication.
pub(crate) fn find_published(target: &SafePath, cp: &super::Checkpoint) -> Option<Published> {
    let bytes = cp.bytes_durable;
    if bytes == 0 || cp.expected_bytes != Some(bytes) || target.partial_path().exists() {
        return None;
    }
    let sha256 = hex_digest(super::hashing::restore_hasher(cp.hasher_state.as_deref()?)?);
    [Format::Pst, Format::Zip].into_iter().find_map(|format| {
        let candidate = fix_extension(target, format);
        let manifest_path = candidate.manifest_path();
        let manifest: Manifest = serde_json::from_slice(&fs::read(&manifest_path).ok()?).ok()?;
        let meta = fs::symlink_metadata(candidate.absolute()).ok()?;
        (manifest.sha256 == sha256
            && manifest.bytes == bytes
            && manifest.format == format
            && meta.is_file()
            && meta.len() == bytes)
            .then(|| Published {
                path: candidate.absolute().to_path_buf(),
                relative: candidate.relative().to_path_buf(),
                manifest_path,
                manifest,
            })
    })
}

/// The file system part of [`publish`].
fn publish_blocking(
    target: &SafePath,
    fetched: &Fetched,
    info: ManifestInfo,
    finished_at: DateTime<Utc>,
) -> Result<Published, DownloadError> {
    let partial = fetched.partial_path.as_path();
    let io_err = |path: &Path, action: &'static str| {
        let path = path.to_path_buf();
        move |source| DownloadError::Io {
            path,
            action,
            source,
        }
    };

    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(partial)
        .map_err(io_err(partial, "open"))?;
    file.sync_all().map_err(io_err(partial, "fsync"))?;
    let len = file.metadata().map_err(io_err(partial, "stat"))?.len();
    if len != fetched.bytes {
        return Err(DownloadError::Io {
            path: partial.to_path_buf(),
            action: "publish",
            source: io::Error::other(format!(
                "the partial file has {len} bytes but {} were downloaded",
                fetched.bytes
            )),
        });
    }
    let mut first = [0u8; 4];
    let n = read_up_to(&mut file, &mut first).map_err(io_err(partial, "read"))?;
    drop(file);
    let Some(format) = Format::detect(&first[..n]) else {
        return Err(DownloadError::UnknownFormat {
            path: partial.to_path_buf(),
            first_bytes: describe_bytes(&first[..n]),
        });
    };

    let final_path = fix_extension(target, format);
    let manifest_path = final_path.manifest_path();
    if fs::symlink_metadata(&manifest_path).is_ok() {
        return Err(DownloadError::AlreadyExists {
            path: manifest_path,
        });
    }
    let dir = final_path
        .absolute()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| final_path.root().to_path_buf());

    match rename_no_replace(partial, final_path.absolute()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !same_content(final_path.absolute(), fetched) {
                return Err(DownloadError::AlreadyExists {
                    path: final_path.absolute().to_path_buf(),
                });
            }
            tracing::warn!(
                path = %final_path.absolute().display(),
                "final file already in place with the same SHA-256 (earlier publish interrupted); writing its manifest"
            );
            fs::remove_file(partial).map_err(io_err(partial, "remove"))?;
        }
        Err(source) => {
            return Err(DownloadError::Io {
                path: final_path.absolute().to_path_buf(),
                action: "rename the partial file to",
                source,
            });
        }
    }
    sync_dir(&dir).map_err(io_err(&dir, "fsync directory"))?;

    let manifest = Manifest {
        job: info.job,
        run: info.run,
        step: info.step,
        kind: info.kind,
        server: info.server,
        organization: info.organization,
        mailbox: info.mailbox,
        mailbox_id: info.mailbox_id,
        point_in_time: info.point_in_time,
        restore_point_id: info.restore_point_id,
        backup_time: info.backup_time,
        restore_session_id: info.restore_session_id,
        keyword: info.keyword,
        pst_size_limit_bytes: info.pst_size_limit_bytes,
        file: final_path.relative().to_string_lossy().into_owned(),
        format,
        bytes: fetched.bytes,
        sha256: fetched.sha256.clone(),
        started_at: info.started_at,
        finished_at,
        attempts: info.attempts,
        resumed_from: fetched.resumed_from.clone(),
        restarts: fetched.restarts,
        restorectl_version: env!("CARGO_PKG_VERSION").to_owned(),
        job_file: info.job_file,
        job_spec_hash: info.job_spec_hash,
    };
    write_manifest(&manifest_path, &manifest)?;
    sync_dir(&dir).map_err(io_err(&dir, "fsync directory"))?;
    Ok(Published {
        path: final_path.absolute().to_path_buf(),
        relative: final_path.relative().to_path_buf(),
        manifest_path,
        manifest,
    })
}

/// `target` with its extension set to the detected format: a `.pst`/`.zip` extension is
/// replaced; any other name gets the extension appended (`export` → `export.zip`).
fn fix_extension(target: &SafePath, format: Format) -> SafePath {
    let ext = target
        .absolute()
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("pst") | Some("zip") => target.with_extension(format.extension()),
        Some(other) => target.with_extension(&format!("{other}.{}", format.extension())),
        None => target.with_extension(format.extension()),
    }
}

/// Whether an existing final file is byte-identical (same length and SHA-256) to the fetch.
fn same_content(path: &Path, fetched: &Fetched) -> bool {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == fetched.bytes => {
            hash_file_prefix(path, fetched.bytes)
                .map(|h| hex_digest(h) == fetched.sha256)
                .unwrap_or(false)
        }
        _ => false,
    }
}

/// Writes the manifest atomically: `<manifest>.tmp` (0600), fsync, rename.
fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), DownloadError> {
    let tmp = append_suffix(path, ".tmp");
    let io_err = |action: &'static str| {
        let path = tmp.clone();
        move |source| DownloadError::Io {
            path,
            action,
            source,
        }
    };
    let mut json = serde_json::to_vec_pretty(manifest).map_err(|e| DownloadError::Io {
        path: path.to_path_buf(),
        action: "serialise manifest",
        source: io::Error::other(e),
    })?;
    json.push(b'\n');
    // The temp name is ours alone: replace a leftover from an interrupted write.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove stale temp manifest")(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create"))?;
    file.write_all(&json).map_err(io_err("write"))?;
    file.sync_all().map_err(io_err("fsync"))?;
    drop(file);
    rename_no_replace(&tmp, path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            DownloadError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            DownloadError::Io {
                path: path.to_path_buf(),
                action: "rename temp manifest to",
                source,
            }
        }
    })
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then). Uses
/// `renameat2(RENAME_NOREPLACE)`; on file systems without it, falls back to a hard link plus
/// unlink, which is just as exclusive.
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// fsyncs a directory so renames and new entries in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Hex plus printable ASCII of a few bytes, for error messages: `3c 68 74 6d ("<htm")`.
fn describe_bytes(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "none, the file is empty".to_owned();
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{} (\"{text}\")", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::paths::resolve_inside;

    #[test]
    fn format_is_detected_from_magic_bytes() {
        assert_eq!(Format::detect(b"!BDN\0\0"), Some(Format::Pst));
        assert_eq!(Format::detect(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(Format::detect(b"<html>"), None);
        assert_eq!(Format::detect(b"!BD"), None);
        assert_eq!(describe_bytes(b"<htm"), "3c 68 74 6d (\"<htm\")");
    }

    #[test]
    fn extension_follows_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let t = resolve_inside(dir.path(), Path::new("j/alice.pst")).unwrap();
        assert!(
            fix_extension(&t, Format::Zip)
                .absolute()
                .ends_with("j/alice.zip")
        );
        assert!(
            fix_extension(&t, Format::Pst)
                .absolute()
                .ends_with("j/alice.pst")
        );
        let t = resolve_inside(dir.path(), Path::new("j/alice.ZIP")).unwrap();
        assert!(
            fix_extension(&t, Format::Pst)
                .absolute()
                .ends_with("j/alice.pst")
        );
        let t = resolve_inside(dir.path(), Path::new("j/alice")).unwrap();
        assert!(
            fix_extension(&t, Format::Zip)
                .absolute()
                .ends_with("j/alice.zip")
        );
        let t = resolve_inside(dir.path(), Path::new("j/alice@contoso.com")).unwrap();
        assert!(
            fix_extension(&t, Format::Pst)
                .absolute()
                .ends_with("j/alice@contoso.com.pst")
        );
    }

    #[test]
    fn rename_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"old").unwrap();
        let err = rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
        fs::remove_file(&b).unwrap();
        rename_no_replace(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"new");
    }
}
