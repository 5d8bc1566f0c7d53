//! The operator commands through the real binary against a state database filled by real runs
//! of the run engine on the in-process simulator (see `crate::common::ops`): `jobs`, `runs`, `show`,
//! `run`, `cancel`, `resolve`, `plan`, `completions`, `man` — their JSON parsed back and compared
//! with what the simulator says (mailbox ids, item counts, the SHA-256 and size of each export),
//! their exit codes (0/1/2/78), plain output without ANSI escapes and aligned tables, and the
//! request rows `run`/`cancel`/`resolve` write for the daemon.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::ops::{Fixture, cmd_in};
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

/// RFC 3339 in UTC with milliseconds and `Z`, as docs/cli-json.md promises.
fn instant(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = v.as_str().unwrap_or_else(|| panic!("not an instant: {v}"));
    assert!(
        text.len() == 24 && text.ends_with('Z') && text.as_bytes()[19] == b'.',
        "{text}"
    );
    chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[test]
fn jobs_json_has_the_documented_fields() {
    let f = Fixture::with_history();
    let v = json_of(&f.cmd(&["jobs", "--json"]).output().unwrap());
    assert_eq!(v["version"], 1);
    let jobs = v["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "broken",
            "discovery",
            "legal-hold",
            "locked",
            "offboarding",
            "undelete"
        ]
    );
    let job = |name: &str| jobs.iter().find(|j| j["name"] == name).unwrap();
    let legal = job("legal-hold");
    assert_eq!(legal["kind"], "ExportPst");
    assert_eq!(legal["state"], "active");
    assert_eq!(legal["schedule"]["cron"], "0 2 * * SUN");
    assert_eq!(legal["schedule"]["timezone"], "Europe/Berlin");
    assert_eq!(legal["suspend"], false);
    assert_eq!(legal["nextFireAt"], "2026-03-08T01:00:00.000Z");
    assert_eq!(legal["lastFireAt"], "2026-03-01T01:00:00.000Z");
    // The newest run is the queued manual one, not the scheduled run that succeeded.
    assert_eq!(legal["lastRun"]["id"], f.queued.to_string());
    assert_eq!(legal["lastRun"]["trigger"], "manual");
    assert_eq!(legal["lastRun"]["state"], "queued");
    assert_eq!(legal["lastRun"]["finishedAt"], Value::Null);
    assert!(legal["activeVersion"]["id"].is_i64());
    assert_eq!(
        legal["activeVersion"]["specHash"].as_str().unwrap().len(),
        64
    );
    assert!(
        legal["file"]
            .as_str()
            .unwrap()
            .ends_with("jobs/legal-hold.yaml")
    );
    assert_eq!(legal["errors"], serde_json::json!([]));
    assert_eq!(legal["removedAt"], Value::Null);
    assert!(instant(&legal["firstSeenAt"]) <= instant(&legal["lastSeenAt"]));
    for (name, kind, state, trigger, run) in [
        ("undelete", "Restore", "succeeded", "manual", f.restore),
        ("discovery", "Search", "succeeded", "manual", f.search),
        ("locked", "Restore", "failed", "manual", f.failed),
        (
            "offboarding",
            "RestoreTo",
            "needs_attention",
            "one_shot",
            f.in_doubt,
        ),
    ] {
        let j = job(name);
        assert_eq!(j["kind"], kind, "{name}");
        assert_eq!(j["schedule"], Value::Null, "{name}");
        assert_eq!(j["nextFireAt"], Value::Null, "{name}");
        assert_eq!(j["lastRun"]["id"], run.to_string(), "{name}");
        assert_eq!(j["lastRun"]["state"], state, "{name}");
        assert_eq!(j["lastRun"]["trigger"], trigger, "{name}");
        assert!(
            instant(&j["lastRun"]["finishedAt"]) >= instant(&j["lastRun"]["scheduledFor"]),
            "{name}"
        );
    }
    let broken = job("broken");
    assert_eq!(broken["state"], "invalid");
    assert_eq!(broken["activeVersion"], Value::Null);
    assert_eq!(broken["lastRun"], Value::Null);
    let error = &broken["errors"][0];
    assert_eq!(error["code"], "bad-cron");
    assert_eq!(error["line"], 7);
    assert_eq!(error["column"], 11);
    assert_eq!(error["job"], "broken");
    assert_eq!(error["field"], "spec.schedule.cron");
    assert!(error["hint"].as_str().unwrap().contains("0 2 * * SUN"));
    let files = v["invalidFiles"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0]["path"].as_str().unwrap().ends_with("broken.yaml"));
    assert_eq!(files[0]["jobNames"][0], "broken");
    assert_eq!(files[0]["errors"][0], *error);
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
        assert_aligned(&lines[..7]);
        assert!(text.contains("0 2 * * SUN Europe/Berlin"));
        assert!(text.contains("2026-03-08 02:00 CET (+01:00)"), "{text}");
        assert!(text.contains("one-shot"));
        // The last run's instant carries its zone like every other instant of the tables.
        let legal = lines.iter().find(|l| l.starts_with("legal-hold")).unwrap();
        let (rt, store) = f.store();
        let queued_at = rt.block_on(store.get_run(f.queued)).unwrap().scheduled_for;
        assert!(
            legal.contains(&format!(
                "queued {}",
                queued_at.format("%Y-%m-%d %H:%M:%SZ")
            )),
            "{legal}"
        );
        assert!(text.contains("Problems:"));
        // Stored errors read as `validate` and `plan` print them: with the job and the field.
        assert!(
            text.contains(
                "broken.yaml:7:11: error[bad-cron]: job `broken`, field `spec.schedule.cron`: `0 25 * * SUN`"
            ),
            "{text}"
        );
    }
}

#[test]
fn runs_json_filters_and_orders_newest_first() {
    let f = Fixture::with_history();
    let v = json_of(&f.cmd(&["runs", "--json"]).output().unwrap());
    assert_eq!(v["version"], 1);
    let runs = v["runs"].as_array().unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let expected: Vec<String> = [
        f.queued, f.in_doubt, f.failed, f.search, f.restore, f.export,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(ids, expected);
    let ok = &runs[5];
    assert_eq!(ok["job"], "legal-hold");
    assert_eq!(ok["trigger"], "schedule");
    assert_eq!(ok["state"], "succeeded");
    assert_eq!(ok["reason"], Value::Null);
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["steps"]["total"], 2);
    assert_eq!(ok["steps"]["byState"], serde_json::json!({ "done": 2 }));
    assert_eq!(ok["scheduledFor"], "2026-03-01T01:00:00.000Z");
    let started = instant(&ok["startedAt"]);
    assert!(instant(&ok["createdAt"]) <= started);
    assert!(started <= instant(&ok["finishedAt"]));
    // deadline = start + the config's runTimeout (10m).
    assert_eq!(
        instant(&ok["deadlineAt"]) - started,
        chrono::Duration::minutes(10)
    );
    assert_eq!(ok["nextAttemptAt"], Value::Null);
    assert_eq!(ok["cancelRequested"], false);
    assert_eq!(ok["specHash"].as_str().unwrap().len(), 64);
    assert!(ok["jobVersionId"].is_i64());

    let failed = &runs[2];
    assert_eq!(failed["state"], "failed");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("erin@contoso.com") && reason.contains("ParameterValidationFailure"),
        "{reason}"
    );
    assert_eq!(
        failed["steps"]["byState"],
        serde_json::json!({ "failed": 1 })
    );
    let attention = &runs[1];
    assert_eq!(attention["trigger"], "one_shot");
    assert_eq!(
        attention["steps"]["byState"],
        serde_json::json!({ "in_doubt": 1 })
    );
    assert!(instant(&attention["finishedAt"]) >= instant(&attention["startedAt"]));
    let queued = &runs[0];
    assert_eq!(queued["attempts"], 0);
    assert_eq!(queued["startedAt"], Value::Null);
    assert_eq!(queued["steps"]["total"], 0);

    let v = json_of(&f.cmd(&["runs", "legal-hold", "--json"]).output().unwrap());
    let ids: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [f.queued.to_string(), f.export.to_string()]);
    for (state, run) in [
        ("needs_attention", f.in_doubt),
        ("failed", f.failed),
        ("queued", f.queued),
    ] {
        let v = json_of(
            &f.cmd(&["runs", "--state", state, "--json"])
                .output()
                .unwrap(),
        );
        assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{state}");
        assert_eq!(v["runs"][0]["id"], run.to_string(), "{state}");
    }
    let v = json_of(
        &f.cmd(&["runs", "--state", "succeeded", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["runs"].as_array().unwrap().len(), 3);
    let v = json_of(
        &f.cmd(&["runs", "undelete", "--state", "failed", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["runs"], serde_json::json!([]));
    let v = json_of(&f.cmd(&["runs", "--limit", "1", "--json"]).output().unwrap());
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    assert_eq!(v["runs"][0]["id"], f.queued.to_string());
    let v = json_of(&f.cmd(&["runs", "--limit", "0", "--json"]).output().unwrap());
    assert_eq!(v["runs"].as_array().unwrap().len(), 6);

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
    assert_eq!(lines.len(), 7, "{text}");
    assert_aligned(&lines);
    for line in &lines {
        assert!(line.chars().count() <= 100, "{line:?} wider than 100");
    }
    for run in [
        f.export, f.restore, f.search, f.failed, f.in_doubt, f.queued,
    ] {
        assert!(text.contains(&run.to_string()), "{run} cut in {text}");
    }
    assert!(
        text.contains('…'),
        "nothing truncated at 100 columns: {text}"
    );
    // A pipe without COLUMNS gets full values.
    let text = stdout(&f.cmd(&["runs"]).output().unwrap());
    assert!(!text.contains('…'), "{text}");
    assert!(text.contains("0/1 done, 1 in_doubt"), "{text}");
    assert!(text.contains("restore outcome unknown for frank@contoso.com"));
    assert!(text.contains("2/2 done"));
    assert!(text.contains("0/1 done, 1 failed"));
    assert!(text.contains("2026-03-01 01:00:00Z"), "{text}");
}

fn show_json(f: &Fixture, run: restorectl::store::RunId) -> Value {
    let v = json_of(
        &f.cmd(&["show", &run.to_string(), "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(v["version"], 1);
    assert_eq!(v["run"]["id"], run.to_string());
    v
}

fn event_kinds(v: &Value) -> Vec<&str> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}

#[test]
fn show_json_of_the_export_matches_the_simulators_digests() {
    let f = Fixture::with_history();
    let h = f.history;
    let v = show_json(&f, f.export);
    assert_eq!(v["run"]["state"], "succeeded");
    assert_eq!(v["run"]["trigger"], "schedule");
    assert_eq!(v["jobKind"], "ExportPst");
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["state"], "stopped");
    assert_eq!(sessions[0]["server"], "primary");
    assert_eq!(
        sessions[0]["organizationId"],
        restorectl::sim::DEMO_ORG_ID.to_string()
    );
    assert_eq!(sessions[0]["pointInTime"], Value::Null);
    assert!(instant(&sessions[0]["openedAt"]) <= instant(&sessions[0]["stoppedAt"]));
    let session = sessions[0]["id"].as_str().unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for (seq, (email, name)) in [
        ("alice@contoso.com", "Alice Adams"),
        ("bob@contoso.com", "Bob Brown"),
    ]
    .into_iter()
    .enumerate()
    {
        let step = &steps[seq];
        let (digest, len) = &h.digests[email];
        assert_eq!(step["seq"], seq);
        assert_eq!(step["mailbox"]["id"], h.mailbox_ids[email]);
        assert_eq!(step["mailbox"]["email"], email);
        assert_eq!(step["mailbox"]["name"], name);
        assert_eq!(step["mailbox"]["isArchive"], false);
        assert_eq!(step["mailboxIds"], Value::Null);
        assert_eq!(step["state"], "done");
        assert_eq!(step["attempts"], 1);
        assert_eq!(step["restorePosts"], 0);
        assert_eq!(step["restoreSessionId"], session);
        assert_eq!(step["remoteOperationId"], Value::Null);
        assert_eq!(step["error"], Value::Null);
        assert_eq!(step["operatorDecision"], Value::Null);
        assert!(
            step["counts"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_null)
        );
        // The file as published: the simulator's bytes, exactly.
        let path = format!("/exports/legal-hold/2026-03-01/{email}.pst");
        assert_eq!(
            step["file"]["path"],
            format!("{}{path}", h.root.display()),
            "{step}"
        );
        assert_eq!(step["file"]["sha256"], *digest);
        assert_eq!(step["file"]["bytes"], *len);
        assert_eq!(step["file"]["format"], "pst");
        assert_eq!(step["download"]["state"], "published");
        assert_eq!(step["download"]["finalPath"], step["file"]["path"]);
        assert_eq!(step["download"]["bytesDurable"], *len);
        assert_eq!(step["download"]["expectedBytes"], *len);
        assert_eq!(step["download"]["restarts"], 0);
        assert_eq!(step["download"]["restoreSessionId"], session);
        assert!(instant(&step["startedAt"]) <= instant(&step["finishedAt"]));
        let file = &files[seq];
        assert_eq!(file["path"], step["file"]["path"]);
        assert_eq!(
            file["manifestPath"],
            format!("{}{path}.manifest.json", h.root.display())
        );
        assert_eq!(file["sha256"], *digest);
        assert_eq!(file["bytes"], *len);
        assert_eq!(file["format"], "pst");
        assert_eq!(file["stepId"], step["id"]);
        assert_eq!(file["mailboxId"], h.mailbox_ids[email]);
        assert_eq!(file["mailboxEmail"], email);
        assert_eq!(file["deletedAt"], Value::Null);
    }
    // Bob's download broke after 8 KiB and went on from there.
    assert_eq!(steps[0]["download"]["resumedFrom"], serde_json::json!([]));
    assert_eq!(
        steps[1]["download"]["resumedFrom"],
        serde_json::json!([8192])
    );
    let kinds = event_kinds(&v);
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
    let events = v["events"].as_array().unwrap();
    let resumed = events
        .iter()
        .find(|e| e["kind"] == "download_resumed")
        .unwrap();
    assert_eq!(resumed["stepId"], steps[1]["id"]);
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "{ids:?}");
}

#[test]
fn show_json_of_restores_and_search_has_counts_remote_ids_and_errors() {
    let f = Fixture::with_history();
    let h = f.history;

    // The restore: one POST, the server's operation id, item counts.
    let v = show_json(&f, f.restore);
    assert_eq!(v["jobKind"], "Restore");
    let step = &v["steps"][0];
    assert_eq!(step["mailbox"]["id"], h.mailbox_ids["dave@contoso.com"]);
    assert_eq!(step["mailbox"]["name"], "Dave Davis");
    assert_eq!(step["state"], "done");
    assert_eq!(step["restorePosts"], 1);
    let operation = step["remoteOperationId"].as_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(operation).unwrap().to_string(),
        operation
    );
    assert!(instant(&step["submittedAt"]) >= instant(&step["startedAt"]));
    assert!(step["counts"]["created"].as_i64().unwrap() > 0, "{step}");
    for k in ["merged", "failed", "skipped"] {
        assert!(step["counts"][k].is_i64(), "{k}: {step}");
    }
    assert_eq!(step["counts"]["found"], Value::Null);
    assert_eq!(step["file"], Value::Null);
    assert_eq!(step["download"], Value::Null);
    assert_eq!(v["files"], serde_json::json!([]));

    // The search: the simulator's item count, and the report as written on disk.
    let v = show_json(&f, f.search);
    assert_eq!(v["jobKind"], "Search");
    let step = &v["steps"][0];
    assert_eq!(step["mailbox"]["email"], "ceo@contoso.com");
    assert_eq!(step["counts"]["found"], h.search_found);
    assert_eq!(step["counts"]["created"], Value::Null);
    assert_eq!(step["restorePosts"], 0);
    assert_eq!(step["file"]["format"], "jsonl");
    assert_eq!(step["file"]["sha256"], h.report_sha256);
    assert_eq!(step["file"]["bytes"], h.report_bytes);
    let report = format!(
        "{}/exports/discovery/{}/report.jsonl",
        h.root.display(),
        f.search
    );
    assert_eq!(step["file"]["path"], report);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], report);
    assert_eq!(files[0]["sha256"], h.report_sha256);
    assert_eq!(files[0]["manifestPath"], Value::Null);

    // The refused restore: the server's error code and class, one POST, no retry.
    let v = show_json(&f, f.failed);
    assert_eq!(v["run"]["state"], "failed");
    let step = &v["steps"][0];
    assert_eq!(step["mailbox"]["email"], "erin@contoso.com");
    assert_eq!(step["state"], "failed");
    assert_eq!(step["attempts"], 1);
    assert_eq!(step["restorePosts"], 1);
    assert_eq!(step["remoteOperationId"], Value::Null);
    assert_eq!(step["error"]["class"], "permanent");
    assert_eq!(step["error"]["code"], "ParameterValidationFailure");
    assert!(
        step["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 400"),
        "{step}"
    );
    assert!(event_kinds(&v).contains(&"run_finished"));

    // The lost answer: in_doubt, ambiguous, no decision yet, the run needs attention.
    let v = show_json(&f, f.in_doubt);
    assert_eq!(v["run"]["state"], "needs_attention");
    assert_eq!(v["jobKind"], "RestoreTo");
    let step = &v["steps"][0];
    assert_eq!(step["mailbox"]["email"], "frank@contoso.com");
    assert_eq!(step["state"], "in_doubt");
    assert_eq!(step["restorePosts"], 1);
    assert_eq!(step["error"]["class"], "ambiguous");
    assert_eq!(step["error"]["code"], Value::Null);
    assert_eq!(step["operatorDecision"], Value::Null);
    assert_eq!(step["finishedAt"], Value::Null);
    assert_eq!(v["sessions"][0]["state"], "stopped");
    assert!(event_kinds(&v).contains(&"run_state_changed"));
}

#[test]
fn show_text_has_checksums_errors_and_the_resolve_hint() {
    let f = Fixture::with_history();
    let h = f.history;
    let out = f
        .cmd(&["show", &f.export.to_string()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(!text.contains('\x1b'));
    for email in ["alice@contoso.com", "bob@contoso.com"] {
        let (digest, len) = &h.digests[email];
        assert!(text.contains(&format!("{digest}  ")), "{text}");
        assert!(text.contains(&format!("{len} bytes (")), "{text}");
        assert!(text.contains(&format!("{email}.pst")));
    }
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
    assert!(text.contains("download resumed from byte 8192"), "{text}");

    let id = f.in_doubt.to_string();
    // A unique prefix is enough.
    let text = stdout(&f.cmd(&["show", &id[..13]]).output().unwrap());
    assert!(text.contains("in_doubt"));
    assert!(text.contains("frank@contoso.com [ambiguous]"), "{text}");
    assert!(text.contains(&format!("restorectl resolve {id}")));

    let v = show_json(&f, f.restore);
    let c = &v["steps"][0]["counts"];
    let text = stdout(&f.cmd(&["show", &f.restore.to_string()]).output().unwrap());
    assert!(
        text.contains(&format!(
            "{} created, {} merged, {} failed, {} skipped",
            c["created"], c["merged"], c["failed"], c["skipped"]
        )),
        "{text}"
    );
    assert!(text.contains(v["steps"][0]["remoteOperationId"].as_str().unwrap()));

    let text = stdout(&f.cmd(&["show", &f.search.to_string()]).output().unwrap());
    assert!(
        text.contains(&format!("{} found", h.search_found)),
        "{text}"
    );
    assert!(text.contains(&h.report_sha256), "{text}");

    let text = stdout(&f.cmd(&["show", &f.failed.to_string()]).output().unwrap());
    assert!(
        text.contains("erin@contoso.com [permanent ParameterValidationFailure]"),
        "{text}"
    );
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
            "known jobs: broken, discovery, legal-hold, locked, offboarding, undelete",
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

    f.cmd(&["cancel", &f.export.to_string()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already finished (succeeded)"));
    f.cmd(&["cancel", &f.failed.to_string()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already finished (failed)"));
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
                "step 0 (frank@contoso.com): {decision}"
            )));
        let (rt, store) = f.store();
        let steps = rt.block_on(store.list_steps(f.in_doubt)).unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].state, StepState::InDoubt);
        assert_eq!(steps[0].operator_decision, Some(decision));
        // `show` reports the decision while the daemon has not acted on it.
        let v = json_of(&f.cmd(&["show", &id, "--json"]).output().unwrap());
        assert_eq!(v["steps"][0]["operatorDecision"], decision.to_string());
        assert_eq!(v["steps"][0]["state"], "in_doubt");
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
    for ok in [f.export, f.failed] {
        f.cmd(&["resolve", &ok.to_string(), "--resend"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("has no in_doubt steps"));
    }
    let ok = f.restore.to_string();
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

/// `plan` against the installation the runs used: nothing to apply, the invalid file (exit 1),
/// and the scheduled export's next fires in Berlin time.
#[test]
fn plan_against_the_real_history() {
    let f = Fixture::with_history();
    let out = f
        .cmd(&["plan", "--format", "json"])
        .env("RESTORECTL_NOW", "2026-03-02T12:00:00Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "broken.yaml is invalid");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["summary"]["unchanged"], 5);
    for k in ["added", "changed", "removed"] {
        assert_eq!(v[k], serde_json::json!([]), "{k}");
    }
    assert!(
        v["database"]
            .as_str()
            .unwrap()
            .ends_with("state/restorectl.db")
    );
    let invalid = &v["invalid"][0];
    assert!(
        invalid["file"]
            .as_str()
            .unwrap()
            .ends_with("jobs/broken.yaml")
    );
    assert_eq!(invalid["jobs"][0]["name"], "broken");
    assert_eq!(invalid["jobs"][0]["keepsVersion"], Value::Null);
    let schedules = v["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0]["name"], "legal-hold");
    let at: Vec<&str> = schedules[0]["fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["at"].as_str().unwrap())
        .collect();
    assert_eq!(
        at,
        [
            "2026-03-08T01:00:00.000Z",
            "2026-03-15T01:00:00.000Z",
            "2026-03-22T01:00:00.000Z"
        ]
    );
    // Without the broken file every file is valid (exit 0); the never-valid job the store
    // recorded for it is now `removed`.
    std::fs::remove_file(f.path().join("jobs/broken.yaml")).unwrap();
    let out = f.cmd(&["plan"]).env("NO_COLOR", "1").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'));
    assert!(
        text.contains("0 added, 0 changed, 1 removed, 5 unchanged, 0 invalid"),
        "{text}"
    );
    assert!(text.contains("  - broken (ExportPst, "), "{text}");
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
/// off there too. Skipped, with a note, where `script` is not installed — a failure under
/// `CI=true`.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let f = Fixture::with_history();
    let bin = assert_cmd::cargo::cargo_bin("restorectl");
    let command = |args: &str| {
        format!(
            "'{}' --config '{}' {args}",
            bin.display(),
            f.config().display()
        )
    };
    let run_in_pty = |args: &str, no_color: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &command(args), "/dev/null"])
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .stdin(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        cmd.output()
    };
    let Ok(coloured) = run_in_pty("runs", false) else {
        crate::common::tool_missing("`script` (util-linux)", "the terminal colour test");
        return;
    };
    assert!(coloured.status.success());
    let text = String::from_utf8_lossy(&coloured.stdout);
    assert!(text.contains("\x1b[32msucceeded\x1b[0m"), "{text:?}");
    let export = format!("show {}", f.export);
    for args in ["runs", "jobs", export.as_str()] {
        let plain = run_in_pty(args, true).unwrap();
        assert!(plain.status.success(), "{args}");
        let text = String::from_utf8_lossy(&plain.stdout);
        assert!(text.contains("succeeded"), "{args}: {text:?}");
        assert!(!text.contains('\x1b'), "{args}: {text:?}");
    }
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
        .args(["show", &f.export.to_string(), "--json"])
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

/// `--events N` lists the run's newest N events (oldest first) and says how many there are;
/// `--events all` lists every one; text says what it left out. A bad value is a usage error.
#[test]
fn show_lists_the_newest_events_and_counts_them_all() {
    let f = Fixture::with_history();
    let run = f.export.to_string();
    let all = json_of(
        &f.cmd(&["show", &run, "--json", "--events", "all"])
            .output()
            .unwrap(),
    );
    let every = all["events"].as_array().unwrap().clone();
    assert!(every.len() > 3, "{all}");
    assert_eq!(all["eventsTotal"], every.len());
    // The default (200) covers a small run whole.
    assert_eq!(show_json(&f, f.export)["events"], all["events"]);

    let two = json_of(
        &f.cmd(&["show", &run, "--json", "--events", "2"])
            .output()
            .unwrap(),
    );
    assert_eq!(two["eventsTotal"], every.len());
    assert_eq!(
        two["events"].as_array().unwrap()[..],
        every[every.len() - 2..]
    );
    assert_eq!(two["steps"], all["steps"]);

    let out = f.cmd(&["show", &run, "--events", "2"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("Events ({})", every.len())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "({} earlier events not shown; --events all lists every one)",
            every.len() - 2
        )),
        "{text}"
    );

    let bad = f.cmd(&["show", &run, "--events", "some"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("`some` is neither a number of events nor `all`")
    );
}
