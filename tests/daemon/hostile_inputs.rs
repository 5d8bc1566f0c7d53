//! Hostile job files (issue 8): the committed corpus in `tests/fixtures/hostile/` (written by
//! its `generate.py`) plus inputs made at run time because they are large or cannot live in
//! git comfortably (10 MB files, invalid UTF-8, raw NUL bytes, UTF-16, FIFOs, symlink loops).
//!
//! Each one is fed to the real `restorectl validate` with a timeout: exit 1, a located error
//! (`FILE:LINE:COLUMN: error[…]`) naming that file, no panic. The same files are then dropped
//! into the job directory of a running daemon next to valid jobs: the daemon stays up, records
//! every hostile file as invalid with located errors, and the valid jobs stay loaded, scheduled
//! and runnable against the in-process simulator.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemon_support::{Site, bin, export_job, open_when_ready};
use restorectl::store::{JobState, NewRequest, RunFilter, RunState};

/// Bounds a hang only, not speed: the debug binary took 55 s over the 4 MB flow list with the load
/// average at 8 (time grows linearly with the size), so the bound leaves room for a busy host.
/// A file that never finishes is the bug this catches; parse speed belongs to benchmarks.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(300);

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile")
}

/// The committed corpus, sorted.
fn committed() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

const VALID_HEAD: &str = "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata:\n  name: ";
const VALID_TAIL: &str = "\nspec:\n  organization: contoso.onmicrosoft.com\n  mailboxes: [alice@contoso.com]\n  export:\n    path: \"{job}/{mailbox}.pst\"\n";

/// Writes the run-time part of the corpus into `dir` and returns the paths that must each be
/// reported with a located error. Also creates a symlink loop, a self-referencing directory
/// link and a dangling link, which must not hang or crash the walk.
fn write_generated(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        out.push(p);
    };
    // 10 MB: well over the size limit, in three shapes.
    put("gen-10mb-spaces.yaml", vec![b' '; 10 << 20]);
    let mut big = format!("{VALID_HEAD}big{VALID_TAIL}").into_bytes();
    big.resize(10 << 20, b'#');
    put("gen-10mb-after-valid-job.yaml", big);
    put(
        "gen-10mb-one-line.yaml",
        format!("a: {}\n", "x".repeat(10 << 20)).into_bytes(),
    );
    // Just under the limit: one huge scalar and a long flow sequence must be parsed quickly.
    put(
        "gen-4mb-string-name.yaml",
        format!("{VALID_HEAD}{}{VALID_TAIL}", "n".repeat((4 << 20) - 300)).into_bytes(),
    );
    put(
        "gen-4mb-flow-list.yaml",
        format!(
            "{VALID_HEAD}x\nspec:\n  mailboxes: [{}]\n",
            "a,".repeat(((4 << 20) - 200) / 2)
        )
        .into_bytes(),
    );
    // Deep block nesting (quadratic in size, so generated).
    put(
        "gen-deep-block-nesting.yaml",
        ("a:\n".to_string()
            + &(1..1400)
                .map(|i| format!("{}b:\n", " ".repeat(i)))
                .collect::<String>())
            .into_bytes(),
    );
    // Invalid UTF-8 in several places and forms.
    let valid = format!("{VALID_HEAD}utf{VALID_TAIL}").into_bytes();
    for (name, bad) in [
        ("gen-utf8-ff.yaml", &b"\xff"[..]),
        ("gen-utf8-overlong-slash.yaml", &b"\xc0\xaf"[..]),
        ("gen-utf8-surrogate.yaml", &b"\xed\xa0\x80"[..]),
        ("gen-utf8-truncated.yaml", &b"\xe2\x82"[..]),
        ("gen-utf8-latin1-umlaut.yaml", &b"M\xfcller"[..]),
    ] {
        let mut b = valid.clone();
        let at = b.len() / 2;
        b.splice(at..at, bad.iter().copied());
        put(name, b);
    }
    let mut tail = valid.clone();
    tail.push(0xff);
    put("gen-utf8-last-byte.yaml", tail);
    // Raw NUL bytes: at the start, in a key, in a value, alone.
    put("gen-nul-only.yaml", vec![0; 64]);
    put(
        "gen-nul-in-name.yaml",
        format!("{VALID_HEAD}a\0b{VALID_TAIL}").into_bytes(),
    );
    put(
        "gen-nul-in-key.yaml",
        format!("{VALID_HEAD}n{VALID_TAIL}  sus\0pend: true\n").into_bytes(),
    );
    let mut nul_first = vec![0u8];
    nul_first.extend_from_slice(&valid);
    put("gen-nul-first.yaml", nul_first);
    // UTF-16 with its BOM (a Windows editor's "Unicode"), and UTF-32.
    let mut utf16 = vec![0xff, 0xfe];
    for u in format!("{VALID_HEAD}u16{VALID_TAIL}").encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    put("gen-utf16le-bom.yaml", utf16);
    let mut utf32 = vec![0, 0, 0xfe, 0xff];
    for c in format!("{VALID_HEAD}u32{VALID_TAIL}").chars() {
        utf32.extend_from_slice(&(c as u32).to_be_bytes());
    }
    put("gen-utf32be-bom.yaml", utf32);
    // A UTF-8 BOM followed by garbage, and a BOM alone followed by NUL.
    put("gen-bom-nul.yaml", b"\xef\xbb\xbf\0".to_vec());

    // Not regular files: a FIFO (opening it would block forever), a directory loop through a
    // symlink, a file symlink loop, a dangling link.
    let fifo = dir.join("gen-fifo.yaml");
    let ok = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    out.push(fifo);
    let a = dir.join("gen-loop-a.yaml");
    let b = dir.join("gen-loop-b.yaml");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    out.push(a);
    out.push(b);
    let dangling = dir.join("gen-dangling.yaml");
    std::os::unix::fs::symlink(dir.join("nowhere.yaml"), &dangling).unwrap();
    out.push(dangling);
    std::fs::create_dir_all(dir.join("gen-loop-dir")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("gen-loop-dir/up")).unwrap();
    std::os::unix::fs::symlink(".", dir.join("gen-loop-dir/self")).unwrap();
    out
}

/// The validation config: one server `primary`, an exportRoot in `dir`.
fn write_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("exports")).unwrap();
    let path = dir.join("restorectl.yaml");
    std::fs::write(
        &path,
        "exportRoot: exports\ntimezone: UTC\nservers:\n  primary:\n    url: https://vb365.test:4443\n    username: CONTOSO\\svc\n    password: { env: UNUSED }\n",
    )
    .unwrap();
    path
}

/// `restorectl validate FILE` with a timeout: exit 1 and a located error naming the file.
fn assert_rejected(config: &Path, file: &Path) -> Result<(), String> {
    let out = assert_cmd::Command::new(bin())
        .arg("--config")
        .arg(config)
        .arg("validate")
        .arg(file)
        .env("RUST_BACKTRACE", "0")
        .timeout(VALIDATE_TIMEOUT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(1) || stderr.contains("panicked") {
        return Err(format!(
            "{}: exit {:?}\nstdout:\n{}\nstderr:\n{stderr}",
            file.display(),
            out.status,
            truncate(&stdout)
        ));
    }
    let prefix = format!("{}:", file.display());
    let located = stdout.lines().any(|l| {
        l.strip_prefix(&prefix).is_some_and(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().and_then(|s| s.parse::<usize>().ok());
            let col = parts.next().and_then(|s| s.parse::<usize>().ok());
            let tail = parts.next().unwrap_or("");
            line.is_some_and(|n| n >= 1)
                && col.is_some_and(|n| n >= 1)
                && tail.starts_with(" error[")
        })
    });
    if !located {
        return Err(format!(
            "{}: no located error\n{}",
            file.display(),
            truncate(&stdout)
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(4000).collect()
}

/// Runs `check` over `files` on a few threads (each check is a process) and fails with every
/// failure listed.
fn parallel(files: &[PathBuf], check: impl Fn(&Path) -> Result<(), String> + Sync) {
    let chunks: Vec<&[PathBuf]> = files.chunks(files.len().div_ceil(4)).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let check = &check;
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|f| check(f).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} files:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_committed_hostile_file_is_rejected_with_a_located_error() {
    let files = committed();
    assert!(files.len() >= 100, "only {} hostile fixtures", files.len());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    parallel(&files, |f| assert_rejected(&config, f));
}

#[test]
fn generated_hostile_files_are_rejected_with_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let files = write_generated(&jobs);
    parallel(&files, |f| assert_rejected(&config, f));

    // The whole directory at once, loops included: terminates, exit 1, every file located.
    let out = assert_cmd::Command::new(bin())
        .arg("--config")
        .arg(&config)
        .args(["validate", "--format", "json"])
        .arg(&jobs)
        .timeout(VALIDATE_TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for f in &files {
        let located = report["errors"].as_array().unwrap().iter().any(|e| {
            e["file"].as_str() == f.to_str() && e["line"].as_u64() >= Some(1) && {
                e["column"].as_u64() >= Some(1)
            }
        });
        assert!(located, "{}: not reported", f.display());
    }
}

/// A job file whose name is not valid UTF-8 is still a job file: skipping it silently would
/// hide a job from the operator.
#[test]
fn a_job_file_with_a_non_utf8_name_is_reported() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad-\xff-name.yaml");
    std::fs::write(jobs.join(name), format!("{VALID_HEAD}x{VALID_TAIL}")).unwrap();
    let out = assert_cmd::Command::new(bin())
        .arg("--config")
        .arg(&config)
        .args(["validate", "--format", "json"])
        .arg(&jobs)
        .timeout(VALIDATE_TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report:#}");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid UTF-8"),
        "{report:#}"
    );
    assert_eq!(errors[0]["line"].as_u64(), Some(1));
}

/// The hostile corpus (committed and generated) in the job directory of a running daemon, next
/// to two valid jobs: the daemon does not crash or hang, every hostile file is recorded invalid
/// with located errors (store and `jobs --json`), and the valid jobs stay active, scheduled and
/// runnable against the simulator.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_survives_the_corpus_and_keeps_running_valid_jobs() {
    let sim = restorectl::sim::Simulator::start(
        restorectl::sim::SimConfig {
            restore_delay: Duration::from_millis(50),
            export_build_delay: Duration::from_millis(20),
            export_default_size: 8 * 1024,
            ..restorectl::sim::SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let site = Site::new(&sim.base_url(), "off");
    let jobs = site.path("jobs");
    site.write_job(
        "good/scheduled.yaml",
        &export_job(
            "good-scheduled",
            Some("{ cron: \"0 3 * * *\" }"),
            "  archives: exclude\n",
        ),
    );
    site.write_job(
        "good/oneshot.yaml",
        &export_job("good-oneshot", None, "  archives: exclude\n"),
    );
    // Valid, but at the edge: the largest runTimeout the parser accepts (u64::MAX seconds)
    // must not break the deadline arithmetic of the run.
    site.write_job(
        "good/huge-timeout.yaml",
        &export_job(
            "good-huge-timeout",
            None,
            "  archives: exclude\n  runTimeout: 18446744073709551615s\n",
        ),
    );
    let hostile = jobs.join("hostile");
    std::fs::create_dir_all(&hostile).unwrap();
    let mut files = Vec::new();
    for f in committed() {
        let to = hostile.join(f.file_name().unwrap());
        std::fs::copy(&f, &to).unwrap();
        files.push(to);
    }
    files.extend(write_generated(&hostile));
    // A name that is not UTF-8: recorded under its lossy name, the daemon carries on.
    {
        use std::os::unix::ffi::OsStrExt;
        let raw = hostile.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name.yaml"));
        std::fs::write(&raw, export_job("non-utf8-name", None, "")).unwrap();
        files.push(hostile.join("bad-\u{fffd}-name.yaml"));
    }

    // Logs go to a file: the corpus makes the daemon log a lot (20 KB job names), more than a
    // pipe nobody drains can hold.
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("daemon.log");
    let mut daemon = KillOnDrop(
        Command::new(bin())
            .args(["daemon", "--config"])
            .arg(site.config_path())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_tail = || {
        let text = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_string()
    };
    let store = open_when_ready(&site).await;
    // Parsing the 4 MB files takes a while in a debug build: a longer bound than PATIENCE.
    let start = std::time::Instant::now();
    let recorded = loop {
        let recorded = store.list_job_files().await.unwrap();
        if recorded.len() > files.len() {
            break recorded;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "only {} of {} files recorded",
            recorded.len(),
            files.len() + 3
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for f in &files {
        let rec = recorded
            .iter()
            .find(|r| Path::new(&r.path) == f.as_path())
            .unwrap_or_else(|| panic!("{} not recorded", f.display()));
        assert!(!rec.valid, "{} recorded valid", f.display());
    }

    for name in ["good-scheduled", "good-oneshot", "good-huge-timeout"] {
        let job = store.get_job(name).await.unwrap();
        assert_eq!(job.state, JobState::Active, "{name}: {}", job.errors);
    }
    let start = std::time::Instant::now();
    while store
        .get_job("good-scheduled")
        .await
        .unwrap()
        .next_fire_at
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "good-scheduled never scheduled; daemon log tail:\n{}",
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `jobs --json` lists every hostile file with located errors.
    let out = Command::new(bin())
        .arg("--config")
        .arg(site.config_path())
        .args(["jobs", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("jobs --json: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    let text = listed.to_string();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            text.contains(&*name),
            "{name} missing from jobs --json: {}",
            truncate(&text)
        );
    }

    // The one-shot valid job runs on load and a manual run of the scheduled one succeeds,
    // both against the simulator.
    store
        .insert_request(
            &NewRequest::Run {
                job: "good-scheduled",
            },
            None,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let start = std::time::Instant::now();
    for job in ["good-oneshot", "good-scheduled", "good-huge-timeout"] {
        loop {
            let runs = store
                .list_runs(&RunFilter {
                    job: Some(job),
                    ..RunFilter::default()
                })
                .await
                .unwrap();
            if runs.iter().any(|r| r.state == RunState::Succeeded) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{job} did not succeed: {runs:?}\ndaemon log tail:\n{}",
                log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let ok = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = daemon.0.wait().unwrap();
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
    assert!(status.success(), "{status:?}\n{}", log_tail());
    assert!(!log.contains("panicked"), "{}", log_tail());
    sim.shutdown().await;
}

/// A child process killed when the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
