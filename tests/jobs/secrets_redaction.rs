//! Secret values never appear in Debug output of the config or of any job type, in
//! `validate` output (text or JSON), or in errors, whichever reference form points at them.
//! The values are distinctive strings placed in secret files and environment variables that
//! the config and the jobs reference, plus plain-string secrets written into invalid jobs.

use std::path::Path;

use assert_cmd::Command;
use restorectl::config::{Config, SecretContext};
use restorectl::jobs::{Action, BulkCredentials, Credentials, ValidationContext, scan_paths};

const SECRETS: [&str; 9] = [
    "S3cret-vb365-7f9a1c",
    "S3cret-file-password-2b8e",
    "S3cret-cert-bytes-5d3c",
    "S3cret-cert-pass-9e4f",
    "S3cret-env-password-1a6d",
    "S3cret-onprem-0c7b",
    "S3cret-plain-inline-4e2a",
    "918273645546372819",
    "S3cret-in-the-wrong-place-6f1d",
];

fn setup(dir: &Path) {
    let s = dir.join("secrets");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("vb365"), format!("{}\n", SECRETS[0])).unwrap();
    std::fs::write(s.join("m365-pass"), SECRETS[1]).unwrap();
    std::fs::write(s.join("app-cert"), SECRETS[2]).unwrap();
    std::fs::write(dir.join("cert-pass.txt"), SECRETS[3]).unwrap();
    std::fs::write(
        dir.join("restorectl.yaml"),
        "secretsDir: secrets\nservers:\n  main:\n    url: https://vb365.test:4443\n    username: CONTOSO\\svc\n    password: { secret: vb365 }\n",
    )
    .unwrap();
    let jobs = r#"
apiVersion: restorectl/v1
kind: ExportPst
metadata: { name: export }
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ alice@contoso.com ]
  export: { path: "{job}/{mailbox}.pst" }
---
apiVersion: restorectl/v1
kind: Restore
metadata: { name: restore }
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ bob@contoso.com ]
  restore:
    credentials:
      user: { userName: admin@contoso.com, password: { secret: m365-pass } }
---
apiVersion: restorectl/v1
kind: RestoreTo
metadata: { name: restore-to }
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ frank@contoso.com ]
  restoreTo:
    mailbox: legal-review@contoso.com
    credentials:
      application:
        applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10
        certificate: { secret: app-cert }
        certificatePassword: { file: cert-pass.txt }
---
apiVersion: restorectl/v1
kind: BulkRestore
metadata: { name: bulk-office365 }
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ { all: true } ]
  bulkRestore:
    credentials:
      office365: { userName: admin@contoso.com, password: { env: RESTORECTL_TEST_M365_PW } }
---
apiVersion: restorectl/v1
kind: BulkRestore
metadata: { name: bulk-onprem }
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ { all: true } ]
  bulkRestore:
    credentials:
      onPremises: { domainName: CONTOSO, userName: admin, password: { env: RESTORECTL_TEST_ONPREM_PW } }
---
apiVersion: restorectl/v1
kind: Search
metadata: { name: search }
spec:
  organization: contoso.onmicrosoft.com
  search: { query: x, report: { path: "{job}.jsonl" } }
"#;
    std::fs::write(dir.join("jobs.yaml"), jobs).unwrap();
    let plain = format!(
        r#"
apiVersion: restorectl/v1
kind: Restore
metadata: {{ name: plain }}
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ bob@contoso.com ]
  restore:
    credentials:
      user: {{ userName: admin@contoso.com, password: {} }}
---
apiVersion: restorectl/v1
kind: RestoreTo
metadata: {{ name: plain-number }}
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ frank@contoso.com ]
  restoreTo:
    mailbox: legal-review@contoso.com
    credentials:
      application:
        applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10
        certificate: {{ secret: app-cert }}
        certificatePassword: {}
---
apiVersion: restorectl/v1
kind: Restore
metadata: {{ name: plain-credentials }}
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ bob@contoso.com ]
  restore:
    credentials:
      user: "admin:{}"
"#,
        SECRETS[6], SECRETS[7], SECRETS[8]
    );
    std::fs::write(dir.join("plain.yaml"), plain).unwrap();
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s}:\n{text}");
    }
}

#[test]
fn no_secret_value_in_debug_output_or_validate_reports() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    // `{ env: … }` secrets exist only in the child's environment (setting variables in this
    // process would need `unsafe`, which the crate forbids).
    let env = [
        ("RESTORECTL_TEST_M365_PW", SECRETS[4]),
        ("RESTORECTL_TEST_ONPREM_PW", SECRETS[5]),
    ];

    let config = Config::load(&dir.path().join("restorectl.yaml")).unwrap();
    assert_clean("config Debug", &format!("{config:?} {config:#?}"));
    let report = scan_paths(
        &[dir.path().to_path_buf()],
        &ValidationContext::new(&config),
    );
    let jobs: Vec<_> = report.jobs().collect();
    assert_eq!(jobs.len(), 6, "{:#?}", report.errors().collect::<Vec<_>>());
    let errors: Vec<_> = report.errors().collect();
    assert_eq!(
        errors.len(),
        3,
        "every plain secret is an error: {errors:#?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.code.as_str() == "plain-secret")
            .count(),
        2
    );
    assert_clean(
        "errors",
        &format!(
            "{errors:?} {}",
            errors.iter().map(|e| e.to_string()).collect::<String>()
        ),
    );
    assert_clean("report Debug", &format!("{report:?}"));

    // Every secret reference of every job resolves to its value, and the resolved value's Debug
    // is redacted too.
    let ctx = SecretContext {
        credentials_dir: None,
        secrets_dir: Some(config.secrets_dir.clone()),
        base_dir: dir.path().to_path_buf(),
    };
    let mut resolved = vec![config.servers["main"].password.resolve(&ctx).unwrap()];
    for job in &jobs {
        assert_clean(
            "job Debug",
            &format!("{job:?} {job:#?} {}", job.spec_json()),
        );
        let refs = match job.action() {
            Action::Restore(r) => cred_refs(&r.credentials),
            Action::RestoreTo(r) => cred_refs(&r.credentials),
            Action::BulkRestore(b) => match &b.credentials {
                BulkCredentials::Office365 { password, .. }
                | BulkCredentials::OnPremises { password, .. } => {
                    vec![password.clone()]
                }
                BulkCredentials::Hybrid {
                    office365_password,
                    on_premises_password,
                    ..
                } => vec![office365_password.clone(), on_premises_password.clone()],
                BulkCredentials::Application(a) => vec![a.certificate.clone()],
                BulkCredentials::DeviceCode(_) => vec![],
            },
            Action::ExportPst(_) | Action::Search(_) => vec![],
        };
        for r in refs {
            if let restorectl::config::SecretRef::Env(var) = &r {
                let (_, value) = env.iter().find(|(k, _)| k == var).unwrap();
                assert!(!value.is_empty());
                continue;
            }
            resolved.push(r.resolve(&ctx).unwrap());
        }
    }
    use secrecy::ExposeSecret;
    let values: Vec<&str> = resolved.iter().map(|s| s.expose_secret()).collect();
    assert!(
        values.contains(&SECRETS[0])
            && values.contains(&SECRETS[1])
            && values.contains(&SECRETS[3])
    );
    assert_clean("resolved Debug", &format!("{resolved:?}"));

    for format in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_restorectl"))
            .env_remove("RESTORECTL_CONFIG")
            .envs(env)
            .args(["validate", "--format", format])
            .arg(dir.path())
            .assert()
            .code(1)
            .get_output()
            .clone();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("plain-secret"), "{text}");
        assert_clean(&format!("validate --format {format}"), &text);
    }
}

fn cred_refs(c: &Credentials) -> Vec<restorectl::config::SecretRef> {
    match c {
        Credentials::User { password, .. } => vec![password.clone()],
        Credentials::Application(a) => {
            let mut v = vec![a.certificate.clone()];
            v.extend(a.certificate_password.clone());
            v
        }
        Credentials::DeviceCode(_) => vec![],
    }
}
