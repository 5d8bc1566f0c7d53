//! The operator commands through the real binary against a real state database in a temporary
//! directory: `jobs`, `runs`, `show`, `run`, `cancel`, `resolve`, `completions`, `man` — their
//! JSON parsed back, their exit codes (0/1/2/78), plain output without ANSI escapes and aligned
//! tables, and the request rows `run`/`cancel`/`resolve` write for the daemon.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::ops::{Fixture, cmd_in};
use predicates::prelude::*;
use restorectl::store::{Decision, RequestKind, RunState, StepState};
use serde_json::Value;

fn json_of(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Every data line of a table has its cells where the header puts the column: a left-aligned
/// cell starts where its title starts, a right-aligned one (numbers) ends where its title ends.
fn assert_aligned(lines: &[&str]) {
    let header: Vec<char> = lines[0].chars().collect();
    let starts: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != ' ' && (i == 0 || (i >= 2 && header[i - 2..i] == [' ', ' '])))
        .collect();
    assert!(starts.len() >= 3, "header {:?}", lines[0]);
    for line in &lines[1..] {
        let chars: Vec<char> = line.chars().collect();
        for (n, &s) in starts.iter().enumerate().skip(1) {
            let end = starts.get(n + 1).map(|next| next - 2);
            let left =
                s <= chars.len() && chars[s - 2..s] == [' ', ' '] && chars.get(s) != Some(&' ');
            let right = end.is_some_and(|e| {
                e <= chars.len() && chars[e - 1] != ' ' && chars.get(e).is_none_or(|c| *c == ' ')
            });
            assert!(
                left || right,
                "column {n} not aligned in {line:?} (header {:?})",
                lines[0]
            );
        }
    }
}

#[test]
fn jobs_json_has_the_documented_fields() {
    let f = Fixture::with_history();
    let v = json_of(&f.cmd(&["jobs", "--json"]).output().unwrap());
    assert_eq!(v["version"], 1);
    let jobs = v["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broken", "legal-hold", "offboarding"]);
    let legal = &jobs[1];
    assert_eq!(legal["kind"], "ExportPst");
    assert_eq!(legal["state"], "active");
    assert_eq!(legal["schedule"]["cron"], "0 2 * * SUN");
    assert_eq!(legal["schedule"]["timezone"], "Europe/Berlin");
    assert_eq!(legal["suspend"], false);
    assert_eq!(legal["nextFireAt"], "2026-03-08T01:00:00.000Z");
    assert_eq!(legal["lastRun"]["trigger"], "manual");
    assert_eq!(legal["lastRun"]["state"], "queued");
    assert!(legal["activeVersion"]["id"].is_i64());
    assert!(legal["file"].as_str().unwrap().ends_with("legal-hold.yaml"));
    let offboarding = &jobs[2];
    assert_eq!(offboarding["schedule"], Value::Null);
    assert_eq!(offboarding["lastRun"]["state"], "needs_attention");
    let broken = &jobs[0];
    assert_eq!(broken["state"], "invalid");
    assert_eq!(broken["activeVersion"], Value::Null);
    assert_eq!(broken["errors"][0]["code"], "bad-cron");
    let files = v["invalidFiles"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0]["path"].as_str().unwrap().ends_with("broken.yaml"));
    assert_eq!(files[0]["jobNames"][0], "broken");
}

#[test]
fn jobs_table_is_aligned_plain_and_lists_problems() {
    let f = Fixture::with_history();
    for no_color in [false, true] {
        let mut cmd = f.cmd(&["jobs"]);
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let text = stdout(&out);
        assert!(!text.contains('\x1b'), "ANSI escape in {text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert_aligned(&lines[..4]);
        assert!(text.contains("0 2 * * SUN Europe/Berlin"));
        assert!(text.contains("2026-03-08 02:00 CET (+01:00)"), "{text}");
        assert!(text.contains("one-shot"));
        assert!(text.contains("Problems:"));
        assert!(text.contains("broken.yaml:7:11: error[bad-cron]"), "{text}");
    }
}

#[test]
fn runs_json_filters_and_orders_newest_first() {
    let f = Fixture::with_history();
    let v = json_of(&f.cmd(&["runs", "--json"]).output().unwrap());
    let runs = v["runs"].as_array().unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            f.queued.to_string(),
            f.in_doubt.to_string(),
            f.succeeded.to_string()
        ]
    );
    let ok = &runs[2];
    assert_eq!(ok["job"], "legal-hold");
    assert_eq!(ok["trigger"], "schedule");
    assert_eq!(ok["state"], "succeeded");
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["steps"]["total"], 2);
    assert_eq!(ok["steps"]["byState"]["done"], 2);
    assert_eq!(ok["scheduledFor"], "2026-03-01T02:00:00.000Z");
    assert_eq!(ok["startedAt"], "2026-03-01T02:00:01.000Z");
    assert_eq!(ok["finishedAt"], "2026-03-01T02:00:11.000Z");
    assert_eq!(ok["cancelRequested"], false);

    let v = json_of(&f.cmd(&["runs", "legal-hold", "--json"]).output().unwrap());
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    let v = json_of(
        &f.cmd(&["runs", "--state", "needs_attention", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["runs"][0]["id"], f.in_doubt.to_string());
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    let v = json_of(&f.cmd(&["runs", "--limit", "1", "--json"]).output().unwrap());
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);

    f.cmd(&["runs", "--state", "exploded"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown run state `exploded`"));
}

#[test]
fn runs_table_fits_columns_and_never_cuts_run_ids() {
    let f = Fixture::with_history();
    let out = f.cmd(&["runs"]).env("COLUMNS", "100").output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(!text.contains('\x1b'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_aligned(&lines);
    for line in &lines {
        assert!(line.chars().count() <= 100, "{line:?} wider than 100");
    }
    assert!(text.contains(&f.succeeded.to_string()));
    assert!(
        text.contains('…'),
        "nothing truncated at 100 columns: {text}"
    );
    // A pipe without COLUMNS gets full values.
    let text = stdout(&f.cmd(&["runs"]).output().unwrap());
    assert!(!text.contains('…'), "{text}");
    assert!(text.contains("1 step in_doubt"));
    assert!(text.contains("2/2 done"));
}

#[test]
fn show_json_lists_steps_files_sessions_and_events() {
    let f = Fixture::with_history();
    let id = f.succeeded.to_string();
    let v = json_of(&f.cmd(&["show", &id, "--json"]).output().unwrap());
    assert_eq!(v["version"], 1);
    assert_eq!(v["run"]["id"], id);
    assert_eq!(v["run"]["state"], "succeeded");
    assert_eq!(v["jobKind"], "ExportPst");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let bob = &steps[1];
    assert_eq!(bob["seq"], 1);
    assert_eq!(bob["mailbox"]["email"], "bob@contoso.com");
    assert_eq!(bob["mailbox"]["name"], "Bob Brown");
    assert_eq!(bob["mailbox"]["isArchive"], false);
    assert_eq!(bob["state"], "done");
    assert_eq!(bob["attempts"], 1);
    assert_eq!(bob["restorePosts"], 0);
    assert_eq!(
        bob["restoreSessionId"],
        "5b0d2c8e-1111-4a4a-9c9c-000000000001"
    );
    assert_eq!(bob["file"]["bytes"], 2 * 1_048_576 + 17);
    assert_eq!(bob["file"]["format"], "pst");
    assert_eq!(bob["file"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(bob["download"]["state"], "published");
    assert_eq!(bob["download"]["resumedFrom"][0], (2 * 1_048_576 + 17) / 2);
    assert_eq!(bob["error"], Value::Null);
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions[0]["state"], "stopped");
    assert_eq!(sessions[0]["server"], "primary");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert!(
        files[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("alice@contoso.com.pst")
    );
    assert_eq!(files[0]["deletedAt"], Value::Null);
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "run_queued",
        "run_started",
        "session_opened",
        "download_resumed",
        "download_published",
        "run_finished",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    // The in_doubt run: counts, remote operation id, the error and its class.
    let v = json_of(
        &f.cmd(&["show", &f.in_doubt.to_string(), "--json"])
            .output()
            .unwrap(),
    );
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["remoteOperationId"], "op-7f3e-0001");
    assert_eq!(steps[0]["counts"]["created"], 120);
    assert_eq!(steps[0]["counts"]["merged"], 3);
    assert_eq!(steps[0]["counts"]["found"], Value::Null);
    assert_eq!(steps[1]["state"], "in_doubt");
    assert_eq!(steps[1]["restorePosts"], 1);
    assert_eq!(steps[1]["error"]["class"], "ambiguous");
    assert_eq!(steps[1]["operatorDecision"], Value::Null);
}

#[test]
fn show_text_has_checksums_errors_and_the_resolve_hint() {
    let f = Fixture::with_history();
    let text = stdout(&f.cmd(&["show", &f.succeeded.to_string()]).output().unwrap());
    assert!(!text.contains('\x1b'));
    assert!(text.contains(&format!("{:064x}  ", 0xabc0)), "{text}");
    assert!(text.contains("alice@contoso.com"));
    assert!(text.contains("2.0 MiB"), "{text}");
    let step_lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Steps"))
        .skip(1)
        .take(3)
        .collect();
    assert!(
        step_lines[0].trim_start().starts_with('#'),
        "{step_lines:?}"
    );
    assert_aligned(&step_lines);

    let id = f.in_doubt.to_string();
    // A unique prefix is enough.
    let text = stdout(&f.cmd(&["show", &id[..13]]).output().unwrap());
    assert!(text.contains("in_doubt"));
    assert!(text.contains("[ambiguous]"), "{text}");
    assert!(text.contains(&format!("restorectl resolve {id}")));
    assert!(text.contains("120 created, 3 merged, 0 failed, 1 skipped"));
}

#[test]
fn show_refuses_unknown_and_malformed_ids() {
    let f = Fixture::with_history();
    f.cmd(&["show", "0190aaaa-0000-7000-8000-000000000000"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no run 0190aaaa-0000-7000-8000-000000000000",
        ));
    f.cmd(&["show", "xyz"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a run id"));
    f.cmd(&["show"]).assert().code(2);
}

#[test]
fn read_commands_without_a_database_explain_and_fail() {
    let dir = Fixture::empty();
    for args in [
        &["jobs"][..],
        &["runs"],
        &["show", "0190aaaa-0000-7000-8000-000000000000"],
    ] {
        cmd_in(dir.path(), args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "no state database: the daemon has not run yet",
            ));
    }
    assert!(
        !dir.path().join("state/restorectl.db").exists(),
        "a read created the database"
    );
    cmd_in(dir.path(), &["run", "nightly"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no state database"));
    assert!(
        !dir.path().join("state/restorectl.db").exists(),
        "run created the database"
    );
}

#[test]
fn config_errors_exit_78() {
    let dir = Fixture::empty();
    let mut cmd = assert_cmd::Command::cargo_bin("restorectl").unwrap();
    cmd.args(["--config", "/nonexistent/restorectl.yaml", "jobs"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("cannot read config"));
    std::fs::write(
        dir.path().join("restorectl.yaml"),
        "stateDir: state\nstaetDir: x\n",
    )
    .unwrap();
    cmd_in(dir.path(), &["runs"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("staetDir"));
    // The config can also come from the environment.
    let mut cmd = assert_cmd::Command::cargo_bin("restorectl").unwrap();
    cmd.env("RESTORECTL_CONFIG", dir.path().join("restorectl.yaml"))
        .arg("jobs")
        .assert()
        .code(78);
}

#[test]
fn run_writes_a_request_and_refuses_unknown_jobs() {
    let f = Fixture::with_history();
    f.cmd(&["run", "legal-hold"])
        .env("RESTORECTL_NOW", "2026-03-02T10:00:00Z")
        .env("USER", "auditor")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "requested a manual run of job legal-hold",
        ))
        .stderr(predicate::str::contains("no running daemon"));
    let (rt, store) = f.store();
    let pending = rt.block_on(store.list_pending_requests()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, RequestKind::Run);
    assert_eq!(pending[0].job_name.as_deref(), Some("legal-hold"));
    assert_eq!(pending[0].requested_by.as_deref(), Some("auditor"));
    assert_eq!(
        pending[0].created_at.to_rfc3339(),
        "2026-03-02T10:00:00+00:00"
    );

    f.cmd(&["run", "nightly"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unknown job `nightly`"))
        .stderr(predicate::str::contains(
            "known jobs: broken, legal-hold, offboarding",
        ));
    f.cmd(&["run", "broken"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no valid version"));
    assert_eq!(rt.block_on(store.list_pending_requests()).unwrap().len(), 1);
    f.cmd(&["run"]).assert().code(2);
    f.cmd(&["run", "legal-hold", "--timeout", "1s"])
        .assert()
        .code(2);
}

/// Acts as the daemon for one `run --wait`: waits (without a time assertion; the bound only
/// prevents a hung test) for the request, consumes it with a new run and drives the run to
/// `final_state`. Returns the command's exit code and output.
fn run_wait_against(final_state: Option<RunState>) -> (Option<i32>, String, String) {
    let f = Fixture::with_history();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("restorectl"))
        .args(["--config"])
        .arg(f.config())
        .args(["run", "offboarding", "--wait"])
        .env_remove("RESTORECTL_NOW")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (rt, store) = f.store();
    let bound = Instant::now() + Duration::from_secs(120);
    let request = loop {
        let pending = rt.block_on(store.list_pending_requests()).unwrap();
        if let Some(r) = pending.into_iter().next() {
            break r;
        }
        assert!(Instant::now() < bound, "run --wait never wrote its request");
        std::thread::sleep(Duration::from_millis(50));
    };
    let now = chrono::Utc::now();
    match final_state {
        None => {
            rt.block_on(store.consume_request(
                request.id,
                "refused: job is suspended for test",
                None,
                now,
            ))
            .unwrap();
        }
        Some(state) => {
            let job = rt.block_on(store.get_job("offboarding")).unwrap();
            let run = rt
                .block_on(store.enqueue_run(
                    &restorectl::store::NewRun {
                        job_name: "offboarding",
                        job_version_id: job.active_version_id.unwrap(),
                        spec_hash: "manual",
                        trigger: restorectl::store::Trigger::Manual,
                        scheduled_for: now,
                        state: RunState::Queued,
                        reason: None,
                        timeout: None,
                    },
                    now,
                ))
                .unwrap()
                .unwrap();
            rt.block_on(store.consume_request(
                request.id,
                "queued a manual run",
                Some(run.id),
                now,
            ))
            .unwrap();
            rt.block_on(store.claim_run(run.id, "test-daemon", Duration::from_secs(60), now))
                .unwrap();
            rt.block_on(store.set_run_state(run.id, state, Some("test outcome"), now))
                .unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_wait_exits_0_on_success() {
    let (code, out, _) = run_wait_against(Some(RunState::Succeeded));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("queued a manual run"), "{out}");
    assert!(out.contains("finished: succeeded"), "{out}");
    let (code, out, _) = run_wait_against(Some(RunState::SucceededWithWarnings));
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn run_wait_exits_1_on_failure_attention_or_refusal() {
    for state in [
        RunState::Failed,
        RunState::NeedsAttention,
        RunState::Cancelled,
    ] {
        let (code, out, _) = run_wait_against(Some(state));
        assert_eq!(code, Some(1), "{state}: {out}");
        assert!(
            out.contains(&format!("finished: {state} (test outcome)")),
            "{out}"
        );
    }
    let (code, _, err) = run_wait_against(None);
    assert_eq!(code, Some(1));
    assert!(err.contains("the daemon refused request"), "{err}");
    assert!(err.contains("job is suspended for test"), "{err}");
}

#[test]
fn run_wait_times_out_with_a_hint_when_no_daemon_consumes() {
    let f = Fixture::with_history();
    f.cmd(&["run", "legal-hold", "--wait", "--timeout", "1s"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no running daemon uses"))
        .stderr(predicate::str::contains("gave up waiting after 1s"));
}

#[test]
fn cancel_writes_a_request_for_live_runs_only() {
    let f = Fixture::with_history();
    let queued = f.queued.to_string();
    f.cmd(&["cancel", &queued])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "requested cancellation of run {queued}"
        )));
    let (rt, store) = f.store();
    let pending = rt.block_on(store.list_pending_requests()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, RequestKind::Cancel);
    assert_eq!(pending[0].run_id, Some(f.queued));
    // The run itself is untouched: the daemon acts on the request.
    assert_eq!(
        rt.block_on(store.get_run(f.queued)).unwrap().state,
        RunState::Queued
    );

    f.cmd(&["cancel", &f.succeeded.to_string()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already finished (succeeded)"));
    f.cmd(&["cancel", "0190aaaa-0000-7000-8000-000000000000"])
        .assert()
        .code(1);
    assert_eq!(rt.block_on(store.list_pending_requests()).unwrap().len(), 1);
}

#[test]
fn resolve_records_each_decision_and_a_request() {
    for (flag, decision) in [
        ("--resend", Decision::Resend),
        ("--mark-done", Decision::MarkDone),
        ("--mark-failed", Decision::MarkFailed),
    ] {
        let f = Fixture::with_history();
        let id = f.in_doubt.to_string();
        f.cmd(&["resolve", &id, flag])
            .assert()
            .success()
            .stdout(predicate::str::contains(format!(
                "step 1 (bob@contoso.com): {decision}"
            )));
        let (rt, store) = f.store();
        let steps = rt.block_on(store.list_steps(f.in_doubt)).unwrap();
        assert_eq!(steps[1].state, StepState::InDoubt);
        assert_eq!(steps[1].operator_decision, Some(decision));
        assert_eq!(steps[0].operator_decision, None);
        let pending = rt.block_on(store.list_pending_requests()).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].kind, RequestKind::Resolve);
        assert_eq!(pending[0].run_id, Some(f.in_doubt));
        assert_eq!(pending[0].decision, Some(decision));
        let events = rt.block_on(store.list_run_events(f.in_doubt)).unwrap();
        assert!(events.iter().any(|e| e.kind == "step_decision"));
    }
}

#[test]
fn resolve_refuses_runs_without_in_doubt_steps_and_bad_flags() {
    let f = Fixture::with_history();
    let ok = f.succeeded.to_string();
    f.cmd(&["resolve", &ok, "--resend"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no in_doubt steps"));
    let id = f.in_doubt.to_string();
    f.cmd(&["resolve", &id]).assert().code(2);
    f.cmd(&["resolve", &id, "--resend", "--mark-done"])
        .assert()
        .code(2);
    let (rt, store) = f.store();
    assert!(
        rt.block_on(store.list_pending_requests())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn completions_and_man_pages() {
    let dir = Fixture::empty();
    for (shell, marker) in [
        ("bash", "_restorectl()"),
        ("zsh", "#compdef restorectl"),
        ("fish", "complete -c restorectl"),
    ] {
        cmd_in(dir.path(), &["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains(marker))
            .stdout(predicate::str::contains("resolve"));
    }
    cmd_in(dir.path(), &["completions", "tcsh"])
        .assert()
        .code(2);
    cmd_in(dir.path(), &["man"])
        .assert()
        .success()
        .stdout(predicate::str::contains(".TH restorectl 1"))
        .stdout(predicate::str::contains("resolve"));
    let pages = dir.path().join("man");
    cmd_in(dir.path(), &["man", "--out-dir", pages.to_str().unwrap()])
        .assert()
        .success();
    for page in ["restorectl.1", "restorectl-show.1", "restorectl-resolve.1"] {
        assert!(pages.join(page).exists(), "{page} missing");
    }
}

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory;
    restorectl::cli::Cli::command().debug_assert();
}

/// On a terminal (a pty from util-linux `script`), states are coloured; `NO_COLOR` turns colour
/// off there too. Skipped, with a note, where `script` is not installed.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let f = Fixture::with_history();
    let bin = assert_cmd::cargo::cargo_bin("restorectl");
    let command = format!(
        "'{}' --config '{}' runs",
        bin.display(),
        f.config().display()
    );
    let run_in_pty = |no_color: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &command, "/dev/null"])
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .stdin(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        cmd.output()
    };
    let Ok(coloured) = run_in_pty(false) else {
        eprintln!("`script` not installed: skipping the terminal colour test");
        return;
    };
    assert!(coloured.status.success());
    let text = String::from_utf8_lossy(&coloured.stdout);
    assert!(text.contains("\x1b[32msucceeded\x1b[0m"), "{text:?}");
    let plain = run_in_pty(true).unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.contains("succeeded"), "{text:?}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

/// A reader that closed its end of the pipe (`restorectl show … | head -1`) is not an error:
/// exit 0 and no "Broken pipe" message. The read end is closed before the command starts, so
/// its first write fails with EPIPE every time.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let f = Fixture::with_history();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("restorectl"))
        .arg("--config")
        .arg(f.config())
        .args(["show", &f.succeeded.to_string(), "--json"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
