//! The webhook target (SPEC §11): `POST` of the stored JSON body, verbatim, with
//! `X-Restorectl-Event`, `X-Restorectl-Delivery` (the idempotency key) and
//! `X-Restorectl-Signature: sha256=<hex HMAC-SHA256 of the raw body with signingKey>`.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use super::{NotifyError, parse_url, post};
use crate::config::{SecretContext, SecretRef};
use crate::store::Notification;

/// Header names.
pub const EVENT_HEADER: &str = "X-Restorectl-Event";
pub const DELIVERY_HEADER: &str = "X-Restorectl-Delivery";
pub const SIGNATURE_HEADER: &str = "X-Restorectl-Signature";

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `row` to a webhook target.
pub async fn send(
    http: &reqwest::Client,
    secrets: &SecretContext,
    url: &SecretRef,
    signing_key: &SecretRef,
    row: &Notification,
) -> Result<(), NotifyError> {
    let target = &row.target;
    let secret = |source| NotifyError::Secret {
        target: target.clone(),
        source,
    };
    let url = url.resolve(secrets).map_err(secret)?;
    let url = parse_url(target, url.expose_secret())?;
    let key = signing_key.resolve(secrets).map_err(secret)?;
    let body = row.payload.clone().into_bytes();
    let request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, row.event.as_str())
        .header(DELIVERY_HEADER, &row.delivery)
        .header(
            SIGNATURE_HEADER,
            signature(key.expose_secret().as_bytes(), &body),
        )
        .body(body);
    post(target, request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signature_is_hmac_sha256_hex() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
