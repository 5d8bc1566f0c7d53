//! The types every file of the request pipeline shares: the [`Endpoint`] kinds, the matched
//! route, what a handler gets about its request ([`Ctx`]) and what it answers ([`ApiError`],
//! [`HandlerResult`]), and the accept loop's connection kill switch.
//!
//! A leaf: `routes` (the pipeline), `handlers`, `restore`, `faults` and `server` import it, and
//! it imports none of them.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The endpoints the simulator serves (one per vendor operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    Token,
    Logout,
    Jobs,
    JobExplore,
    Organizations,
    Organization,
    OrganizationExplore,
    RestoreSessions,
    RestoreSession,
    SessionEvents,
    SessionStatistics,
    SessionStop,
    SessionOrganization,
    Mailboxes,
    Mailbox,
    BulkRestore,
    MailboxRestore,
    MailboxRestoreTo,
    DeviceCode,
    ExportPst,
    MailboxSearch,
    OrganizationSearch,
    RestorePoints,
}

/// A matched route.
#[derive(Debug, Clone)]
pub(crate) struct RouteMatch {
    pub endpoint: Endpoint,
    pub template: &'static str,
    /// Path parameters by template name, lower-cased.
    pub params: BTreeMap<String, String>,
}

/// An error answer with a `RESTExceptionInfo` body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: Option<&'static str>,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Some("ResourceNotFound"), message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            Some("ParameterValidationFailure"),
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"message": self.message, "errorCode": self.code, "stackTrace": null});
        (self.status, axum::Json(body)).into_response()
    }
}

/// What a handler gets about its request.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub method: Method,
    pub route: RouteMatch,
    /// Query parameters with lower-cased names.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    /// The validated JSON body (`Null` when none).
    pub body: Value,
    /// The authenticated user (empty for the token endpoint).
    pub user: String,
    /// The bearer token presented.
    pub bearer: Option<String>,
    /// Read-only properties of the body that were ignored (paths), as a real server does.
    pub ignored: Vec<String>,
}

impl Ctx {
    pub(crate) fn param(&self, name: &str) -> &str {
        self.route.params.get(name).map_or("", String::as_str)
    }

    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.query
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Closes the client's connection without an answer (inserted by the accept loop).
#[derive(Debug, Clone)]
pub(crate) struct ConnKill(pub CancellationToken);

pub(crate) type HandlerResult = Result<Response, ApiError>;
