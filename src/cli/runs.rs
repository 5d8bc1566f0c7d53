//! `restorectl runs [JOB] [--limit N] [--state S] [--json]` (SPEC §6): run history, newest first,
//! including the history-only `missed` and `skipped` fire records.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::Outcome;
use super::context;
use super::output::{self, Style, Table};
use crate::config::Config;
use crate::store::{DaemonInstance, Run, RunFilter, RunState, Step, StepState, Store};

/// Arguments of `restorectl runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Only runs of this job.
    #[arg(value_name = "JOB")]
    pub job: Option<String>,
    /// At most this many runs (newest first); 0 for all.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: u32,
    /// Only runs in this state.
    #[arg(long, value_name = "S", value_parser = parse_run_state)]
    pub state: Option<RunState>,
    /// Print the stable JSON form (docs/cli-json.md) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses a run state for `--state`, listing the valid ones on error.
pub fn parse_run_state(text: &str) -> Result<RunState, String> {
    text.parse().map_err(|_| {
        let all: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown run state `{text}` (one of: {})", all.join(", "))
    })
}

/// `runs --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunsJson {
    pub version: u32,
    pub runs: Vec<RunJson>,
}

/// One run as `runs --json` and `show --json` print it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunJson {
    pub id: String,
    pub job: String,
    pub job_version_id: i64,
    pub spec_hash: String,
    pub trigger: String,
    pub state: String,
    pub reason: Option<String>,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub scheduled_for: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub deadline_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub steps: StepCounts,
    /// The replica executing the run (a `running` run with a lease), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<HolderJson>,
}

/// Who holds a running run: the replica (`replicaName`, default `HOST-PID`), its instance id
/// and when its lease ends.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderJson {
    pub replica: String,
    pub instance: String,
    pub lease_expires_at: Option<String>,
}

/// The holder of `run` when it is `running` under a lease, named from `instances` (the lease
/// owner itself when no instance row names it: `run --foreground`, a row copied away).
pub fn holder(run: &Run, instances: &[DaemonInstance]) -> Option<HolderJson> {
    if run.state != RunState::Running {
        return None;
    }
    let owner = run.lease_owner.as_deref()?;
    let replica = instances
        .iter()
        .find(|i| i.id == owner)
        .map_or_else(|| owner.to_string(), DaemonInstance::replica_name);
    Some(HolderJson {
        replica,
        instance: owner.to_string(),
        lease_expires_at: output::json_time_opt(run.lease_expires_at),
    })
}

/// How many steps a run has, by state.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepCounts {
    pub total: usize,
    /// Step state → count; states with no step are absent.
    pub by_state: BTreeMap<String, usize>,
}

impl StepCounts {
    /// Counts `steps` by state.
    pub fn of(steps: &[Step]) -> StepCounts {
        let mut by_state = BTreeMap::new();
        for s in steps {
            *by_state.entry(s.state.to_string()).or_insert(0) += 1;
        }
        StepCounts {
            total: steps.len(),
            by_state,
        }
    }

    /// `3/4 done`, `1 in_doubt`, `-`.
    pub fn summary(&self) -> String {
        if self.total == 0 {
            return String::new();
        }
        let finished: usize = [StepState::Done, StepState::Warning]
            .iter()
            .filter_map(|s| self.by_state.get(s.as_str()))
            .sum();
        let mut parts = vec![format!("{finished}/{} done", self.total)];
        for state in [StepState::Failed, StepState::InDoubt] {
            if let Some(n) = self.by_state.get(state.as_str()) {
                parts.push(format!("{n} {state}"));
            }
        }
        parts.join(", ")
    }
}

impl RunJson {
    /// The JSON form of `run` with its steps counted.
    pub fn new(run: &Run, steps: &[Step]) -> RunJson {
        RunJson {
            id: run.id.to_string(),
            job: run.job_name.clone(),
            job_version_id: run.job_version_id,
            spec_hash: run.spec_hash.clone(),
            trigger: run.trigger.to_string(),
            state: run.state.to_string(),
            reason: run.reason.clone(),
            attempts: run.attempts,
            cancel_requested: run.cancel_requested,
            scheduled_for: output::json_time(run.scheduled_for),
            created_at: output::json_time(run.created_at),
            started_at: output::json_time_opt(run.started_at),
            finished_at: output::json_time_opt(run.finished_at),
            deadline_at: output::json_time_opt(run.deadline_at),
            next_attempt_at: output::json_time_opt(run.next_attempt_at),
            steps: StepCounts::of(steps),
            held_by: None,
        }
    }

    /// The same, naming the replica that holds the run ([`holder`]).
    #[must_use]
    pub fn held(mut self, run: &Run, instances: &[DaemonInstance]) -> RunJson {
        self.held_by = holder(run, instances);
        self
    }
}

/// Runs `runs`.
pub fn run(args: RunsArgs, config: &Config) -> anyhow::Result<Outcome> {
    context::block_on(async {
        let store = context::open_read(config).await?;
        let runs = store
            .list_runs(&RunFilter {
                job: args.job.as_deref(),
                state: args.state,
                limit: (args.limit > 0).then_some(args.limit),
            })
            .await?;
        let report = RunsJson {
            version: 1,
            runs: with_steps(&store, &runs).await?,
        };
        let mut out = output::buffered_stdout();
        if args.json {
            output::print_json(&mut out, &report)?;
        } else if report.runs.is_empty() {
            writeln!(
                out,
                "no runs{}",
                match &args.job {
                    Some(job) => format!(" of job {job}"),
                    None => String::new(),
                }
            )?;
        } else {
            print_human(&mut out, &runs, &report, &Style::detect())?;
        }
        out.flush()?;
        Ok(Outcome::Ok)
    })
}

async fn with_steps(store: &Store, runs: &[Run]) -> anyhow::Result<Vec<RunJson>> {
    let mut out = Vec::with_capacity(runs.len());
    let instances = if runs.iter().any(|r| r.state == RunState::Running) {
        store.list_instances().await?
    } else {
        Vec::new()
    };
    for run in runs {
        let steps = store.list_steps(run.id).await?;
        out.push(RunJson::new(run, &steps).held(run, &instances));
    }
    Ok(out)
}

fn print_human(
    out: &mut impl Write,
    runs: &[Run],
    report: &RunsJson,
    style: &Style,
) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        "run",
        "job",
        "trigger",
        "state",
        "scheduled",
        "started",
        "duration",
        "steps",
        "reason",
    ])
    .keep(0);
    for (run, json) in runs.iter().zip(&report.runs) {
        let duration = match (run.started_at, run.finished_at) {
            (Some(s), Some(f)) => output::human_duration(s, f),
            _ => String::new(),
        };
        table.row(vec![
            json.id.clone(),
            json.job.clone(),
            json.trigger.clone(),
            match &json.held_by {
                Some(h) => format!("{} on {}", json.state, h.replica),
                None => json.state.clone(),
            },
            output::human_time(run.scheduled_for),
            output::human_time_opt(run.started_at),
            duration,
            json.steps.summary(),
            json.reason.clone().unwrap_or_default(),
        ]);
    }
    table.print(out, style, |col, text| match col {
        3 => style.state(text),
        _ => text.to_string(),
    })?;
    Ok(())
}
