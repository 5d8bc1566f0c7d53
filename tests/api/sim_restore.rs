//! Mailbox restores against the simulator: the three kinds in both readings of `sessionId`,
//! completion through session state, `Restore` events and statistics, configured outcomes, the
//! request checks the schema cannot express, and device-code sign-in (`restoreDeviceCode`, a
//! `userCode` accepted only once signed in, in its own session, before it expired).

use crate::sim_support::{Api, eventually, fast_config};
use reqwest::StatusCode;
use restorectl::sim::schema::validate_response;
use restorectl::sim::{RestoreOutcome, SessionIdMode, SimConfig};
use serde_json::{Value, json};

fn app_credentials() -> Value {
    json!({
        "applicationId": "8a4b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
        "applicationCertificate": "TUlJS2Zha2VjZXJ0",
        "applicationCertificatePassword": "cert-pass",
        "impersonationAccountName": "admin@contoso.com"
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        a.extend(b.clone());
    }
    a
}

struct Kind {
    name: &'static str,
    path: String,
    body: Value,
    mailboxes: Vec<&'static str>,
}

fn kinds(api: &Api, rs: &str) -> Vec<Kind> {
    let id = |email: &str| api.sim.mailbox(email, false).expect("mailbox").id;
    let base = format!("/v8/RestoreSessions/{rs}/organization/mailboxes");
    vec![
        Kind {
            name: "original",
            path: format!("{base}/{}/restore", id("alice@contoso.com")),
            body: app_credentials(),
            mailboxes: vec!["alice@contoso.com"],
        },
        Kind {
            name: "restoreTo",
            path: format!("{base}/{}/restoreTo", id("bob@contoso.com")),
            body: merge(
                app_credentials(),
                json!({"mailbox": "legal-review@contoso.com", "folder": "Restored/bob", "casServer": "outlook.office365.com",
                "officeRegion": "Worldwide", "changedItems": true, "deletedItems": true, "markRestoredAsUnread": false, "excludeDrafts": false,
                "excludeDeletedItems": false, "excludeInPlaceHoldItems": true, "excludeLitigationHoldItems": true}),
            ),
            mailboxes: vec!["bob@contoso.com"],
        },
        Kind {
            name: "bulk",
            path: format!("{base}/restore"),
            body: json!({"mailboxes": [{"id": id("carol@contoso.com")}, {"id": id("dave@contoso.com")}], "casServer": "outlook.office365.com",
                "office365UserName": "admin@contoso.com", "office365UserPassword": "pw", "skipUnresolved": true, "recentItemRestorePeriod": 30}),
            mailboxes: vec!["carol@contoso.com", "dave@contoso.com"],
        },
    ]
}

/// Restore events of a session once none is running.
async fn finished_restore_events(api: &Api, session: &str) -> Vec<Value> {
    eventually(|| async {
        let (status, page) = api
            .get(&format!("/v8/RestoreSessions/{session}/Events?limit=1000"))
            .await;
        assert_eq!(status, StatusCode::OK);
        let restores: Vec<Value> = page["results"]
            .as_array()?
            .iter()
            .filter(|e| e["type"] == "Restore")
            .cloned()
            .collect();
        (!restores.is_empty() && restores.iter().all(|e| e["status"] != "Running"))
            .then_some(restores)
    })
    .await
}

async fn check_statistics(api: &Api, session: &str, emails: &[&str]) {
    let (status, stats) = api
        .get(&format!("/v8/RestoreSessions/{session}/Statistics"))
        .await;
    assert_eq!(status, StatusCode::OK);
    validate_response(
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/Statistics",
        200,
        &stats,
    )
    .expect("statistics shape");
    let items = stats["items"].as_array().expect("items");
    for email in emails {
        let item = items
            .iter()
            .find(|i| i["mailboxEmail"] == *email)
            .expect("item per mailbox");
        assert_eq!(item["itemRestoreDetailsType"], "BulkMailbox");
        assert_eq!(item["status"], "Success");
        assert!(
            item["createdMailboxItemsCount"]
                .as_i64()
                .is_some_and(|n| n > 0)
        );
    }
    assert!(stats["restoredItemsCount"].as_i64().is_some_and(|n| n > 0));
    assert_eq!(stats["failedItemsCount"], 0);
}

#[tokio::test]
async fn every_restore_kind_completes_in_both_session_id_modes() {
    for mode in [SessionIdMode::NewSession, SessionIdMode::ExploreSession] {
        let api = Api::new(SimConfig {
            session_id_mode: mode,
            ..fast_config()
        })
        .await;
        let rs = api.explore().await;
        for kind in kinds(&api, &rs) {
            let (status, answer) = api.post(&kind.path, kind.body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{} {mode:?}: {answer}", kind.name);
            let session = answer["sessionId"].as_str().expect("sessionId").to_string();
            match mode {
                SessionIdMode::NewSession => {
                    assert_ne!(session, rs, "a new operation session");
                    let done = eventually(|| async {
                        let (_, s) = api.get(&format!("/v8/RestoreSessions/{session}")).await;
                        (s["state"] == "Stopped").then_some(s)
                    })
                    .await;
                    assert_eq!(done["result"], "Success");
                    assert!(done["endTime"].is_string());
                    let info = api
                        .sim
                        .session(session.parse().expect("uuid"))
                        .expect("info");
                    assert_eq!(info.operation_of.map(|u| u.to_string()), Some(rs.clone()));
                }
                SessionIdMode::ExploreSession => {
                    assert_eq!(session, rs, "the explore session itself")
                }
            }
            let events = finished_restore_events(&api, &session).await;
            for email in &kind.mailboxes {
                let e = events
                    .iter()
                    .find(|e| e["source"] == *email)
                    .expect("event per mailbox");
                assert_eq!(e["status"], "Success", "{}", kind.name);
                assert!(e["endTime"].is_string());
            }
            check_statistics(&api, &session, &kind.mailboxes).await;
            for email in &kind.mailboxes {
                assert_eq!(
                    api.sim
                        .restore_calls(api.sim.mailbox(email, false).expect("mb").id),
                    1
                );
            }
        }
        // The explore session keeps working in both modes, and (mirrored) logs the restores.
        let (_, explore) = api.get(&format!("/v8/RestoreSessions/{rs}")).await;
        assert_eq!(explore["state"], "Working");
        let mirrored = finished_restore_events(&api, &rs).await;
        assert_eq!(mirrored.len(), 4);
        let journal = api.sim.journal();
        let restores = journal.iter().filter(|e| e.is("POST", "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restore")).count();
        assert_eq!(restores, 1);
        let restore = journal.iter().find(|e| e.is("POST", "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restore")).expect("restore");
        assert_eq!(
            restore.body.as_ref().expect("body")["applicationCertificate"],
            restorectl::sim::REDACTED
        );
    }
}

#[tokio::test]
async fn configured_outcomes_show_in_events_statistics_and_result() {
    let mut config = fast_config();
    config.restore_outcomes.insert(
        "carol@contoso.com".into(),
        RestoreOutcome::Warning { failed_items: 3 },
    );
    let api = Api::new(config).await;
    api.sim.set_restore_outcome(
        "dave@contoso.com",
        RestoreOutcome::CannotContinue {
            error: "Mailbox is on hold".into(),
        },
    );
    api.sim.set_restore_outcome(
        "erin@contoso.com",
        RestoreOutcome::Failed {
            error: "Access denied".into(),
        },
    );
    let rs = api.explore().await;
    let id = |e: &str| api.sim.mailbox(e, false).expect("mb").id;
    let body = merge(
        app_credentials(),
        json!({"mailboxes": [{"id": id("carol@contoso.com")}, {"id": id("dave@contoso.com")}, {"id": id("erin@contoso.com")}, {"id": id("frank@contoso.com")}]}),
    );
    let (status, answer) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/organization/mailboxes/restore"),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let session = answer["sessionId"].as_str().expect("id").to_string();
    let events = finished_restore_events(&api, &session).await;
    let status_of = |email: &str| {
        events
            .iter()
            .find(|e| e["source"] == email)
            .map(|e| e["status"].clone())
    };
    assert_eq!(status_of("carol@contoso.com"), Some(json!("Warning")));
    assert_eq!(status_of("dave@contoso.com"), Some(json!("Failed")));
    assert_eq!(status_of("erin@contoso.com"), Some(json!("Failed")));
    assert_eq!(status_of("frank@contoso.com"), Some(json!("Success")));
    let done = eventually(|| async {
        let (_, s) = api.get(&format!("/v8/RestoreSessions/{session}")).await;
        (s["state"] == "Stopped").then_some(s)
    })
    .await;
    assert_eq!(done["result"], "Failed");
    let (_, stats) = api
        .get(&format!("/v8/RestoreSessions/{session}/Statistics"))
        .await;
    let item = |email: &str| {
        stats["items"]
            .as_array()
            .and_then(|i| i.iter().find(|x| x["mailboxEmail"] == email).cloned())
            .expect("item")
    };
    assert_eq!(item("carol@contoso.com")["status"], "Warning");
    assert_eq!(item("carol@contoso.com")["failedMailboxItemsCount"], 3);
    assert_eq!(
        item("dave@contoso.com")["cannotContinueMailboxError"],
        "Mailbox is on hold"
    );
    assert_eq!(item("erin@contoso.com")["error"], "Access denied");
    assert!(stats["failedItemsCount"].as_i64().is_some_and(|n| n > 3));
    assert_eq!(stats["errors"].as_array().map(Vec::len), Some(2));
    assert_eq!(stats["warnings"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn restores_without_credentials_or_mailboxes_are_rejected_and_not_started() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let alice = api.mailbox_id("alice@contoso.com");
    let base = format!("/v8/RestoreSessions/{rs}/organization/mailboxes");
    let cases = [
        (
            format!("{base}/{alice}/restore"),
            json!({"impersonationAccountName": "admin@contoso.com"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/{alice}/restore"),
            json!({"applicationId": "8a4b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/{alice}/restore"),
            merge(
                app_credentials(),
                json!({"applicationCertificate": "not base64!"}),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/{alice}/restore"),
            json!({"userName": "admin@contoso.com", "office365UserPassword": "pw"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/restore"),
            app_credentials(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/restore"),
            merge(app_credentials(), json!({"mailboxes": []})),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{base}/restore"),
            merge(
                app_credentials(),
                json!({"mailboxes": [{"id": uuid::Uuid::new_v4()}]}),
            ),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("{base}/{}/restore", uuid::Uuid::new_v4()),
            app_credentials(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (path, body, expected) in cases {
        let (status, err) = api.post(&path, body.clone()).await;
        assert_eq!(status, expected, "{path} {body}: {err}");
        let code = if expected == StatusCode::NOT_FOUND {
            "ResourceNotFound"
        } else {
            "ParameterValidationFailure"
        };
        assert_eq!(err["errorCode"], code);
    }
    assert_eq!(api.sim.restore_calls(alice), 0);
    let (status, _) = api
        .post(
            &format!("{base}/{alice}/restore"),
            json!({"userName": "admin@contoso.com", "userPassword": "pw"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.sim.restore_calls(alice), 1);
}

/// A script lists the mailboxes and sends the objects back as they came, `_links` and
/// `_actions` included. The real server ignores the read-only properties, so does the
/// simulator: the restore runs, and the journal notes what was ignored.
#[tokio::test]
async fn listed_mailbox_objects_sent_back_with_links_and_actions_are_accepted() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let (status, page) = api
        .get(&format!(
            "/v8/RestoreSessions/{rs}/organization/mailboxes?limit=2"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = page["results"].as_array().expect("results").clone();
    assert!(listed[0]["_actions"].is_object() && listed[0]["_links"].is_object());
    let body = merge(app_credentials(), json!({ "mailboxes": listed }));
    let (status, answer) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/organization/mailboxes/restore"),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for m in &listed {
        let id = m["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(api.sim.restore_calls(id), 1);
    }
    let entry = api
        .sim
        .journal()
        .into_iter()
        .find(|e| e.method == "POST" && e.path.ends_with("/mailboxes/restore"))
        .expect("journaled");
    assert_eq!(
        entry.ignored_read_only,
        ["mailboxes[0]._actions", "mailboxes[1]._actions"]
    );
}

#[tokio::test]
async fn a_user_code_is_accepted_only_once_signed_in_in_its_own_session() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let other = api.explore().await;
    let alice = api.mailbox_id("alice@contoso.com");
    let bob = api.mailbox_id("bob@contoso.com");
    let (status, code) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/organization/restoreDeviceCode"),
            json!({"targetRegion": "Worldwide", "targetOrganizationName": "contoso.onmicrosoft.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{code}");
    validate_response(
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/restoreDeviceCode",
        200,
        &code,
    )
    .expect("the answer matches RESTDeviceCodeResponse");
    assert_eq!(code["expiresIn"], 900);
    assert_eq!(code["verificationUrl"], "https://microsoft.com/devicelogin");
    let user_code = code["userCode"].as_str().unwrap().to_string();
    assert!(code["message"].as_str().unwrap().contains(&user_code));
    // A body that is not RESTDeviceCodeRequestOptions is refused by the schema check.
    let (status, _) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/organization/restoreDeviceCode"),
            json!({"targetRegion": "Mars"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let restore = |session: &str, mailbox: uuid::Uuid| {
        format!("/v8/RestoreSessions/{session}/organization/mailboxes/{mailbox}/restore")
    };
    let body = json!({"userCode": user_code});
    let (status, err) = api.post(&restore(&rs, alice), body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"].as_str().unwrap().contains("signed in"),
        "{err}"
    );
    assert!(!api.sim.sign_in_device_code("NOSUCHCODE"));
    assert!(api.sim.sign_in_device_code(&user_code));
    let (status, err) = api.post(&restore(&other, alice), body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "another session: {err}");
    assert_eq!(api.sim.restore_calls(alice), 0);
    for mailbox in [alice, bob] {
        let (status, answer) = api.post(&restore(&rs, mailbox), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(api.sim.restore_calls(mailbox), 1);
    }
    // The bulk and restoreTo bodies carry it too; restoreTo needs no target mailbox.
    let base = format!("/v8/RestoreSessions/{rs}/organization/mailboxes");
    let (status, answer) = api
        .post(
            &format!("{base}/restore"),
            json!({"userCode": user_code, "mailboxes": [{"id": alice}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = api
        .post(
            &format!("{base}/{bob}/restoreTo"),
            json!({"userCode": user_code, "folder": "\\Restored\\..", "officeOrganizationName": "fabrikam.onmicrosoft.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(api.sim.device_code_requests().len(), 1);
}

#[tokio::test]
async fn an_expired_device_code_cannot_be_signed_in_nor_used() {
    let api = Api::new(SimConfig {
        device_code_lifetime: std::time::Duration::ZERO,
        ..fast_config()
    })
    .await;
    let rs = api.explore().await;
    let (_, code) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/organization/restoreDeviceCode"),
            json!({}),
        )
        .await;
    let user_code = code["userCode"].as_str().unwrap();
    assert!(!api.sim.sign_in_device_code(user_code));
    let alice = api.mailbox_id("alice@contoso.com");
    let (status, err) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{alice}/restore"),
            json!({"userCode": user_code}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"].as_str().unwrap().contains("expired"),
        "{err}"
    );
    assert_eq!(api.sim.restore_calls(alice), 0);
}

#[tokio::test]
async fn organization_explore_accepts_the_world_repository_only() {
    let api = Api::new(fast_config()).await;
    let org = api.sim.organizations()[0].0;
    let path = format!("/v8/Organizations/{org}/explore");
    let (status, session) = api
        .post(
            &path,
            json!({"type": "Vex", "showDeleted": true, "showAllVersions": true, "repositoryId": api.sim.repository_id()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let (status, err) = api
        .post(
            &path,
            json!({"type": "Vex", "repositoryId": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["errorCode"], "ResourceNotFound");
}

/// `restorectl simulate` and `daemon --dev` have no browser either: the operator signs a code in
/// with `POST /sim/devicelogin?code=CODE` on the simulator's address.
#[tokio::test]
async fn an_operator_signs_a_device_code_in_over_http() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let alice = api.mailbox_id("alice@contoso.com");
    let (_, code) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/organization/restoreDeviceCode"),
            json!({}),
        )
        .await;
    let user_code = code["userCode"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let sign_in = |query: String| {
        let url = format!("{}/sim/devicelogin{query}", api.sim.base_url());
        let http = http.clone();
        async move { http.post(url).send().await.unwrap().status() }
    };
    assert_eq!(sign_in(String::new()).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        sign_in("?code=NOSUCHCODE".into()).await,
        StatusCode::NOT_FOUND
    );
    let restore = format!("/v8/RestoreSessions/{rs}/organization/mailboxes/{alice}/restore");
    let body = json!({"userCode": user_code});
    let (status, _) = api.post(&restore, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not signed in yet");
    // Codes are read case-insensitively, as a person types them.
    let typed = user_code.to_ascii_lowercase();
    assert_eq!(sign_in(format!("?code={typed}")).await, StatusCode::OK);
    let (status, answer) = api.post(&restore, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(api.sim.restore_calls(alice), 1);
    // Not a vendor route: not in the journal.
    assert!(
        api.sim
            .journal()
            .iter()
            .all(|e| !e.path.starts_with("/sim/"))
    );
}
