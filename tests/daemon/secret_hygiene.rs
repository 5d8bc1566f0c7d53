//! Secret hygiene (issue 8): a realistic workload through the real `restorectl daemon` against
//! the in-process simulator, with distinctive secret values in every place a secret can be
//! (VB365 password, an application certificate and its password, restore user passwords), read
//! through `{secret}`, `{env}` and `{file}` references, logged as text and as JSON at debug
//! level and beyond. Includes a failing run (wrong VB365 password → authentication error).
//!
//! Afterwards none of the values, nor the base64 of the certificate bytes, appears in: the
//! daemon's stdout/stderr, the SQLite database and its WAL, any file the runs wrote (manifests,
//! search reports, exports), or the `--json` output of `jobs`, `runs`, `show`, `validate`,
//! `plan`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon_support::{bin, eventually};
use base64::Engine as _;

use restorectl::sim::{SimConfig, SimUser, Simulator};
use restorectl::store::{RunFilter, RunState, Store};

const VB365_PASSWORD: &str = "Hyg-vb365-pw-4b1d9e";
const WRONG_PASSWORD: &str = "Hyg-wrong-pw-77c2a0";
const CERT_PASSWORD: &str = "Hyg-cert-pw-e03f51";
const USER_PASSWORD: &str = "Hyg-user-pw-5a8c13";
const O365_PASSWORD: &str = "Hyg-o365-pw-91fe42";
const ONPREM_PASSWORD: &str = "Hyg-onprem-pw-2d6b70";
const USERNAME: &str = "CONTOSO\\svc-hygiene";

/// Certificate bytes: binary (not UTF-8), with a distinctive marker in the middle.
fn cert_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0u8..=255).rev().cycle().take(700).collect();
    v.splice(300..300, b"Hyg-cert-bytes-c7a9f2".iter().copied());
    v
}

/// Every string that must never appear, with a label for the failure message.
fn forbidden() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = [
        VB365_PASSWORD,
        WRONG_PASSWORD,
        CERT_PASSWORD,
        USER_PASSWORD,
        O365_PASSWORD,
        ONPREM_PASSWORD,
        "Hyg-cert-bytes-c7a9f2",
    ]
    .iter()
    .map(|s| (s.to_string(), s.as_bytes().to_vec()))
    .collect();
    let cert = cert_bytes();
    let b64 = base64::engine::general_purpose::STANDARD;
    v.push(("base64(cert)".into(), b64.encode(&cert).into_bytes()));
    // Base64 of the certificate at each of the three alignments, as any larger encoded
    // buffer containing it would show it (the middle of the encoding only).
    for offset in 0..3 {
        let enc = b64.encode(&cert[offset..offset + 60]);
        v.push((
            format!("base64(cert[{offset}..])"),
            enc.as_bytes()[4..60].to_vec(),
        ));
    }
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&cert);
    v.push(("base64url(cert)".into(), url.into_bytes()));
    v
}

fn assert_clean(what: &str, bytes: &[u8]) {
    for (label, needle) in forbidden() {
        let found = bytes.windows(needle.len()).position(|w| w == needle);
        if let Some(at) = found {
            let from = at.saturating_sub(200);
            let to = (at + needle.len() + 200).min(bytes.len());
            panic!(
                "{what} leaks {label}: …{}…",
                String::from_utf8_lossy(&bytes[from..to])
            );
        }
    }
}

fn job(kind: &str, name: &str, server: &str, body: &str) -> String {
    format!(
        "apiVersion: restorectl/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  server: {server}\n  organization: contoso.onmicrosoft.com\n{body}"
    )
}

/// Writes config, secrets and jobs into `dir`. `json_logs` selects `log.format`.
fn write_site(dir: &Path, url: &str, json_logs: bool) {
    for d in ["jobs", "state", "exports", "secrets"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("secrets/vb365"), format!("{VB365_PASSWORD}\n")).unwrap();
    std::fs::write(dir.join("secrets/app-cert"), cert_bytes()).unwrap();
    std::fs::write(dir.join("secrets/o365"), O365_PASSWORD).unwrap();
    std::fs::write(dir.join("cert-password.txt"), CERT_PASSWORD).unwrap();
    let format = if json_logs { "json" } else { "text" };
    std::fs::write(
        dir.join("restorectl.yaml"),
        format!(
            "jobsDir: jobs\nstateDir: state\nexportRoot: exports\nsecretsDir: secrets\n\
             listen: \"off\"\ntimezone: UTC\nshutdownTimeout: 10s\n\
             log: {{ format: {format}, level: debug }}\n\
             defaults: {{ retry: {{ maxAttempts: 1 }} }}\n\
             servers:\n  sim:\n    url: {url}\n    username: {USERNAME}\n\
             \x20   password: {{ secret: vb365 }}\n\
             \x20 wrong:\n    url: {url}\n    username: {USERNAME}\n\
             \x20   password: {{ env: HYGIENE_WRONG_PASSWORD }}\n"
        ),
    )
    .unwrap();
    let cert_file = dir.join("cert-password.txt");
    let jobs = [
        (
            "export.yaml",
            job(
                "ExportPst",
                "hy-export",
                "sim",
                "  mailboxes: [alice@contoso.com, bob@contoso.com]\n  archives: exclude\n  export:\n    path: \"{job}/{run}/{mailbox}.pst\"\n",
            ),
        ),
        (
            "search.yaml",
            job(
                "Search",
                "hy-search",
                "sim",
                "  mailboxes: [ceo@contoso.com]\n  archives: exclude\n  search:\n    query: 'from:ceo@contoso.com'\n    report: { path: \"{job}/{run}/report.jsonl\", format: jsonl }\n",
            ),
        ),
        (
            "restore.yaml",
            job(
                "Restore",
                "hy-restore",
                "sim",
                "  mailboxes: [dave@contoso.com]\n  archives: exclude\n  restore:\n    credentials:\n      user: { userName: svc-backup@contoso.com, password: { env: HYGIENE_USER_PASSWORD } }\n",
            ),
        ),
        (
            "restore-to.yaml",
            job(
                "RestoreTo",
                "hy-restore-to",
                "sim",
                &format!(
                    "  mailboxes: [frank@contoso.com]\n  archives: exclude\n  restoreTo:\n    mailbox: legal-review@contoso.com\n    folder: \"Restored/{{job}}\"\n    credentials:\n      application:\n        applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10\n        certificate: {{ secret: app-cert }}\n        certificatePassword: {{ file: {} }}\n        impersonationAccountName: svc-backup@contoso.com\n",
                    cert_file.display()
                ),
            ),
        ),
        (
            "bulk-o365.yaml",
            job(
                "BulkRestore",
                "hy-bulk-o365",
                "sim",
                "  mailboxes: [erin@contoso.com, grace@contoso.com]\n  archives: exclude\n  bulkRestore:\n    credentials:\n      office365: { userName: svc-backup@contoso.com, password: { secret: o365 } }\n",
            ),
        ),
        (
            "bulk-onprem.yaml",
            job(
                "BulkRestore",
                "hy-bulk-onprem",
                "sim",
                "  mailboxes: [heidi@contoso.com]\n  archives: exclude\n  bulkRestore:\n    credentials:\n      onPremises: { domainName: CONTOSO, userName: admin, password: { env: HYGIENE_ONPREM_PASSWORD } }\n",
            ),
        ),
        (
            "wrong-password.yaml",
            job(
                "ExportPst",
                "hy-wrong-password",
                "wrong",
                "  mailboxes: [ivan@contoso.com]\n  archives: exclude\n  export:\n    path: \"{job}/{run}/{mailbox}.pst\"\n",
            ),
        ),
    ];
    for (file, text) in jobs {
        std::fs::write(dir.join("jobs").join(file), text).unwrap();
    }
}

const JOBS: [&str; 7] = [
    "hy-export",
    "hy-search",
    "hy-restore",
    "hy-restore-to",
    "hy-bulk-o365",
    "hy-bulk-onprem",
    "hy-wrong-password",
];

fn secret_env(cmd: &mut Command) -> &mut Command {
    cmd.env("HYGIENE_WRONG_PASSWORD", WRONG_PASSWORD)
        .env("HYGIENE_USER_PASSWORD", USER_PASSWORD)
        .env("HYGIENE_ONPREM_PASSWORD", ONPREM_PASSWORD)
}

/// A CLI command against the site (with the secrets in its environment too, so a command that
/// resolved them could leak them); returns stdout after checking stderr is clean.
fn cli(config: &Path, args: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(config).args(args);
    let out = secret_env(&mut cmd)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&format!("{args:?} stderr"), &out.stderr);
    assert_clean(&format!("{args:?} stdout"), &out.stdout);
    out.stdout
}

/// Every regular file below `dir`, except the secret files themselves.
fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_below(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

async fn workload(json_logs: bool) {
    let sim = Simulator::start(
        SimConfig {
            users: vec![SimUser {
                username: USERNAME.into(),
                password: VB365_PASSWORD.into(),
            }],
            restore_delay: Duration::from_millis(200),
            export_build_delay: Duration::from_millis(20),
            export_default_size: 16 * 1024,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_site(dir.path(), &sim.base_url(), json_logs);
    let config = dir.path().join("restorectl.yaml");
    let log_dir = tempfile::tempdir().unwrap();
    let stdout_path = log_dir.path().join("stdout");
    let stderr_path = log_dir.path().join("stderr");

    let mut cmd = Command::new(bin());
    cmd.args(["daemon", "--config"]).arg(&config);
    let mut daemon = secret_env(&mut cmd)
        .env("RUST_LOG", "debug,restorectl=trace")
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
        .spawn()
        .unwrap();

    let db = dir.path().join("state/restorectl.db");
    let (store, _) = eventually("the daemon opens its database", || {
        let db = db.clone();
        async move { Store::open_existing(&db).await.ok() }
    })
    .await;
    // Every one-shot job runs once on load; wait for all of them to finish (a longer bound
    // than PATIENCE: seven runs on a busy machine).
    let start = std::time::Instant::now();
    let runs = loop {
        let runs = store.list_runs(&RunFilter::default()).await.unwrap();
        let done: Vec<_> = JOBS
            .iter()
            .filter_map(|j| {
                runs.iter()
                    .find(|r| r.job_name == *j && r.state.is_terminal())
            })
            .cloned()
            .collect();
        if done.len() == JOBS.len() {
            break done;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = daemon.kill();
            let _ = daemon.wait();
            let log = String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap()).into_owned();
            let tail = &log[log.len().saturating_sub(8000)..];
            panic!("runs not finished: {runs:#?}\nlog tail:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for r in &runs {
        let expected = if r.job_name == "hy-wrong-password" {
            RunState::Failed
        } else {
            RunState::Succeeded
        };
        assert_eq!(r.state, expected, "{}: {r:?}", r.job_name);
    }

    // CLI JSON outputs while the daemon runs.
    cli(&config, &["jobs", "--json"]);
    cli(&config, &["runs", "--json", "--limit", "100"]);
    for r in &runs {
        let out = cli(&config, &["show", &r.id.to_string(), "--json"]);
        if r.job_name == "hy-wrong-password" {
            // The failing run's error is there (so the check above had something to look at).
            let text = String::from_utf8_lossy(&out).to_lowercase();
            assert!(
                text.contains("auth") || text.contains("401") || text.contains("credential"),
                "{text}"
            );
        }
    }
    cli(&config, &["validate", "--format", "json"]);
    cli(&config, &["plan", "--format", "json"]);
    // Text forms too: an operator reads those.
    cli(&config, &["jobs"]);
    cli(&config, &["runs"]);

    // Database and WAL while the daemon holds them, then after a clean stop.
    let db_files = |when: &str| {
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(bytes) = std::fs::read(&p) {
                assert_clean(&format!("{} ({when})", p.display()), &bytes);
            }
        }
    };
    db_files("running");
    store.close().await;
    let ok = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    db_files("stopped");

    let stdout = std::fs::read(&stdout_path).unwrap();
    let stderr = std::fs::read(&stderr_path).unwrap();
    assert!(
        stdout.len() + stderr.len() > 10_000,
        "debug logging produced only {} bytes",
        stdout.len() + stderr.len()
    );
    if json_logs {
        let first = String::from_utf8_lossy(&stdout)
            .lines()
            .chain(String::from_utf8_lossy(&stderr).lines())
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
            .unwrap();
        assert!(first.starts_with('{'), "not JSON logs: {first}");
    }
    // The logs really cover authentication and the restore calls (so their silence about the
    // secrets means something).
    let all = String::from_utf8_lossy(&stdout).to_lowercase()
        + &String::from_utf8_lossy(&stderr).to_lowercase();
    for expected in ["token", "restore", "hy-wrong-password"] {
        assert!(all.contains(expected), "logs never mention {expected}");
    }
    assert_clean("daemon stdout", &stdout);
    assert_clean("daemon stderr", &stderr);

    // Every file the runs wrote: exports, manifests, reports, state.
    let mut files = Vec::new();
    files_below(&dir.path().join("exports"), &mut files);
    files_below(&dir.path().join("state"), &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "jsonl")),
        "no search report in {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("manifest")),
        "no manifest in {files:?}"
    );
    for f in &files {
        assert_clean(&f.display().to_string(), &std::fs::read(f).unwrap());
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_leaks_with_text_logs() {
    workload(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_leaks_with_json_logs() {
    workload(true).await;
}
