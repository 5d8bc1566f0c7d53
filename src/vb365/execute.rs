//! Executing a [`Call`] as the [`Client`]: the bearer token, the one resend after a 401, the
//! classification of a failure into an [`ApiError`] (with the lost-session probe), JSON bodies
//! and paged collections. The endpoint methods ([`super::endpoints`]) are built on these.
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

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::client::Client;
use super::connection::{Call, Deadline, Failure, NoBody, error_body, render, retry_after};
use super::error::{ApiError, ErrorClass, ErrorCode, ErrorKind, parse_error_body, sanitise_path};
use super::model::{Page, RestoreSession, SessionState};
use super::operation::Operation;
use super::paging::{Cursor, Listing, PageRequest, PagingError, link_query};

impl Client {
    /// Sends a call with a bearer token, renews the token once after a 401 and sends again,
    /// and returns a success response or the classified error.
    pub(super) async fn execute<B: Serialize + ?Sized>(
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
        let (token, generation) = self
            .inner
            .login
            .bearer(&self.inner.conn, &self.secrets)
            .await
            .map_err(Failure::Error)?;
        let mut resp = self.inner.conn.send_once(call, &token).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            tracing::debug!(
                server = %self.inner.conn.server,
                path = %call.display_path(),
                "401 Unauthorized; renewing the token and sending once more"
            );
            drop(resp);
            let (token, _) = self
                .inner
                .login
                .reauthenticate(&self.inner.conn, &self.secrets, generation)
                .await
                .map_err(Failure::Error)?;
            resp = self.inner.conn.send_once(call, &token).await?;
        }
        let status = resp.status();
        tracing::debug!(
            server = %self.inner.conn.server,
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
                self.inner
                    .conn
                    .transport_error(call.op, call.display_path(), t, message)
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
                let mut error = self.inner.conn.status_error(
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

    pub(super) async fn call_json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        call: Call<'_, B>,
    ) -> Result<T, ApiError> {
        let resp = self.execute(&call).await?;
        self.inner
            .conn
            .decode(call.op, call.display_path(), resp)
            .await
    }

    pub(super) fn get_call<'a>(
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

    pub(super) fn post_call<'a, B: ?Sized>(
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
    pub(super) async fn all_pages<T, B>(
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
    pub(super) async fn continue_pages<T, B>(
        &self,
        base: &Call<'_, B>,
        with_set_id: bool,
        listing: &mut Listing<T>,
    ) -> Result<(), ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let links = PageLinks::new(self, base);
        listing
            .advance(|req: PageRequest, link: Option<String>| {
                self.fetch_page(base, with_set_id, &links, req, link)
            })
            .await
            .map_err(|e| self.paging_error(base, e))
    }

    /// Reads the next page of `cursor` and returns its items (`None` after the last page), for
    /// callers that write each page away instead of collecting the collection. Links and
    /// `setId` are handled as in [`Client::continue_pages`]; a failed page leaves `cursor` as it
    /// was.
    pub(super) async fn next_page<T, B>(
        &self,
        base: &Call<'_, B>,
        with_set_id: bool,
        cursor: &mut Cursor,
    ) -> Result<Option<Vec<T>>, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let links = PageLinks::new(self, base);
        cursor
            .next_page(|req: PageRequest, link: Option<String>| {
                self.fetch_page(base, with_set_id, &links, req, link)
            })
            .await
            .map_err(|e| self.paging_error(base, e))
    }

    /// One page of `base`: by its `_links.next` when that is safe to follow, else by offset.
    async fn fetch_page<T, B>(
        &self,
        base: &Call<'_, B>,
        with_set_id: bool,
        links: &PageLinks,
        req: PageRequest,
        link: Option<String>,
    ) -> Result<Page<T>, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let followed = match (link, &links.server, &links.collection) {
            (Some(href), Some(server), Some(collection)) if base.query.is_empty() => {
                let query = link_query(server, collection, &href);
                if query.is_none() && !links.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        server = %self.inner.conn.server,
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
            let has_set = q.split('&').any(|p| {
                p.split('=')
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case("setId"))
            });
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
    }

    fn paging_error<B: ?Sized>(&self, base: &Call<'_, B>, e: PagingError<ApiError>) -> ApiError {
        match e {
            PagingError::Fetch(e) => e,
            PagingError::Endless {
                pages,
                page_size,
                items,
            } => self.inner.conn.error(
                base.op,
                base.display_path(),
                ErrorClass::Permanent,
                ErrorKind::Decode,
                format!(
                    "stopped after {pages} full pages of {page_size} ({items} items) without reaching the end: either the collection is larger than {pages} × `pageSize` (raise `pageSize` in the daemon configuration, at most 10000) or the server ignores `offset`"
                ),
            ),
        }
    }
}

/// What deciding whether to follow a page's `_links.next` needs: the server and collection
/// URLs, and whether a refused link was already logged (once per collection).
struct PageLinks {
    server: Option<url::Url>,
    collection: Option<url::Url>,
    refused: std::sync::atomic::AtomicBool,
}

impl PageLinks {
    fn new<B: ?Sized>(client: &Client, base: &Call<'_, B>) -> PageLinks {
        let conn = &client.inner.conn;
        PageLinks {
            server: url::Url::parse(&format!("{}/", conn.base)).ok(),
            collection: url::Url::parse(&format!("{}{}", conn.base, base.path)).ok(),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }
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
