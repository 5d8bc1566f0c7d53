//! jobs.example/ must stay valid: every file parses and validates against the directory's own
//! restorectl.yaml, every document validates against `restorectl schema`'s JSON Schema, and the
//! secrets the examples reference exist in dev-secrets/ so they run against the simulator.

use std::collections::BTreeSet;

use crate::common::repo;
use restorectl::config::{Config, SecretContext};
use restorectl::jobs::{
    Action, BulkCredentials, Credentials, JobKind, ValidationContext, json_schema, scan_paths,
};
use serde::Deserialize;

fn example_config() -> Config {
    Config::load(&repo().join("jobs.example/restorectl.yaml")).unwrap()
}

/// Every YAML document of every example job file, as JSON.
fn example_documents() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("jobs.example")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".yaml") || name == "restorectl.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let v = serde_yaml::Value::deserialize(de).unwrap();
            out.push((format!("{name}#{i}"), serde_json::to_value(v).unwrap()));
        }
    }
    out
}

#[test]
fn examples_validate_against_the_dev_config() {
    let config = example_config();
    assert_eq!(config.servers.keys().collect::<Vec<_>>(), ["sim"]);
    assert_eq!(config.servers["sim"].username, "CONTOSO\\svc-restore");
    let report = scan_paths(
        &[repo().join("jobs.example")],
        &ValidationContext::new(&config),
    );
    let errors: Vec<String> = report.errors().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let jobs: Vec<_> = report.jobs().collect();
    assert!(jobs.len() >= 7, "{}", jobs.len());
    let kinds: BTreeSet<JobKind> = jobs.iter().map(|j| j.kind()).collect();
    assert_eq!(kinds.len(), 5, "every kind has an example: {kinds:?}");
    assert!(jobs.iter().all(|j| j.server() == Some("sim")));
    // At least one scheduled and one one-shot ExportPst (so `--dev` publishes files at once).
    let exports: Vec<_> = jobs
        .iter()
        .filter(|j| j.kind() == JobKind::ExportPst)
        .collect();
    assert!(exports.iter().any(|j| j.schedule().is_some()));
    assert!(exports.iter().any(|j| j.schedule().is_none()));
    let weekly = jobs
        .iter()
        .find(|j| j.name() == "legal-hold-weekly")
        .unwrap();
    assert_eq!(
        weekly.summary(),
        "legal-hold-weekly: ExportPst, weekly 0 2 * * SUN Europe/Berlin"
    );
}

#[test]
fn example_secrets_exist_in_dev_secrets() {
    let config = example_config();
    let ctx = SecretContext {
        credentials_dir: None,
        secrets_dir: Some(config.secrets_dir.clone()),
        base_dir: config.base_dir.clone(),
    };
    use secrecy::ExposeSecret;
    let vb = config.servers["sim"].password.resolve(&ctx).unwrap();
    assert_eq!(vb.expose_secret(), "restorectl-dev");
    let report = scan_paths(
        &[repo().join("jobs.example")],
        &ValidationContext::new(&config),
    );
    let mut refs = Vec::new();
    for job in report.jobs() {
        match job.action() {
            Action::Restore(r) => refs.extend(credential_refs(&r.credentials)),
            Action::RestoreTo(r) => refs.extend(credential_refs(&r.credentials)),
            Action::BulkRestore(b) => match &b.credentials {
                BulkCredentials::Application(a) => {
                    refs.push(a.certificate.clone());
                    refs.extend(a.certificate_password.clone());
                }
                BulkCredentials::Office365 { password, .. }
                | BulkCredentials::OnPremises { password, .. } => refs.push(password.clone()),
                BulkCredentials::Hybrid {
                    office365_password,
                    on_premises_password,
                    ..
                } => refs.extend([office365_password.clone(), on_premises_password.clone()]),
                BulkCredentials::DeviceCode(_) => {}
            },
            _ => {}
        }
    }
    assert!(refs.len() >= 4, "{refs:?}");
    for r in refs {
        r.resolve(&ctx).unwrap_or_else(|e| panic!("{r}: {e}"));
    }
}

fn credential_refs(c: &Credentials) -> Vec<restorectl::config::SecretRef> {
    match c {
        Credentials::Application(a) => {
            let mut v = vec![a.certificate.clone()];
            v.extend(a.certificate_password.clone());
            v
        }
        Credentials::User { password, .. } => vec![password.clone()],
        Credentials::DeviceCode(_) => vec![],
    }
}

#[test]
fn examples_validate_against_the_json_schema() {
    let schema = json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let docs = example_documents();
    assert!(docs.len() >= 7);
    for (name, doc) in &docs {
        let errors: Vec<String> = validator
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

#[test]
fn the_schema_rejects_unknown_keys_and_plain_secrets() {
    let validator = jsonschema::validator_for(&json_schema()).unwrap();
    let docs = example_documents();
    let (_, base) = docs
        .iter()
        .find(|(n, _)| n.starts_with("restore.yaml"))
        .unwrap();
    assert!(validator.is_valid(base));
    let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut d = base.clone();
        f(&mut d);
        validator.is_valid(&d)
    };
    assert!(
        !mutate(&|d| d["spec"]["mailboxs"] = serde_json::json!([])),
        "unknown key in spec"
    );
    assert!(
        !mutate(&|d| d["extra"] = serde_json::json!(1)),
        "unknown key at the top"
    );
    assert!(!mutate(
        &|d| d["spec"]["restore"]["credentials"]["user"]["pasword"] = serde_json::json!("x")
    ));
    assert!(
        !mutate(
            &|d| d["spec"]["restore"]["credentials"]["user"]["password"] =
                serde_json::json!("hunter2")
        ),
        "plain-string secret"
    );
    assert!(
        !mutate(
            &|d| d["spec"]["restore"]["credentials"]["user"]["password"] =
                serde_json::json!({"secret": "a", "env": "B"})
        ),
        "two secret forms"
    );
    assert!(
        !mutate(&|d| d["kind"] = serde_json::json!("Backup")),
        "unknown kind"
    );
    assert!(
        !mutate(&|d| d["spec"]["mailboxes"] = serde_json::json!([{"email": "a@b.c"}])),
        "unknown selector form"
    );
    assert!(mutate(
        &|d| d["spec"]["mailboxes"] =
            serde_json::json!([{"all": true}, {"id": "7a619cf6-b7e1-4141-951b-960a2fca061d"}])
    ));
}

/// Issue 16: the new options validate, reach the typed job, and `restorectl schema` knows them
/// (with the vendor's integer bounds), so an editor offers them.
#[test]
fn the_issue_16_options_validate_and_are_in_the_schema() {
    use restorectl::jobs::{DeviceCodeCredentials, OfficeRegion, parse_str};
    let text = "\
apiVersion: restorectl/v1
kind: BulkRestore
metadata: { name: hybrid }
spec:
  server: sim
  organization: contoso.onmicrosoft.com
  mailboxes: [ { all: true } ]
  explore: { showDeleted: true, showAllVersions: true, repositoryId: 6a1c3f0e-9d2b-4e8f-a7c6-5b4d3e2f1a09 }
  bulkRestore:
    recentItemRestorePeriod: 0
    credentials:
      office365: { userName: admin@contoso.com, password: { secret: m365-restore-password } }
      onPremises: { domainName: CONTOSO, userName: exadmin, password: { secret: m365-restore-password } }
---
apiVersion: restorectl/v1
kind: Restore
metadata: { name: mfa }
spec:
  server: sim
  organization: contoso.onmicrosoft.com
  mailboxes: [ bob@contoso.com ]
  explore: { backupJob: 0f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918 }
  restore:
    credentials:
      deviceCode: { applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10, region: USGovernment, organizationName: contoso.onmicrosoft.us }
---
apiVersion: restorectl/v1
kind: RestoreTo
metadata: { name: folder }
spec:
  server: sim
  organization: contoso.onmicrosoft.com
  mailboxes: [ bob@contoso.com ]
  restoreTo:
    folder: '/..\\{mailbox} {2024} {{org}}'
    credentials: { deviceCode: {} }
---
apiVersion: restorectl/v1
kind: ExportPst
metadata: { name: nolimit }
spec:
  server: sim
  organization: contoso.onmicrosoft.com
  mailboxes: [ bob@contoso.com ]
  export: { enablePstSizeLimit: false, path: '{job}/{mailbox}.pst' }
";
    let config = example_config();
    let report = parse_str(
        text,
        std::path::Path::new("issue16.yaml"),
        &ValidationContext::new(&config),
    );
    let errors: Vec<String> = report.all_errors().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let jobs: Vec<_> = report.jobs().collect();
    assert_eq!(jobs.len(), 4);
    match jobs[0].action() {
        Action::BulkRestore(b) => {
            assert!(matches!(b.credentials, BulkCredentials::Hybrid { .. }));
            assert_eq!(b.recent_item_restore_period, Some(0));
        }
        other => panic!("{other:?}"),
    }
    assert!(jobs[0].explore().show_deleted && jobs[0].explore().repository_id.is_some());
    match jobs[1].action() {
        Action::Restore(r) => assert_eq!(
            r.credentials,
            Credentials::DeviceCode(DeviceCodeCredentials {
                application_id: Some("3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10".parse().unwrap()),
                region: Some(OfficeRegion::USGovernment),
                organization_name: Some("contoso.onmicrosoft.us".into()),
            })
        ),
        other => panic!("{other:?}"),
    }
    assert!(jobs[1].explore().backup_job.is_some());
    match jobs[2].action() {
        Action::RestoreTo(r) => {
            assert_eq!(r.mailbox, None);
            assert_eq!(
                r.folder.as_ref().unwrap().as_str(),
                "/..\\{mailbox} {2024} {{org}}"
            );
        }
        other => panic!("{other:?}"),
    }
    match jobs[3].action() {
        Action::ExportPst(e) => assert!(e.pst_size_limit_disabled && e.pst_size_limit.is_none()),
        other => panic!("{other:?}"),
    }

    let schema = json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde_json::to_value(serde_yaml::Value::deserialize(de).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "document {i}: {errors:#?}");
    }
    let text = schema.to_string();
    for key in [
        "deviceCode",
        "explore",
        "showDeleted",
        "showAllVersions",
        "repositoryId",
        "backupJob",
        "enablePstSizeLimit",
        "organizationName",
        "2147483647",
    ] {
        assert!(text.contains(key), "the schema lacks {key}");
    }
    // A negative period is outside the schema too.
    let mut doc: serde_json::Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(
            "apiVersion: restorectl/v1\nkind: BulkRestore\nmetadata: { name: n }\nspec:\n  organization: o\n  mailboxes: [ { all: true } ]\n  bulkRestore: { recentItemRestorePeriod: 0, credentials: { deviceCode: {} } }\n",
        )
        .unwrap(),
    )
    .unwrap();
    assert!(validator.is_valid(&doc));
    doc["spec"]["bulkRestore"]["recentItemRestorePeriod"] = serde_json::json!(-1);
    assert!(!validator.is_valid(&doc));
    doc["spec"]["bulkRestore"]["recentItemRestorePeriod"] = serde_json::json!(2147483648_i64);
    assert!(!validator.is_valid(&doc));
}
