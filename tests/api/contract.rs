//! Contract test: the client against the vendor's OpenAPI v8 document.
//!
//! The document is loaded from `tests/fixtures/openapi-v8-subset.json` on disk (and pinned byte
//! for byte to the copy the simulator embeds, so the two cannot drift). Checked:
//!
//! - every method + path template the client can call ([`Operation::ALL`]) is an operation of
//!   the document, spelt exactly as there, with a request body exactly where the document wants
//!   one, and that body's schema is the one the client names;
//! - the query parameters the client sends on paged and filtered calls are declared there;
//! - every JSON body the client serialises, for all six body types with their option
//!   combinations generated systematically (each optional field absent / on / off, each
//!   credential form, with and without point in time, keyword and size limit), validates
//!   against the operation's request schema; so do both token grants, form-encoded exactly as
//!   the client sends them.
//!
//! The checker itself is shown to fail on a misspelt field, through the same `contract_check`
//! function every body goes through.

use restorectl::sim::schema::{Document, OPENAPI_V8_SUBSET, SchemaViolation};
use restorectl::vb365::{
    BulkRestoreOptions, DeviceCodeRequestOptions, ExploreOptions, ExploreType, ExportToPstOptions,
    MailboxRef, MailboxRestoreCredentials, OfficeRegion, Operation, OrganizationExploreOptions,
    RestoreCredentials, RestoreFlags, RestoreToDifferentLocation, RestoreToOriginalLocation,
    SearchOptions, TokenRequest, all_operations, timestamp,
};
use secrecy::{SecretBox, SecretString};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/openapi-v8-subset.json"
);
const GIB: u64 = 1 << 30;

/// The fixture, parsed from disk.
fn fixture_value() -> Value {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn fixture() -> Document {
    Document::from_json(&fixture_value()).expect("fixture is an OpenAPI document")
}

/// The one check every serialised body goes through: the body, exactly as the client turns it
/// into JSON, against the request schema of the operation.
fn contract_check<T: Serialize>(
    doc: &Document,
    op: Operation,
    body: &T,
) -> Result<(), SchemaViolation> {
    let json = serde_json::to_value(body).expect("body serialises");
    contract_check_json(doc, op, &json)
}

fn contract_check_json(doc: &Document, op: Operation, json: &Value) -> Result<(), SchemaViolation> {
    doc.validate_request(op.method().as_str(), op.path_template(), json)
}

/// The token form exactly as reqwest encodes it for the client, read back into fields and typed
/// by the document's form schema.
fn token_form_check(doc: &Document, request: &TokenRequest) -> Result<Value, SchemaViolation> {
    let built = reqwest::Client::new()
        .post("http://127.0.0.1/v8/token")
        .form(request)
        .build()
        .expect("form request builds");
    let bytes = built
        .body()
        .and_then(|b| b.as_bytes())
        .expect("buffered form body")
        .to_vec();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let op = Operation::Token;
    let json = doc.form_to_json(op.method().as_str(), op.path_template(), &pairs);
    doc.validate_request_as(
        op.method().as_str(),
        op.path_template(),
        "application/x-www-form-urlencoded",
        &json,
    )?;
    Ok(json)
}

/// Every combination of a mixed-radix counter: `radices[i]` choices on axis `i`.
fn combinations(radices: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = radices.iter().product();
    (0..total)
        .map(|mut n| {
            radices
                .iter()
                .map(|r| {
                    let digit = n % r;
                    n /= r;
                    digit
                })
                .collect()
        })
        .collect()
}

/// Absent, true, false.
fn tri(i: usize) -> Option<bool> {
    [None, Some(true), Some(false)][i]
}

/// All 3^7 settings of the seven restore flags.
fn all_flags() -> Vec<RestoreFlags> {
    combinations(&[3; 7])
        .into_iter()
        .map(|c| RestoreFlags {
            changed_items: tri(c[0]),
            deleted_items: tri(c[1]),
            mark_restored_as_unread: tri(c[2]),
            exclude_drafts: tri(c[3]),
            exclude_deleted_items: tri(c[4]),
            exclude_in_place_hold_items: tri(c[5]),
            exclude_litigation_hold_items: tri(c[6]),
        })
        .collect()
}

/// Flags all absent, all on, all off.
fn flag_extremes() -> [RestoreFlags; 3] {
    [1, 2, 0].map(|i| RestoreFlags {
        changed_items: tri(i),
        deleted_items: tri(i),
        mark_restored_as_unread: tri(i),
        exclude_drafts: tri(i),
        exclude_deleted_items: tri(i),
        exclude_in_place_hold_items: tri(i),
        exclude_litigation_hold_items: tri(i),
    })
}

/// Every credential form the job files can produce: application (with and without certificate
/// password and impersonation account), Microsoft 365 user, on-premises, hybrid (Microsoft 365
/// and on-premises together), a signed-in device code.
fn credential_forms() -> Vec<RestoreCredentials> {
    let mut out = Vec::new();
    for c in combinations(&[2, 2]) {
        out.push(RestoreCredentials::application(
            Uuid::from_u128(0x0b6f7a1e_2c3d_4e5f_8a9b_0c1d2e3f4a5b),
            &SecretBox::new(b"PFX-BYTES".to_vec().into_boxed_slice()),
            (c[0] == 1).then(|| SecretString::from("cert-pass")),
            (c[1] == 1).then(|| "admin@contoso.com".to_string()),
        ));
    }
    out.push(RestoreCredentials::User {
        user_name: "admin@contoso.com".into(),
        password: SecretString::from("user-pass"),
    });
    out.push(RestoreCredentials::OnPremises {
        domain_name: "CONTOSO".into(),
        user_name: "exadmin".into(),
        password: SecretString::from("onprem-pass"),
    });
    out.push(RestoreCredentials::Hybrid {
        office365_user_name: "admin@contoso.com".into(),
        office365_password: SecretString::from("user-pass"),
        domain_name: "CONTOSO".into(),
        on_premises_user_name: "exadmin".into(),
        on_premises_password: SecretString::from("onprem-pass"),
    });
    out.push(RestoreCredentials::UserCode(SecretString::from("QWERTY01")));
    out
}

/// The credential blocks of the single-mailbox bodies: every form they accept, a device code,
/// and none.
fn mailbox_credential_blocks() -> Vec<MailboxRestoreCredentials> {
    let mut out: Vec<MailboxRestoreCredentials> = credential_forms()
        .iter()
        .filter_map(|c| MailboxRestoreCredentials::try_from(c).ok())
        .collect();
    assert_eq!(
        out.len(),
        6,
        "on-premises and hybrid are the forms they cannot carry"
    );
    out.push(MailboxRestoreCredentials {
        user_code: Some("ABCD-EFGH".into()),
        ..Default::default()
    });
    out.push(MailboxRestoreCredentials::default());
    out
}

fn points_in_time() -> [Option<chrono::DateTime<chrono::Utc>>; 3] {
    [
        None,
        timestamp::parse("2025-03-15T12:00:00Z"),
        timestamp::parse("2024-05-01T10:20:30.123Z"),
    ]
}

fn explore_types() -> [Option<ExploreType>; 5] {
    [
        None,
        Some(ExploreType::Vex),
        Some(ExploreType::Veod),
        Some(ExploreType::Vesp),
        Some(ExploreType::Vet),
    ]
}

fn office_regions() -> [Option<OfficeRegion>; 6] {
    [
        None,
        Some(OfficeRegion::Worldwide),
        Some(OfficeRegion::Germany),
        Some(OfficeRegion::China),
        Some(OfficeRegion::USDefence),
        Some(OfficeRegion::USGovernment),
    ]
}

/// Asserts every body passes and returns how many were checked.
fn assert_all_valid<T: Serialize + std::fmt::Debug>(
    doc: &Document,
    op: Operation,
    bodies: impl IntoIterator<Item = T>,
) -> usize {
    let mut n = 0;
    for body in bodies {
        if let Err(v) = contract_check(doc, op, &body) {
            panic!(
                "{op:?}: {v}\nbody: {}",
                serde_json::to_string(&body).unwrap_or_default()
            );
        }
        n += 1;
    }
    n
}

// -------------------------------------------------------------------------------------------
// The document
// -------------------------------------------------------------------------------------------

#[test]
fn fixture_equals_the_embedded_copy_byte_for_byte() {
    let on_disk = std::fs::read(FIXTURE).expect("fixture readable");
    assert!(
        on_disk == OPENAPI_V8_SUBSET.as_bytes(),
        "tests/fixtures/openapi-v8-subset.json and src/sim/openapi-v8-subset.json differ"
    );
    // And the parsed fixture behaves as the embedded document does.
    assert_eq!(&fixture(), Document::embedded().expect("embedded document"));
}

#[test]
fn every_operation_the_client_calls_exists_in_the_document() {
    let doc = fixture();
    let raw = fixture_value();
    let ops = all_operations();
    assert_eq!(ops.len(), Operation::ALL.len());
    for (method, template) in &ops {
        let found = doc
            .find_operation(method.as_str(), template)
            .unwrap_or_else(|| panic!("{method} {template} is not in the v8 document"));
        assert_eq!(found.template, *template, "exact spelling of {template}");
        assert_eq!(found.method, method.as_str());
    }
    for op in Operation::ALL {
        let (method, template) = (op.method(), op.path_template());
        let declared = &raw["paths"][template][method.as_str().to_ascii_lowercase()];
        let body_ref = declared["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .map(|r| r.trim_start_matches("#/components/schemas/").to_string());
        match op.request_schema() {
            Some(name) => {
                assert_eq!(body_ref.as_deref(), Some(name), "{op:?} body schema");
                // Sending no body where one is required is caught.
                assert!(
                    contract_check_json(&doc, op, &Value::Null).is_err(),
                    "{op:?} requires a body"
                );
            }
            None if op == Operation::Token => {
                assert!(
                    declared["requestBody"]["content"]["application/x-www-form-urlencoded"]
                        .is_object()
                );
            }
            None => {
                // The client sends these without a body; the document must agree.
                assert_eq!(body_ref, None, "{op:?}");
                contract_check_json(&doc, op, &Value::Null)
                    .unwrap_or_else(|v| panic!("{op:?} without a body: {v}"));
            }
        }
    }
}

/// The query parameters the client puts on paged and filtered calls are declared by the
/// document, and the values it sends have the declared types.
#[test]
fn query_parameters_the_client_sends_are_declared() {
    let doc = fixture();
    let raw = fixture_value();
    let set_id = Uuid::from_u128(9).to_string();
    let paged: [(Operation, &[(&str, &str)]); 6] = [
        (
            Operation::ListOrganizations,
            &[("offset", "0"), ("limit", "1000")],
        ),
        (
            Operation::ListRestoreSessions,
            &[
                ("startTimeFrom", "2025-01-01T00:00:00Z"),
                ("startTimeTo", "2025-01-02T00:00:00.500Z"),
                ("endTimeFrom", "2025-01-01T00:00:00Z"),
                ("endTimeTo", "2025-01-02T00:00:00Z"),
                ("orderAsc", "true"),
                ("orderBy", "CreationTime"),
                ("orderBy", "EndTime"),
                ("offset", "2000"),
                ("limit", "7"),
            ],
        ),
        (
            Operation::ListRestoreSessionEvents,
            &[("offset", "0"), ("limit", "1000")],
        ),
        (
            Operation::ListMailboxes,
            &[("offset", "14"), ("limit", "7")],
        ),
        (
            Operation::SearchMailbox,
            &[("offset", "7"), ("limit", "7"), ("setId", set_id.as_str())],
        ),
        (
            Operation::SearchMailboxes,
            &[("offset", "7"), ("limit", "7"), ("setId", set_id.as_str())],
        ),
    ];
    for (op, params) in paged {
        let (method, template) = (op.method(), op.path_template());
        let declared: Vec<String> =
            raw["paths"][template][method.as_str().to_ascii_lowercase()]["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query")
                        .filter_map(|p| p["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
        for (name, value) in params {
            assert!(
                declared.iter().any(|d| d == name),
                "{op:?}: query parameter {name} not declared (has {declared:?})"
            );
            let pairs = vec![(name.to_string(), value.to_string())];
            doc.validate_query(method.as_str(), template, &pairs)
                .unwrap_or_else(|v| panic!("{op:?} {name}={value}: {v}"));
        }
    }
}

// -------------------------------------------------------------------------------------------
// Bodies
// -------------------------------------------------------------------------------------------

#[test]
fn explore_bodies_in_all_combinations_validate() {
    let doc = fixture();
    let repository = [None, Some(Uuid::from_u128(0x5151))];
    let mut org = Vec::new();
    let mut job = Vec::new();
    for c in combinations(&[3, 5, 3, 3, 2]) {
        let date_time = points_in_time()[c[0]];
        let explore_type = explore_types()[c[1]];
        org.push(OrganizationExploreOptions {
            date_time,
            explore_type,
            show_deleted: tri(c[2]),
            show_all_versions: tri(c[3]),
            repository_id: repository[c[4]],
        });
        if c[4] == 0 {
            job.push(ExploreOptions {
                date_time,
                explore_type,
                show_deleted: tri(c[2]),
                show_all_versions: tri(c[3]),
            });
        }
    }
    for t in points_in_time() {
        org.push(OrganizationExploreOptions::exchange(t));
        job.push(ExploreOptions::exchange(t));
    }
    assert_eq!(
        assert_all_valid(&doc, Operation::ExploreOrganization, org),
        270 + 3
    );
    assert_eq!(assert_all_valid(&doc, Operation::ExploreJob, job), 135 + 3);
}

#[test]
fn bulk_restore_bodies_in_all_combinations_validate() {
    let doc = fixture();
    let mailboxes = [
        vec![],
        vec![MailboxRef {
            id: Uuid::from_u128(1),
        }],
        vec![
            MailboxRef {
                id: Uuid::from_u128(1),
            },
            MailboxRef {
                id: Uuid::from_u128(2),
            },
        ],
    ];
    let cas = [None, Some("outlook.office365.com".to_string())];
    let period = [None, Some(0), Some(30)];
    let creds = credential_forms();
    let mut bodies = Vec::new();
    // Every non-flag option × every credential form (and none) × flags absent / on / off.
    for c in combinations(&[3, 2, 3, 3, creds.len() + 1, 3]) {
        let base = BulkRestoreOptions {
            mailboxes: mailboxes[c[0]].clone(),
            cas_server: cas[c[1]].clone(),
            skip_unresolved: tri(c[2]),
            recent_item_restore_period: period[c[3]],
            flags: flag_extremes()[c[5]],
            ..Default::default()
        };
        bodies.push(match creds.get(c[4]) {
            Some(form) => base.with_credentials(form),
            None => base,
        });
    }
    // Every flag setting × every credential form.
    for flags in all_flags() {
        for form in &creds {
            bodies.push(
                BulkRestoreOptions {
                    mailboxes: mailboxes[1].clone(),
                    flags,
                    ..Default::default()
                }
                .with_credentials(form),
            );
        }
    }
    // The device-code field of the bulk body.
    bodies.push(BulkRestoreOptions {
        mailboxes: mailboxes[1].clone(),
        user_code: Some("ABCD-EFGH".into()),
        ..Default::default()
    });
    let n = assert_all_valid(&doc, Operation::RestoreMailboxes, bodies);
    assert_eq!(n, 3 * 2 * 3 * 3 * 9 * 3 + 2187 * 8 + 1);
}

#[test]
fn restore_to_original_location_bodies_validate() {
    let doc = fixture();
    let bodies: Vec<RestoreToOriginalLocation> = mailbox_credential_blocks()
        .into_iter()
        .map(|credentials| RestoreToOriginalLocation { credentials })
        .collect();
    assert_eq!(assert_all_valid(&doc, Operation::RestoreMailbox, bodies), 8);
    // Built through the constructor, as the job runner does.
    for form in credential_forms() {
        if let Ok(body) = RestoreToOriginalLocation::new(&form) {
            contract_check(&doc, Operation::RestoreMailbox, &body).expect("valid");
        }
    }
}

#[test]
fn restore_to_different_location_bodies_in_all_combinations_validate() {
    let doc = fixture();
    let text = |i: usize, v: &str| (i == 1).then(|| v.to_string());
    let blocks = mailbox_credential_blocks();
    let mut bodies = Vec::new();
    for c in combinations(&[2, 2, 2, 6, 2, blocks.len(), 3]) {
        bodies.push(RestoreToDifferentLocation {
            mailbox: text(c[0], "legal-review@contoso.com"),
            folder: text(c[1], "Restored/alice@contoso.com"),
            cas_server: text(c[2], "outlook.office365.com"),
            office_region: office_regions()[c[3]],
            office_organization_name: text(c[4], "contoso.onmicrosoft.com"),
            credentials: blocks[c[5]].clone(),
            flags: flag_extremes()[c[6]],
        });
    }
    for flags in all_flags() {
        for credentials in &blocks {
            bodies.push(RestoreToDifferentLocation {
                mailbox: Some("legal-review@contoso.com".into()),
                flags,
                credentials: credentials.clone(),
                ..Default::default()
            });
        }
    }
    let n = assert_all_valid(&doc, Operation::RestoreMailboxTo, bodies);
    assert_eq!(n, 2 * 2 * 2 * 6 * 2 * 8 * 3 + 2187 * 8);
}

#[test]
fn export_bodies_in_all_combinations_validate() {
    let doc = fixture();
    let keywords = [
        None,
        Some("falcon".to_string()),
        Some("project \"falcon\" OR board".to_string()),
    ];
    let limits = [None, Some(GIB), Some(10 * GIB), Some(49 * GIB)];
    let mut bodies = Vec::new();
    for c in combinations(&[3, 4]) {
        bodies.push(ExportToPstOptions::new(
            keywords[c[0]].clone(),
            limits[c[1]],
        ));
    }
    // The raw fields in every combination (the flag on or off with or without a limit).
    let raw_limits = [None, Some(GIB as i64), Some(49 * GIB as i64)];
    for c in combinations(&[3, 3, 3]) {
        bodies.push(ExportToPstOptions {
            content_keyword: keywords[c[0]].clone(),
            enable_pst_size_limit: tri(c[1]),
            pst_size_limit_bytes: raw_limits[c[2]],
        });
    }
    // An export that says it has no limit (`enablePstSizeLimit: false` in the job).
    for k in &keywords {
        bodies.push(ExportToPstOptions::without_limit(k.clone()));
    }
    assert_eq!(
        assert_all_valid(&doc, Operation::ExportMailboxToPst, bodies),
        12 + 27 + 3
    );
}

#[test]
fn device_code_bodies_in_all_combinations_validate() {
    let doc = fixture();
    let apps = [
        None,
        Some(Uuid::from_u128(0x3f8e5a2c_41d7_4c2b_9e1f_0a6b7c8d9e10)),
    ];
    let names = [None, Some("contoso.onmicrosoft.com".to_string())];
    let mut bodies = Vec::new();
    for c in combinations(&[2, 6, 2]) {
        bodies.push(DeviceCodeRequestOptions {
            target_application_id: apps[c[0]],
            target_region: office_regions()[c[1]],
            target_organization_name: names[c[2]].clone(),
        });
    }
    assert_eq!(
        assert_all_valid(&doc, Operation::RestoreDeviceCode, bodies),
        24
    );
}

#[test]
fn search_bodies_validate_for_both_search_operations() {
    let doc = fixture();
    let queries = [
        None,
        Some("from:ceo@contoso.com subject:\"board minutes\""),
        Some("received>=2024-01-01 AND hasattachments:true"),
        Some(""),
    ];
    for op in [Operation::SearchMailbox, Operation::SearchMailboxes] {
        let bodies = queries.iter().map(|q| match q {
            Some(q) => SearchOptions::query(*q),
            None => SearchOptions::default(),
        });
        assert_eq!(assert_all_valid(&doc, op, bodies), 4);
    }
}

#[test]
fn token_form_bodies_validate_for_both_grants() {
    let doc = fixture();
    let password = token_form_check(
        &doc,
        &TokenRequest::password("CONTOSO\\svc-restore", SecretString::from("p@ss w&rd=")),
    )
    .expect("password grant");
    assert_eq!(password["grant_type"], "password");
    assert_eq!(password["disable_antiforgery_token"], true);
    assert_eq!(
        password["password"], "p@ss w&rd=",
        "form encoding round-trips"
    );
    let refresh = token_form_check(&doc, &TokenRequest::refresh(SecretString::from("rt")))
        .expect("refresh grant");
    assert_eq!(refresh["grant_type"], "refresh_token");
    assert!(refresh.get("username").is_none());
}

// -------------------------------------------------------------------------------------------
// The checker itself
// -------------------------------------------------------------------------------------------

/// Renames `from` to `to` at the top level of a JSON object.
fn rename_key(body: &mut Value, from: &str, to: &str) {
    let map = body.as_object_mut().expect("object body");
    let value = map.remove(from).expect("key present");
    map.insert(to.to_string(), value);
}

#[test]
fn the_contract_check_fails_on_a_misspelt_field_and_names_it() {
    let doc = fixture();
    let creds = &credential_forms()[0];
    let bulk = BulkRestoreOptions {
        mailboxes: vec![MailboxRef {
            id: Uuid::from_u128(1),
        }],
        flags: RestoreFlags {
            changed_items: Some(true),
            ..Default::default()
        },
        ..Default::default()
    }
    .with_credentials(creds);
    let mut json = serde_json::to_value(&bulk).expect("json");
    contract_check_json(&doc, Operation::RestoreMailboxes, &json).expect("valid as sent");
    rename_key(&mut json, "changedItems", "changedItem");
    let v =
        contract_check_json(&doc, Operation::RestoreMailboxes, &json).expect_err("misspelt field");
    assert_eq!(v.path, "changedItem");
    assert!(v.message.contains("unknown property"), "{v}");

    // A casing slip (which the lenient real server would accept) is caught with a hint.
    let mut json = serde_json::to_value(
        RestoreToOriginalLocation::new(creds).expect("application credentials"),
    )
    .expect("json");
    rename_key(&mut json, "applicationId", "applicationID");
    let v = contract_check_json(&doc, Operation::RestoreMailbox, &json).expect_err("miscased");
    assert_eq!(v.path, "applicationID");
    assert!(v.message.contains("did you mean 'applicationId'"), "{v}");

    // A nested field, a wrong type and a bad enum value are named by their path.
    let mut json = serde_json::to_value(&bulk).expect("json");
    rename_key(&mut json["mailboxes"][0], "id", "mailboxId");
    let v = contract_check_json(&doc, Operation::RestoreMailboxes, &json).expect_err("nested");
    assert_eq!(v.path, "mailboxes[0].mailboxId");
    let mut json = serde_json::to_value(ExportToPstOptions::new(None, Some(GIB))).expect("json");
    json["pstSizeLimitBytes"] = Value::String("1GiB".into());
    let v =
        contract_check_json(&doc, Operation::ExportMailboxToPst, &json).expect_err("wrong type");
    assert_eq!(v.path, "pstSizeLimitBytes");
    let mut json = serde_json::to_value(OrganizationExploreOptions::exchange(None)).expect("json");
    json["type"] = Value::String("Exchange".into());
    let v = contract_check_json(&doc, Operation::ExploreOrganization, &json).expect_err("bad enum");
    assert_eq!(v.path, "type");

    // The generic helper used for every generated body fails the same way.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Misspelt {
        content_keywords: String,
    }
    let v = contract_check(
        &doc,
        Operation::ExportMailboxToPst,
        &Misspelt {
            content_keywords: "falcon".into(),
        },
    )
    .expect_err("misspelt struct field");
    assert_eq!(v.path, "contentKeywords");
}

/// A read-only property (`_actions` of a mailbox sent back as it was listed) fails the
/// contract check, which every body restorectl builds goes through, while the server — and the
/// simulator, which binds like it — ignores it.
#[test]
fn a_read_only_property_fails_the_contract_check_but_the_server_ignores_it() {
    let doc = fixture();
    let bulk = BulkRestoreOptions {
        mailboxes: vec![MailboxRef {
            id: Uuid::from_u128(1),
        }],
        ..Default::default()
    }
    .with_credentials(&credential_forms()[0]);
    let mut json = serde_json::to_value(&bulk).expect("json");
    json["mailboxes"][0]["_actions"] =
        serde_json::json!({"restore": {"uri": "/v8/x", "method": "Post"}});
    let v = contract_check_json(&doc, Operation::RestoreMailboxes, &json).expect_err("read-only");
    assert_eq!(v.path, "mailboxes[0]._actions");
    assert!(v.message.contains("read-only"), "{v}");
    let op = Operation::RestoreMailboxes;
    let ignored = doc
        .bind_request_as(
            op.method().as_str(),
            op.path_template(),
            "application/json",
            &json,
        )
        .expect("the server binds it");
    assert_eq!(ignored, ["mailboxes[0]._actions"]);
}

#[test]
fn a_misspelt_token_form_field_fails() {
    let doc = fixture();
    let op = Operation::Token;
    let pairs = vec![
        ("grant_type".to_string(), "password".to_string()),
        ("user_name".to_string(), "CONTOSO\\svc-restore".to_string()),
    ];
    let json = doc.form_to_json(op.method().as_str(), op.path_template(), &pairs);
    let v = doc
        .validate_request_as(
            op.method().as_str(),
            op.path_template(),
            "application/x-www-form-urlencoded",
            &json,
        )
        .expect_err("misspelt form field");
    assert_eq!(v.path, "user_name");
}

#[test]
fn a_document_without_paths_or_schemas_is_refused() {
    assert!(Document::from_json(&serde_json::json!({"openapi": "3.0.1"})).is_err());
    let v = Document::from_json(&serde_json::json!({"paths": {}})).expect_err("no schemas");
    assert_eq!(v.path, "components.schemas");
    // A document missing an operation makes the existence check fail.
    let mut raw = fixture_value();
    raw["paths"]
        .as_object_mut()
        .expect("paths")
        .remove(Operation::ExportMailboxToPst.path_template());
    let doc = Document::from_json(&raw).expect("still a document");
    assert!(!doc.operation_exists("POST", Operation::ExportMailboxToPst.path_template()));
    assert!(doc.operation_exists("POST", Operation::RestoreMailbox.path_template()));
}
