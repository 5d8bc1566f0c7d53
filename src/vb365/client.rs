//! [`Client`]: one reqwest client per configured VB365 server, with token handling, error
//! classification and one method per endpoint.
//!
//! # Timeouts
//!
//! Connecting is bounded by [`CONNECT_TIMEOUT`]. Every API call gets the server's
//! `requestTimeout` as a per-request deadline. The PST export is the exception: the server
//! builds the whole PST before it sends the first byte, so the call only bounds the wait for the
//! response headers (the caller's first-byte timeout) and hands the body over as a stream without
//! any deadline; the download engine applies its idle-read timeout itself.
//!
//! # Repeating a call after a 401
//!
//! A 401 means the server rejected the bearer token before doing anything, so after one token
//! refresh (or a new password grant when the refresh fails) the call is sent again exactly once.
//! That holds for the three restore POSTs too: they are never repeated when their outcome is
//! unknown (timeouts, broken connections → [`ErrorClass::Ambiguous`]), but a 401 is a known
//! outcome, "not executed", and the resend is the first real attempt. A second 401 is returned as
//! [`ErrorClass::Retryable`]: the token endpoint has just accepted the credentials, so the
//! refusal is about the token's life on the server (revoked or expired again in between), and a
//! later attempt under the step's retry policy is the remedy. Bad credentials fail at the token
//! grant itself, as [`ErrorClass::Auth`].
//!
//! # Lost sessions
//!
//! When a call under `/v8/RestoreSessions/{id}/…` gets `ResourceNotFound` (or a bare 404), the
//! client reads `GET /v8/RestoreSessions/{id}`: if that is 404 or the session is `Stopped`, the
//! error is [`ErrorClass::SessionLost`] (open a new session); if the session is there, it stays
//! permanent (the missing thing was the mailbox or item, not the session); if that read itself
//! fails transiently (5xx, 429, a broken connection), nobody can tell yet and the error is
//! [`ErrorClass::Retryable`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::Operation;
use super::auth::{Token, TokenResponse, TokenSlot, TokenState};
use super::error::{
    ApiError, ErrorClass, ErrorCode, ErrorKind, Outcome, Transport, classify, excerpt,
    parse_error_body, parse_retry_after, sanitise_path, transport_message,
};
use super::export::{ContentRange, PstExport};
use super::model::{
    AsyncRestoreResponse, ExchangeItem, Mailbox, Organization, Page, RestoreSession,
    RestoreSessionEvent, RestoreSessionStatistics, SessionState, timestamp,
};
use super::paging::{Listing, PageRequest, PagingError, link_query};
use super::request::{
    BulkRestoreOptions, ExploreOptions, ExportToPstOptions, OrganizationExploreOptions,
    RestoreToDifferentLocation, RestoreToOriginalLocation, SearchOptions, TokenRequest,
};
use crate::config::{SecretContext, SecretRef, ServerConfig};

/// Bound on establishing a TCP + TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Items per page of paged calls unless configured otherwise (`pageSize`).
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// Errors building a [`Client`] from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    // The cause is part of the message (not a `#[source]`) so `{err:#}` prints it once.
    #[error("server {server}: cannot read caFile {path}: {cause}")]
    CaFileRead {
        server: String,
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("server {server}: caFile {path}: {message}")]
    CaFileInvalid {
        server: String,
        path: std::path::PathBuf,
        message: String,
    },
    #[error("server {server}: cannot set up the HTTP client: {cause}")]
    Build {
        server: String,
        cause: reqwest::Error,
    },
}

/// A VB365 server connection. Cheap to clone (the HTTP pool and token state are shared).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    page_size: u32,
    /// Where the password is looked up: per handle, not shared, so a run keeps the `secretsDir`
    /// it started with while a reload gives the next run another one ([`Client::with_secrets`]).
    secrets: Arc<SecretContext>,
}

struct Inner {
    server: Arc<str>,
    /// Server URL without a trailing slash (`https://host:4443`).
    base: String,
    http: reqwest::Client,
    request_timeout: Duration,
    username: String,
    password: SecretRef,
    tokens: TokenSlot,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.server)
            .field("base", &self.inner.base)
            .field("username", &self.inner.username)
            .field("password", &self.inner.password)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

/// Optional filters of `GET /v8/RestoreSessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSessionFilter {
    pub start_time_from: Option<DateTime<Utc>>,
    pub start_time_to: Option<DateTime<Utc>>,
    pub end_time_from: Option<DateTime<Utc>>,
    pub end_time_to: Option<DateTime<Utc>>,
    pub order_asc: Option<bool>,
    pub order_by: Option<SessionOrder>,
}

/// `orderBy` of `GET /v8/RestoreSessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOrder {
    CreationTime,
    EndTime,
}

/// How long a call may take: the per-request deadline, or only a bound on the response headers.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Request,
    Headers(Duration),
}

/// One request, described so it can be sent again after a token refresh.
struct Call<'a, B: ?Sized> {
    op: Operation,
    /// Rendered path, e.g. `/v8/RestoreSessions/…/Events`.
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<&'a B>,
    /// The restore session the path is under, for the lost-session check.
    session: Option<Uuid>,
    accept: &'static str,
    range_start: Option<u64>,
    deadline: Deadline,
    /// The query of a checked `_links.next` href, sent instead of `query`.
    link_query: Option<String>,
}

impl<B: ?Sized> Call<'_, B> {
    /// The path as it may appear in errors and logs.
    fn display_path(&self) -> String {
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
enum Failure {
    Status {
        status: StatusCode,
        body: Vec<u8>,
        retry_after: Option<Duration>,
    },
    Transport(Transport, String),
    Error(ApiError),
}

/// A call with no JSON body.
type NoBody = ();

fn render(op: Operation, params: &[&str]) -> String {
    // Templates and call sites are written together; a mismatch is a programming error caught by
    // every test that calls the endpoint, so the fallback is just the raw template.
    op.path(params)
        .unwrap_or_else(|| op.path_template().to_string())
}

impl Client {
    /// Builds the client of one configured server. The password is not read here; it is
    /// resolved from its secret reference whenever a password grant is needed.
    pub fn new(server: &ServerConfig, secrets: &SecretContext) -> Result<Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(60))
            .user_agent(concat!("restorectl/", env!("CARGO_PKG_VERSION")))
            // VB365 does not redirect; following one would resend bodies with secrets elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &server.ca_file {
            let pem = std::fs::read(path).map_err(|cause| ClientError::CaFileRead {
                server: server.name.clone(),
                path: path.clone(),
                cause,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::CaFileInvalid {
                    server: server.name.clone(),
                    path: path.clone(),
                    message: format!("not a PEM certificate bundle: {e}"),
                }
            })?;
            if certs.is_empty() {
                return Err(ClientError::CaFileInvalid {
                    server: server.name.clone(),
                    path: path.clone(),
                    message: "no PEM certificate found".into(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        if server.insecure_skip_tls_verify {
            tracing::warn!(
                server = %server.name,
                url = %server.url,
                "insecureSkipTlsVerify is set: the server certificate is NOT verified; use caFile instead"
            );
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|cause| ClientError::Build {
            server: server.name.clone(),
            cause,
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                server: Arc::from(server.name.as_str()),
                base: server.url.as_str().trim_end_matches('/').to_string(),
                http,
                request_timeout: server.request_timeout,
                username: server.username.clone(),
                password: server.password.clone(),
                tokens: TokenSlot::new(TokenState::default()),
            }),
            page_size: DEFAULT_PAGE_SIZE,
            secrets: Arc::new(secrets.clone()),
        })
    }

    /// The same client (connection pool and tokens shared) reading the password through
    /// `secrets` at its next password grant.
    pub fn with_secrets(mut self, secrets: &SecretContext) -> Client {
        self.secrets = Arc::new(secrets.clone());
        self
    }

    /// The same client with another page size for paged calls (clamped to 1..=10,000).
    pub fn with_page_size(mut self, page_size: u32) -> Client {
        self.page_size = page_size.clamp(1, 10_000);
        self
    }

    /// The configured server name.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The page size of paged calls.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    // ---------------------------------------------------------------------------------------
    // Tokens
    // ---------------------------------------------------------------------------------------

    /// A usable access token and its generation: the current one while fresh, else a refreshed
    /// one (refresh grant, falling back to a password grant).
    async fn bearer(&self) -> Result<(SecretString, u64), ApiError> {
        let mut state = self.inner.tokens.lock().await;
        let now = tokio::time::Instant::now();
        if let Some(t) = &state.token
            && t.is_fresh(now)
        {
            return Ok((t.access.clone(), t.generation));
        }
        self.renew(&mut state).await
    }

    /// Called after a 401 with the generation of the token that was refused. If nobody has
    /// replaced that token meanwhile, renew it; otherwise reuse the newer one.
    async fn reauthenticate(&self, refused: u64) -> Result<(SecretString, u64), ApiError> {
        let mut state = self.inner.tokens.lock().await;
        if let Some(t) = &state.token
            && t.generation != refused
        {
            return Ok((t.access.clone(), t.generation));
        }
        self.renew(&mut state).await
    }

    /// Gets a new token while holding the lock (so there is one renewal at a time).
    async fn renew(&self, state: &mut TokenState) -> Result<(SecretString, u64), ApiError> {
        let refresh = state.token.take().and_then(|t| t.refresh);
        let response = match refresh {
            Some(rt) => match self.grant(&TokenRequest::refresh(rt)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(
                        server = %self.inner.server,
                        error = %e,
                        "token refresh failed; trying a password grant"
                    );
                    self.password_grant().await?
                }
            },
            None => self.password_grant().await?,
        };
        state.last_generation += 1;
        let token =
            Token::from_response(response, state.last_generation, tokio::time::Instant::now());
        let out = (token.access.clone(), token.generation);
        state.token = Some(token);
        Ok(out)
    }

    async fn password_grant(&self) -> Result<TokenResponse, ApiError> {
        let password = self.inner.password.resolve(&self.secrets).map_err(|e| {
            self.error(
                Operation::Token,
                Operation::Token.path_template().to_string(),
                ErrorClass::Auth,
                ErrorKind::Secret,
                format!("cannot read the server password: {e}"),
            )
        })?;
        self.grant(&TokenRequest::password(&self.inner.username, password))
            .await
    }

    /// `POST /v8/token` (form-encoded, anonymous).
    async fn grant(&self, form: &TokenRequest) -> Result<TokenResponse, ApiError> {
        let op = Operation::Token;
        let path = op.path_template().to_string();
        let sent = self
            .inner
            .http
            .post(format!("{}{path}", self.inner.base))
            .header(ACCEPT, "application/json")
            .form(form)
            .timeout(self.inner.request_timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let t = Transport::from_reqwest(&e);
                return Err(self.transport_error(op, path, t, transport_message(t, &e)));
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let retry_after = retry_after(&resp);
            let body = error_body(resp).await;
            return Err(self.status_error(op, path, status, &body, retry_after, true, false));
        }
        self.decode(op, path, resp).await
    }

    /// Revokes the current token (`POST /v8/token/logout`) and forgets it. Does nothing when no
    /// token was obtained.
    pub async fn logout(&self) -> Result<(), ApiError> {
        let mut state = self.inner.tokens.lock().await;
        let Some(token) = state.token.take() else {
            return Ok(());
        };
        let call: Call<NoBody> = Call {
            op: Operation::Logout,
            path: render(Operation::Logout, &[]),
            query: Vec::new(),
            body: None,
            session: None,
            accept: "application/json",
            range_start: None,
            deadline: Deadline::Request,
            link_query: None,
        };
        match self.send_once(&call, &token.access).await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            // The token was already invalid: the goal, no valid token left, is reached.
            Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let ra = retry_after(&resp);
                let body = error_body(resp).await;
                Err(self.status_error(
                    call.op,
                    call.display_path(),
                    status,
                    &body,
                    ra,
                    false,
                    false,
                ))
            }
            Err(Failure::Transport(t, m)) => {
                Err(self.transport_error(call.op, call.display_path(), t, m))
            }
            Err(Failure::Error(e)) => Err(e),
            Err(Failure::Status { .. }) => Ok(()),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Sending
    // ---------------------------------------------------------------------------------------

    /// Sends one request with `token`; a response of any status is `Ok`.
    async fn send_once<B: Serialize + ?Sized>(
        &self,
        call: &Call<'_, B>,
        token: &SecretString,
    ) -> Result<reqwest::Response, Failure> {
        let url = match &call.link_query {
            Some(q) => format!("{}{}?{q}", self.inner.base, call.path),
            None => format!("{}{}", self.inner.base, call.path),
        };
        let mut rb = self
            .inner
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
            Deadline::Request => rb.timeout(self.inner.request_timeout).send().await,
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

    /// Sends a call with a bearer token, renews the token once after a 401 and sends again,
    /// and returns a success response or the classified error.
    async fn execute<B: Serialize + ?Sized>(
        &self,
        call: &Call<'_, B>,
    ) -> Result<reqwest::Response, ApiError> {
        match self.execute_raw(call).await {
            Ok(r) => Ok(r),
            Err(f) => Err(self.classify_failure(call, f).await),
        }
    }

    async fn execute_raw<B: Serialize + ?Sized>(
        &self,
        call: &Call<'_, B>,
    ) -> Result<reqwest::Response, Failure> {
        let (token, generation) = self.bearer().await.map_err(Failure::Error)?;
        let mut resp = self.send_once(call, &token).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            tracing::debug!(
                server = %self.inner.server,
                path = %call.display_path(),
                "401 Unauthorized; renewing the token and sending once more"
            );
            drop(resp);
            let (token, _) = self
                .reauthenticate(generation)
                .await
                .map_err(Failure::Error)?;
            resp = self.send_once(call, &token).await?;
        }
        let status = resp.status();
        tracing::debug!(
            server = %self.inner.server,
            method = %call.op.method(),
            path = %call.display_path(),
            status = status.as_u16(),
            "vb365 call"
        );
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(&resp);
        let body = error_body(resp).await;
        Err(Failure::Status {
            status,
            body,
            retry_after,
        })
    }

    async fn classify_failure<B: Serialize + ?Sized>(
        &self,
        call: &Call<'_, B>,
        failure: Failure,
    ) -> ApiError {
        match failure {
            Failure::Error(e) => e,
            Failure::Transport(t, message) => {
                self.transport_error(call.op, call.display_path(), t, message)
            }
            Failure::Status {
                status,
                body,
                retry_after,
            } => {
                let parsed = parse_error_body(status, &body);
                let not_found = match &parsed.error_code {
                    Some(ErrorCode::ResourceNotFound) => true,
                    None => status == StatusCode::NOT_FOUND,
                    Some(_) => false,
                };
                let session = match call.session {
                    Some(id) if not_found => {
                        if call.op == Operation::GetRestoreSession {
                            SessionProbe::Gone
                        } else {
                            self.probe_session(id).await
                        }
                    }
                    _ => SessionProbe::Alive,
                };
                let mut error = self.status_error(
                    call.op,
                    call.display_path(),
                    status,
                    &body,
                    retry_after,
                    false,
                    session == SessionProbe::Gone,
                );
                // The server answered "not found" but we could not tell whether our session
                // is gone: asking again later can tell, so this is not a permanent failure.
                // (A refusal before execution — 404 — means the request was not acted on, so
                // even a restore POST may be sent again; a 5xx naming `ResourceNotFound` on a
                // restore POST stays ambiguous.)
                if session == SessionProbe::Unknown && error.class != ErrorClass::Ambiguous {
                    error.class = ErrorClass::Retryable;
                }
                error
            }
        }
    }

    /// Reads the restore session to tell "the session is gone" from "something under it is";
    /// `Unknown` when that read itself fails (5xx, 429, a broken connection).
    async fn probe_session(&self, id: Uuid) -> SessionProbe {
        let id_text = id.to_string();
        let probe: Call<NoBody> =
            self.get_call(Operation::GetRestoreSession, &[&id_text], Some(id));
        match self.execute_raw(&probe).await {
            Ok(resp) => match resp.bytes().await {
                Ok(b) => match serde_json::from_slice::<RestoreSession>(&b) {
                    Ok(s) if s.state == SessionState::Stopped => SessionProbe::Gone,
                    Ok(_) => SessionProbe::Alive,
                    Err(_) => SessionProbe::Unknown,
                },
                Err(_) => SessionProbe::Unknown,
            },
            Err(Failure::Status { status, body, .. }) => {
                let code = parse_error_body(status, &body).error_code;
                if status == StatusCode::NOT_FOUND || code == Some(ErrorCode::ResourceNotFound) {
                    SessionProbe::Gone
                } else if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || matches!(
                        code,
                        Some(
                            ErrorCode::ProxyOffline
                                | ErrorCode::Timeout
                                | ErrorCode::OperationConflict
                        )
                    )
                {
                    SessionProbe::Unknown
                } else {
                    SessionProbe::Alive
                }
            }
            Err(_) => SessionProbe::Unknown,
        }
    }

    /// Reads a JSON success body.
    async fn decode<T: DeserializeOwned>(
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

    async fn call_json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        call: Call<'_, B>,
    ) -> Result<T, ApiError> {
        let resp = self.execute(&call).await?;
        self.decode(call.op, call.display_path(), resp).await
    }

    fn get_call<'a>(
        &self,
        op: Operation,
        params: &[&str],
        session: Option<Uuid>,
    ) -> Call<'a, NoBody> {
        Call {
            op,
            path: render(op, params),
            query: Vec::new(),
            body: None,
            session,
            accept: "application/json",
            range_start: None,
            deadline: Deadline::Request,
            link_query: None,
        }
    }

    fn post_call<'a, B: ?Sized>(
        &self,
        op: Operation,
        params: &[&str],
        session: Option<Uuid>,
        body: Option<&'a B>,
    ) -> Call<'a, B> {
        Call {
            op,
            path: render(op, params),
            query: Vec::new(),
            body,
            session,
            accept: "application/json",
            range_start: None,
            deadline: Deadline::Request,
            link_query: None,
        }
    }

    /// Follows a paged GET/POST to the end with this client's page size.
    async fn all_pages<T, B>(
        &self,
        base: Call<'_, B>,
        with_set_id: bool,
    ) -> Result<Vec<T>, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let mut listing = Listing::new(self.page_size);
        self.continue_pages(&base, with_set_id, &mut listing)
            .await?;
        Ok(listing.into_items())
    }

    /// Reads the pages of `listing` that are still missing. A failed page leaves `listing` as it
    /// was, so calling again asks for that page, not for the collection from offset 0.
    ///
    /// A page's `_links.next` is followed when the call has no query of its own (a link that
    /// dropped a filter would change what is listed) and the link stays on the same server and
    /// collection ([`link_query`]); otherwise offset arithmetic decides the next page.
    async fn continue_pages<T, B>(
        &self,
        base: &Call<'_, B>,
        with_set_id: bool,
        listing: &mut Listing<T>,
    ) -> Result<(), ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let server = url::Url::parse(&format!("{}/", self.inner.base)).ok();
        let collection = url::Url::parse(&format!("{}{}", self.inner.base, base.path)).ok();
        let refused = std::sync::atomic::AtomicBool::new(false);
        let (server, collection, refused) = (&server, &collection, &refused);
        listing
            .advance(|req: PageRequest, link: Option<String>| async move {
                let followed = match (link, server, collection) {
                    (Some(href), Some(server), Some(collection)) if base.query.is_empty() => {
                        let query = link_query(server, collection, &href);
                        if query.is_none() && !refused.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                server = %self.inner.server,
                                path = %base.display_path(),
                                link = %sanitise_path(&href),
                                "the server's `_links.next` leaves the collection being listed; not following it (paging by offset instead)"
                            );
                        }
                        query
                    }
                    _ => None,
                };
                let next_query = followed.map(|mut q| {
                    let has_set = q
                        .split('&')
                        .any(|p| p.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("setId")));
                    if with_set_id
                        && !has_set
                        && let Some(set) = req.set_id
                    {
                        q.push_str(&format!("&setId={set}"));
                    }
                    q
                });
                let mut query = base.query.clone();
                query.push(("offset", req.offset.to_string()));
                query.push(("limit", req.limit.to_string()));
                if with_set_id && let Some(set) = req.set_id {
                    query.push(("setId", set.to_string()));
                }
                let call = Call {
                    op: base.op,
                    path: base.path.clone(),
                    query,
                    body: base.body,
                    session: base.session,
                    accept: base.accept,
                    range_start: None,
                    deadline: base.deadline,
                    link_query: next_query,
                };
                self.call_json::<Page<T>, B>(call).await
            })
            .await
            .map_err(|e| match e {
                PagingError::Fetch(e) => e,
                PagingError::Endless {
                    pages,
                    page_size,
                    items,
                } => self.error(
                    base.op,
                    base.display_path(),
                    ErrorClass::Permanent,
                    ErrorKind::Decode,
                    format!(
                        "stopped after {pages} full pages of {page_size} ({items} items) without reaching the end: either the collection is larger than {pages} × `pageSize` (raise `pageSize` in the daemon configuration, at most 10000) or the server ignores `offset`"
                    ),
                ),
            })
    }

    // ---------------------------------------------------------------------------------------
    // Error construction
    // ---------------------------------------------------------------------------------------

    fn error(
        &self,
        op: Operation,
        path: String,
        class: ErrorClass,
        kind: ErrorKind,
        message: String,
    ) -> ApiError {
        ApiError {
            server: self.inner.server.clone(),
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

    fn transport_error(
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
    fn status_error(
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
            server: self.inner.server.clone(),
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

    // ---------------------------------------------------------------------------------------
    // Organizations and explore
    // ---------------------------------------------------------------------------------------

    /// `GET /v8/Organizations`, all pages.
    pub async fn organizations(&self) -> Result<Vec<Organization>, ApiError> {
        self.all_pages(
            self.get_call(Operation::ListOrganizations, &[], None),
            false,
        )
        .await
    }

    /// `GET /v8/Organizations/{id}`.
    pub async fn organization(&self, id: Uuid) -> Result<Organization, ApiError> {
        let id = id.to_string();
        self.call_json(self.get_call(Operation::GetOrganization, &[&id], None))
            .await
    }

    /// Finds an organisation by id (a uuid) or by `name`/`officeName` (case-insensitive). The
    /// not-found error lists the organisations that exist.
    pub async fn resolve_organization(&self, name_or_id: &str) -> Result<Organization, ApiError> {
        if let Ok(id) = Uuid::parse_str(name_or_id.trim()) {
            return self.organization(id).await;
        }
        let wanted = name_or_id.trim();
        let all = self.organizations().await?;
        let matches = |o: &Organization| {
            o.name.eq_ignore_ascii_case(wanted)
                || o.office_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
        };
        if let Some(found) = all.iter().find(|o| matches(o)) {
            return Ok(found.clone());
        }
        let known: Vec<String> = all
            .iter()
            .map(|o| match &o.office_name {
                Some(office) if !office.eq_ignore_ascii_case(&o.name) => {
                    format!("{} ({office})", o.name)
                }
                _ => o.name.clone(),
            })
            .collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        Err(self.error(
            Operation::ListOrganizations,
            Operation::ListOrganizations.path_template().to_string(),
            ErrorClass::Permanent,
            ErrorKind::NotFound,
            format!("organization `{wanted}` not found; the server has: {known}"),
        ))
    }

    /// `POST /v8/Organizations/{id}/explore` → a new restore session (201).
    pub async fn explore_organization(
        &self,
        organization_id: Uuid,
        options: &OrganizationExploreOptions,
    ) -> Result<RestoreSession, ApiError> {
        let id = organization_id.to_string();
        self.call_json(self.post_call(Operation::ExploreOrganization, &[&id], None, Some(options)))
            .await
    }

    /// `POST /v8/Jobs/{id}/explore` → a new restore session (201).
    pub async fn explore_job(
        &self,
        job_id: Uuid,
        options: &ExploreOptions,
    ) -> Result<RestoreSession, ApiError> {
        let id = job_id.to_string();
        self.call_json(self.post_call(Operation::ExploreJob, &[&id], None, Some(options)))
            .await
    }

    // ---------------------------------------------------------------------------------------
    // Restore sessions
    // ---------------------------------------------------------------------------------------

    /// `GET /v8/RestoreSessions` with filters, all pages.
    pub async fn restore_sessions(
        &self,
        filter: &RestoreSessionFilter,
    ) -> Result<Vec<RestoreSession>, ApiError> {
        let mut call = self.get_call(Operation::ListRestoreSessions, &[], None);
        let times = [
            ("startTimeFrom", filter.start_time_from),
            ("startTimeTo", filter.start_time_to),
            ("endTimeFrom", filter.end_time_from),
            ("endTimeTo", filter.end_time_to),
        ];
        for (key, value) in times {
            if let Some(t) = value {
                call.query.push((key, timestamp::format(&t)));
            }
        }
        if let Some(asc) = filter.order_asc {
            call.query.push(("orderAsc", asc.to_string()));
        }
        if let Some(by) = filter.order_by {
            let v = match by {
                SessionOrder::CreationTime => "CreationTime",
                SessionOrder::EndTime => "EndTime",
            };
            call.query.push(("orderBy", v.to_string()));
        }
        self.all_pages(call, false).await
    }

    /// `GET /v8/RestoreSessions/{id}`.
    pub async fn restore_session(&self, id: Uuid) -> Result<RestoreSession, ApiError> {
        let s = id.to_string();
        self.call_json(self.get_call(Operation::GetRestoreSession, &[&s], Some(id)))
            .await
    }

    /// `POST /v8/RestoreSessions/{id}/Stop` (204).
    pub async fn stop_restore_session(&self, id: Uuid) -> Result<(), ApiError> {
        let s = id.to_string();
        let call: Call<NoBody> =
            self.post_call(Operation::StopRestoreSession, &[&s], Some(id), None);
        self.execute(&call).await.map(drop)
    }

    /// `GET /v8/RestoreSessions/{id}/Events`, all pages.
    pub async fn restore_session_events(
        &self,
        id: Uuid,
    ) -> Result<Vec<RestoreSessionEvent>, ApiError> {
        let s = id.to_string();
        self.all_pages(
            self.get_call(Operation::ListRestoreSessionEvents, &[&s], Some(id)),
            false,
        )
        .await
    }

    /// `GET /v8/RestoreSessions/{id}/Statistics`.
    pub async fn restore_session_statistics(
        &self,
        id: Uuid,
    ) -> Result<RestoreSessionStatistics, ApiError> {
        let s = id.to_string();
        self.call_json(self.get_call(Operation::GetRestoreSessionStatistics, &[&s], Some(id)))
            .await
    }

    // ---------------------------------------------------------------------------------------
    // Mailboxes
    // ---------------------------------------------------------------------------------------

    /// `GET …/organization/mailboxes`, all pages (archive mailboxes are separate entries).
    pub async fn mailboxes(&self, session: Uuid) -> Result<Vec<Mailbox>, ApiError> {
        let mut listing = self.mailbox_listing();
        self.continue_mailboxes(session, &mut listing).await?;
        Ok(listing.into_items())
    }

    /// An empty listing of mailboxes in this client's page size, for
    /// [`Client::continue_mailboxes`].
    pub fn mailbox_listing(&self) -> Listing<Mailbox> {
        Listing::new(self.page_size)
    }

    /// `GET …/organization/mailboxes`, the pages `listing` still lacks. On an error `listing`
    /// keeps every page read so far: after the caller's backoff, calling again with the same
    /// session asks for the failed page instead of starting over from offset 0. (A listing of
    /// one session must not be continued in another.)
    ///
    /// # Errors
    ///
    /// The failed page's [`ApiError`]; a permanent one when the page cap is reached.
    pub async fn continue_mailboxes(
        &self,
        session: Uuid,
        listing: &mut Listing<Mailbox>,
    ) -> Result<(), ApiError> {
        let s = session.to_string();
        let call = self.get_call(Operation::ListMailboxes, &[&s], Some(session));
        self.continue_pages(&call, false, listing).await
    }

    /// `GET …/organization/mailboxes/{id}`.
    pub async fn mailbox(&self, session: Uuid, mailbox: Uuid) -> Result<Mailbox, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        self.call_json(self.get_call(Operation::GetMailbox, &[&s, &m], Some(session)))
            .await
    }

    /// `POST …/organization/mailboxes/restore` (bulk). At most once: an unknown outcome is
    /// [`ErrorClass::Ambiguous`].
    pub async fn restore_mailboxes(
        &self,
        session: Uuid,
        options: &BulkRestoreOptions,
    ) -> Result<AsyncRestoreResponse, ApiError> {
        let s = session.to_string();
        self.call_json(self.post_call(
            Operation::RestoreMailboxes,
            &[&s],
            Some(session),
            Some(options),
        ))
        .await
    }

    /// `POST …/organization/mailboxes/{id}/restore` (to the original location). At most once.
    pub async fn restore_mailbox(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &RestoreToOriginalLocation,
    ) -> Result<AsyncRestoreResponse, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        self.call_json(self.post_call(
            Operation::RestoreMailbox,
            &[&s, &m],
            Some(session),
            Some(options),
        ))
        .await
    }

    /// `POST …/organization/mailboxes/{id}/restoreTo` (another mailbox). At most once.
    pub async fn restore_mailbox_to(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &RestoreToDifferentLocation,
    ) -> Result<AsyncRestoreResponse, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        self.call_json(self.post_call(
            Operation::RestoreMailboxTo,
            &[&s, &m],
            Some(session),
            Some(options),
        ))
        .await
    }

    /// `POST …/organization/mailboxes/{id}/exportToPst` with `Accept: application/octet-stream`
    /// and, when `range_start` is given, `Range: bytes=N-`. Returns once the response headers are
    /// in (waiting at most `first_byte_timeout` for them); the body is left to the caller as a
    /// stream with no deadline. A 200 or 206 is returned as a [`PstExport`]; anything else is an
    /// error.
    pub async fn export_to_pst(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &ExportToPstOptions,
        range_start: Option<u64>,
        first_byte_timeout: Duration,
    ) -> Result<PstExport, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        let mut call = self.post_call(
            Operation::ExportMailboxToPst,
            &[&s, &m],
            Some(session),
            Some(options),
        );
        call.accept = "application/octet-stream";
        call.range_start = range_start;
        call.deadline = Deadline::Headers(first_byte_timeout);
        let resp = self.execute(&call).await?;
        let status = resp.status();
        if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
            return Err(self.error(
                call.op,
                call.display_path(),
                ErrorClass::Permanent,
                ErrorKind::Decode,
                format!("unexpected status {status} for an export (expected 200 or 206)"),
            ));
        }
        let content_range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(ContentRange::parse);
        Ok(PstExport {
            status,
            content_length: resp.content_length(),
            content_range,
            requested_start: range_start,
            server: self.inner.server.clone(),
            path: call.display_path(),
            response: resp,
        })
    }

    // ---------------------------------------------------------------------------------------
    // Search
    // ---------------------------------------------------------------------------------------

    /// One page of `POST …/mailboxes/{id}/search` (with `mailbox`) or `POST …/mailboxes/search`
    /// (without). Pass the first page's `setId` back on later pages.
    pub async fn search_page(
        &self,
        session: Uuid,
        mailbox: Option<Uuid>,
        options: &SearchOptions,
        page: PageRequest,
    ) -> Result<Page<ExchangeItem>, ApiError> {
        let mut call = self.search_call(session, mailbox, options);
        call.query.push(("offset", page.offset.to_string()));
        call.query.push(("limit", page.limit.to_string()));
        if let Some(set) = page.set_id {
            call.query.push(("setId", set.to_string()));
        }
        self.call_json(call).await
    }

    /// `POST …/mailboxes/{id}/search`, all pages, reusing the server's `setId`.
    pub async fn search_mailbox(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &SearchOptions,
    ) -> Result<Vec<ExchangeItem>, ApiError> {
        self.all_pages(self.search_call(session, Some(mailbox), options), true)
            .await
    }

    /// `POST …/mailboxes/search` (all mailboxes of the session), all pages, reusing `setId`.
    pub async fn search_mailboxes(
        &self,
        session: Uuid,
        options: &SearchOptions,
    ) -> Result<Vec<ExchangeItem>, ApiError> {
        self.all_pages(self.search_call(session, None, options), true)
            .await
    }

    fn search_call<'a>(
        &self,
        session: Uuid,
        mailbox: Option<Uuid>,
        options: &'a SearchOptions,
    ) -> Call<'a, SearchOptions> {
        let s = session.to_string();
        match mailbox {
            Some(m) => {
                let m = m.to_string();
                self.post_call(
                    Operation::SearchMailbox,
                    &[&s, &m],
                    Some(session),
                    Some(options),
                )
            }
            None => self.post_call(
                Operation::SearchMailboxes,
                &[&s],
                Some(session),
                Some(options),
            ),
        }
    }
}

/// Error bodies are read up to this size; the rest (a runaway HTML page, a misrouted download)
/// is not needed to classify the error.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Reads an error response body, at most [`MAX_ERROR_BODY`] bytes; a broken body reads as what
/// arrived (the status alone still classifies the error).
async fn error_body(mut resp: reqwest::Response) -> Vec<u8> {
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

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// What a follow-up read of a restore session said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionProbe {
    /// 404 / `ResourceNotFound` / `Stopped`: the session is gone.
    Gone,
    /// The session is there; the "not found" was about something under it.
    Alive,
    /// The read failed transiently; nobody can tell yet.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(ca: Option<std::path::PathBuf>) -> ServerConfig {
        ServerConfig {
            name: "primary".into(),
            url: url::Url::parse("https://vb365.contoso.local:4443/").unwrap(),
            username: "CONTOSO\\svc-restore".into(),
            password: SecretRef::Env("RESTORECTL_TEST_NEVER_SET".into()),
            ca_file: ca,
            insecure_skip_tls_verify: false,
            max_concurrent_sessions: 2,
            request_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn bad_ca_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Client::new(&server(Some(missing.clone())), &SecretContext::default()).unwrap_err();
        assert!(
            e.to_string().contains("missing.pem") && e.to_string().contains("primary"),
            "{e}"
        );
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = Client::new(&server(Some(not_pem)), &SecretContext::default()).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn a_generated_ca_is_accepted_and_debug_is_safe() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let client = Client::new(&server(Some(path)), &SecretContext::default())
            .unwrap()
            .with_page_size(0);
        assert_eq!(client.page_size(), 1);
        let dbg = format!("{client:?}");
        assert!(
            dbg.contains("primary") && dbg.contains("{env: RESTORECTL_TEST_NEVER_SET}"),
            "{dbg}"
        );
        assert_eq!(client.inner.base, "https://vb365.contoso.local:4443");
    }

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
