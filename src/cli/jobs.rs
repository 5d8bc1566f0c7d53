//! `restorectl jobs [--json]` (SPEC §6): every job the daemon knows, with its kind, schedule,
//! next fire, last run, state, file and errors, plus job files that do not parse at all.
//!
//! Reads the state database only: what is shown is what the daemon applied, not what is in the
//! job directory right now (`plan` compares the two).

use std::io::Write;
use std::path::PathBuf;

use chrono_tz::Tz;
use serde::Serialize;

use super::Outcome;
use super::context;
use super::output::{self, Style, Table};
use crate::config::Config;
use crate::store::{JobSummary, StoredJobFile};

/// Arguments of `restorectl jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Print the stable JSON form (docs/cli-json.md) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `jobs --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobsJson {
    /// Format version of this object.
    pub version: u32,
    pub jobs: Vec<JobJson>,
    pub invalid_files: Vec<InvalidFileJson>,
}

/// One job of `jobs --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobJson {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub file: PathBuf,
    pub schedule: Option<ScheduleJson>,
    pub suspend: bool,
    pub next_fire_at: Option<String>,
    pub last_fire_at: Option<String>,
    pub active_version: Option<VersionJson>,
    pub last_run: Option<LastRunJson>,
    pub errors: serde_json::Value,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub removed_at: Option<String>,
}

/// The schedule of a job's active version.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleJson {
    pub cron: String,
    /// The job's zone, or the config's default when the job names none.
    pub timezone: String,
}

/// The active (scheduled) version of a job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionJson {
    pub id: i64,
    pub spec_hash: String,
}

/// The latest run of a job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRunJson {
    pub id: String,
    pub state: String,
    pub trigger: String,
    pub scheduled_for: String,
    pub finished_at: Option<String>,
    /// The replica executing it (a `running` run with a lease), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<super::runs::HolderJson>,
}

/// A job file that does not validate (its errors; the jobs it names keep their last valid version).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidFileJson {
    pub path: PathBuf,
    pub job_names: Vec<String>,
    pub errors: serde_json::Value,
    pub last_seen_at: String,
}

/// Runs `jobs`.
pub fn run(args: JobsArgs, config: &Config) -> anyhow::Result<Outcome> {
    context::block_on(async {
        let store = context::open_read(config).await?;
        let jobs = store.list_jobs().await?;
        let files = store.list_job_files().await?;
        let instances = store.list_instances().await?;
        let report = build(&jobs, &files, &instances, config.timezone);
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

fn build(
    jobs: &[JobSummary],
    files: &[StoredJobFile],
    instances: &[crate::store::DaemonInstance],
    default_tz: Tz,
) -> JobsJson {
    let jobs = jobs
        .iter()
        .map(|s| {
            let spec = s.active_version.as_ref().map(|v| &v.spec_json);
            let schedule = spec.and_then(|spec| schedule_of(spec, default_tz));
            let suspend = spec
                .and_then(|spec| spec.pointer("/spec/suspend"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            JobJson {
                name: s.job.name.clone(),
                kind: s.job.kind.clone(),
                state: s.job.state.to_string(),
                file: s.job.file.clone(),
                schedule,
                suspend,
                next_fire_at: output::json_time_opt(s.job.next_fire_at),
                last_fire_at: output::json_time_opt(s.job.last_fire_at),
                active_version: s.active_version.as_ref().map(|v| VersionJson {
                    id: v.id,
                    spec_hash: v.spec_hash.clone(),
                }),
                last_run: s.last_run.as_ref().map(|r| LastRunJson {
                    id: r.id.to_string(),
                    state: r.state.to_string(),
                    trigger: r.trigger.to_string(),
                    scheduled_for: output::json_time(r.scheduled_for),
                    finished_at: output::json_time_opt(r.finished_at),
                    held_by: super::runs::holder(r, instances),
                }),
                errors: s.job.errors.clone(),
                first_seen_at: output::json_time(s.job.first_seen_at),
                last_seen_at: output::json_time(s.job.last_seen_at),
                removed_at: output::json_time_opt(s.job.removed_at),
            }
        })
        .collect();
    let invalid_files = files
        .iter()
        .filter(|f| !f.valid && f.removed_at.is_none())
        .map(|f| InvalidFileJson {
            path: f.path.clone(),
            job_names: f.job_names.clone(),
            errors: f.errors.clone(),
            last_seen_at: output::json_time(f.last_seen_at),
        })
        .collect();
    JobsJson {
        version: 1,
        jobs,
        invalid_files,
    }
}

/// The schedule of a normalised spec (`spec.schedule.cron` / `.timezone`), if it has one.
pub fn schedule_of(spec: &serde_json::Value, default_tz: Tz) -> Option<ScheduleJson> {
    let schedule = spec.pointer("/spec/schedule")?;
    let cron = schedule.get("cron")?.as_str()?.to_string();
    let timezone = schedule
        .get("timezone")
        .and_then(|t| t.as_str())
        .map_or_else(|| default_tz.name().to_string(), str::to_string);
    Some(ScheduleJson { cron, timezone })
}

fn errors_of(errors: &serde_json::Value) -> Vec<String> {
    errors
        .as_array()
        .map(|a| a.iter().map(output::error_line).collect())
        .unwrap_or_default()
}

fn print_human(out: &mut impl Write, report: &JobsJson, style: &Style) -> anyhow::Result<()> {
    if report.jobs.is_empty() && report.invalid_files.is_empty() {
        writeln!(out, "no jobs yet: the daemon has not applied any job file")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        "name",
        "kind",
        "state",
        "schedule",
        "next fire",
        "last run",
        "file",
        "errors",
    ]);
    for j in &report.jobs {
        let state = if j.suspend && j.state == "active" {
            "active, suspended".to_string()
        } else {
            j.state.clone()
        };
        let (schedule, next) = match &j.schedule {
            Some(s) => {
                let tz: Tz = s.timezone.parse().unwrap_or(Tz::UTC);
                let next = j
                    .next_fire_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| output::zoned_time(t.with_timezone(&chrono::Utc), tz))
                    .unwrap_or_default();
                (format!("{} {}", s.cron, s.timezone), next)
            }
            None if j.active_version.is_some() => ("one-shot".to_string(), String::new()),
            None => (String::new(), String::new()),
        };
        let last = j
            .last_run
            .as_ref()
            .map(|r| {
                // In UTC with its `Z`, like every instant of the tables: the bare prefix of
                // the RFC 3339 text read as local time.
                let at = chrono::DateTime::parse_from_rfc3339(&r.scheduled_for)
                    .map(|t| output::human_time(t.with_timezone(&chrono::Utc)))
                    .unwrap_or_else(|_| r.scheduled_for.clone());
                match &r.held_by {
                    Some(h) => format!("{} on {} {at}", r.state, h.replica),
                    None => format!("{} {at}", r.state),
                }
            })
            .unwrap_or_default();
        let errors = errors_of(&j.errors);
        let errors = match errors.len() {
            0 => String::new(),
            1 => errors[0].clone(),
            n => format!("{n} errors: {}", errors[0]),
        };
        table.row(vec![
            j.name.clone(),
            j.kind.clone(),
            state,
            schedule,
            next,
            last,
            j.file.display().to_string(),
            errors,
        ]);
    }
    if !table.is_empty() {
        table.print(out, style, |col, text| match col {
            2 | 5 => {
                let word = text.split([',', ' ']).next().unwrap_or(text);
                text.replacen(word, &style.state(word), 1)
            }
            _ => text.to_string(),
        })?;
    }
    let problems: Vec<(String, Vec<String>)> = report
        .jobs
        .iter()
        .filter(|j| j.state == "invalid")
        .map(|j| {
            let keeps = match &j.active_version {
                Some(v) => format!("job {} (version {} stays active)", j.name, v.id),
                None => format!("job {} (not scheduled)", j.name),
            };
            (keeps, errors_of(&j.errors))
        })
        .chain(
            report
                .invalid_files
                .iter()
                .map(|f| (format!("file {}", f.path.display()), errors_of(&f.errors))),
        )
        .collect();
    if !problems.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", style.heading("Problems:"))?;
        for (subject, errors) in problems {
            writeln!(out, "  {subject}:")?;
            for e in errors {
                writeln!(out, "    {e}")?;
            }
        }
    }
    Ok(())
}
