//! The request journal: what the client really sent and what it got back.
//!
//! Every request that reaches the simulator is recorded once it has been answered (or once its
//! connection was deliberately dropped): method, path as sent, the matched vendor path template
//! and its parameters, query, a SHA-256 digest of the raw body, the body parsed as JSON (or form
//! fields) with secret-looking fields redacted, the `Range` header, the response status and the
//! fault that was applied. Tests read it to assert facts such as "exactly one restore POST for
//! this mailbox" or "every search page reused the first `setId`".

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// Replacement text of redacted values.
pub const REDACTED: &str = "[REDACTED]";

/// Field names whose values never enter the journal (compared case-insensitively; any field
/// whose name contains "password" is redacted too).
const SECRET_FIELDS: &[&str] = &[
    "applicationcertificate",
    "refresh_token",
    "access_token",
    "assertion",
    "client_secret",
    "usercode",
];

/// One recorded request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// Arrival order, from 1.
    pub seq: u64,
    /// When the request arrived.
    pub time: DateTime<Utc>,
    /// Upper-case HTTP method.
    pub method: String,
    /// The path exactly as sent (original letter case).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The vendor path template that matched (`None` for an unknown route).
    pub route: Option<String>,
    /// Path parameters by template name (`restoreSessionId`, `mailboxId`, ...), lower-cased.
    pub params: BTreeMap<String, String>,
    /// SHA-256 (hex) of the raw request body; `None` when the body was empty.
    pub body_sha256: Option<String>,
    /// The body parsed as JSON (form fields become an object), secrets redacted.
    pub body: Option<Value>,
    /// The `Range` request header.
    pub range: Option<String>,
    /// Response status; `None` when the connection was dropped before any response.
    pub status: Option<u16>,
    /// The status the simulator decided on (by a fault or by the handler), kept also when a
    /// `loseResponse` fault then dropped the answer or an `executeThenAnswer` fault replaced it:
    /// a 2xx here on a restore POST means the restore was executed, whatever the client saw.
    pub decided_status: Option<u16>,
    /// The injected fault that shaped this exchange, if any.
    pub fault: Option<String>,
    /// Read-only properties of the request body the simulator ignored, as the real server does
    /// (paths like `mailboxes[0]._actions`): a script's habit, never restorectl's.
    pub ignored_read_only: Vec<String>,
}

impl JournalEntry {
    /// Whether this entry is `method` on the vendor template `template` (case-insensitive).
    pub fn is(&self, method: &str, template: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
            && self
                .route
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(template))
    }

    /// A path parameter by template name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A query parameter (name compared case-insensitively).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.into_owned())
    }
}

/// Returns `value` with every secret-looking field replaced by [`REDACTED`].
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret =
                        lower.contains("password") || SECRET_FIELDS.contains(&lower.as_str());
                    let v = if secret && !v.is_null() {
                        Value::String(REDACTED.to_string())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Request counts of the journal, served at [`STATS_PATH`] so that a benchmark can count the
/// API calls of any client, restorectl or a script.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalStats {
    /// Requests recorded.
    pub requests: u64,
    /// Requests per `METHOD template`.
    pub by_route: BTreeMap<String, u64>,
}

/// The simulator's own statistics route: `GET /sim/stats`.
pub(crate) const STATS_PATH: &str = "/sim/stats";

/// The journal store.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: Mutex<Vec<JournalEntry>>,
}

impl Journal {
    pub(crate) fn record(&self, entry: JournalEntry) {
        if let Ok(mut entries) = self.entries.lock() {
            // Entries arrive almost in order (a request is recorded when it is answered):
            // insert in place rather than re-sorting the whole journal on every request.
            let at = entries.partition_point(|e| e.seq < entry.seq);
            entries.insert(at, entry);
        }
    }

    /// Requests answered so far, in all and per `METHOD template` (`METHOD path` for an
    /// unknown route).
    pub(crate) fn stats(&self) -> JournalStats {
        let mut stats = JournalStats::default();
        if let Ok(entries) = self.entries.lock() {
            for e in entries.iter() {
                stats.requests += 1;
                let route = e.route.as_deref().unwrap_or(&e.path);
                *stats
                    .by_route
                    .entry(format!("{} {route}", e.method))
                    .or_default() += 1;
            }
        }
        stats
    }

    pub(crate) fn snapshot(&self) -> Vec<JournalEntry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let body = json!({"username": "u", "password": "p", "grant_type": "password",
            "nested": [{"applicationCertificate": "MII", "applicationCertificatePassword": "x",
            "office365UserPassword": "y", "applicationId": "id"}], "refresh_token": "rt"});
        let r = redact(&body);
        assert_eq!(r["password"], json!(REDACTED));
        assert_eq!(r["grant_type"], json!("password"));
        assert_eq!(r["username"], json!("u"));
        assert_eq!(r["refresh_token"], json!(REDACTED));
        let n = &r["nested"][0];
        assert_eq!(n["applicationCertificate"], json!(REDACTED));
        assert_eq!(n["applicationCertificatePassword"], json!(REDACTED));
        assert_eq!(n["office365UserPassword"], json!(REDACTED));
        assert_eq!(n["applicationId"], json!("id"));
    }
}
