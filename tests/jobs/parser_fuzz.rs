//! Property tests: no input makes the job-file reader, parser, locator or validator panic.
//! Arbitrary bytes, arbitrary YAML trees (built from the job format's own vocabulary so that
//! validation gets deep), and random edits of the example files: 12,000 cases in total.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use restorectl::config::Config;
use restorectl::jobs::locate::Locator;
use restorectl::jobs::parse::decode;
use restorectl::jobs::{ValidationContext, parse_str};
use serde_yaml::Value;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_yaml(
            "servers:\n  primary: { url: https://x.test, username: u, password: { env: P } }\n",
            Path::new("/etc/restorectl/restorectl.yaml"),
        )
        .unwrap()
    })
}

/// Runs the whole pipeline on `text` and checks the report is coherent.
fn check(text: &str) {
    let ctx = ValidationContext::new(config());
    let report = parse_str(text, Path::new("fuzz.yaml"), &ctx);
    for e in report.all_errors() {
        assert!(e.line >= 1 && e.column >= 1, "{e:?}");
        assert!(!e.hint.is_empty());
    }
    for d in &report.documents {
        assert_eq!(d.job.is_some(), d.errors.is_empty(), "{d:?}");
    }
    // The locator is only built on errors by the parser; exercise it on every input too.
    let _ = Locator::new(text);
}

/// Words of the job format, so that random trees hit real keys and values.
const WORDS: &[&str] = &[
    "apiVersion",
    "restorectl/v1",
    "kind",
    "ExportPst",
    "Restore",
    "RestoreTo",
    "BulkRestore",
    "Search",
    "metadata",
    "name",
    "labels",
    "spec",
    "server",
    "primary",
    "organization",
    "contoso.onmicrosoft.com",
    "pointInTime",
    "latest",
    "24h ago",
    "2026-01-31T23:00:00Z",
    "mailboxes",
    "exclude",
    "archives",
    "include",
    "only",
    "id",
    "match",
    "all",
    "alice@contoso.com",
    "*@legal.contoso.com",
    "7a619cf6-b7e1-4141-951b-960a2fca061d",
    "schedule",
    "cron",
    "0 2 * * SUN",
    "0 0 30 2 *",
    "*/5 * * * * *",
    "timezone",
    "Europe/Berlin",
    "startingDeadline",
    "1h",
    "concurrencyPolicy",
    "Forbid",
    "Replace",
    "suspend",
    "retry",
    "maxAttempts",
    "initialBackoff",
    "maxBackoff",
    "30s",
    "runTimeout",
    "12h",
    "export",
    "keyword",
    "pstSizeLimit",
    "10GiB",
    "0.5GiB",
    "path",
    "{job}/{date}/{mailbox}.pst",
    "../{mailbox}.pst",
    "/abs/{mailbox}.pst",
    "{nope}",
    "retention",
    "keepLast",
    "keepFor",
    "restore",
    "credentials",
    "application",
    "applicationId",
    "certificate",
    "certificatePassword",
    "user",
    "userName",
    "password",
    "secret",
    "env",
    "file",
    "restoreTo",
    "mailbox",
    "folder",
    "casServer",
    "officeRegion",
    "Worldwide",
    "options",
    "changedItems",
    "bulkRestore",
    "office365",
    "onPremises",
    "domainName",
    "recentItemRestorePeriod",
    "search",
    "query",
    "report",
    "format",
    "jsonl",
    "csv",
    "<<",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_string),
        1 => ".{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        word().prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            proptest::collection::vec((word(), inner), 0..6).prop_map(|entries| {
                Value::Mapping(
                    entries
                        .into_iter()
                        .map(|(k, v)| (Value::String(k), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// A job-shaped tree: the top-level keys are right, their contents random.
fn job_tree() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(&WORDS[3..8]),
        word(),
        tree(),
        tree(),
    )
        .prop_map(|(kind, name, meta, spec)| {
            let mut m = serde_yaml::Mapping::new();
            m.insert("apiVersion".into(), "restorectl/v1".into());
            m.insert("kind".into(), kind.into());
            let mut md = match meta {
                Value::Mapping(m) => m,
                _ => serde_yaml::Mapping::new(),
            };
            md.insert("name".into(), name.into());
            m.insert("metadata".into(), Value::Mapping(md));
            m.insert("spec".into(), spec);
            Value::Mapping(m)
        })
}

fn examples() -> &'static Vec<String> {
    static EX: OnceLock<Vec<String>> = OnceLock::new();
    EX.get_or_init(|| {
        let mut v: Vec<String> = std::fs::read_dir(crate::common::repo().join("jobs.example"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        v.sort();
        v
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize, usize),
    ReplaceWord(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (
            any::<usize>(),
            prop_oneof![word(), "[\\[\\]{}:,\\-#&*!|>'\"\t\n ]{1,4}"]
        )
            .prop_map(|(a, s)| Edit::Insert(a, s)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), 0usize..6).prop_map(|(a, n)| Edit::Indent(a, n)),
        (any::<usize>(), word()).prop_map(|(a, w)| Edit::ReplaceWord(a, w)),
    ]
}

fn apply(text: &str, e: &Edit) -> String {
    let boundary = |s: &str, i: usize| {
        let mut i = i % (s.len() + 1);
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match e {
        Edit::Delete(a, len) => {
            let start = boundary(text, *a);
            let end = boundary(text, start + len);
            format!("{}{}", &text[..start], &text[end.max(start)..])
        }
        Edit::Insert(a, s) => {
            let at = boundary(text, *a);
            format!("{}{s}{}", &text[..at], &text[at..])
        }
        Edit::DuplicateLine(a) if !lines.is_empty() => {
            let l = lines[a % n].clone();
            lines.insert(a % n, l);
            lines.join("\n")
        }
        Edit::SwapLines(a, b) if !lines.is_empty() => {
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
        Edit::Indent(a, k) if !lines.is_empty() => {
            let l = &mut lines[a % n];
            *l = format!("{}{}", " ".repeat(*k), l.trim_start());
            lines.join("\n")
        }
        Edit::ReplaceWord(a, w) => {
            let words: Vec<&str> = text.split_whitespace().collect();
            if words.is_empty() {
                return text.to_string();
            }
            text.replacen(words[a % words.len()], w, 1)
        }
        _ => text.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        match decode(Path::new("fuzz.yaml"), bytes) {
            Ok(text) => check(&text),
            Err(e) => prop_assert!(e.line >= 1),
        }
    }

    #[test]
    fn arbitrary_yaml_trees_never_panic(docs in proptest::collection::vec(prop_oneof![job_tree(), tree()], 1..3)) {
        let text = docs
            .iter()
            .map(|d| serde_yaml::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        check(&text);
    }

    #[test]
    fn edited_examples_never_panic(index in any::<usize>(), edits in proptest::collection::vec(edit(), 1..5)) {
        let base = &examples()[index % examples().len()];
        let text = edits.iter().fold(base.clone(), |t, e| apply(&t, e));
        check(&text);
    }
}

#[test]
fn pathological_documents_are_errors_not_crashes() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_map = "a:\n".to_string()
        + &(1..2000)
            .map(|i| format!("{}b:\n", " ".repeat(i)))
            .collect::<String>();
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    for text in [
        deep.as_str(),
        deep_map.as_str(),
        laughs,
        "---\n---\n...\n",
        "\u{feff}",
        "? [a]\n: b\n",
        "*x\n",
        "!!binary AAA\n",
    ] {
        check(text);
        let report = parse_str(text, Path::new("x.yaml"), &ValidationContext::new(config()));
        assert_eq!(report.jobs().count(), 0);
    }
}
