//! Every job kind end to end against the in-process simulator over loopback HTTP, with a real
//! SQLite store: the exact requests sent (from the simulator's journal), one restore POST per
//! step, both readings of the restore answer's `sessionId`, and every restore session the run
//! opened `Stopped` at the end.

use crate::exec_support::*;
use restorectl::sim::{ExportSpec, RestoreOutcome, SearchScope, SessionIdMode, SimConfig};
use restorectl::store::{RunState, StepState};

fn fast_sim() -> SimConfig {
    SimConfig {
        restore_delay: std::time::Duration::from_millis(300),
        export_build_delay: std::time::Duration::from_millis(50),
        ..SimConfig::default()
    }
}

fn restore_job(name: &str, mailboxes: &str) -> String {
    job_yaml(
        "Restore",
        name,
        &format!("  mailboxes: {mailboxes}\n  archives: exclude\n  restore:\n{USER_CREDS}"),
    )
}

async fn restore_kind_in_mode(mode: SessionIdMode) {
    let w = World::start(SimConfig {
        session_id_mode: mode,
        ..fast_sim()
    })
    .await;
    w.job(
        "r",
        &restore_job("r", "[alice@contoso.com, BOB@contoso.com]"),
    );
    let out = w.run("r").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let steps = w.steps(out.run).await;
    assert_eq!(steps.len(), 2);
    for s in &steps {
        assert_eq!(s.state, StepState::Done, "{s:?}");
        assert_eq!(s.restore_posts, 1);
        assert!(s.created_items.is_some_and(|n| n > 0), "{s:?}");
        assert!(s.remote_operation_id.is_some());
    }
    // Exactly one restore POST per mailbox, to the original location, with the user creds.
    let posts = w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restore"));
    assert_eq!(posts.len(), 2);
    for email in ["alice@contoso.com", "bob@contoso.com"] {
        let id = w.mailbox_id(email);
        assert_eq!(
            posts
                .iter()
                .filter(|p| p.param("mailboxId") == Some(&id.to_string()))
                .count(),
            1,
            "{email}"
        );
        assert_eq!(w.sim.restore_calls(id), 1);
        let body = posts
            .iter()
            .find(|p| p.param("mailboxId") == Some(&id.to_string()))
            .unwrap()
            .body
            .clone()
            .unwrap();
        assert_eq!(body["userName"], "svc-backup@contoso.com");
        assert_eq!(body["userPassword"], restorectl::sim::REDACTED);
    }
    if mode == SessionIdMode::NewSession {
        assert_ne!(steps[0].remote_operation_id, steps[0].restore_session_id);
    } else {
        assert_eq!(steps[0].remote_operation_id, steps[0].restore_session_id);
    }
    assert_eq!(w.explores().len(), 1, "one explore session per run");
    let explore_body = w.explores()[0].body.clone().unwrap();
    assert_eq!(explore_body["type"], "Vex");
    assert!(
        explore_body.get("dateTime").is_none_or(|v| v.is_null()),
        "latest: no dateTime"
    );
    assert_eq!(
        w.calls("POST", "/v8/RestoreSessions/{restoreSessionId}/Stop")
            .len(),
        1
    );
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_follows_a_new_operation_session() {
    restore_kind_in_mode(SessionIdMode::NewSession).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_follows_the_explore_session_events() {
    restore_kind_in_mode(SessionIdMode::ExploreSession).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_renders_the_folder_per_mailbox_and_reports_warnings() {
    let w = World::start(fast_sim()).await;
    w.sim.set_restore_outcome(
        "carol@contoso.com",
        RestoreOutcome::Warning { failed_items: 2 },
    );
    w.job(
        "rt",
        &job_yaml(
            "RestoreTo",
            "rt",
            &format!(
                "  pointInTime: 48h ago\n  mailboxes: [carol@contoso.com, dave@contoso.com]\n  archives: exclude\n  restoreTo:\n    mailbox: legal-review@contoso.com\n    folder: \"Restored/{{mailbox}}\"\n    officeRegion: Worldwide\n    options: {{ changedItems: true, excludeDrafts: true }}\n{APP_CREDS}"
            ),
        ),
    );
    let out = w.run("rt").await;
    assert_eq!(out.state, RunState::SucceededWithWarnings, "{out:?}");
    let steps = w.steps(out.run).await;
    let carol = steps
        .iter()
        .find(|s| s.mailbox_email.as_deref() == Some("carol@contoso.com"))
        .unwrap();
    assert_eq!(carol.state, StepState::Warning);
    assert_eq!(carol.failed_items, Some(2));
    assert!(
        carol
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("2 items failed"),
        "{carol:?}"
    );
    let posts = w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restoreTo"));
    assert_eq!(posts.len(), 2);
    for p in &posts {
        let body = p.body.clone().unwrap();
        let id = p.param("mailboxId").unwrap();
        let email = if id == w.mailbox_id("carol@contoso.com").to_string() {
            "carol@contoso.com"
        } else {
            "dave@contoso.com"
        };
        assert_eq!(body["folder"], format!("Restored/{email}"));
        assert_eq!(body["mailbox"], "legal-review@contoso.com");
        assert_eq!(body["officeRegion"], "Worldwide");
        assert_eq!(body["changedItems"], true);
        assert_eq!(body["excludeDrafts"], true);
        assert_eq!(
            body["applicationId"],
            "3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10"
        );
        assert_eq!(body["applicationCertificate"], restorectl::sim::REDACTED);
    }
    // "48h ago" is relative to the run's scheduled time: a dateTime is sent.
    let explore = w.explores()[0].body.clone().unwrap();
    assert!(explore["dateTime"].is_string(), "{explore}");
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_restore_sends_one_request_with_every_mailbox() {
    let w = World::start(fast_sim()).await;
    w.job(
        "b",
        &job_yaml(
            "BulkRestore",
            "b",
            "  mailboxes: [{ match: \"*@legal.contoso.com\" }]\n  exclude: [jack@legal.contoso.com]\n  archives: exclude\n  bulkRestore:\n    casServer: outlook.office365.com\n    options: { skipUnresolved: true }\n    recentItemRestorePeriod: 30\n    credentials:\n      office365: { userName: svc-backup@contoso.com, password: { secret: m365-pass } }\n",
        ),
    );
    let out = w.run("b").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let steps = w.steps(out.run).await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].mailbox_ids.as_ref().map(Vec::len), Some(9));
    assert_eq!(steps[0].restore_posts, 1);
    let posts = w.calls("POST", &format!("{MAILBOXES}/restore"));
    assert_eq!(posts.len(), 1);
    let body = posts[0].body.clone().unwrap();
    let ids: Vec<String> = body["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 9);
    assert!(!ids.contains(&w.mailbox_id("jack@legal.contoso.com").to_string()));
    assert_eq!(body["recentItemRestorePeriod"], 30);
    assert_eq!(body["skipUnresolved"], true);
    assert_eq!(body["office365UserName"], "svc-backup@contoso.com");
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mailbox_restore_fails_its_step_with_the_server_text() {
    let w = World::start(fast_sim()).await;
    w.sim.set_restore_outcome(
        "erin@contoso.com",
        RestoreOutcome::CannotContinue {
            error: "Mailbox is on litigation hold and locked".into(),
        },
    );
    w.job(
        "f",
        &restore_job("f", "[erin@contoso.com, frank@contoso.com]"),
    );
    let out = w.run("f").await;
    assert_eq!(out.state, RunState::Failed);
    assert!(
        out.reason.as_deref().unwrap().contains("erin@contoso.com"),
        "{out:?}"
    );
    let steps = w.steps(out.run).await;
    let erin = steps
        .iter()
        .find(|s| s.mailbox_email.as_deref() == Some("erin@contoso.com"))
        .unwrap();
    assert_eq!(erin.state, StepState::Failed);
    assert!(
        erin.error_message
            .as_deref()
            .unwrap()
            .contains("litigation hold"),
        "{erin:?}"
    );
    // A restore the server finished (even failed) is never re-sent.
    assert_eq!(erin.restore_posts, 1);
    assert_eq!(w.sim.restore_calls(w.mailbox_id("erin@contoso.com")), 1);
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_matching_nothing_fail_the_run_and_stop_the_session() {
    let w = World::start(fast_sim()).await;
    w.job(
        "n",
        &restore_job("n", "[alice@contoso.com, nobody@contoso.com]"),
    );
    let out = w.run("n").await;
    assert_eq!(out.state, RunState::Failed);
    let reason = out.reason.unwrap();
    assert!(reason.contains("nobody@contoso.com"), "{reason}");
    assert!(
        reason.contains("mailboxes of the restore session were searched"),
        "{reason}"
    );
    assert!(w.steps(out.run).await.is_empty());
    assert!(
        w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/restore"))
            .is_empty()
    );
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_pst_publishes_each_mailbox_with_the_simulators_digest_and_a_manifest() {
    let w = World::start(fast_sim()).await;
    w.job(
        "e",
        &job_yaml(
            "ExportPst",
            "e",
            "  mailboxes: [alice@contoso.com, grace@contoso.com]\n  archives: include\n  export:\n    keyword: budget\n    path: \"{job}/{run}/{mailbox}-{mailboxId}.pst\"\n    retention: { keepLast: 1 }\n",
        ),
    );
    let out = w.run("e").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let steps = w.steps(out.run).await;
    assert_eq!(steps.len(), 3, "alice, alice's archive, grace");
    for s in &steps {
        assert_eq!(s.state, StepState::Done, "{s:?}");
        let path = std::path::PathBuf::from(s.file_path.clone().unwrap());
        assert!(
            path.starts_with(w.export_root().canonicalize().unwrap()),
            "{path:?}"
        );
        let (digest, len) = w
            .sim
            .export_digest(&ExportSpec {
                mailbox_id: s.mailbox_id.as_ref().unwrap().parse().unwrap(),
                keyword: Some("budget".into()),
                point_in_time: None,
                pst_size_limit: None,
            })
            .unwrap();
        assert_eq!(sha256_file(&path), digest);
        assert_eq!(s.sha256.as_deref(), Some(digest.as_str()));
        assert_eq!(s.bytes, Some(len as i64));
        let manifest = std::path::PathBuf::from(format!("{}.manifest.json", path.display()));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        assert_eq!(m["sha256"], digest);
        assert_eq!(m["job"], "e");
        assert_eq!(m["run"], out.run.to_string());
        assert_eq!(m["keyword"], "budget");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let exports = w.calls("POST", &format!("{MAILBOXES}/{{mailboxId}}/exportToPst"));
    assert_eq!(exports.len(), 3);
    assert!(
        exports
            .iter()
            .all(|e| e.body.clone().unwrap()["contentKeyword"] == "budget")
    );
    w.assert_all_sessions_stopped();
    // Retention keepLast: 1 — a second successful run deletes the first run's files.
    let second = w.run("e").await;
    assert_eq!(second.state, RunState::Succeeded);
    for s in &steps {
        assert!(!std::path::Path::new(s.file_path.as_deref().unwrap()).exists());
    }
    for s in w.steps(second.run).await {
        assert!(std::path::Path::new(s.file_path.as_deref().unwrap()).exists());
    }
    w.assert_all_sessions_stopped();
}

/// Found by the chaos suite: with `archives: include` and a path naming only `{mailbox}`, the
/// archive twin rendered its primary's path; one of the two failed with "already exists" and
/// both downloads shared one `.partial` file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_and_its_primary_export_to_different_files_with_a_mailbox_path() {
    let w = World::start(fast_sim()).await;
    w.job(
        "e",
        &job_yaml(
            "ExportPst",
            "e",
            "  mailboxes: [alice@contoso.com]\n  archives: include\n  export:\n    path: \"{job}/{run}/{mailbox}.pst\"\n",
        ),
    );
    let out = w.run("e").await;
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let steps = w.steps(out.run).await;
    assert_eq!(steps.len(), 2, "alice and alice's archive");
    let mut names = Vec::new();
    for s in &steps {
        assert_eq!(s.state, StepState::Done, "{s:?}");
        let path = std::path::PathBuf::from(s.file_path.clone().unwrap());
        let (digest, _) = w
            .sim
            .export_digest(&ExportSpec {
                mailbox_id: s.mailbox_id.as_ref().unwrap().parse().unwrap(),
                keyword: None,
                point_in_time: None,
                pst_size_limit: None,
            })
            .unwrap();
        assert_eq!(sha256_file(&path), digest, "{path:?}");
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        ["alice@contoso.com-archive.pst", "alice@contoso.com.pst"]
    );
    w.assert_all_sessions_stopped();
}

async fn search_report(format: &str, mailboxes: Option<&str>) {
    let w = World::start(SimConfig::default()).await;
    let query = "from:ceo@contoso.com";
    let selection = mailboxes.map_or(String::new(), |m| format!("  mailboxes: {m}\n"));
    w.job(
        "s",
        &job_yaml(
            "Search",
            "s",
            &format!(
                "{selection}  search:\n    query: '{query}'\n    report: {{ path: \"{{job}}/{{run}}/search.{format}\", format: {format} }}\n"
            ),
        ),
    );
    // Small pages so the search spans several of them.
    let mut config = w.config.clone();
    config.page_size = 7;
    let engine = restorectl::exec::Engine::new(
        w.store.clone(),
        config,
        restorectl::exec::EngineOptions::from_config(&w.config, "t"),
    )
    .unwrap();
    let run = w.queue("s").await;
    let out = engine
        .execute_run(run, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let org = restorectl::sim::DEMO_ORG_ID;
    let steps = w.steps(out.run).await;
    let expected = match mailboxes {
        None => w
            .sim
            .search_ground_truth(query, SearchScope::Organization(org), None)
            .unwrap(),
        Some(_) => {
            // ceo, ceo's archive (archives: include by default) and legal-review.
            assert_eq!(steps.len(), 3);
            steps
                .iter()
                .map(|s| {
                    let id = s.mailbox_id.as_ref().unwrap().parse().unwrap();
                    w.sim
                        .search_ground_truth(query, SearchScope::Mailbox(id), None)
                        .unwrap()
                })
                .sum()
        }
    };
    assert!(
        expected > 7,
        "the query must span several pages ({expected})"
    );
    let found: i64 = steps.iter().map(|s| s.found_items.unwrap()).sum();
    assert_eq!(found as usize, expected);
    let path = std::path::PathBuf::from(steps[0].file_path.clone().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    if format == "jsonl" {
        assert_eq!(lines.len(), expected + 1);
        let summary: serde_json::Value = serde_json::from_str(lines[expected]).unwrap();
        assert_eq!(summary["summary"]["totalItems"], expected);
        let item: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert!(
            item["itemId"].is_string() && item["mailbox"].is_string(),
            "{item}"
        );
    } else {
        assert!(lines[0].starts_with("record,mailbox,itemId"));
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("item,")).count(),
            expected
        );
        assert_eq!(lines.last().unwrap(), &format!("total,,,,,,,,,,{expected}"));
    }
    let pages = w
        .sim
        .journal()
        .into_iter()
        .filter(|e| e.route.as_deref().is_some_and(|r| r.ends_with("/search")))
        .count();
    assert!(pages > 2, "several pages: {pages}");
    let exports = w.store.list_run_exports(out.run).await.unwrap();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].sha256, sha256_file(&path));
    w.assert_all_sessions_stopped();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_per_mailbox_jsonl_report_has_the_ground_truth_count() {
    search_report("jsonl", Some("[ceo@contoso.com, legal-review@contoso.com]")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_wide_search_csv_report_has_the_ground_truth_count() {
    search_report("csv", None).await;
}

/// A restore session lost in the middle of a search (the simulator removes it on the sixth page):
/// the step continues in a new session from the last recorded page, by offset without the old
/// `setId`, and the report has every generated hit exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_whose_session_is_lost_midway_continues_by_offset_in_a_new_session() {
    use restorectl::sim::{CallRange, Endpoint, FaultAction, FaultRule};
    const HITS: usize = 1_050;
    let w = World::start(SimConfig {
        synthetic_search_hits: HITS as u64,
        faults: vec![
            FaultRule::on(Endpoint::OrganizationSearch, FaultAction::RemoveSession)
                .calls(CallRange::only(6)),
        ],
        ..fast_sim()
    })
    .await;
    w.job(
        "s",
        &job_yaml(
            "Search",
            "s",
            "  search:\n    query: 'subject:report'\n    report: { path: \"{job}/{run}/search.jsonl\", format: jsonl }\n",
        ),
    );
    let mut config = w.config.clone();
    config.page_size = 100;
    let engine = restorectl::exec::Engine::new(
        w.store.clone(),
        config,
        restorectl::exec::EngineOptions::from_config(&w.config, "t"),
    )
    .unwrap();
    let run = w.queue("s").await;
    let out = engine
        .execute_run(run, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.state, RunState::Succeeded, "{out:?}");
    let steps = w.steps(out.run).await;
    let text = std::fs::read_to_string(steps[0].file_path.as_ref().unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), HITS + 1);
    let ids: Vec<String> = lines[..HITS]
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["itemId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = (0..HITS)
        .map(|i| format!("AAMkSynthetic{:08x}{i:012x}", fast_sim().seed))
        .collect();
    assert!(ids == expected, "every hit once, in the server's order");
    // Pages 1–5 in the first session; the sixth found the session gone; the new session went on
    // at offset 500 without the old setId, then with its own.
    let pages: Vec<(String, Option<String>, u16)> = w
        .sim
        .journal()
        .into_iter()
        .filter(|e| e.route.as_deref().is_some_and(|r| r.ends_with("/search")))
        .map(|e| {
            (
                e.params
                    .get("restoreSessionId")
                    .cloned()
                    .unwrap_or_default(),
                e.query,
                e.status.unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(pages[5].2, 404, "{pages:#?}");
    let resumed = &pages[6];
    assert_ne!(resumed.0, pages[0].0, "a new session");
    let query = resumed.1.as_deref().unwrap_or("");
    assert!(
        query.contains("offset=500") && !query.contains("setId"),
        "{query}"
    );
    assert!(pages[7].1.as_deref().unwrap_or("").contains("setId"));
    assert_eq!(
        pages.iter().filter(|p| p.2 == 200).count(),
        HITS / 100 + 1,
        "no page read twice"
    );
    w.assert_all_sessions_stopped();
}
