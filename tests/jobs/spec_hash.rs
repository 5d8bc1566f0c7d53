//! The normalised spec hash (SPEC §4.3): the same intent always hashes the same, whatever the
//! key order, comments, whitespace or spelling of a value; any change to the spec is a new
//! hash; labels are not part of it.

use std::path::Path;

use restorectl::config::Config;
use restorectl::jobs::{ValidationContext, parse_str};

const BASE: &str = r#"
apiVersion: restorectl/v1
kind: ExportPst
metadata:
  name: legal-hold
  labels: { team: legal }
spec:
  organization: contoso.onmicrosoft.com
  mailboxes: [ alice@contoso.com, { match: "*@legal.contoso.com" } ]
  retry: { maxAttempts: 5, initialBackoff: 30s }
  runTimeout: 12h
  export:
    pstSizeLimit: 10GiB
    path: "{job}/{date}/{mailbox}.pst"
"#;

const REORDERED: &str = r#"# the same job, written differently
kind: "ExportPst"
spec:
  export: {path: '{job}/{date}/{mailbox}.pst', pstSizeLimit: 10737418240}   # bytes instead of GiB
  runTimeout: 720m            # 12h in minutes
  retry:
    initialBackoff: 30s
    maxAttempts: 0x5          # hexadecimal
  mailboxes:
    - alice@contoso.com
    - match: '*@legal.contoso.com'
  organization: contoso.onmicrosoft.com
metadata: {labels: {team: compliance, extra: "yes"}, name: legal-hold}   # other labels
apiVersion: 'restorectl/v1'
"#;

fn hash(text: &str) -> String {
    let config = Config::builtin_defaults();
    let ctx = ValidationContext::without_server_check(&config);
    let r = parse_str(text, Path::new("x.yaml"), &ctx);
    let errors: Vec<_> = r.all_errors().collect();
    assert!(errors.is_empty(), "{errors:#?}");
    r.jobs().next().unwrap().spec_hash().to_string()
}

#[test]
fn equivalent_spellings_hash_the_same() {
    assert_eq!(hash(BASE), hash(REORDERED));
    assert_eq!(hash(BASE).len(), 64);
}

#[test]
fn every_spec_change_is_a_new_hash() {
    let base = hash(BASE);
    for (from, to) in [
        ("alice@contoso.com", "bob@contoso.com"),
        ("maxAttempts: 5", "maxAttempts: 6"),
        ("10GiB", "11GiB"),
        ("{date}/{mailbox}", "{mailbox}"),
        ("name: legal-hold", "name: legal-hold-2"),
        ("runTimeout: 12h", "runTimeout: 12h\n  suspend: true"),
    ] {
        assert_ne!(hash(&BASE.replace(from, to)), base, "{from} -> {to}");
    }
}

#[test]
fn spec_json_holds_secret_references_not_values() {
    let text = r#"
apiVersion: restorectl/v1
kind: Restore
metadata: { name: r }
spec:
  organization: o
  mailboxes: [ a@b.c ]
  restore:
    credentials:
      user: { userName: admin@b.c, password: { env: RESTORE_PW } }
"#;
    let config = Config::builtin_defaults();
    let r = parse_str(
        text,
        Path::new("x.yaml"),
        &ValidationContext::without_server_check(&config),
    );
    let job = r.jobs().next().unwrap();
    assert!(
        job.spec_json()
            .contains(r#""password":{"env":"RESTORE_PW"}"#),
        "{}",
        job.spec_json()
    );
    assert!(!job.spec_json().contains("labels"));
}
