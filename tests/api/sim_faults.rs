//! Fault injection over real HTTP: error codes, bare statuses, 429, delays, a body cut after N
//! bytes, a restore whose answer is lost, token expiry and a session that disappears.

use std::time::Duration;

use crate::sim_support::{Api, eventually, fast_config, sha256_hex};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, RANGE, RETRY_AFTER};
use restorectl::sim::{CallRange, Endpoint, ExportSpec, FaultAction, FaultRule, SimConfig};
use serde_json::{Value, json};

fn error(status: u16, code: &str) -> FaultAction {
    FaultAction::Error {
        status,
        error_code: Some(code.into()),
        message: None,
    }
}

#[tokio::test]
async fn error_codes_statuses_429_and_delays_hit_only_the_chosen_calls() {
    let api = Api::new(fast_config()).await;
    for (status, code) in [
        (503, "ProxyOffline"),
        (504, "Timeout"),
        (409, "OperationConflict"),
        (403, "ResourceAccessDenied"),
        (500, "HttpError"),
    ] {
        api.sim.clear_faults();
        api.sim
            .add_fault(
                FaultRule::on(Endpoint::Organizations, error(status, code))
                    .calls(CallRange::only(2)),
            )
            .expect("rule");
        assert_eq!(
            api.get("/v8/Organizations").await.0,
            StatusCode::OK,
            "call 1 untouched"
        );
        let (got, body) = api.get("/v8/Organizations").await;
        assert_eq!(got.as_u16(), status);
        assert_eq!(body["errorCode"], code);
        assert!(body["message"].is_string());
        assert_eq!(
            api.get("/v8/Organizations").await.0,
            StatusCode::OK,
            "call 3 untouched"
        );
    }
    api.sim.clear_faults();
    api.sim
        .add_fault(FaultRule {
            method: Some("get".into()),
            path: Some("/v8/organizations*".into()),
            ..FaultRule::on(Endpoint::Organizations, FaultAction::Status { status: 502 })
        })
        .expect("rule");
    let resp = api
        .http
        .get(api.url("/V8/Organizations"))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(
        resp.bytes().await.expect("body").is_empty(),
        "bare status, empty body"
    );
    api.sim.clear_faults();
    api.sim
        .add_fault(
            FaultRule::on(
                Endpoint::Jobs,
                FaultAction::TooManyRequests {
                    retry_after_seconds: 7,
                },
            )
            .calls(CallRange::between(1, 2)),
        )
        .expect("rule");
    for _ in 0..2 {
        let resp = api
            .http
            .get(api.url("/v8/Jobs"))
            .bearer_auth(&api.token)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[RETRY_AFTER], "7");
    }
    assert_eq!(api.get("/v8/Jobs").await.0, StatusCode::OK);
    api.sim
        .add_fault(FaultRule::on(
            Endpoint::Organization,
            FaultAction::Delay {
                duration: Duration::from_millis(20),
            },
        ))
        .expect("rule");
    assert_eq!(
        api.get(&format!(
            "/v8/Organizations/{}",
            restorectl::sim::DEMO_ORG_ID
        ))
        .await
        .0,
        StatusCode::OK
    );
    let delayed = api
        .sim
        .journal()
        .into_iter()
        .rfind(|e| e.is("GET", "/v8/Organizations/{organizationId}"))
        .expect("entry");
    assert_eq!(delayed.fault.as_deref(), Some("delay 20ms"));
}

#[tokio::test]
async fn an_export_body_broken_after_n_bytes_can_be_resumed() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let alice = api.mailbox_id("alice@contoso.com");
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{alice}/exportToPst");
    api.sim
        .add_fault(
            FaultRule::on(
                Endpoint::ExportPst,
                FaultAction::DropAfterBytes { bytes: 100_000 },
            )
            .calls(CallRange::only(1)),
        )
        .expect("rule");
    let resp = api
        .http
        .post(api.url(&path))
        .bearer_auth(&api.token)
        .json(&json!({}))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(resp.status(), StatusCode::OK);
    let len: u64 = resp.headers()[CONTENT_LENGTH]
        .to_str()
        .expect("len")
        .parse()
        .expect("num");
    let mut got = Vec::new();
    let mut resp = resp;
    let broken = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(broken, "the body must fail, not end cleanly");
    assert_eq!(got.len(), 100_000);
    assert!((got.len() as u64) < len);
    let rest = api
        .http
        .post(api.url(&path))
        .bearer_auth(&api.token)
        .header(RANGE, format!("bytes={}-", got.len()))
        .json(&json!({}))
        .send()
        .await
        .expect("resume");
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    got.extend_from_slice(&rest.bytes().await.expect("rest"));
    let spec = ExportSpec {
        mailbox_id: alice,
        keyword: None,
        point_in_time: None,
        pst_size_limit: None,
    };
    assert_eq!(
        api.sim.export_digest(&spec).expect("digest"),
        (sha256_hex(&got), len)
    );
    // JSON answers can be cut too.
    api.sim
        .add_fault(FaultRule::on(
            Endpoint::Mailboxes,
            FaultAction::DropAfterBytes { bytes: 10 },
        ))
        .expect("rule");
    let resp = api
        .http
        .get(api.url(&format!("/v8/RestoreSessions/{rs}/organization/mailboxes")))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("headers");
    assert!(resp.json::<Value>().await.is_err());
}

#[tokio::test]
async fn a_lost_restore_answer_still_starts_the_restore() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let alice = api.mailbox_id("alice@contoso.com");
    api.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, FaultAction::LoseResponse)
                .calls(CallRange::only(1)),
        )
        .expect("rule");
    let body = json!({"userName": "admin@contoso.com", "userPassword": "pw"});
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{alice}/restore");
    let result = api
        .http
        .post(api.url(&path))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await;
    assert!(
        result.is_err(),
        "transport error instead of an answer: {result:?}"
    );
    assert_eq!(api.sim.restore_calls(alice), 1);
    let entry = api
        .sim
        .journal()
        .into_iter()
        .find(|e| {
            e.route
                .as_deref()
                .is_some_and(|r| r.ends_with("{mailboxId}/restore"))
        })
        .expect("journaled");
    assert_eq!(entry.status, None);
    assert_eq!(entry.decided_status, Some(200));
    assert_eq!(entry.fault.as_deref(), Some("loseResponse"));
    // The explore session shows the restore that really ran.
    let events = eventually(|| async {
        let (_, page) = api.get(&format!("/v8/RestoreSessions/{rs}/Events")).await;
        let done: Vec<Value> = page["results"]
            .as_array()?
            .iter()
            .filter(|e| e["type"] == "Restore" && e["status"] == "Success")
            .cloned()
            .collect();
        (!done.is_empty()).then_some(done)
    })
    .await;
    assert_eq!(events[0]["source"], "alice@contoso.com");
    // The server keeps serving; the next call is answered.
    assert_eq!(api.post(&path, body).await.0, StatusCode::OK);
    assert_eq!(api.sim.restore_calls(alice), 2);
}

#[tokio::test]
async fn an_error_whose_answer_is_lost_restores_nothing_and_the_journal_says_so() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let alice = api.mailbox_id("alice@contoso.com");
    for action in [error(504, "Timeout"), FaultAction::LoseResponse] {
        api.sim
            .add_fault(FaultRule::on(Endpoint::MailboxRestore, action).calls(CallRange::only(1)))
            .expect("rule");
    }
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{alice}/restore");
    let result = api
        .http
        .post(api.url(&path))
        .bearer_auth(&api.token)
        .json(&json!({"userName": "admin@contoso.com", "userPassword": "pw"}))
        .send()
        .await;
    assert!(result.is_err(), "the answer is lost: {result:?}");
    assert_eq!(api.sim.restore_calls(alice), 0);
    let entry = api
        .sim
        .journal()
        .into_iter()
        .find(|e| e.param("mailboxId").is_some())
        .expect("journaled");
    assert_eq!(entry.status, None);
    assert_eq!(entry.decided_status, Some(504));
    assert_eq!(
        entry.fault.as_deref(),
        Some("error 504 Timeout, loseResponse")
    );
}

#[tokio::test]
async fn tokens_can_expire_and_sessions_can_disappear_mid_sequence() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let login: Value = api
        .http
        .post(api.url("/v8/token"))
        .form(&crate::sim_support::dev_form())
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    api.sim
        .add_fault(
            FaultRule::on(Endpoint::Organizations, FaultAction::ExpireTokens)
                .calls(CallRange::only(1)),
        )
        .expect("rule");
    assert_eq!(
        api.get("/v8/Organizations").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get("/v8/Jobs").await.0,
        StatusCode::UNAUTHORIZED,
        "the token stays expired"
    );
    let refreshed = api
        .http
        .post(api.url("/v8/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                login["refresh_token"].as_str().expect("rt"),
            ),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), StatusCode::OK);
    let token = refreshed.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let api = Api { token, ..api };
    assert_eq!(api.get("/v8/Organizations").await.0, StatusCode::OK);

    api.sim
        .add_fault(FaultRule::on(
            Endpoint::Mailboxes,
            FaultAction::RemoveSession,
        ))
        .expect("rule");
    let (status, err) = api
        .get(&format!("/v8/RestoreSessions/{rs}/organization/mailboxes"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["errorCode"], "ResourceNotFound");
    assert_eq!(
        api.get(&format!("/v8/RestoreSessions/{rs}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(api.sim.session(rs.parse().expect("uuid")).is_none());
}

#[tokio::test]
async fn faults_can_come_from_the_configuration() {
    let yaml = "faults:\n  - endpoint: organizationExplore\n    calls: { from: 1, to: 1 }\n    action: { kind: error, status: 500, errorCode: ProxyOffline, message: backup proxy unreachable }\n";
    let config: SimConfig = serde_yaml::from_str(yaml).expect("config");
    let api = Api::new(SimConfig {
        faults: config.faults,
        ..fast_config()
    })
    .await;
    let (status, err) = api
        .post(
            &format!("/v8/Organizations/{}/explore", restorectl::sim::DEMO_ORG_ID),
            json!({"type": "Vex"}),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err["message"], "backup proxy unreachable");
    api.explore().await;
}

/// `executeThenAnswer`: the restore really starts, the client gets the chosen error, and the
/// journal keeps both what was decided (200, executed) and what was answered.
#[tokio::test]
async fn a_restore_executed_then_answered_500_runs_once_and_the_journal_says_so() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let alice = api.mailbox_id("alice@contoso.com");
    api.sim
        .add_fault(
            FaultRule::on(
                Endpoint::MailboxRestore,
                FaultAction::ExecuteThenAnswer {
                    status: 500,
                    error_code: Some("Timeout".into()),
                    message: None,
                    body: None,
                },
            )
            .calls(CallRange::only(1)),
        )
        .expect("rule");
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{alice}/restore");
    let (status, body) = api
        .post(
            &path,
            json!({"userName": "admin@contoso.com", "userPassword": "pw"}),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["errorCode"], "Timeout", "{body}");
    assert_eq!(
        api.sim.restore_calls(alice),
        1,
        "executed before the answer"
    );
    let entry = api
        .sim
        .journal()
        .into_iter()
        .find(|e| e.param("mailboxId").is_some())
        .expect("journaled");
    assert_eq!(entry.status, Some(500));
    assert_eq!(entry.decided_status, Some(200));
    assert_eq!(
        entry.fault.as_deref(),
        Some("executeThenAnswer 500 Timeout")
    );
}
