//! `restorectl schema`: prints the JSON Schema (draft 7) of one job document, for editors'
//! YAML extensions (`# yaml-language-server: $schema=...`) and CI checks.

use std::io::Write;

use anyhow::Context;

use super::Outcome;

/// Prints the schema to stdout.
pub fn run() -> anyhow::Result<Outcome> {
    let schema = crate::jobs::json_schema();
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &schema).context("writing the schema")?;
    writeln!(out).context("writing the schema")?;
    Ok(Outcome::Ok)
}
