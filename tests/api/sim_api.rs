//! The simulator over real HTTP on loopback: world and paging, tokens, restore-session
//! lifecycle, case-insensitive routing, request validation, response shapes and the journal.

use std::collections::HashSet;
use std::time::Duration;

use crate::sim_support::{Api, dev_form, eventually, fast_config, login, sha256_hex, start};
use reqwest::StatusCode;
use restorectl::sim::schema::validate_response;
use restorectl::sim::{
    DEMO_ORG_ID, PAGING_ORG_MAILBOXES, REDACTED, SimConfig, StoppedSessions, TokenDateFormat,
};
use serde_json::{Value, json};

const MAILBOXES: &str = "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes";

async fn fabrikam(api: &Api) -> String {
    let (_, orgs) = api.get("/v8/Organizations").await;
    let org = orgs["results"]
        .as_array()
        .expect("orgs")
        .iter()
        .find(|o| o["name"] == "fabrikam.onmicrosoft.com")
        .expect("fabrikam")
        .clone();
    let (status, session) = api
        .post(
            &format!(
                "/v8/Organizations/{}/explore",
                org["id"].as_str().expect("id")
            ),
            json!({"type": "Vex"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    session["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn world_is_deterministic_and_pages_cover_all_2500_mailboxes() {
    let api = Api::new(fast_config()).await;
    let rs = fabrikam(&api).await;
    let path = format!("/v8/RestoreSessions/{rs}/organization/mailboxes");
    for limit in [1000, 7] {
        let all = api.all_pages(&path, limit).await;
        assert_eq!(all.len(), PAGING_ORG_MAILBOXES, "limit {limit}");
        let ids: HashSet<&str> = all.iter().filter_map(|m| m["id"].as_str()).collect();
        assert_eq!(ids.len(), PAGING_ORG_MAILBOXES);
        assert_eq!(all[0]["email"], "user0001@fabrikam.com");
        assert_eq!(all[2499]["email"], "user2500@fabrikam.com");
    }
    // Default page size 30, relative links, a setId, no total count; limits clamp to 10,000.
    let (_, page) = api.get(&path).await;
    assert_eq!(page["limit"], 30);
    assert_eq!(page["results"].as_array().map(Vec::len), Some(30));
    assert!(page["setId"].is_string());
    assert!(page.get("totalCount").is_none());
    assert_eq!(
        page["_links"]["next"]["href"],
        format!("{path}?offset=30&limit=30")
    );
    validate_response("GET", MAILBOXES, 200, &page).expect("page shape");
    let (_, big) = api.get(&format!("{path}?limit=20000")).await;
    assert_eq!(big["limit"], 10_000);
    assert_eq!(
        big["results"].as_array().map(Vec::len),
        Some(PAGING_ORG_MAILBOXES)
    );

    // Same seed, same ids; another seed, other ids (except the fixed demo organisation id).
    let twin = Api::new(fast_config()).await;
    let other = Api::new(SimConfig {
        seed: 99,
        ..fast_config()
    })
    .await;
    let alice = |a: &Api| a.sim.mailbox("alice@contoso.com", false).expect("alice").id;
    assert_eq!(alice(&api), alice(&twin));
    assert_ne!(alice(&api), alice(&other));
    let rs2 = twin.explore().await;
    let contoso = twin
        .all_pages(
            &format!("/v8/RestoreSessions/{rs2}/organization/mailboxes"),
            1000,
        )
        .await;
    assert_eq!(contoso.len(), 36);
    let archives: Vec<&Value> = contoso.iter().filter(|m| m["isArchive"] == true).collect();
    assert_eq!(archives.len(), 4);
    assert!(
        contoso
            .iter()
            .any(|m| m["id"] == json!(alice(&api)) && m["email"] == "alice@contoso.com")
    );
}

#[tokio::test]
async fn tokens_expire_refresh_and_log_out() {
    let sim = start(SimConfig {
        token_lifetime: Duration::from_secs(1),
        token_date_format: TokenDateFormat::Rfc3339,
        ..fast_config()
    })
    .await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let pair = login(&http, &base).await;
    assert_eq!(pair["expires_in"], 1);
    assert_eq!(pair["token_type"], "bearer");
    assert!(
        chrono::DateTime::parse_from_rfc3339(pair[".expires"].as_str().expect("expires")).is_ok()
    );
    validate_response("POST", "/v8/token", 200, &pair).expect("token shape");
    let access = pair["access_token"].as_str().expect("access").to_string();
    let orgs = |token: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/v8/Organizations"))
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .status()
        }
    };
    // 401 once the 1 s lifetime is over (polled, not timed).
    eventually(|| {
        let f = orgs(access.clone());
        async move { (f.await == StatusCode::UNAUTHORIZED).then_some(()) }
    })
    .await;
    let refresh = pair["refresh_token"].as_str().expect("refresh");
    let resp = http
        .post(format!("{base}/v8/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .expect("refresh");
    assert_eq!(resp.status(), StatusCode::OK);
    let renewed: Value = resp.json().await.expect("json");
    assert_ne!(renewed["access_token"], pair["access_token"]);
    // A refresh token is single-use.
    let again = http
        .post(format!("{base}/v8/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .expect("refresh");
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        again.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );

    // JSON grant with a long lifetime on a second simulator; logout revokes.
    let sim2 = start(fast_config()).await;
    let base2 = sim2.base_url();
    let body = json!({"grant_type": "password", "username": "contoso\\SVC-RESTORE", "password": "restorectl-dev", "disable_antiforgery_token": true});
    let pair: Value = http
        .post(format!("{base2}/v8/token"))
        .json(&body)
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = pair["access_token"].as_str().expect("access").to_string();
    assert!(
        pair[".issued"].as_str().is_some_and(|s| s.ends_with("GMT")),
        "RFC 1123 by default"
    );
    let ok = http
        .get(format!("{base2}/v8/Organizations"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), StatusCode::OK);
    let out = http
        .post(format!("{base2}/v8/token/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = http
        .get(format!("{base2}/v8/Organizations"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let body: Value = after.json().await.expect("401 body");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Authorization has been denied"))
    );
    for bearer in [None, Some("not-a-token")] {
        let mut req = http.get(format!("{base2}/v8/Organizations"));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        assert_eq!(
            req.send().await.expect("get").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Bad credentials: 400 in the OAuth form (v1-era evidence).
    let mut bad = dev_form();
    bad[2] = ("password", "wrong");
    let resp = http
        .post(format!("{base2}/v8/token"))
        .form(&bad)
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["error"], "invalid_grant");
    assert!(err["error_description"].is_string());
    let resp = http
        .post(format!("{base2}/v8/token"))
        .form(&[("grant_type", "operator")])
        .send()
        .await
        .expect("token");
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"],
        "unsupported_grant_type"
    );
}

#[tokio::test]
async fn explore_stop_and_stopped_sessions() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let (status, session) = api.get(&format!("/v8/RestoreSessions/{rs}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["state"], "Working");
    assert_eq!(session["organization"], "contoso.onmicrosoft.com");
    assert!(session["endTime"].is_null());
    validate_response(
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}",
        200,
        &session,
    )
    .expect("session shape");
    let (_, list) = api
        .get("/v8/RestoreSessions?orderBy=CreationTime&orderAsc=true")
        .await;
    assert!(
        list["results"]
            .as_array()
            .expect("list")
            .iter()
            .any(|s| s["id"] == json!(rs))
    );
    validate_response("GET", "/v8/RestoreSessions", 200, &list).expect("list shape");
    let (_, org) = api
        .get(&format!("/v8/RestoreSessions/{rs}/organization"))
        .await;
    assert_eq!(org["id"], json!(DEMO_ORG_ID));
    let (_, orgs) = api.get("/v8/Organizations?extendedView=true").await;
    validate_response("GET", "/v8/Organizations", 200, &orgs).expect("orgs shape");
    assert_eq!(orgs["results"][0]["isBackedup"], true);
    let (_, one) = api.get(&format!("/v8/Organizations/{DEMO_ORG_ID}")).await;
    assert_eq!(one["name"], "contoso.onmicrosoft.com");

    // Job explore, and an explore before the first backup yields a session without data.
    let (_, jobs) = api
        .get(&format!("/v8/Jobs?organizationId={DEMO_ORG_ID}"))
        .await;
    validate_response("GET", "/v8/Jobs", 200, &jobs).expect("jobs shape");
    let job = jobs["results"][0]["id"].as_str().expect("job").to_string();
    let (status, empty) = api
        .post(
            &format!("/v8/Jobs/{job}/explore"),
            json!({"type": "Vex", "dateTime": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, page) = api
        .get(&format!(
            "/v8/RestoreSessions/{}/organization/mailboxes",
            empty["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(page["results"].as_array().map(Vec::len), Some(0));

    assert_eq!(
        api.post_empty(&format!("/v8/RestoreSessions/{rs}/Stop"))
            .await,
        StatusCode::NO_CONTENT
    );
    let (_, stopped) = api.get(&format!("/v8/RestoreSessions/{rs}")).await;
    assert_eq!(stopped["state"], "Stopped");
    assert!(stopped["endTime"].is_string());
    let (status, err) = api
        .get(&format!("/v8/RestoreSessions/{rs}/organization/mailboxes"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["errorCode"], "ResourceNotFound");
    assert_eq!(
        api.post_empty(&format!("/v8/RestoreSessions/{rs}/Stop"))
            .await,
        StatusCode::NOT_FOUND
    );
    let (_, events) = api.get(&format!("/v8/RestoreSessions/{rs}/Events")).await;
    validate_response(
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/Events",
        200,
        &events,
    )
    .expect("events shape");
    let titles: Vec<&str> = events["results"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["title"].as_str())
        .collect();
    assert_eq!(titles, ["Session started", "Session stopped"]);
    assert_eq!(
        api.sim.session(rs.parse().expect("uuid")).map(|s| s.state),
        Some("Stopped".into())
    );

    // The other reading: a stopped session is gone entirely.
    let strict = Api::new(SimConfig {
        stopped_sessions: StoppedSessions::NotFound,
        ..fast_config()
    })
    .await;
    let rs = strict.explore().await;
    assert_eq!(
        strict
            .post_empty(&format!("/v8/RestoreSessions/{rs}/Stop"))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        strict.get(&format!("/v8/RestoreSessions/{rs}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn routes_are_case_insensitive_and_v8_only() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    assert_eq!(api.get("/V8/ORGANIZATIONS").await.0, StatusCode::OK);
    let (status, page) = api
        .get(&format!(
            "/v8/restoresessions/{}/ORGANIZATION/Mailboxes?LIMIT=5",
            rs.to_uppercase()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["limit"], 5);
    let resp = api
        .http
        .post(api.url("/v8/Token"))
        .form(&dev_form())
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(api.get("/v7/Organizations").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/v8/Nothing/Here").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get(&format!("/v8/RestoreSessions/{}", uuid::Uuid::new_v4()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/v8/RestoreSessions/not-a-uuid").await.0,
        StatusCode::NOT_FOUND
    );
    let resp = api
        .http
        .get(api.url("/v8/token"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn request_bodies_and_queries_are_validated_against_the_schema() {
    let api = Api::new(fast_config()).await;
    let explore = format!("/v8/Organizations/{DEMO_ORG_ID}/explore");
    for (body, field) in [
        (
            json!({"type": "Vex", "showDeleted": false, "showAlVersions": true}),
            "showAlVersions",
        ),
        (json!({"type": "Vex", "showDeleted": "no"}), "showDeleted"),
        (json!({"type": "Exchange"}), "type"),
        (json!({"dateTime": "last tuesday"}), "dateTime"),
    ] {
        let (status, err) = api.post(&explore, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(err["errorCode"], "ParameterValidationFailure");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{err}"
        );
    }
    let resp = api
        .http
        .post(api.url(&explore))
        .bearer_auth(&api.token)
        .body("{\"type\":")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = api
        .http
        .post(api.url(&explore))
        .bearer_auth(&api.token)
        .body("type=Vex")
        .header("content-type", "text/plain")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, err) = api.get("/v8/Organizations?limit=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["message"].as_str().is_some_and(|m| m.contains("limit")));
    assert_eq!(
        api.get("/v8/Organizations?limit=0").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.get("/v8/RestoreSessions?orderBy=Name").await.0,
        StatusCode::BAD_REQUEST
    );
    let rs = api.explore().await;
    let (status, _) = api
        .post(
            &format!("/v8/RestoreSessions/{rs}/Stop"),
            json!({"stop": null}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "Stop takes no body");
}

#[tokio::test]
async fn the_journal_records_what_was_sent_without_secrets() {
    let api = Api::new(fast_config()).await;
    let rs = api.explore().await;
    let (status, _) = api
        .get(&format!(
            "/v8/RESTORESESSIONS/{rs}/organization/mailboxes?offset=0&limit=50"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let journal = api.sim.journal();
    let token = journal
        .iter()
        .find(|e| e.is("POST", "/v8/token"))
        .expect("token entry");
    assert_eq!(token.status, Some(200));
    let body = token.body.as_ref().expect("form parsed");
    assert_eq!(body["password"], REDACTED);
    assert_eq!(body["username"], "CONTOSO\\svc-restore");
    assert_eq!(body["disable_antiforgery_token"], true);
    let raw = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(dev_form())
        .finish();
    assert_eq!(
        token.body_sha256.as_deref(),
        Some(sha256_hex(raw.as_bytes()).as_str())
    );
    let explore = journal
        .iter()
        .find(|e| e.is("POST", "/v8/Organizations/{organizationId}/explore"))
        .expect("explore");
    assert_eq!(
        explore.param("organizationId"),
        Some(DEMO_ORG_ID.to_string().as_str())
    );
    assert_eq!(explore.status, Some(201));
    let list = journal
        .iter()
        .find(|e| e.is("GET", MAILBOXES))
        .expect("mailboxes");
    assert_eq!(
        list.path,
        format!("/v8/RESTORESESSIONS/{rs}/organization/mailboxes")
    );
    assert_eq!(list.query_param("limit").as_deref(), Some("50"));
    assert_eq!(list.param("restoreSessionId"), Some(rs.as_str()));
    assert!(list.body.is_none() && list.body_sha256.is_none());
    assert!(journal.windows(2).all(|w| w[0].seq < w[1].seq));
    let debug = format!("{journal:?}");
    assert!(
        !debug.contains("restorectl-dev"),
        "the password never enters the journal"
    );
    api.sim.clear_journal();
    assert!(api.sim.journal().is_empty());
}

/// `GET /v8/RestorePoints`: one point per day back from `latestBackup` (so a test sets the age
/// of the newest one), newest first with `orderAsc=false`, `to` bounds it, an unknown
/// organisation has none, and the shape is the vendor's; faults apply like anywhere else.
#[tokio::test]
async fn restore_points_follow_latest_backup() {
    use restorectl::sim::{Endpoint, FaultAction, FaultRule};
    let newest = chrono::Utc::now() - chrono::Duration::hours(75);
    let api = Api::new(SimConfig {
        latest_backup: newest,
        faults: vec![
            FaultRule::on(Endpoint::RestorePoints, FaultAction::Status { status: 503 })
                .calls(restorectl::sim::CallRange::only(4)),
        ],
        ..fast_config()
    })
    .await;
    let q = |extra: &str| {
        format!("/v8/RestorePoints?organizationId={DEMO_ORG_ID}&orderAsc=false&limit=1{extra}")
    };
    let (status, page) = api.get(&q("")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    validate_response("GET", "/v8/RestorePoints", 200, &page).expect("page shape");
    let first = &page["results"][0];
    let time = chrono::DateTime::parse_from_rfc3339(first["backupTime"].as_str().unwrap()).unwrap();
    assert_eq!(time.timestamp(), newest.timestamp());
    assert_eq!(first["organizationId"], DEMO_ORG_ID.to_string().as_str());
    let day_before = (newest - chrono::Duration::hours(30)).to_rfc3339();
    let (_, page) = api
        .get(&q(&format!("&to={}", day_before.replace('+', "%2B"))))
        .await;
    let older =
        chrono::DateTime::parse_from_rfc3339(page["results"][0]["backupTime"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        older.timestamp(),
        (newest - chrono::Duration::days(2)).timestamp()
    );
    let (_, asc) = api
        .get(&format!(
            "/v8/RestorePoints?organizationId={DEMO_ORG_ID}&limit=1"
        ))
        .await;
    assert_ne!(
        asc["results"][0]["id"], first["id"],
        "oldest first by default"
    );
    // The fourth call is the faulted one.
    let (status, _) = api.get(&q("")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, none) = api
        .get("/v8/RestorePoints?organizationId=00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!(none["results"], json!([]));
}

/// `pagingOrgMailboxes` sizes the paging organisation for tenant-scale benchmarks, and
/// `GET /sim/stats` counts every answered request per route without counting itself: the
/// figure `bench/mass-export.sh` compares between restorectl and a curl script.
#[tokio::test]
async fn the_paging_org_size_is_configurable_and_sim_stats_counts_requests_per_route() {
    let api = Api::new(SimConfig {
        paging_org_mailboxes: 10_003,
        ..fast_config()
    })
    .await;
    let rs = fabrikam(&api).await;
    let all = api
        .all_pages(
            &format!("/v8/RestoreSessions/{rs}/organization/mailboxes"),
            10_000,
        )
        .await;
    assert_eq!(all.len(), 10_003);
    assert_eq!(all[0]["email"], "user0001@fabrikam.com");
    assert_eq!(all[10_002]["email"], "user10003@fabrikam.com");
    let ids: HashSet<&str> = all.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids.len(), 10_003);

    let stats = |api: &Api| {
        let url = api.url("/sim/stats");
        let http = api.http.clone();
        async move {
            let resp = http.get(url).send().await.expect("GET /sim/stats");
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.expect("stats json")
        }
    };
    let first = stats(&api).await;
    // token, organisations, explore, two pages of mailboxes.
    assert_eq!(first["requests"], 5, "{first}");
    assert_eq!(first["byRoute"]["POST /v8/token"], 1);
    assert_eq!(first["byRoute"]["GET /v8/Organizations"], 1);
    assert_eq!(
        first["byRoute"]["POST /v8/Organizations/{organizationId}/explore"],
        1
    );
    assert_eq!(first["byRoute"][format!("GET {MAILBOXES}")], 2);
    // Asking again counts nothing new; an unknown path is counted under its own path.
    assert_eq!(stats(&api).await, first);
    let (status, _) = api.get("/v8/NoSuchThing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let second = stats(&api).await;
    assert_eq!(second["requests"], 6);
    assert_eq!(second["byRoute"]["GET /v8/NoSuchThing"], 1);
    assert_eq!(api.sim.journal().len(), 6);
}
