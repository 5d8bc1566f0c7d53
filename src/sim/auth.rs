//! Tokens: password and refresh-token grants, bearer checks, logout and forced expiry.
//!
//! Access and refresh tokens are random opaque strings. A refresh token is single-use (a
//! refresh returns a new pair and retires the old refresh token); the old access token stays
//! valid until it expires, as with the OWIN OAuth server VB365 uses. Logout revokes the bearer
//! and its refresh token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::RngCore;
use serde_json::{Value, json};

use super::config::{SimConfig, TokenDateFormat};
use super::world::dotnet_time;

#[derive(Debug)]
struct Grant {
    user: String,
    expires: Instant,
    refresh: String,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    Missing,
    Unknown,
    Expired,
}

/// The token store.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    access: HashMap<String, Grant>,
    /// Refresh token → (user, expiry).
    refresh: HashMap<String, (String, Instant)>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Tokens {
    /// Issues a new pair for `user` and returns the OAuth response body.
    pub(crate) fn issue(&mut self, user: &str, config: &SimConfig) -> Value {
        let access = random_token();
        let refresh = random_token();
        let now = Instant::now();
        self.access.insert(
            access.clone(),
            Grant {
                user: user.to_string(),
                expires: now + config.token_lifetime,
                refresh: refresh.clone(),
            },
        );
        self.refresh.insert(
            refresh.clone(),
            (user.to_string(), now + config.refresh_token_lifetime),
        );
        let issued = Utc::now();
        let expires = issued
            + chrono::Duration::from_std(config.token_lifetime).unwrap_or(chrono::Duration::zero());
        let fmt = |t: chrono::DateTime<Utc>| match config.token_date_format {
            TokenDateFormat::Rfc1123 => t.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            TokenDateFormat::Rfc3339 => dotnet_time(t),
        };
        json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": config.token_lifetime.as_secs(),
            "refresh_token": refresh,
            "userName": user,
            ".issued": fmt(issued),
            ".expires": fmt(expires),
        })
    }

    /// Exchanges a refresh token for a new pair; `None` if it is unknown, used or expired.
    pub(crate) fn refresh(&mut self, token: &str, config: &SimConfig) -> Option<Value> {
        let (user, expires) = self.refresh.remove(token)?;
        if Instant::now() >= expires {
            return None;
        }
        Some(self.issue(&user, config))
    }

    /// The user behind a bearer token.
    pub(crate) fn check(&self, bearer: Option<&str>) -> Result<String, AuthFailure> {
        let token = bearer.ok_or(AuthFailure::Missing)?;
        let grant = self.access.get(token).ok_or(AuthFailure::Unknown)?;
        if Instant::now() >= grant.expires {
            return Err(AuthFailure::Expired);
        }
        Ok(grant.user.clone())
    }

    /// Revokes an access token and its refresh token.
    pub(crate) fn logout(&mut self, token: &str) {
        if let Some(grant) = self.access.remove(token) {
            self.refresh.remove(&grant.refresh);
        }
    }

    /// Makes every access token issued so far expired (refresh tokens stay usable).
    pub(crate) fn expire_all(&mut self) {
        let past = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        for grant in self.access.values_mut() {
            grant.expires = past;
        }
    }
}

/// The OAuth-style error body for a failed grant. v8's spec only promises `RESTExceptionInfo`,
/// but v1-era client code handles `400 {error, error_description}` (API.md §1.3), so the
/// simulator answers in that older form and clients must parse both.
pub(crate) fn oauth_error(error: &str, description: &str) -> Value {
    json!({"error": error, "error_description": description})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_single_use_and_logout_revokes() {
        let config = SimConfig::default();
        let mut tokens = Tokens::default();
        let pair = tokens.issue("u", &config);
        let access = pair["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let refresh = pair["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(tokens.check(Some(&access)), Ok("u".to_string()));
        assert!(tokens.refresh(&refresh, &config).is_some());
        assert!(tokens.refresh(&refresh, &config).is_none());
        tokens.expire_all();
        assert_eq!(tokens.check(Some(&access)), Err(AuthFailure::Expired));
        tokens.logout(&access);
        assert_eq!(tokens.check(Some(&access)), Err(AuthFailure::Unknown));
        assert_eq!(tokens.check(None), Err(AuthFailure::Missing));
        assert!(
            pair[".expires"]
                .as_str()
                .is_some_and(|s| s.ends_with("GMT"))
        );
    }
}
