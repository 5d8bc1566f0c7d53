//! `restorectl validate` and `restorectl schema` through the real binary: output forms and the
//! exit codes of SPEC §6 (0 valid, 1 problems, 2 usage, 78 config error).

use crate::common::repo;
use assert_cmd::Command;
use predicates::prelude::*;

fn restorectl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_restorectl"));
    c.current_dir(repo())
        .env_remove("RESTORECTL_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY");
    c
}

#[test]
fn examples_are_valid_with_one_summary_line_per_file() {
    let out = restorectl()
        .args(["validate", "jobs.example"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("jobs.example/restorectl.yaml: ok, daemon config (1 server: sim)"),
        "{text}"
    );
    assert!(
        text.contains("jobs.example/legal-hold.yaml: ok, 1 job (legal-hold-weekly: ExportPst, weekly 0 2 * * SUN Europe/Berlin)"),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().starts_with("total: 7 files, "),
        "{text}"
    );
    assert!(!text.contains("not checked"), "{text}");
}

#[test]
fn json_output_is_a_stable_object() {
    let out = restorectl()
        .args(["validate", "--format", "json", "jobs.example"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["valid"], true);
    assert_eq!(v["configs"][0]["serversChecked"], true);
    assert_eq!(v["summary"]["errors"], 0);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, v["summary"]["jobs"].as_u64().unwrap());
    let weekly = jobs
        .iter()
        .find(|j| j["name"] == "legal-hold-weekly")
        .unwrap();
    assert_eq!(weekly["kind"], "ExportPst");
    assert_eq!(weekly["server"], "sim");
    assert_eq!(weekly["schedule"]["timezone"], "Europe/Berlin");
    assert_eq!(weekly["schedule"]["concurrencyPolicy"], "Forbid");
    assert_eq!(weekly["specHash"].as_str().unwrap().len(), 64);
    assert!(weekly["schedule"]["nextFire"].is_string());
}

#[test]
fn invalid_files_exit_1_with_located_errors_and_hints() {
    let assert = restorectl()
        .args(["validate", "tests/fixtures/invalid/bad-cron.yaml"])
        .assert()
        .code(1);
    let text = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("tests/fixtures/invalid/bad-cron.yaml: 1 error, 0 jobs"),
        "{text}"
    );
    assert!(
        text.contains("tests/fixtures/invalid/bad-cron.yaml:13:11: error[bad-cron]: job `bad-cron`, field `spec.schedule.cron`: "),
        "{text}"
    );
    assert!(text.contains("\n  hint: write 5 fields"), "{text}");
    assert!(text.contains("server names were not checked"), "{text}");

    let out = restorectl()
        .args(["validate", "--format", "json", "tests/fixtures/invalid"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["valid"], false);
    let e = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == "pst-size-limit")
        .unwrap();
    for key in [
        "file", "line", "column", "code", "job", "field", "message", "hint",
    ] {
        assert!(!e[key].is_null(), "{key} missing in {e}");
    }
}

#[test]
fn usage_errors_exit_2() {
    restorectl()
        .args(["validate", "--format", "xml", "jobs.example"])
        .assert()
        .code(2);
    restorectl().args(["validate", "--bogus"]).assert().code(2);
}

#[test]
fn a_broken_or_missing_explicit_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("restorectl.yaml");
    std::fs::write(
        &broken,
        "jobsDir: jobs\nservers:\n  a:\n    url: https://x\n    usrname: u\n",
    )
    .unwrap();
    restorectl()
        .args(["validate", "--config"])
        .arg(&broken)
        .arg("jobs.example")
        .assert()
        .code(78)
        .stderr(predicate::str::contains(format!("{}:5:", broken.display())));
    restorectl()
        .env("RESTORECTL_CONFIG", &broken)
        .args(["validate", "jobs.example"])
        .assert()
        .code(78);
    restorectl()
        .args(["validate", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .assert()
        .code(78)
        .stderr(predicate::str::contains("missing.yaml"));
}

#[test]
fn an_explicit_config_supplies_jobs_dir_and_servers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::copy(
        repo().join("jobs.example/restore.yaml"),
        dir.path().join("jobs/restore.yaml"),
    )
    .unwrap();
    let config = dir.path().join("daemon.yaml");
    std::fs::write(&config, "jobsDir: jobs\nservers:\n  primary: { url: https://x.test, username: u, password: { env: PW } }\n  dr: { url: https://y.test, username: u, password: { env: PW } }\n").unwrap();
    // Two servers and a job that names none: the job must say which.
    let text = restorectl()
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("error[unknown-server]"), "{text}");
    assert!(text.contains("known servers: dr, primary"), "{text}");
}

#[test]
fn a_broken_directory_config_is_reported_like_a_job_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("restorectl.yaml"), "timezone: Mars/Base\n").unwrap();
    std::fs::copy(
        repo().join("jobs.example/compliance-search.yaml"),
        dir.path().join("search.yaml"),
    )
    .unwrap();
    let out = restorectl()
        .arg("validate")
        .arg(dir.path())
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("restorectl.yaml:1:11: error[config]"),
        "{text}"
    );
    assert!(text.contains("search.yaml: ok, 2 jobs"), "{text}");
}

#[test]
fn schema_prints_the_job_schema() {
    let out = restorectl()
        .arg("schema")
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v, restorectl::jobs::json_schema());
    assert_eq!(v["additionalProperties"], false);
    assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(
        v["required"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("spec"))
    );
    // The vendor's recentItemRestorePeriod orders a restore ("restored first"); it never
    // filters it, and the schema must not say "only".
    let text = String::from_utf8(out).unwrap();
    let at = text
        .find("\"recentItemRestorePeriod\"")
        .expect("documented");
    let doc = &text[at..at + 400];
    assert!(doc.contains("restored first"), "{doc}");
    assert!(!doc.contains("only"), "{doc}");
}

/// `recentItemRestorePeriod: 0` is a value the vendor accepts (int32, no minimum).
#[test]
fn recent_item_restore_period_zero_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bulk.yaml");
    std::fs::write(
        &file,
        "apiVersion: restorectl/v1\nkind: BulkRestore\nmetadata:\n  name: bulk\nspec:\n  organization: contoso.onmicrosoft.com\n  mailboxes: [ { all: true } ]\n  bulkRestore:\n    recentItemRestorePeriod: 0\n    credentials:\n      office365: { userName: a@contoso.com, password: { secret: m365-pass } }\n",
    )
    .unwrap();
    restorectl().arg("validate").arg(&file).assert().code(0);
}
