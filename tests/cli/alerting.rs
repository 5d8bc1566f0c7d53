//! The alerting assets in `deploy/` are part of the product: `promtool check rules` accepts the
//! Prometheus rules, `promtool test rules` passes their unit tests (series in
//! `deploy/prometheus/alerts.test.yaml`), every alert is unit-tested there, and the Grafana
//! dashboard is well-formed (unique panel ids, every query on the templated data source).
//! Under `CI=true` a missing promtool fails (.ci/run installs Debian's `prometheus`).
//! That every metric they name is one the daemon exports is checked against a real daemon in
//! tests/daemon/metrics_exported.rs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs `promtool ARGS` in the repository; `None` (after [`crate::common::tool_missing`]) when
/// promtool is not installed.
fn promtool(args: &[&str], test: &str) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::common::tool_missing("promtool", test);
            None
        }
        Err(e) => panic!("promtool: {e}"),
    }
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_check_rules_accepts_the_alerts() {
    let Some(out) = promtool(
        &["check", "rules", "deploy/prometheus/alerts.yaml"],
        "the rule check",
    ) else {
        return;
    };
    assert_success(&out, "promtool check rules");
}

#[test]
fn promtool_test_rules_passes_the_alert_unit_tests() {
    let Some(out) = promtool(
        &["test", "rules", "deploy/prometheus/alerts.test.yaml"],
        "the rule unit tests",
    ) else {
        return;
    };
    assert_success(&out, "promtool test rules");
}

fn alert_names() -> BTreeSet<String> {
    let rules: Value = serde_yaml::from_str(&read("deploy/prometheus/alerts.yaml")).unwrap();
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().expect("only alerting rules");
            assert!(names.insert(name.to_string()), "alert {name} twice");
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning")),
                "{name}: severity {severity:?}"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: no summary"
            );
        }
    }
    names
}

#[test]
fn every_alert_has_a_firing_unit_test() {
    let tests: Value = serde_yaml::from_str(&read("deploy/prometheus/alerts.test.yaml")).unwrap();
    let mut fired = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().unwrap() {
            if case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                fired.insert(case["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    let missing: Vec<_> = alert_names().difference(&fired).cloned().collect();
    assert!(missing.is_empty(), "alerts never seen firing: {missing:?}");
}

#[test]
fn the_issue_s_alerts_are_there() {
    let names = alert_names();
    for name in [
        "RestorectlDown",
        "RestorectlNotReady",
        "RestorectlRunFailed",
        "RestorectlRunNeedsAttention",
        "RestorectlFireMissed",
        "RestorectlJobSuccessOverdue",
        "RestorectlDownloadStalled",
        "RestorectlNotificationsFailing",
    ] {
        assert!(names.contains(name), "{name} missing");
    }
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/restorectl.json")).unwrap();
    assert_eq!(dash["uid"], "restorectl");
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{panel}");
        titles.push(panel["title"].as_str().unwrap().to_string());
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            // Every query is for this installation's restorectl targets only.
            assert!(expr.contains("job=\"restorectl\""), "{expr}");
        }
    }
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "instance", "restorectl_job"]);
    // What the issue asks the dashboard to show.
    for want in [
        "Runs by state (now)",
        "Last success per job",
        "Next fires",
        "Download throughput",
        "In-doubt steps: runs needing attention",
        "Notification backlog by target",
    ] {
        assert!(
            titles.iter().any(|t| t == want),
            "{want} missing: {titles:?}"
        );
    }
}
