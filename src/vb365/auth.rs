//! Bearer tokens of one VB365 server: password grant, refresh ahead of expiry, refresh after a
//! 401, and the fallback from a failed refresh to a new password grant.
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

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long before expiry a token is refreshed: 10 % of its lifetime, at most 60 s.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

/// `OAuthTokenResponse`, as far as this client reads it. `Debug` is hand-written: it never
/// shows a token.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
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
pub(crate) struct Token {
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
pub(crate) struct TokenState {
    pub token: Option<Token>,
    /// Generation of the last token handed out (survives logout so numbers never repeat).
    pub last_generation: u64,
}

/// The shared, lockable token state.
pub(crate) type TokenSlot = Mutex<TokenState>;

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
