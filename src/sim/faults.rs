//! Fault injection: rules that make chosen calls of chosen endpoints misbehave.
//!
//! A [`FaultRule`] selects requests by method, endpoint kind and/or a path glob, counts the
//! requests it selects (from 1), and applies its [`FaultAction`] to the calls in its range
//! (every call when no range is given). Rules are added at run time through the simulator handle
//! or loaded with the rest of the configuration from a YAML/JSON file (`simulate --config`):
//!
//! ```yaml
//! faults:
//!   - endpoint: mailboxRestore
//!     calls: { from: 1, to: 1 }
//!     action: { kind: loseResponse }
//!   - method: GET
//!     path: "/v8/RestoreSessions/*/Events"
//!     action: { kind: error, status: 500, errorCode: ProxyOffline }
//!   - endpoint: bulkRestore
//!     action: { kind: executeThenAnswer, status: 500, errorCode: Timeout }
//! ```
//!
//! Three actions tell apart what a client cannot: `error` answers without executing anything,
//! `loseResponse` executes and never answers, `executeThenAnswer` executes and answers an error.

use std::sync::Mutex;
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::api::Endpoint;

/// Which calls of a rule's selection are affected (1-based, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallRange {
    /// First affected call (default 1).
    #[serde(default = "one")]
    pub from: u64,
    /// Last affected call; `None` = every call from `from` on.
    #[serde(default)]
    pub to: Option<u64>,
}

fn one() -> u64 {
    1
}

impl CallRange {
    /// Only the `n`-th call.
    pub fn only(n: u64) -> Self {
        CallRange {
            from: n,
            to: Some(n),
        }
    }

    /// Calls `from..=to`.
    pub fn between(from: u64, to: u64) -> Self {
        CallRange { from, to: Some(to) }
    }

    fn contains(&self, n: u64) -> bool {
        n >= self.from && self.to.is_none_or(|to| n <= to)
    }
}

/// What happens to an affected call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum FaultAction {
    /// Answer `status` with a `RESTExceptionInfo` body (`errorCode` may be any of the vendor's
    /// codes or absent); the request is not executed.
    #[serde(rename_all = "camelCase")]
    Error {
        status: u16,
        #[serde(default)]
        error_code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Answer `status` with an empty body (e.g. a bare 502 from a proxy).
    Status { status: u16 },
    /// Answer 429 with `Retry-After`.
    #[serde(rename_all = "camelCase")]
    TooManyRequests { retry_after_seconds: u64 },
    /// Wait before handling the request normally.
    Delay {
        #[serde(with = "humantime_serde")]
        duration: Duration,
    },
    /// Handle the request, then break the connection after `bytes` bytes of the response body
    /// (`Content-Length` still announces the full length).
    DropAfterBytes { bytes: u64 },
    /// Handle the request (a restore really starts), then drop the connection before any
    /// response byte: the client sees a transport error.
    LoseResponse,
    /// Handle the request (a restore really starts), then answer `status` instead of the real
    /// answer: a `RESTExceptionInfo` body with `errorCode` and `message`, or `body` verbatim when
    /// it is given (an unreadable success answer, say). A backend that starts an operation and
    /// fails while answering looks like this (API.md §5).
    #[serde(rename_all = "camelCase")]
    ExecuteThenAnswer {
        status: u16,
        #[serde(default)]
        error_code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        body: Option<String>,
    },
    /// Handle the request, then rewrite the answer's framing as a broken server or proxy might:
    /// status `status`, `Content-Range` set to `contentRange` verbatim (removed when absent) and
    /// `Content-Length` set to `contentLength` (removed when absent: the body goes chunked). The
    /// body stays the handler's; a `contentLength` shorter than it cuts it there.
    #[serde(rename_all = "camelCase")]
    Reframe {
        status: u16,
        #[serde(default)]
        content_range: Option<String>,
        #[serde(default)]
        content_length: Option<u64>,
    },
    /// Invalidate every access token issued so far (refresh tokens stay valid), then handle
    /// the request normally, which therefore gets 401.
    ExpireTokens,
    /// Remove the restore session named in the path, then handle the request normally, which
    /// therefore gets 404 `ResourceNotFound`.
    RemoveSession,
}

impl FaultAction {
    /// Short label for the journal.
    pub fn label(&self) -> String {
        match self {
            FaultAction::Error {
                status, error_code, ..
            } => {
                format!("error {status} {}", error_code.as_deref().unwrap_or("-"))
            }
            FaultAction::Status { status } => format!("status {status}"),
            FaultAction::TooManyRequests { .. } => "tooManyRequests".into(),
            FaultAction::Delay { duration } => format!("delay {}ms", duration.as_millis()),
            FaultAction::DropAfterBytes { bytes } => format!("dropAfterBytes {bytes}"),
            FaultAction::LoseResponse => "loseResponse".into(),
            FaultAction::ExecuteThenAnswer {
                status, error_code, ..
            } => format!(
                "executeThenAnswer {status} {}",
                error_code.as_deref().unwrap_or("-")
            ),
            FaultAction::Reframe {
                status,
                content_range,
                content_length,
            } => format!(
                "reframe {status} range {} length {}",
                content_range.as_deref().unwrap_or("-"),
                content_length.map_or_else(|| "-".to_owned(), |l| l.to_string())
            ),
            FaultAction::ExpireTokens => "expireTokens".into(),
            FaultAction::RemoveSession => "removeSession".into(),
        }
    }
}

/// A fault rule. At least one selector should be given; a rule without selectors affects
/// every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// HTTP method (case-insensitive); `None` = any.
    #[serde(default)]
    pub method: Option<String>,
    /// Endpoint kind; `None` = any.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// Glob on the request path, case-insensitive (`*` also crosses `/`); `None` = any.
    #[serde(default)]
    pub path: Option<String>,
    /// Affected calls of this rule's selection; `None` = every call.
    #[serde(default)]
    pub calls: Option<CallRange>,
    /// What happens.
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule for every call of `endpoint`.
    pub fn on(endpoint: Endpoint, action: FaultAction) -> Self {
        FaultRule {
            method: None,
            endpoint: Some(endpoint),
            path: None,
            calls: None,
            action,
        }
    }

    /// Restricts the rule to some calls.
    pub fn calls(mut self, calls: CallRange) -> Self {
        self.calls = Some(calls);
        self
    }
}

/// A rule's path glob does not compile.
#[derive(Debug, thiserror::Error)]
#[error("fault rule path pattern '{pattern}': {source}")]
pub struct FaultPatternError {
    pub pattern: String,
    #[source]
    pub source: globset::Error,
}

#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    glob: Option<GlobMatcher>,
    seen: u64,
}

/// The active rules and their call counters.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<ActiveRule>>,
}

impl Faults {
    pub(crate) fn add(&self, rule: FaultRule) -> Result<(), FaultPatternError> {
        let glob = match &rule.path {
            Some(pattern) => Some(
                GlobBuilder::new(pattern)
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()
                    .map_err(|source| FaultPatternError {
                        pattern: pattern.clone(),
                        source,
                    })?
                    .compile_matcher(),
            ),
            None => None,
        };
        if let Ok(mut rules) = self.rules.lock() {
            rules.push(ActiveRule {
                rule,
                glob,
                seen: 0,
            });
        }
        Ok(())
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut rules) = self.rules.lock() {
            rules.clear();
        }
    }

    /// Counts this request against every selecting rule and returns the actions that apply.
    pub(crate) fn take(
        &self,
        method: &str,
        endpoint: Option<Endpoint>,
        path: &str,
    ) -> Vec<FaultAction> {
        let Ok(mut rules) = self.rules.lock() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for active in rules.iter_mut() {
            let rule = &active.rule;
            let selected = rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && rule.endpoint.is_none_or(|e| Some(e) == endpoint)
                && active.glob.as_ref().is_none_or(|g| g.is_match(path));
            if !selected {
                continue;
            }
            active.seen += 1;
            if rule.calls.is_none_or(|c| c.contains(active.seen)) {
                actions.push(rule.action.clone());
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_count_their_own_calls() {
        let faults = Faults::default();
        faults
            .add(
                FaultRule::on(Endpoint::MailboxRestore, FaultAction::LoseResponse)
                    .calls(CallRange::only(2)),
            )
            .expect("rule");
        let take = || faults.take("POST", Some(Endpoint::MailboxRestore), "/v8/x");
        assert!(take().is_empty());
        assert_eq!(take(), vec![FaultAction::LoseResponse]);
        assert!(take().is_empty());
        assert!(
            faults
                .take("GET", Some(Endpoint::Mailboxes), "/v8/x")
                .is_empty()
        );
    }

    #[test]
    fn path_globs_are_case_insensitive_and_rules_load_from_yaml() {
        let yaml = "- method: get\n  path: /v8/RestoreSessions/*/events\n  action: { kind: error, status: 500, errorCode: ProxyOffline }\n- endpoint: exportPst\n  calls: { from: 2 }\n  action: { kind: dropAfterBytes, bytes: 10 }\n- action: { kind: delay, duration: 50ms }\n- endpoint: exportPst\n  action: { kind: reframe, status: 206, contentRange: 'bytes 0-18446744073709551615/*' }\n";
        let rules: Vec<FaultRule> = serde_yaml::from_str(yaml).expect("yaml");
        let faults = Faults::default();
        for r in rules {
            faults.add(r).expect("add");
        }
        let got = faults.take(
            "GET",
            Some(Endpoint::SessionEvents),
            "/v8/restoresessions/abc/Events",
        );
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], FaultAction::Error { status: 500, .. }));
        let export = faults.take("POST", Some(Endpoint::ExportPst), "/v8/x/exportToPst");
        assert_eq!(
            export.last(),
            Some(&FaultAction::Reframe {
                status: 206,
                content_range: Some("bytes 0-18446744073709551615/*".into()),
                content_length: None,
            })
        );
        assert!(serde_yaml::from_str::<FaultRule>("action: { kind: explode }").is_err());
        assert!(
            faults
                .add(FaultRule {
                    path: Some("[".into()),
                    ..FaultRule::on(Endpoint::Token, FaultAction::LoseResponse)
                })
                .is_err()
        );
    }
}
