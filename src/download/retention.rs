//! Retention of published exports (`export.retention: { keepLast, keepFor }`, SPEC §5).
//!
//! Only files recorded in the `exports` table as written by restorectl are candidates: the
//! caller passes those records, [`select_expired`] decides (a pure function), and
//! [`delete_exports`] deletes each file with its manifest after proving, again, that both lie
//! inside `exportRoot`. The caller records one event per returned deletion.
//!
//! Rules, per mailbox of the job (an export without a mailbox forms its own group):
//! - `keepLast: N` keeps the N newest exports; older ones are deleted;
//! - `keepFor: D` deletes exports created more than D ago, except the newest export of the
//!   mailbox, which age alone never deletes (a job that stopped running keeps its last export);
//! - with both, an export is deleted when either rule deletes it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::error::DownloadError;
use super::paths::ensure_inside;
use super::publish::sync_dir;
use crate::jobs::Retention;

/// One published export as recorded in the `exports` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// `exports.id`.
    pub id: i64,
    /// The run that wrote it.
    pub run_id: String,
    /// Mailbox id, when the export is per mailbox.
    pub mailbox_id: Option<String>,
    /// Mailbox e-mail (grouping fallback when no id was recorded).
    pub mailbox_email: Option<String>,
    /// The published file.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest_path: Option<PathBuf>,
    /// When it was published.
    pub created_at: DateTime<Utc>,
}

/// The exports among `records` that the policy deletes at `now`, oldest first.
pub fn select_expired<'a>(
    records: &'a [ExportRecord],
    policy: &Retention,
    now: DateTime<Utc>,
) -> Vec<&'a ExportRecord> {
    let cutoff = policy
        .keep_for
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d));
    let mut groups: BTreeMap<Option<&str>, Vec<&ExportRecord>> = BTreeMap::new();
    for r in records {
        let key = r.mailbox_id.as_deref().or(r.mailbox_email.as_deref());
        groups.entry(key).or_default().push(r);
    }
    let mut expired = Vec::new();
    for (_, mut group) in groups {
        // Newest first; the id breaks ties between exports published in the same millisecond.
        group.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        for (i, r) in group.into_iter().enumerate() {
            let beyond_count = policy.keep_last.is_some_and(|n| i >= n as usize);
            let too_old = i > 0 && cutoff.is_some_and(|c| r.created_at < c);
            if beyond_count || too_old {
                expired.push(r);
            }
        }
    }
    expired.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    expired
}

/// What [`delete_exports`] did for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// `exports.id` of the record.
    pub id: i64,
    /// The export file.
    pub path: PathBuf,
    /// Whether the file was there (false: already gone, nothing to delete).
    pub file_existed: bool,
    /// The manifest, if one was recorded.
    pub manifest_path: Option<PathBuf>,
    /// Whether the manifest was there.
    pub manifest_existed: bool,
}

/// Deletes each record's file and manifest, refusing any path outside `export_root` (after
/// canonicalisation) or anything that is not a regular file. One result per record, in order;
/// a refusal or failure does not stop the others.
pub fn delete_exports(
    export_root: &Path,
    records: &[&ExportRecord],
) -> Vec<Result<Deleted, DownloadError>> {
    records.iter().map(|r| delete_one(export_root, r)).collect()
}

fn delete_one(export_root: &Path, record: &ExportRecord) -> Result<Deleted, DownloadError> {
    // Check both paths before deleting either, so a bad manifest path leaves the export alone.
    let file = ensure_inside(export_root, &record.path)?;
    let manifest = match &record.manifest_path {
        Some(m) => Some(ensure_inside(export_root, m)?),
        None => None,
    };
    let file_existed = remove_regular_file(&file)?;
    let manifest_existed = match &manifest {
        Some(m) => remove_regular_file(m)?,
        None => false,
    };
    if let Some(dir) = file.parent() {
        // Best effort: the deletion is already visible; durability of it is not critical.
        if let Err(e) = sync_dir(dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "fsync after retention delete failed");
        }
    }
    Ok(Deleted {
        id: record.id,
        path: record.path.clone(),
        file_existed,
        manifest_path: record.manifest_path.clone(),
        manifest_existed,
    })
}

/// Removes `path` if it is a regular file; `Ok(false)` if it does not exist.
fn remove_regular_file(path: &Path) -> Result<bool, DownloadError> {
    let io_err = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| DownloadError::Io {
            path,
            action,
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("stat")(e)),
        Ok(meta) if !meta.is_file() => {
            return Err(io_err("delete")(io::Error::other(
                "not a regular file; retention only deletes files restorectl wrote",
            )));
        }
        Ok(_) => {}
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("delete")(e)),
    }
}

/// What [`apply_retention`] did.
#[derive(Debug, Default)]
pub struct RetentionOutcome {
    /// Exports deleted (each recorded as deleted, with an `export_deleted` event).
    pub deleted: Vec<Deleted>,
    /// Exports that were selected but refused or failed (left in place and still recorded as
    /// live, so the next run tries again); each error names the path.
    pub failed: Vec<(i64, DownloadError)>,
}

/// Applies `policy` to the live exports of `job` recorded in the store: selects, deletes inside
/// `export_root`, and marks each deletion in the store (which appends an `export_deleted` event).
/// Run after a successful ExportPst run.
///
/// # Errors
///
/// A store error while listing or recording; deletions done before it stay recorded.
pub async fn apply_retention(
    store: &crate::store::Store,
    export_root: &Path,
    job: &str,
    policy: &Retention,
    now: DateTime<Utc>,
) -> Result<RetentionOutcome, crate::store::StoreError> {
    if policy.keep_last.is_none() && policy.keep_for.is_none() {
        return Ok(RetentionOutcome::default());
    }
    let records: Vec<ExportRecord> = store
        .list_live_exports(job)
        .await?
        .into_iter()
        .map(|e| ExportRecord {
            id: e.id,
            run_id: e.run_id.to_string(),
            mailbox_id: e.mailbox_id,
            mailbox_email: e.mailbox_email,
            path: e.path,
            manifest_path: e.manifest_path.map(PathBuf::from),
            created_at: e.created_at,
        })
        .collect();
    let expired: Vec<ExportRecord> = select_expired(&records, policy, now)
        .into_iter()
        .cloned()
        .collect();
    if expired.is_empty() {
        return Ok(RetentionOutcome::default());
    }
    let root = export_root.to_path_buf();
    let to_delete = expired.clone();
    let results = tokio::task::spawn_blocking(move || {
        let refs: Vec<&ExportRecord> = to_delete.iter().collect();
        delete_exports(&root, &refs)
    })
    .await
    .unwrap_or_else(|e| {
        // The blocking task panicked: report every record as failed rather than guess.
        expired
            .iter()
            .map(|r| {
                Err(DownloadError::Io {
                    path: r.path.clone(),
                    action: "delete",
                    source: io::Error::other(e.to_string()),
                })
            })
            .collect()
    });
    let reason = policy.describe();
    let mut outcome = RetentionOutcome::default();
    for (record, result) in expired.iter().zip(results) {
        match result {
            Ok(deleted) => {
                store.mark_export_deleted(record.id, &reason, now).await?;
                outcome.deleted.push(deleted);
            }
            Err(err) => {
                tracing::warn!(job, export = record.id, error = %err, "retention did not delete an export");
                outcome.failed.push((record.id, err));
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use chrono::TimeZone;

    fn rec(id: i64, mailbox: &str, day: u32) -> ExportRecord {
        ExportRecord {
            id,
            run_id: format!("run-{id}"),
            mailbox_id: Some(mailbox.to_owned()),
            mailbox_email: None,
            path: PathBuf::from(format!("/x/{id}.pst")),
            manifest_path: None,
            created_at: Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap(),
        }
    }

    fn ids(v: &[&ExportRecord]) -> Vec<i64> {
        v.iter().map(|r| r.id).collect()
    }

    #[test]
    fn keep_last_counts_per_mailbox() {
        let records = vec![
            rec(1, "a", 1),
            rec(2, "a", 2),
            rec(3, "a", 3),
            rec(4, "b", 1),
            rec(5, "b", 2),
        ];
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        let p = Retention {
            keep_last: Some(2),
            keep_for: None,
        };
        assert_eq!(ids(&select_expired(&records, &p, now)), vec![1]);
        let p = Retention {
            keep_last: Some(1),
            keep_for: None,
        };
        assert_eq!(ids(&select_expired(&records, &p, now)), vec![1, 4, 2]);
    }

    #[test]
    fn keep_for_never_deletes_the_newest_export() {
        let records = vec![rec(1, "a", 1), rec(2, "a", 2), rec(3, "a", 3)];
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let p = Retention {
            keep_last: None,
            keep_for: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(ids(&select_expired(&records, &p, now)), vec![1, 2]);
    }

    #[test]
    fn either_rule_deletes_and_no_policy_keeps_all() {
        let records = vec![rec(1, "a", 1), rec(2, "a", 8), rec(3, "a", 9)];
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        let p = Retention {
            keep_last: Some(5),
            keep_for: Some(Duration::from_secs(3 * 86_400)),
        };
        assert_eq!(ids(&select_expired(&records, &p, now)), vec![1]);
        assert!(select_expired(&records, &Retention::default(), now).is_empty());
    }

    #[test]
    fn deletion_refuses_paths_outside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let inside_file = root.path().join("a.pst");
        let inside_manifest = root.path().join("a.pst.manifest.json");
        std::fs::write(&inside_file, b"!BDN").unwrap();
        std::fs::write(&inside_manifest, b"{}").unwrap();
        let outside_file = outside.path().join("b.pst");
        std::fs::write(&outside_file, b"!BDN").unwrap();
        let mut good = rec(1, "a", 1);
        good.path = inside_file.clone();
        good.manifest_path = Some(inside_manifest.clone());
        let mut bad = rec(2, "a", 2);
        bad.path = outside_file.clone();
        let results = delete_exports(root.path(), &[&good, &bad]);
        let first = results[0].as_ref().unwrap();
        assert!(first.file_existed && first.manifest_existed);
        assert!(!inside_file.exists() && !inside_manifest.exists());
        assert!(matches!(results[1], Err(DownloadError::Path(_))));
        assert!(outside_file.exists());
        // Deleting again reports the files as already gone.
        let again = delete_exports(root.path(), &[&good]);
        assert!(!again[0].as_ref().unwrap().file_existed);
    }
}
