//! `notifications:` (SPEC §11): the targets (webhook, Microsoft Teams, e-mail) and the default
//! routing of events to them. Raw shapes and their validation into [`NotificationConfig`] live
//! together here; delivery is `crate::notify`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::secrets::SecretRef;
use crate::store::{NotifyEvent, Routing};

/// The events a routing gets when it names none: everything but `succeeded` (opt-in).
pub const DEFAULT_EVENTS: &[NotifyEvent] = &[
    NotifyEvent::Failed,
    NotifyEvent::NeedsAttention,
    NotifyEvent::Missed,
    NotifyEvent::Invalid,
    NotifyEvent::Recovered,
    NotifyEvent::Stale,
];

/// The validated `notifications:` section.
#[derive(Debug, Clone)]
pub struct NotificationConfig {
    pub targets: BTreeMap<String, NotifyTarget>,
    /// `notifications.defaults`: who gets which events unless a job says otherwise.
    pub defaults: Routing,
    /// Bound of one delivery attempt (`notifications.timeout`, default 10s).
    pub timeout: Duration,
    /// Wait after the first failed attempt, doubled per failure (`initialBackoff`, 10s).
    pub initial_backoff: Duration,
    /// Longest wait between attempts (`maxBackoff`, 1h).
    pub max_backoff: Duration,
}

/// One target (`notifications.targets.<name>`).
#[derive(Debug, Clone)]
pub enum NotifyTarget {
    /// JSON POST of the versioned body, signed with HMAC-SHA256.
    Webhook {
        url: SecretRef,
        signing_key: SecretRef,
    },
    /// A Microsoft Teams incoming webhook (or Workflows webhook): a MessageCard.
    Teams {
        url: SecretRef,
    },
    Email(EmailTarget),
}

impl NotifyTarget {
    /// `webhook`, `teams` or `email`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyTarget::Webhook { .. } => "webhook",
            NotifyTarget::Teams { .. } => "teams",
            NotifyTarget::Email(_) => "email",
        }
    }
}

/// An e-mail target.
#[derive(Debug, Clone)]
pub struct EmailTarget {
    pub from: String,
    pub to: Vec<String>,
    pub smtp: SmtpConfig,
}

/// How to reach the SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
}

/// Transport security of SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required), port 587 by default.
    Starttls,
    /// TLS from the first byte (SMTPS), port 465 by default.
    Tls,
    /// No encryption: only to a loopback host (tests, a local relay), port 25 by default.
    None,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawNotifications {
    #[serde(default)]
    targets: BTreeMap<String, RawTarget>,
    defaults: Option<RawRouting>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    initial_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_backoff: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawTarget {
    Webhook {
        url: SecretRef,
        #[serde(rename = "signingKey")]
        signing_key: SecretRef,
    },
    Teams {
        url: SecretRef,
    },
    Email {
        from: String,
        to: Vec<String>,
        smtp: RawSmtp,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<SmtpTls>,
    username: Option<String>,
    password: Option<SecretRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    targets: Vec<String>,
    events: Option<Vec<NotifyEvent>>,
}

/// Raw → validated; `Err((key, message))` names the offending key under `notifications`.
pub(super) fn from_raw(raw: RawNotifications) -> Result<NotificationConfig, (String, String)> {
    let mut targets = BTreeMap::new();
    for (name, t) in raw.targets {
        let key = |k: &str| format!("notifications.targets.{name}.{k}");
        let target = match t {
            RawTarget::Webhook { url, signing_key } => NotifyTarget::Webhook { url, signing_key },
            RawTarget::Teams { url } => NotifyTarget::Teams { url },
            RawTarget::Email { from, to, smtp } => {
                if !looks_like_address(&from) {
                    return Err((key("from"), format!("`{from}` is not an e-mail address")));
                }
                if to.is_empty() {
                    return Err((key("to"), "name at least one recipient".into()));
                }
                if let Some(bad) = to.iter().find(|a| !looks_like_address(a)) {
                    return Err((key("to"), format!("`{bad}` is not an e-mail address")));
                }
                let tls = smtp.tls.unwrap_or(SmtpTls::Starttls);
                if smtp.host.trim().is_empty() {
                    return Err((key("smtp.host"), "must not be empty".into()));
                }
                if tls == SmtpTls::None && !is_loopback(&smtp.host) {
                    return Err((
                        key("smtp.tls"),
                        format!(
                            "`none` sends the password and the messages in clear text; it is \
                             only allowed to a loopback host, not `{}`: use starttls or tls",
                            smtp.host
                        ),
                    ));
                }
                if smtp.username.is_some() != smtp.password.is_some() {
                    return Err((
                        key("smtp"),
                        "give both `username` and `password` (a secret reference), or neither"
                            .into(),
                    ));
                }
                let port = smtp.port.unwrap_or(match tls {
                    SmtpTls::Starttls => 587,
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                });
                NotifyTarget::Email(EmailTarget {
                    from,
                    to,
                    smtp: SmtpConfig {
                        host: smtp.host,
                        port,
                        tls,
                        username: smtp.username,
                        password: smtp.password,
                    },
                })
            }
        };
        targets.insert(name, target);
    }
    let defaults = match raw.defaults {
        None => Routing::none(),
        Some(r) => routing(r.targets, r.events, &targets, "notifications.defaults")?,
    };
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(10));
    if timeout.is_zero() || timeout > Duration::from_secs(300) {
        return Err((
            "notifications.timeout".into(),
            "must be between 1s and 5m".into(),
        ));
    }
    let initial_backoff = raw.initial_backoff.unwrap_or(Duration::from_secs(10));
    let max_backoff = raw.max_backoff.unwrap_or(Duration::from_secs(3600));
    if initial_backoff < Duration::from_millis(100) || initial_backoff > max_backoff {
        return Err((
            "notifications.initialBackoff".into(),
            "must be at least 100ms and at most maxBackoff".into(),
        ));
    }
    if max_backoff > Duration::from_secs(24 * 3600) {
        return Err((
            "notifications.maxBackoff".into(),
            "must be at most 24h".into(),
        ));
    }
    Ok(NotificationConfig {
        targets,
        defaults,
        timeout,
        initial_backoff,
        max_backoff,
    })
}

/// A routing whose targets all exist; events default to [`DEFAULT_EVENTS`].
fn routing(
    targets: Vec<String>,
    events: Option<Vec<NotifyEvent>>,
    known: &BTreeMap<String, NotifyTarget>,
    key: &str,
) -> Result<Routing, (String, String)> {
    if let Some(unknown) = targets.iter().find(|t| !known.contains_key(*t)) {
        return Err((
            format!("{key}.targets"),
            format!(
                "`{unknown}` is not a target under notifications.targets (known: {})",
                names(known)
            ),
        ));
    }
    Ok(Routing {
        targets,
        events: events.unwrap_or_else(|| DEFAULT_EVENTS.to_vec()),
    })
}

impl NotificationConfig {
    /// The routing of a job: its `spec.notify` (replacing the defaults) when it has one.
    pub fn routing_for(&self, notify: Option<&Routing>) -> Routing {
        notify.cloned().unwrap_or_else(|| self.defaults.clone())
    }

    /// The configured target names, for messages.
    pub fn target_names(&self) -> String {
        names(&self.targets)
    }
}

fn names(known: &BTreeMap<String, NotifyTarget>) -> String {
    if known.is_empty() {
        "none".into()
    } else {
        known.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn looks_like_address(a: &str) -> bool {
    a.parse::<lettre::Address>().is_ok()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<NotificationConfig, (String, String)> {
        from_raw(serde_yaml::from_str(yaml).expect("yaml"))
    }

    #[test]
    fn spec_example_validates() {
        let c = parse(
            "targets:
  ops:   { type: webhook, url: { secret: ops-webhook-url }, signingKey: { secret: ops-webhook-key } }
  legal: { type: teams,   url: { secret: legal-teams-url } }
  mail:  { type: email, from: restorectl@contoso.com, to: [backup-team@contoso.com],
           smtp: { host: smtp.contoso.com, port: 587, tls: starttls,
                   username: restorectl, password: { secret: smtp-password } } }
defaults: { targets: [ops], events: [failed, needs_attention, missed, invalid, recovered] }
",
        )
        .unwrap();
        assert_eq!(c.targets.len(), 3);
        assert_eq!(c.defaults.targets, ["ops"]);
        assert!(!c.defaults.wants(NotifyEvent::Succeeded));
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_targets_are_named() {
        let e = parse("defaults: { targets: [nope] }").unwrap_err();
        assert_eq!(e.0, "notifications.defaults.targets");
        let e = parse(
            "targets: { m: { type: email, from: a@b.c, to: [x@y.z], smtp: { host: mail.example, tls: none } } }",
        )
        .unwrap_err();
        assert_eq!(e.0, "notifications.targets.m.smtp.tls");
        assert!(
            parse(
                "targets: { m: { type: email, from: a@b.c, to: [x@y.z], smtp: { host: 127.0.0.1, tls: none } } }"
            )
            .is_ok()
        );
        assert!(serde_yaml::from_str::<RawNotifications>(
            "targets: { w: { type: webhook, url: { secret: u }, signingKey: { secret: k }, extra: 1 } }"
        )
        .is_err());
    }
}
