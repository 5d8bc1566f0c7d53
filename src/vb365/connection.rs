//! The HTTP side of one VB365 server: a request described as a [`Call`], sent once with a given
//! bearer token ([`Connection::send_once`]), its failure before classification ([`Failure`]),
//! the decoding of a JSON success body, and the [`ApiError`]s that name the server.
//!
//! This file knows nothing of where the token comes from, of the resend after a 401 or of
//! paging: [`super::auth`] gets tokens through it, [`super::execute`] builds the client's calls
//! on both.
//!
//! # Timeouts
//!
//! Connecting is bounded by [`super::client::CONNECT_TIMEOUT`]. Every API call gets the server's
//! `requestTimeout` as a per-request deadline ([`Deadline::Request`]). The PST export is the
//! exception: the server builds the whole PST before it sends the first byte, so the call only
//! bounds the wait for the response headers (the caller's first-byte timeout,
//! [`Deadline::Headers`]) and hands the body over as a stream without any deadline; the download
//! engine applies its idle-read timeout itself.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::{
    ApiError, ErrorClass, ErrorKind, Outcome, Transport, classify, excerpt, parse_error_body,
    parse_retry_after, sanitise_path, transport_message,
};
use super::operation::Operation;

/// The HTTP client of one server and what every request to it needs. Shared by the token flow
/// and the client's calls.
pub(super) struct Connection {
    pub(super) server: Arc<str>,
    /// Server URL without a trailing slash (`https://host:4443`).
    pub(super) base: String,
    pub(super) http: reqwest::Client,
    pub(super) request_timeout: Duration,
}

/// How long a call may take: the per-request deadline, or only a bound on the response headers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deadline {
    Request,
    Headers(Duration),
}

/// One request, described so it can be sent again after a token refresh.
pub(super) struct Call<'a, B: ?Sized> {
    pub(super) op: Operation,
    /// Rendered path, e.g. `/v8/RestoreSessions/…/Events`.
    pub(super) path: String,
    pub(super) query: Vec<(&'static str, String)>,
    pub(super) body: Option<&'a B>,
    /// The restore session the path is under, for the lost-session check.
    pub(super) session: Option<Uuid>,
    pub(super) accept: &'static str,
    pub(super) range_start: Option<u64>,
    pub(super) deadline: Deadline,
    /// The query of a checked `_links.next` href, sent instead of `query`.
    pub(super) link_query: Option<String>,
}

impl<B: ?Sized> Call<'_, B> {
    /// The path as it may appear in errors and logs.
    pub(super) fn display_path(&self) -> String {
        if let Some(q) = &self.link_query {
            return sanitise_path(&format!("{}?{q}", self.path));
        }
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sanitise_path(&format!("{}?{}", self.path, q.join("&")))
    }
}

/// A call that did not succeed, before classification.
pub(super) enum Failure {
    Status {
        status: StatusCode,
        body: Vec<u8>,
        retry_after: Option<Duration>,
    },
    Transport(Transport, String),
    Error(ApiError),
}

/// A call with no JSON body.
pub(super) type NoBody = ();

pub(super) fn render(op: Operation, params: &[&str]) -> String {
    // Templates and call sites are written together; a mismatch is a programming error caught by
    // every test that calls the endpoint, so the fallback is just the raw template.
    op.path(params)
        .unwrap_or_else(|| op.path_template().to_string())
}

impl Connection {
    /// Sends one request with `token`; a response of any status is `Ok`.
    pub(super) async fn send_once<B: Serialize + ?Sized>(
        &self,
        call: &Call<'_, B>,
        token: &SecretString,
    ) -> Result<reqwest::Response, Failure> {
        let url = match &call.link_query {
            Some(q) => format!("{}{}?{q}", self.base, call.path),
            None => format!("{}{}", self.base, call.path),
        };
        let mut rb = self
            .http
            .request(call.op.method(), url)
            .bearer_auth(token.expose_secret())
            .header(ACCEPT, call.accept);
        if call.link_query.is_none() && !call.query.is_empty() {
            rb = rb.query(&call.query);
        }
        match call.body {
            Some(body) => {
                // Serialised here, at the moment of sending: this is where secret fields of the
                // body are exposed, into bytes that go straight to the socket.
                let bytes = serde_json::to_vec(body).map_err(|e| {
                    Failure::Error(self.error(
                        call.op,
                        call.display_path(),
                        ErrorClass::Permanent,
                        ErrorKind::Decode,
                        format!("cannot serialise the request body: {e}"),
                    ))
                })?;
                rb = rb.header(CONTENT_TYPE, "application/json").body(bytes);
            }
            None if call.op.method() == Method::POST => {
                rb = rb.header(CONTENT_LENGTH, "0");
            }
            None => {}
        }
        if let Some(start) = call.range_start {
            rb = rb.header(RANGE, format!("bytes={start}-"));
        }
        let result = match call.deadline {
            Deadline::Request => rb.timeout(self.request_timeout).send().await,
            Deadline::Headers(limit) => match tokio::time::timeout(limit, rb.send()).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Failure::Transport(
                        Transport::Timeout,
                        format!(
                            "no response headers within the first-byte timeout of {}",
                            humantime::format_duration(limit)
                        ),
                    ));
                }
            },
        };
        result.map_err(|e| {
            let t = Transport::from_reqwest(&e);
            Failure::Transport(t, transport_message(t, &e))
        })
    }

    /// Reads a JSON success body.
    pub(super) async fn decode<T: DeserializeOwned>(
        &self,
        op: Operation,
        path: String,
        resp: reqwest::Response,
    ) -> Result<T, ApiError> {
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let t = Transport::Body;
                return Err(self.transport_error(op, path, t, transport_message(t, &e)));
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            let class = classify(&Outcome::Decode, op.replay(), false, false);
            self.error(
                op,
                path,
                class,
                ErrorKind::Decode,
                format!(
                    "unexpected response body ({e}): {}",
                    excerpt(&String::from_utf8_lossy(&bytes), 120)
                ),
            )
        })
    }

    pub(super) fn error(
        &self,
        op: Operation,
        path: String,
        class: ErrorClass,
        kind: ErrorKind,
        message: String,
    ) -> ApiError {
        ApiError {
            server: self.server.clone(),
            method: op.method(),
            path,
            status: None,
            error_code: None,
            message,
            retry_after: None,
            class,
            kind,
        }
    }

    pub(super) fn transport_error(
        &self,
        op: Operation,
        path: String,
        t: Transport,
        message: String,
    ) -> ApiError {
        let class = classify(&Outcome::Transport(t), op.replay(), false, false);
        self.error(op, path, class, ErrorKind::Transport(t), message)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn status_error(
        &self,
        op: Operation,
        path: String,
        status: StatusCode,
        body: &[u8],
        retry_after: Option<Duration>,
        token_request: bool,
        session_gone: bool,
    ) -> ApiError {
        let parsed = parse_error_body(status, body);
        let outcome = Outcome::Status {
            status: status.as_u16(),
            code: parsed.error_code,
        };
        let class = classify(&outcome, op.replay(), token_request, session_gone);
        ApiError {
            server: self.server.clone(),
            method: op.method(),
            path,
            status: Some(status),
            error_code: parsed.error_code,
            message: parsed.message,
            retry_after,
            class,
            kind: ErrorKind::Http,
        }
    }
}

/// Error bodies are read up to this size; the rest (a runaway HTML page, a misrouted download)
/// is not needed to classify the error.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Reads an error response body, at most [`MAX_ERROR_BODY`] bytes; a broken body reads as what
/// arrived (the status alone still classifies the error).
pub(super) async fn error_body(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= MAX_ERROR_BODY {
            out.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    out
}

pub(super) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_path_keeps_only_paging_query() {
        let call: Call<NoBody> = Call {
            op: Operation::ListRestoreSessions,
            path: "/v8/RestoreSessions".into(),
            query: vec![
                ("startTimeFrom", "2025-01-01T00:00:00Z".into()),
                ("offset", "0".into()),
                ("limit", "7".into()),
            ],
            body: None,
            session: None,
            accept: "application/json",
            range_start: None,
            deadline: Deadline::Request,
            link_query: None,
        };
        assert_eq!(call.display_path(), "/v8/RestoreSessions?offset=0&limit=7");
    }
}
