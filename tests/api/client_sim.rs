//! restorectl's own VB365 client against the built-in simulator, both real, over real HTTP (and
//! HTTPS) on loopback: a happy path per endpoint the client exposes, the error classes of
//! SPEC §5 through the simulator's fault injection, paging, `setId` reuse and PST export bytes
//! checked against the simulator's own digest. Assertions about what went over the wire read the
//! simulator's request journal.

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use crate::sim_support::{eventually, fast_config, sha256_hex, start};
use futures_util::StreamExt;
use restorectl::config::{SecretContext, SecretRef, ServerConfig};
use restorectl::sim::{
    CallRange, DEMO_ORG_ID, DEMO_ORG_NAME, DEV_PASSWORD, DEV_USERNAME, Endpoint, ExportSpec,
    FaultAction, FaultRule, JournalEntry, PAGING_ORG_MAILBOXES, PAGING_ORG_NAME, PST_MAGIC,
    SearchScope, SimConfig, SimHandle, TlsPem, ZIP_MAGIC,
};
use restorectl::vb365::{
    ApiError, BulkRestoreOptions, Client, ErrorClass, ErrorCode, ErrorKind, ExploreOptions,
    ExportToPstOptions, MailboxRef, MailboxRestoreCredentials, OfficeRegion, Operation,
    OrganizationExploreOptions, RestoreCredentials, RestoreFlags, RestoreSessionFilter,
    RestoreToDifferentLocation, RestoreToOriginalLocation, SearchOptions, SessionState, Transport,
};
use secrecy::{SecretBox, SecretString};
use uuid::Uuid;

const GIB: u64 = 1 << 30;
/// First-byte bound for exports in tests: generous, never the thing under test.
const FIRST_BYTE: Duration = Duration::from_secs(60);

// -------------------------------------------------------------------------------------------
// Helpers
// -------------------------------------------------------------------------------------------

/// A client configuration for the simulator at `url`; the dev password lives in a secrets
/// directory in `dir`.
fn server_config(url: &str, dir: &tempfile::TempDir) -> (ServerConfig, SecretContext) {
    std::fs::write(
        dir.path().join("vb365-password"),
        format!("{DEV_PASSWORD}\n"),
    )
    .expect("password file");
    let server = ServerConfig {
        name: "sim".into(),
        url: url::Url::parse(url).expect("url"),
        username: DEV_USERNAME.into(),
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
    (server, ctx)
}

/// A simulator and our client for it; the temp dir keeps the password file alive.
struct Rig {
    sim: SimHandle,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn rig(config: SimConfig) -> Rig {
    let sim = start(config).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ctx) = server_config(&sim.base_url(), &dir);
    let client = Client::new(&server, &ctx).expect("client");
    Rig {
        sim,
        client,
        _dir: dir,
    }
}

impl Rig {
    /// Journal entries of one operation of the client.
    fn calls(&self, op: Operation) -> Vec<JournalEntry> {
        self.sim
            .journal()
            .into_iter()
            .filter(|e| e.is(op.method().as_str(), op.path_template()))
            .collect()
    }

    /// `grant_type` of every token request, in order.
    fn grants(&self) -> Vec<String> {
        self.calls(Operation::Token)
            .iter()
            .map(|e| {
                e.body
                    .as_ref()
                    .and_then(|b| b["grant_type"].as_str())
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    }

    /// Opens an explore session of the demo organisation at the latest restore point.
    async fn explore(&self) -> Uuid {
        let session = self
            .client
            .explore_organization(DEMO_ORG_ID, &OrganizationExploreOptions::exchange(None))
            .await
            .expect("explore");
        assert_eq!(session.state, SessionState::Working);
        session.id
    }

    fn mailbox_id(&self, email: &str) -> Uuid {
        self.sim.mailbox(email, false).expect("mailbox in world").id
    }
}

fn app_credentials() -> RestoreCredentials {
    RestoreCredentials::application(
        Uuid::from_u128(0x0b6f7a1e_2c3d_4e5f_8a9b_0c1d2e3f4a5b),
        &SecretBox::new(b"PFX-BYTES".to_vec().into_boxed_slice()),
        Some(SecretString::from("cert-pass")),
        Some("admin@contoso.com".into()),
    )
}

fn user_credentials() -> RestoreCredentials {
    RestoreCredentials::User {
        user_name: "admin@contoso.com".into(),
        password: SecretString::from("user-pass"),
    }
}

fn on_premises_credentials() -> RestoreCredentials {
    RestoreCredentials::OnPremises {
        domain_name: "CONTOSO".into(),
        user_name: "exadmin".into(),
        password: SecretString::from("onprem-pass"),
    }
}

/// Reads a whole export body through the client's stream.
async fn read_export(export: restorectl::vb365::PstExport) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut stream = Box::pin(export.into_stream());
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

// -------------------------------------------------------------------------------------------
// Happy paths
// -------------------------------------------------------------------------------------------

/// Password grant on first use, the token reused afterwards, a refresh grant after the server
/// expired it, and logout revoking it (the next call needs a new password grant).
#[tokio::test]
async fn token_password_grant_refresh_and_logout() {
    let rig = rig(fast_config()).await;
    rig.client.organizations().await.expect("first call");
    rig.client
        .organization(DEMO_ORG_ID)
        .await
        .expect("second call");
    assert_eq!(rig.grants(), ["password"]);
    let token = &rig.calls(Operation::Token)[0];
    let body = token.body.as_ref().expect("form body");
    assert_eq!(body["username"], DEV_USERNAME);
    assert_eq!(body["disable_antiforgery_token"], true);
    assert_eq!(token.status, Some(200));

    // The server expires every token: the next call gets 401, refreshes and succeeds.
    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::Organization, FaultAction::ExpireTokens)
                .calls(CallRange::only(1)),
        )
        .expect("fault");
    let org = rig.client.organization(DEMO_ORG_ID).await.expect("refresh");
    assert_eq!(org.name, DEMO_ORG_NAME);
    assert_eq!(rig.grants(), ["password", "refresh_token"]);
    let statuses: Vec<Option<u16>> = rig
        .calls(Operation::GetOrganization)
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, [Some(200), Some(401), Some(200)]);

    rig.client.logout().await.expect("logout");
    let logout = rig.calls(Operation::Logout);
    assert_eq!(logout.len(), 1);
    assert!(logout[0].status.is_some_and(|s| (200..300).contains(&s)));
    // A second logout without a token does nothing.
    rig.client.logout().await.expect("logout again");
    assert_eq!(rig.calls(Operation::Logout).len(), 1);
    rig.client.organizations().await.expect("after logout");
    assert_eq!(rig.grants(), ["password", "refresh_token", "password"]);
    rig.sim.shutdown().await;
}

/// A token is refreshed ahead of its expiry (`expires_in` minus 10 %), so no call is refused.
#[tokio::test]
async fn token_is_refreshed_ahead_of_expiry() {
    let rig = rig(SimConfig {
        token_lifetime: Duration::from_secs(4),
        ..fast_config()
    })
    .await;
    rig.client.organization(DEMO_ORG_ID).await.expect("first");
    // Past the refresh point (3.6 s), before the server-side expiry (4 s).
    tokio::time::sleep(Duration::from_millis(3700)).await;
    rig.client.organization(DEMO_ORG_ID).await.expect("second");
    assert_eq!(rig.grants(), ["password", "refresh_token"]);
    let statuses: Vec<Option<u16>> = rig
        .calls(Operation::GetOrganization)
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(
        statuses,
        [Some(200), Some(200)],
        "no 401: refreshed before use"
    );
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn organizations_paged_by_id_and_resolved() {
    let rig = rig(fast_config()).await;
    let expected: HashSet<(Uuid, String)> = rig.sim.organizations().into_iter().collect();
    // Page size 1 so that the listing really follows offsets.
    let one = rig.client.clone().with_page_size(1);
    let all = one.organizations().await.expect("organizations");
    let got: HashSet<(Uuid, String)> = all
        .iter()
        .map(|o| (o.id.expect("id"), o.name.clone()))
        .collect();
    assert_eq!(got, expected);
    let pages = rig.calls(Operation::ListOrganizations);
    assert_eq!(
        pages.len(),
        expected.len() + 1,
        "full pages, then a short one"
    );
    assert!(
        pages
            .iter()
            .all(|p| p.query_param("limit").as_deref() == Some("1"))
    );

    let by_id = rig.client.organization(DEMO_ORG_ID).await.expect("by id");
    assert_eq!(by_id.name, DEMO_ORG_NAME);
    assert_eq!(by_id.office_name.as_deref(), Some(DEMO_ORG_NAME));

    for query in [
        DEMO_ORG_NAME.to_string(),
        // officeName matching is case-insensitive (the simulator's officeName equals the name).
        DEMO_ORG_NAME.to_ascii_uppercase(),
        DEMO_ORG_ID.to_string(),
        format!("  {DEMO_ORG_ID}  "),
    ] {
        let org = rig
            .client
            .resolve_organization(&query)
            .await
            .expect("resolve");
        assert_eq!(org.id, Some(DEMO_ORG_ID), "{query}");
    }
    let fabrikam = rig
        .client
        .resolve_organization(PAGING_ORG_NAME)
        .await
        .expect("fabrikam");
    assert_eq!(fabrikam.name, PAGING_ORG_NAME);
    let missing = rig
        .client
        .resolve_organization("northwind.onmicrosoft.com")
        .await
        .expect_err("unknown organisation");
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert_eq!(missing.class, ErrorClass::Permanent);
    assert!(
        missing.message.contains("northwind") && missing.message.contains(DEMO_ORG_NAME),
        "{missing}"
    );
    // An unknown id is the server's 404.
    let unknown = rig
        .client
        .resolve_organization(&Uuid::from_u128(7).to_string())
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.error_code, Some(ErrorCode::ResourceNotFound));
    assert_eq!(unknown.class, ErrorClass::Permanent);
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn organization_and_job_explore() {
    let rig = rig(fast_config()).await;
    let point = "2025-03-15T12:00:00Z".parse().expect("time");
    let org_session = rig
        .client
        .explore_organization(
            DEMO_ORG_ID,
            &OrganizationExploreOptions::exchange(Some(point)),
        )
        .await
        .expect("org explore");
    assert_eq!(org_session.state, SessionState::Working);
    let sent = &rig.calls(Operation::ExploreOrganization)[0];
    assert_eq!(sent.status, Some(201));
    let body = sent.body.as_ref().expect("body");
    assert_eq!(body["type"], "Vex");
    assert_eq!(body["dateTime"], "2025-03-15T12:00:00Z");

    let job = rig.sim.job_id(DEMO_ORG_ID).expect("job");
    let job_session = rig
        .client
        .explore_job(job, &ExploreOptions::exchange(None))
        .await
        .expect("job explore");
    assert_eq!(job_session.state, SessionState::Working);
    assert_ne!(job_session.id, org_session.id);
    assert_eq!(rig.calls(Operation::ExploreJob)[0].status, Some(201));
    // Both sessions can list the organisation's mailboxes.
    let expected = rig.sim.mailboxes(DEMO_ORG_ID).len();
    for id in [org_session.id, job_session.id] {
        assert_eq!(
            rig.client.mailboxes(id).await.expect("mailboxes").len(),
            expected
        );
    }
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn restore_sessions_list_get_events_statistics_and_stop() {
    let rig = rig(fast_config()).await;
    let first = rig.explore().await;
    let second = rig.explore().await;
    let all = rig
        .client
        .clone()
        .with_page_size(1)
        .restore_sessions(&RestoreSessionFilter::default())
        .await
        .expect("list");
    let ids: HashSet<Uuid> = all.iter().map(|s| s.id).collect();
    assert!(ids.contains(&first) && ids.contains(&second), "{ids:?}");
    // A filter goes out as query parameters the simulator accepts.
    let filtered = rig
        .client
        .restore_sessions(&RestoreSessionFilter {
            start_time_from: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
            order_asc: Some(true),
            order_by: Some(restorectl::vb365::SessionOrder::CreationTime),
            ..Default::default()
        })
        .await
        .expect("filtered list");
    assert!(filtered.iter().any(|s| s.id == first));
    let last = rig.calls(Operation::ListRestoreSessions);
    let last = last.last().expect("listed");
    assert_eq!(last.query_param("orderBy").as_deref(), Some("CreationTime"));
    assert_eq!(last.status, Some(200));
    // The order and the time filter are honoured end to end.
    let position = |list: &[restorectl::vb365::RestoreSession], id: Uuid| {
        list.iter().position(|s| s.id == id).expect("listed")
    };
    assert!(position(&filtered, first) < position(&filtered, second));
    let descending = rig
        .client
        .restore_sessions(&RestoreSessionFilter {
            order_asc: Some(false),
            order_by: Some(restorectl::vb365::SessionOrder::CreationTime),
            ..Default::default()
        })
        .await
        .expect("descending");
    assert!(position(&descending, first) > position(&descending, second));
    let future = rig
        .client
        .restore_sessions(&RestoreSessionFilter {
            start_time_from: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            ..Default::default()
        })
        .await
        .expect("future filter");
    assert!(future.is_empty(), "{future:?}");

    let session = rig.client.restore_session(first).await.expect("get");
    assert_eq!(session.id, first);
    assert_eq!(session.state, SessionState::Working);

    // A restore produces Restore events and per-mailbox statistics on the explore session.
    let alice = rig.mailbox_id("alice@contoso.com");
    let answer = rig
        .client
        .restore_mailbox(
            first,
            alice,
            &RestoreToOriginalLocation::new(&app_credentials()).expect("body"),
        )
        .await
        .expect("restore");
    eventually(|| async {
        let s = rig.client.restore_session(answer.session_id).await.ok()?;
        (s.state == SessionState::Stopped).then_some(())
    })
    .await;
    let events = rig
        .client
        .clone()
        .with_page_size(1)
        .restore_session_events(first)
        .await
        .expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("alice@contoso.com")),
        "{events:?}"
    );
    let stats = rig
        .client
        .restore_session_statistics(answer.session_id)
        .await
        .expect("statistics");
    assert!(
        stats
            .items
            .iter()
            .any(|i| i.mailbox_email.as_deref() == Some("alice@contoso.com")),
        "{stats:?}"
    );

    rig.client.stop_restore_session(first).await.expect("stop");
    let stop = rig.calls(Operation::StopRestoreSession);
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].status, Some(204));
    let stopped = rig
        .client
        .restore_session(first)
        .await
        .expect("get stopped");
    assert_eq!(stopped.state, SessionState::Stopped);
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn mailboxes_all_pages_and_by_id() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let got = rig
        .client
        .clone()
        .with_page_size(5)
        .mailboxes(rs)
        .await
        .expect("mailboxes");
    let expected = rig.sim.mailboxes(DEMO_ORG_ID);
    let got_keys: Vec<(Uuid, String, bool)> = got
        .iter()
        .map(|m| (m.id, m.email.clone(), m.is_archive))
        .collect();
    let expected_keys: Vec<(Uuid, String, bool)> = expected
        .iter()
        .map(|m| (m.id, m.email.clone(), m.is_archive))
        .collect();
    assert_eq!(got_keys, expected_keys);
    assert_eq!(
        got.iter().filter(|m| m.is_archive).count(),
        4,
        "archive twins"
    );

    let alice = rig.sim.mailbox("alice@contoso.com", true).expect("archive");
    let one = rig.client.mailbox(rs, alice.id).await.expect("by id");
    assert_eq!(one.id, alice.id);
    assert_eq!(one.email, "alice@contoso.com");
    assert!(one.is_archive);
    assert_eq!(one.name, "Alice Adams (Archive)");
    rig.sim.shutdown().await;
}

/// Bulk restore with each of its three credential forms, restore and restoreTo with each of
/// theirs; every body passes the simulator's schema check and each restore really starts.
#[tokio::test]
async fn restores_with_each_credential_form() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let bob = rig.mailbox_id("bob@contoso.com");
    let carol = rig.mailbox_id("carol@contoso.com");
    for creds in [
        app_credentials(),
        user_credentials(),
        on_premises_credentials(),
    ] {
        let options = BulkRestoreOptions {
            mailboxes: vec![MailboxRef { id: bob }, MailboxRef { id: carol }],
            flags: RestoreFlags {
                changed_items: Some(true),
                deleted_items: Some(true),
                ..Default::default()
            },
            skip_unresolved: Some(false),
            recent_item_restore_period: Some(7),
            ..Default::default()
        }
        .with_credentials(&creds);
        let answer = rig
            .client
            .restore_mailboxes(rs, &options)
            .await
            .expect("bulk restore");
        assert_ne!(answer.session_id, Uuid::nil());
    }
    assert_eq!(rig.sim.restore_calls(bob), 3);
    assert_eq!(rig.sim.restore_calls(carol), 3);

    let dave = rig.mailbox_id("dave@contoso.com");
    let erin = rig.mailbox_id("erin@contoso.com");
    // A device code the simulator handed out in this session and an operator signed in with.
    let code = rig
        .client
        .restore_device_code(rs, &restorectl::vb365::DeviceCodeRequestOptions::default())
        .await
        .expect("device code");
    let code = code.user_code.expect("userCode");
    assert!(rig.sim.sign_in_device_code(&code));
    let user_code = MailboxRestoreCredentials {
        user_code: Some(code),
        ..Default::default()
    };
    let forms: Vec<MailboxRestoreCredentials> = vec![
        (&app_credentials()).try_into().expect("app"),
        (&user_credentials()).try_into().expect("user"),
        user_code,
    ];
    for credentials in &forms {
        rig.client
            .restore_mailbox(
                rs,
                dave,
                &RestoreToOriginalLocation {
                    credentials: credentials.clone(),
                },
            )
            .await
            .expect("restore");
        let to = RestoreToDifferentLocation {
            mailbox: Some("legal-review@contoso.com".into()),
            folder: Some("Restored/erin".into()),
            office_region: Some(OfficeRegion::Worldwide),
            flags: RestoreFlags {
                mark_restored_as_unread: Some(true),
                exclude_drafts: Some(true),
                ..Default::default()
            },
            credentials: credentials.clone(),
            ..Default::default()
        };
        rig.client
            .restore_mailbox_to(rs, erin, &to)
            .await
            .expect("restoreTo");
    }
    assert!(RestoreToOriginalLocation::new(&on_premises_credentials()).is_err());
    assert_eq!(rig.sim.restore_calls(dave), 3);
    assert_eq!(rig.sim.restore_calls(erin), 3);
    // Every restore POST was answered 200 and journalled with its secrets redacted.
    for op in [
        Operation::RestoreMailboxes,
        Operation::RestoreMailbox,
        Operation::RestoreMailboxTo,
    ] {
        let calls = rig.calls(op);
        assert_eq!(calls.len(), 3, "{op:?}");
        for c in calls {
            assert_eq!(c.status, Some(200), "{op:?} {:?}", c.body);
            let text = c.body.expect("body").to_string();
            assert!(
                !text.contains("-pass") && !text.contains("UEZYLUJZVEVT"),
                "{text}"
            );
        }
    }
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn export_full_body_matches_the_simulators_digest() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let frank = rig.mailbox_id("frank@contoso.com");
    let export = rig
        .client
        .export_to_pst(
            rs,
            frank,
            &ExportToPstOptions::new(None, None),
            None,
            FIRST_BYTE,
        )
        .await
        .expect("export");
    assert_eq!(export.status, reqwest::StatusCode::OK);
    assert!(!export.is_resumed());
    let total = export.total_size().expect("content length");
    let bytes = read_export(export).await.expect("body");
    assert_eq!(bytes.len() as u64, total);
    assert_eq!(&bytes[..4], PST_MAGIC);
    let (digest, len) = rig
        .sim
        .export_digest(&ExportSpec {
            mailbox_id: frank,
            keyword: None,
            point_in_time: None,
            pst_size_limit: None,
        })
        .expect("digest");
    assert_eq!((sha256_hex(&bytes), bytes.len() as u64), (digest, len));
    let sent = &rig.calls(Operation::ExportMailboxToPst)[0];
    assert_eq!(sent.range, None);
    assert_eq!(sent.body, Some(serde_json::json!({})));
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn search_per_mailbox_and_organisation_wide() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let ceo = rig.mailbox_id("ceo@contoso.com");
    let query = "subject:report OR hasattachments:true";
    let items = rig
        .client
        .search_mailbox(rs, ceo, &SearchOptions::query(query))
        .await
        .expect("mailbox search");
    let truth = rig
        .sim
        .search_ground_truth(query, SearchScope::Mailbox(ceo), None)
        .expect("truth");
    assert!(truth > 0);
    assert_eq!(items.len(), truth);

    let org_query = "from:ceo@contoso.com";
    let all = rig
        .client
        .search_mailboxes(rs, &SearchOptions::query(org_query))
        .await
        .expect("org search");
    let truth = rig
        .sim
        .search_ground_truth(org_query, SearchScope::Organization(DEMO_ORG_ID), None)
        .expect("truth");
    assert!(truth > 0);
    assert_eq!(all.len(), truth);
    assert!(
        all.iter().all(|i| i.mailbox_id.is_some()),
        "org-wide hits name their mailbox"
    );
    let ids: HashSet<&str> = all.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), truth, "no duplicates");
    rig.sim.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// TLS
// -------------------------------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 signed by it, generated in the test.
struct Pki {
    ca_pem: String,
    server: TlsPem,
}

fn generate_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "restorectl test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vb365 simulator");
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer).expect("server cert");
    Pki {
        ca_pem: ca_cert.pem(),
        server: TlsPem {
            cert_pem: server_cert.pem(),
            key_pem: server_key.serialize_pem(),
        },
    }
}

#[tokio::test]
async fn tls_with_ca_file_untrusted_and_insecure_skip_verify() {
    let pki = generate_pki();
    let sim = start(SimConfig {
        tls: Some(pki.server.clone()),
        ..fast_config()
    })
    .await;
    let base = sim.base_url();
    assert!(base.starts_with("https://"), "{base}");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).expect("ca file");

    // Trusted through caFile: a full exchange works.
    let (mut server, ctx) = server_config(&base, &dir);
    server.ca_file = Some(ca_path);
    let trusted = Client::new(&server, &ctx).expect("client");
    let orgs = trusted
        .organizations()
        .await
        .expect("organizations over TLS");
    assert!(orgs.iter().any(|o| o.name == DEMO_ORG_NAME));

    // Without the CA: the handshake fails, the error says so and names the server and path.
    let (plain, ctx) = server_config(&base, &dir);
    let untrusting = Client::new(&plain, &ctx).expect("client");
    let err = untrusting
        .organizations()
        .await
        .expect_err("untrusted certificate");
    assert_eq!(err.kind, ErrorKind::Transport(Transport::Connect));
    assert_eq!(err.path, "/v8/token");
    let text = err.to_string();
    assert!(text.contains("server sim"), "{text}");
    assert!(text.contains("add its CA with caFile"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("certificate"),
        "the message names the certificate problem: {text}"
    );

    // A CA that did not sign the server certificate does not help either.
    let other = generate_pki();
    let other_path = dir.path().join("other-ca.pem");
    std::fs::write(&other_path, &other.ca_pem).expect("other ca");
    let (mut wrong, ctx) = server_config(&base, &dir);
    wrong.ca_file = Some(other_path);
    assert!(
        Client::new(&wrong, &ctx)
            .expect("client")
            .organizations()
            .await
            .is_err()
    );

    // insecureSkipTlsVerify accepts the certificate without the CA.
    let (mut insecure, ctx) = server_config(&base, &dir);
    insecure.insecure_skip_tls_verify = true;
    let skip = Client::new(&insecure, &ctx).expect("client");
    assert_eq!(
        skip.organization(DEMO_ORG_ID).await.expect("insecure").name,
        DEMO_ORG_NAME
    );
    sim.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Error classes (SPEC §5) through fault injection
// -------------------------------------------------------------------------------------------

/// Each `errorCode` of SPEC §5 (and the status-only rows) on a GET of a mailbox, classified.
#[tokio::test]
async fn each_error_code_is_classified() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let alice = rig.mailbox_id("alice@contoso.com");
    let rows: [(u16, Option<&str>, ErrorClass); 10] = [
        (500, Some("ProxyOffline"), ErrorClass::Retryable),
        (500, Some("Timeout"), ErrorClass::Retryable),
        (409, Some("OperationConflict"), ErrorClass::Retryable),
        (
            400,
            Some("ParameterValidationFailure"),
            ErrorClass::Permanent,
        ),
        (404, Some("ResourceNotFound"), ErrorClass::Permanent),
        (403, Some("ResourceAccessDenied"), ErrorClass::Permanent),
        (400, None, ErrorClass::Permanent),
        (409, None, ErrorClass::Permanent),
        (503, None, ErrorClass::Retryable),
        (500, Some("HttpError"), ErrorClass::Retryable),
    ];
    for (n, (status, code, class)) in rows.iter().enumerate() {
        rig.sim.clear_faults();
        rig.sim
            .add_fault(
                FaultRule::on(
                    Endpoint::Mailbox,
                    FaultAction::Error {
                        status: *status,
                        error_code: code.map(str::to_string),
                        message: Some(format!("simulated row {n}")),
                    },
                )
                .calls(CallRange::only(1)),
            )
            .expect("fault");
        let err = rig
            .client
            .mailbox(rs, alice)
            .await
            .expect_err("fault answers");
        assert_eq!(err.class, *class, "{status} {code:?}: {err}");
        assert_eq!(err.status.map(|s| s.as_u16()), Some(*status));
        assert_eq!(err.error_code.map(|c| c.as_str()), *code);
        assert_eq!(err.message, format!("simulated row {n}"));
        assert!(
            err.path.contains(&alice.to_string()),
            "ids are kept in the path: {}",
            err.path
        );
        // Retrying by hand after the fault works: the failure was the fault alone.
        rig.client.mailbox(rs, alice).await.expect("next call");
    }
    // ResourceNotFound on a live session's mailbox was checked against the session (still
    // Working), so it stayed permanent rather than SessionLost.
    assert!(!rig.calls(Operation::GetRestoreSession).is_empty());
    // A restore POST answered with a 5xx is in doubt whatever its errorCode (the server may
    // have started the restore, API.md §5); only a refusal before execution keeps its class.
    for (status, code, class) in [
        (500, "ProxyOffline", ErrorClass::Ambiguous),
        (504, "Timeout", ErrorClass::Ambiguous),
        (409, "OperationConflict", ErrorClass::Retryable),
        (400, "ParameterValidationFailure", ErrorClass::Permanent),
    ] {
        rig.sim.clear_faults();
        rig.sim
            .add_fault(
                FaultRule::on(
                    Endpoint::MailboxRestore,
                    FaultAction::Error {
                        status,
                        error_code: Some(code.into()),
                        message: None,
                    },
                )
                .calls(CallRange::only(1)),
            )
            .expect("fault");
        let err = rig
            .client
            .restore_mailbox(
                rs,
                alice,
                &RestoreToOriginalLocation::new(&app_credentials()).expect("body"),
            )
            .await
            .expect_err("the fault answers");
        assert_eq!(err.class, class, "restore answered {status} {code}: {err}");
        assert_eq!(
            rig.sim.restore_calls(alice),
            0,
            "the fault replaced the handler"
        );
    }
    rig.sim.shutdown().await;
}

/// The simulator's own schema check answers a malformed body with `ParameterValidationFailure`
/// naming the field; the client reports it permanent with the server's message.
#[tokio::test]
async fn a_real_validation_failure_is_permanent_and_names_the_field() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let alice = rig.mailbox_id("alice@contoso.com");
    let err = rig
        .client
        .export_to_pst(
            rs,
            alice,
            &ExportToPstOptions::new(None, Some(GIB / 2)),
            None,
            FIRST_BYTE,
        )
        .await
        .expect_err("limit below 1 GiB");
    assert_eq!(err.error_code, Some(ErrorCode::ParameterValidationFailure));
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("pstSizeLimitBytes"), "{err}");
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn refresh_failing_falls_back_to_a_password_grant() {
    // Refresh tokens expire at once: every refresh grant fails.
    let rig = rig(SimConfig {
        refresh_token_lifetime: Duration::ZERO,
        ..fast_config()
    })
    .await;
    rig.client.organization(DEMO_ORG_ID).await.expect("first");
    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::Organization, FaultAction::ExpireTokens)
                .calls(CallRange::only(1)),
        )
        .expect("fault");
    rig.client
        .organization(DEMO_ORG_ID)
        .await
        .expect("after fallback");
    assert_eq!(rig.grants(), ["password", "refresh_token", "password"]);
    let statuses: Vec<Option<u16>> = rig
        .calls(Operation::Token)
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses[0], Some(200));
    assert!(statuses[1].is_some_and(|s| s >= 400), "{statuses:?}");
    assert_eq!(statuses[2], Some(200));
    rig.sim.shutdown().await;
}

/// Tokens expire in the middle of a multi-call sequence (a paged listing and a restore POST):
/// each call refreshes once and carries on; the restore is sent exactly twice (401, then the
/// real attempt) and executed once.
#[tokio::test]
async fn expired_token_mid_sequence() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::Mailboxes, FaultAction::ExpireTokens).calls(CallRange::only(3)),
        )
        .expect("fault");
    let boxes = rig
        .client
        .clone()
        .with_page_size(5)
        .mailboxes(rs)
        .await
        .expect("listing across the expiry");
    assert_eq!(boxes.len(), rig.sim.mailboxes(DEMO_ORG_ID).len());
    let pages = rig.calls(Operation::ListMailboxes);
    assert_eq!(pages[2].status, Some(401));
    assert_eq!(pages[3].status, Some(200));
    assert_eq!(
        pages[2].query, pages[3].query,
        "the refused page is asked again"
    );
    let offsets: Vec<String> = pages
        .iter()
        .filter(|p| p.status == Some(200))
        .filter_map(|p| p.query_param("offset"))
        .collect();
    let expected: Vec<String> = (0..offsets.len()).map(|i| (i * 5).to_string()).collect();
    assert_eq!(
        offsets, expected,
        "no page skipped or repeated after the refresh"
    );

    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::MailboxRestore, FaultAction::ExpireTokens)
                .calls(CallRange::only(1)),
        )
        .expect("fault");
    let grace = rig.mailbox_id("grace@contoso.com");
    rig.client
        .restore_mailbox(
            rs,
            grace,
            &RestoreToOriginalLocation::new(&user_credentials()).expect("body"),
        )
        .await
        .expect("restore after refresh");
    let posts: Vec<Option<u16>> = rig
        .calls(Operation::RestoreMailbox)
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(posts, [Some(401), Some(200)]);
    assert_eq!(rig.sim.restore_calls(grace), 1);
    assert_eq!(rig.grants(), ["password", "refresh_token", "refresh_token"]);
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn too_many_requests_is_retryable_with_retry_after() {
    let rig = rig(fast_config()).await;
    rig.sim
        .add_fault(
            FaultRule::on(
                Endpoint::Organizations,
                FaultAction::TooManyRequests {
                    retry_after_seconds: 17,
                },
            )
            .calls(CallRange::only(1)),
        )
        .expect("fault");
    let err = rig.client.organizations().await.expect_err("429");
    assert_eq!(err.status, Some(reqwest::StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.class, ErrorClass::Retryable);
    assert_eq!(err.retry_after, Some(Duration::from_secs(17)));
    assert!(err.to_string().contains("retry after 17s"), "{err}");
    rig.client.organizations().await.expect("then fine");
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // Bind a port, learn it, close it: nothing listens there any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ctx) = server_config(&format!("http://127.0.0.1:{port}"), &dir);
    let client = Client::new(&server, &ctx).expect("client");
    let err = client.organizations().await.expect_err("refused");
    assert_eq!(err.class, ErrorClass::Retryable);
    assert_eq!(err.kind, ErrorKind::Transport(Transport::Connect));
    assert!(err.status.is_none());
    assert!(err.to_string().contains("server sim"), "{err}");
}

/// The restore is executed but its response is lost: the client must call the outcome
/// ambiguous (never retry it by itself), and the simulator confirms the restore ran, once.
#[tokio::test]
async fn lost_response_of_a_restore_post_is_ambiguous() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let heidi = rig.mailbox_id("heidi@contoso.com");
    for (endpoint, n) in [
        (Endpoint::MailboxRestore, 0),
        (Endpoint::MailboxRestoreTo, 1),
        (Endpoint::BulkRestore, 2),
    ] {
        rig.sim
            .add_fault(FaultRule::on(endpoint, FaultAction::LoseResponse).calls(CallRange::only(1)))
            .expect("fault");
        let creds = app_credentials();
        let result = match endpoint {
            Endpoint::MailboxRestore => {
                rig.client
                    .restore_mailbox(
                        rs,
                        heidi,
                        &RestoreToOriginalLocation::new(&creds).expect("body"),
                    )
                    .await
            }
            Endpoint::MailboxRestoreTo => {
                rig.client
                    .restore_mailbox_to(
                        rs,
                        heidi,
                        &RestoreToDifferentLocation {
                            mailbox: Some("legal-review@contoso.com".into()),
                            credentials: (&creds).try_into().expect("creds"),
                            ..Default::default()
                        },
                    )
                    .await
            }
            _ => {
                rig.client
                    .restore_mailboxes(
                        rs,
                        &BulkRestoreOptions {
                            mailboxes: vec![MailboxRef { id: heidi }],
                            ..Default::default()
                        }
                        .with_credentials(&creds),
                    )
                    .await
            }
        };
        let err = result.expect_err("response lost");
        assert_eq!(err.class, ErrorClass::Ambiguous, "{endpoint:?}: {err}");
        assert!(
            matches!(err.kind, ErrorKind::Transport(t) if t != Transport::Connect),
            "{err:?}"
        );
        assert_eq!(rig.sim.restore_calls(heidi), n + 1, "executed exactly once");
    }
    // The journal shows one POST per endpoint, without a response status (dropped).
    for op in [
        Operation::RestoreMailbox,
        Operation::RestoreMailboxTo,
        Operation::RestoreMailboxes,
    ] {
        let calls = rig.calls(op);
        assert_eq!(calls.len(), 1, "never re-sent: {op:?}");
        assert_eq!(calls[0].status, None);
        assert_eq!(calls[0].fault.as_deref(), Some("loseResponse"));
    }
    // A lost answer of a safe call is merely retryable.
    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::Mailbox, FaultAction::LoseResponse).calls(CallRange::only(1)),
        )
        .expect("fault");
    let err = rig
        .client
        .mailbox(rs, heidi)
        .await
        .expect_err("lost answer of a read");
    assert_eq!(err.class, ErrorClass::Retryable);
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn stopped_or_removed_session_is_session_lost() {
    let rig = rig(fast_config()).await;
    let ivan = rig.mailbox_id("ivan@contoso.com");

    // Stopped by someone else: later calls under it are SessionLost.
    let rs = rig.explore().await;
    rig.client.stop_restore_session(rs).await.expect("stop");
    let err = rig.client.mailbox(rs, ivan).await.expect_err("stopped");
    assert_eq!(err.class, ErrorClass::SessionLost, "{err}");
    assert_eq!(err.error_code, Some(ErrorCode::ResourceNotFound));
    let err = rig
        .client
        .export_to_pst(rs, ivan, &ExportToPstOptions::default(), None, FIRST_BYTE)
        .await
        .expect_err("export on stopped session");
    assert_eq!(err.class, ErrorClass::SessionLost, "{err}");

    // Removed by the server in the middle of work (RemoveSession fault).
    let rs = rig.explore().await;
    rig.client.mailbox(rs, ivan).await.expect("works before");
    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::Mailboxes, FaultAction::RemoveSession)
                .calls(CallRange::only(1)),
        )
        .expect("fault");
    let err = rig.client.mailboxes(rs).await.expect_err("removed");
    assert_eq!(err.class, ErrorClass::SessionLost, "{err}");
    let err = rig.client.restore_session(rs).await.expect_err("gone");
    assert_eq!(err.class, ErrorClass::SessionLost, "{err}");
    // A restore POST on the vanished session is SessionLost as well (a known "not executed").
    let err = rig
        .client
        .restore_mailbox(
            rs,
            ivan,
            &RestoreToOriginalLocation::new(&app_credentials()).expect("body"),
        )
        .await
        .expect_err("restore on a removed session");
    assert_eq!(err.class, ErrorClass::SessionLost, "{err}");
    assert_eq!(rig.sim.restore_calls(ivan), 0);

    // An unknown mailbox under a live session stays permanent.
    let live = rig.explore().await;
    let err = rig
        .client
        .mailbox(live, Uuid::from_u128(42))
        .await
        .expect_err("unknown mailbox");
    assert_eq!(err.class, ErrorClass::Permanent, "{err}");

    // "Not found" under a live session whose follow-up read fails transiently: nobody can tell
    // yet whether the session is gone, so the error is retryable, not permanent.
    rig.sim
        .add_fault(
            FaultRule::on(
                Endpoint::Mailbox,
                FaultAction::Error {
                    status: 404,
                    error_code: Some("ResourceNotFound".into()),
                    message: Some("simulated not found".into()),
                },
            )
            .calls(CallRange::only(1)),
        )
        .expect("fault");
    rig.sim
        .add_fault(
            FaultRule::on(
                Endpoint::RestoreSession,
                FaultAction::Error {
                    status: 500,
                    error_code: Some("ProxyOffline".into()),
                    message: Some("simulated proxy offline".into()),
                },
            )
            .calls(CallRange::only(1)),
        )
        .expect("fault");
    let err = rig
        .client
        .mailbox(live, ivan)
        .await
        .expect_err("not found, session unknown");
    assert_eq!(err.class, ErrorClass::Retryable, "{err}");
    rig.client
        .mailbox(live, ivan)
        .await
        .expect("the retry works");
    rig.sim.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Paging and setId
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn all_2500_fabrikam_mailboxes_with_default_page_size_and_with_7() {
    let rig = rig(fast_config()).await;
    let fabrikam = rig
        .client
        .resolve_organization(PAGING_ORG_NAME)
        .await
        .expect("fabrikam")
        .id
        .expect("id");
    let session = rig
        .client
        .explore_organization(fabrikam, &OrganizationExploreOptions::exchange(None))
        .await
        .expect("explore")
        .id;
    let expected: Vec<String> = (1..=PAGING_ORG_MAILBOXES)
        .map(|i| format!("user{i:04}@fabrikam.com"))
        .collect();
    let total = PAGING_ORG_MAILBOXES;
    for page_size in [restorectl::vb365::client::DEFAULT_PAGE_SIZE as usize, 7] {
        rig.sim.clear_journal();
        let client = rig.client.clone().with_page_size(page_size as u32);
        let boxes = client.mailboxes(session).await.expect("all mailboxes");
        let mut emails: Vec<String> = boxes.iter().map(|m| m.email.clone()).collect();
        emails.sort();
        assert_eq!(emails, expected, "page size {page_size}");
        let ids: HashSet<Uuid> = boxes.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), total);
        // Full pages, then one short (possibly empty) page ends the listing.
        let pages = rig.calls(Operation::ListMailboxes);
        assert_eq!(pages.len(), total / page_size + 1, "page size {page_size}");
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(p.status, Some(200));
            assert_eq!(
                p.query_param("offset"),
                Some((i * page_size).to_string()),
                "page {i}"
            );
            assert_eq!(p.query_param("limit"), Some(page_size.to_string()));
        }
    }
    assert_eq!(
        restorectl::vb365::client::DEFAULT_PAGE_SIZE,
        1000,
        "SPEC default"
    );
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn search_over_several_pages_reuses_the_first_set_id() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let ceo = rig.mailbox_id("ceo@contoso.com");
    let query = "subject:report OR hasattachments:true";
    let truth = rig
        .sim
        .search_ground_truth(query, SearchScope::Mailbox(ceo), None)
        .expect("truth");
    let client = rig.client.clone().with_page_size(7);
    assert!(truth > 14, "at least three pages ({truth})");
    let items = client
        .search_mailbox(rs, ceo, &SearchOptions::query(query))
        .await
        .expect("search");
    assert_eq!(items.len(), truth);
    let ids: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), truth, "no duplicates across pages");

    let org_query = "subject:report";
    let org_truth = rig
        .sim
        .search_ground_truth(org_query, SearchScope::Organization(DEMO_ORG_ID), None)
        .expect("org truth");
    assert!(org_truth > 14, "several pages ({org_truth})");
    let org_items = client
        .search_mailboxes(rs, &SearchOptions::query(org_query))
        .await
        .expect("org search");
    assert_eq!(org_items.len(), org_truth);

    for op in [Operation::SearchMailbox, Operation::SearchMailboxes] {
        let pages = rig.calls(op);
        assert!(pages.len() >= 3, "{op:?}: {} pages", pages.len());
        // The journal records requests, not answers, so "the first response's setId" is
        // pinned down this way: the simulator creates a result set only for a request without
        // a setId, and answers an unknown setId with 404. Only the first page went without one,
        // so it created the only set of this search, and every later page that carries a setId
        // and was answered 200 carries that set's id.
        assert_eq!(pages[0].query_param("setId"), None, "first page has none");
        assert_eq!(pages[0].status, Some(200));
        let first_set = pages[1].query_param("setId").expect("second page has one");
        Uuid::parse_str(&first_set).expect("setId is a uuid");
        for (i, p) in pages.iter().enumerate().skip(1) {
            assert_eq!(p.status, Some(200), "{op:?} page {i}");
            assert_eq!(
                p.query_param("setId").as_deref(),
                Some(first_set.as_str()),
                "{op:?} page {i}"
            );
            assert_eq!(p.query_param("offset"), Some((i * 7).to_string()));
            assert_eq!(p.body, pages[0].body, "same query on every page");
        }
    }
    // The set ids of the two searches differ: each search got its own set.
    let first = |op: Operation| rig.calls(op)[1].query_param("setId");
    assert_ne!(
        first(Operation::SearchMailbox),
        first(Operation::SearchMailboxes)
    );
    rig.sim.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Export bytes
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn full_and_resumed_export_concatenate_to_the_simulators_digest() {
    let rig = rig(fast_config()).await;
    let point: chrono::DateTime<chrono::Utc> = "2025-03-15T12:00:00Z".parse().expect("time");
    let rs = rig
        .client
        .explore_organization(
            DEMO_ORG_ID,
            &OrganizationExploreOptions::exchange(Some(point)),
        )
        .await
        .expect("explore")
        .id;
    let judy = rig.mailbox_id("judy@contoso.com");
    let options = ExportToPstOptions::new(Some("falcon".into()), None);
    let (digest, len) = rig
        .sim
        .export_digest(&ExportSpec {
            mailbox_id: judy,
            keyword: Some("falcon".into()),
            point_in_time: Some(point),
            pst_size_limit: None,
        })
        .expect("digest");

    // First attempt breaks after an arbitrary number of bytes.
    let cut = len / 3 + 17;
    rig.sim
        .add_fault(
            FaultRule::on(
                Endpoint::ExportPst,
                FaultAction::DropAfterBytes { bytes: cut },
            )
            .calls(CallRange::only(1)),
        )
        .expect("fault");
    let first = rig
        .client
        .export_to_pst(rs, judy, &options, None, FIRST_BYTE)
        .await
        .expect("headers");
    assert_eq!(first.total_size(), Some(len));
    let mut received = Vec::new();
    let mut stream = Box::pin(first.into_stream());
    let mut broke = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received.extend_from_slice(&c),
            Err(e) => {
                broke = Some(e);
                break;
            }
        }
    }
    let broke = broke.expect("the body breaks");
    assert_eq!(broke.class, ErrorClass::Retryable, "{broke}");
    assert_eq!(broke.kind, ErrorKind::Transport(Transport::Body));
    assert!(!received.is_empty() && (received.len() as u64) < len);

    // Resume from what arrived: 206 with a matching Content-Range.
    let offset = received.len() as u64;
    let resumed = rig
        .client
        .export_to_pst(rs, judy, &options, Some(offset), FIRST_BYTE)
        .await
        .expect("resume");
    assert_eq!(resumed.status, reqwest::StatusCode::PARTIAL_CONTENT);
    assert!(resumed.is_resumed());
    let range = resumed.content_range.expect("content range");
    assert_eq!(
        (range.start, range.end, range.total),
        (offset, len - 1, Some(len))
    );
    assert_eq!(resumed.total_size(), Some(len));
    let tail = read_export(resumed).await.expect("tail");
    received.extend_from_slice(&tail);
    assert_eq!(received.len() as u64, len);
    assert_eq!(sha256_hex(&received), digest);
    assert_eq!(&received[..4], PST_MAGIC);

    // And from a second arbitrary offset, concatenated to a fresh full body's prefix.
    let full = read_export(
        rig.client
            .export_to_pst(rs, judy, &options, None, FIRST_BYTE)
            .await
            .expect("full"),
    )
    .await
    .expect("full body");
    assert_eq!(sha256_hex(&full), digest);
    let offset2 = len - len / 5 - 3;
    let tail2 = read_export(
        rig.client
            .export_to_pst(rs, judy, &options, Some(offset2), FIRST_BYTE)
            .await
            .expect("resume 2"),
    )
    .await
    .expect("tail 2");
    let mut joined = full[..offset2 as usize].to_vec();
    joined.extend_from_slice(&tail2);
    assert_eq!(sha256_hex(&joined), digest);

    let ranges: Vec<Option<String>> = rig
        .calls(Operation::ExportMailboxToPst)
        .iter()
        .map(|e| e.range.clone())
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={offset}-")),
            None,
            Some(format!("bytes={offset2}-"))
        ]
    );
    rig.sim.shutdown().await;
}

#[tokio::test]
async fn split_export_is_a_valid_zip_of_pst_files() {
    let mut config = SimConfig {
        // A 1 GiB limit splits every 64 KiB.
        pst_split_scale: 16_384,
        ..fast_config()
    };
    config
        .export_sizes
        .insert("legal-review@contoso.com".into(), 300 * 1024);
    let rig = rig(config).await;
    let rs = rig.explore().await;
    let legal = rig.mailbox_id("legal-review@contoso.com");
    let export = rig
        .client
        .export_to_pst(
            rs,
            legal,
            &ExportToPstOptions::new(None, Some(GIB)),
            None,
            FIRST_BYTE,
        )
        .await
        .expect("export");
    let bytes = read_export(export).await.expect("zip bytes");
    assert_eq!(&bytes[..4], ZIP_MAGIC);
    let (digest, _) = rig
        .sim
        .export_digest(&ExportSpec {
            mailbox_id: legal,
            keyword: None,
            point_in_time: None,
            pst_size_limit: Some(GIB),
        })
        .expect("digest");
    assert_eq!(sha256_hex(&bytes), digest);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid zip");
    assert_eq!(archive.len(), 5, "300 KiB in 64 KiB parts");
    let mut total = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        assert!(entry.name().ends_with(".pst"), "{}", entry.name());
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .expect("entry data, CRC checked");
        assert_eq!(&data[..4], PST_MAGIC, "entry {} is a PST", entry.name());
        total += data.len();
    }
    assert_eq!(total, 300 * 1024);
    let sent = &rig.calls(Operation::ExportMailboxToPst)[0];
    assert_eq!(
        sent.body,
        Some(serde_json::json!({"enablePstSizeLimit": true, "pstSizeLimitBytes": GIB}))
    );
    rig.sim.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// More failure shapes
// -------------------------------------------------------------------------------------------

/// A wrong password is `Auth` with the server's OAuth `error_description`, and the password
/// never shows in the error.
#[tokio::test]
async fn wrong_password_is_auth_and_the_password_stays_secret() {
    let sim = start(fast_config()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ctx) = server_config(&sim.base_url(), &dir);
    std::fs::write(dir.path().join("vb365-password"), "Wrong-PASSWORD-value\n").expect("pw");
    let client = Client::new(&server, &ctx).expect("client");
    let err = client.organizations().await.expect_err("bad password");
    assert_eq!(err.class, ErrorClass::Auth, "{err}");
    assert_eq!(err.path, "/v8/token");
    assert!(err.status.is_some_and(|s| s.is_client_error()));
    assert!(!err.message.is_empty());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("Wrong-PASSWORD-value"), "{shown}");
    sim.shutdown().await;
}

/// A restore POST whose JSON answer breaks mid-body was executed: `Ambiguous`, never re-sent.
#[tokio::test]
async fn broken_answer_of_a_restore_post_is_ambiguous() {
    let rig = rig(fast_config()).await;
    let rs = rig.explore().await;
    let judy = rig.mailbox_id("judy@contoso.com");
    rig.sim
        .add_fault(
            FaultRule::on(
                Endpoint::MailboxRestore,
                FaultAction::DropAfterBytes { bytes: 5 },
            )
            .calls(CallRange::only(1)),
        )
        .expect("fault");
    let err = rig
        .client
        .restore_mailbox(
            rs,
            judy,
            &RestoreToOriginalLocation::new(&user_credentials()).expect("body"),
        )
        .await
        .expect_err("broken answer");
    assert_eq!(err.class, ErrorClass::Ambiguous, "{err}");
    assert_eq!(rig.sim.restore_calls(judy), 1);
    assert_eq!(rig.calls(Operation::RestoreMailbox).len(), 1);
    // The same break on a read is retryable.
    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::Mailbox, FaultAction::DropAfterBytes { bytes: 5 })
                .calls(CallRange::only(1)),
        )
        .expect("fault");
    let err = rig.client.mailbox(rs, judy).await.expect_err("broken read");
    assert_eq!(err.class, ErrorClass::Retryable, "{err}");
    rig.sim.shutdown().await;
}

/// Timeouts: a slow read is retryable, a slow restore POST ambiguous, and an export whose
/// headers do not come within the first-byte bound is a retryable timeout.
#[tokio::test]
async fn timeouts_are_classified_by_replay_safety() {
    let sim = start(SimConfig {
        export_build_delay: Duration::from_secs(5),
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, ctx) = server_config(&sim.base_url(), &dir);
    server.request_timeout = Duration::from_millis(500);
    let client = Client::new(&server, &ctx).expect("client");
    let rs = client
        .explore_organization(DEMO_ORG_ID, &OrganizationExploreOptions::exchange(None))
        .await
        .expect("explore")
        .id;
    let ivan = sim.mailbox("ivan@contoso.com", false).expect("mailbox").id;
    let slow = |endpoint| {
        FaultRule::on(
            endpoint,
            FaultAction::Delay {
                duration: Duration::from_secs(5),
            },
        )
        .calls(CallRange::only(1))
    };
    sim.add_fault(slow(Endpoint::Mailbox)).expect("fault");
    let err = client.mailbox(rs, ivan).await.expect_err("slow read");
    assert_eq!(err.kind, ErrorKind::Transport(Transport::Timeout), "{err}");
    assert_eq!(err.class, ErrorClass::Retryable);

    sim.add_fault(slow(Endpoint::MailboxRestore))
        .expect("fault");
    let err = client
        .restore_mailbox(
            rs,
            ivan,
            &RestoreToOriginalLocation::new(&app_credentials()).expect("body"),
        )
        .await
        .expect_err("slow restore");
    assert_eq!(err.kind, ErrorKind::Transport(Transport::Timeout), "{err}");
    assert_eq!(err.class, ErrorClass::Ambiguous);

    // The export is not bound by requestTimeout but by the first-byte timeout it is given.
    let err = client
        .export_to_pst(
            rs,
            ivan,
            &ExportToPstOptions::default(),
            None,
            Duration::from_millis(500),
        )
        .await
        .expect_err("no first byte");
    assert_eq!(err.kind, ErrorKind::Transport(Transport::Timeout), "{err}");
    assert_eq!(err.class, ErrorClass::Retryable);
    assert!(err.message.contains("first-byte"), "{err}");
    sim.shutdown().await;
}

/// With a server that forgets stopped sessions entirely (404 on the session itself), calls
/// under a stopped session are `SessionLost` too.
#[tokio::test]
async fn forgotten_stopped_session_is_session_lost() {
    let rig = rig(SimConfig {
        stopped_sessions: restorectl::sim::StoppedSessions::NotFound,
        ..fast_config()
    })
    .await;
    let rs = rig.explore().await;
    let bob = rig.mailbox_id("bob@contoso.com");
    rig.client.stop_restore_session(rs).await.expect("stop");
    for err in [
        rig.client.mailbox(rs, bob).await.expect_err("mailbox"),
        rig.client.restore_session(rs).await.expect_err("session"),
        rig.client
            .restore_session_events(rs)
            .await
            .expect_err("events"),
        rig.client
            .search_mailbox(rs, bob, &SearchOptions::query("subject:report"))
            .await
            .expect_err("search"),
    ] {
        assert_eq!(err.class, ErrorClass::SessionLost, "{err}");
    }
    rig.sim.shutdown().await;
}

/// Many calls refused at once after the server expired the token: one refresh serves them all
/// (the simulator's refresh tokens are single-use, so a second refresh would fail and show up
/// as a password grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_share_one_refresh() {
    let rig = rig(fast_config()).await;
    rig.client.organization(DEMO_ORG_ID).await.expect("first");
    rig.sim
        .add_fault(
            FaultRule::on(Endpoint::Organization, FaultAction::ExpireTokens)
                .calls(CallRange::only(1)),
        )
        .expect("fault");
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = rig.client.clone();
            tokio::spawn(async move { client.organization(DEMO_ORG_ID).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("call succeeds");
    }
    assert_eq!(rig.grants(), ["password", "refresh_token"]);
    rig.sim.shutdown().await;
}
