//! Every file in tests/fixtures/invalid/ breaks exactly one rule of SPEC §4.2; its first line
//! says which (`# expect: CODE LINE`). Validated against a test config with one server and an
//! exportRoot that holds a symlink pointing outside it.

use std::collections::BTreeSet;

use crate::common::{expectation, repo, test_config};
use restorectl::config::Config;
use restorectl::jobs::{ErrorCode, ValidationContext, parse_file, scan_paths};

#[test]
fn every_invalid_fixture_reports_its_code_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let ctx = ValidationContext::new(&config);
    let report = scan_paths(&[repo().join("tests/fixtures/invalid")], &ctx);
    assert!(
        report.files.len() >= 40,
        "only {} fixtures",
        report.files.len()
    );
    let mut seen = BTreeSet::new();
    for f in &report.files {
        let (code, line) = expectation(&f.path);
        let errors: Vec<_> = f.all_errors().collect();
        assert_eq!(errors.len(), 1, "{}: {errors:#?}", f.path.display());
        let e = errors[0];
        assert_eq!(e.code.as_str(), code, "{}: {e}", f.path.display());
        assert_eq!(e.line, line, "{}: {e}", f.path.display());
        assert_eq!(e.file, f.path);
        assert!(
            e.column >= 1 && !e.hint.is_empty() && !e.message.is_empty(),
            "{e:?}"
        );
        seen.insert(code);
    }
    // Every code has a fixture, except those that need a special setup (tested below).
    for c in ErrorCode::ALL {
        if ![ErrorCode::Io, ErrorCode::FileTooLarge, ErrorCode::Config].contains(&c) {
            assert!(seen.contains(c.as_str()), "no fixture for {c}");
        }
    }
}

#[test]
fn errors_name_the_job_and_the_field_with_a_precise_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let ctx = ValidationContext::new(&config);
    let check = |file: &str, field: &str, column: usize| {
        let r = parse_file(&repo().join("tests/fixtures/invalid").join(file), &ctx);
        let e = r.all_errors().next().unwrap();
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert_eq!(e.column, column, "{e}");
        // A duplicate key fails before the document's name can be read.
        if e.code != ErrorCode::DuplicateKey {
            assert_eq!(
                e.job.as_deref(),
                Some(file.trim_end_matches(".yaml")),
                "{e}"
            );
        }
    };
    check("bad-cron.yaml", "spec.schedule.cron", 11);
    check("unknown-key-retry.yaml", "spec.retry.attempts", 12);
    check("kind-mismatch.yaml", "spec.export", 3);
    check("duplicate-key.yaml", "spec.schedule.cron", 5);
    check("bad-selector-id.yaml", "spec.mailboxes[0]", 7);
    check(
        "plain-secret.yaml",
        "spec.restore.credentials.user.password",
        19,
    );
}

#[test]
fn duplicate_names_point_at_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let report = scan_paths(
        &[repo().join("tests/fixtures/invalid/duplicate-name")],
        &ValidationContext::new(&config),
    );
    let errors: Vec<_> = report.errors().collect();
    assert_eq!(errors.len(), 2);
    assert!(errors[0].message.contains("second.yaml:6"), "{}", errors[0]);
    assert!(errors[1].message.contains("first.yaml:6"), "{}", errors[1]);
    assert_eq!(report.jobs().count(), 0);
    // Each file alone is valid: the error comes from the pair.
    let one = scan_paths(
        &[repo().join("tests/fixtures/invalid/duplicate-name/first.yaml")],
        &ValidationContext::new(&config),
    );
    assert!(one.is_valid(), "{:?}", one.errors().collect::<Vec<_>>());
}

#[test]
fn the_symlink_fixture_is_fine_without_the_symlink() {
    // Proves that the symlink, not the template, makes path-escape-symlink.yaml invalid.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("exports/escape")).unwrap();
    let text = format!(
        "exportRoot: {}\nservers:\n  primary: {{ url: https://x.test, username: u, password: {{ env: P }} }}\n",
        dir.path().join("exports").display()
    );
    let config = Config::from_yaml(&text, &dir.path().join("restorectl.yaml")).unwrap();
    let r = parse_file(
        &repo().join("tests/fixtures/invalid/path-escape-symlink.yaml"),
        &ValidationContext::new(&config),
    );
    assert!(r.is_valid(), "{:?}", r.all_errors().collect::<Vec<_>>());
}

#[test]
fn unreadable_and_huge_files_are_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let ctx = ValidationContext::new(&config);
    let huge = dir.path().join("huge.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&huge, line.repeat((5 << 20) / line.len())).unwrap();
    let missing = dir.path().join("missing.yaml");
    let report = scan_paths(&[huge.clone(), missing.clone()], &ctx);
    let errors: Vec<_> = report.errors().collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let by_file = |p: &std::path::Path| errors.iter().find(|e| e.file == p).unwrap();
    assert_eq!(by_file(&huge).code, ErrorCode::FileTooLarge);
    assert_eq!(by_file(&missing).code, ErrorCode::Io);
    assert_eq!((by_file(&huge).line, by_file(&huge).column), (1, 1));
}
