//! A big search survives `kill -9` of the real daemon binary: the simulator serves many
//! generated hits in slow pages, the daemon is killed while the hits stream into the step's part
//! file, and after a restart the run continues from the last durable page (not from offset 0)
//! and publishes a report byte-identical to that of an uninterrupted run, in both formats and
//! for both the organisation-wide and the per-mailbox search.

use std::time::Duration;

use crate::daemon_support::*;
use restorectl::sim::{Endpoint, FaultAction, FaultRule, SimConfig, SimHandle, Simulator};
use restorectl::store::{Run, RunFilter, RunState, Store};

/// Generated hits per search: 200 pages of 200 (`pageSize: 200`).
const HITS: u64 = 40_000;

/// Long enough for the whole search in a debug build on a busy machine.
const SLOW: Duration = Duration::from_secs(240);

async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    until_within(what, SLOW, check).await
}

fn search_job(format: &str, mailboxes: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: Search\nmetadata: {{ name: big-search }}\nspec:\n  \
         organization: contoso.onmicrosoft.com\n{mailboxes}  search:\n    query: 'subject:report'\n    \
         report: {{ path: \"{{job}}/search.{format}\", format: {format} }}\n"
    )
}

fn site(sim: &SimHandle, job: &str) -> Site {
    let site = Site::new(&sim.base_url(), "off");
    append_config(&site, "pageSize: 200");
    site.write_job("search.yaml", job);
    site
}

/// The run of the job (a job without a schedule runs once when it appears).
async fn the_run(store: &Store) -> Run {
    until("the job's run starts", || async {
        let mut runs = store
            .list_runs(&RunFilter {
                job: Some("big-search"),
                ..RunFilter::default()
            })
            .await
            .ok()?;
        (runs.len() == 1).then(|| runs.remove(0))
    })
    .await
}

async fn finished(store: &Store, run: &Run) -> Run {
    until("the run finishes", || async {
        let r = store.get_run(run.id).await.ok()?;
        r.state.is_terminal().then_some(r)
    })
    .await
}

/// The offsets of the search pages the simulator served, in order.
fn search_pages(sim: &SimHandle) -> Vec<u64> {
    sim.journal()
        .into_iter()
        .filter(|e| e.route.as_deref().is_some_and(|r| r.ends_with("/search")))
        .map(|e| {
            let query = e.query.unwrap_or_default();
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|p| p.strip_prefix(&format!("{k}=")).map(str::to_owned))
            };
            param("offset").and_then(|o| o.parse().ok()).unwrap_or(0)
        })
        .collect()
}

async fn kill_9_in_the_middle_of_a_big_search(format: &str, mailboxes: &str) {
    let sim = Simulator::start(
        SimConfig {
            synthetic_search_hits: HITS,
            // Every page takes a while: the kill lands while pages are still to come.
            faults: vec![
                FaultRule::on(
                    Endpoint::OrganizationSearch,
                    FaultAction::Delay {
                        duration: Duration::from_millis(25),
                    },
                ),
                FaultRule::on(
                    Endpoint::MailboxSearch,
                    FaultAction::Delay {
                        duration: Duration::from_millis(25),
                    },
                ),
            ],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let job = search_job(format, mailboxes);

    // The reference: the same search, uninterrupted.
    let reference_site = site(&sim, &job);
    let daemon = Daemon::start(&reference_site);
    let store = open_when_ready(&reference_site).await;
    let run = finished(&store, &the_run(&store).await).await;
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "{:?}\n{}",
        run.reason,
        daemon.log()
    );
    let report = reference_site.path(&format!("exports/big-search/search.{format}"));
    let expected = std::fs::read(&report).unwrap();
    drop(daemon);
    let uninterrupted_pages = search_pages(&sim).len();

    // The same search, killed with -9 once part of the hits are durable.
    let site = site(&sim, &job);
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let run = the_run(&store).await;
    let steps = until("the steps exist", || async {
        let steps = store.list_steps(run.id).await.ok()?;
        (!steps.is_empty()).then_some(steps)
    })
    .await;
    let durable = until("some pages are durable", || async {
        for s in &steps {
            let p = store.get_search_progress(s.id).await.ok()??;
            if p.pages >= 10 {
                return Some(p);
            }
        }
        None
    })
    .await;
    daemon.signal("KILL");
    let (status, _, _) = daemon.wait_exit();
    assert!(!status.success());
    let at_kill = store
        .get_search_progress(durable.step_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        u64::try_from(at_kill.hits).unwrap() < HITS,
        "the kill landed before the last page: {at_kill:?}"
    );
    assert_ne!(
        store.get_run(run.id).await.unwrap().state,
        RunState::Succeeded
    );
    let before_restart = search_pages(&sim).len();

    let restarted = Daemon::start(&site);
    let run = finished(&store, &run).await;
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "{:?}\n{}",
        run.reason,
        restarted.log()
    );
    let actual = std::fs::read(site.path(&format!("exports/big-search/search.{format}"))).unwrap();
    assert!(
        actual == expected,
        "the report after kill -9 and restart ({} bytes) differs from the uninterrupted one ({} bytes)",
        actual.len(),
        expected.len()
    );
    // The restarted daemon continued the killed step from its durable offset (in the restore
    // session it adopted, with the same `setId`), not from offset 0.
    let after = search_pages(&sim)[before_restart..].to_vec();
    let recorded: restorectl::vb365::Cursor = serde_json::from_str(&at_kill.cursor).unwrap();
    if steps.len() == 1 {
        assert_eq!(after[0], recorded.offset(), "{after:?}");
    } else {
        assert!(
            after.contains(&recorded.offset()),
            "the killed step resumed at offset {}: {after:?}",
            recorded.offset()
        );
    }
    let interrupted_pages = before_restart - uninterrupted_pages + after.len();
    println!(
        "{format}: {} pages uninterrupted, {interrupted_pages} with the kill ({} hits durable at the kill)",
        uninterrupted_pages, at_kill.hits
    );
    assert!(
        interrupted_pages <= uninterrupted_pages + steps.len(),
        "at most one page per step asked twice: {interrupted_pages} vs {uninterrupted_pages}"
    );
    // No part files, partial files or resume points are left behind.
    for s in store.list_steps(run.id).await.unwrap() {
        assert_eq!(store.get_search_progress(s.id).await.unwrap(), None);
    }
    assert!(!site.path(&format!("state/runs/{}", run.id)).exists());
    let left: Vec<_> = std::fs::read_dir(site.path("exports/big-search"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    drop(restarted);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_an_organisation_wide_search_resumes_to_an_identical_jsonl_report() {
    kill_9_in_the_middle_of_a_big_search("jsonl", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_per_mailbox_search_resumes_to_an_identical_csv_report() {
    kill_9_in_the_middle_of_a_big_search(
        "csv",
        "  mailboxes: [ceo@contoso.com, legal-review@contoso.com]\n  archives: exclude\n",
    )
    .await;
}
