//! The VB365 client over real HTTP on loopback, against small fake servers: wiremock for
//! request/response behaviour, and a bare tokio TCP server for what wiremock cannot do (dropped
//! connections, truncated bodies, a server that never answers). These are stand-ins for the
//! VB365 server, not mocks of our client, and stay useful next to the simulator.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use restorectl::config::{SecretContext, SecretRef, ServerConfig};
use restorectl::vb365::{
    AsyncRestoreResponse, BulkRestoreOptions, Client, ErrorClass, ErrorCode, ErrorKind,
    ExploreOptions, ExportToPstOptions, MailboxRef, OfficeRegion, Operation,
    OrganizationExploreOptions, RestoreCredentials, RestoreSessionFilter,
    RestoreToDifferentLocation, RestoreToOriginalLocation, SearchOptions, SessionState, Transport,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;
use wiremock::matchers::{body_string_contains, header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PASSWORD: &str = "restorectl-dev-PASSWORD";
const RS: &str = "9f78a3a4-8a8e-4b9a-9f47-3b1d1e1b8c01";
const MB: &str = "479a3a4a-8a8e-4b9a-9f47-3b1d1e1b8c02";
const ORG: &str = "6f1c8e0a-6a4b-4d1e-9a51-3c2f0b7d9e01";

/// A client for `url` whose password lives in a temp file; the guard keeps the file alive.
fn client_for(url: &str) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vb365-password"), format!("{PASSWORD}\n")).unwrap();
    let server = ServerConfig {
        name: "primary".into(),
        url: url::Url::parse(url).unwrap(),
        username: "CONTOSO\\svc-restore".into(),
        password: SecretRef::Secret("vb365-password".into()),
        ca_file: None,
        insecure_skip_tls_verify: false,
        max_concurrent_sessions: 2,
        request_timeout: Duration::from_secs(30),
    };
    let ctx = SecretContext {
        credentials_dir: None,
        secrets_dir: Some(dir.path().into()),
        base_dir: dir.path().into(),
    };
    (Client::new(&server, &ctx).unwrap(), dir)
}

fn token_json(access: &str, refresh: &str, expires_in: i64) -> Value {
    json!({"access_token": access, "refresh_token": refresh, "token_type": "bearer",
           "expires_in": expires_in, "userName": "CONTOSO\\svc-restore",
           ".issued": "Fri, 10 Jan 2025 08:00:00 GMT", ".expires": "Fri, 10 Jan 2025 09:00:00 GMT"})
}

/// Answers password grants with `t1`/`r1` and refresh grants (of `r1`) with `t2`/`r2`.
async fn mount_tokens(server: &MockServer, expires_in: i64) {
    Mock::given(method("POST"))
        .and(path("/v8/token"))
        .and(body_string_contains("grant_type=password"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_json("t1", "r1", expires_in)))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v8/token"))
        .and(body_string_contains(
            "grant_type=refresh_token&refresh_token=r1",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_json("t2", "r2", 3600)))
        .mount(server)
        .await;
}

fn session_json(id: &str, state: &str) -> Value {
    json!({"id": id, "name": "s", "organization": "contoso.onmicrosoft.com", "type": "Vex",
           "creationTime": "2025-01-10T08:01:02.1234567Z", "endTime": null, "state": state,
           "result": "Success", "eTag": 3})
}

fn exception(code: &str, message: &str) -> Value {
    json!({"message": message, "errorCode": code, "stackTrace": null})
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

fn grants(reqs: &[Request]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.url.path() == "/v8/token")
        .map(|r| {
            let body = String::from_utf8_lossy(&r.body).to_string();
            body.split('&')
                .find_map(|kv| kv.strip_prefix("grant_type="))
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

fn bearer(r: &Request) -> String {
    r.headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

// -------------------------------------------------------------------------------------------
// Tokens
// -------------------------------------------------------------------------------------------

/// The first call performs a form-encoded password grant with the antiforgery switch, then
/// sends the bearer token; the token is reused by the next call.
#[tokio::test]
async fn password_grant_is_form_encoded_and_the_token_is_reused() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(method("GET"))
        .and(path(format!("/v8/RestoreSessions/{RS}")))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(session_json(RS, "Working")))
        .expect(2)
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let id: Uuid = RS.parse().unwrap();
    assert_eq!(
        client.restore_session(id).await.unwrap().state,
        SessionState::Working
    );
    assert_eq!(client.restore_session(id).await.unwrap().id, id);
    let reqs = requests(&server).await;
    assert_eq!(grants(&reqs), ["password"]);
    let token_req = &reqs[0];
    assert_eq!(
        token_req.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        String::from_utf8_lossy(&token_req.body),
        format!(
            "grant_type=password&username=CONTOSO%5Csvc-restore&password={PASSWORD}&disable_antiforgery_token=true"
        )
    );
}

/// A 401 triggers one refresh grant with the refresh token, then the call is sent again.
#[tokio::test]
async fn unauthorized_call_is_refreshed_and_repeated() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path(format!("/v8/RestoreSessions/{RS}/Statistics")))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path(format!("/v8/RestoreSessions/{RS}/Statistics")))
        .and(header("authorization", "Bearer t2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalItemsCount": 10, "restoredItemsCount": 9, "failedItemsCount": 1,
            "skippedItemsCount": 0, "items": []})))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let stats = client
        .restore_session_statistics(RS.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(stats.failed_items_count, 1);
    assert_eq!(
        grants(&requests(&server).await),
        ["password", "refresh_token"]
    );
}

/// A 401 on a restore POST means the server refused it before acting: after the token refresh
/// it is sent once more, and that second copy is the only one the server executed.
#[tokio::test]
async fn unauthorized_restore_post_is_resent_once_after_refresh() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    let restore = format!("/v8/RestoreSessions/{RS}/organization/mailboxes/{MB}/restore");
    Mock::given(method("POST"))
        .and(path(restore.clone()))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(restore))
        .and(header("authorization", "Bearer t2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sessionId": Uuid::from_u128(9)})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let r = client
        .restore_mailbox(RS.parse().unwrap(), MB.parse().unwrap(), &restore_body())
        .await
        .unwrap();
    assert_eq!(r.session_id, Uuid::from_u128(9));
    assert_eq!(
        grants(&requests(&server).await),
        ["password", "refresh_token"]
    );
}

/// When the refresh grant is refused, a new password grant is made and the call succeeds.
#[tokio::test]
async fn failed_refresh_falls_back_to_a_password_grant() {
    let server = MockServer::start().await;
    Mock::given(path("/v8/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": "invalid_grant", "error_description": "refresh token expired"}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/v8/token"))
        .and(body_string_contains("grant_type=password"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_json("t1", "r1", 3600)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v8/token"))
        .and(body_string_contains("grant_type=password"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_json("t3", "r3", 3600)))
        .mount(&server)
        .await;
    Mock::given(path(format!("/v8/RestoreSessions/{RS}")))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path(format!("/v8/RestoreSessions/{RS}")))
        .and(header("authorization", "Bearer t3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(session_json(RS, "Stopped")))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let s = client.restore_session(RS.parse().unwrap()).await.unwrap();
    assert_eq!(s.state, SessionState::Stopped);
    assert_eq!(
        grants(&requests(&server).await),
        ["password", "refresh_token", "password"]
    );
}

/// A second 401 after renewing the token is retryable (the grant accepted the credentials, the
/// step's retry policy decides); no secret shows in it.
#[tokio::test]
async fn persistent_unauthorized_is_retryable_without_secrets() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path("/v8/Organizations"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let e = client.organizations().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable);
    assert_eq!(e.status.map(|s| s.as_u16()), Some(401));
    let text = format!("{e} {e:?}");
    for secret in [PASSWORD, "t1", "t2", "r1", "r2"] {
        assert!(!text.contains(secret), "`{secret}` leaked: {text}");
    }
    // Exactly one resend: two GETs in total.
    let gets = requests(&server)
        .await
        .iter()
        .filter(|r| r.url.path() == "/v8/Organizations")
        .count();
    assert_eq!(gets, 2);
}

/// Wrong credentials on the token endpoint (OAuth error form) are an `Auth` error naming the
/// OAuth error, and the password is nowhere in it.
#[tokio::test]
async fn rejected_password_grant_is_an_auth_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v8/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": "The user name or password is incorrect."})))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let e = client.organizations().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert_eq!(e.path, "/v8/token");
    assert!(e.message.contains("invalid_grant"), "{e}");
    assert!(!format!("{e} {e:?}").contains(PASSWORD));
}

/// Twenty concurrent calls that all get a 401 with the old token cause exactly one refresh
/// (and the first token exactly one password grant): the others wait and reuse the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_refresh() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path_regex("^/v8/RestoreSessions/[^/]+$"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path_regex("^/v8/RestoreSessions/[^/]+$"))
        .and(header("authorization", "Bearer t2"))
        .respond_with(|r: &Request| {
            let id = r.url.path().rsplit('/').next().unwrap().to_string();
            ResponseTemplate::new(200).set_body_json(session_json(&id, "Working"))
        })
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let ids: Vec<Uuid> = (0..20u128).map(Uuid::from_u128).collect();
    let calls = ids.iter().map(|id| {
        let c = client.clone();
        let id = *id;
        tokio::spawn(async move { c.restore_session(id).await })
    });
    let results = futures_util::future::join_all(calls).await;
    for (r, id) in results.into_iter().zip(&ids) {
        assert_eq!(r.unwrap().unwrap().id, *id);
    }
    assert_eq!(
        grants(&requests(&server).await),
        ["password", "refresh_token"]
    );
}

/// A token whose `expires_in` has run out is refreshed before use, without waiting for a 401.
#[tokio::test]
async fn expired_token_is_refreshed_ahead_of_use() {
    let server = MockServer::start().await;
    mount_tokens(&server, 0).await;
    Mock::given(path(format!("/v8/RestoreSessions/{RS}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(session_json(RS, "Working")))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let id: Uuid = RS.parse().unwrap();
    client.restore_session(id).await.unwrap();
    client.restore_session(id).await.unwrap();
    let reqs = requests(&server).await;
    assert_eq!(grants(&reqs), ["password", "refresh_token"]);
    let bearers: Vec<String> = reqs
        .iter()
        .filter(|r| r.url.path() != "/v8/token")
        .map(bearer)
        .collect();
    assert_eq!(bearers, ["Bearer t1", "Bearer t2"]);
}

/// Logout revokes the token; the next call logs in again.
#[tokio::test]
async fn logout_revokes_the_token() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(method("POST"))
        .and(path("/v8/token/logout"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(format!("/v8/RestoreSessions/{RS}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(session_json(RS, "Working")))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    client.logout().await.unwrap(); // nothing to revoke yet: no request
    client.restore_session(RS.parse().unwrap()).await.unwrap();
    client.logout().await.unwrap();
    client.restore_session(RS.parse().unwrap()).await.unwrap();
    assert_eq!(grants(&requests(&server).await), ["password", "password"]);
}

// -------------------------------------------------------------------------------------------
// Error classes over HTTP
// -------------------------------------------------------------------------------------------

/// Each `errorCode`/status the server may send ends in the class of SPEC §5.
#[tokio::test]
async fn server_errors_are_classified() {
    let server = MockServer::start().await;
    let cases: Vec<(u16, ResponseTemplate, Option<ErrorCode>, ErrorClass)> = vec![
        (
            503,
            ResponseTemplate::new(503).set_body_json(exception("ProxyOffline", "proxy down")),
            Some(ErrorCode::ProxyOffline),
            ErrorClass::Retryable,
        ),
        (
            500,
            ResponseTemplate::new(500).set_body_json(exception("Timeout", "timed out")),
            Some(ErrorCode::Timeout),
            ErrorClass::Retryable,
        ),
        (
            409,
            ResponseTemplate::new(409).set_body_json(exception("OperationConflict", "busy")),
            Some(ErrorCode::OperationConflict),
            ErrorClass::Retryable,
        ),
        (
            400,
            ResponseTemplate::new(400)
                .set_body_json(exception("ParameterValidationFailure", "bad field `foo`")),
            Some(ErrorCode::ParameterValidationFailure),
            ErrorClass::Permanent,
        ),
        (
            403,
            ResponseTemplate::new(403).set_body_json(exception("ResourceAccessDenied", "no")),
            Some(ErrorCode::ResourceAccessDenied),
            ErrorClass::Permanent,
        ),
        (
            404,
            ResponseTemplate::new(404).set_body_json(exception("ResourceNotFound", "no such org")),
            Some(ErrorCode::ResourceNotFound),
            ErrorClass::Permanent,
        ),
        (500, ResponseTemplate::new(500), None, ErrorClass::Retryable),
        (
            502,
            ResponseTemplate::new(502)
                .set_body_raw("<html><body>Bad Gateway</body></html>", "text/html"),
            None,
            ErrorClass::Retryable,
        ),
        (
            422,
            ResponseTemplate::new(422).set_body_string("nope"),
            None,
            ErrorClass::Permanent,
        ),
    ];
    for (status, response, code, class) in cases {
        server.reset().await;
        mount_tokens(&server, 3600).await;
        Mock::given(path("/v8/Organizations"))
            .respond_with(response)
            .mount(&server)
            .await;
        let (client, _dir) = client_for(&server.uri());
        let e = client.organizations().await.unwrap_err();
        assert_eq!(e.status.map(|s| s.as_u16()), Some(status), "{e}");
        assert_eq!(e.error_code, code, "{e}");
        assert_eq!(e.class, class, "{e}");
        assert_eq!(e.kind, ErrorKind::Http);
        assert_eq!(e.path, "/v8/Organizations?offset=0&limit=1000", "{e}");
    }
}

/// A restore POST (any of the three) answered with an error status: only the statuses that prove
/// the server refused it before acting (400, 401, 403, 404, 409, 429) keep their usual class;
/// every other answer — any 5xx with or without `errorCode` — makes its outcome unknown
/// (`Ambiguous`), and the client sends the POST exactly once.
#[tokio::test]
async fn restore_post_errors_are_ambiguous_unless_refused_before_execution() {
    let server = MockServer::start().await;
    let with = |status: u16, code: Option<&str>| {
        let r = ResponseTemplate::new(status);
        match code {
            Some(c) => r.set_body_json(exception(c, "injected")),
            None => r,
        }
    };
    let cases: Vec<(u16, Option<&str>, ErrorClass)> = vec![
        (500, None, ErrorClass::Ambiguous),
        (500, Some("Timeout"), ErrorClass::Ambiguous),
        (500, Some("ProxyOffline"), ErrorClass::Ambiguous),
        (500, Some("HttpError"), ErrorClass::Ambiguous),
        (500, Some("BrandNewCode"), ErrorClass::Ambiguous),
        (502, None, ErrorClass::Ambiguous),
        (503, Some("ProxyOffline"), ErrorClass::Ambiguous),
        (504, Some("Timeout"), ErrorClass::Ambiguous),
        (422, None, ErrorClass::Ambiguous),
        (
            400,
            Some("ParameterValidationFailure"),
            ErrorClass::Permanent,
        ),
        (403, Some("ResourceAccessDenied"), ErrorClass::Permanent),
        (409, Some("OperationConflict"), ErrorClass::Retryable),
        (429, None, ErrorClass::Retryable),
    ];
    let (rs, mb): (Uuid, Uuid) = (RS.parse().unwrap(), MB.parse().unwrap());
    let to = RestoreToDifferentLocation {
        mailbox: Some("legal@contoso.com".into()),
        credentials: (&RestoreCredentials::User {
            user_name: "admin@contoso.com".into(),
            password: SecretString::from("m365-SECRET"),
        })
            .try_into()
            .unwrap(),
        ..Default::default()
    };
    let bulk = BulkRestoreOptions {
        mailboxes: vec![MailboxRef { id: mb }],
        ..Default::default()
    };
    for (status, code, class) in cases {
        for kind in ["restore", "restoreTo", "bulk"] {
            server.reset().await;
            mount_tokens(&server, 3600).await;
            Mock::given(method("POST"))
                .and(path_regex(r"/(restore|restoreTo)$"))
                .respond_with(with(status, code))
                .mount(&server)
                .await;
            let (client, _dir) = client_for(&server.uri());
            let e = match kind {
                "restore" => client.restore_mailbox(rs, mb, &restore_body()).await,
                "restoreTo" => client.restore_mailbox_to(rs, mb, &to).await,
                _ => client.restore_mailboxes(rs, &bulk).await,
            }
            .unwrap_err();
            assert_eq!(e.class, class, "{kind} answered {status} {code:?}: {e}");
            let posts = requests(&server)
                .await
                .iter()
                .filter(|r| r.method.as_str() == "POST" && !r.url.path().ends_with("/token"))
                .count();
            assert_eq!(posts, 1, "{kind} answered {status}: sent exactly once");
        }
    }
}

/// 429 is retryable and carries the server's `Retry-After`.
#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path(format!(
        "/v8/RestoreSessions/{RS}/organization/mailboxes/{MB}"
    )))
    .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
    .mount(&server)
    .await;
    let (client, _dir) = client_for(&server.uri());
    let e = client
        .mailbox(RS.parse().unwrap(), MB.parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    assert!(e.to_string().contains("retry after 7s"), "{e}");
}

/// `ResourceNotFound` under a restore session is `SessionLost` only when the session itself is
/// gone (404) or stopped; when the session is alive it is an ordinary permanent error.
#[tokio::test]
async fn resource_not_found_under_a_session_checks_the_session() {
    let server = MockServer::start().await;
    for (session_reply, want) in [
        (
            ResponseTemplate::new(200).set_body_json(session_json(RS, "Stopped")),
            ErrorClass::SessionLost,
        ),
        (
            ResponseTemplate::new(404).set_body_json(exception("ResourceNotFound", "no session")),
            ErrorClass::SessionLost,
        ),
        (
            ResponseTemplate::new(200).set_body_json(session_json(RS, "Working")),
            ErrorClass::Permanent,
        ),
    ] {
        server.reset().await;
        mount_tokens(&server, 3600).await;
        Mock::given(path(format!(
            "/v8/RestoreSessions/{RS}/organization/mailboxes"
        )))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(exception("ResourceNotFound", "not found")),
        )
        .mount(&server)
        .await;
        Mock::given(path(format!("/v8/RestoreSessions/{RS}")))
            .respond_with(session_reply)
            .mount(&server)
            .await;
        let (client, _dir) = client_for(&server.uri());
        let e = client.mailboxes(RS.parse().unwrap()).await.unwrap_err();
        assert_eq!(e.class, want, "{e}");
        assert_eq!(e.error_code, Some(ErrorCode::ResourceNotFound));
    }
    // Reading the session itself: a 404 means it is gone, without a second probe.
    server.reset().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path(format!("/v8/RestoreSessions/{RS}")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(exception("ResourceNotFound", "gone")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let e = client
        .restore_session(RS.parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::SessionLost);
}

// -------------------------------------------------------------------------------------------
// A bare TCP server for connection-level faults
// -------------------------------------------------------------------------------------------

/// What the bare server does with a request.
#[derive(Clone, Copy)]
enum Reply {
    /// Answer with a token response.
    Token,
    /// Read the request, then close the connection without a byte of response.
    Drop,
    /// Send headers announcing 100 bytes, send 10, close.
    Truncate,
    /// Read the request and never answer (the connection stays open).
    Hang,
}

/// Serves on 127.0.0.1:0; `route` picks the reply from the request line. Returns the address and
/// the list of request lines received.
async fn bare_server(route: fn(&str) -> Reply) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let Some(line) = read_request(&mut sock).await else {
                    return;
                };
                log.lock().unwrap().push(line.clone());
                match route(&line) {
                    Reply::Token => {
                        let body = token_json("t1", "r1", 3600).to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                    Reply::Drop => {}
                    Reply::Truncate => {
                        let resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"sessionI";
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                    Reply::Hang => {
                        // Keep the socket open until the test's runtime shuts down.
                        std::future::pending::<()>().await;
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body); returns its request line.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    head.lines().next().map(str::to_string)
}

fn restore_body() -> RestoreToOriginalLocation {
    RestoreToOriginalLocation::new(&RestoreCredentials::User {
        user_name: "admin@contoso.com".into(),
        password: SecretString::from("m365-SECRET"),
    })
    .unwrap()
}

/// The server reads a restore POST and closes the connection without answering: the restore
/// may have happened, so the error is `Ambiguous` and the POST was sent exactly once.
#[tokio::test]
async fn dropped_response_on_a_restore_post_is_ambiguous() {
    let (addr, seen) = bare_server(|line| {
        if line.starts_with("POST /v8/token ") {
            Reply::Token
        } else {
            Reply::Drop
        }
    })
    .await;
    let (client, _dir) = client_for(&format!("http://{addr}"));
    let (rs, mb) = (RS.parse().unwrap(), MB.parse().unwrap());
    let e = client
        .restore_mailbox(rs, mb, &restore_body())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Ambiguous, "{e}");
    assert_eq!(e.kind, ErrorKind::Transport(Transport::Interrupted), "{e}");
    assert!(!format!("{e} {e:?}").contains("SECRET"));
    let restores = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("/restore "))
        .count();
    assert_eq!(
        restores, 1,
        "a restore POST must never be re-sent automatically"
    );

    // The same dropped connection on a read is simply retryable.
    let e = client.mailbox(rs, mb).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
}

/// A restore POST whose 200 response body breaks off: accepted by the server, outcome unknown.
#[tokio::test]
async fn truncated_response_on_a_restore_post_is_ambiguous() {
    let (addr, _seen) = bare_server(|line| {
        if line.starts_with("POST /v8/token ") {
            Reply::Token
        } else {
            Reply::Truncate
        }
    })
    .await;
    let (client, _dir) = client_for(&format!("http://{addr}"));
    let body = BulkRestoreOptions {
        mailboxes: vec![MailboxRef {
            id: MB.parse().unwrap(),
        }],
        ..Default::default()
    };
    let e = client
        .restore_mailboxes(RS.parse().unwrap(), &body)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Ambiguous, "{e}");
    assert_eq!(e.kind, ErrorKind::Transport(Transport::Body), "{e}");
}

/// Nothing listens on the port: connection refused is retryable, for reads and for restore
/// POSTs alike (the request was never sent).
#[tokio::test]
async fn connection_refused_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (client, _dir) = client_for(&format!("http://{addr}"));
    let e = client.organizations().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
    assert_eq!(e.kind, ErrorKind::Transport(Transport::Connect), "{e}");
    let e = client
        .restore_mailbox(RS.parse().unwrap(), MB.parse().unwrap(), &restore_body())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
}

/// The token is obtained, then the server goes away before the restore POST: the POST fails
/// to connect, which is retryable, not ambiguous.
#[tokio::test]
async fn restore_post_that_cannot_connect_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        // Close the port before answering, so every later connection is refused.
        drop(listener);
        read_request(&mut sock).await.unwrap();
        let body = token_json("t1", "r1", 3600).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await.unwrap();
    });
    let (client, _dir) = client_for(&format!("http://{addr}"));
    // The first call gets its token; its GET then hits the closed port.
    let e = client.organizations().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport(Transport::Connect), "{e}");
    server.await.unwrap();
    let e = client
        .restore_mailbox(RS.parse().unwrap(), MB.parse().unwrap(), &restore_body())
        .await
        .unwrap_err();
    assert_eq!(
        e.path,
        format!("/v8/RestoreSessions/{RS}/organization/mailboxes/{MB}/restore")
    );
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
    assert_eq!(e.kind, ErrorKind::Transport(Transport::Connect), "{e}");
}

/// An export whose headers never come is cut by the first-byte timeout and is retryable.
#[tokio::test]
async fn export_without_headers_hits_the_first_byte_timeout() {
    let (addr, _seen) = bare_server(|line| {
        if line.starts_with("POST /v8/token ") {
            Reply::Token
        } else {
            Reply::Hang
        }
    })
    .await;
    let (client, _dir) = client_for(&format!("http://{addr}"));
    let e = client
        .export_to_pst(
            RS.parse().unwrap(),
            MB.parse().unwrap(),
            &ExportToPstOptions::default(),
            None,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport(Transport::Timeout), "{e}");
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
    assert!(e.message.contains("first-byte timeout"), "{e}");
}

// -------------------------------------------------------------------------------------------
// Paging
// -------------------------------------------------------------------------------------------

fn query(r: &Request, key: &str) -> Option<String> {
    r.url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.to_string())
}

/// Serves `total` items of a paged collection honouring offset/limit, with a fixed `setId`.
fn paged(total: usize, item: fn(usize) -> Value) -> impl Fn(&Request) -> ResponseTemplate {
    move |r: &Request| {
        let offset: usize = query(r, "offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit: usize = query(r, "limit").and_then(|v| v.parse().ok()).unwrap_or(30);
        let results: Vec<Value> = (offset..(offset + limit).min(total)).map(item).collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "offset": offset, "limit": limit, "setId": "11111111-2222-3333-4444-555555555555",
            "results": results, "_links": {"self": {"href": r.url.path()}}}))
    }
}

fn mailbox_item(i: usize) -> Value {
    json!({"id": Uuid::from_u128(i as u128 + 1), "name": format!("User {i}"),
           "email": format!("user{i:04}@fabrikam.com"), "isArchive": false, "isPublic": false})
}

fn search_item(i: usize) -> Value {
    json!({"id": format!("item-{i}"), "itemClass": "IPM.Note", "subject": format!("Subject {i}"),
           "from": "ceo@contoso.com", "received": "2024-03-01T10:00:00.0000000+01:00"})
}

/// All mailboxes are listed page by page with the configured page size; no `setId` is sent to
/// the mailbox listing (the operation does not declare one).
#[tokio::test]
async fn mailboxes_are_listed_across_pages() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path(format!(
        "/v8/RestoreSessions/{RS}/organization/mailboxes"
    )))
    .respond_with(paged(23, mailbox_item))
    .mount(&server)
    .await;
    let (client, _dir) = client_for(&server.uri());
    let client = client.with_page_size(7);
    let all = client.mailboxes(RS.parse().unwrap()).await.unwrap();
    assert_eq!(all.len(), 23);
    assert_eq!(all[22].email, "user0022@fabrikam.com");
    let reqs = requests(&server).await;
    let pages: Vec<(String, String, Option<String>)> = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/mailboxes"))
        .map(|r| {
            (
                query(r, "offset").unwrap(),
                query(r, "limit").unwrap(),
                query(r, "setId"),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>)> = ["0", "7", "14", "21"]
        .iter()
        .map(|o| (o.to_string(), "7".to_string(), None))
        .collect();
    assert_eq!(pages, want);
}

/// A page's `_links.next` is followed: here page 2 exists only at the address page 1's link
/// gives (a cursor offset arithmetic cannot know).
#[tokio::test]
async fn mailbox_listing_follows_the_next_link() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    let list = format!("/v8/RestoreSessions/{RS}/organization/mailboxes");
    Mock::given(method("GET"))
        .and(path(list.clone()))
        .and(query_param("cursor", "c2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "offset": 2, "limit": 2, "results": [mailbox_item(2)],
            "_links": {"self": {"href": format!("{list}?offset=2&limit=2&cursor=c2")}}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(list.clone()))
        .and(query_param("offset", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "offset": 0, "limit": 2, "results": [mailbox_item(0), mailbox_item(1)],
            "_links": {"self": {"href": format!("{list}?offset=0&limit=2")},
                       "next": {"href": format!("{list}?offset=2&limit=2&cursor=c2")}}})))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let all = client
        .with_page_size(2)
        .mailboxes(RS.parse().unwrap())
        .await
        .expect("the linked page is found");
    let emails: Vec<&str> = all.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(
        emails,
        [
            "user0000@fabrikam.com",
            "user0001@fabrikam.com",
            "user0002@fabrikam.com"
        ]
    );
    let pages: Vec<Option<String>> = requests(&server)
        .await
        .iter()
        .filter(|r| r.url.path() == list)
        .map(|r| r.url.query().map(str::to_owned))
        .collect();
    assert_eq!(
        pages,
        [
            Some("offset=0&limit=2".to_owned()),
            Some("offset=2&limit=2&cursor=c2".to_owned())
        ]
    );
}

/// A `_links.next` that leaves the server, or the collection being listed, is not followed (no
/// request, no token goes there); offset arithmetic reads the rest of the list.
#[tokio::test]
async fn next_links_to_another_host_or_collection_are_not_followed() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    let list = format!("/v8/RestoreSessions/{RS}/organization/mailboxes");
    // Each link carries a marker, so a request that took its query would show it.
    for href in [
        format!("{}{list}?offset=2&limit=2&via=link", elsewhere.uri()),
        format!("//{}{list}?offset=2&limit=2&via=link", elsewhere.address()),
        "/v8/Organizations?offset=2&limit=2&via=link".to_owned(),
        format!("/v8/RestoreSessions/{MB}/organization/mailboxes?offset=2&limit=2&via=link"),
    ] {
        server.reset().await;
        mount_tokens(&server, 3600).await;
        Mock::given(method("GET"))
            .and(path(list.clone()))
            .and(query_param("offset", "0"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "offset": 0, "limit": 2, "results": [mailbox_item(0), mailbox_item(1)],
                "_links": {"next": {"href": href.clone()}}})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(list.clone()))
            .and(query_param("offset", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "offset": 2, "limit": 2, "results": [mailbox_item(2)]})))
            .mount(&server)
            .await;
        let (client, _dir) = client_for(&server.uri());
        let all = client
            .with_page_size(2)
            .mailboxes(RS.parse().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{href}: {e}"));
        assert_eq!(all.len(), 3, "{href}");
        let paths: Vec<String> = requests(&server)
            .await
            .iter()
            .filter(|r| r.url.path() != "/v8/token")
            .map(|r| format!("{}?{}", r.url.path(), r.url.query().unwrap_or("")))
            .collect();
        assert_eq!(
            paths,
            [
                format!("{list}?offset=0&limit=2"),
                format!("{list}?offset=2&limit=2")
            ],
            "{href}"
        );
        assert!(requests(&elsewhere).await.is_empty(), "{href}");
    }
}

/// A server that ignores `offset` keeps sending full pages: the listing stops at the page cap
/// with a message that tells the operator what to change (`pageSize`).
#[tokio::test]
async fn a_listing_that_hits_the_page_cap_names_page_size() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v8/RestoreSessions/{RS}/organization/mailboxes"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "offset": 0, "limit": 1, "results": [mailbox_item(0)]})))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let e = client
        .with_page_size(1)
        .mailboxes(RS.parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    let msg = e.to_string();
    for part in [
        "stopped after 10000 full pages of 1 (10000 items)",
        "raise `pageSize` in the daemon configuration",
        "ignores `offset`",
        "/organization/mailboxes",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }
}

/// Search pages: the first request has no `setId`, every later one sends back the first page's
/// `setId` with the same query body; paging stops at the short page.
#[tokio::test]
async fn search_reuses_the_set_id() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v8/RestoreSessions/{RS}/organization/mailboxes/{MB}/search"
        )))
        .respond_with(paged(5, search_item))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v8/RestoreSessions/{RS}/organization/mailboxes/search"
        )))
        .respond_with(paged(3, search_item))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let client = client.with_page_size(2);
    let opts = SearchOptions::query("from:ceo@contoso.com subject:\"board minutes\"");
    let items = client
        .search_mailbox(RS.parse().unwrap(), MB.parse().unwrap(), &opts)
        .await
        .unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[4].subject.as_deref(), Some("Subject 4"));
    let all = client
        .search_mailboxes(RS.parse().unwrap(), &opts)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);

    let reqs = requests(&server).await;
    let searches: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/search"))
        .collect();
    assert_eq!(searches.len(), 3 + 2);
    let set = "11111111-2222-3333-4444-555555555555".to_string();
    let per_mailbox: Vec<(String, Option<String>)> = searches[..3]
        .iter()
        .map(|r| (query(r, "offset").unwrap(), query(r, "setId")))
        .collect();
    assert_eq!(
        per_mailbox,
        [
            ("0".into(), None),
            ("2".into(), Some(set.clone())),
            ("4".into(), Some(set.clone()))
        ]
    );
    assert_eq!(query(searches[4], "setId"), Some(set));
    for r in searches {
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            r.body_json::<Value>().unwrap(),
            json!({"query": "from:ceo@contoso.com subject:\"board minutes\""})
        );
    }
}

/// Organisations resolve by id, by name or by officeName (any case) over several pages; an
/// unknown name lists what exists.
#[tokio::test]
async fn organizations_resolve_by_name_office_name_or_id() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path("/v8/Organizations"))
        .respond_with(paged(3, |i| {
            let (id, name, office) = [
                ("0d0d0d0d-0000-4000-8000-000000000001", "Fabrikam", "fabrikam.onmicrosoft.com"),
                ("0d0d0d0d-0000-4000-8000-000000000002", "Northwind", "northwind.onmicrosoft.com"),
                (ORG, "contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
            ][i];
            json!({"id": id, "name": name, "officeName": office, "type": "Office365", "region": "Worldwide"})
        }))
        .mount(&server)
        .await;
    Mock::given(path(format!("/v8/Organizations/{ORG}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": ORG, "name": "contoso.onmicrosoft.com", "officeName": "contoso.onmicrosoft.com", "type": "Office365"})))
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let client = client.with_page_size(2);
    let by_name = client
        .resolve_organization("CONTOSO.onmicrosoft.com")
        .await
        .unwrap();
    assert_eq!(by_name.id, Some(ORG.parse().unwrap()));
    let by_office = client
        .resolve_organization("northwind.ONMICROSOFT.com")
        .await
        .unwrap();
    assert_eq!(by_office.name, "Northwind");
    let by_id = client.resolve_organization(ORG).await.unwrap();
    assert_eq!(by_id.name, "contoso.onmicrosoft.com");
    let e = client.resolve_organization("tailspin").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("`tailspin` not found")
            && e.message.contains("Fabrikam (fabrikam.onmicrosoft.com)")
            && e.message.contains("Northwind (northwind.onmicrosoft.com)")
            && e.message.contains(", contoso.onmicrosoft.com"),
        "{e}"
    );
}

// -------------------------------------------------------------------------------------------
// Export
// -------------------------------------------------------------------------------------------

const PST: &[u8] = b"!BDN0123456789abcdefghijklmnopqrstuvwxyz";

/// A full export (200 with Content-Length) and a resumed one (`Range: bytes=17-` → 206 with
/// `Content-Range`) concatenate to the whole file.
#[tokio::test]
async fn export_full_and_resumed_with_range() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    let export_path = format!("/v8/RestoreSessions/{RS}/organization/mailboxes/{MB}/exportToPst");
    Mock::given(method("POST"))
        .and(path(export_path.clone()))
        .and(header("accept", "application/octet-stream"))
        .and(header("range", "bytes=17-"))
        .respond_with(
            ResponseTemplate::new(206)
                .insert_header(
                    "Content-Range",
                    format!("bytes 17-{}/{}", PST.len() - 1, PST.len()),
                )
                .set_body_raw(PST[17..].to_vec(), "application/octet-stream"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(export_path))
        .and(header("accept", "application/octet-stream"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(PST.to_vec(), "application/octet-stream"),
        )
        .mount(&server)
        .await;
    let (client, _dir) = client_for(&server.uri());
    let (rs, mb) = (RS.parse().unwrap(), MB.parse().unwrap());
    let opts = ExportToPstOptions::new(Some("project falcon".into()), Some(10 << 30));

    let full = client
        .export_to_pst(rs, mb, &opts, None, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(full.status.as_u16(), 200);
    assert_eq!(full.content_length, Some(PST.len() as u64));
    assert_eq!(full.total_size(), Some(PST.len() as u64));
    assert!(!full.is_resumed());
    let bytes = collect(full).await;
    assert_eq!(bytes, PST);

    let part = client
        .export_to_pst(rs, mb, &opts, Some(17), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(part.status.as_u16(), 206);
    assert!(part.is_resumed());
    assert_eq!(part.total_size(), Some(PST.len() as u64));
    let cr = part.content_range.unwrap();
    assert_eq!((cr.start, cr.end), (17, PST.len() as u64 - 1));
    let mut joined = PST[..17].to_vec();
    joined.extend(collect(part).await);
    assert_eq!(joined, PST);

    let reqs = requests(&server).await;
    let exports: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/exportToPst"))
        .collect();
    assert_eq!(exports.len(), 2);
    for r in &exports {
        assert_eq!(
            r.body_json::<Value>().unwrap(),
            json!({"contentKeyword": "project falcon", "enablePstSizeLimit": true, "pstSizeLimitBytes": 10737418240_i64})
        );
    }
    assert!(exports[0].headers.get("range").is_none());
}

async fn collect(export: restorectl::vb365::PstExport) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = std::pin::pin!(export.into_stream());
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// An export error comes back as JSON and is classified like any other call.
#[tokio::test]
async fn export_error_is_classified() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    Mock::given(path(format!(
        "/v8/RestoreSessions/{RS}/organization/mailboxes/{MB}/exportToPst"
    )))
    .respond_with(ResponseTemplate::new(400).set_body_json(exception(
        "ParameterValidationFailure",
        "pstSizeLimitBytes must be between 1 GB and 49 GB",
    )))
    .mount(&server)
    .await;
    let (client, _dir) = client_for(&server.uri());
    let e = client
        .export_to_pst(
            RS.parse().unwrap(),
            MB.parse().unwrap(),
            &ExportToPstOptions::new(None, Some(1)),
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("pstSizeLimitBytes"), "{e}");
}

// -------------------------------------------------------------------------------------------
// Every endpoint once
// -------------------------------------------------------------------------------------------

/// The JSON body of the (only) request whose path ends with `suffix`.
async fn body_json_of(server: &MockServer, suffix: &str) -> Value {
    requests(server)
        .await
        .iter()
        .find(|r| r.url.path().ends_with(suffix))
        .unwrap()
        .body_json::<Value>()
        .unwrap()
}

/// Calls every client method once against a fake that answers each documented path, checks the
/// parsed answers and the JSON bodies on the wire, and checks that every operation in
/// `all_operations()` was exercised.
#[tokio::test]
async fn every_endpoint_round_trips() {
    let server = MockServer::start().await;
    mount_tokens(&server, 3600).await;
    let rs_path = format!("/v8/RestoreSessions/{RS}");
    let mb_path = format!("{rs_path}/organization/mailboxes");
    let op_session = "aaaaaaaa-0000-4000-8000-000000000001";
    let ok = |v: Value| ResponseTemplate::new(200).set_body_json(v);
    let routes: Vec<(&str, String, ResponseTemplate)> = vec![
        (
            "POST",
            "/v8/token/logout".into(),
            ResponseTemplate::new(204),
        ),
        (
            "GET",
            "/v8/Organizations".into(),
            ok(
                json!({"offset":0,"limit":1000,"results":[{"id":ORG,"name":"contoso.onmicrosoft.com","officeName":"contoso.onmicrosoft.com","type":"Office365"}]}),
            ),
        ),
        (
            "GET",
            format!("/v8/Organizations/{ORG}"),
            ok(json!({"id":ORG,"name":"contoso.onmicrosoft.com","type":"Office365"})),
        ),
        (
            "POST",
            format!("/v8/Organizations/{ORG}/explore"),
            ResponseTemplate::new(201).set_body_json(session_json(RS, "Working")),
        ),
        (
            "POST",
            format!("/v8/Jobs/{ORG}/explore"),
            ResponseTemplate::new(201).set_body_json(session_json(RS, "Working")),
        ),
        (
            "GET",
            "/v8/RestoreSessions".into(),
            ok(
                json!({"offset":0,"limit":1000,"results":[session_json(RS, "Working"), session_json(op_session, "Stopped")]}),
            ),
        ),
        ("GET", rs_path.clone(), ok(session_json(RS, "Working"))),
        (
            "POST",
            format!("{rs_path}/Stop"),
            ResponseTemplate::new(204),
        ),
        (
            "GET",
            format!("{rs_path}/Events"),
            ok(json!({"offset":0,"limit":1000,"results":[
            {"id":"1b0c6b8e-0000-4000-8000-000000000001","order":1,"type":"Restore","status":"Success","message":"done",
             "startTime":"2025-01-10T08:01:02.1000000Z","endTime":"2025-01-10T08:01:02.2000000Z","duration":"00:00:00.1000000"}]})),
        ),
        (
            "GET",
            format!("{rs_path}/Statistics"),
            ok(
                json!({"totalItemsCount":1,"restoredItemsCount":1,"failedItemsCount":0,"skippedItemsCount":0,"items":[]}),
            ),
        ),
        (
            "GET",
            mb_path.clone(),
            ok(json!({"offset":0,"limit":1000,"results":[mailbox_item(0)]})),
        ),
        (
            "GET",
            format!("{mb_path}/{MB}"),
            ok(
                json!({"id":MB,"name":"Alice Adams","email":"alice@contoso.com","isArchive":false,"isPublic":false}),
            ),
        ),
        (
            "POST",
            format!("{mb_path}/restore"),
            ok(json!({"sessionId": op_session})),
        ),
        (
            "POST",
            format!("{mb_path}/{MB}/restore"),
            ok(json!({"sessionId": op_session})),
        ),
        (
            "POST",
            format!("{mb_path}/{MB}/restoreTo"),
            ok(json!({"sessionId": op_session})),
        ),
        (
            "POST",
            format!("{rs_path}/organization/restoreDeviceCode"),
            ok(
                json!({"userCode":"QWERTY01","verificationUrl":"https://microsoft.com/devicelogin","expiresIn":900,"message":"sign in"}),
            ),
        ),
        (
            "POST",
            format!("{mb_path}/{MB}/exportToPst"),
            ResponseTemplate::new(200).set_body_raw(PST.to_vec(), "application/octet-stream"),
        ),
        (
            "POST",
            format!("{mb_path}/{MB}/search"),
            ok(json!({"offset":0,"limit":1000,"results":[search_item(1)]})),
        ),
        (
            "POST",
            format!("{mb_path}/search"),
            ok(json!({"offset":0,"limit":1000,"results":[search_item(2)]})),
        ),
        (
            "GET",
            "/v8/RestorePoints".into(),
            ok(
                json!({"offset":0,"limit":1,"results":[{"id":"rp-1","backupTime":"2025-01-09T22:00:00.0000000Z","organizationId":ORG,"isExchange":true}]}),
            ),
        ),
    ];
    for (m, p, reply) in routes {
        Mock::given(method(m))
            .and(path(p))
            .respond_with(reply)
            .expect(1)
            .mount(&server)
            .await;
    }
    let (client, _dir) = client_for(&server.uri());
    let (rs, mb, org): (Uuid, Uuid, Uuid) = (
        RS.parse().unwrap(),
        MB.parse().unwrap(),
        ORG.parse().unwrap(),
    );
    let op: Uuid = op_session.parse().unwrap();
    let at = restorectl::vb365::timestamp::parse("2025-01-10T00:00:00Z").unwrap();

    assert_eq!(client.organizations().await.unwrap().len(), 1);
    assert_eq!(client.organization(org).await.unwrap().id, Some(org));
    let point = client
        .newest_restore_point(org, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (point.id.as_str(), point.organization_id),
        ("rp-1", Some(org))
    );
    assert_eq!(
        point.backup_time,
        restorectl::vb365::timestamp::parse("2025-01-09T22:00:00Z").unwrap()
    );
    let s = client
        .explore_organization(org, &OrganizationExploreOptions::exchange(Some(at)))
        .await
        .unwrap();
    assert_eq!(s.id, rs);
    assert_eq!(
        client
            .explore_job(org, &ExploreOptions::exchange(None))
            .await
            .unwrap()
            .id,
        rs
    );
    let sessions = client
        .restore_sessions(&RestoreSessionFilter::default())
        .await
        .unwrap();
    assert_eq!(sessions[1].state, SessionState::Stopped);
    assert_eq!(client.restore_session(rs).await.unwrap().id, rs);
    assert_eq!(client.restore_session_events(rs).await.unwrap().len(), 1);
    assert_eq!(
        client
            .restore_session_statistics(rs)
            .await
            .unwrap()
            .total_items_count,
        1
    );
    assert_eq!(client.mailboxes(rs).await.unwrap().len(), 1);
    assert_eq!(
        client.mailbox(rs, mb).await.unwrap().email,
        "alice@contoso.com"
    );
    let creds = RestoreCredentials::User {
        user_name: "admin@contoso.com".into(),
        password: SecretString::from("m365-SECRET"),
    };
    let bulk = BulkRestoreOptions {
        mailboxes: vec![MailboxRef { id: mb }],
        ..Default::default()
    }
    .with_credentials(&creds);
    let want = AsyncRestoreResponse { session_id: op };
    assert_eq!(client.restore_mailboxes(rs, &bulk).await.unwrap(), want);
    assert_eq!(
        client
            .restore_mailbox(rs, mb, &RestoreToOriginalLocation::new(&creds).unwrap())
            .await
            .unwrap(),
        want
    );
    let to = RestoreToDifferentLocation {
        mailbox: Some("legal-review@contoso.com".into()),
        folder: Some("Restored/alice@contoso.com".into()),
        credentials: (&creds).try_into().unwrap(),
        ..Default::default()
    };
    assert_eq!(client.restore_mailbox_to(rs, mb, &to).await.unwrap(), want);
    let code = client
        .restore_device_code(
            rs,
            &restorectl::vb365::DeviceCodeRequestOptions {
                target_region: Some(OfficeRegion::Worldwide),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(code.user_code.as_deref(), Some("QWERTY01"));
    assert_eq!(code.expires_in, Some(900));
    assert!(
        !format!("{code:?}").contains("QWERTY01"),
        "Debug hides the code"
    );
    assert_eq!(
        body_json_of(&server, "/restoreDeviceCode").await,
        json!({"targetRegion":"Worldwide"})
    );
    let export = client
        .export_to_pst(
            rs,
            mb,
            &ExportToPstOptions::default(),
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(collect(export).await, PST);
    let q = SearchOptions::query("subject:board");
    assert_eq!(
        client.search_mailbox(rs, mb, &q).await.unwrap()[0].id,
        "item-1"
    );
    assert_eq!(
        client.search_mailboxes(rs, &q).await.unwrap()[0].id,
        "item-2"
    );
    client.stop_restore_session(rs).await.unwrap();
    client.logout().await.unwrap();

    let reqs = requests(&server).await;
    // Bodies on the wire, exactly.
    let body_of = |suffix: &str| {
        reqs.iter()
            .find(|r| r.url.path().ends_with(suffix))
            .unwrap()
            .body_json::<Value>()
            .unwrap()
    };
    assert_eq!(
        body_of("/Organizations/6f1c8e0a-6a4b-4d1e-9a51-3c2f0b7d9e01/explore"),
        json!({"dateTime":"2025-01-10T00:00:00Z","type":"Vex","showDeleted":false,"showAllVersions":false})
    );
    assert_eq!(
        body_of("/mailboxes/restore"),
        json!({"mailboxes":[{"id":MB}],"office365UserName":"admin@contoso.com","office365UserPassword":"m365-SECRET"})
    );
    assert_eq!(
        body_of(&format!("/{MB}/restoreTo")),
        json!({"mailbox":"legal-review@contoso.com","folder":"Restored/alice@contoso.com",
               "userName":"admin@contoso.com","userPassword":"m365-SECRET"})
    );
    let stop = reqs
        .iter()
        .find(|r| r.url.path().ends_with("/Stop"))
        .unwrap();
    assert!(stop.body.is_empty());
    // Every operation the client knows was called.
    let called: BTreeSet<String> = reqs
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    for op in Operation::ALL {
        let params: Vec<&str> = match op.path_template().matches('{').count() {
            0 => vec![],
            1 if op.path_template().starts_with("/v8/RestoreSessions") => vec![RS],
            1 => vec![ORG],
            _ => vec![RS, MB],
        };
        let p = op.path(&params).unwrap();
        assert!(
            called.contains(&format!("{} {p}", op.method())),
            "{op:?} ({p}) was not exercised"
        );
    }
}
