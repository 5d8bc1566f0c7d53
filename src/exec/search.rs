//! Search: item search per mailbox (one step each) or organisation-wide (one step), written as
//! one report per run (SPEC §4.1).
//!
//! Each step collects its hits (every page, reusing the server's `setId`) into a part file in
//! the run's scratch directory under `stateDir`, so a retried or resumed run keeps the results
//! of finished steps. When every step is done the report is assembled in step order and
//! published like an export: written to a temporary file (0600) in the target directory (0700),
//! fsynced, renamed atomically into place, the directory fsynced, and recorded in `exports` so
//! retention and `show` see it.
//!
//! Formats:
//! - `jsonl`: one object per item `{"mailbox","itemId","class","subject","from","to","sent",
//!   "received","size"}` (absent values omitted), then one line
//!   `{"summary":{"totalItems":N,"mailboxes":{"<e-mail>":n,…}}}`;
//! - `csv`: header `record,mailbox,itemId,class,subject,from,to,sent,received,size,count`, one
//!   `item` row per item, then one `summary` row per mailbox (its count in `count`) and a
//!   `total` row.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{AttemptError, RunError, StepFailure};
use super::export::create_private_dir;
use super::run_ctx::{Next, RunCtx, run_scratch_dir, template_values};
use crate::download::resolve_inside;
use crate::jobs::{ReportFormat, SearchAction};
use crate::store::{FileFormat, NewExport, Step, StepFile, StepState, StoreError};
use crate::vb365::{ExchangeItem, SearchOptions};

/// One line of a search report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportLine {
    pub mailbox: String,
    pub item_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl ReportLine {
    fn from_item(mailbox: String, item: &ExchangeItem) -> Self {
        let size = ["size", "sizeBytes", "itemSizeBytes"]
            .iter()
            .find_map(|k| item.other.get(*k).and_then(serde_json::Value::as_u64));
        ReportLine {
            mailbox,
            item_id: item.id.clone(),
            class: item.item_class.clone(),
            subject: item.subject.clone(),
            from: item.from.clone(),
            to: item.to.clone(),
            sent: item.sent.map(|t| t.to_rfc3339()),
            received: item.received.map(|t| t.to_rfc3339()),
            size,
        }
    }
}

fn part_path(ctx: &RunCtx, step: &Step) -> PathBuf {
    run_scratch_dir(ctx.config(), ctx.run.id).join(format!("search-{}.jsonl", step.seq))
}

/// One attempt of a Search step: all pages of the search, written to the step's part file.
pub(crate) async fn attempt(
    ctx: &RunCtx,
    step: &Step,
    action: &SearchAction,
) -> Result<Next, AttemptError> {
    let run = ctx.run.id;
    let open = ctx.session.get(&ctx.stop.token).await?;
    ctx.store()
        .set_step_session(step.id, Some(&open.id.to_string()), ctx.now())
        .await
        .map_err(RunError::store(run))?;
    let options = SearchOptions::query(action.query.clone());
    let lost = |e: &crate::vb365::ApiError| e.class == crate::vb365::ErrorClass::SessionLost;
    let lines: Vec<ReportLine> = match step.mailbox_id.as_deref() {
        Some(id) => {
            let mailbox = Uuid::parse_str(id)
                .map_err(|_| StepFailure::permanent(format!("bad mailbox id {id}")))?;
            let email = step.mailbox_email.clone().unwrap_or_default();
            let items = match ctx.client.search_mailbox(open.id, mailbox, &options).await {
                Ok(items) => items,
                Err(e) => {
                    if lost(&e) {
                        ctx.session.lost(open.generation, &e.to_string()).await?;
                    }
                    return Err(e.into());
                }
            };
            items
                .iter()
                .map(|i| ReportLine::from_item(email.clone(), i))
                .collect()
        }
        None => {
            let items = match ctx.client.search_mailboxes(open.id, &options).await {
                Ok(items) => items,
                Err(e) => {
                    if lost(&e) {
                        ctx.session.lost(open.generation, &e.to_string()).await?;
                    }
                    return Err(e.into());
                }
            };
            let all = ctx.mailboxes().await?;
            let email_of = |id: Option<Uuid>| {
                id.and_then(|id| all.iter().find(|m| m.id == id))
                    .map(|m| m.email.clone())
                    .unwrap_or_else(|| id.map_or_else(|| "unknown".into(), |i| i.to_string()))
            };
            items
                .iter()
                .map(|i| ReportLine::from_item(email_of(i.mailbox_id), i))
                .collect()
        }
    };
    let part = part_path(ctx, step);
    let n = lines.len();
    let write = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for l in &lines {
            serde_json::to_writer(&mut out, l).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        write_atomically(&part, &out).map(drop)
    })
    .await
    .map_err(|e| StepFailure::permanent(format!("search part file: {e}")))?;
    write.map_err(|e| StepFailure::permanent(format!("search part file: {e}")))?;
    ctx.store()
        .record_search_count(step.id, n as u64, ctx.now())
        .await
        .map_err(RunError::store(run))?;
    ctx.store()
        .set_step_state(step.id, StepState::Done, None, ctx.now())
        .await
        .map_err(RunError::store(run))?;
    tracing::info!(run = %run, mailbox = step.mailbox_email.as_deref().unwrap_or("organization"), items = n, "search step done");
    Ok(Next::Continue)
}

/// Why a report could not be published.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("search report {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Assembles the run's report from the steps' part files and publishes it.
pub(crate) async fn publish_report(
    ctx: &RunCtx,
    action: &SearchAction,
    steps: &[Step],
) -> Result<PathBuf, ReportError> {
    let values = template_values(ctx, "", "", false).await;
    let relative = action.report.render(&values);
    let werr = |path: &Path, message: String| ReportError::Write {
        path: path.to_path_buf(),
        message,
    };
    let root = &ctx.config().export_root;
    create_private_dir(root).map_err(|e| werr(root, e.message))?;
    let target = resolve_inside(root, &relative).map_err(|e| werr(&relative, e.to_string()))?;
    let path = target.absolute().to_path_buf();
    let ours = ctx
        .store()
        .list_run_exports(ctx.run.id)
        .await?
        .iter()
        .any(|e| e.path == path);
    if path.exists() && !ours {
        return Err(werr(
            &path,
            "a file already exists there (add {run} or {time} to the report path)".into(),
        ));
    }
    let mut parts = Vec::new();
    for s in steps {
        parts.push((s.mailbox_email.clone(), part_path(ctx, s)));
    }
    let format = action.format;
    let target_path = path.clone();
    let (bytes, sha256) = tokio::task::spawn_blocking(move || {
        let report = assemble(&parts, format)?;
        write_atomically(&target_path, &report)
    })
    .await
    .map_err(|e| werr(&path, e.to_string()))?
    .map_err(|e| werr(&path, e.to_string()))?;
    let file_format = match format {
        ReportFormat::Jsonl => FileFormat::Jsonl,
        ReportFormat::Csv => FileFormat::Csv,
    };
    let export = NewExport {
        job_name: ctx.job.name(),
        run_id: ctx.run.id,
        step_id: None,
        mailbox_id: None,
        mailbox_email: None,
        path: &path,
        manifest_path: None,
        format: file_format,
        bytes,
        sha256: &sha256,
    };
    match ctx.store().record_export(&export, ctx.now()).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for s in steps {
        ctx.store()
            .record_step_file(
                s.id,
                &StepFile {
                    path: &path,
                    bytes,
                    sha256: &sha256,
                    format: file_format,
                },
                ctx.now(),
            )
            .await?;
    }
    let _ = std::fs::remove_dir_all(run_scratch_dir(ctx.config(), ctx.run.id));
    tracing::info!(run = %ctx.run.id, path = %path.display(), bytes, sha256 = %sha256, "search report published");
    Ok(path)
}

/// The report text from the part files, in order. A per-mailbox part counts for its mailbox
/// even with no hits; organisation-wide hits count for the mailbox each came from.
fn assemble(parts: &[(Option<String>, PathBuf)], format: ReportFormat) -> std::io::Result<Vec<u8>> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    if format == ReportFormat::Csv {
        out.extend_from_slice(
            b"record,mailbox,itemId,class,subject,from,to,sent,received,size,count\n",
        );
    }
    for (mailbox, part) in parts {
        if let Some(m) = mailbox {
            counts.entry(m.clone()).or_insert(0);
        }
        let file = std::fs::File::open(part)?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let item: ReportLine = serde_json::from_str(&line).map_err(std::io::Error::other)?;
            *counts.entry(item.mailbox.clone()).or_insert(0) += 1;
            match format {
                ReportFormat::Jsonl => {
                    serde_json::to_writer(&mut out, &item).map_err(std::io::Error::other)?;
                    out.push(b'\n');
                }
                ReportFormat::Csv => {
                    let size = item.size.map(|s| s.to_string());
                    let fields = [
                        Some("item"),
                        Some(item.mailbox.as_str()),
                        Some(item.item_id.as_str()),
                        item.class.as_deref(),
                        item.subject.as_deref(),
                        item.from.as_deref(),
                        item.to.as_deref(),
                        item.sent.as_deref(),
                        item.received.as_deref(),
                        size.as_deref(),
                        None,
                    ];
                    csv_row(&mut out, &fields);
                }
            }
        }
    }
    let total: u64 = counts.values().sum();
    match format {
        ReportFormat::Jsonl => {
            let summary = serde_json::json!({
                "summary": { "totalItems": total, "mailboxes": counts }
            });
            serde_json::to_writer(&mut out, &summary).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        ReportFormat::Csv => {
            for (m, n) in &counts {
                let n = n.to_string();
                csv_row(
                    &mut out,
                    &[
                        Some("summary"),
                        Some(m),
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        Some(&n),
                    ],
                );
            }
            let t = total.to_string();
            csv_row(
                &mut out,
                &[
                    Some("total"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(&t),
                ],
            );
        }
    }
    Ok(out)
}

/// One CSV row (RFC 4180 quoting).
fn csv_row(out: &mut Vec<u8>, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let f = f.unwrap_or("");
        if f.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(f.as_bytes());
        }
    }
    out.push(b'\n');
}

/// Writes `data` to `path` atomically: a temporary file (0600) in the same directory (created
/// 0700), fsynced, renamed over `path`, the directory fsynced. Returns size and SHA-256.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<(u64, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    crate::private_dir::create_private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok((data.len() as u64, hex::encode(Sha256::digest(data))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_in_both_formats_end_with_counts_per_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let line = |m: &str, id: &str, subject: &str| ReportLine {
            mailbox: m.into(),
            item_id: id.into(),
            class: Some("IPM.Note".into()),
            subject: Some(subject.into()),
            from: None,
            to: None,
            sent: None,
            received: None,
            size: Some(42),
        };
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        let mut text = serde_json::to_string(&line("a@x", "1", "hi, \"you\"")).unwrap();
        text.push('\n');
        text.push_str(&serde_json::to_string(&line("a@x", "2", "two")).unwrap());
        std::fs::write(&a, text).unwrap();
        std::fs::write(&b, "").unwrap();
        let parts = vec![(Some("a@x".to_string()), a), (Some("b@x".to_string()), b)];
        let jsonl = String::from_utf8(assemble(&parts, ReportFormat::Jsonl).unwrap()).unwrap();
        let lines: Vec<&str> = jsonl.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            r#"{"summary":{"mailboxes":{"a@x":2,"b@x":0},"totalItems":2}}"#
        );
        let csv = String::from_utf8(assemble(&parts, ReportFormat::Csv).unwrap()).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 1 + 2 + 2 + 1);
        assert_eq!(rows[1], r#"item,a@x,1,IPM.Note,"hi, ""you""",,,,,42,"#);
        assert_eq!(rows[3], "summary,a@x,,,,,,,,,2");
        assert_eq!(rows[5], "total,,,,,,,,,,2");
    }

    #[test]
    fn atomic_write_is_private_and_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/r.csv");
        let (n, sha) = write_atomically(&path, b"abc").unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        write_atomically(&path, b"xyz").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"xyz");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
