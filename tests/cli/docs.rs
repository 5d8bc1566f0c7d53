//! docs/job-files.md documents every validation error code (they are part of the contract).

use restorectl::jobs::ErrorCode;

#[test]
fn every_error_code_is_documented() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/job-files.md")).unwrap();
    for code in ErrorCode::ALL {
        assert!(
            docs.contains(&format!("| `{code}` |")),
            "docs/job-files.md lacks a row for `{code}`"
        );
    }
}
