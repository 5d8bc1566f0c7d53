//! `restorectl plan [--format text|json]` (SPEC §6): what the daemon would do with the job
//! directory as it is now, compared with what the state database holds — jobs added, changed
//! (with a field-level diff of the normalised spec), removed, unchanged, files that are invalid
//! (and which version of their jobs stays active) — and the next 3 fire instants of every
//! scheduled job in its time zone, with daylight-saving anomalies flagged.
//!
//! Without a state database (CI, a fresh install) every valid job is "added". Exit 0 when every
//! file is valid, 1 when some file is invalid, 78 for a broken config: a CI step can gate a merge
//! on it (docs/gitops.md).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value;

use super::Outcome;
use super::context;
use super::output::{self, Style};
use crate::config::Config;
use crate::jobs::{Job, JobError, ScanReport, ValidationContext, scan_paths};
use crate::schedule::{self, DstNote};
use crate::store::{JobState, JobSummary, StoreError};

/// How many fire instants are shown per scheduled job.
const FIRES: usize = 3;

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Arguments of `restorectl plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Compute fire instants from this RFC 3339 instant instead of the clock (testing aid; also
    /// `$RESTORECTL_NOW`).
    #[arg(long, hide = true, value_name = "RFC3339")]
    pub now: Option<String>,
}

/// `plan --format json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanJson {
    pub version: u32,
    pub now: String,
    pub jobs_dir: PathBuf,
    /// The state database compared against; `null` when it does not exist.
    pub database: Option<String>,
    pub valid: bool,
    pub summary: Summary,
    pub added: Vec<JobRef>,
    pub changed: Vec<Changed>,
    pub removed: Vec<JobRef>,
    pub unchanged: Vec<JobRef>,
    pub invalid: Vec<InvalidFile>,
    pub schedules: Vec<ScheduleJson>,
}

/// Counts per category.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub invalid_files: usize,
}

/// A job in a category.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    pub name: String,
    pub kind: String,
    pub file: PathBuf,
}

/// A job whose spec differs from the stored active version.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    pub name: String,
    pub kind: String,
    pub file: PathBuf,
    pub spec_hash: String,
    pub previous_spec_hash: String,
    pub diff: Vec<FieldChange>,
}

/// One changed field of a normalised spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// Dotted path: `spec.schedule.cron`, `spec.mailboxes[1]`.
    pub path: String,
    /// `null` when the field was absent.
    pub before: Option<Value>,
    /// `null` when the field is gone.
    pub after: Option<Value>,
}

/// A job file with errors.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidFile {
    pub file: PathBuf,
    /// Jobs named in the file and what stays scheduled for each.
    pub jobs: Vec<InvalidJob>,
    pub errors: Vec<JobError>,
}

/// A job named in an invalid file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidJob {
    pub name: String,
    /// The stored version that stays active, `null` when the job is not scheduled.
    pub keeps_version: Option<i64>,
}

/// The next fire instants of a scheduled job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleJson {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// `suspend: true`: no scheduled runs (and no `fires`).
    pub suspended: bool,
    pub fires: Vec<FireJson>,
}

/// One fire instant.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FireJson {
    /// UTC.
    pub at: String,
    /// The same instant in the job's zone, with its offset.
    pub local: String,
    /// What daylight saving does to this fire; `null` when nothing.
    pub dst: Option<DstJson>,
}

/// A daylight-saving anomaly of a fire.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DstJson {
    #[serde(flatten)]
    pub note: DstNote,
    pub message: String,
}

/// Runs `plan`.
pub fn run(args: PlanArgs, config: &Config) -> anyhow::Result<Outcome> {
    let now = match &args.now {
        Some(text) => context::parse_now(text)?,
        None => context::now()?,
    };
    // Without a config file, server names cannot be checked (as in `validate`).
    let ctx = if config.file.is_some() {
        ValidationContext::new(config)
    } else {
        ValidationContext::without_server_check(config)
    };
    let scan = scan_paths(std::slice::from_ref(&config.jobs_dir), &ctx);
    let location = context::store_location(config)?;
    let stored = context::block_on(async {
        match context::open_read(config).await {
            Ok(store) => Ok(Some(store.list_jobs().await?)),
            Err(e)
                if e.chain()
                    .any(|c| matches!(c.downcast_ref(), Some(StoreError::Missing { .. }))) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    })?;
    let report = build(&scan, stored.as_deref(), config, location.to_string(), now);
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => output::print_json(&mut out, &report)?,
        Format::Text => print_human(&mut out, &report, &Style::detect())?,
    }
    Ok(if report.valid {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}

fn job_ref(job: &Job) -> JobRef {
    JobRef {
        name: job.name().to_string(),
        kind: job.kind().as_str().to_string(),
        file: job.file().to_path_buf(),
    }
}

fn build(
    scan: &ScanReport,
    stored: Option<&[JobSummary]>,
    config: &Config,
    database: String,
    now: DateTime<Utc>,
) -> PlanJson {
    let stored_by_name: BTreeMap<&str, &JobSummary> = stored
        .unwrap_or_default()
        .iter()
        .filter(|s| s.job.state != JobState::Removed)
        .map(|s| (s.job.name.as_str(), s))
        .collect();
    let mut report = PlanJson {
        version: 1,
        now: output::json_time(now),
        jobs_dir: config.jobs_dir.clone(),
        database: stored.is_some().then_some(database),
        valid: scan.is_valid(),
        summary: Summary::default(),
        added: Vec::new(),
        changed: Vec::new(),
        removed: Vec::new(),
        unchanged: Vec::new(),
        invalid: Vec::new(),
        schedules: Vec::new(),
    };

    for job in scan.jobs() {
        let active = stored_by_name
            .get(job.name())
            .and_then(|s| s.active_version.as_ref());
        match active {
            None => report.added.push(job_ref(job)),
            Some(v) if v.spec_hash == job.spec_hash() => report.unchanged.push(job_ref(job)),
            Some(v) => {
                let new: Value = serde_json::from_str(job.spec_json()).unwrap_or(Value::Null);
                report.changed.push(Changed {
                    name: job.name().to_string(),
                    kind: job.kind().as_str().to_string(),
                    file: job.file().to_path_buf(),
                    spec_hash: job.spec_hash().to_string(),
                    previous_spec_hash: v.spec_hash.clone(),
                    diff: diff(&v.spec_json, &new),
                });
            }
        }
        if let Some(s) = job.schedule() {
            report.schedules.push(fires_of(job, s, now));
        }
    }

    // Every name the directory mentions, valid or not: a job in an invalid file is not
    // removed, its last valid version stays active.
    let mentioned: BTreeSet<&str> = scan
        .files
        .iter()
        .flat_map(|f| f.documents.iter().filter_map(|d| d.name.as_deref()))
        .collect();
    for (name, s) in &stored_by_name {
        if !mentioned.contains(name) {
            report.removed.push(JobRef {
                name: name.to_string(),
                kind: s.job.kind.clone(),
                file: s.job.file.clone(),
            });
        }
    }

    for f in scan.files.iter().filter(|f| !f.is_valid()) {
        let names: BTreeSet<&str> = f
            .documents
            .iter()
            .filter_map(|d| d.name.as_deref())
            .collect();
        report.invalid.push(InvalidFile {
            file: f.path.clone(),
            jobs: names
                .into_iter()
                .filter(|n| !scan.jobs().any(|j| j.name() == *n))
                .map(|n| InvalidJob {
                    name: n.to_string(),
                    keeps_version: stored_by_name.get(n).and_then(|s| s.job.active_version_id),
                })
                .collect(),
            errors: f.all_errors().cloned().collect(),
        });
    }

    report.summary = Summary {
        added: report.added.len(),
        changed: report.changed.len(),
        removed: report.removed.len(),
        unchanged: report.unchanged.len(),
        invalid_files: report.invalid.len(),
    };
    report
}

fn fires_of(job: &Job, s: &crate::jobs::Schedule, now: DateTime<Utc>) -> ScheduleJson {
    let tz: Tz = s.timezone();
    let mut fires = Vec::new();
    // The job module already validated the expression; parse it the way the scheduler does.
    if let (false, Ok(cron)) = (job.suspend(), schedule::parse_cron(s.cron())) {
        let mut after = now;
        while fires.len() < FIRES {
            let Some(at) = schedule::next_fire(&cron, tz, after) else {
                break;
            };
            fires.push(FireJson {
                at: output::json_time(at),
                local: at.with_timezone(&tz).to_rfc3339(),
                dst: schedule::explain(&cron, tz, at).map(|note| DstJson {
                    message: note.describe(at, tz),
                    note,
                }),
            });
            after = at;
        }
    }
    ScheduleJson {
        name: job.name().to_string(),
        cron: s.cron().to_string(),
        timezone: tz.name().to_string(),
        suspended: job.suspend(),
        fires,
    }
}

/// The field-level differences between two normalised specs, in path order. Objects are
/// compared key by key, arrays of the same length element by element; anything else that
/// differs is one change.
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", Some(before), Some(after), &mut out);
    out
}

fn walk(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    let key = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (before, after) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                walk(&key(k), a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: path.to_string(),
            before: a.cloned(),
            after: b.cloned(),
        }),
        _ => {}
    }
}

fn show_value(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    }
}

fn print_human(out: &mut impl Write, r: &PlanJson, style: &Style) -> anyhow::Result<()> {
    let s = &r.summary;
    writeln!(
        out,
        "Plan for {}: {} added, {} changed, {} removed, {} unchanged, {} invalid file(s)",
        r.jobs_dir.display(),
        s.added,
        s.changed,
        s.removed,
        s.unchanged,
        s.invalid_files
    )?;
    match &r.database {
        Some(db) => writeln!(out, "compared with {db}")?,
        None => writeln!(
            out,
            "no state database yet: every valid job is new (the daemon has not run with this config)"
        )?,
    }
    let section = |out: &mut dyn Write, title: &str, jobs: &[JobRef]| -> std::io::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        writeln!(out)?;
        writeln!(out, "{}", style.heading(title))?;
        for j in jobs {
            writeln!(
                out,
                "  {} {} ({}, {})",
                &title[..1],
                j.name,
                j.kind,
                j.file.display()
            )?;
        }
        Ok(())
    };
    section(out, "+ Added", &r.added)?;
    if !r.changed.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", style.heading("~ Changed"))?;
        for c in &r.changed {
            writeln!(out, "  ~ {} ({}, {})", c.name, c.kind, c.file.display())?;
            for d in &c.diff {
                writeln!(
                    out,
                    "      {}: {} → {}",
                    d.path,
                    show_value(&d.before),
                    show_value(&d.after)
                )?;
            }
        }
    }
    section(
        out,
        "- Removed (no future runs; history is kept)",
        &r.removed,
    )?;
    if !r.invalid.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", style.heading("! Invalid"))?;
        for f in &r.invalid {
            writeln!(out, "  ! {}", f.file.display())?;
            for j in &f.jobs {
                match j.keeps_version {
                    Some(v) => {
                        writeln!(out, "      job {}: stored version {v} stays active", j.name)?
                    }
                    None => writeln!(out, "      job {}: not scheduled", j.name)?,
                }
            }
            for e in &f.errors {
                writeln!(out, "      {e}")?;
            }
        }
    }
    if !r.schedules.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", style.heading(&format!("Next {FIRES} fires")))?;
        for s in &r.schedules {
            writeln!(out, "  {} ({} {})", s.name, s.cron, s.timezone)?;
            if s.suspended {
                writeln!(out, "      suspended: no scheduled runs")?;
                continue;
            }
            let tz: Tz = s.timezone.parse().unwrap_or(Tz::UTC);
            for f in &s.fires {
                let at = DateTime::parse_from_rfc3339(&f.at)
                    .map(|t| t.with_timezone(&Utc))
                    .ok();
                let local = at.map(|t| output::zoned_time(t, tz)).unwrap_or_default();
                let utc = at.map(output::human_time).unwrap_or_default();
                let flag = match &f.dst {
                    Some(d) => format!("  {} {}", style.warn("DST:"), d.message),
                    None => String::new(),
                };
                writeln!(out, "      {local}  = {utc}{flag}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_changed_added_and_removed_fields() {
        let a =
            json!({"spec": {"schedule": {"cron": "0 2 * * *"}, "mailboxes": ["a", "b"], "x": 1}});
        let b = json!({"spec": {"schedule": {"cron": "0 3 * * *", "timezone": "UTC"}, "mailboxes": ["a", "c"]}});
        let d = diff(&a, &b);
        let lines: Vec<String> = d
            .iter()
            .map(|c| {
                format!(
                    "{}: {} → {}",
                    c.path,
                    show_value(&c.before),
                    show_value(&c.after)
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                "spec.mailboxes[1]: \"b\" → \"c\"",
                "spec.schedule.cron: \"0 2 * * *\" → \"0 3 * * *\"",
                "spec.schedule.timezone: (absent) → \"UTC\"",
                "spec.x: 1 → (absent)",
            ]
        );
        assert!(diff(&a, &a).is_empty());
        let grown = diff(&json!({"m": [1]}), &json!({"m": [1, 2]}));
        assert_eq!(grown.len(), 1);
        assert_eq!(grown[0].path, "m");
    }
}
