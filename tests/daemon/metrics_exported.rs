//! The metric names the alerting rules (`deploy/prometheus/alerts.yaml`) and the Grafana
//! dashboard (`deploy/grafana/restorectl.json`) use are ones the daemon really exports, read
//! from the `/metrics` of a real `restorectl daemon --dev` once its example jobs have run; and
//! run durations are Prometheus histograms (`_bucket` lines with the minutes-to-hours buckets),
//! never summaries.
//!
//! A few series only appear on events the dev demo does not produce (a failed step, a
//! notification target); those are listed in [`NOT_IN_THE_DEMO`] with the reason, and must be in
//! the daemon's own list of series ([`SERIES`]) all the same.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use restorectl::daemon::metrics::{Kind, SERIES, Series};

/// Series that a demo run does not show, and why.
const NOT_IN_THE_DEMO: &[(&str, &str)] = &[
    (
        "restorectl_step_failures_total",
        "the demo's steps all succeed",
    ),
    (
        "restorectl_notifications_delivered_total",
        "the demo config has no notification target",
    ),
    (
        "restorectl_notifications_failed_total",
        "the demo config has no notification target",
    ),
    (
        "restorectl_notifications_pending",
        "the demo config has no notification target",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `restorectl_*` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("restorectl_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // `restorectl_job` is the dashboard's variable name, not a metric.
        let preceded_by_dollar = at > 0 && rest.as_bytes()[at - 1] == b'$';
        if !preceded_by_dollar {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The metric names the rules' expressions and the dashboard's queries use.
fn names_used() -> BTreeSet<String> {
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let mut used = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            used.extend(metric_names(rule["expr"].as_str().unwrap()));
        }
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/restorectl.json")).unwrap(),
    )
    .unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    for variable in dash["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            used.extend(metric_names(query));
        }
    }
    used.remove("restorectl_job");
    used
}

/// The sample names of a Prometheus text exposition (`_bucket`, `_sum`, `_count` included).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// The series a sample name belongs to (a histogram's `_bucket`/`_sum`/`_count` → the histogram).
fn series_of(sample: &str) -> Option<&'static Series> {
    SERIES.iter().find(|s| {
        sample == s.name
            || (s.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| sample.strip_suffix(suffix) == Some(s.name)))
    })
}

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

/// Stops the dev daemon however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(rt: &tokio::runtime::Runtime, url: &str) -> Option<String> {
    rt.block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

/// Starts `restorectl daemon --dev` in a copy of `jobs.example/` (listening on a free port) and
/// returns its `/metrics` once the example runs finished and the per-job series are published.
fn dev_daemon_metrics() -> String {
    let checkout = tempfile::tempdir().unwrap();
    let examples = checkout.path().join("jobs.example");
    copy_dir(&repo().join("jobs.example"), &examples);
    let config = examples.join("restorectl.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("listen: 127.0.0.1:9464"), "{text}");
    std::fs::write(
        &config,
        text.replace("listen: 127.0.0.1:9464", "listen: 127.0.0.1:0"),
    )
    .unwrap();
    // Output goes to files, not pipes: a pipe nobody reads while the daemon runs fills up.
    let out_path = checkout.path().join("stdout");
    let err_path = checkout.path().join("stderr");
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_restorectl"))
            .args(["daemon", "--dev"])
            .current_dir(checkout.path())
            .env_remove("RESTORECTL_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(120) {
        if let Ok(Some(status)) = child.0.try_wait() {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("the dev daemon exited early with {status}: {err}");
        }
        let banner = std::fs::read_to_string(&out_path).unwrap_or_default();
        let url = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://") && w.ends_with("/metrics"));
        if let Some(text) = url.and_then(|u| get(&rt, u)) {
            let names = sample_names(&text);
            if [
                "restorectl_run_duration_seconds_bucket",
                "restorectl_job_last_success_timestamp_seconds",
                "restorectl_job_max_success_age_seconds",
            ]
            .iter()
            .all(|n| names.contains(*n))
            {
                eprintln!(
                    "dev daemon: per-job series after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return text;
            }
            last = text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    panic!("no run durations and per-job series in /metrics within 120 s:\n{last}\nstderr:\n{err}");
}

#[test]
fn every_metric_the_alerts_and_dashboard_use_is_exported_and_durations_are_histograms() {
    let exposition = dev_daemon_metrics();
    let exported = sample_names(&exposition);

    // The daemon's list of series is honest: everything it exports is in it.
    for sample in exported.iter().filter(|s| s.starts_with("restorectl_")) {
        assert!(
            series_of(sample).is_some(),
            "{sample} is exported but not in daemon::metrics::SERIES"
        );
    }
    for (name, why) in NOT_IN_THE_DEMO {
        assert!(
            SERIES.iter().any(|s| s.name == *name),
            "{name} ({why}) is not a series of the daemon"
        );
    }

    let used = names_used();
    assert!(used.len() >= 10, "{used:?}");
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(*n) && !NOT_IN_THE_DEMO.iter().any(|(m, _)| m == n))
        .collect();
    assert!(
        unknown.is_empty(),
        "the rules or the dashboard use series the daemon does not export: {unknown:?}\n\
         exported: {exported:?}"
    );

    // Durations: histogram buckets from 10 s to a day, no summary quantiles.
    assert!(
        exposition.contains("# TYPE restorectl_run_duration_seconds histogram"),
        "{exposition}"
    );
    let buckets: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| l.starts_with("restorectl_run_duration_seconds_bucket{"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    for le in ["10", "60", "600", "3600", "86400", "+Inf"] {
        assert!(buckets.contains(le), "bucket le={le} missing: {buckets:?}");
    }
    assert!(
        !exposition.contains("quantile="),
        "a summary is exported: {exposition}"
    );
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        "time() - max without (instance) (restorectl_job_next_fire_timestamp_seconds{job=\"restorectl\", exported_job=~\"$restorectl_job\"}) > 600",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["restorectl_job_next_fire_timestamp_seconds"]
    );
}
