//! The config file as written: serde shapes with `deny_unknown_fields` (so a misspelt key fails
//! with FILE:LINE:COLUMN), and reading YAML text into them with syntax errors that never quote a
//! value. [`super::validate`] turns them into the [`super::Config`]; nothing else reads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::LogFormat;
use super::error::ConfigError;
use super::notifications::RawNotifications;
use super::retry::RetrySpec;
use super::secrets::SecretRef;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) jobs_dir: Option<PathBuf>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) database: Option<String>,
    pub(super) database_password: Option<SecretRef>,
    pub(super) database_ca_file: Option<PathBuf>,
    pub(super) export_root: Option<PathBuf>,
    pub(super) secrets_dir: Option<PathBuf>,
    pub(super) listen: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) log: Option<RawLog>,
    #[serde(default)]
    pub(super) servers: BTreeMap<String, RawServer>,
    pub(super) defaults: Option<RawDefaults>,
    pub(super) step_parallelism: Option<u32>,
    pub(super) page_size: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub(super) shutdown_timeout: Option<Duration>,
    pub(super) downloads: Option<RawDownloads>,
    pub(super) watch: Option<RawWatch>,
    pub(super) engine: Option<RawEngine>,
    pub(super) replica_name: Option<String>,
    pub(super) notifications: Option<RawNotifications>,
    pub(super) history: Option<RawHistory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawHistory {
    #[serde(default, with = "humantime_serde")]
    pub(super) keep_for: Option<Duration>,
    pub(super) keep_runs: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawEngine {
    #[serde(default, with = "humantime_serde")]
    pub(super) poll_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) reconcile_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) inline_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) lease: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) url: String,
    pub(super) username: String,
    pub(super) password: SecretRef,
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) insecure_skip_tls_verify: bool,
    pub(super) max_concurrent_sessions: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub(super) request_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) retry: Option<RetrySpec>,
    #[serde(default, with = "humantime_serde")]
    pub(super) run_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawDownloads {
    #[serde(default, with = "humantime_serde")]
    pub(super) first_byte_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) idle_read_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawWatch {
    #[serde(default, with = "humantime_serde")]
    pub(super) rescan_interval: Option<Duration>,
    #[serde(default)]
    pub(super) poll: bool,
}

/// Parses config text read from `path` (named in syntax errors). Empty text is the empty config.
pub(super) fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: shorten_unknown_field(&hide_string_values(&e.to_string())),
            }
        })?
    };
    Ok(raw)
}

/// Replaces the quoted values in a serde message (`invalid type: string "…", expected …`)
/// with `string (value hidden)`. A misindented `password:` line makes serde quote the value it
/// did not expect, and that value may be a secret; the line and column still locate it.
fn hide_string_values(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        out.push_str("string (value hidden)");
        // Skip the Debug-escaped value up to its closing, unescaped quote.
        let mut chars = rest[at + MARK.len()..].char_indices();
        let mut end = rest.len() - at - MARK.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[at + MARK.len() + end..];
    }
    out.push_str(rest);
    out
}

/// The longest unknown key an error repeats in full.
const SHOWN_KEY_MAX: usize = 40;

/// Shortens the key of serde's `unknown field `…`, expected …` to its first word (at most
/// [`SHOWN_KEY_MAX`] characters, then `…`). A real key is one short word; a "key" with spaces,
/// colons or line breaks is text the YAML parser swallowed (a misplaced quote or backtick turns
/// the following lines into one plain-scalar key), and that text may hold a secret.
pub(crate) fn shorten_unknown_field(message: &str) -> String {
    const MARK: &str = "unknown field `";
    let Some(at) = message.find(MARK) else {
        return message.to_string();
    };
    let start = at + MARK.len();
    let rest = &message[start..];
    let end = ["`, expected", "`, there are no fields"]
        .iter()
        .filter_map(|m| rest.rfind(m))
        .min()
        .or_else(|| rest.rfind('`'))
        .unwrap_or(rest.len());
    let key = &rest[..end];
    let word: String = key
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ':')
        .take(SHOWN_KEY_MAX)
        .collect();
    if word.len() == key.len() {
        return message.to_string();
    }
    format!("{}{word}…{}", &message[..start], &rest[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quoted_value_is_hidden() {
        assert_eq!(
            hide_string_values(r#"a: invalid type: string "x\"y", expected b; string "z""#),
            "a: invalid type: string (value hidden), expected b; string (value hidden)"
        );
    }

    #[test]
    fn a_swallowed_key_is_shown_by_its_first_word_only() {
        let message =
            "unknown field ``k@\\=\nbogus: 1 password: Plain-S3cret {r`, expected one of `a`, `b`";
        let shown = shorten_unknown_field(message);
        assert_eq!(shown, "unknown field ``k@\\=…`, expected one of `a`, `b`");
        let long = format!("unknown field `{}`, expected `a`", "x".repeat(80));
        assert_eq!(
            shorten_unknown_field(&long),
            format!("unknown field `{}…`, expected `a`", "x".repeat(40))
        );
        let plain = "unknown field `bogusKey`, expected one of `a`";
        assert_eq!(shorten_unknown_field(plain), plain);
        assert_eq!(shorten_unknown_field("other"), "other");
    }
}
