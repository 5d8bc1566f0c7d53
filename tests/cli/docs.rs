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

/// The table "Every vendor request property" names every property of every JSON request body
/// the client sends (issue 16), each in backticks, under its schema's name.
#[test]
fn every_vendor_request_property_is_mapped_in_the_job_file_docs() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/job-files.md")).unwrap();
    let start = docs
        .find("## Every vendor request property")
        .expect("the section exists");
    let section = &docs[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let doc: serde_json::Value = serde_json::from_str(restorectl::sim::schema::OPENAPI_V8_SUBSET)
        .expect("the embedded vendor document");
    let schemas: std::collections::BTreeSet<&str> = restorectl::vb365::Operation::ALL
        .iter()
        .filter_map(|op| op.request_schema())
        .collect();
    assert!(schemas.len() >= 7, "{schemas:?}");
    for name in schemas {
        assert!(
            section.contains(&format!("`{name}`")),
            "the table does not name {name}"
        );
        let props = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has properties"));
        for prop in props.keys() {
            assert!(
                section.contains(&format!("`{prop}`")),
                "{name}.{prop} is not mapped in docs/job-files.md"
            );
        }
    }
}
