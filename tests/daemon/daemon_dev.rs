//! `restorectl daemon --dev` (SPEC §6.1), the README's first command, as a newcomer runs it: from a
//! checkout holding `jobs.example/`, with nothing else prepared. The one-shot example jobs must
//! run against the built-in simulator and publish files (a PST with its manifest and a search
//! report) under `.restorectl-dev/exports/`, and the banner must say where to look.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn dev_daemon_runs_the_one_shot_examples_and_publishes_files() {
    let checkout = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs.example"),
        &checkout.path().join("jobs.example"),
    );
    // Output goes to files, not pipes: a pipe nobody reads while the daemon runs fills up.
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_restorectl"))
        .args(["daemon", "--dev"])
        .current_dir(checkout.path())
        .env_remove("RESTORECTL_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();

    let exports = checkout.path().join(".restorectl-dev/exports");
    let started = Instant::now();
    let (mut pst, mut manifest, mut report) = (false, false, false);
    while started.elapsed() < Duration::from_secs(120) && !(pst && manifest && report) {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("the dev daemon exited early with {status}: {err}");
        }
        let files = files_under(&exports);
        let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        pst = files.iter().any(|p| name(p).ends_with(".pst"));
        manifest = files
            .iter()
            .any(|p| name(p).ends_with(".pst.manifest.json"));
        report = files
            .iter()
            .any(|p| name(p).ends_with(".jsonl") || name(p).ends_with(".csv"));
        std::thread::sleep(Duration::from_millis(250));
    }
    // Figure, not an assertion: how long a newcomer waits for the first results.
    eprintln!(
        "dev daemon: results after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        pst && manifest && report,
        "no published PST + manifest + search report under {}: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        exports.display(),
        files_under(&exports)
    );
    assert!(status.success(), "exit {status:?}: {stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("restorectl dev daemon is ready"), "{all}");
    assert!(all.contains(".restorectl-dev/exports"), "{all}");
    assert!(
        all.contains("restorectl --config jobs.example/restorectl.yaml runs"),
        "{all}"
    );
    // The manifest of every published PST names its checksum.
    for path in files_under(&exports) {
        if path.to_string_lossy().ends_with(".manifest.json") {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(m["sha256"].as_str().map(str::len), Some(64), "{m}");
        }
    }
}
