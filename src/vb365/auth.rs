//! Bearer tokens of one VB365 server: password grant, refresh ahead of expiry, refresh after a
//! 401, the fallback from a failed refresh to a new password grant, and logout.
//!
//! `Login` owns the whole flow: the username, the password's secret reference and the token
//! slot. The client's calls (`vb365/execute.rs`) ask it for a bearer token and, after a 401, for
//! a new one; it sends its own requests (`POST /v8/token`, `POST /v8/token/logout`) through the
//! server's `Connection` (`vb365/connection.rs`).
//!
//! Only `expires_in` is trusted for the lifetime: `.issued`/`.expires` are opaque strings whose
//! format is not settled (API.md §1.1). A token is refreshed when less than
//! [`refresh_margin`] of its lifetime is left.
//!
//! The token state sits behind a `tokio::sync::Mutex` that is deliberately held across the token
//! request: that is what makes "one refresh at a time" true. Concurrent callers queue on the lock
//! and, once they get it, find the fresh token and reuse it instead of refreshing again. A
//! generation number tells a caller whose request got a 401 whether someone else has already
//! replaced the token it used.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::connection::{
    Call, Connection, Deadline, Failure, NoBody, error_body, render, retry_after,
};
use super::error::{ApiError, ErrorClass, ErrorKind, Transport, transport_message};
use super::operation::Operation;
use super::request::TokenRequest;
use crate::config::{SecretContext, SecretRef};

/// How long before expiry a token is refreshed: 10 % of its lifetime, at most 60 s.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// `OAuthTokenResponse`, as far as this client reads it. `Debug` is hand-written: it never
/// shows a token.
#[derive(Deserialize)]
struct TokenResponse {
    pub access_token: SecretString,
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    #[serde(default)]
    pub expires_in: Option<i64>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A token in use.
struct Token {
    pub access: SecretString,
    pub refresh: Option<SecretString>,
    /// When a refresh becomes due (expiry minus the margin).
    pub refresh_at: Instant,
    /// Increases with every new token, so a 401 can be matched to the token that caused it.
    pub generation: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access", &"[REDACTED]")
            .field("refresh", &self.refresh.as_ref().map(|_| "[REDACTED]"))
            .field("generation", &self.generation)
            .finish()
    }
}

/// Lifetime assumed when a server leaves `expires_in` out (the VB365 default is 60 min).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

impl Token {
    pub fn from_response(r: TokenResponse, generation: u64, now: Instant) -> Token {
        let lifetime = match r.expires_in {
            Some(s) if s >= 0 => Duration::from_secs(s.unsigned_abs()),
            Some(_) => Duration::ZERO,
            None => DEFAULT_LIFETIME,
        };
        Token {
            access: r.access_token,
            refresh: r.refresh_token.filter(|t| !t.expose_secret().is_empty()),
            refresh_at: now + lifetime - refresh_margin(lifetime),
            generation,
        }
    }

    /// True while the token can be used without refreshing first.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

/// The token slot of one server. See the module doc for the locking rule.
#[derive(Debug, Default)]
struct TokenState {
    pub token: Option<Token>,
    /// Generation of the last token handed out (survives logout so numbers never repeat).
    pub last_generation: u64,
}

/// The shared, lockable token state.
type TokenSlot = Mutex<TokenState>;

/// The login of one server: who logs in, where the password is, and the token slot. See the
/// module doc for the locking rule.
pub(super) struct Login {
    pub(super) username: String,
    pub(super) password: SecretRef,
    tokens: TokenSlot,
}

impl Login {
    /// A login that has no token yet: the first call makes a password grant.
    pub(super) fn new(username: String, password: SecretRef) -> Login {
        Login {
            username,
            password,
            tokens: TokenSlot::new(TokenState::default()),
        }
    }

    /// A usable access token and its generation: the current one while fresh, else a refreshed
    /// one (refresh grant, falling back to a password grant).
    pub(super) async fn bearer(
        &self,
        conn: &Connection,
        secrets: &SecretContext,
    ) -> Result<(SecretString, u64), ApiError> {
        let mut state = self.tokens.lock().await;
        let now = tokio::time::Instant::now();
        if let Some(t) = &state.token
            && t.is_fresh(now)
        {
            return Ok((t.access.clone(), t.generation));
        }
        self.renew(conn, secrets, &mut state).await
    }

    /// Called after a 401 with the generation of the token that was refused. If nobody has
    /// replaced that token meanwhile, renew it; otherwise reuse the newer one.
    pub(super) async fn reauthenticate(
        &self,
        conn: &Connection,
        secrets: &SecretContext,
        refused: u64,
    ) -> Result<(SecretString, u64), ApiError> {
        let mut state = self.tokens.lock().await;
        if let Some(t) = &state.token
            && t.generation != refused
        {
            return Ok((t.access.clone(), t.generation));
        }
        self.renew(conn, secrets, &mut state).await
    }

    /// Gets a new token while holding the lock (so there is one renewal at a time).
    async fn renew(
        &self,
        conn: &Connection,
        secrets: &SecretContext,
        state: &mut TokenState,
    ) -> Result<(SecretString, u64), ApiError> {
        let refresh = state.token.take().and_then(|t| t.refresh);
        let response = match refresh {
            Some(rt) => match grant(conn, &TokenRequest::refresh(rt)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(
                        server = %conn.server,
                        error = %e,
                        "token refresh failed; trying a password grant"
                    );
                    self.password_grant(conn, secrets).await?
                }
            },
            None => self.password_grant(conn, secrets).await?,
        };
        state.last_generation += 1;
        let token =
            Token::from_response(response, state.last_generation, tokio::time::Instant::now());
        let out = (token.access.clone(), token.generation);
        state.token = Some(token);
        Ok(out)
    }

    async fn password_grant(
        &self,
        conn: &Connection,
        secrets: &SecretContext,
    ) -> Result<TokenResponse, ApiError> {
        let password = self.password.resolve(secrets).map_err(|e| {
            conn.error(
                Operation::Token,
                Operation::Token.path_template().to_string(),
                ErrorClass::Auth,
                ErrorKind::Secret,
                format!("cannot read the server password: {e}"),
            )
        })?;
        grant(conn, &TokenRequest::password(&self.username, password)).await
    }

    /// Revokes the current token (`POST /v8/token/logout`) and forgets it. Does nothing when no
    /// token was obtained.
    pub(super) async fn logout(&self, conn: &Connection) -> Result<(), ApiError> {
        let mut state = self.tokens.lock().await;
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
        match conn.send_once(&call, &token.access).await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            // The token was already invalid: the goal, no valid token left, is reached.
            Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let ra = retry_after(&resp);
                let body = error_body(resp).await;
                Err(conn.status_error(
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
                Err(conn.transport_error(call.op, call.display_path(), t, m))
            }
            Err(Failure::Error(e)) => Err(e),
            Err(Failure::Status { .. }) => Ok(()),
        }
    }
}

/// `POST /v8/token` (form-encoded, anonymous).
async fn grant(conn: &Connection, form: &TokenRequest) -> Result<TokenResponse, ApiError> {
    let op = Operation::Token;
    let path = op.path_template().to_string();
    let sent = conn
        .http
        .post(format!("{}{path}", conn.base))
        .header(ACCEPT, "application/json")
        .form(form)
        .timeout(conn.request_timeout)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let t = Transport::from_reqwest(&e);
            return Err(conn.transport_error(op, path, t, transport_message(t, &e)));
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let retry_after = retry_after(&resp);
        let body = error_body(resp).await;
        return Err(conn.status_error(op, path, status, &body, retry_after, true, false));
    }
    conn.decode(op, path, resp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_ten_percent_capped_at_a_minute() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn token_freshness_follows_expires_in_only() {
        let now = Instant::now();
        let r: TokenResponse = serde_json::from_str(
            r#"{"access_token":"AT-SECRET","refresh_token":"RT-SECRET","token_type":"bearer","expires_in":600,
                ".issued":"Fri, 10 Jan 2025 08:00:00 GMT",".expires":"not even a date"}"#,
        )
        .unwrap();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        let t = Token::from_response(r, 1, now);
        assert!(t.is_fresh(now + Duration::from_secs(539)));
        assert!(!t.is_fresh(now + Duration::from_secs(540)));
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        let zero: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","refresh_token":"","expires_in":0}"#)
                .unwrap();
        let t = Token::from_response(zero, 2, now);
        assert!(!t.is_fresh(now));
        assert!(
            t.refresh.is_none(),
            "an empty refresh token is no refresh token"
        );
    }
}
