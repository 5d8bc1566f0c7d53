//! Search: item search per mailbox (one step each) or organisation-wide (one step), written as
//! one report per run (SPEC §4.1), with memory flat in the number of hits.
//!
//! Each step writes its hits to a part file in the run's scratch directory under `stateDir`
//! (`runs/<run>/search-<seq>.jsonl`, one report line per hit) as the pages arrive: a page's
//! lines are appended, fsynced, and then the page is recorded in the store
//! (`search_progress`: the page cursor, the hit count and the part file's length). Only one page
//! is held at a time. After a crash, a stop or a failed page, the next attempt truncates the
//! part file to the recorded length (dropping a page written but not recorded) and asks for the
//! page after the recorded one; in another restore session than the recorded one (the old one
//! is gone after a restart) it continues by offset without the old `setId`. A retried or
//! resumed run keeps the results of finished steps as well.
//!
//! When every step is done the report is assembled in step order, streaming: the part files are
//! read line by line into `<report>.<run>.partial` in the target directory (0600, directory 0700),
//! hashed while written, fsynced, renamed into place, the directory fsynced, and recorded in
//! `exports` so retention and `show` see it. Only the counts per mailbox are held in memory.
//!
//! Formats:
//! - `jsonl`: one object per item `{"mailbox","itemId","class","subject","from","to","sent",
//!   "received","size"}` (absent values omitted), then one line
//!   `{"summary":{"totalItems":N,"mailboxes":{"<e-mail>":n,…}}}`;
//! - `csv`: header `record,mailbox,itemId,class,subject,from,to,sent,received,size,count`, one
//!   `item` row per item, then one `summary` row per mailbox (its count in `count`) and a
//!   `total` row.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::error::{AttemptError, RunError, StepFailure};
use super::export::create_private_dir;
use super::run_ctx::{Next, RunCtx, StepEnd, run_scratch_dir, template_values};
use crate::download::hashing::{hash_file_prefix, hex_digest};
use crate::download::paths::append_suffix;
use crate::download::publish::{rename_no_replace, sync_dir};
use crate::download::resolve_inside;
use crate::jobs::{ReportFormat, SearchAction};
use crate::store::{FileFormat, NewExport, SearchPage, Step, StepFile, StepState, StoreError};
use crate::vb365::{Cursor, ExchangeItem, SearchOptions};

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

/// One attempt of a Search step: the pages after the step's recorded progress, each written to
/// the step's part file and recorded before the next is asked for (see the module doc).
pub(crate) async fn attempt(
    ctx: &RunCtx,
    step: &Step,
    action: &SearchAction,
) -> Result<Next, AttemptError> {
    let run = ctx.run.id;
    let open = ctx.session.get(&ctx.stop.token).await?;
    let session = open.id.to_string();
    ctx.store()
        .set_step_session(step.id, Some(&session), ctx.now())
        .await
        .map_err(RunError::store(run))?;
    let options = SearchOptions::query(action.query.clone());
    let mailbox = match step.mailbox_id.as_deref() {
        Some(id) => Some(
            Uuid::parse_str(id)
                .map_err(|_| StepFailure::permanent(format!("bad mailbox id {id}")))?,
        ),
        None => None,
    };
    // Organisation-wide hits name their mailbox by id: one map for the whole attempt.
    let emails: HashMap<Uuid, String> = match mailbox {
        Some(_) => HashMap::new(),
        None => ctx
            .mailboxes()
            .await?
            .iter()
            .map(|m| (m.id, m.email.clone()))
            .collect(),
    };
    let email_of = |item: &ExchangeItem| match mailbox {
        Some(_) => step.mailbox_email.clone().unwrap_or_default(),
        None => item.mailbox_id.map_or_else(
            || "unknown".to_string(),
            |id| emails.get(&id).cloned().unwrap_or_else(|| id.to_string()),
        ),
    };
    let part_err = |e: std::io::Error| StepFailure::permanent(format!("search part file: {e}"));
    let part = part_path(ctx, step);
    let (mut file, mut cursor, mut hits, mut bytes) =
        resume(ctx, step, &part, &session).await.map_err(part_err)?;
    let mut page = Vec::new();
    loop {
        if ctx.stop.is_stopped() {
            return Ok(Next::End(StepEnd::Stopped));
        }
        // A stop does not wait for a slow page: the cursor only moves once a page has arrived,
        // and the next attempt asks for this page again.
        let next = tokio::select! {
            next = ctx.client.search_next_page(open.id, mailbox, &options, &mut cursor) => next,
            () = ctx.stop.token.cancelled() => return Ok(Next::End(StepEnd::Stopped)),
        };
        let items = match next {
            Ok(Some(items)) => items,
            Ok(None) => break,
            Err(e) => {
                if e.class == crate::vb365::ErrorClass::SessionLost {
                    ctx.session.lost(open.generation, &e.to_string()).await?;
                }
                return Err(e.into());
            }
        };
        page.clear();
        for item in &items {
            let line = ReportLine::from_item(email_of(item), item);
            serde_json::to_writer(&mut page, &line).map_err(|e| part_err(e.into()))?;
            page.push(b'\n');
        }
        drop(items);
        file.write_all(&page).await.map_err(part_err)?;
        file.flush().await.map_err(part_err)?;
        file.sync_data().await.map_err(part_err)?;
        bytes += page.len() as u64;
        hits = cursor.items();
        let state = serde_json::to_string(&cursor).map_err(|e| part_err(e.into()))?;
        ctx.store()
            .record_search_page(
                step.id,
                &SearchPage {
                    session_id: Some(&session),
                    cursor: &state,
                    pages: cursor.pages(),
                    hits,
                    part_bytes: bytes,
                },
                ctx.now(),
            )
            .await
            .map_err(RunError::store(run))?;
    }
    drop(file);
    let store = ctx.store();
    store
        .record_search_count(step.id, hits, ctx.now())
        .await
        .map_err(RunError::store(run))?;
    store
        .set_step_state(step.id, StepState::Done, None, ctx.now())
        .await
        .map_err(RunError::store(run))?;
    store
        .clear_search_progress(step.id)
        .await
        .map_err(RunError::store(run))?;
    tracing::info!(run = %run, mailbox = step.mailbox_email.as_deref().unwrap_or("organization"), items = hits, pages = cursor.pages(), "search step done");
    Ok(Next::Continue)
}

/// Opens the step's part file where its recorded progress ends: truncated to the recorded
/// length, with the recorded cursor (detached from its `setId` in another session), or empty
/// with a new cursor when nothing usable is recorded. Returns the file (positioned at its end),
/// the cursor, the hits and the bytes so far.
async fn resume(
    ctx: &RunCtx,
    step: &Step,
    part: &Path,
    session: &str,
) -> std::io::Result<(tokio::fs::File, Cursor, u64, u64)> {
    let dir = part
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?
        .to_path_buf();
    tokio::task::spawn_blocking(move || crate::private_dir::create_private_dir(&dir))
        .await
        .map_err(std::io::Error::other)??;
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).write(true).mode(0o600);
    let mut file = options.open(part).await?;
    let on_disk = file.metadata().await?.len();
    let recorded = ctx
        .store()
        .get_search_progress(step.id)
        .await
        .map_err(std::io::Error::other)?;
    let usable = recorded.and_then(|p| {
        let cursor: Cursor = serde_json::from_str(&p.cursor).ok()?;
        let bytes = u64::try_from(p.part_bytes).ok()?;
        let hits = u64::try_from(p.hits).ok()?;
        (bytes <= on_disk).then_some((p, cursor, hits, bytes))
    });
    let (cursor, hits, bytes) = match usable {
        Some((p, mut cursor, hits, bytes)) => {
            let same_session = p.session_id.as_deref() == Some(session);
            if !same_session {
                cursor.detach();
            }
            ctx.note(
                Some(step.id),
                format!(
                    "{}: search resumed after {} pages ({hits} hits){}",
                    step.mailbox_email.as_deref().unwrap_or("organization"),
                    p.pages,
                    if same_session {
                        ""
                    } else {
                        " in a new restore session, by offset"
                    }
                ),
                json!({ "step": step.id, "search_resumed_pages": p.pages, "hits": hits,
                        "offset": cursor.offset() }),
            )
            .await;
            (cursor, hits, bytes)
        }
        None => {
            if on_disk > 0 {
                tracing::info!(run = %ctx.run.id, step = step.id, bytes = on_disk, "search part file without usable progress; starting the search over");
            }
            ctx.store()
                .clear_search_progress(step.id)
                .await
                .map_err(std::io::Error::other)?;
            (Cursor::new(ctx.config().page_size), 0, 0)
        }
    };
    file.set_len(bytes).await?;
    file.sync_data().await?;
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::Start(bytes)).await?;
    Ok((file, cursor, hits, bytes))
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
    let recorded = ctx
        .store()
        .list_run_exports(ctx.run.id)
        .await?
        .into_iter()
        .find(|e| e.path == path);
    let ours = recorded.is_some();
    let mut parts = Vec::new();
    for s in steps {
        parts.push((s.mailbox_email.clone(), part_path(ctx, s)));
    }
    let format = action.format;
    let target_path = path.clone();
    let run = ctx.run.id;
    // Published and recorded before a crash that came before the run finished (the part files
    // may be gone by then): keep that report.
    let kept = recorded.filter(|e| {
        e.deleted_at.is_none()
            && std::fs::metadata(&path).is_ok_and(|m| i64::try_from(m.len()) == Ok(e.bytes))
    });
    let (bytes, sha256) = match kept {
        Some(e) => (u64::try_from(e.bytes).unwrap_or(0), e.sha256),
        None => tokio::task::spawn_blocking(move || {
            // A partial name of its own: two runs of a job with a fixed report path may publish
            // at the same time.
            let partial = append_suffix(&target_path, &format!(".{run}.partial"));
            publish_blocking(&target_path, &partial, &parts, format, ours)
        })
        .await
        .map_err(|e| werr(&path, e.to_string()))?
        .map_err(|e| werr(&path, e.to_string()))?,
    };
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

/// Writes the report to `partial` from the part files (streaming), fsyncs it and
/// renames it into place, then fsyncs the directory. A file already at `path` is replaced only
/// when it is this run's (`ours`) or holds exactly the new bytes (a crash after the rename,
/// before the report was recorded); otherwise the report is not published. Returns size and
/// SHA-256.
fn publish_blocking(
    path: &Path,
    partial: &Path,
    parts: &[(Option<String>, PathBuf)],
    format: ReportFormat,
    ours: bool,
) -> std::io::Result<(u64, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    crate::private_dir::create_private_dir(dir)?;
    let written = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(partial)?;
        let mut out = std::io::BufWriter::with_capacity(
            256 * 1024,
            Hashing {
                inner: file,
                hasher: Sha256::new(),
                bytes: 0,
            },
        );
        write_report(parts, format, &mut out)?;
        let hashing = out.into_inner().map_err(|e| e.into_error())?;
        hashing.inner.sync_all()?;
        Ok::<_, std::io::Error>((hashing.bytes, hex_digest(hashing.hasher)))
    })();
    let (bytes, sha256) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(partial);
            return Err(e);
        }
    };
    let same_bytes = || {
        std::fs::metadata(path).is_ok_and(|m| m.len() == bytes)
            && hash_file_prefix(path, bytes).is_ok_and(|h| hex_digest(h) == sha256)
    };
    let placed = if std::fs::symlink_metadata(path).is_err() {
        rename_no_replace(partial, path)
    } else if ours || same_bytes() {
        std::fs::rename(partial, path)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file already exists there (add {run} or {time} to the report path)",
        ))
    };
    if let Err(e) = placed {
        let _ = std::fs::remove_file(partial);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok((bytes, sha256))
}

/// A writer that hashes and counts the bytes passing through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the report from the part files, in order, line by line: only the counts per mailbox
/// are held. A per-mailbox part counts for its mailbox even with no hits; organisation-wide
/// hits count for the mailbox each came from.
fn write_report(
    parts: &[(Option<String>, PathBuf)],
    format: ReportFormat,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    if format == ReportFormat::Csv {
        out.write_all(b"record,mailbox,itemId,class,subject,from,to,sent,received,size,count\n")?;
    }
    let mut row = Vec::new();
    for (mailbox, part) in parts {
        if let Some(m) = mailbox {
            counts.entry(m.clone()).or_insert(0);
        }
        let file = std::fs::File::open(part)?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let text = line.trim_end_matches('\n');
            if text.trim().is_empty() {
                continue;
            }
            let item: ReportLine = serde_json::from_str(text).map_err(std::io::Error::other)?;
            match counts.get_mut(&item.mailbox) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(item.mailbox.clone(), 1);
                }
            }
            row.clear();
            match format {
                ReportFormat::Jsonl => {
                    serde_json::to_writer(&mut row, &item).map_err(std::io::Error::other)?;
                    row.push(b'\n');
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
                    csv_row(&mut row, &fields);
                }
            }
            out.write_all(&row)?;
        }
    }
    let total: u64 = counts.values().sum();
    row.clear();
    match format {
        ReportFormat::Jsonl => {
            let summary = serde_json::json!({
                "summary": { "totalItems": total, "mailboxes": counts }
            });
            serde_json::to_writer(&mut row, &summary).map_err(std::io::Error::other)?;
            row.push(b'\n');
        }
        ReportFormat::Csv => {
            let mut tail = |label: &str, mailbox: Option<&str>, n: u64| {
                let n = n.to_string();
                let mut fields = [None; 11];
                fields[0] = Some(label);
                fields[1] = mailbox;
                fields[10] = Some(n.as_str());
                csv_row(&mut row, &fields);
            };
            for (m, n) in &counts {
                tail("summary", Some(m), *n);
            }
            tail("total", None, total);
        }
    }
    out.write_all(&row)?;
    out.flush()
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
        let assemble = |format| {
            let mut out = Vec::new();
            write_report(&parts, format, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let jsonl = assemble(ReportFormat::Jsonl);
        let lines: Vec<&str> = jsonl.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            r#"{"summary":{"mailboxes":{"a@x":2,"b@x":0},"totalItems":2}}"#
        );
        let csv = assemble(ReportFormat::Csv);
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 1 + 2 + 2 + 1);
        assert_eq!(rows[1], r#"item,a@x,1,IPM.Note,"hi, ""you""",,,,,42,"#);
        assert_eq!(rows[3], "summary,a@x,,,,,,,,,2");
        assert_eq!(rows[5], "total,,,,,,,,,,2");
    }

    #[test]
    fn publishing_is_private_atomic_and_never_clobbers_another_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("part.jsonl");
        std::fs::write(&part, "{\"mailbox\":\"a@x\",\"itemId\":\"1\"}\n").unwrap();
        let parts = vec![(Some("a@x".to_string()), part)];
        let path = dir.path().join("sub/r.csv");
        let partial = dir.path().join("sub/r.csv.run.partial");
        let publish = |ours| publish_blocking(&path, &partial, &parts, ReportFormat::Csv, ours);
        let (n, sha) = publish(false).unwrap();
        let text = std::fs::read(&path).unwrap();
        assert_eq!(n, text.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&text)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        // The same bytes again (a crash after the rename): accepted, one file, no partial left.
        assert_eq!(publish(false).unwrap(), (n, sha.clone()));
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        // Other bytes where a file is that is not ours: refused, the file kept.
        std::fs::write(&path, "someone else's").unwrap();
        let e = publish(false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        // Our own earlier report is replaced.
        publish(true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), text);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
