//! The job fields of SPEC §11 against a config with notification targets: `spec.notify`
//! routes (replacing the defaults), an unknown target and a misplaced `maxRestorePointAge` are
//! located errors, `spec.heartbeat` takes only a secret reference.

use std::path::Path;

use restorectl::config::Config;
use restorectl::jobs::{ValidationContext, parse_str};
use restorectl::store::NotifyEvent;

fn config() -> Config {
    Config::from_yaml(
        "exportRoot: /srv/exports\nservers:\n  primary: { url: https://x.test, username: u, password: { env: P } }\n\
         notifications:\n  targets:\n    ops: { type: webhook, url: { secret: u }, signingKey: { secret: k } }\n    \
         legal: { type: teams, url: { secret: t } }\n  defaults: { targets: [ops] }\n",
        Path::new("/etc/restorectl/restorectl.yaml"),
    )
    .unwrap()
}

fn job(extra: &str) -> String {
    crate::common::export_job_yaml("weekly", None, extra, "{job}/{mailbox}.pst")
}

#[test]
fn notify_heartbeat_and_freshness_fields() {
    let config = config();
    let ctx = ValidationContext::new(&config);
    let text = job(
        "  notify: { targets: [legal], events: [failed, stale] }\n  \
         heartbeat: { url: { secret: weekly-ping } }\n  maxRestorePointAge: 26h\n",
    );
    let report = parse_str(&text, Path::new("weekly.yaml"), &ctx);
    let errors: Vec<String> = report.all_errors().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let parsed = report.jobs().next().unwrap();
    let routing = parsed.notify().unwrap();
    assert_eq!(routing.targets, ["legal"]);
    assert_eq!(routing.events, [NotifyEvent::Failed, NotifyEvent::Stale]);
    assert_eq!(
        config.notifications.routing_for(parsed.notify()).targets,
        ["legal"],
        "spec.notify replaces the defaults"
    );
    assert_eq!(config.notifications.routing_for(None).targets, ["ops"]);
    assert!(parsed.heartbeat().is_some());
    assert_eq!(
        parsed.max_restore_point_age(),
        Some(std::time::Duration::from_secs(26 * 3600))
    );

    let bad = job(
        "  pointInTime: \"24h ago\"\n  notify: { targets: [nobody] }\n  maxRestorePointAge: 26h\n",
    );
    let report = parse_str(&bad, Path::new("bad.yaml"), &ctx);
    let errors: Vec<_> = report.all_errors().collect();
    let notify = errors
        .iter()
        .find(|e| e.field.as_deref() == Some("spec.notify.targets[0]"))
        .expect("an error at the unknown target");
    assert!(notify.message.contains("`nobody`"), "{}", notify.message);
    assert!(notify.line > 1);
    assert!(
        errors
            .iter()
            .any(|e| e.field.as_deref() == Some("spec.maxRestorePointAge")
                && e.message.contains("latest")),
        "{errors:?}"
    );

    let plain = job("  heartbeat: { url: https://hc-ping.com/abc }\n");
    let report = parse_str(&plain, Path::new("plain.yaml"), &ctx);
    let text: Vec<String> = report.all_errors().map(|e| e.to_string()).collect();
    assert!(!text.is_empty(), "a plain URL is not a secret reference");
    assert!(
        text.iter().all(|t| !t.contains("hc-ping.com/abc")),
        "the value is not quoted: {text:?}"
    );
}
