//! The documentation cannot drift from the product:
//!
//! - every shell command in a ```sh / ```bash / ```shell / ```console block of README.md and
//!   docs/*.md either runs here (in order, in a sandbox installation with a real state database,
//!   and must succeed) or carries a `# needs …` comment saying what it needs that a test machine
//!   does not have (root, systemd, a running daemon, a real VB365 server, a cluster);
//! - the JSON field tables of docs/cli-json.md match the real output of `jobs`, `runs`, `show`
//!   and `plan`, both ways;
//! - the complete example of docs/configuration.md loads with the real config loader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::ops::{Fixture, plan, scenario};
use restorectl::config::Config;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Fenced blocks of `text` whose info string is one of `langs`, as lists of lines.
fn blocks(text: &str, langs: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // `Some((keep, lines))` inside a fence; `keep` when its language is wanted.
    let mut current: Option<(bool, Vec<String>)> = None;
    for line in text.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            current = match current.take() {
                Some((keep, lines)) => {
                    if keep {
                        out.push(lines);
                    }
                    None
                }
                None => Some((langs.contains(&info.trim()), Vec::new())),
            };
            continue;
        }
        if let Some((_, lines)) = current.as_mut() {
            lines.push(line.to_string());
        }
    }
    out
}

/// A command of a shell block: the command text and its trailing comment.
#[derive(Debug)]
struct DocCommand {
    file: String,
    command: String,
    comment: Option<String>,
}

/// Shell commands: `$ ` prompts stripped, `\` continuations joined, comment-only lines dropped,
/// a trailing `# …` comment split off (a `#` preceded by whitespace).
fn commands(file: &Path) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = Vec::new();
    for block in blocks(&text, &["sh", "bash", "shell", "console"]) {
        let mut pending = String::new();
        for line in block {
            let line = line.trim();
            let line = line.strip_prefix("$ ").unwrap_or(line);
            if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
                continue;
            }
            if let Some(start) = line.strip_suffix('\\') {
                pending.push_str(start.trim_end());
                pending.push(' ');
                continue;
            }
            pending.push_str(line);
            let (command, comment) = match pending.find(" #") {
                Some(i) => (
                    pending[..i].trim().to_string(),
                    Some(pending[i + 2..].trim().to_string()),
                ),
                None => (pending.trim().to_string(), None),
            };
            out.push(DocCommand {
                file: name.clone(),
                command,
                comment,
            });
            pending.clear();
        }
    }
    out
}

/// Commands whose test lives elsewhere, with where.
const COVERED_ELSEWHERE: &[(&str, &str)] = &[
    ("cargo test", "the test suite itself"),
    (
        "cargo run --release -- daemon --dev",
        "the `daemon --dev` tests of the daemon (issue 6)",
    ),
    (
        "promtool check rules deploy/prometheus/alerts.yaml",
        "tests/cli/alerting.rs",
    ),
    (
        "promtool test rules deploy/prometheus/alerts.test.yaml",
        "tests/cli/alerting.rs",
    ),
];

/// A sandbox installation: the operator fixture's database (jobs and the runs made on the
/// simulator, among them an in_doubt run), the example job files in `jobs/` instead of the
/// fixture's own, and a config with one server, named by `$RESTORECTL_CONFIG`.
fn sandbox() -> (Fixture, Vec<(&'static str, String)>) {
    let f = Fixture::with_history();
    // The documented `plan` must succeed: the fixture's invalid `broken.yaml` (and its other
    // files, whose names could clash with the examples') give way to the examples.
    std::fs::remove_dir_all(f.path().join("jobs")).unwrap();
    std::fs::create_dir_all(f.path().join("jobs")).unwrap();
    std::fs::write(
        f.config(),
        "jobsDir: jobs\nstateDir: state\nexportRoot: exports\nsecretsDir: secrets\n\
         listen: \"off\"\ntimezone: UTC\nservers:\n  sim:\n    url: http://127.0.0.1:4443\n    \
         username: CONTOSO\\svc-restore\n    password: { secret: vb365-password }\n",
    )
    .unwrap();
    for entry in std::fs::read_dir(repo().join("jobs.example")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_file() && name.ends_with(".yaml") && name != "restorectl.yaml" {
            std::fs::copy(&path, f.path().join("jobs").join(&name)).unwrap();
        }
    }
    let bin_dir = assert_cmd::cargo::cargo_bin("restorectl")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = vec![
        ("PATH", path),
        ("RESTORECTL_CONFIG", f.config().display().to_string()),
        ("RUN", f.in_doubt.to_string()),
        ("NO_COLOR", "1".to_string()),
    ];
    (f, env)
}

#[test]
fn every_documented_command_runs_here_or_says_what_it_needs() {
    let (f, env) = sandbox();
    let mut ran = 0;
    let mut unaccounted = Vec::new();
    for file in markdown_files() {
        for c in commands(&file) {
            if c.comment
                .as_deref()
                .is_some_and(|m| m.starts_with("needs "))
            {
                continue;
            }
            if COVERED_ELSEWHERE.iter().any(|(cmd, _)| *cmd == c.command) {
                continue;
            }
            if !c.command.starts_with("restorectl ") {
                unaccounted.push(format!("{}: {}", c.file, c.command));
                continue;
            }
            let out = Command::new("sh")
                .arg("-c")
                .arg(&c.command)
                .current_dir(f.path())
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env_remove("COLUMNS")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: `{}` exited {:?}\n{}{}",
                c.file,
                c.command,
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(
        unaccounted.is_empty(),
        "commands that neither run in this test nor say `# needs …`:\n{}",
        unaccounted.join("\n")
    );
    assert!(ran >= 10, "only {ran} documented commands ran");
}

#[test]
fn command_extraction_handles_prompts_comments_and_continuations() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("x.md");
    std::fs::write(
        &md,
        "```sh\n# a comment line\n$ restorectl jobs\nrestorectl runs \\\n  --limit 5   # needs nothing\n```\n\
         ```yaml\nnot: a command\n```\n```\nrestorectl synopsis [ARGS]\n```\n",
    )
    .unwrap();
    let cmds = commands(&md);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(cmds[0].command, "restorectl jobs");
    assert_eq!(cmds[1].command, "restorectl runs --limit 5");
    assert_eq!(cmds[1].comment.as_deref(), Some("needs nothing"));
}

// ===== docs/cli-json.md =====

/// `(section heading, documented paths, opaque paths)` per `## \`restorectl …\`` section.
fn documented_fields() -> Vec<(String, BTreeSet<String>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(repo().join("docs/cli-json.md")).unwrap();
    let mut out: Vec<(String, BTreeSet<String>, BTreeSet<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            out.push((h.to_string(), BTreeSet::new(), BTreeSet::new()));
            continue;
        }
        let Some((_, fields, opaque)) = out.last_mut() else {
            continue;
        };
        let cells: Vec<&str> = line.split(" | ").collect();
        if line.starts_with("| `") && cells.len() >= 3 {
            let path = cells[0]
                .trim_start_matches("| ")
                .trim_matches('`')
                .to_string();
            let ty = cells[1];
            if ty.contains("free-form") || ty.contains("error objects") || ty.starts_with("map") {
                opaque.insert(path.clone());
            }
            fields.insert(path);
        }
    }
    out
}

/// Every key path of `v`: objects recorded and descended into, arrays of objects as `[]`,
/// nothing below an opaque path.
fn paths(v: &Value, prefix: &str, opaque: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                if !opaque.contains(&p) {
                    paths(child, &p, opaque, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_object()) {
                paths(item, &format!("{prefix}[]"), opaque, out);
            }
        }
        _ => {}
    }
}

fn output_json(cmd: &mut assert_cmd::Command) -> Value {
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn cli_json_doc_matches_the_real_output_both_ways() {
    let f = Fixture::with_history();
    // The queued run executing under a daemon's lease, so `heldBy` is produced where a running
    // run shows (`runs[]`, `run`, and `jobs[].lastRun` of its job).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = restorectl::store::Store::open(f.db()).await.unwrap();
        store
            .claim_run(
                f.queued,
                "test-daemon",
                std::time::Duration::from_secs(3600),
                chrono::Utc::now(),
            )
            .await
            .unwrap()
            .expect("the queued run is claimable");
        store.close().await;
    });
    let plan_dir = scenario();
    let outputs: Vec<(&str, Vec<Value>)> = vec![
        (
            "`restorectl jobs --json`",
            vec![output_json(&mut f.cmd(&["jobs", "--json"]))],
        ),
        (
            "`restorectl runs --json`",
            vec![output_json(&mut f.cmd(&["runs", "--json"]))],
        ),
        (
            "`restorectl show RUN_ID --json`",
            [
                f.export, f.restore, f.search, f.failed, f.in_doubt, f.queued,
            ]
            .iter()
            .map(|run| output_json(&mut f.cmd(&["show", &run.to_string(), "--json"])))
            .collect(),
        ),
        (
            "`restorectl plan --format json`",
            vec![output_json(&mut plan(plan_dir.path(), "json"))],
        ),
    ];
    let documented = documented_fields();
    for (heading, values) in outputs {
        let (_, fields, opaque) = documented
            .iter()
            .find(|(h, _, _)| h == heading)
            .unwrap_or_else(|| panic!("docs/cli-json.md has no section {heading}"));
        let mut seen = BTreeSet::new();
        for v in &values {
            paths(v, "", opaque, &mut seen);
        }
        let undocumented: Vec<_> = seen.difference(fields).collect();
        let missing: Vec<_> = fields.difference(&seen).collect();
        assert!(
            undocumented.is_empty(),
            "{heading}: fields not in docs/cli-json.md: {undocumented:?}"
        );
        assert!(
            missing.is_empty(),
            "{heading}: documented fields never produced: {missing:?}"
        );
    }
}

#[test]
fn configuration_doc_example_loads() {
    let text = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let example = blocks(&text, &["yaml"])
        .into_iter()
        .find(|b| b.iter().any(|l| l.starts_with("watch:")))
        .expect("the complete example block");
    let config = Config::from_yaml(
        &example.join("\n"),
        Path::new("/etc/restorectl/restorectl.yaml"),
    )
    .unwrap_or_else(|e| panic!("docs/configuration.md example: {e}"));
    // The example spells out every default: it must equal the built-in defaults where it can.
    let defaults = Config::builtin_defaults();
    assert_eq!(config.jobs_dir, defaults.jobs_dir);
    assert_eq!(config.database, defaults.database);
    assert_eq!(config.export_root, defaults.export_root);
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(config.default_retry, defaults.default_retry);
    assert_eq!(config.default_run_timeout, defaults.default_run_timeout);
    assert_eq!(config.step_parallelism, defaults.step_parallelism);
    assert_eq!(config.page_size, defaults.page_size);
    assert_eq!(config.shutdown_timeout, defaults.shutdown_timeout);
    assert_eq!(config.downloads, defaults.downloads);
    assert_eq!(config.watch, defaults.watch);
}
