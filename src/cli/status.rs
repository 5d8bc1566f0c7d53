//! `restorectl status [--json]` (SPEC §10): the state database (backend, where, schema version),
//! the daemon instances (replicas) that heartbeat on it, which one leads and until when, the runs
//! each one holds a lease on, and runs whose lease no live instance holds.
//!
//! Reads the database only, from any host with the config. An instance counts as live when it
//! heartbeated within [`context::LIVE_DAEMON_HEARTBEAT`].

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::Outcome;
use super::context;
use super::output::{self, Style, Table};
use crate::config::Config;
use crate::store::{DaemonInstance, Run, RunFilter, RunState, expected_schema_version};

/// Arguments of `restorectl status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the stable JSON form (docs/cli-json.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `status --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusJson {
    pub version: u32,
    pub now: String,
    pub database: DatabaseJson,
    /// Live daemon instances (replicas), most recent heartbeat first.
    pub instances: Vec<InstanceJson>,
    /// The leadership lease (`None` before any daemon of schema 7 or later ran).
    pub leader: Option<LeaderJson>,
    /// Running runs whose lease holder is not a live instance (taken over once the lease
    /// expires).
    pub orphaned_runs: Vec<HeldRunJson>,
}

/// The state database of `status --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseJson {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The file, or the URL without a password.
    pub location: String,
    pub schema_version: Option<i64>,
}

/// One live instance of `status --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceJson {
    pub id: String,
    /// The replica name (`replicaName`, default `HOST-PID`).
    pub replica: String,
    /// Whether it holds a live leadership lease.
    pub leader: bool,
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    pub heartbeat_at: String,
    pub runs: Vec<HeldRunJson>,
}

/// The leadership lease of `status --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderJson {
    /// The holder's replica name (its instance id when no instance row names it).
    pub replica: String,
    pub instance: String,
    pub since: String,
    pub expires_at: String,
    /// Whether the lease was still running at `now` (else nobody leads until a replica takes it).
    pub live: bool,
    pub term: i64,
}

/// A run held by a lease.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldRunJson {
    pub id: String,
    pub job: String,
    pub lease_owner: Option<String>,
    /// The replica name of the lease owner, when an instance row names it.
    pub replica: Option<String>,
    pub lease_expires_at: Option<String>,
    pub started_at: Option<String>,
}

fn held(run: &Run, all: &[DaemonInstance]) -> HeldRunJson {
    HeldRunJson {
        id: run.id.to_string(),
        job: run.job_name.clone(),
        lease_owner: run.lease_owner.clone(),
        replica: run
            .lease_owner
            .as_deref()
            .and_then(|o| all.iter().find(|i| i.id == o))
            .map(DaemonInstance::replica_name),
        lease_expires_at: output::json_time_opt(run.lease_expires_at),
        started_at: output::json_time_opt(run.started_at),
    }
}

/// Runs `status`.
pub fn run(args: StatusArgs, config: &Config) -> anyhow::Result<Outcome> {
    context::block_on(async {
        let store = context::open_read(config).await?;
        let now = context::now()?;
        let schema = store.schema_version().await?;
        let instances = context::live_daemons(&store, now).await?;
        let all = store.list_instances().await?;
        let leadership = store.leadership().await?;
        let running = store
            .list_runs(&RunFilter {
                state: Some(RunState::Running),
                ..RunFilter::default()
            })
            .await?;
        store.close().await;
        let mut by_owner: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
        for run in &running {
            by_owner
                .entry(run.lease_owner.as_deref().unwrap_or(""))
                .or_default()
                .push(run);
        }
        let status = StatusJson {
            version: 1,
            now: output::json_time(now),
            database: DatabaseJson {
                backend: store.backend().as_str().to_string(),
                location: store.location().to_string(),
                schema_version: schema,
            },
            leader: leadership.as_ref().map(|l| LeaderJson {
                replica: all
                    .iter()
                    .find(|i| i.id == l.holder)
                    .map_or_else(|| l.holder.clone(), DaemonInstance::replica_name),
                instance: l.holder.clone(),
                since: output::json_time(l.since),
                expires_at: output::json_time(l.expires_at),
                live: l.is_live(now),
                term: l.term,
            }),
            instances: instances
                .iter()
                .map(|i| InstanceJson {
                    id: i.id.clone(),
                    replica: i.replica_name(),
                    leader: leadership
                        .as_ref()
                        .is_some_and(|l| l.holder == i.id && l.is_live(now)),
                    host: i.host.clone(),
                    pid: i.pid,
                    started_at: output::json_time(i.started_at),
                    heartbeat_at: output::json_time(i.heartbeat_at),
                    runs: by_owner
                        .remove(i.id.as_str())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| held(r, &all))
                        .collect(),
                })
                .collect(),
            orphaned_runs: by_owner.values().flatten().map(|r| held(r, &all)).collect(),
        };
        let mut out = std::io::stdout().lock();
        if args.json {
            output::print_json(&mut out, &status)?;
        } else {
            print_human(&mut out, &status, &Style::detect())?;
        }
        Ok(Outcome::Ok)
    })
}

fn print_human(out: &mut impl Write, status: &StatusJson, style: &Style) -> anyhow::Result<()> {
    let db = &status.database;
    let schema = db
        .schema_version
        .map_or_else(|| "none".to_string(), |v| v.to_string());
    writeln!(
        out,
        "database: {} ({}, schema {schema} of {})",
        db.location,
        db.backend,
        expected_schema_version()
    )?;
    if status.instances.is_empty() {
        writeln!(
            out,
            "no daemon heartbeats on this database (none within {} s)",
            context::LIVE_DAEMON_HEARTBEAT.as_secs()
        )?;
    } else {
        writeln!(out, "{}", style.heading("daemon instances"))?;
        let mut table = Table::new(&[
            "REPLICA",
            "ROLE",
            "INSTANCE",
            "HOST",
            "PID",
            "STARTED",
            "HEARTBEAT",
            "RUNS",
        ])
        .keep(0)
        .keep(2)
        .right(4)
        .right(7);
        for i in &status.instances {
            table.row(vec![
                i.replica.clone(),
                if i.leader { "leader" } else { "follower" }.to_string(),
                i.id.clone(),
                i.host.clone(),
                i.pid.to_string(),
                i.started_at.clone(),
                i.heartbeat_at.clone(),
                i.runs.len().to_string(),
            ]);
        }
        table.print(out, style, |_, cell| cell.to_string())?;
    }
    match &status.leader {
        Some(l) if l.live => writeln!(
            out,
            "leader: {} (instance {}, since {}, lease until {}, term {})",
            l.replica, l.instance, l.since, l.expires_at, l.term
        )?,
        Some(l) => writeln!(
            out,
            "leader: none (the lease of {} ended at {}; the next replica to try takes it)",
            l.replica, l.expires_at
        )?,
        None => writeln!(out, "leader: none yet")?,
    }
    let held: Vec<&HeldRunJson> = status
        .instances
        .iter()
        .flat_map(|i| &i.runs)
        .chain(&status.orphaned_runs)
        .collect();
    if !held.is_empty() {
        writeln!(out, "{}", style.heading("running runs"))?;
        let mut table = Table::new(&["RUN", "JOB", "HELD BY", "LEASE EXPIRES"]).keep(0);
        for r in held {
            table.row(vec![
                r.id.clone(),
                r.job.clone(),
                r.replica
                    .clone()
                    .or_else(|| r.lease_owner.clone())
                    .unwrap_or_else(|| "-".into()),
                r.lease_expires_at.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        table.print(out, style, |_, cell| cell.to_string())?;
    }
    if !status.orphaned_runs.is_empty() {
        writeln!(
            out,
            "{} running run(s) held by no live daemon: taken over when their lease expires",
            status.orphaned_runs.len()
        )?;
    }
    Ok(())
}
