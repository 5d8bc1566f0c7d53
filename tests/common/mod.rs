//! Helpers shared by the integration tests: job-file fixtures here, the operator-command
//! installation and store history in [`ops`].
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use restorectl::config::Config;

pub mod ops;

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
