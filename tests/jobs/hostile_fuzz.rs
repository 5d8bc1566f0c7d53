//! Property tests over hostile job files and daemon configs (issue 8): together with
//! `tests/jobs/parser_fuzz.rs` (12,000 cases) more than 100,000 cases per `cargo test`.
//!
//! The strategies build text directly from line and value vocabularies (no YAML serialiser in
//! the loop), so a case costs little more than the parse it exercises. The properties:
//!
//! - nothing panics, whatever the bytes;
//! - every job error is located (line and column ≥ 1) and has a hint;
//! - a path field (`export.path`, `report.path`) whose value has a `..` component or is absolute
//!   never validates, whichever field and placeholder it sits in (RestoreTo `folder` is a
//!   mailbox folder, not a path: `..` and `/` are text there, see `jobs::folder`);
//! - a config never panics, its syntax errors are located, and a password written as a plain
//!   string never appears in the error.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use restorectl::config::{Config, ConfigError};
use restorectl::jobs::{ValidationContext, parse_str};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_yaml(
            "exportRoot: /srv/exports\nservers:\n  primary: { url: https://x.test, username: u, password: { env: P } }\n",
            Path::new("/etc/restorectl/restorectl.yaml"),
        )
        .expect("the fuzz config is valid")
    })
}

/// Parses and validates `text`; checks every error is located.
fn check_job(text: &str) -> bool {
    let ctx = ValidationContext::new(config());
    let report = parse_str(text, Path::new("fuzz.yaml"), &ctx);
    for e in report.all_errors() {
        assert!(e.line >= 1 && e.column >= 1, "{e:?}");
        assert!(!e.hint.is_empty(), "{e:?}");
    }
    report.all_errors().next().is_none() && report.jobs().count() > 0
}

/// Hostile scalars: numbers at and past every integer width, durations and sizes that
/// overflow, traversal, control characters, YAML specials.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "1e400",
    ".nan",
    ".inf",
    "-.inf",
    "0x7fffffffffffffff",
    "0o777",
    "99999999999999999999d",
    "18446744073709551615s",
    "213503982334602d",
    "584942417355y",
    "1ns",
    "0s",
    "-5m",
    "1.5.5h",
    "9999999999999PiB",
    "16EiB",
    "18446744073709551615B",
    "0.0000001GiB",
    "-1GiB",
    "\"..\"",
    "\"../x\"",
    "\"/etc/passwd\"",
    "\"{job}/../../x.pst\"",
    "\"{..}\"",
    "\"{job\"",
    "\"}{\"",
    "\"\\0\"",
    "\"a\\nb\"",
    "\"\\u202e\"",
    "\"\\x1b[2J\"",
    "\"\\\\\\\\server\\\\share\"",
    "~",
    "null",
    "true",
    "[]",
    "{}",
    "[[[[[[[[]]]]]]]]",
    "*alias",
    "&a x",
    "!!binary AAAA",
    "!!str",
    "'",
    "\"",
    "|",
    ">-",
    "{ secret: \"\" }",
    "{ secret: \"../../etc/shadow\" }",
    "{ env: \"\" }",
    "{ file: \"\" }",
    "{ secret: a, env: b }",
    "999999999-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "\"99999999999999h ago\"",
    "\"*/0 * * * *\"",
    "\"0-99999999999 * * * *\"",
    "\"* * * * * * * *\"",
];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(HOSTILE).prop_map(str::to_string),
        1 => "[0-9]{15,25}[smhdwyKMGTiB]{0,3}",
        1 => "\"[ -~]{0,20}\"",
    ]
}

/// A job with every field present; `{F}` markers are where a hostile value may go.
const TEMPLATE: &[(&str, &str)] = &[
    ("apiVersion: ", "restorectl/v1"),
    ("kind: ", "ExportPst"),
    ("metadata:\n  name: ", "fuzz"),
    ("  labels: { team: ", "legal }"),
    ("spec:\n  server: ", "primary"),
    ("  organization: ", "contoso.onmicrosoft.com"),
    ("  pointInTime: ", "latest"),
    ("  mailboxes: [", "alice@contoso.com]"),
    ("  archives: ", "include"),
    ("  schedule:\n    cron: ", "\"0 2 * * *\""),
    ("    timezone: ", "Europe/Berlin"),
    ("    startingDeadline: ", "1h"),
    ("    concurrencyPolicy: ", "Forbid"),
    ("  suspend: ", "false"),
    ("  retry:\n    maxAttempts: ", "3"),
    ("    initialBackoff: ", "30s"),
    ("    maxBackoff: ", "5m"),
    ("  runTimeout: ", "12h"),
    ("  export:\n    keyword: ", "x"),
    ("    pstSizeLimit: ", "10GiB"),
    ("    path: ", "\"{job}/{date}/{mailbox}.pst\""),
    ("    retention:\n      keepLast: ", "4"),
    ("      keepFor: ", "30d"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 30_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// One to three fields of a complete job replaced by hostile values.
    #[test]
    fn hostile_values_in_job_fields(edits in proptest::collection::vec((0..TEMPLATE.len(), hostile()), 1..4)) {
        let mut values: Vec<String> = TEMPLATE.iter().map(|(_, v)| v.to_string()).collect();
        for (i, v) in &edits {
            values[*i] = v.clone();
        }
        let text: String = TEMPLATE
            .iter()
            .zip(&values)
            .map(|((k, _), v)| format!("{k}{v}\n"))
            .collect();
        check_job(&text);
    }
}

/// Placeholders and literal parts from which path templates are built.
const PATH_PARTS: &[&str] = &[
    "{job}",
    "{run}",
    "{date}",
    "{time}",
    "{mailbox}",
    "{mailboxId}",
    "{org}",
    "..",
    ".",
    "",
    "a",
    "%2e%2e",
    "...",
    "..a",
    "a..",
    "~",
    "{job}..",
    "..{job}",
    "{job}.{run}",
];

fn path_template() -> impl Strategy<Value = (bool, String)> {
    (
        any::<bool>(),
        proptest::collection::vec(proptest::sample::select(PATH_PARTS), 1..6),
    )
        .prop_map(|(absolute, parts)| {
            let body = parts.join("/");
            (absolute, if absolute { format!("/{body}") } else { body })
        })
}

fn escapes(path: &str) -> bool {
    path.starts_with('/') || path.split('/').any(|c| c == "..")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// A path template with a `..` component or a leading `/` never validates, in either path
    /// field.
    #[test]
    fn traversal_never_validates(field in 0..2usize, (_, path) in path_template()) {
        // The field's value as written, extension included (`..` + `.pst` is a file name).
        let value = match field {
            0 => format!("{path}.pst"),
            _ => format!("{path}.jsonl"),
        };
        let head = "apiVersion: restorectl/v1\nmetadata:\n  name: fuzz\nspec:\n  organization: contoso.onmicrosoft.com\n  mailboxes: [alice@contoso.com]\n";
        let text = match field {
            0 => format!("kind: ExportPst\n{head}  export:\n    path: \"{value}\"\n"),
            _ => format!("kind: Search\n{head}  search:\n    query: x\n    report: {{ path: \"{value}\", format: jsonl }}\n"),
        };
        let valid = check_job(&text);
        if escapes(&value) {
            prop_assert!(!valid, "accepted an escaping path: {text}");
        }
    }
}

/// Config keys and values, so random configs reach deep into validation.
const CONFIG_LINES: &[&str] = &[
    "jobsDir: jobs",
    "jobsDir: \"\"",
    "stateDir: /var/lib/restorectl",
    "database: sqlite:///tmp/x.db",
    "database: postgres://x",
    "database: sqlite://",
    "exportRoot: exports",
    "exportRoot: \"\"",
    "secretsDir: /run/secrets",
    "listen: 127.0.0.1:9464",
    "listen: off",
    "listen: \"[::1]:99999\"",
    "listen: 0.0.0.0:0",
    "timezone: Europe/Berlin",
    "timezone: ../../etc/localtime",
    "log: { format: json, level: debug }",
    "log: { format: xml }",
    "log: { level: \"restorectl=[\" }",
    "log: { level: \"a=b=c,,=\" }",
    "stepParallelism: 0",
    "stepParallelism: 4294967296",
    "pageSize: 18446744073709551616",
    "shutdownTimeout: 99999999999999999999d",
    "shutdownTimeout: 18446744073709551615s",
    "defaults: { retry: { maxAttempts: 0 } }",
    "defaults: { retry: { maxAttempts: 101, initialBackoff: 1y, maxBackoff: 1s } }",
    "defaults: { runTimeout: 0s }",
    "downloads: { maxParallel: 0 }",
    "downloads: { bandwidthLimit: 99999999PiB }",
    "watch: { rescanInterval: 0s }",
    "engine: { pollInterval: 18446744073709551615s }",
    "servers: {}",
    "servers: []",
    "servers:",
    "  primary:",
    "  \"../x\":",
    "  \"\":",
    "    url: https://vb365.test:4443",
    "    url: not a url",
    "    url: file:///etc/passwd",
    "    url: https://[::1",
    "    username: CONTOSO\\svc",
    "    password: { secret: vb365 }",
    "    password: { env: VB365_PW }",
    "    password: { file: /etc/shadow }",
    "    password: { secret: ../../etc/shadow }",
    "    password: { secret: a, env: b }",
    "    password: Plain-Cfg-S3cret-71f0",
    "    password: \"Plain-Cfg-S3cret-71f0\\nline\"",
    "    caFile: /nonexistent",
    "    insecureSkipTlsVerify: maybe",
    "    maxConcurrentSessions: 0",
    "    requestTimeout: 0s",
    "<<: *x",
    "x: &x { jobsDir: a }",
    "? [a]",
    ": b",
    "\t",
    "---",
    "...",
    "%YAML 1.1",
    "bogusKey: 1",
];

fn config_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(CONFIG_LINES).prop_map(str::to_string),
            1 => "[ -~]{0,16}",
        ],
        0..14,
    )
    .prop_map(|lines| lines.join("\n"))
}

/// The config pipeline on `text`: no panic, located syntax errors, no plain secret in errors.
fn check_config(text: &str) {
    match Config::from_yaml(text, Path::new("/etc/restorectl/restorectl.yaml")) {
        Ok(c) => {
            let debug = format!("{c:?}");
            assert!(!debug.contains("Plain-Cfg-S3cret"), "{debug}");
        }
        Err(e) => {
            if let ConfigError::Syntax { line, column, .. } = &e {
                assert!(*line >= 1 && *column >= 1, "{e:?}");
            }
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("Plain-Cfg-S3cret"), "{shown}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 25_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_never_panics_nor_leaks(text in config_text()) {
        check_config(&text);
    }

    #[test]
    fn config_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_config(&String::from_utf8_lossy(&bytes));
    }
}
