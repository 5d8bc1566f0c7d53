//! Shared helpers of the CLI tests: a temporary installation (config, job directory, state
//! database) and a store filled with the history the operator commands read.
//!
//! The history is written through the store API, exactly as the run engine records it (the same
//! calls in the same order: steps, session, submitting/submitted, download progress, publish,
//! export, run state). When the engine (`exec`) lands, `Fixture::with_history` is switched to a
//! real run on the in-process simulator.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use restorectl::config::Config;
use restorectl::jobs::{ValidationContext, scan_paths};

use restorectl::store::{
    FileFormat, NewDownload, NewExport, NewJobVersion, NewRun, NewSession, NewStep, NextFire,
    RestoreCounts, RunId, RunState, ScannedFile, StepFile, StepState, Store, Trigger,
};

/// A fixed clock for every recorded instant.
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// A temporary installation: `restorectl.yaml`, `jobs/`, `state/restorectl.db`, `exports/`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The run that succeeded (ExportPst, two mailboxes, files published).
    pub succeeded: RunId,
    /// The run that needs attention (RestoreTo, one step in_doubt).
    pub in_doubt: RunId,
    /// A queued run (nothing claimed it).
    pub queued: RunId,
}

impl Fixture {
    /// A config and an empty job directory, no database.
    pub fn empty() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("restorectl.yaml"),
            "jobsDir: jobs\nstateDir: state\nexportRoot: exports\ntimezone: UTC\nlisten: \"off\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        dir
    }

    /// An installation whose database holds jobs and runs in every interesting state.
    pub fn with_history() -> Fixture {
        let dir = Self::empty();
        let db = dir.path().join("state/restorectl.db");
        let exports = dir.path().join("exports");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (succeeded, in_doubt, queued) = rt.block_on(fill(&db, &exports));
        Fixture {
            dir,
            succeeded,
            in_doubt,
            queued,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("restorectl.yaml")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state/restorectl.db")
    }

    /// `restorectl --config <fixture config> ARGS…` with a clean environment for output checks.
    pub fn cmd(&self, args: &[&str]) -> Command {
        cmd_in(self.dir.path(), args)
    }

    /// Opens the fixture's database (read-write) for assertions.
    pub fn store(&self) -> (tokio::runtime::Runtime, Store) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(Store::open_existing(self.db())).unwrap();
        (rt, store)
    }
}

/// `restorectl --config DIR/restorectl.yaml ARGS…`, run in DIR, with `NO_COLOR` unset and a fixed
/// `COLUMNS` removed, so each test sets what it checks.
pub fn cmd_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("restorectl").unwrap();
    cmd.current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS")
        .env_remove("RESTORECTL_CONFIG")
        .env_remove("RESTORECTL_NOW")
        .arg("--config")
        .arg(dir.join("restorectl.yaml"))
        .args(args);
    cmd
}

fn spec(name: &str, kind: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "organization": "contoso.onmicrosoft.com",
        "mailboxes": ["alice@contoso.com", "bob@contoso.com"],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({ "apiVersion": "restorectl/v1", "kind": kind, "metadata": { "name": name }, "spec": spec })
}

async fn version(
    store: &Store,
    name: &str,
    kind: &str,
    file: &Path,
    spec: &serde_json::Value,
) -> i64 {
    store
        .upsert_job_version(
            &NewJobVersion {
                name,
                kind,
                file,
                spec_hash: &format!("hash-{name}-{}", spec.to_string().len()),
                spec,
                valid: true,
                errors: &json!([]),
            },
            t(0),
        )
        .await
        .unwrap()
        .version_id
}

async fn fill(db: &Path, exports: &Path) -> (RunId, RunId, RunId) {
    let store = Store::open(db).await.unwrap();
    let jobs_dir = db.parent().unwrap().parent().unwrap().join("jobs");
    let legal_file = jobs_dir.join("legal-hold.yaml");
    let offboarding_file = jobs_dir.join("offboarding.yaml");
    let broken_file = jobs_dir.join("broken.yaml");

    // Jobs: a scheduled export, a one-shot restore, and a file that never validated.
    let legal_spec = spec(
        "legal-hold",
        "ExportPst",
        json!({
            "schedule": { "cron": "0 2 * * SUN", "timezone": "Europe/Berlin" },
            "export": { "path": "{job}/{date}/{mailbox}.pst" },
        }),
    );
    let legal = version(&store, "legal-hold", "ExportPst", &legal_file, &legal_spec).await;
    store
        .set_next_fire(
            "legal-hold",
            NextFire {
                schedule_key: Some("v1|0 2 * * SUN|Europe/Berlin"),
                next_fire_at: Some(Utc.with_ymd_and_hms(2026, 3, 8, 1, 0, 0).unwrap()),
            },
        )
        .await
        .unwrap();
    let offboarding_spec = spec(
        "offboarding",
        "RestoreTo",
        json!({ "restoreTo": { "mailbox": "legal-review@contoso.com" } }),
    );
    let offboarding = version(
        &store,
        "offboarding",
        "RestoreTo",
        &offboarding_file,
        &offboarding_spec,
    )
    .await;
    let broken_error = json!([{
        "file": broken_file, "line": 7, "column": 11, "code": "bad-cron",
        "job": "broken", "field": "spec.schedule.cron",
        "message": "cron expression \"0 25 * * *\": invalid hour", "hint": "fix the hour",
    }]);
    store
        .upsert_job_version(
            &NewJobVersion {
                name: "broken",
                kind: "ExportPst",
                file: &broken_file,
                spec_hash: "hash-broken",
                spec: &json!({}),
                valid: false,
                errors: &broken_error,
            },
            t(0),
        )
        .await
        .unwrap();
    store
        .record_job_file(
            &ScannedFile {
                path: &broken_file,
                content_hash: "c-broken",
                valid: false,
                errors: &broken_error,
                job_names: &["broken".to_string()],
            },
            t(0),
        )
        .await
        .unwrap();

    // A scheduled export that succeeded: two mailboxes, one resumed download, files published.
    let run = store
        .enqueue_run(
            &NewRun {
                job_name: "legal-hold",
                job_version_id: legal,
                spec_hash: &format!("hash-legal-hold-{}", legal_spec.to_string().len()),
                trigger: Trigger::Schedule,
                scheduled_for: t(0),
                state: RunState::Queued,
                reason: None,
                timeout: Some(std::time::Duration::from_secs(12 * 3600)),
            },
            t(0),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .claim_run(run.id, "fixture", std::time::Duration::from_secs(60), t(1))
        .await
        .unwrap()
        .unwrap();
    let session = "5b0d2c8e-1111-4a4a-9c9c-000000000001";
    store
        .record_session_opened(
            &NewSession {
                id: session,
                server: "primary",
                organization_id: "6f1c8e0a-6a4b-4d1e-9a51-3c2f0b7d9e01",
                point_in_time: None,
                run_id: Some(run.id),
            },
            t(2),
        )
        .await
        .unwrap();
    let steps = store
        .create_steps(
            run.id,
            &[
                mailbox_step(0, "alice@contoso.com", "Alice Adams"),
                mailbox_step(1, "bob@contoso.com", "Bob Brown"),
            ],
            t(2),
        )
        .await
        .unwrap();
    for (i, step) in steps.iter().enumerate() {
        let email = step.mailbox_email.clone().unwrap();
        let file = exports.join(format!("legal-hold/2026-03-01/{email}.pst"));
        let partial = exports.join(format!("legal-hold/2026-03-01/{email}.pst.partial"));
        let bytes = 1_048_576 * (i as u64 + 1) + 17;
        let sha = format!("{:064x}", 0xabc0 + i);
        store.begin_step_attempt(step.id, t(3)).await.unwrap();
        store
            .set_step_session(step.id, Some(session), t(3))
            .await
            .unwrap();
        store
            .create_download(
                &NewDownload {
                    step_id: step.id,
                    final_path: &file,
                    partial_path: &partial,
                    restore_session_id: Some(session),
                },
                t(3),
            )
            .await
            .unwrap();
        store
            .set_step_state(step.id, StepState::Downloading, None, t(4))
            .await
            .unwrap();
        store
            .record_download_progress(step.id, bytes / 2, None, Some(bytes), t(5))
            .await
            .unwrap();
        if i == 1 {
            store
                .record_download_resume(step.id, bytes / 2, t(6))
                .await
                .unwrap();
        }
        store
            .set_step_state(step.id, StepState::Verifying, None, t(7))
            .await
            .unwrap();
        store
            .mark_download_published(step.id, &file, bytes, &sha, FileFormat::Pst, t(8))
            .await
            .unwrap();
        store
            .record_step_file(
                step.id,
                &StepFile {
                    path: &file,
                    bytes,
                    sha256: &sha,
                    format: FileFormat::Pst,
                },
                t(8),
            )
            .await
            .unwrap();
        store
            .record_export(
                &NewExport {
                    job_name: "legal-hold",
                    run_id: run.id,
                    step_id: Some(step.id),
                    mailbox_id: step.mailbox_id.as_deref(),
                    mailbox_email: step.mailbox_email.as_deref(),
                    path: &file,
                    manifest_path: Some(&file.with_extension("pst.manifest.json")),
                    format: FileFormat::Pst,
                    bytes,
                    sha256: &sha,
                },
                t(8),
            )
            .await
            .unwrap();
        store
            .set_step_state(step.id, StepState::Done, None, t(9))
            .await
            .unwrap();
    }
    store.mark_session_stopped(session, t(10)).await.unwrap();
    store
        .set_run_state(run.id, RunState::Succeeded, None, t(11))
        .await
        .unwrap();
    let succeeded = run.id;

    // A one-shot restore whose second POST's outcome is unknown: in_doubt, needs_attention.
    let run = store
        .enqueue_run(
            &NewRun {
                job_name: "offboarding",
                job_version_id: offboarding,
                spec_hash: "hash-offboarding",
                trigger: Trigger::OneShot,
                scheduled_for: t(100),
                state: RunState::Queued,
                reason: None,
                timeout: None,
            },
            t(100),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .claim_run(
            run.id,
            "fixture",
            std::time::Duration::from_secs(60),
            t(101),
        )
        .await
        .unwrap()
        .unwrap();
    let steps = store
        .create_steps(
            run.id,
            &[
                mailbox_step(0, "alice@contoso.com", "Alice Adams"),
                mailbox_step(1, "bob@contoso.com", "Bob Brown"),
            ],
            t(101),
        )
        .await
        .unwrap();
    store.begin_step_attempt(steps[0].id, t(102)).await.unwrap();
    store.mark_submitting(steps[0].id, t(102)).await.unwrap();
    store
        .mark_submitted(steps[0].id, "op-7f3e-0001", t(103))
        .await
        .unwrap();
    store
        .record_restore_counts(
            steps[0].id,
            RestoreCounts {
                created: 120,
                merged: 3,
                failed: 0,
                skipped: 1,
            },
            t(104),
        )
        .await
        .unwrap();
    store
        .set_step_state(steps[0].id, StepState::Done, None, t(104))
        .await
        .unwrap();
    store.begin_step_attempt(steps[1].id, t(105)).await.unwrap();
    store.mark_submitting(steps[1].id, t(105)).await.unwrap();
    store
        .mark_in_doubt(
            steps[1].id,
            "restore POST timed out after the request was sent; the restore session's events do not show it",
            t(106),
        )
        .await
        .unwrap();
    store
        .set_run_state(
            run.id,
            RunState::NeedsAttention,
            Some("1 step in_doubt"),
            t(107),
        )
        .await
        .unwrap();
    let in_doubt = run.id;

    // A manual run nobody claimed yet.
    let queued = store
        .enqueue_run(
            &NewRun {
                job_name: "legal-hold",
                job_version_id: legal,
                spec_hash: "hash-legal",
                trigger: Trigger::Manual,
                scheduled_for: t(200),
                state: RunState::Queued,
                reason: None,
                timeout: None,
            },
            t(200),
        )
        .await
        .unwrap()
        .unwrap()
        .id;
    store.close().await;
    (succeeded, in_doubt, queued)
}

fn mailbox_step(seq: i64, email: &str, name: &str) -> NewStep {
    NewStep {
        seq,
        mailbox_id: Some(format!("00000000-0000-4000-8000-00000000000{seq}")),
        mailbox_email: Some(email.to_string()),
        mailbox_name: Some(name.to_string()),
        is_archive: false,
        mailbox_ids: None,
    }
}

// ===== plan scenario =====

pub const PLAN_CONFIG: &str = "jobsDir: jobs\nstateDir: state\nexportRoot: exports\ntimezone: UTC\n\
servers:\n  primary:\n    url: https://vb365.example.test:4443\n    username: CONTOSO\\svc-restore\n    password: { secret: vb365-password }\n";

pub fn export_job(name: &str, schedule: Option<&str>) -> String {
    let schedule = schedule
        .map(|cron| format!("  schedule:\n    cron: \"{cron}\"\n    timezone: Europe/Berlin\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata:\n  name: {name}\nspec:\n  \
         organization: contoso.onmicrosoft.com\n  mailboxes: [alice@contoso.com]\n{schedule}  \
         export:\n    path: \"{{job}}/{{date}}/{{mailbox}}.pst\"\n"
    )
}

pub fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join("jobs").join(file), text).unwrap();
}

/// Records every valid job of the directory as the daemon would, then returns.
pub fn apply(dir: &Path) {
    let config = Config::load(&dir.join("restorectl.yaml")).unwrap();
    let scan = scan_paths(
        std::slice::from_ref(&config.jobs_dir),
        &ValidationContext::new(&config),
    );
    assert!(scan.is_valid(), "{:?}", scan.errors().collect::<Vec<_>>());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(dir.join("state/restorectl.db")).await.unwrap();
        let now = chrono::Utc::now();
        for job in scan.jobs() {
            let spec: Value = serde_json::from_str(job.spec_json()).unwrap();
            store
                .upsert_job_version(
                    &NewJobVersion {
                        name: job.name(),
                        kind: job.kind().as_str(),
                        file: job.file(),
                        spec_hash: job.spec_hash(),
                        spec: &spec,
                        valid: true,
                        errors: &serde_json::json!([]),
                    },
                    now,
                )
                .await
                .unwrap();
        }
        store.close().await;
    });
}

pub fn plan(dir: &Path, format: &str) -> Command {
    let mut cmd = Command::cargo_bin("restorectl").unwrap();
    cmd.current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS")
        .env_remove("RESTORECTL_CONFIG")
        .env("RESTORECTL_NOW", "2026-03-27T12:00:00Z")
        .args(["--config", "restorectl.yaml", "plan", "--format", format]);
    cmd
}

/// A job directory after an edit, for `plan`: `new-export` added, `nightly` changed (02:00 →
/// 02:30 Berlin, crossing the March 2026 DST change), `gone` removed, `legal` broken (bad cron),
/// `steady` and `autumn` (inside the October repeated hour) unchanged.
pub fn scenario() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("restorectl.yaml"), PLAN_CONFIG).unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    write(
        dir.path(),
        "nightly.yaml",
        &export_job("nightly", Some("0 2 * * *")),
    );
    write(dir.path(), "gone.yaml", &export_job("gone", None));
    write(
        dir.path(),
        "legal.yaml",
        &export_job("legal", Some("0 4 * * SUN")),
    );
    write(dir.path(), "steady.yaml", &export_job("steady", None));
    // Fires once a year, on the day the clocks go back, inside the repeated hour.
    write(
        dir.path(),
        "autumn.yaml",
        &export_job("autumn", Some("30 2 25 10 *")),
    );
    apply(dir.path());

    write(dir.path(), "new.yaml", &export_job("new-export", None));
    write(
        dir.path(),
        "nightly.yaml",
        &export_job("nightly", Some("30 2 * * *")),
    );
    std::fs::remove_file(dir.path().join("jobs/gone.yaml")).unwrap();
    write(
        dir.path(),
        "legal.yaml",
        &export_job("legal", Some("0 25 * * SUN")),
    );
    dir
}
