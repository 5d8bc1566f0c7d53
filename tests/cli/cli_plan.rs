//! `restorectl plan` through the real binary: a job directory with one added, one changed, one
//! removed and one invalid job compared with a state database that holds what the daemon applied
//! before, and a Europe/Berlin schedule whose next fires cross the March 2026 DST change.
//!
//! The "before" state is recorded the way the daemon records it: the old job files are scanned
//! with the jobs module and each valid job's spec hash and normalised spec go into the store.

use crate::common::ops::{PLAN_CONFIG as CONFIG, berlin_export_job, plan, scenario, write};
use predicates::prelude::*;
use serde_json::Value;

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect()
}

#[test]
fn plan_json_reports_every_category_and_dst_anomalies() {
    let dir = scenario();
    let out = plan(dir.path(), "json").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "an invalid file makes plan exit 1"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["valid"], false);
    assert_eq!(v["now"], "2026-03-27T12:00:00.000Z");
    assert!(v["database"].as_str().unwrap().ends_with("restorectl.db"));
    assert_eq!(names(&v["added"]), ["new-export"]);
    assert_eq!(names(&v["removed"]), ["gone"]);
    assert_eq!(names(&v["unchanged"]), ["autumn", "steady"]);
    assert_eq!(v["summary"]["added"], 1);
    assert_eq!(v["summary"]["changed"], 1);
    assert_eq!(v["summary"]["removed"], 1);
    assert_eq!(v["summary"]["unchanged"], 2);
    assert_eq!(v["summary"]["invalidFiles"], 1);

    let changed = &v["changed"][0];
    assert_eq!(changed["name"], "nightly");
    assert_ne!(changed["specHash"], changed["previousSpecHash"]);
    assert_eq!(
        changed["diff"],
        serde_json::json!([{ "path": "spec.schedule.cron", "before": "0 2 * * *", "after": "30 2 * * *" }])
    );

    let invalid = &v["invalid"][0];
    assert!(invalid["file"].as_str().unwrap().ends_with("legal.yaml"));
    assert_eq!(invalid["jobs"][0]["name"], "legal");
    assert!(invalid["jobs"][0]["keepsVersion"].is_i64(), "{invalid}");
    assert_eq!(invalid["errors"][0]["field"], "spec.schedule.cron");

    // nightly: 30 2 * * * Europe/Berlin from Friday 2026-03-27: Saturday 02:30 CET, Sunday's
    // 02:30 does not exist (moved to 03:00 CEST, flagged), Monday 02:30 CEST.
    let nightly = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "nightly")
        .unwrap();
    assert_eq!(nightly["timezone"], "Europe/Berlin");
    let fires = nightly["fires"].as_array().unwrap();
    let at: Vec<&str> = fires.iter().map(|f| f["at"].as_str().unwrap()).collect();
    assert_eq!(
        at,
        [
            "2026-03-28T01:30:00.000Z",
            "2026-03-29T01:00:00.000Z",
            "2026-03-30T00:30:00.000Z"
        ]
    );
    assert_eq!(fires[0]["dst"], Value::Null);
    assert_eq!(fires[1]["local"], "2026-03-29T03:00:00+02:00");
    assert_eq!(fires[1]["dst"]["kind"], "skipped-hour");
    assert_eq!(fires[1]["dst"]["nominal"], "2026-03-29T02:30:00");
    assert!(
        fires[1]["dst"]["message"]
            .as_str()
            .unwrap()
            .contains("02:30 does not exist on 2026-03-29")
    );
    assert_eq!(fires[2]["dst"], Value::Null);
    // autumn: 30 2 25 10 * fires inside the repeated hour of 2026-10-25, once, first copy (CEST).
    let autumn = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "autumn")
        .unwrap();
    let first = &autumn["fires"][0];
    assert_eq!(first["at"], "2026-10-25T00:30:00.000Z");
    assert_eq!(first["dst"]["kind"], "repeated-hour");
    assert_eq!(first["dst"]["firstCopy"], true);
    assert_eq!(first["dst"]["runsTwice"], false);
    // Invalid jobs and one-shot jobs have no schedule entry.
    assert!(
        v["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "legal")
    );
}

#[test]
fn plan_text_shows_the_diff_and_the_flag_without_colour() {
    let dir = scenario();
    let out = plan(dir.path(), "text").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "{text}");
    assert!(
        text.contains("1 added, 1 changed, 1 removed, 2 unchanged, 1 invalid file(s)"),
        "{text}"
    );
    assert!(text.contains("+ new-export (ExportPst"), "{text}");
    assert!(
        text.contains("spec.schedule.cron: \"0 2 * * *\" → \"30 2 * * *\""),
        "{text}"
    );
    assert!(text.contains("- gone (ExportPst"), "{text}");
    assert!(text.contains("job legal: stored version"), "{text}");
    assert!(
        text.contains("error[bad-cron]") || text.contains("spec.schedule.cron"),
        "{text}"
    );
    assert!(
        text.contains(
            "2026-03-29 03:00 CEST (+02:00)  = 2026-03-29 01:00:00Z  DST: 02:30 does not exist"
        ),
        "{text}"
    );
}

#[test]
fn plan_without_a_database_treats_every_job_as_new_and_exits_0_when_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("restorectl.yaml"), CONFIG).unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    write(
        dir.path(),
        "a.yaml",
        &berlin_export_job("a", Some("30 2 * * *")),
    );
    let out = plan(dir.path(), "json").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["database"], Value::Null);
    assert_eq!(names(&v["added"]), ["a"]);
    assert!(
        !dir.path().join("state/restorectl.db").exists(),
        "plan created a database"
    );
    plan(dir.path(), "text")
        .assert()
        .success()
        .stdout(predicate::str::contains("no state database yet"));
    // A broken config is a configuration error.
    std::fs::write(dir.path().join("restorectl.yaml"), "jobsDir: [\n").unwrap();
    plan(dir.path(), "text").assert().code(78);
    plan(dir.path(), "yaml").assert().code(2);
}
