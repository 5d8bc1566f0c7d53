//! The request pipeline: case-insensitive routing over the vendor's path templates, the
//! journal, fault injection, bearer checks, query and body validation, then the handler.
//!
//! The route table uses the exact templates of the OpenAPI document, so a unit test can prove
//! that every route the simulator serves is a vendor operation. Routing is done here rather than
//! with axum's router because the real server matches paths case-insensitively (API.md §0) and
//! because the pipeline needs the template to look up the request schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::api::{ApiError, ConnKill, Ctx, Endpoint, HandlerResult, RouteMatch};
use super::auth::AuthFailure;
use super::faults::FaultAction;
use super::journal::{JournalEntry, redact};
use super::state::SimState;
use super::{device_code, handlers, restore, schema};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

const MB: &str = "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes";

/// (method, vendor template, endpoint).
pub(crate) const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("POST", "/v8/token", Endpoint::Token),
    ("POST", "/v8/token/logout", Endpoint::Logout),
    ("GET", "/v8/Jobs", Endpoint::Jobs),
    ("POST", "/v8/Jobs/{jobId}/explore", Endpoint::JobExplore),
    ("GET", "/v8/Organizations", Endpoint::Organizations),
    ("GET", "/v8/RestorePoints", Endpoint::RestorePoints),
    (
        "GET",
        "/v8/Organizations/{organizationId}",
        Endpoint::Organization,
    ),
    (
        "POST",
        "/v8/Organizations/{organizationId}/explore",
        Endpoint::OrganizationExplore,
    ),
    ("GET", "/v8/RestoreSessions", Endpoint::RestoreSessions),
    (
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}",
        Endpoint::RestoreSession,
    ),
    (
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/Events",
        Endpoint::SessionEvents,
    ),
    (
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/Statistics",
        Endpoint::SessionStatistics,
    ),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/Stop",
        Endpoint::SessionStop,
    ),
    (
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/organization",
        Endpoint::SessionOrganization,
    ),
    ("GET", MB, Endpoint::Mailboxes),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/restoreDeviceCode",
        Endpoint::DeviceCode,
    ),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/restore",
        Endpoint::BulkRestore,
    ),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/search",
        Endpoint::OrganizationSearch,
    ),
    (
        "GET",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}",
        Endpoint::Mailbox,
    ),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/exportToPst",
        Endpoint::ExportPst,
    ),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restore",
        Endpoint::MailboxRestore,
    ),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/restoreTo",
        Endpoint::MailboxRestoreTo,
    ),
    (
        "POST",
        "/v8/RestoreSessions/{restoreSessionId}/organization/mailboxes/{mailboxId}/search",
        Endpoint::MailboxSearch,
    ),
];

enum Routing {
    Found(RouteMatch),
    WrongMethod,
    NotFound,
}

/// Matches a path case-insensitively. Among the routes of the request's method, the one with
/// the most literal segments wins (`mailboxes/search` beats `mailboxes/{mailboxId}`), as in
/// ASP.NET routing; a path that only matches other methods is `WrongMethod`.
fn route(method: &str, path: &str) -> Routing {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut best: Option<(usize, RouteMatch)> = None;
    let mut other_method = false;
    for (m, template, endpoint) in ROUTES {
        let t: Vec<&str> = template.split('/').collect();
        if t.len() != segments.len() {
            continue;
        }
        let mut params = BTreeMap::new();
        let mut literals = 0;
        let ok = t.iter().zip(&segments).all(|(ts, ps)| {
            if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.insert(name.to_string(), ps.to_ascii_lowercase());
                !ps.is_empty()
            } else {
                literals += 1;
                ts.eq_ignore_ascii_case(ps)
            }
        });
        if !ok {
            continue;
        }
        if *m != method {
            other_method = true;
        } else if best.as_ref().is_none_or(|(l, _)| literals > *l) {
            best = Some((
                literals,
                RouteMatch {
                    endpoint: *endpoint,
                    template,
                    params,
                },
            ));
        }
    }
    match best {
        Some((_, found)) => Routing::Found(found),
        None if other_method => Routing::WrongMethod,
        None => Routing::NotFound,
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Parses the body for the journal and for validation: JSON, or form fields as an object.
fn parse_body(
    headers: &HeaderMap,
    bytes: &Bytes,
    template: Option<&str>,
) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    match media_type(headers).as_str() {
        "application/x-www-form-urlencoded" => {
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            Ok(schema::form_to_json("POST", template.unwrap_or(""), &pairs))
        }
        _ => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"))),
    }
}

/// The single axum handler: everything goes through here.
pub(crate) async fn dispatch(State(state): State<Arc<SimState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let seq = state.next_seq();
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().map(str::to_string);
    let kill = parts.extensions.get::<ConnKill>().cloned();
    let routing = if path.len() >= 4 && path[..4].eq_ignore_ascii_case("/v8/") {
        route(parts.method.as_str(), &path)
    } else {
        Routing::NotFound
    };
    let matched = match &routing {
        Routing::Found(m) => Some(m.clone()),
        _ => None,
    };
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let parsed = parse_body(&parts.headers, &bytes, matched.as_ref().map(|m| m.template));
    let mut entry = JournalEntry {
        seq,
        time: Utc::now(),
        method: parts.method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        route: matched.as_ref().map(|m| m.template.to_string()),
        params: matched
            .as_ref()
            .map(|m| m.params.clone())
            .unwrap_or_default(),
        body_sha256: (!bytes.is_empty()).then(|| hex::encode(Sha256::digest(&bytes))),
        body: parsed.as_ref().ok().filter(|v| !v.is_null()).map(redact),
        range: parts
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status: None,
        decided_status: None,
        fault: None,
        ignored_read_only: Vec::new(),
    };
    tracing::debug!(method = %parts.method, path = %path, "simulator request");

    let faults = state.faults.take(
        parts.method.as_str(),
        matched.as_ref().map(|m| m.endpoint),
        &path,
    );
    if !faults.is_empty() {
        entry.fault = Some(
            faults
                .iter()
                .map(FaultAction::label)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let response = match routing {
        Routing::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            None,
            format!("No HTTP resource was found that matches the request URI '{path}'."),
        )
        .into_response(),
        Routing::WrongMethod => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            format!(
                "The requested resource does not support http method '{}'.",
                parts.method
            ),
        )
        .into_response(),
        Routing::Found(route) => match pre_faults(&state, &faults, &route).await {
            Some(answer) => answer,
            None => {
                let ctx = Ctx {
                    method: parts.method.clone(),
                    route,
                    query: raw_query
                        .as_deref()
                        .map(|q| {
                            url::form_urlencoded::parse(q.as_bytes())
                                .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    bearer: bearer(&parts.headers),
                    headers: parts.headers.clone(),
                    body: Value::Null,
                    user: String::new(),
                    ignored: Vec::new(),
                };
                match prepare(&state, ctx, parsed, &bytes) {
                    Ok(ctx) => {
                        entry.ignored_read_only.clone_from(&ctx.ignored);
                        handle(&state, &ctx)
                            .await
                            .unwrap_or_else(IntoResponse::into_response)
                    }
                    Err(e) => e.into_response(),
                }
            }
        },
    };

    entry.decided_status = Some(response.status().as_u16());
    if faults.contains(&FaultAction::LoseResponse) {
        state.journal.record(entry);
        if let Some(kill) = kill {
            kill.0.cancel();
            // The connection task drops this future together with the connection.
            std::future::pending::<()>().await;
        }
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let response = match faults.iter().find_map(|f| match f {
        FaultAction::ExecuteThenAnswer {
            status,
            error_code,
            message,
            body,
        } => Some((*status, error_code, message, body)),
        _ => None,
    }) {
        Some((status, error_code, message, body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match body {
                Some(raw) => (
                    status,
                    [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                    raw.clone(),
                )
                    .into_response(),
                None => (status, axum::Json(exception_body(error_code, message))).into_response(),
            }
        }
        None => response,
    };
    let response = match faults.iter().find_map(|f| match f {
        FaultAction::Reframe {
            status,
            content_range,
            content_length,
        } => Some((*status, content_range.as_deref(), *content_length)),
        _ => None,
    }) {
        Some((status, range, length)) => reframe(response, status, range, length),
        None => response,
    };
    entry.status = Some(response.status().as_u16());
    state.journal.record(entry);
    match faults.iter().find_map(|f| match f {
        FaultAction::DropAfterBytes { bytes } => Some(*bytes),
        _ => None,
    }) {
        Some(cut) => cut_body(response, cut),
        None => response,
    }
}

/// The `RESTExceptionInfo` body of an injected error.
fn exception_body(error_code: &Option<String>, message: &Option<String>) -> Value {
    json!({
        "message": message.clone().unwrap_or_else(|| format!("Simulated failure ({})", error_code.as_deref().unwrap_or("no code"))),
        "errorCode": error_code,
        "stackTrace": null,
    })
}

/// Rewrites status, `Content-Range` and `Content-Length` of an answer (the `reframe` fault).
fn reframe(response: Response, status: u16, range: Option<&str>, length: Option<u64>) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::PARTIAL_CONTENT);
    parts.headers.remove(header::CONTENT_RANGE);
    if let Some(value) = range.and_then(|r| HeaderValue::from_str(r).ok()) {
        parts.headers.insert(header::CONTENT_RANGE, value);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    // A body with a known size would get its own Content-Length back from hyper: hand it over
    // as a stream, cut to the announced length so the framing stays valid.
    let cut = length.unwrap_or(u64::MAX);
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), 0u64),
        move |(mut inner, sent)| async move {
            use futures_util::StreamExt;
            if sent >= cut {
                return None;
            }
            match inner.next().await {
                Some(Ok(mut chunk)) => {
                    let room = usize::try_from(cut - sent).unwrap_or(usize::MAX);
                    if chunk.len() > room {
                        chunk = chunk.slice(..room);
                    }
                    let n = chunk.len() as u64;
                    Some((Ok(chunk), (inner, sent + n)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (inner, cut))),
                None => None,
            }
        },
    );
    if let Some(len) = length {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Applies the faults that act before the handler; returns an answer when one replaces it.
async fn pre_faults(
    state: &SimState,
    faults: &[FaultAction],
    route: &RouteMatch,
) -> Option<Response> {
    for fault in faults {
        match fault {
            FaultAction::Delay { duration } => tokio::time::sleep(*duration).await,
            FaultAction::ExpireTokens => state.with_data(|d| d.tokens.expire_all()),
            FaultAction::RemoveSession => {
                if let Some(id) = route
                    .params
                    .get("restoreSessionId")
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                {
                    state.with_data(|d| d.remove(id));
                }
            }
            FaultAction::Error {
                status,
                error_code,
                message,
            } => {
                let status =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = exception_body(error_code, message);
                return Some((status, axum::Json(body)).into_response());
            }
            FaultAction::Status { status } => {
                return Some(
                    StatusCode::from_u16(*status)
                        .unwrap_or(StatusCode::BAD_GATEWAY)
                        .into_response(),
                );
            }
            FaultAction::TooManyRequests {
                retry_after_seconds,
            } => {
                let mut r =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, None, "Too many requests.")
                        .into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
                return Some(r);
            }
            FaultAction::DropAfterBytes { .. }
            | FaultAction::LoseResponse
            | FaultAction::ExecuteThenAnswer { .. }
            | FaultAction::Reframe { .. } => {}
        }
    }
    None
}

/// Authentication and validation of query and body.
fn prepare(
    state: &SimState,
    mut ctx: Ctx,
    parsed: Result<Value, ApiError>,
    raw: &Bytes,
) -> Result<Ctx, ApiError> {
    let endpoint = ctx.route.endpoint;
    if endpoint != Endpoint::Token {
        let user = state.with_data(|d| d.tokens.check(ctx.bearer.as_deref()));
        ctx.user = user.map_err(|failure| {
            let message = match failure {
                AuthFailure::Missing => "Authorization has been denied for this request.",
                AuthFailure::Unknown => {
                    "Authorization has been denied for this request: unknown token."
                }
                AuthFailure::Expired => {
                    "Authorization has been denied for this request: the token has expired."
                }
            };
            ApiError::new(StatusCode::UNAUTHORIZED, None, message)
        })?;
    }
    schema::validate_query(ctx.method.as_str(), ctx.route.template, &ctx.query)
        .map_err(|v| ApiError::invalid(format!("Query parameter {v}")))?;
    let media = media_type(&ctx.headers);
    let needs_body =
        schema::validate_request(ctx.method.as_str(), ctx.route.template, &Value::Null).is_err();
    if needs_body && !raw.is_empty() {
        let form_ok = endpoint == Endpoint::Token && media == "application/x-www-form-urlencoded";
        if media != "application/json" && !form_ok {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                format!(
                    "The request entity's media type '{media}' is not supported for this resource."
                ),
            ));
        }
    }
    let body = parsed?;
    let media = if media.is_empty() {
        "application/json".to_string()
    } else {
        media
    };
    ctx.ignored = schema::bind_request_as(ctx.method.as_str(), ctx.route.template, &media, &body)
        .map_err(|v| ApiError::invalid(v.to_string()))?;
    ctx.body = body;
    Ok(ctx)
}

async fn handle(state: &Arc<SimState>, ctx: &Ctx) -> HandlerResult {
    use Endpoint as E;
    match ctx.route.endpoint {
        E::Token => handlers::token(state, ctx),
        E::Logout => handlers::logout(state, ctx),
        E::Jobs => handlers::jobs(state, ctx),
        E::JobExplore | E::OrganizationExplore => handlers::explore(state, ctx),
        E::Organizations => handlers::organizations(state, ctx),
        E::Organization => handlers::organization(state, ctx),
        E::RestoreSessions => handlers::sessions(state, ctx),
        E::RestoreSession => handlers::session(state, ctx),
        E::SessionEvents => handlers::events(state, ctx),
        E::SessionStatistics => handlers::statistics(state, ctx),
        E::SessionStop => handlers::stop(state, ctx),
        E::SessionOrganization => handlers::session_organization(state, ctx),
        E::Mailboxes => handlers::mailboxes(state, ctx),
        E::Mailbox => handlers::mailbox(state, ctx),
        E::BulkRestore | E::MailboxRestore | E::MailboxRestoreTo => restore::restore(state, ctx),
        E::DeviceCode => device_code::request(state, ctx),
        E::ExportPst => handlers::export(state, ctx).await,
        E::MailboxSearch | E::OrganizationSearch => handlers::search(state, ctx),
        E::RestorePoints => handlers::restore_points(state, ctx),
    }
}

/// Replaces the body with one that fails after `cut` bytes while `Content-Length` still
/// announces the full length, so the client sees a connection broken mid-body.
fn cut_body(response: Response, cut: u64) -> Response {
    let (mut parts, body) = response.into_parts();
    if let Some(len) = body.size_hint().exact() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), 0u64, false),
        move |(mut inner, sent, done)| async move {
            use futures_util::StreamExt;
            if done {
                return None;
            }
            if sent >= cut {
                // Give hyper a pending poll (and the client a moment) so the bytes before the
                // cut are flushed to the socket before the connection is aborted.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let err =
                    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated drop");
                return Some((Err(err), (inner, sent, true)));
            }
            match inner.next().await {
                Some(Ok(mut chunk)) => {
                    let room = usize::try_from(cut - sent).unwrap_or(usize::MAX);
                    if chunk.len() > room {
                        chunk = chunk.slice(..room);
                    }
                    let n = chunk.len() as u64;
                    Some((Ok(chunk), (inner, sent + n, false)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (inner, sent, true))),
                None => None,
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_a_vendor_operation() {
        for (method, template, _) in ROUTES {
            let op = schema::find_operation(method, template).expect("declared");
            assert_eq!(op.template, *template);
        }
    }

    #[test]
    fn routing_is_case_insensitive_and_prefers_literals() {
        let found = |m: &str, p: &str| match route(m, p) {
            Routing::Found(r) => Some(r.endpoint),
            _ => None,
        };
        assert_eq!(found("POST", "/V8/TOKEN"), Some(Endpoint::Token));
        assert_eq!(
            found(
                "POST",
                "/v8/restoresessions/AB/organization/mailboxes/search"
            ),
            Some(Endpoint::OrganizationSearch)
        );
        assert_eq!(
            found(
                "POST",
                "/v8/RestoreSessions/ab/organization/mailboxes/restore"
            ),
            Some(Endpoint::BulkRestore)
        );
        assert_eq!(
            found("GET", "/v8/RestoreSessions/ab/organization/mailboxes/cd"),
            Some(Endpoint::Mailbox)
        );
        assert!(matches!(route("GET", "/v8/token"), Routing::WrongMethod));
        assert!(matches!(route("GET", "/v8/nothing"), Routing::NotFound));
    }
}
