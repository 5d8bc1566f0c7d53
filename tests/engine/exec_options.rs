//! The job options of issue 16 end to end against the in-process simulator: device-code
//! sign-in (the run parks with the code, `--continue` restores with it, refused codes are
//! requested again a bounded number of times), hybrid bulk credentials, RestoreTo without a
//! target mailbox and with a folder that is not a path, the explore options, an explicit
//! "no PST size limit", `recentItemRestorePeriod: 0`, and the sign-out. Every request the run
//! sends passes the simulator's check against the vendor schema (a body that does not would be
//! answered 400 and fail the run); the bodies are also checked here once more.

use crate::exec_support::*;
use restorectl::sim::{JournalEntry, SimConfig, schema};
use restorectl::store::{RunState, StepState};
use tokio_util::sync::CancellationToken;

const DEVICE_CODE: &str = "/v8/RestoreSessions/{restoreSessionId}/organization/restoreDeviceCode";

fn fast_sim() -> SimConfig {
    SimConfig {
        restore_delay: std::time::Duration::from_millis(300),
        export_build_delay: std::time::Duration::from_millis(50),
        ..SimConfig::default()
    }
}

/// The entry's body passes the vendor schema of its route (the simulator checked it already;
/// the journal holds it with secrets redacted, which keeps every type).
fn schema_ok(e: &JournalEntry) {
    let route = e.route.as_deref().expect("a vendor route");
    let body = e.body.clone().unwrap_or(serde_json::Value::Null);
    schema::validate_request(&e.method, route, &body)
        .unwrap_or_else(|v| panic!("{} {route}: {v}: {body}", e.method));
    assert!(
        e.status.is_some_and(|s| (200..300).contains(&s)),
        "{} {route} answered {:?}",
        e.method,
        e.status
    );
}

const DEVICE_CREDS: &str = "    credentials:\n      deviceCode:\n        applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10\n        region: Worldwide\n        organizationName: contoso.onmicrosoft.com\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_code_run_parks_with_the_code_and_restores_after_continue() {
    let w = World::start(fast_sim()).await;
    w.job(
        "dc",
        &job_yaml(
            "Restore",
            "dc",
            &format!(
                "  mailboxes: [alice@contoso.com, bob@contoso.com]\n  archives: exclude\n  restore:\n{DEVICE_CREDS}"
            ),
        ),
    );
    let run = w.queue("dc").await;
    let engine = w.engine();
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::NeedsAttention, "{out:?}");
    let reason = out.reason.clone().unwrap();
    assert!(
        reason.contains("https://microsoft.com/devicelogin")
            && reason.contains(&format!("restorectl resolve {run} --continue"))
            && reason.contains("before 20"),
        "{reason}"
    );
    // The code: asked once, in the run's session, with the job's options; nothing restored.
    let asked = w.calls("POST", DEVICE_CODE);
    assert_eq!(asked.len(), 1);
    schema_ok(&asked[0]);
    assert_eq!(
        asked[0].body.clone().unwrap(),
        serde_json::json!({"targetApplicationId": "3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10",
                           "targetRegion": "Worldwide", "targetOrganizationName": "contoso.onmicrosoft.com"})
    );
    assert!(
        w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restore"))
            .is_empty()
    );
    let events = w.store.list_run_events(run).await.unwrap();
    let requested = events
        .iter()
        .find(|e| e.kind == "device_code_requested")
        .expect("device_code_requested");
    let code = requested.data.as_ref().unwrap()["userCode"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains(&code), "{reason}");
    // The session the code belongs to stays open while the run waits.
    let session = asked[0].param("restoreSessionId").unwrap().to_string();
    assert_eq!(
        w.sim.session(session.parse().unwrap()).unwrap().state,
        "Working"
    );

    // The operator signs in and continues: the restores carry the code.
    assert!(w.sim.sign_in_device_code(&code));
    engine.apply_continue(run).await.unwrap();
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let posts = w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restore"));
    assert_eq!(posts.len(), 2);
    for p in &posts {
        schema_ok(p);
        assert_eq!(p.param("restoreSessionId"), Some(session.as_str()));
        let body = p.body.clone().unwrap();
        // The journal redacts it; the simulator checked the real one (signed in, this session).
        assert_eq!(
            body,
            serde_json::json!({"userCode": restorectl::sim::REDACTED})
        );
    }
    assert_eq!(w.calls("POST", DEVICE_CODE).len(), 1, "no second code");
    for s in w.steps(run).await {
        assert_eq!(s.state, StepState::Done, "{s:?}");
        assert_eq!(s.restore_posts, 1);
    }
    // A second continue is refused: the run no longer waits.
    assert!(engine.apply_continue(run).await.is_err());
    w.assert_all_sessions_stopped();

    // The daemon's stop signs out of the server.
    engine.logout_all(std::time::Duration::from_secs(5)).await;
    let logouts = w.calls("POST", "/v8/token/logout");
    assert_eq!(logouts.len(), 1);
    assert_eq!(logouts[0].status, Some(204));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_device_codes_are_requested_again_at_most_four_times_then_the_run_fails() {
    // Codes expire at once: signing in is impossible, every restore with one is refused.
    let w = World::start(SimConfig {
        device_code_lifetime: std::time::Duration::ZERO,
        ..fast_sim()
    })
    .await;
    w.job(
        "dc",
        &job_yaml(
            "BulkRestore",
            "dc",
            &format!(
                "  mailboxes: [alice@contoso.com, bob@contoso.com]\n  archives: exclude\n  bulkRestore:\n{}",
                DEVICE_CREDS.replace("applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10\n        ", "")
            ),
        ),
    );
    let run = w.queue("dc").await;
    let engine = w.engine();
    let mut parked = 0;
    let out = loop {
        let out = engine
            .execute_run(run, &CancellationToken::new())
            .await
            .unwrap();
        if out.state != RunState::NeedsAttention {
            break out;
        }
        parked += 1;
        let code = w
            .store
            .list_run_events(run)
            .await
            .unwrap()
            .iter()
            .rev()
            .find(|e| e.kind == "device_code_requested")
            .and_then(|e| e.data.as_ref()?["userCode"].as_str().map(str::to_string))
            .unwrap();
        assert!(
            !w.sim.sign_in_device_code(&code),
            "expired codes cannot be signed in"
        );
        engine.apply_continue(run).await.unwrap();
        assert!(parked <= 4, "parked more than four times");
    };
    assert_eq!(parked, 4);
    assert_eq!(out.state, RunState::Failed, "{out:?}");
    let reason = out.reason.unwrap();
    assert!(
        reason.contains("4 codes were requested") && reason.contains("expired"),
        "{reason}"
    );
    assert_eq!(w.calls("POST", DEVICE_CODE).len(), 4);
    // Each refused POST was answered 400 before anything ran; none restored anything.
    let posts = w.calls("POST", &format!("{MAILBOXES}/restore"));
    assert_eq!(posts.len(), 4);
    assert!(posts.iter().all(|p| p.status == Some(400)), "{posts:?}");
    for email in ["alice@contoso.com", "bob@contoso.com"] {
        assert_eq!(w.sim.restore_calls(w.mailbox_id(email)), 0);
    }
    let steps = w.steps(run).await;
    assert_eq!(steps[0].state, StepState::Failed);
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_bulk_credentials_and_a_zero_recent_item_period_reach_the_request() {
    let w = World::start(fast_sim()).await;
    w.job(
        "hy",
        &job_yaml(
            "BulkRestore",
            "hy",
            "  mailboxes: [alice@contoso.com]\n  archives: exclude\n  bulkRestore:\n    recentItemRestorePeriod: 0\n    credentials:\n      office365: { userName: svc-backup@contoso.com, password: { secret: m365-pass } }\n      onPremises: { domainName: CONTOSO, userName: exadmin, password: { secret: app-cert-pass } }\n",
        ),
    );
    let out = w.run("hy").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let posts = w.calls("POST", &format!("{MAILBOXES}/restore"));
    assert_eq!(posts.len(), 1);
    schema_ok(&posts[0]);
    let body = posts[0].body.clone().unwrap();
    assert_eq!(body["recentItemRestorePeriod"], 0);
    assert_eq!(body["office365UserName"], "svc-backup@contoso.com");
    assert_eq!(body["office365UserPassword"], restorectl::sim::REDACTED);
    assert_eq!(body["domainName"], "CONTOSO");
    assert_eq!(body["onPremisesUserName"], "exadmin");
    assert_eq!(body["onPremisesUserPassword"], restorectl::sim::REDACTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_without_a_mailbox_sends_the_folder_as_written() {
    let w = World::start(fast_sim()).await;
    w.job(
        "rt",
        &job_yaml(
            "RestoreTo",
            "rt",
            &format!(
                "  mailboxes: [carol@contoso.com]\n  archives: exclude\n  restoreTo:\n    folder: '\\Restored\\..\\{{mailbox}} {{2024}} {{{{job}}}}'\n    officeOrganizationName: fabrikam.onmicrosoft.com\n{APP_CREDS}"
            ),
        ),
    );
    let out = w.run("rt").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let posts = w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restoreTo"));
    assert_eq!(posts.len(), 1);
    schema_ok(&posts[0]);
    let body = posts[0].body.clone().unwrap();
    assert!(body.get("mailbox").is_none(), "{body}");
    assert_eq!(
        body["folder"],
        "\\Restored\\..\\carol@contoso.com {2024} {job}"
    );
    assert_eq!(body["officeOrganizationName"], "fabrikam.onmicrosoft.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_options_reach_the_organization_and_the_job_explore() {
    let w = World::start(fast_sim()).await;
    let repo = w.sim.repository_id();
    let org = w.sim.organizations()[0].0;
    let job = w.sim.job_id(org).unwrap();
    w.job(
        "ex",
        &job_yaml(
            "ExportPst",
            "ex",
            &format!(
                "  mailboxes: [alice@contoso.com]\n  archives: exclude\n  explore: {{ showDeleted: true, showAllVersions: true, repositoryId: {repo} }}\n  export:\n    enablePstSizeLimit: false\n    path: \"{{job}}/{{mailbox}}.pst\"\n"
            ),
        ),
    );
    let out = w.run("ex").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let explores = w.explores();
    assert_eq!(explores.len(), 1);
    schema_ok(&explores[0]);
    assert_eq!(
        explores[0].body.clone().unwrap(),
        serde_json::json!({"type": "Vex", "showDeleted": true, "showAllVersions": true, "repositoryId": repo})
    );
    let exports = w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/exportToPst"));
    assert!(!exports.is_empty());
    for e in &exports {
        schema_ok(e);
        assert_eq!(
            e.body.clone().unwrap(),
            serde_json::json!({"enablePstSizeLimit": false})
        );
    }

    // From the backup job: the job's explore, which takes no repositoryId.
    w.job(
        "js",
        &job_yaml(
            "Search",
            "js",
            &format!(
                "  explore: {{ showDeleted: true, backupJob: {job} }}\n  search:\n    query: 'subject:budget'\n    report: {{ path: \"{{job}}/{{run}}.jsonl\" }}\n"
            ),
        ),
    );
    let out = w.run("js").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let job_explores = w.calls("POST", "/v8/Jobs/{jobId}/explore");
    assert_eq!(job_explores.len(), 1);
    schema_ok(&job_explores[0]);
    assert_eq!(
        job_explores[0].param("jobId"),
        Some(job.to_string().as_str())
    );
    assert_eq!(
        job_explores[0].body.clone().unwrap(),
        serde_json::json!({"type": "Vex", "showDeleted": true, "showAllVersions": false})
    );
    assert_eq!(
        w.explores().len(),
        1,
        "no organisation explore for the job's run"
    );

    // A repository the server does not have fails the run with the server's word.
    w.job(
        "bad",
        &job_yaml(
            "Search",
            "bad",
            "  explore: { repositoryId: 00000000-0000-4000-8000-000000000001 }\n  search:\n    query: x\n    report: { path: \"{job}/{run}.jsonl\" }\n",
        ),
    );
    let out = w.run("bad").await;
    assert_eq!(out.state, RunState::Failed, "{out:?}");
    w.assert_all_sessions_stopped();
}

/// `restorectl CMD…` against the world's config.
fn cli(w: &World, args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("restorectl")
        .unwrap()
        .env_remove("RESTORECTL_CONFIG")
        .env_remove("RESTORECTL_NOW")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(w.config_path())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_the_code_in_show_and_runs_and_continues_with_resolve() {
    use restorectl::daemon::executor::RunExecutor;
    use restorectl::daemon::reconcile::JobTable;
    use restorectl::daemon::requests::RequestConsumer;
    use std::sync::Arc;

    let w = World::start(fast_sim()).await;
    w.job(
        "mfa",
        &job_yaml(
            "RestoreTo",
            "mfa",
            &format!(
                "  mailboxes: [frank@contoso.com]\n  archives: exclude\n  restoreTo:\n    mailbox: legal-review@contoso.com\n{DEVICE_CREDS}"
            ),
        ),
    );
    let run = w.queue("mfa").await;
    let engine = w.engine();
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::NeedsAttention, "{out:?}");
    let code = w
        .store
        .list_run_events(run)
        .await
        .unwrap()
        .iter()
        .find(|e| e.kind == "device_code_requested")
        .and_then(|e| e.data.as_ref()?["userCode"].as_str().map(str::to_string))
        .unwrap();
    let id = run.to_string();

    // `show`, `runs` and their JSON name the URL, the code and what to do.
    let show = cli(&w, &["show", &id]);
    assert!(show.status.success());
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains(&code) && text.contains("https://microsoft.com/devicelogin"),
        "{text}"
    );
    let show = cli(&w, &["show", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let reason = v["run"]["reason"]
        .as_str()
        .or_else(|| v["reason"].as_str())
        .unwrap_or_else(|| panic!("no reason in {v}"));
    assert!(
        reason.contains(&code) && reason.contains("--continue"),
        "{reason}"
    );
    let runs = cli(&w, &["runs", "--json"]);
    assert!(
        String::from_utf8_lossy(&runs.stdout).contains(&code),
        "{}",
        String::from_utf8_lossy(&runs.stdout)
    );
    let runs = cli(&w, &["runs"]);
    let table = String::from_utf8_lossy(&runs.stdout);
    assert!(
        table.contains("needs_attention") && table.contains(&code),
        "{table}"
    );

    // `--resend` has nothing to decide; `--continue` records a resolve request without one.
    let resend = cli(&w, &["resolve", &id, "--resend"]);
    assert_eq!(resend.status.code(), Some(1));
    let cont = cli(&w, &["resolve", &id, "--continue"]);
    assert!(
        cont.status.success(),
        "{}",
        String::from_utf8_lossy(&cont.stderr)
    );
    let pending = w.store.list_pending_requests().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].run_id, Some(run));
    assert_eq!(pending[0].decision, None);

    // The daemon's consumer continues the run; the operator had signed in meanwhile.
    assert!(w.sim.sign_in_device_code(&code));
    let executor: Arc<dyn RunExecutor> = Arc::new(engine.clone());
    let consumer = RequestConsumer::new(
        w.store.clone(),
        Arc::new(restorectl::schedule::SystemClock),
        Some(executor),
    );
    let report = consumer
        .consume_pending(&JobTable::default())
        .await
        .unwrap();
    assert_eq!(report.consumed, 1);
    assert_eq!(w.store.get_run(run).await.unwrap().state, RunState::Queued);
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let posts = w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restoreTo"));
    assert_eq!(posts.len(), 1);
    schema_ok(&posts[0]);
    // Once done, `--continue` is refused.
    let again = cli(&w, &["resolve", &id, "--continue"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("does not wait"));
}
