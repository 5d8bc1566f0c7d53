//! The engine under injected faults: retries by error class, lost restore sessions, a lost
//! restore answer (reconciled, or `in_doubt` → `needs_attention` → each operator decision),
//! cancellation, the run timeout, and the per-server limit on open sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::exec_support::*;
use restorectl::exec::{Engine, EngineOptions};
use restorectl::schedule::ManualClock;
use restorectl::sim::{
    CallRange, Endpoint, ExtraMailbox, FaultAction, FaultRule, SessionIdMode, SimConfig,
};
use restorectl::store::{Decision, ErrorClass, RunState, SessionState, StepState};
use tokio_util::sync::CancellationToken;

fn sim() -> SimConfig {
    SimConfig {
        restore_delay: Duration::from_millis(300),
        export_build_delay: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

fn restore_job(name: &str, mailbox: &str, extra: &str) -> String {
    job_yaml(
        "Restore",
        name,
        &format!("  mailboxes: [{mailbox}]\n  archives: exclude\n{extra}  restore:\n{USER_CREDS}"),
    )
}

fn error(status: u16, code: &str) -> FaultAction {
    FaultAction::Error {
        status,
        error_code: Some(code.into()),
        message: Some(format!("injected {code}")),
    }
}

const RESTORE: &str =
    "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restore";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_offline_twice_then_success_takes_three_attempts_with_growing_delays() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, error(500, "ProxyOffline"))
                .calls(CallRange::between(1, 2)),
        )
        .unwrap();
    w.job(
        "r",
        &restore_job("r", "alice@contoso.com", "  retry: { maxAttempts: 5 }\n"),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.attempts, 3);
    assert_eq!(step.state, StepState::Done);
    // Three POSTs reached the server; two were refused before executing anything.
    assert_eq!(w.calls("POST", RESTORE).len(), 3);
    assert_eq!(w.sim.restore_calls(w.mailbox_id("alice@contoso.com")), 1);
    let attempt_times: Vec<_> = w
        .store
        .list_run_events(out.run)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.data
                .as_ref()
                .is_some_and(|d| d.get("step_attempt").is_some())
        })
        .map(|e| e.at)
        .collect();
    assert_eq!(attempt_times.len(), 3);
    assert!(
        attempt_times.windows(2).all(|p| p[0] < p[1]),
        "attempt times must increase: {attempt_times:?}"
    );
    w.assert_all_sessions_stopped();
}

/// Found by the chaos suite: a 5xx on the mailbox listing (before any step exists) failed the
/// whole run at once, although SPEC §5 makes 5xx retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_while_listing_the_mailboxes_is_retried_before_the_steps_exist() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::Mailboxes, FaultAction::Status { status: 502 })
                .calls(CallRange::between(1, 2)),
        )
        .unwrap();
    w.job(
        "r",
        &restore_job(
            "r",
            "alice@contoso.com",
            "  retry: { maxAttempts: 5, initialBackoff: 100ms, maxBackoff: 200ms }\n",
        ),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let listings = w.calls(
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes",
    );
    assert_eq!(listings.len(), 3, "two refused listings, then one answered");
    assert_eq!(w.sim.restore_calls(w.mailbox_id("alice@contoso.com")), 1);
    w.assert_all_sessions_stopped();
}

/// A 429 on page 3 of the mailbox list: after the server's `Retry-After` only that page is asked
/// for again; the two pages already read are kept, not listed again from offset 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_page_of_the_mailbox_list_is_retried_alone_after_retry_after() {
    let w = World::start_with(
        sim(),
        Setup {
            extra: "pageSize: 5\n".into(),
            ..Setup::default()
        },
    )
    .await;
    w.sim
        .add_fault(
            FaultRule::on(
                Endpoint::Mailboxes,
                FaultAction::TooManyRequests {
                    retry_after_seconds: 1,
                },
            )
            .calls(CallRange::only(3)),
        )
        .unwrap();
    w.job(
        "r",
        &restore_job(
            "r",
            "alice@contoso.com",
            "  retry: { maxAttempts: 5, initialBackoff: 50ms, maxBackoff: 5s }\n",
        ),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let listings = w.calls("GET", MAILBOXES);
    let offsets: Vec<(String, Option<u16>)> = listings
        .iter()
        .map(|e| (e.query_param("offset").unwrap_or_default(), e.status))
        .collect();
    // The demo organisation has 36 mailboxes (archives included): 7 full pages and a short one.
    let mut want: Vec<(String, Option<u16>)> =
        (0..8).map(|p| ((p * 5).to_string(), Some(200))).collect();
    want.insert(2, ("10".into(), Some(429)));
    assert_eq!(offsets, want);
    // The job's backoff (50–100 ms here) is raised to the server's `Retry-After`.
    let waited = listings[3].time - listings[2].time;
    assert!(
        waited >= chrono::Duration::seconds(1),
        "retried after {waited:?}"
    );
    assert_eq!(w.sim.restore_calls(w.mailbox_id("alice@contoso.com")), 1);
    w.assert_all_sessions_stopped();
}

/// The free-space check needs the size of the mailbox's largest previous export; when the state
/// database cannot tell it, the attempt fails (retryable) before any export request instead of
/// downloading without the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_in_the_free_space_check_fails_the_step_retryable() {
    use sqlx::Connection;
    let w = World::start(sim()).await;
    w.job(
        "e",
        &job_yaml(
            "ExportPst",
            "e",
            "  mailboxes: [alice@contoso.com]\n  archives: exclude\n  retry: { maxAttempts: 2, initialBackoff: 50ms, maxBackoff: 100ms }\n  export:\n    path: \"{job}/{run}/{mailbox}.pst\"\n",
        ),
    );
    // Break the table the check reads, through a connection of the test's own.
    let mut conn = sqlx::sqlite::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(w.config.database_path()),
    )
    .await
    .unwrap();
    sqlx::query("DROP TABLE exports")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let out = w.run("e").await;
    assert_eq!(out.state, RunState::Failed, "{out:?}");
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.attempts, 2, "retried: {step:?}");
    assert_eq!(step.error_class, Some(ErrorClass::Retryable), "{step:?}");
    let msg = step.error_message.as_deref().unwrap_or_default();
    assert!(
        msg.contains("alice@contoso.com")
            && msg.contains("cannot check the free space before the download")
            && msg.contains("state database error"),
        "{msg}"
    );
    assert!(
        w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/exportToPst"))
            .is_empty(),
        "nothing was downloaded without the check"
    );
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_while_listing_the_mailboxes_fails_the_run_at_once() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(
                Endpoint::Mailboxes,
                error(400, "ParameterValidationFailure"),
            )
            .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job(
        "r",
        &restore_job(
            "r",
            "alice@contoso.com",
            "  retry: { maxAttempts: 5, initialBackoff: 100ms, maxBackoff: 200ms }\n",
        ),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Failed, "{out:?}");
    assert!(
        out.reason
            .as_deref()
            .is_some_and(|r| r.contains("cannot list the mailboxes")),
        "{out:?}"
    );
    let listings = w.calls(
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes",
    );
    assert_eq!(listings.len(), 1, "a permanent error is not retried");
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_validation_failure_fails_after_one_attempt() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(FaultRule::on(
            Endpoint::MailboxRestore,
            error(400, "ParameterValidationFailure"),
        ))
        .unwrap();
    w.job("r", &restore_job("r", "alice@contoso.com", ""));
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Failed);
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.attempts, 1);
    assert_eq!(step.state, StepState::Failed);
    assert_eq!(step.error_class, Some(ErrorClass::Permanent));
    assert_eq!(
        step.error_code.as_deref(),
        Some("ParameterValidationFailure")
    );
    assert_eq!(w.calls("POST", RESTORE).len(), 1);
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_reopened_and_the_run_succeeds() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::ExportPst, FaultAction::RemoveSession)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job(
        "e",
        &job_yaml(
            "ExportPst",
            "e",
            "  mailboxes: [heidi@contoso.com]\n  archives: exclude\n  export: { path: \"{job}/{run}/{mailbox}.pst\" }\n",
        ),
    );
    let out = w.run("e").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    assert_eq!(w.explores().len(), 2, "a second session was opened");
    let sessions = w.store.list_run_sessions(out.run).await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].state, SessionState::Lost);
    assert_eq!(sessions[1].state, SessionState::Stopped);
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.state, StepState::Done);
    assert_eq!(
        step.restore_session_id.as_deref(),
        Some(sessions[1].id.as_str())
    );
    w.assert_all_sessions_stopped();
}

async fn lost_answer_is_reconciled(mode: SessionIdMode, mirror: bool) {
    let w = World::start(SimConfig {
        session_id_mode: mode,
        mirror_restore_events: mirror,
        ..sim()
    })
    .await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, FaultAction::LoseResponse)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job("r", &restore_job("r", "bob@contoso.com", ""));
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.state, StepState::Done);
    assert_eq!(step.restore_posts, 1, "never re-sent");
    assert_eq!(w.sim.restore_calls(w.mailbox_id("bob@contoso.com")), 1);
    assert!(step.created_items.is_some() || mode == SessionIdMode::NewSession);
    let notes: Vec<String> = w
        .store
        .list_run_events(out.run)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        notes
            .iter()
            .any(|m| m.contains("reconciled: the restore POST was received")),
        "{notes:?}"
    );
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_proven_received_by_the_explore_session_events() {
    lost_answer_is_reconciled(SessionIdMode::ExploreSession, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_proven_received_by_a_new_operation_session() {
    lost_answer_is_reconciled(SessionIdMode::NewSession, false).await;
}

/// A lost answer whose trace cannot be read: `in_doubt`, the run `needs_attention`.
async fn in_doubt_world() -> (World, restorectl::store::RunId) {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, FaultAction::LoseResponse)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.sim
        .add_fault(FaultRule::on(
            Endpoint::SessionEvents,
            error(500, "Timeout"),
        ))
        .unwrap();
    w.sim
        .add_fault(FaultRule::on(
            Endpoint::RestoreSessions,
            error(500, "Timeout"),
        ))
        .unwrap();
    w.job("r", &restore_job("r", "carol@contoso.com", ""));
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::NeedsAttention, "{out:?}");
    assert!(
        out.reason
            .as_deref()
            .unwrap()
            .contains("restorectl resolve"),
        "{out:?}"
    );
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.state, StepState::InDoubt);
    assert_eq!(step.error_class, Some(ErrorClass::Ambiguous));
    assert_eq!(step.restore_posts, 1);
    w.assert_all_sessions_stopped();
    w.sim.clear_faults();
    (w, out.run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_then_resend_sends_exactly_one_more_post() {
    let (w, run) = in_doubt_world().await;
    let engine = w.engine();
    // Nothing is re-sent before the operator decides.
    assert!(
        engine
            .execute_run(run, &CancellationToken::new())
            .await
            .is_err()
    );
    assert_eq!(w.calls("POST", RESTORE).len(), 1);
    let resolution = engine
        .apply_resolution(run, Decision::Resend)
        .await
        .unwrap();
    assert_eq!(resolution.steps.len(), 1);
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let step = &w.steps(run).await[0];
    assert_eq!(step.state, StepState::Done);
    assert_eq!(step.restore_posts, 2);
    assert_eq!(w.calls("POST", RESTORE).len(), 2);
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_then_mark_done_succeeds_without_a_post() {
    let (w, run) = in_doubt_world().await;
    let engine = w.engine();
    engine
        .apply_resolution(run, Decision::MarkDone)
        .await
        .unwrap();
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    assert_eq!(w.steps(run).await[0].state, StepState::Done);
    assert_eq!(w.calls("POST", RESTORE).len(), 1);
    assert_eq!(
        w.explores().len(),
        1,
        "no session needed to apply the decision"
    );
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_then_mark_failed_fails_the_run() {
    let (w, run) = in_doubt_world().await;
    let engine = w.engine();
    engine
        .apply_resolution(run, Decision::MarkFailed)
        .await
        .unwrap();
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Failed, "{out:?}");
    assert_eq!(w.steps(run).await[0].state, StepState::Failed);
    assert_eq!(w.calls("POST", RESTORE).len(), 1);
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_run_and_its_session() {
    let w = World::start(SimConfig {
        restore_delay: Duration::from_secs(600),
        ..sim()
    })
    .await;
    w.job("r", &restore_job("r", "dave@contoso.com", ""));
    let run = w.queue("r").await;
    let engine = w.engine();
    let task = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.execute_run(run, &CancellationToken::new()).await })
    };
    let store = w.store.clone();
    eventually(Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let steps = store.list_steps(run).await.ok()?;
            (steps.first()?.state == StepState::Submitted).then_some(())
        }
    })
    .await;
    w.store
        .request_cancel(run, "test", chrono::Utc::now())
        .await
        .unwrap();
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.state, RunState::Cancelled, "{out:?}");
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_timeout_fails_the_run_with_reason_timeout() {
    let w = World::start(SimConfig {
        restore_delay: Duration::from_secs(600),
        ..sim()
    })
    .await;
    w.job(
        "r",
        &restore_job("r", "ivan@contoso.com", "  runTimeout: 2s\n"),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Failed);
    assert_eq!(out.reason.as_deref(), Some("timeout"));
    w.assert_all_sessions_stopped();
}

/// The run deadline is read on the engine's clock, not the system's: with a manual clock two
/// hours ahead a one-hour `runTimeout` has passed, however little real time went by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_deadline_follows_the_engines_clock() {
    let w = World::start(SimConfig {
        restore_delay: Duration::from_secs(600),
        ..sim()
    })
    .await;
    w.job(
        "r",
        &restore_job("r", "ivan@contoso.com", "  runTimeout: 1h\n"),
    );
    let run = w.queue("r").await;
    let clock = ManualClock::new(chrono::Utc::now());
    let engine = Engine::new(
        w.store.clone(),
        w.config.clone(),
        EngineOptions::from_config(&w.config, "test-engine").with_clock(Arc::new(clock.clone())),
    )
    .expect("engine");
    let task = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.execute_run(run, &CancellationToken::new()).await })
    };
    let store = w.store.clone();
    eventually(Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let steps = store.list_steps(run).await.ok()?;
            (steps.first()?.state == StepState::Submitted).then_some(())
        }
    })
    .await;
    let row = w.store.get_run(run).await.unwrap();
    let deadline = row
        .deadline_at
        .expect("a run with runTimeout has a deadline");
    clock.advance(Duration::from_secs(2 * 3600));
    let out = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the run stops once the clock passed its deadline")
        .unwrap()
        .unwrap();
    assert_eq!(out.state, RunState::Failed, "{out:?}");
    assert_eq!(out.reason.as_deref(), Some("timeout"));
    let row = w.store.get_run(run).await.unwrap();
    assert!(
        row.finished_at.is_some_and(|t| t >= deadline),
        "the finish is recorded on the engine's clock: {row:?}"
    );
    w.assert_all_sessions_stopped();
}

/// Each execution's lease renewer is a task of the engine that ends with the execution however
/// it ends: a finished run, a shutdown, an operator's cancel (gone when `execute_run` returns),
/// and the execution's future dropped mid-run (gone soon after, instead of renewing the lease of
/// a run nobody drives for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_renewer_ends_with_every_execution() {
    let quick = World::start(sim()).await;
    quick.job("r", &restore_job("r", "ivan@contoso.com", ""));
    let run = quick.queue("r").await;
    let engine = quick.engine();
    let out = engine
        .execute_run(run, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    assert_eq!(engine.background_tasks(), 0, "after a finished run");

    let w = World::start(SimConfig {
        restore_delay: Duration::from_secs(600),
        ..sim()
    })
    .await;
    w.job("r", &restore_job("r", "ivan@contoso.com", ""));
    let engine = w.engine();
    // Starts a run and waits until its restore is being followed (its renewer is running).
    let start = |shutdown: CancellationToken| {
        let (w, engine) = (&w, engine.clone());
        async move {
            let run = w.queue("r").await;
            let task = {
                let engine = engine.clone();
                tokio::spawn(async move { engine.execute_run(run, &shutdown).await })
            };
            let store = w.store.clone();
            eventually(Duration::from_secs(30), || {
                let store = store.clone();
                async move {
                    let steps = store.list_steps(run).await.ok()?;
                    (steps.first()?.state == StepState::Submitted).then_some(())
                }
            })
            .await;
            assert_eq!(engine.background_tasks(), 1, "the run's renewer is tracked");
            (run, task)
        }
    };

    let shutdown = CancellationToken::new();
    let (_, task) = start(shutdown.clone()).await;
    shutdown.cancel();
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.state, RunState::Running, "{out:?}");
    assert_eq!(engine.background_tasks(), 0, "after a shutdown");

    let (run, task) = start(CancellationToken::new()).await;
    w.store
        .request_cancel(run, "test", chrono::Utc::now())
        .await
        .unwrap();
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.state, RunState::Cancelled, "{out:?}");
    assert_eq!(engine.background_tasks(), 0, "after a cancel");

    let (_, task) = start(CancellationToken::new()).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    eventually(Duration::from_secs(30), || {
        let n = engine.background_tasks();
        async move { (n == 0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_runs_never_hold_more_than_two_sessions_of_a_server() {
    let w = World::start_with(
        sim(),
        Setup {
            max_sessions: 2,
            ..Setup::default()
        },
    )
    .await;
    w.job("r", &restore_job("r", "judy@contoso.com", ""));
    let engine = w.engine();
    let mut runs = Vec::new();
    for _ in 0..10 {
        runs.push(w.queue("r").await);
    }
    let tasks: Vec<_> = runs
        .iter()
        .map(|&run| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.execute_run(run, &CancellationToken::new()).await })
        })
        .collect();
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    }
    // Replay the journal in arrival order: +1 per explore, -1 per stop of an explore session.
    let mut journal = w.sim.journal();
    journal.sort_by_key(|e| e.seq);
    let explore_ids: std::collections::HashSet<String> = w
        .sim
        .sessions()
        .into_iter()
        .filter(|s| s.operation_of.is_none())
        .map(|s| s.id.to_string())
        .collect();
    let (mut open, mut max, mut explores) = (0i32, 0i32, 0);
    for e in &journal {
        if e.is("POST", "/v8/Organizations/{organizationId}/explore") {
            open += 1;
            explores += 1;
        } else if e.is("POST", "/v8/RestoreSessions/{restoreSessionId}/Stop")
            && e.param("restoreSessionId")
                .is_some_and(|id| explore_ids.contains(id))
        {
            open -= 1;
        }
        max = max.max(open);
    }
    assert_eq!(explores, 10);
    assert_eq!(open, 0);
    assert!(max <= 2, "at most 2 sessions open at once, saw {max}");
    assert_eq!(max, 2, "the two permits were used in parallel");
    w.assert_all_sessions_stopped();
}

/// A step that reports a lost session after another step already replaced it must not forget
/// the replacement: the first export call removes the session, the second (the other mailbox)
/// is held back until the first step has opened a new session, then finds the old one gone.
/// Every session opened ends stopped or lost, none is left `Working`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_report_of_a_lost_session_keeps_its_replacement() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::ExportPst, FaultAction::RemoveSession)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.sim
        .add_fault(
            FaultRule::on(
                Endpoint::ExportPst,
                FaultAction::Delay {
                    duration: Duration::from_millis(1500),
                },
            )
            .calls(CallRange::only(2)),
        )
        .unwrap();
    w.job(
        "e",
        &job_yaml(
            "ExportPst",
            "e",
            "  mailboxes: [heidi@contoso.com, ivan@contoso.com]\n  archives: exclude\n  export: { path: \"{job}/{run}/{mailbox}.pst\" }\n",
        ),
    );
    let out = w.run("e").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    w.assert_all_sessions_stopped();
    let sessions = w.store.list_run_sessions(out.run).await.unwrap();
    let states: Vec<SessionState> = sessions.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [SessionState::Lost, SessionState::Stopped],
        "one session lost, its one replacement stopped at the end"
    );
    assert_eq!(w.explores().len(), 2);
}

/// A run that finishes without publishing an export removes the export's `.partial` file and
/// records the download `failed`, saying what was discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_leaves_no_partial_file() {
    let w = World::start(sim()).await;
    // The first call breaks after 4 KiB (a durable partial file), the resume is refused for good.
    w.sim
        .add_fault(
            FaultRule::on(
                Endpoint::ExportPst,
                FaultAction::DropAfterBytes { bytes: 4096 },
            )
            .calls(CallRange::only(1)),
        )
        .unwrap();
    w.sim
        .add_fault(
            FaultRule::on(
                Endpoint::ExportPst,
                error(400, "ParameterValidationFailure"),
            )
            .calls(CallRange::only(2)),
        )
        .unwrap();
    w.job(
        "e",
        &job_yaml(
            "ExportPst",
            "e",
            "  mailboxes: [heidi@contoso.com]\n  archives: exclude\n  export: { path: \"{job}/{run}/{mailbox}.pst\" }\n",
        ),
    );
    let out = w.run("e").await;
    assert_eq!(out.state, RunState::Failed, "{out:?}");
    let step = &w.steps(out.run).await[0];
    let download = w.store.get_download(step.id).await.unwrap();
    assert_eq!(download.state, restorectl::store::DownloadState::Failed);
    assert!(download.bytes_durable > 0, "{download:?}");
    assert!(
        !download.partial_path.exists(),
        "{} left behind",
        download.partial_path.display()
    );
    let events = w.store.list_run_events(out.run).await.unwrap();
    assert!(
        events.iter().any(
            |e| e.kind == restorectl::store::EventKind::DownloadFailed.as_str()
                && e.message.contains("removed")
        ),
        "{events:#?}"
    );
    w.assert_all_sessions_stopped();
}

/// Tokens expired again right after the renewal (two 401s in a row on the restore POST): the
/// credentials are good, so the step retries later instead of failing as an auth error, and the
/// restore runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_twice_is_retried_and_the_restore_runs_once() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, FaultAction::ExpireTokens)
                .calls(CallRange::between(1, 2)),
        )
        .unwrap();
    w.job("r", &restore_job("r", "alice@contoso.com", ""));
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.attempts, 2, "{step:?}");
    // 401 and the resend's 401 (which expired the renewed token too), then the retry's 401 and
    // its resend, which runs the restore.
    assert_eq!(w.calls("POST", RESTORE).len(), 4);
    assert_eq!(w.sim.restore_calls(w.mailbox_id("alice@contoso.com")), 1);
    w.assert_all_sessions_stopped();
}

/// A lost answer, and the operation session that holds the only trace of the restore vanishes
/// while reconciliation reads it: absence of evidence is not proof, so the step goes `in_doubt`
/// instead of being sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_session_that_vanishes_during_reconciliation_leaves_the_step_in_doubt() {
    let w = World::start(SimConfig {
        session_id_mode: SessionIdMode::NewSession,
        mirror_restore_events: false,
        ..sim()
    })
    .await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, FaultAction::LoseResponse)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    // The first events read is of the operation session (listed since the POST): it is removed.
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::SessionEvents, FaultAction::RemoveSession)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job("r", &restore_job("r", "erin@contoso.com", ""));
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::NeedsAttention, "{out:?}");
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.state, StepState::InDoubt, "{step:?}");
    assert_eq!(step.restore_posts, 1, "never re-sent");
    assert_eq!(w.sim.restore_calls(w.mailbox_id("erin@contoso.com")), 1);
    w.assert_all_sessions_stopped();
}

/// The server opened a session but its answer to the explore request was lost: the run opens
/// another and succeeds, and the engine's sweep finds the orphan (a `Working` session of the
/// organisation created around the unanswered request, unknown to the store), records it with
/// the run and stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_explore_answer_was_lost_is_found_and_stopped() {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::OrganizationExplore, FaultAction::LoseResponse)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job("r", &restore_job("r", "frank@contoso.com", ""));
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    assert_eq!(w.explores().len(), 2, "the lost one and its replacement");
    let orphans: Vec<_> = w
        .sim
        .sessions()
        .into_iter()
        .filter(|s| s.state == "Working")
        .collect();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(w.store.list_session_intents(None).await.unwrap().len(), 1);
    // The intent is swept once the request cannot be answered any more (requestTimeout + grace).
    let engine = w.engine();
    eventually(Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { (engine.sweep_orphan_sessions().await == 1).then_some(()) }
    })
    .await;
    w.assert_all_sessions_stopped();
    assert!(w.store.list_session_intents(None).await.unwrap().is_empty());
    let recorded = w
        .store
        .get_session(&orphans[0].id.to_string())
        .await
        .unwrap();
    assert_eq!(recorded.run_id, Some(out.run));
    assert_eq!(recorded.state, SessionState::Stopped);
    // Nothing more to do.
    assert_eq!(engine.sweep_orphan_sessions().await, 0);
}

/// The orphan sweep must tell a lost explore session from a restore's operation session, which
/// is just as unknown to the store, of the same organisation and created in the same minute:
/// only the session without any operation is stopped; the running restore is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_sweep_leaves_a_running_restore_alone() {
    let w = World::start(SimConfig {
        session_id_mode: SessionIdMode::NewSession,
        mirror_restore_events: false,
        restore_delay: Duration::from_secs(600),
        ..sim()
    })
    .await;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::OrganizationExplore, FaultAction::LoseResponse)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job("r", &restore_job("r", "grace@contoso.com", ""));
    let run = w.queue("r").await;
    let engine = w.engine();
    let task = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.execute_run(run, &CancellationToken::new()).await })
    };
    let store = w.store.clone();
    let op = eventually(Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let step = store.list_steps(run).await.ok()?.into_iter().next()?;
            (step.state == StepState::Submitted).then_some(step.remote_operation_id?)
        }
    })
    .await;
    eventually(Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { (engine.sweep_orphan_sessions().await == 1).then_some(()) }
    })
    .await;
    let state_of = |id: &str| {
        w.sim
            .sessions()
            .into_iter()
            .find(|s| s.id.to_string() == id)
            .map(|s| s.state)
    };
    assert_eq!(
        state_of(&op).as_deref(),
        Some("Working"),
        "the restore runs on"
    );
    let lost: Vec<_> = w
        .sim
        .sessions()
        .into_iter()
        .filter(|s| s.operation_of.is_none() && s.state == "Stopped")
        .collect();
    assert_eq!(lost.len(), 1, "the orphaned explore session was stopped");
    w.store
        .request_cancel(run, "test over", chrono::Utc::now())
        .await
        .unwrap();
    task.await.unwrap().unwrap();
}

// -------------------------------------------------------------------------------------------
// At most once under every server answer (API.md §5): only a refusal before execution (400,
// 401, 403, 404, 409, 429) may be sent again without reconciliation.
// -------------------------------------------------------------------------------------------

/// One of the three restore kinds: its endpoint, journal template and a job over bob (and
/// carol for the bulk restore).
#[derive(Clone, Copy)]
enum Kind {
    Restore,
    RestoreTo,
    Bulk,
}

impl Kind {
    fn endpoint(self) -> Endpoint {
        match self {
            Kind::Restore => Endpoint::MailboxRestore,
            Kind::RestoreTo => Endpoint::MailboxRestoreTo,
            Kind::Bulk => Endpoint::BulkRestore,
        }
    }

    fn template(self) -> String {
        match self {
            Kind::Restore => RESTORE.to_string(),
            Kind::RestoreTo => format!("{MAILBOXES}/{{mailboxId}}/restoreTo"),
            Kind::Bulk => format!("{MAILBOXES}/restore"),
        }
    }

    fn job(self) -> String {
        let retry = "  retry: { maxAttempts: 3, initialBackoff: 200ms, maxBackoff: 400ms }\n";
        match self {
            Kind::Restore => restore_job("r", "bob@contoso.com", retry),
            Kind::RestoreTo => job_yaml(
                "RestoreTo",
                "r",
                &format!(
                    "  mailboxes: [bob@contoso.com]\n  archives: exclude\n{retry}  restoreTo:\n    mailbox: legal-review@contoso.com\n    folder: \"Restored/{{mailbox}}\"\n{USER_CREDS}"
                ),
            ),
            Kind::Bulk => job_yaml(
                "BulkRestore",
                "r",
                &format!(
                    "  mailboxes: [bob@contoso.com, carol@contoso.com]\n  archives: exclude\n{retry}  bulkRestore:\n    credentials:\n      office365: {{ userName: svc-backup@contoso.com, password: {{ secret: m365-pass }} }}\n"
                ),
            ),
        }
    }

    fn mailboxes(self) -> &'static [&'static str] {
        match self {
            Kind::Bulk => &["bob@contoso.com", "carol@contoso.com"],
            _ => &["bob@contoso.com"],
        }
    }
}

fn executed_then(status: u16, code: Option<&str>) -> FaultAction {
    FaultAction::ExecuteThenAnswer {
        status,
        error_code: code.map(str::to_string),
        message: Some("injected after executing".into()),
        body: None,
    }
}

/// The first restore POST of `kind` gets `first`; the run must end `succeeded` with
/// `posts` POSTs sent, every mailbox restored exactly once, and (`reconciled`) a reconciliation
/// note saying whether the POST was found received or not.
async fn first_answer(kind: Kind, first: FaultAction, posts: usize, reconciled: Option<&str>) {
    let w = World::start(sim()).await;
    w.sim
        .add_fault(FaultRule::on(kind.endpoint(), first).calls(CallRange::only(1)))
        .unwrap();
    w.job("r", &kind.job());
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.state, StepState::Done, "{step:?}");
    assert_eq!(w.calls("POST", &kind.template()).len(), posts, "POSTs sent");
    assert_eq!(step.restore_posts, posts as i64);
    for m in kind.mailboxes() {
        assert_eq!(w.sim.restore_calls(w.mailbox_id(m)), 1, "{m} restored once");
    }
    let notes: Vec<String> = w
        .store
        .list_run_events(out.run)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    match reconciled {
        Some(what) => assert!(
            notes.iter().any(|m| m.contains(what)),
            "expected a note containing {what:?}: {notes:?}"
        ),
        None => assert!(
            !notes.iter().any(|m| m.contains("reconciled")),
            "a refused POST is resent without reconciliation: {notes:?}"
        ),
    }
    w.assert_all_sessions_stopped();
}

const RECEIVED: Option<&str> = Some("reconciled: the restore POST was received");
const NOT_RECEIVED: Option<&str> = Some("it was not received and will be sent again");

macro_rules! at_most_once_cases {
    ($($name:ident: $kind:expr, $fault:expr, $posts:expr, $note:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            first_answer($kind, $fault, $posts, $note).await;
        }
    )*};
}

at_most_once_cases! {
    // (a) executed, then 500 without errorCode → one POST, found by reconciliation
    restore_executed_then_500_is_sent_once: Kind::Restore, executed_then(500, None), 1, RECEIVED;
    restore_to_executed_then_500_is_sent_once: Kind::RestoreTo, executed_then(500, None), 1, RECEIVED;
    bulk_executed_then_500_is_sent_once: Kind::Bulk, executed_then(500, None), 1, RECEIVED;
    // (b) executed, then 500 Timeout
    restore_executed_then_500_timeout_is_sent_once: Kind::Restore, executed_then(500, Some("Timeout")), 1, RECEIVED;
    restore_to_executed_then_500_timeout_is_sent_once: Kind::RestoreTo, executed_then(500, Some("Timeout")), 1, RECEIVED;
    bulk_executed_then_500_timeout_is_sent_once: Kind::Bulk, executed_then(500, Some("Timeout")), 1, RECEIVED;
    // (c) executed, then 503 / 504
    restore_executed_then_503_is_sent_once: Kind::Restore, executed_then(503, Some("ProxyOffline")), 1, RECEIVED;
    restore_to_executed_then_504_is_sent_once: Kind::RestoreTo, executed_then(504, None), 1, RECEIVED;
    bulk_executed_then_503_is_sent_once: Kind::Bulk, executed_then(503, None), 1, RECEIVED;
    restore_executed_then_504_timeout_is_sent_once: Kind::Restore, executed_then(504, Some("Timeout")), 1, RECEIVED;
    // an unreadable success answer of an executed restore
    restore_executed_then_garbled_200_is_sent_once: Kind::Restore, FaultAction::ExecuteThenAnswer { status: 200, error_code: None, message: None, body: Some("{\"sessionId\":".into()) }, 1, RECEIVED;
    // (d) not executed, 500 → after the grace, sent once more
    restore_refused_with_500_is_sent_again_after_the_grace: Kind::Restore, error(500, "HttpError"), 2, NOT_RECEIVED;
    restore_to_refused_with_500_is_sent_again_after_the_grace: Kind::RestoreTo, FaultAction::Status { status: 500 }, 2, NOT_RECEIVED;
    bulk_refused_with_500_is_sent_again_after_the_grace: Kind::Bulk, error(500, "Timeout"), 2, NOT_RECEIVED;
    // (e) 409 / 429 → resent after backoff, no reconciliation
    restore_409_is_resent_after_backoff: Kind::Restore, error(409, "OperationConflict"), 2, None;
    restore_to_429_is_resent_after_backoff: Kind::RestoreTo, FaultAction::TooManyRequests { retry_after_seconds: 1 }, 2, None;
    bulk_409_is_resent_after_backoff: Kind::Bulk, error(409, "OperationConflict"), 2, None;
    bulk_429_is_resent_after_backoff: Kind::Bulk, FaultAction::TooManyRequests { retry_after_seconds: 1 }, 2, None;
}

// -------------------------------------------------------------------------------------------
// Restore-completion matching never takes another mailbox's events for the step's.
// -------------------------------------------------------------------------------------------

fn with_shared_mailbox() -> SimConfig {
    SimConfig {
        session_id_mode: SessionIdMode::ExploreSession,
        extra_mailboxes: vec![ExtraMailbox {
            email: String::new(),
            name: "Room 101".into(),
            is_archive: false,
        }],
        ..sim()
    }
}

/// A mailbox without an address, whose restore POST gets a bare 502 (not executed), restored
/// beside alice in the same explore session: alice's events must not prove its restore. It is
/// found not received and sent again, and its completion is matched by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_without_address_is_not_matched_by_another_mailboxs_events() {
    let w = World::start(with_shared_mailbox()).await;
    let room = w
        .sim
        .mailbox("", false)
        .expect("the mailbox without address")
        .id;
    w.sim
        .add_fault(FaultRule {
            path: Some(format!("*/mailboxes/{room}/restore")),
            ..FaultRule::on(
                Endpoint::MailboxRestore,
                FaultAction::Status { status: 502 },
            )
            .calls(CallRange::only(1))
        })
        .unwrap();
    w.job(
        "r",
        &restore_job(
            "r",
            &format!("alice@contoso.com, {{ id: {room} }}"),
            "  retry: { maxAttempts: 3, initialBackoff: 200ms, maxBackoff: 400ms }\n",
        ),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    assert_eq!(w.sim.restore_calls(room), 1, "the room was restored");
    assert_eq!(w.sim.restore_calls(w.mailbox_id("alice@contoso.com")), 1);
    let steps = w.steps(out.run).await;
    let step = steps
        .iter()
        .find(|s| s.mailbox_id.as_deref() == Some(room.to_string().as_str()))
        .unwrap();
    assert_eq!(step.restore_posts, 2, "{step:?}");
    assert!(step.created_items.is_some(), "counts found by id: {step:?}");
    w.assert_all_sessions_stopped();
}

/// An archive shares its primary's address. Its restore POST gets a bare 502 (not executed)
/// while the primary's restore runs in the same explore session: the primary's event names the
/// shared address and proves nothing about the archive, and the statistics never name the
/// archive's id, so the step is refused as ambiguous (`in_doubt`), never taken as received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_is_not_matched_by_its_primarys_events() {
    let w = World::start(with_shared_mailbox()).await;
    let archive = w.sim.mailbox("alice@contoso.com", true).unwrap().id;
    w.sim
        .add_fault(FaultRule {
            path: Some(format!("*/mailboxes/{archive}/restore")),
            ..FaultRule::on(
                Endpoint::MailboxRestore,
                FaultAction::Status { status: 502 },
            )
            .calls(CallRange::only(1))
        })
        .unwrap();
    w.job(
        "r",
        &job_yaml(
            "Restore",
            "r",
            &format!(
                "  mailboxes: [alice@contoso.com]\n  archives: include\n  restore:\n{USER_CREDS}"
            ),
        ),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::NeedsAttention, "{out:?}");
    assert_eq!(w.sim.restore_calls(archive), 0);
    let steps = w.steps(out.run).await;
    let step = steps.iter().find(|s| s.is_archive).unwrap();
    assert_eq!(step.state, StepState::InDoubt, "{step:?}");
    let why = step.error_message.as_deref().unwrap_or("");
    assert!(
        why.contains("alice@contoso.com") && why.contains("archive"),
        "{why}"
    );
    let primary = steps.iter().find(|s| !s.is_archive).unwrap();
    assert_eq!(primary.state, StepState::Done);
    w.assert_all_sessions_stopped();
}

/// An archive whose restore ran but whose answer was lost is proven received by the statistics
/// entry with its id, and followed to its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_of_an_archive_restore_is_proven_by_its_id() {
    let w = World::start(with_shared_mailbox()).await;
    let archive = w.sim.mailbox("bob@contoso.com", true).unwrap().id;
    w.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, FaultAction::LoseResponse)
                .calls(CallRange::only(1)),
        )
        .unwrap();
    w.job(
        "r",
        &job_yaml(
            "Restore",
            "r",
            &format!("  mailboxes: [bob@contoso.com]\n  archives: only\n  restore:\n{USER_CREDS}"),
        ),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    assert_eq!(w.sim.restore_calls(archive), 1);
    let step = &w.steps(out.run).await[0];
    assert_eq!(step.restore_posts, 1);
    assert!(step.created_items.is_some(), "{step:?}");
    w.assert_all_sessions_stopped();
}
