//! `restorectl show RUN_ID [--json]` (SPEC §6): everything recorded about one run — its steps
//! (mailbox, state, attempts, restore POSTs, item counts, remote ids, files, sizes, SHA-256,
//! errors, operator decisions, download progress), the restore sessions it opened, the files it
//! published and its event history.

use std::io::Write;

use serde::Serialize;

use super::Outcome;
use super::context;
use super::output::{self, Style, Table};
use super::runs::RunJson;
use crate::config::Config;
use crate::store::{Download, Event, Export, RestoreSession, Step, StepState, Store};

/// Arguments of `restorectl show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The run id (or a unique prefix of at least 8 characters).
    #[arg(value_name = "RUN_ID")]
    pub run: String,
    /// Print the stable JSON form (docs/cli-json.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many of the run's newest events to list: a number, or `all` (a run over 10,000
    /// mailboxes has some 40,000).
    #[arg(long, value_name = "N|all", default_value = "200", value_parser = parse_events)]
    pub events: EventsShown,
}

/// `--events`: the newest N events, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsShown {
    Newest(u32),
    All,
}

fn parse_events(text: &str) -> Result<EventsShown, String> {
    if text.eq_ignore_ascii_case("all") {
        return Ok(EventsShown::All);
    }
    text.parse::<u32>()
        .map(EventsShown::Newest)
        .map_err(|_| format!("`{text}` is neither a number of events nor `all`"))
}

/// `show --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShowJson {
    pub version: u32,
    pub run: RunJson,
    pub job_kind: Option<String>,
    pub steps: Vec<StepJson>,
    pub sessions: Vec<SessionJson>,
    pub files: Vec<FileJson>,
    /// How many events the run has; `events` holds the newest of them (`--events`).
    pub events_total: u64,
    pub events: Vec<EventJson>,
}

/// One step of `show --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepJson {
    pub id: i64,
    pub seq: i64,
    pub mailbox: Option<MailboxJson>,
    pub mailbox_ids: Option<Vec<String>>,
    pub state: String,
    pub attempts: i64,
    pub restore_posts: i64,
    pub next_attempt_at: Option<String>,
    pub restore_session_id: Option<String>,
    pub remote_operation_id: Option<String>,
    pub submitted_at: Option<String>,
    pub counts: CountsJson,
    pub error: Option<ErrorJson>,
    pub operator_decision: Option<String>,
    pub file: Option<StepFileJson>,
    pub download: Option<DownloadJson>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// The mailbox a step works on.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MailboxJson {
    pub id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub is_archive: bool,
}

/// Item counts of a step (restores: created/merged/failed/skipped; search: found).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountsJson {
    pub created: Option<i64>,
    pub merged: Option<i64>,
    pub failed: Option<i64>,
    pub skipped: Option<i64>,
    pub found: Option<i64>,
}

/// A step's classified error.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorJson {
    pub class: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// The file a step published.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepFileJson {
    pub path: String,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub format: Option<String>,
}

/// Durable download progress of an ExportPst step.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadJson {
    pub state: String,
    pub final_path: String,
    pub bytes_durable: i64,
    pub expected_bytes: Option<i64>,
    pub resumed_from: Vec<u64>,
    pub restarts: i64,
    pub restore_session_id: Option<String>,
}

/// A restore session the run opened.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionJson {
    pub id: String,
    pub server: String,
    pub organization_id: String,
    pub point_in_time: Option<String>,
    pub state: String,
    pub keep_for_resume: bool,
    pub opened_at: String,
    pub stopped_at: Option<String>,
}

/// A file the run published.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileJson {
    pub path: String,
    pub manifest_path: Option<String>,
    pub format: String,
    pub bytes: i64,
    pub sha256: String,
    pub step_id: Option<i64>,
    pub mailbox_id: Option<String>,
    pub mailbox_email: Option<String>,
    pub created_at: String,
    /// Set when retention deleted the file.
    pub deleted_at: Option<String>,
}

/// One event of the run's history.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub step_id: Option<i64>,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

/// Runs `show`.
pub fn run(args: ShowArgs, config: &Config) -> anyhow::Result<Outcome> {
    context::block_on(async {
        let store = context::open_read(config).await?;
        let run = context::find_run(&store, &args.run).await?;
        let steps = store.list_steps(run.id).await?;
        let downloads = downloads_of(&store, run.id, &steps).await?;
        let sessions = store.list_run_sessions(run.id).await?;
        let files = store.list_run_exports(run.id).await?;
        let (events, events_total) = match args.events {
            EventsShown::All => {
                let all = store.list_run_events(run.id).await?;
                let total = all.len() as u64;
                (all, total)
            }
            EventsShown::Newest(n) => store.list_run_events_newest(run.id, n).await?,
        };
        let instances = if run.state == crate::store::RunState::Running {
            store.list_instances().await?
        } else {
            Vec::new()
        };
        let job_kind = match store.get_job(&run.job_name).await {
            Ok(job) => Some(job.kind),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let report = ShowJson {
            version: 1,
            run: RunJson::new(&run, &steps).held(&run, &instances),
            job_kind,
            steps: steps
                .iter()
                .zip(&downloads)
                .map(|(s, d)| step_json(s, d.as_ref()))
                .collect(),
            sessions: sessions.iter().map(session_json).collect(),
            files: files.iter().map(file_json).collect(),
            events_total,
            events: events.iter().map(event_json).collect(),
        };
        let mut out = output::buffered_stdout();
        if args.json {
            output::print_json(&mut out, &report)?;
        } else {
            print_human(&mut out, &report, &Style::detect())?;
        }
        out.flush()?;
        Ok(Outcome::Ok)
    })
}

/// The download of each step (`None` for steps without one), from one query.
async fn downloads_of(
    store: &Store,
    run: crate::store::RunId,
    steps: &[Step],
) -> anyhow::Result<Vec<Option<Download>>> {
    let mut by_step: std::collections::HashMap<i64, Download> = store
        .list_run_downloads(run)
        .await?
        .into_iter()
        .map(|d| (d.step_id, d))
        .collect();
    Ok(steps.iter().map(|s| by_step.remove(&s.id)).collect())
}

fn step_json(s: &Step, download: Option<&Download>) -> StepJson {
    let has_mailbox = s.mailbox_id.is_some() || s.mailbox_email.is_some();
    let has_error = s.error_class.is_some() || s.error_message.is_some();
    StepJson {
        id: s.id,
        seq: s.seq,
        mailbox: has_mailbox.then(|| MailboxJson {
            id: s.mailbox_id.clone(),
            email: s.mailbox_email.clone(),
            name: s.mailbox_name.clone(),
            is_archive: s.is_archive,
        }),
        mailbox_ids: s.mailbox_ids.clone(),
        state: s.state.to_string(),
        attempts: s.attempts,
        restore_posts: s.restore_posts,
        next_attempt_at: output::json_time_opt(s.next_attempt_at),
        restore_session_id: s.restore_session_id.clone(),
        remote_operation_id: s.remote_operation_id.clone(),
        submitted_at: output::json_time_opt(s.submitted_at),
        counts: CountsJson {
            created: s.created_items,
            merged: s.merged_items,
            failed: s.failed_items,
            skipped: s.skipped_items,
            found: s.found_items,
        },
        error: has_error.then(|| ErrorJson {
            class: s.error_class.map(|c| c.to_string()),
            code: s.error_code.clone(),
            message: s.error_message.clone(),
        }),
        operator_decision: s.operator_decision.map(|d| d.to_string()),
        file: s.file_path.as_ref().map(|p| StepFileJson {
            path: p.clone(),
            bytes: s.bytes,
            sha256: s.sha256.clone(),
            format: s.format.map(|f| f.to_string()),
        }),
        download: download.map(|d| DownloadJson {
            state: d.state.to_string(),
            final_path: d.final_path.display().to_string(),
            bytes_durable: d.bytes_durable,
            expected_bytes: d.expected_bytes,
            resumed_from: d.resumed_from.clone(),
            restarts: d.restarts,
            restore_session_id: d.restore_session_id.clone(),
        }),
        started_at: output::json_time_opt(s.started_at),
        finished_at: output::json_time_opt(s.finished_at),
    }
}

fn session_json(s: &RestoreSession) -> SessionJson {
    SessionJson {
        id: s.id.clone(),
        server: s.server.clone(),
        organization_id: s.organization_id.clone(),
        point_in_time: s.point_in_time.clone(),
        state: s.state.to_string(),
        keep_for_resume: s.keep_for_resume,
        opened_at: output::json_time(s.opened_at),
        stopped_at: output::json_time_opt(s.stopped_at),
    }
}

fn file_json(e: &Export) -> FileJson {
    FileJson {
        path: e.path.display().to_string(),
        manifest_path: e.manifest_path.clone(),
        format: e.format.to_string(),
        bytes: e.bytes,
        sha256: e.sha256.clone(),
        step_id: e.step_id,
        mailbox_id: e.mailbox_id.clone(),
        mailbox_email: e.mailbox_email.clone(),
        created_at: output::json_time(e.created_at),
        deleted_at: output::json_time_opt(e.deleted_at),
    }
}

fn event_json(e: &Event) -> EventJson {
    EventJson {
        id: e.id,
        at: output::json_time(e.at),
        kind: e.kind.clone(),
        step_id: e.step_id,
        message: e.message.clone(),
        data: e.data.clone(),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// Item counts as one cell: `12 created, 3 merged` / `40 found`.
fn counts_cell(c: &CountsJson) -> String {
    [
        (c.created, "created"),
        (c.merged, "merged"),
        (c.failed, "failed"),
        (c.skipped, "skipped"),
        (c.found, "found"),
    ]
    .iter()
    .filter_map(|(n, what)| n.map(|n| format!("{n} {what}")))
    .collect::<Vec<_>>()
    .join(", ")
}

fn print_human(out: &mut impl Write, r: &ShowJson, style: &Style) -> anyhow::Result<()> {
    // Tables are indented under their heading by two columns.
    let inner = Style {
        width: style.width.map(|w| w.saturating_sub(2)),
        ..*style
    };
    let run = &r.run;
    let kind = r
        .job_kind
        .as_deref()
        .map(|k| format!(" ({k})"))
        .unwrap_or_default();
    writeln!(out, "{} {}", style.heading("Run"), run.id)?;
    let mut fields = vec![
        ("job", format!("{}{kind}", run.job)),
        ("state", style.state(&run.state)),
        ("trigger", run.trigger.clone()),
        ("scheduled for", run.scheduled_for.clone()),
        ("started", opt(&run.started_at)),
        ("finished", opt(&run.finished_at)),
        ("attempts", run.attempts.to_string()),
        ("spec hash", run.spec_hash.clone()),
    ];
    if let Some(reason) = &run.reason {
        fields.push(("reason", reason.clone()));
    }
    if let Some(h) = &run.held_by {
        fields.push((
            "held by",
            format!(
                "{} (instance {}, lease until {})",
                h.replica,
                h.instance,
                h.lease_expires_at.as_deref().unwrap_or("-")
            ),
        ));
    }
    if run.cancel_requested {
        fields.push(("cancel", "requested".into()));
    }
    if let Some(next) = &run.next_attempt_at {
        fields.push(("next attempt", next.clone()));
    }
    for (k, v) in fields {
        writeln!(
            out,
            "  {:<14}{}",
            k,
            if v.is_empty() { "-".into() } else { v }
        )?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "{}",
        style.heading(&format!("Steps ({})", r.steps.len()))
    )?;
    if r.steps.is_empty() {
        writeln!(out, "  none yet")?;
    } else {
        let mut t = Table::new(&[
            "#",
            "mailbox",
            "state",
            "attempts",
            "posts",
            "items",
            "session",
            "operation",
            "size",
            "file",
        ])
        .right(0)
        .right(3)
        .right(4)
        .right(8);
        for s in &r.steps {
            let mailbox = match (&s.mailbox, &s.mailbox_ids) {
                (Some(m), _) => {
                    let email = m.email.clone().or_else(|| m.id.clone()).unwrap_or_default();
                    if m.is_archive {
                        format!("{email} (archive)")
                    } else {
                        email
                    }
                }
                (None, Some(ids)) => format!("{} mailboxes", ids.len()),
                (None, None) => "organisation".into(),
            };
            let (size, file) = match (&s.file, &s.download) {
                (Some(f), _) => (
                    f.bytes.map(output::human_bytes).unwrap_or_default(),
                    f.path.clone(),
                ),
                (None, Some(d)) => (
                    match d.expected_bytes {
                        Some(total) => format!(
                            "{} of {}",
                            output::human_bytes(d.bytes_durable),
                            output::human_bytes(total)
                        ),
                        None => output::human_bytes(d.bytes_durable),
                    },
                    format!("{} ({})", d.final_path, d.state),
                ),
                (None, None) => (String::new(), String::new()),
            };
            t.row(vec![
                s.seq.to_string(),
                mailbox,
                s.state.clone(),
                s.attempts.to_string(),
                s.restore_posts.to_string(),
                counts_cell(&s.counts),
                opt(&s.restore_session_id),
                opt(&s.remote_operation_id),
                size,
                file,
            ]);
        }
        for line in t.render(&inner, |col, text| match col {
            2 => style.state(text),
            _ => text.to_string(),
        }) {
            writeln!(out, "  {line}")?;
        }
    }

    let problems: Vec<&StepJson> = r
        .steps
        .iter()
        .filter(|s| s.error.is_some() || s.operator_decision.is_some())
        .collect();
    if !problems.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", style.heading("Errors"))?;
        for s in problems {
            let who = s
                .mailbox
                .as_ref()
                .and_then(|m| m.email.clone())
                .unwrap_or_else(|| format!("step {}", s.seq));
            if let Some(e) = &s.error {
                let class = opt(&e.class);
                let code = e.code.as_ref().map(|c| format!(" {c}")).unwrap_or_default();
                writeln!(
                    out,
                    "  #{} {who} [{class}{code}]: {}",
                    s.seq,
                    opt(&e.message)
                )?;
            }
            if let Some(d) = &s.operator_decision {
                writeln!(out, "  #{} {who}: operator decided {d}", s.seq)?;
            }
            if s.state == StepState::InDoubt.as_str() && s.operator_decision.is_none() {
                writeln!(
                    out,
                    "      in doubt: check in VB365 whether the restore ran, then `restorectl \
                     resolve {} --resend | --mark-done | --mark-failed` (docs/operations.md)",
                    run.id
                )?;
            }
        }
    }

    writeln!(out)?;
    writeln!(
        out,
        "{}",
        style.heading(&format!("Restore sessions ({})", r.sessions.len()))
    )?;
    if r.sessions.is_empty() {
        writeln!(out, "  none")?;
    } else {
        let mut t =
            Table::new(&["session", "server", "state", "keep", "opened", "stopped"]).keep(0);
        for s in &r.sessions {
            t.row(vec![
                s.id.clone(),
                s.server.clone(),
                s.state.clone(),
                if s.keep_for_resume {
                    "yes".into()
                } else {
                    "no".into()
                },
                s.opened_at.clone(),
                opt(&s.stopped_at),
            ]);
        }
        for line in t.render(&inner, |col, text| match col {
            2 => style.state(text),
            _ => text.to_string(),
        }) {
            writeln!(out, "  {line}")?;
        }
    }

    writeln!(out)?;
    writeln!(
        out,
        "{}",
        style.heading(&format!("Files ({})", r.files.len()))
    )?;
    if r.files.is_empty() {
        writeln!(out, "  none")?;
    }
    // sha256sum's own format, so the list can be checked with `sha256sum -c`.
    for f in &r.files {
        let deleted = match &f.deleted_at {
            Some(at) => format!(", deleted by retention {at}"),
            None => String::new(),
        };
        writeln!(out, "  {}  {}", f.sha256, f.path)?;
        writeln!(
            out,
            "      {} bytes ({}), {}{deleted}",
            f.bytes,
            output::human_bytes(f.bytes),
            f.format
        )?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "{}",
        style.heading(&format!("Events ({})", r.events_total))
    )?;
    let omitted = r.events_total.saturating_sub(r.events.len() as u64);
    if omitted > 0 {
        writeln!(
            out,
            "  ({omitted} earlier events not shown; --events all lists every one)"
        )?;
    }
    let mut t = Table::new(&["at", "kind", "message"]);
    for e in &r.events {
        t.row(vec![e.at.clone(), e.kind.clone(), e.message.clone()]);
    }
    if !t.is_empty() {
        for line in t.render(&inner, |_, text| text.to_string()) {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}
