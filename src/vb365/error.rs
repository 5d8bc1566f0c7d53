//! The one error type of the VB365 client, [`ApiError`], and the retry policy behind it.
//!
//! # Error policy
//!
//! Every failed call becomes an [`ApiError`] that names the server, the HTTP method and the
//! sanitised request path, carries what the server said (status, `errorCode`, message,
//! `Retry-After`) and a single [`ErrorClass`] telling the caller what it may do next. The class is
//! decided by one pure function, [`classify`], so the whole policy (SPEC §5) can be read and
//! tested in one place:
//!
//! - `errorCode` first, HTTP status second (API.md §5);
//! - a restore POST ([`Replay::AtMostOnce`]) whose outcome is unknown is [`ErrorClass::Ambiguous`]
//!   and must never be re-sent automatically: every answer except the refusals listed in
//!   [`REFUSED_BEFORE_EXECUTION`] (any 5xx whatever its `errorCode`, an unreadable success body,
//!   a timeout or a broken connection after the request may have been written); a connection
//!   that failed before the request was written is an ordinary retryable failure;
//! - `ResourceNotFound` on a call under our restore session is [`ErrorClass::SessionLost`] only
//!   when a follow-up read proved that the session itself is gone or stopped.
//!
//! Secrets never reach this module: error bodies are cut to a short excerpt with control
//! characters and markup removed, stack traces are dropped, and the query string of the request
//! path is reduced to the paging parameters (`offset`, `limit`, `setId`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};

// One definition of the class, in the store (where `text_enum!` gives it its database codec, and
// which this module may import but not the reverse): the step that failed records it as is.
pub use crate::store::ErrorClass;

/// The `errorCode` of a `RESTExceptionInfo` body (the ten values of the v8 enum, plus whatever a
/// newer server may send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ProxyOffline,
    OutdatedChangeToken,
    ResourceAccessDenied,
    ResourceNotFound,
    ParameterValidationFailure,
    OrganizationTransfer,
    RepositoryOwnerChangeTooManyLinks,
    Timeout,
    OperationConflict,
    HttpError,
    /// A code this client does not know (its spelling is kept in the error message); classified
    /// by HTTP status.
    Unknown,
}

impl ErrorCode {
    /// Parses the wire value (exact spelling first, then case-insensitively).
    pub fn parse(s: &str) -> ErrorCode {
        const KNOWN: [(&str, ErrorCode); 10] = [
            ("ProxyOffline", ErrorCode::ProxyOffline),
            ("OutdatedChangeToken", ErrorCode::OutdatedChangeToken),
            ("ResourceAccessDenied", ErrorCode::ResourceAccessDenied),
            ("ResourceNotFound", ErrorCode::ResourceNotFound),
            (
                "ParameterValidationFailure",
                ErrorCode::ParameterValidationFailure,
            ),
            ("OrganizationTransfer", ErrorCode::OrganizationTransfer),
            (
                "RepositoryOwnerChangeTooManyLinks",
                ErrorCode::RepositoryOwnerChangeTooManyLinks,
            ),
            ("Timeout", ErrorCode::Timeout),
            ("OperationConflict", ErrorCode::OperationConflict),
            ("HttpError", ErrorCode::HttpError),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, code)| code)
            .unwrap_or(ErrorCode::Unknown)
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::ProxyOffline => "ProxyOffline",
            ErrorCode::OutdatedChangeToken => "OutdatedChangeToken",
            ErrorCode::ResourceAccessDenied => "ResourceAccessDenied",
            ErrorCode::ResourceNotFound => "ResourceNotFound",
            ErrorCode::ParameterValidationFailure => "ParameterValidationFailure",
            ErrorCode::OrganizationTransfer => "OrganizationTransfer",
            ErrorCode::RepositoryOwnerChangeTooManyLinks => "RepositoryOwnerChangeTooManyLinks",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::OperationConflict => "OperationConflict",
            ErrorCode::HttpError => "HttpError",
            ErrorCode::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an operation may be sent again when its outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Reads, explore, stop, search, export and token calls: sending twice does no harm.
    Safe,
    /// The three restore POSTs: a second copy could restore a mailbox twice (SPEC §5).
    AtMostOnce,
}

/// How a request failed when no usable HTTP response came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The connection could not be established (refused, DNS, TLS handshake, connect timeout):
    /// the request was certainly not sent.
    Connect,
    /// No complete response in time after the request may have been written (request timeout,
    /// first-byte timeout of an export).
    Timeout,
    /// The connection was reset or closed before the response headers arrived.
    Interrupted,
    /// The response headers arrived but reading the body failed.
    Body,
}

impl Transport {
    /// Maps a reqwest error; `is_connect()` wins over `is_timeout()` because a connect timeout
    /// means nothing was sent.
    pub fn from_reqwest(e: &reqwest::Error) -> Transport {
        if e.is_connect() {
            Transport::Connect
        } else if e.is_timeout() {
            Transport::Timeout
        } else if e.is_body() || e.is_decode() {
            Transport::Body
        } else {
            Transport::Interrupted
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Transport::Connect => "connection failed",
            Transport::Timeout => "timed out waiting for the response",
            Transport::Interrupted => "connection closed before the response",
            Transport::Body => "response body broken",
        }
    }
}

/// What was observed about a failed call: the input of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with a non-success status.
    Status {
        status: u16,
        code: Option<ErrorCode>,
    },
    /// No usable response.
    Transport(Transport),
    /// A success status whose body could not be understood.
    Decode,
}

/// The statuses that prove the server refused a request before acting on it: validation (400),
/// authentication (401), authorisation (403), an unknown resource (404), a conflicting operation
/// (409) and throttling (429). Only these make a restore POST safe to send again without
/// reconciliation; see [`classify`].
pub const REFUSED_BEFORE_EXECUTION: [u16; 6] = [400, 401, 403, 404, 409, 429];

/// Classifies a failure (SPEC §5 plus the transport rules). Pure, so it is tested row by row.
///
/// - `replay`: whether the operation may be repeated when its outcome is unknown.
/// - `token_request`: the call was a token grant; a 400/401 there means bad credentials.
/// - `session_gone`: a follow-up read showed the restore session of the call's path is gone
///   (404) or stopped; only consulted for `ResourceNotFound` / 404.
pub fn classify(
    outcome: &Outcome,
    replay: Replay,
    token_request: bool,
    session_gone: bool,
) -> ErrorClass {
    use ErrorClass::*;
    match outcome {
        Outcome::Transport(Transport::Connect) => Retryable,
        Outcome::Transport(_) => match replay {
            Replay::Safe => Retryable,
            Replay::AtMostOnce => Ambiguous,
        },
        // A success status means the server acted; if we cannot read what it answered, a
        // restore POST is in doubt. For reads a garbled body will not improve by retrying.
        Outcome::Decode => match replay {
            Replay::Safe => Permanent,
            Replay::AtMostOnce => Ambiguous,
        },
        Outcome::Status { status, code } => {
            if token_request && matches!(status, 400 | 401) {
                return Auth;
            }
            // A restore POST may be resent only after an answer that proves the server refused
            // it before acting (API.md §5). A 5xx proves nothing: the backend may have started
            // the restore and failed while answering (`Timeout`, a WCF fault, a proxy error),
            // whatever `errorCode` it carries; so may any status outside this list.
            if replay == Replay::AtMostOnce && !REFUSED_BEFORE_EXECUTION.contains(status) {
                return Ambiguous;
            }
            // A 401 on an API call is only returned after a token grant succeeded and the
            // resend was refused again: the credentials are good, the token was revoked or
            // expired again in between (clock skew, a server restart). Not executed, so even a
            // restore may be sent again; a later attempt under the retry policy is the remedy.
            if *status == 401 {
                return Retryable;
            }
            match code {
                Some(
                    ErrorCode::ProxyOffline | ErrorCode::Timeout | ErrorCode::OperationConflict,
                ) => {
                    return Retryable;
                }
                // The organisation is being moved between repositories: a later attempt works.
                Some(ErrorCode::OrganizationTransfer) => return Retryable,
                Some(ErrorCode::ParameterValidationFailure | ErrorCode::ResourceAccessDenied) => {
                    return Permanent;
                }
                Some(
                    ErrorCode::OutdatedChangeToken | ErrorCode::RepositoryOwnerChangeTooManyLinks,
                ) => {
                    return Permanent;
                }
                Some(ErrorCode::ResourceNotFound) => {
                    return if session_gone { SessionLost } else { Permanent };
                }
                // HttpError and unknown codes: decided by the status below.
                Some(ErrorCode::HttpError | ErrorCode::Unknown) | None => {}
            }
            match status {
                429 => Retryable,
                404 if session_gone => SessionLost,
                500..=599 => Retryable,
                _ => Permanent,
            }
        }
    }
}

/// A failed VB365 API call. Its `Display` is one line naming server, method, path, status,
/// `errorCode`, message and class; it never contains a token, password or request body.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ApiError {
    /// The configured server name (`servers.<name>`).
    pub server: Arc<str>,
    pub method: Method,
    /// The request path with ids kept and the query reduced to `offset`/`limit`/`setId`.
    pub path: String,
    /// The HTTP status when the server answered.
    pub status: Option<StatusCode>,
    pub error_code: Option<ErrorCode>,
    /// The server's message, the OAuth `error_description`, a sanitised body excerpt, or a
    /// description of the transport failure.
    pub message: String,
    /// `Retry-After` when the server sent one.
    pub retry_after: Option<Duration>,
    pub class: ErrorClass,
    pub kind: ErrorKind,
}

/// Where an [`ApiError`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server answered with a non-success status.
    Http,
    /// No usable response (see [`Transport`]).
    Transport(Transport),
    /// A success status with a body that could not be parsed.
    Decode,
    /// The server password could not be resolved from its secret reference.
    Secret,
    /// A client-side lookup found nothing (e.g. an organisation by name).
    NotFound,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {}: {} {}", self.server, self.method, self.path)?;
        if let Some(s) = self.status {
            write!(f, ": HTTP {}", s.as_u16())?;
        }
        if let Some(c) = &self.error_code {
            write!(f, " {c}")?;
        }
        write!(f, ": {} ({})", self.message, self.class)?;
        if let Some(r) = self.retry_after {
            write!(f, ", retry after {}s", r.as_secs())?;
        }
        Ok(())
    }
}

impl ApiError {
    /// True when the class is [`ErrorClass::Retryable`].
    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Retryable
    }

    /// The thing asked for is gone: the client classed it [`ErrorClass::SessionLost`], or the
    /// server answered 404 (for a read of the session itself, that is the session).
    pub fn is_gone(&self) -> bool {
        self.class == ErrorClass::SessionLost || self.status == Some(StatusCode::NOT_FOUND)
    }

    /// The restore session named in the call's path (`/v8/RestoreSessions/{id}…`), so a
    /// [`ErrorClass::SessionLost`] says which session is gone.
    pub fn session(&self) -> Option<uuid::Uuid> {
        let rest = self.path.strip_prefix("/v8/RestoreSessions/")?;
        let id = rest.split(['/', '?']).next()?;
        uuid::Uuid::parse_str(id).ok()
    }
}

/// What an error body said, whatever its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub message: String,
    pub error_code: Option<ErrorCode>,
}

/// Parses an error body: `RESTExceptionInfo {message, errorCode, stackTrace}`, the OAuth form
/// `{error, error_description}`, or anything else (empty, HTML, text) as a short excerpt.
/// The stack trace is dropped: it is noise for an operator and may hold server internals.
pub fn parse_error_body(status: StatusCode, body: &[u8]) -> ErrorBody {
    let fallback = || {
        let reason = status.canonical_reason().unwrap_or("error");
        let text = excerpt(&String::from_utf8_lossy(body), 200);
        if text.is_empty() {
            format!("{reason} (empty body)")
        } else {
            format!("{reason}: {text}")
        }
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return ErrorBody {
            message: fallback(),
            error_code: None,
        };
    };
    // .NET binds property names case-insensitively and older servers wrote `Message`.
    let field = |name: &str| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(|s| excerpt(s, 500))
            .filter(|s| !s.is_empty())
    };
    let raw_code = field("errorCode");
    let error_code = raw_code.as_deref().map(ErrorCode::parse);
    let message = match (field("message"), field("error"), field("error_description")) {
        (Some(m), _, _) => m,
        (None, Some(e), Some(d)) => format!("{e}: {d}"),
        (None, Some(e), None) => e,
        (None, None, Some(d)) => d,
        (None, None, None) => match &error_code {
            Some(c) => c.to_string(),
            None => fallback(),
        },
    };
    // An unknown code is not representable in `ErrorCode`; keep its spelling for the operator.
    let message = match (&error_code, raw_code) {
        (Some(ErrorCode::Unknown), Some(raw)) => format!("[{}] {message}", excerpt(&raw, 64)),
        _ => message,
    };
    ErrorBody {
        message,
        error_code,
    }
}

/// Cuts `s` to at most `max` characters with markup and control characters removed and
/// whitespace collapsed, so an HTML error page or a binary blob becomes one readable line.
pub fn excerpt(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut last_space = true;
    let mut count = 0;
    for c in s.chars() {
        match c {
            '<' => {
                in_tag = true;
                continue;
            }
            '>' if in_tag => {
                in_tag = false;
                // A tag separates words ("<p>a</p><p>b</p>" → "a b").
                if !last_space {
                    out.push(' ');
                    last_space = true;
                    count += 1;
                }
                continue;
            }
            _ if in_tag => continue,
            _ => {}
        }
        if c.is_whitespace() || c.is_control() {
            if !last_space {
                out.push(' ');
                last_space = true;
                count += 1;
            }
        } else {
            out.push(c);
            last_space = false;
            count += 1;
        }
        if count >= max {
            out.push('…');
            break;
        }
    }
    out.trim().to_string()
}

/// The path and query of a request as it may appear in an error or a log line: the path is kept
/// (ids are useful and not secret), the query keeps only `offset`, `limit` and `setId`.
pub fn sanitise_path(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let kept: Vec<&str> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            ["offset", "limit", "setId"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key))
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP date (RFC 1123), relative to now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Builds the message of a transport failure from a reqwest error without its URL (which the
/// error already carries as `path`) and with the cause chain on one line.
pub(crate) fn transport_message(t: Transport, e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = t.describe().to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    let mut depth = 0;
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&excerpt(&c.to_string(), 160));
        cur = c.source();
        depth += 1;
        if depth == 4 {
            break;
        }
    }
    // rustls says "invalid peer certificate: UnknownIssuer"; tell the operator what to do.
    if t == Transport::Connect && msg.to_ascii_lowercase().contains("certificate") {
        msg.push_str(
            " (the server's TLS certificate is not trusted: add its CA with caFile, \
             or as a last resort set insecureSkipTlsVerify)",
        );
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    fn status(s: u16, code: Option<&str>) -> Outcome {
        Outcome::Status {
            status: s,
            code: code.map(ErrorCode::parse),
        }
    }

    /// SPEC §5 and the transport rules, one row per case: (name, outcome, replay, token request,
    /// session gone, expected class).
    #[test]
    #[rustfmt::skip]
    fn classification_table() {
        use Replay::{AtMostOnce as Once, Safe};
        let t = Outcome::Transport;
        let rows: Vec<(&str, Outcome, Replay, bool, bool, ErrorClass)> = vec![
            // errorCode rows of SPEC §5
            ("ProxyOffline 503", status(503, Some("ProxyOffline")), Safe, false, false, Retryable),
            ("Timeout 500", status(500, Some("Timeout")), Safe, false, false, Retryable),
            ("OperationConflict 409", status(409, Some("OperationConflict")), Safe, false, false, Retryable),
            ("ParameterValidationFailure 400", status(400, Some("ParameterValidationFailure")), Safe, false, false, Permanent),
            ("ParameterValidationFailure 500 (code wins)", status(500, Some("ParameterValidationFailure")), Safe, false, false, Permanent),
            ("ResourceNotFound 404", status(404, Some("ResourceNotFound")), Safe, false, false, Permanent),
            ("ResourceNotFound, our session gone", status(404, Some("ResourceNotFound")), Safe, false, true, SessionLost),
            ("ResourceAccessDenied 403", status(403, Some("ResourceAccessDenied")), Safe, false, false, Permanent),
            ("OrganizationTransfer 409", status(409, Some("OrganizationTransfer")), Safe, false, false, Retryable),
            ("OutdatedChangeToken 400", status(400, Some("OutdatedChangeToken")), Safe, false, false, Permanent),
            ("RepositoryOwnerChangeTooManyLinks 409", status(409, Some("RepositoryOwnerChangeTooManyLinks")), Safe, false, false, Permanent),
            ("HttpError 502", status(502, Some("HttpError")), Safe, false, false, Retryable),
            ("HttpError 400", status(400, Some("HttpError")), Safe, false, false, Permanent),
            ("unknown code 503", status(503, Some("SomethingNew")), Safe, false, false, Retryable),
            ("unknown code 422", status(422, Some("SomethingNew")), Safe, false, false, Permanent),
            // HTTP status rows
            ("HTTP 500", status(500, None), Safe, false, false, Retryable),
            ("HTTP 503", status(503, None), Safe, false, false, Retryable),
            ("HTTP 504 on a read", status(504, None), Safe, false, false, Retryable),
            ("HTTP 429", status(429, None), Safe, false, false, Retryable),
            ("HTTP 400", status(400, None), Safe, false, false, Permanent),
            ("HTTP 403", status(403, None), Safe, false, false, Permanent),
            ("HTTP 404", status(404, None), Safe, false, false, Permanent),
            ("HTTP 404, session gone", status(404, None), Safe, false, true, SessionLost),
            ("HTTP 409", status(409, None), Safe, false, false, Permanent),
            ("HTTP 416", status(416, None), Safe, false, false, Permanent),
            ("HTTP 401 after refresh", status(401, None), Safe, false, false, Retryable),
            ("token grant 400 invalid_grant", status(400, None), Safe, true, false, Auth),
            ("token grant 401", status(401, None), Safe, true, false, Auth),
            ("token grant 503", status(503, None), Safe, true, false, Retryable),
            // A restore POST (at most once): only a refusal before execution is classed as for
            // any other call; every other answer leaves its outcome unknown (API.md §5).
            ("restore: 400 ParameterValidationFailure", status(400, Some("ParameterValidationFailure")), Once, false, false, Permanent),
            ("restore: 400 without code", status(400, None), Once, false, false, Permanent),
            ("restore: 401 after refresh", status(401, None), Once, false, false, Retryable),
            ("restore: 403 ResourceAccessDenied", status(403, Some("ResourceAccessDenied")), Once, false, false, Permanent),
            ("restore: 404, session gone", status(404, Some("ResourceNotFound")), Once, false, true, SessionLost),
            ("restore: 404, session alive", status(404, Some("ResourceNotFound")), Once, false, false, Permanent),
            ("restore: 409 OperationConflict", status(409, Some("OperationConflict")), Once, false, false, Retryable),
            ("restore: 409 without code", status(409, None), Once, false, false, Permanent),
            ("restore: 429", status(429, None), Once, false, false, Retryable),
            ("restore: 500 without code", status(500, None), Once, false, false, Ambiguous),
            ("restore: 500 Timeout", status(500, Some("Timeout")), Once, false, false, Ambiguous),
            ("restore: 504 Timeout", status(504, Some("Timeout")), Once, false, false, Ambiguous),
            ("restore: 500 ProxyOffline", status(500, Some("ProxyOffline")), Once, false, false, Ambiguous),
            ("restore: 503 ProxyOffline", status(503, Some("ProxyOffline")), Once, false, false, Ambiguous),
            ("restore: 500 HttpError", status(500, Some("HttpError")), Once, false, false, Ambiguous),
            ("restore: 500 unknown code", status(500, Some("SomethingNew")), Once, false, false, Ambiguous),
            ("restore: 500 OrganizationTransfer", status(500, Some("OrganizationTransfer")), Once, false, false, Ambiguous),
            ("restore: 500 ParameterValidationFailure", status(500, Some("ParameterValidationFailure")), Once, false, false, Ambiguous),
            ("restore: 502 from a proxy", status(502, None), Once, false, false, Ambiguous),
            ("restore: 503", status(503, None), Once, false, false, Ambiguous),
            ("restore: 504 from a proxy", status(504, None), Once, false, false, Ambiguous),
            ("restore: 422", status(422, None), Once, false, false, Ambiguous),
            ("restore: 405", status(405, None), Once, false, false, Ambiguous),
            // transport rows
            ("connect refused", t(Transport::Connect), Safe, false, false, Retryable),
            ("connect refused on restore (not sent)", t(Transport::Connect), Once, false, false, Retryable),
            ("timeout on a read", t(Transport::Timeout), Safe, false, false, Retryable),
            ("timeout after sending a restore", t(Transport::Timeout), Once, false, false, Ambiguous),
            ("reset before response on a read", t(Transport::Interrupted), Safe, false, false, Retryable),
            ("reset before response on restore", t(Transport::Interrupted), Once, false, false, Ambiguous),
            ("broken body on a read", t(Transport::Body), Safe, false, false, Retryable),
            ("broken body on restore", t(Transport::Body), Once, false, false, Ambiguous),
            ("garbled 200 body on a read", Outcome::Decode, Safe, false, false, Permanent),
            ("garbled 200 body on restore", Outcome::Decode, Once, false, false, Ambiguous),
        ];
        for (name, outcome, replay, token, gone, want) in rows {
            assert_eq!(
                classify(&outcome, replay, token, gone),
                want,
                "row `{name}`"
            );
        }
    }

    #[test]
    fn parses_rest_exception_info() {
        let b = br#"{"message":"Restore session 42 not found.","errorCode":"ResourceNotFound","stackTrace":"   at Veeam.Archiver..."}"#;
        let p = parse_error_body(StatusCode::NOT_FOUND, b);
        assert_eq!(p.error_code, Some(ErrorCode::ResourceNotFound));
        assert_eq!(p.message, "Restore session 42 not found.");
    }

    #[test]
    fn parses_rest_exception_info_with_null_code_and_odd_casing() {
        let b = br#"{"Message":"The communication object, System.ServiceModel.Channels, cannot be used","errorCode":null,"stackTrace":null}"#;
        let p = parse_error_body(StatusCode::INTERNAL_SERVER_ERROR, b);
        assert_eq!(p.error_code, None);
        assert!(
            p.message.starts_with("The communication object"),
            "{}",
            p.message
        );
    }

    #[test]
    fn parses_oauth_error_form() {
        let b = br#"{"error":"invalid_grant","error_description":"The user name or password is incorrect."}"#;
        let p = parse_error_body(StatusCode::BAD_REQUEST, b);
        assert_eq!(p.error_code, None);
        assert_eq!(
            p.message,
            "invalid_grant: The user name or password is incorrect."
        );
    }

    #[test]
    fn empty_body_names_the_status() {
        let p = parse_error_body(StatusCode::UNAUTHORIZED, b"");
        assert_eq!(p.message, "Unauthorized (empty body)");
        assert_eq!(p.error_code, None);
    }

    #[test]
    fn html_body_becomes_a_short_clean_excerpt() {
        let mut html = String::from(
            "<html><head><title>502 Bad Gateway</title></head>\r\n<body><h1>Bad\tGateway</h1>",
        );
        html.push_str(&"x".repeat(1000));
        html.push_str("</body></html>");
        let p = parse_error_body(StatusCode::BAD_GATEWAY, html.as_bytes());
        assert!(
            p.message
                .starts_with("Bad Gateway: 502 Bad Gateway Bad Gateway x"),
            "{}",
            p.message
        );
        assert!(
            !p.message.contains('<') && !p.message.contains('\r'),
            "{}",
            p.message
        );
        assert!(p.message.chars().count() < 230, "{}", p.message.len());
    }

    #[test]
    fn unknown_error_code_is_kept_in_the_message() {
        let p = parse_error_body(
            StatusCode::CONFLICT,
            br#"{"message":"busy","errorCode":"BrandNew"}"#,
        );
        assert_eq!(p.error_code, Some(ErrorCode::Unknown));
        assert_eq!(p.message, "[BrandNew] busy");
        assert_eq!(
            ErrorCode::parse("resourcenotfound"),
            ErrorCode::ResourceNotFound
        );
        assert_eq!(ErrorCode::parse("NewCode"), ErrorCode::Unknown);
    }

    #[test]
    fn path_sanitisation_keeps_ids_and_paging_only() {
        assert_eq!(
            sanitise_path("/v8/RestoreSessions/9f78/organization/mailboxes?offset=0&limit=1000"),
            "/v8/RestoreSessions/9f78/organization/mailboxes?offset=0&limit=1000"
        );
        assert_eq!(
            sanitise_path(
                "/v8/RestoreSessions/1/organization/mailboxes/search?offset=30&limit=30&setId=abc&token=s3cret"
            ),
            "/v8/RestoreSessions/1/organization/mailboxes/search?offset=30&limit=30&setId=abc"
        );
        assert_eq!(
            sanitise_path("/v8/RestoreSessions?startTimeFrom=2025-01-01&password=hunter2"),
            "/v8/RestoreSessions"
        );
        assert_eq!(sanitise_path("/v8/token"), "/v8/token");
    }

    #[test]
    fn retry_after_seconds_and_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Fri, 10 Jan 2020 08:00:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = (chrono::Utc::now() + chrono::TimeDelta::hours(2)).to_rfc2822();
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(3600) && d <= Duration::from_secs(7200),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_session_of_an_error_comes_from_its_path() {
        let id = "017bba8f-0184-4dc0-b0b0-95a2f1e8c8ff";
        let mut e = ApiError {
            server: "primary".into(),
            method: Method::POST,
            path: format!("/v8/RestoreSessions/{id}/organization/mailboxes/x/restore"),
            status: Some(StatusCode::NOT_FOUND),
            error_code: None,
            message: String::new(),
            retry_after: None,
            class: ErrorClass::SessionLost,
            kind: ErrorKind::Http,
        };
        assert_eq!(e.session().map(|u| u.to_string()).as_deref(), Some(id));
        e.path = format!("/v8/RestoreSessions/{id}");
        assert_eq!(e.session().map(|u| u.to_string()).as_deref(), Some(id));
        e.path = "/v8/RestoreSessions?offset=0".into();
        assert_eq!(e.session(), None);
        e.path = "/v8/Organizations/1/explore".into();
        assert_eq!(e.session(), None);
    }

    #[test]
    fn display_is_one_line_with_everything_an_operator_needs() {
        let e = ApiError {
            server: "primary".into(),
            method: Method::GET,
            path: "/v8/RestoreSessions/42".into(),
            status: Some(StatusCode::TOO_MANY_REQUESTS),
            error_code: None,
            message: "Too Many Requests (empty body)".into(),
            retry_after: Some(Duration::from_secs(7)),
            class: ErrorClass::Retryable,
            kind: ErrorKind::Http,
        };
        assert_eq!(
            e.to_string(),
            "server primary: GET /v8/RestoreSessions/42: HTTP 429: Too Many Requests (empty body) (retryable), retry after 7s"
        );
    }
}

#[cfg(test)]
mod size {
    /// Callers pass `Result<_, ApiError>` around a lot; clippy's `result_large_err` limit is 128.
    #[test]
    fn api_error_stays_small() {
        assert!(std::mem::size_of::<super::ApiError>() <= 128);
    }
}
