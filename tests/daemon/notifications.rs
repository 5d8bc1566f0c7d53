//! Notifications and heartbeats through the real daemon binary (SPEC §11): a webhook target
//! whose receiver answers 500 while the daemon is killed with `kill -9` after the run failed,
//! so the message is delivered by the next daemon, once per delivery key, signed; Teams and
//! e-mail targets through a loopback HTTP receiver and a loopback SMTP sink; heartbeat pings in
//! order. Durations are bounded by polls, never asserted.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::common::receivers::{HttpReceiver, SmtpSink};
use crate::daemon_support::*;
use restorectl::sim::{SimConfig, SimHandle, Simulator};
use restorectl::store::{Notification, RunFilter, RunState, Store};

const SIGNING_KEY: &str = "test-signing-key-0123456789";
const SLOW: Duration = Duration::from_secs(60);

async fn simulator() -> SimHandle {
    Simulator::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    until_within(what, SLOW, check).await
}

fn secret(site: &Site, name: &str, value: &str) {
    std::fs::write(site.path(&format!("secrets/{name}")), format!("{value}\n")).unwrap();
}

/// A one-shot export job whose selector matches nobody: the run fails at once.
fn failing_job(name: &str, extra: &str) -> String {
    export_job(name, None, extra).replace("alice@contoso.com", "nobody@contoso.com")
}

async fn notifications(store: &Store) -> Vec<Notification> {
    store.list_notifications(None).await.unwrap_or_default()
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_survives_kill_9_and_a_failing_receiver_and_arrives_once() {
    let sim = simulator().await;
    let hook = HttpReceiver::start().await;
    hook.set_failing(true);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = Site::new(&sim.base_url(), &format!("127.0.0.1:{port}"));
    secret(&site, "ops-url", &hook.url("/hook"));
    secret(&site, "ops-key", SIGNING_KEY);
    append_config(
        &site,
        "notifications:\n  initialBackoff: 200ms\n  maxBackoff: 1s\n  targets:\n    \
         ops: { type: webhook, url: { secret: ops-url }, signingKey: { secret: ops-key } }\n  \
         defaults: { targets: [ops] }",
    );
    site.write_job("broken.yaml", &failing_job("nomatch", ""));

    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    // The run failed and its notification is in the outbox; the receiver refused it (500).
    let row = until("the failed run's notification was attempted", || async {
        let rows = notifications(&store).await;
        (rows.len() == 1 && rows[0].attempts >= 1).then(|| rows[0].clone())
    })
    .await;
    assert!(hook.received().iter().all(|r| r.status == 500));
    drop(daemon); // kill -9 (SIGKILL), between the state change and the delivery
    let row_after_kill = notifications(&store).await.remove(0);
    assert_eq!(
        row_after_kill.delivered_at, None,
        "not delivered before the kill"
    );

    // The receiver keeps failing for two more requests after the restart, then accepts.
    hook.set_failing(false);
    hook.fail_next(2);
    let daemon = Daemon::start(&site);
    let delivered = until(
        "the notification was delivered after the restart",
        || async {
            let rows = notifications(&store).await;
            rows.first().filter(|r| r.delivered_at.is_some()).cloned()
        },
    )
    .await;
    drop(daemon);

    let run = store
        .list_runs(&RunFilter {
            job: Some("nomatch"),
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(run.state, RunState::Failed);
    let received = hook.received();
    println!(
        "{} requests ({} answered 500) for one notification; {} attempts recorded",
        received.len(),
        received.iter().filter(|r| r.status == 500).count(),
        delivered.attempts
    );
    // Every attempt carries the same delivery key, the same body and a valid signature.
    for r in &received {
        assert_eq!(r.path, "/hook");
        assert_eq!(
            r.header("x-restorectl-delivery"),
            Some(row.delivery.as_str())
        );
        assert_eq!(r.header("x-restorectl-event"), Some("failed"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("x-restorectl-signature"),
            Some(hmac_hex(&r.body).as_str())
        );
        assert_eq!(r.body, received[0].body);
    }
    let accepted: Vec<_> = received.iter().filter(|r| r.status == 200).collect();
    assert_eq!(accepted.len(), 1, "delivered once per delivery key");
    let body = accepted[0].json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["event"], "failed");
    assert_eq!(body["delivery"], row.delivery.as_str());
    assert_eq!(body["job"], "nomatch");
    assert_eq!(body["run"], run.id.to_string().as_str());
    assert_eq!(body["state"], "failed");
    assert!(
        body["reason"].as_str().unwrap().contains("matched nothing"),
        "{body}"
    );
    assert!(body["mailboxes"].is_array());
    assert_eq!(
        body["command"],
        format!("restorectl show {}", run.id).as_str()
    );
    assert!(chrono::DateTime::parse_from_rfc3339(body["occurredAt"].as_str().unwrap()).is_ok());
    let text = String::from_utf8_lossy(&accepted[0].body);
    assert!(!text.contains(SIGNING_KEY), "no secret in the body");
}

#[tokio::test(flavor = "multi_thread")]
async fn teams_email_and_heartbeats_report_failure_and_success() {
    let sim = simulator().await;
    let http = HttpReceiver::start().await;
    let smtp = SmtpSink::start().await;
    let site = Site::new(&sim.base_url(), "off");
    secret(&site, "teams-url", &http.url("/teams"));
    secret(&site, "hb-bad", &http.url("/hb/bad"));
    secret(&site, "hb-good", &http.url("/hb/good/"));
    append_config(
        &site,
        &format!(
            "notifications:\n  initialBackoff: 200ms\n  maxBackoff: 1s\n  targets:\n    \
             legal: {{ type: teams, url: {{ secret: teams-url }} }}\n    \
             mail: {{ type: email, from: restorectl@contoso.com, to: [backup-team@contoso.com],\n            \
             smtp: {{ host: 127.0.0.1, port: {}, tls: none }} }}\n  \
             defaults: {{ targets: [legal, mail], events: [failed, succeeded] }}",
            smtp.addr.port()
        ),
    );
    site.write_job(
        "bad.yaml",
        &failing_job("bad", "  heartbeat: { url: { secret: hb-bad } }\n"),
    );
    site.write_job(
        "good.yaml",
        &export_job("good", None, "  heartbeat: { url: { secret: hb-good } }\n"),
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    until(
        "both runs' notifications were delivered to both targets",
        || async {
            let rows = notifications(&store).await;
            (rows.len() == 4 && rows.iter().all(|r| r.delivered_at.is_some())).then_some(())
        },
    )
    .await;
    until("the heartbeats arrived", || async {
        let n = http
            .received()
            .iter()
            .filter(|r| r.path.starts_with("/hb/"))
            .count();
        (n == 4).then_some(())
    })
    .await;
    let log = daemon.log();
    drop(daemon);

    let run_of = |job: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_runs(&RunFilter {
                    job: Some(job),
                    ..RunFilter::default()
                })
                .await
                .unwrap()
                .remove(0)
        }
    };
    let (bad, good) = (run_of("bad").await, run_of("good").await);
    assert_eq!(bad.state, RunState::Failed);
    assert!(matches!(
        good.state,
        RunState::Succeeded | RunState::SucceededWithWarnings
    ));

    // Teams: an Adaptive Card naming the job, the run, the first error and the command.
    let cards: Vec<serde_json::Value> = http
        .received()
        .iter()
        .filter(|r| r.path == "/teams")
        .map(|r| r.json())
        .collect();
    assert_eq!(cards.len(), 2);
    let card_of = |run: &restorectl::store::Run| {
        cards
            .iter()
            .find(|c| c.to_string().contains(&run.id.to_string()))
            .unwrap_or_else(|| panic!("no card for run {}", run.id))
            .clone()
    };
    let card = card_of(&bad);
    assert_eq!(card["type"], "message");
    let attachment = &card["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(attachment["content"]["type"], "AdaptiveCard");
    let text = card.to_string();
    assert!(text.contains("run failed - job bad"), "{text}");
    assert!(text.contains("matched nothing"), "{text}");
    assert!(
        text.contains(&format!("restorectl show {}", bad.id)),
        "{text}"
    );
    assert!(
        card_of(&good)
            .to_string()
            .contains("run succeeded - job good")
    );

    // E-mail: one message per run, to the configured recipient, with the command to run.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let mail = mails
        .iter()
        .find(|m| m.data.contains(&bad.id.to_string()))
        .expect("the failed run's mail");
    assert_eq!(mail.from, "restorectl@contoso.com");
    assert_eq!(mail.to, ["backup-team@contoso.com"]);
    assert!(
        mail.data
            .contains("Subject: restorectl: run failed - job bad"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains(&format!("restorectl show {}", bad.id)),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("First error: "), "{}", mail.data);
    assert!(mail.data.contains("Message-ID: <"), "{}", mail.data);

    // Heartbeats: start then the outcome, in order, per run; the failure's reason as the body.
    let pings = |prefix: &str| -> Vec<(String, String)> {
        http.received()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .map(|r| {
                (
                    r.path.clone(),
                    String::from_utf8_lossy(&r.body).into_owned(),
                )
            })
            .collect()
    };
    let bad_pings = pings("/hb/bad");
    assert_eq!(
        bad_pings.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["/hb/bad/start", "/hb/bad/fail"]
    );
    assert!(bad_pings[1].1.contains("matched nothing"), "{bad_pings:?}");
    assert_eq!(
        pings("/hb/good")
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>(),
        ["/hb/good/start", "/hb/good"]
    );
    // The secret URLs are not logged.
    assert!(
        !log.contains(&http.url("/hb")),
        "a heartbeat URL in the log"
    );
    assert!(
        !log.contains(&http.url("/teams")),
        "the Teams URL in the log"
    );
}

/// Every `*.manifest.json` under `dir`.
fn manifests(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".manifest.json") {
                out.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_restore_point_fails_the_run_and_manifests_name_the_restore_point() {
    let newest = chrono::Utc::now() - chrono::Duration::hours(75);
    let sim = Simulator::start(
        SimConfig {
            latest_backup: newest,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let hook = HttpReceiver::start().await;
    let site = Site::new(&sim.base_url(), "off");
    secret(&site, "ops-url", &hook.url("/hook"));
    secret(&site, "ops-key", SIGNING_KEY);
    append_config(
        &site,
        "notifications:\n  initialBackoff: 200ms\n  targets:\n    \
         ops: { type: webhook, url: { secret: ops-url }, signingKey: { secret: ops-key } }\n  \
         defaults: { targets: [ops] }",
    );
    site.write_job(
        "stale.yaml",
        &export_job("stale", None, "  maxRestorePointAge: 26h\n"),
    );
    site.write_job(
        "fresh.yaml",
        &export_job("fresh", None, "  maxRestorePointAge: 4d\n"),
    );
    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    let finished = |job: &'static str| {
        let store = store.clone();
        async move {
            let runs = store
                .list_runs(&RunFilter {
                    job: Some(job),
                    ..RunFilter::default()
                })
                .await
                .ok()?;
            runs.into_iter().find(|r| r.finished_at.is_some())
        }
    };
    let stale = until("the stale run finished", || finished("stale")).await;
    let fresh = until("the fresh run finished", || finished("fresh")).await;
    until("the stale notification was delivered", || async {
        hook.received()
            .iter()
            .any(|r| r.header("x-restorectl-event") == Some("stale"))
            .then_some(())
    })
    .await;
    drop(daemon);

    assert_eq!(stale.state, RunState::Failed);
    let reason = stale.reason.clone().unwrap();
    assert!(
        reason.contains("newest restore point is 3 days old"),
        "{reason}"
    );
    assert!(reason.contains("contoso.onmicrosoft.com"), "{reason}");
    assert!(reason.contains("maxRestorePointAge 1day 2h"), "{reason}");
    assert!(
        store.list_steps(stale.id).await.unwrap().is_empty(),
        "nothing was exported"
    );
    let stale_hook = hook
        .received()
        .into_iter()
        .find(|r| r.header("x-restorectl-event") == Some("stale"))
        .unwrap()
        .json();
    assert_eq!(stale_hook["run"], stale.id.to_string().as_str());
    assert_eq!(stale_hook["reason"], reason.as_str());

    assert!(
        matches!(
            fresh.state,
            RunState::Succeeded | RunState::SucceededWithWarnings
        ),
        "{fresh:?}"
    );
    let all = manifests(&site.path("exports"));
    assert!(!all.is_empty(), "the fresh run published its exports");
    for m in &all {
        let backup_time = m["backupTime"].as_str().expect("backupTime");
        let recorded = chrono::DateTime::parse_from_rfc3339(backup_time).unwrap();
        assert_eq!(recorded.timestamp(), newest.timestamp(), "{m}");
        assert!(
            m["restorePointId"].as_str().is_some_and(|s| !s.is_empty()),
            "{m}"
        );
    }
}

/// `/metrics` of a daemon listening on `port`, once it answers.
async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    until("/metrics answered", || async {
        let resp = reqwest::get(&url).await.ok()?;
        resp.status().is_success().then_some(())?;
        resp.text().await.ok()
    })
    .await
}

/// The value of the first `/metrics` line starting with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_target_and_a_hanging_heartbeat_block_neither_the_others_nor_the_runs() {
    let sim = simulator().await;
    let dead = HttpReceiver::start().await;
    dead.set_failing(true);
    let ops = HttpReceiver::start().await;
    // Accepts connections (the kernel's backlog) and never answers: every ping hangs.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_url = format!("http://{}/hb", hanging.local_addr().unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = Site::new(&sim.base_url(), &format!("127.0.0.1:{port}"));
    secret(&site, "dead-url", &dead.url("/dead"));
    secret(&site, "ops-url", &ops.url("/ops"));
    secret(&site, "hb", &hanging_url);
    secret(&site, "stuck-url", &format!("{hanging_url}/stuck"));
    secret(&site, "key", SIGNING_KEY);
    append_config(
        &site,
        "notifications:\n  initialBackoff: 200ms\n  maxBackoff: 1s\n  timeout: 2s\n  targets:\n    \
         dead: { type: webhook, url: { secret: dead-url }, signingKey: { secret: key } }\n    \
         stuck: { type: webhook, url: { secret: stuck-url }, signingKey: { secret: key } }\n    \
         ops: { type: webhook, url: { secret: ops-url }, signingKey: { secret: key } }\n  \
         defaults: { targets: [dead, stuck, ops], events: [failed, succeeded] }",
    );
    let heartbeat = "  heartbeat: { url: { secret: hb } }\n";
    site.write_job("bad.yaml", &failing_job("bad", heartbeat));
    site.write_job("good.yaml", &export_job("good", None, heartbeat));

    let daemon = Daemon::start(&site);
    let store = open_when_ready(&site).await;
    // Both runs end although every heartbeat ping hangs; `ops` gets both messages while `dead`
    // keeps refusing its two and `stuck` never answers.
    let rows = until(
        "ops delivered both while dead and stuck kept failing",
        || async {
            let rows = notifications(&store).await;
            let delivered = |target: &str| {
                rows.iter()
                    .filter(|r| r.target == target && r.delivered_at.is_some())
                    .count()
            };
            let retried = rows
                .iter()
                .filter(|r| r.target != "ops")
                .all(|r| r.attempts >= 2);
            let failing_delivered = delivered("dead") + delivered("stuck");
            (rows.len() == 6 && delivered("ops") == 2 && failing_delivered == 0 && retried)
                .then_some(rows)
        },
    )
    .await;
    let metrics = scrape(port).await;
    let log = daemon.log();
    drop(daemon);

    let states: Vec<RunState> = store
        .list_runs(&RunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(states.contains(&RunState::Failed), "{states:?}");
    assert!(
        states
            .iter()
            .any(|s| matches!(s, RunState::Succeeded | RunState::SucceededWithWarnings)),
        "{states:?}"
    );
    assert_eq!(ops.received().len(), 2, "ops: once per notification");
    assert!(dead.received().iter().all(|r| r.status == 500));
    println!(
        "dead: {} attempts over {} notifications",
        dead.received().len(),
        rows.iter().filter(|r| r.target == "dead").count()
    );

    // The delivery failures are series on the daemon's own /metrics, per target.
    for target in ["dead", "stuck"] {
        let series = format!("restorectl_notifications_failed_total{{target=\"{target}\"");
        let failed = sample(&metrics, &series)
            .unwrap_or_else(|| panic!("no failure series for {target}:\n{metrics}"));
        assert!(failed >= 1.0, "{target}: {failed}");
    }
    assert!(
        sample(
            &metrics,
            "restorectl_notifications_failed_total{target=\"ops\""
        )
        .is_none(),
        "ops never failed:\n{metrics}"
    );
    let delivered: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("restorectl_notifications_delivered_total{target=\"ops\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(delivered, 2.0, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "restorectl_notifications_pending{target=\"dead\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    // A delivery failure is a log line naming the target, not the secret URL.
    assert!(log.contains("dead"), "{log}");
    assert!(
        !log.contains(&dead.url("/dead")),
        "the target's URL in the log"
    );
    assert!(!log.contains(&hanging_url), "the heartbeat URL in the log");
}
