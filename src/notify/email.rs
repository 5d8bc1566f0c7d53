//! The e-mail target: a plain-text message through SMTP with lettre. `tls: starttls` (default,
//! port 587) requires the STARTTLS upgrade, `tls: tls` speaks TLS from the first byte (port
//! 465), `tls: none` is plain text and only allowed to a loopback host (a local relay, tests).
//! The delivery key is the `Message-ID` (`<KEY@restorectl>`), so a message re-sent after a lost
//! answer is recognisably the same one.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use secrecy::ExposeSecret;

use super::NotifyError;
use super::message::render;
use crate::config::{EmailTarget, SecretContext, SmtpTls};
use crate::store::Notification;

/// Sends `row` to an e-mail target, each attempt bounded by `timeout`.
pub async fn send(
    secrets: &SecretContext,
    email: &EmailTarget,
    row: &Notification,
    timeout: std::time::Duration,
) -> Result<(), NotifyError> {
    let target = &row.target;
    let build = |message: String| NotifyError::Email {
        target: target.clone(),
        message,
    };
    let payload = row.body().map_err(|e| NotifyError::Payload {
        target: target.clone(),
        message: e.to_string(),
    })?;
    let rendered = render(&payload);
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| build(format!("from: {e}")))?;
    let mut builder = Mail::builder()
        .from(from)
        .subject(rendered.title.clone())
        .message_id(Some(format!("<{}@restorectl>", row.delivery)))
        .header(ContentType::TEXT_PLAIN);
    for to in &email.to {
        builder = builder.to(to.parse().map_err(|e| build(format!("to: {e}")))?);
    }
    let mail = builder
        .body(rendered.text())
        .map_err(|e| build(e.to_string()))?;

    let smtp = &email.smtp;
    let smtp_err = |e: lettre::transport::smtp::Error| NotifyError::Smtp {
        target: target.clone(),
        message: e.to_string(),
    };
    let mut transport = match smtp.tls {
        SmtpTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(smtp_err)?
        }
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(smtp_err)?
        }
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    }
    .port(smtp.port)
    .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        let password = password
            .resolve(secrets)
            .map_err(|source| NotifyError::Secret {
                target: target.clone(),
                source,
            })?;
        transport = transport.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_string(),
        ));
    }
    transport
        .build()
        .send(mail)
        .await
        .map(|_| ())
        .map_err(smtp_err)
}
