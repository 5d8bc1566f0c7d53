//! Notifications and heartbeats (SPEC §11, docs/notifications.md): delivering the outbox rows
//! that the store writes with each state change, and the per-job dead-man's-switch pings.
//!
//! - this file: [`NotifyError`] (one failed attempt, never holding a secret);
//! - [`message`]: the human text of an event (title, facts, the command to run), shared by
//!   Teams and e-mail;
//! - [`webhook`]: the signed JSON POST;
//! - [`teams`]: the Adaptive Card POST to a Teams Workflows / incoming webhook;
//! - [`email`]: SMTP through lettre (STARTTLS, TLS, or none to a loopback host);
//! - [`deliverer`]: the daemon task that polls due rows, delivers, backs off and exports the
//!   notification metrics;
//! - [`heartbeat`]: `URL/start`, `URL`, `URL/fail` pings of one run, in order, best effort.

pub mod deliverer;
pub mod email;
pub mod heartbeat;
pub mod message;
pub mod teams;
pub mod webhook;

pub use deliverer::{Deliverer, backoff};

/// Why one delivery attempt failed. The text names the target and what went wrong, never a
/// URL (which may embed a token) or a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The target's secret (URL, signing key, SMTP password) could not be read.
    #[error("target {target}: {source}")]
    Secret {
        target: String,
        #[source]
        source: crate::config::ConfigError,
    },
    /// The row names a target the config no longer has.
    #[error(
        "target {target} is not configured (any more); add it back under notifications.targets or the message waits"
    )]
    UnknownTarget { target: String },
    /// The configured URL is not a URL (the value is not shown).
    #[error("target {target}: the configured URL is not a valid http(s) URL")]
    BadUrl { target: String },
    /// The HTTP request failed (connect, TLS, timeout); the URL is stripped from the cause.
    #[error("target {target}: request failed: {source}")]
    Http {
        target: String,
        #[source]
        source: reqwest::Error,
    },
    /// The receiver answered, but not with a 2xx.
    #[error("target {target}: answered HTTP {status}")]
    Status { target: String, status: u16 },
    /// The message could not be built (a bad address, say).
    #[error("target {target}: cannot build the e-mail: {message}")]
    Email { target: String, message: String },
    /// The SMTP exchange failed.
    #[error("target {target}: SMTP: {message}")]
    Smtp { target: String, message: String },
    /// The attempt did not finish within `notifications.timeout`.
    #[error("target {target}: no answer within {seconds}s")]
    Timeout { target: String, seconds: u64 },
    /// The stored body does not parse (a row written by a newer version).
    #[error("target {target}: the stored message does not parse: {message}")]
    Payload { target: String, message: String },
}

/// Builds the HTTP client of notifications and heartbeats: rustls, no redirects (a redirect
/// would re-send a signed body to a place nobody configured), the given per-request timeout.
pub fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("restorectl/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Parses a secret URL for a target; the error never quotes it.
pub(crate) fn parse_url(target: &str, url: &str) -> Result<url::Url, NotifyError> {
    match url::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(u),
        _ => Err(NotifyError::BadUrl {
            target: target.to_string(),
        }),
    }
}

/// A POST of `body` to a target's URL, 2xx or an error without the URL.
pub(crate) async fn post(
    target: &str,
    request: reqwest::RequestBuilder,
) -> Result<(), NotifyError> {
    let response = request.send().await.map_err(|e| NotifyError::Http {
        target: target.to_string(),
        source: e.without_url(),
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(NotifyError::Status {
            target: target.to_string(),
            status: status.as_u16(),
        })
    }
}
