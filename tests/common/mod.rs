//! Helpers shared by the integration tests: job-file fixtures here, the operator-command
//! installation and store history in [`ops`].
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use restorectl::config::Config;

pub mod ops;
pub mod postgres;

/// An ExportPst job document over alice (the one shape every area's tests use). `schedule` is the
/// YAML of `spec.schedule` (`None`: a one-shot job), `extra` is appended to `spec` (e.g.
/// `  suspend: true\n`), `path` is the export path template.
pub fn export_job_yaml(name: &str, schedule: Option<&str>, extra: &str, path: &str) -> String {
    let schedule = schedule
        .map(|s| format!("  schedule: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: restorectl/v1\nkind: ExportPst\nmetadata:\n  name: {name}\nspec:\n\
         \x20 organization: contoso.onmicrosoft.com\n  mailboxes: [alice@contoso.com]\n\
         {schedule}{extra}  export:\n    path: \"{path}\"\n"
    )
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A daemon config for fixture tests, in `dir`: one server `primary`, exportRoot `dir/exports`
/// holding `escape`, a symlink to `dir/outside` (for the symlink-escape fixture).
pub fn test_config(dir: &Path) -> Config {
    let exports = dir.join("exports");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&exports).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, exports.join("escape")).unwrap();
    let text = format!(
        "exportRoot: {}\ntimezone: UTC\nservers:\n  primary:\n    url: https://vb365.example.test:4443\n    username: CONTOSO\\svc-restore\n    password: {{ secret: vb365-password }}\n",
        exports.display()
    );
    Config::from_yaml(&text, &dir.join("restorectl.yaml")).unwrap()
}

/// The `# expect: CODE LINE` header of a fixture.
pub fn expectation(path: &Path) -> (String, usize) {
    let bytes = std::fs::read(path).unwrap();
    let first = bytes.split(|b| *b == b'\n').next().unwrap();
    let first = std::str::from_utf8(first).unwrap();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{}: no `# expect: CODE LINE` header", path.display()));
    let (code, line) = rest.split_once(' ').unwrap();
    (code.to_string(), line.trim().parse().unwrap())
}

/// Whether the tests run under CI (`CI` set to anything but empty, `0` or `false`): there a
/// tool or server a test needs must be present, and its absence fails the test.
pub fn under_ci() -> bool {
    ci_flag(std::env::var("CI").ok().as_deref())
}

/// The decision behind [`under_ci`], for a given value of `CI`.
pub fn ci_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// A test cannot run because `tool` is missing: under CI that is a failure (the project's own
/// `.ci/run` installs it), elsewhere the test says so on stderr and returns.
pub fn tool_missing(tool: &str, test: &str) {
    assert!(
        !under_ci(),
        "{tool} is not installed, and under CI=true a missing tool fails {test} instead of \
         skipping it (.ci/run installs it)"
    );
    eprintln!("{tool} is not installed: skipping {test} (it would fail under CI=true)");
}

#[test]
fn the_ci_flag_follows_the_usual_values() {
    for on in ["true", "1", "yes", "TRUE"] {
        assert!(ci_flag(Some(on)), "{on}");
    }
    for off in [None, Some(""), Some("0"), Some("false"), Some("False")] {
        assert!(!ci_flag(off), "{off:?}");
    }
}
