//! The deliverer: a daemon task that delivers the outbox (`notifications` rows) at least once.
//!
//! Every [`POLL`] it reads the due, undelivered rows (at most [`BATCH`]), groups them by target
//! and delivers the groups concurrently, each attempt bounded by `notifications.timeout`. In a
//! group the rows go one after the other and the first failure ends the group for this round,
//! so a target that keeps failing costs one bounded attempt per round and never holds up the
//! others. A 2xx (or the SMTP server's acceptance) marks the row delivered; a failure counts
//! the attempt, keeps the error (no secret in it) and postpones the row by [`backoff`].
//! Nothing here stops the daemon: a database error is logged and retried at the next round.
//!
//! Metrics: `restorectl_notifications_delivered_total{target,event}`,
//! `restorectl_notifications_failed_total{target,event}` (failed attempts) and the gauge
//! `restorectl_notifications_pending{target}` (undelivered rows).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{NotifyError, email, teams, webhook};
use crate::config::{Config, NotifyTarget, SecretContext};
use crate::schedule::Clock;
use crate::store::{Notification, Store};

/// How often due rows are looked for.
pub const POLL: Duration = Duration::from_secs(1);
/// Most rows read per round.
pub const BATCH: u32 = 100;

/// The wait before attempt `attempts + 1` after `attempts` failed ones: `initial` doubled per
/// failure, capped at `max`, times a jitter factor in [0.75, 1.25) from `jitter` in [0, 1)
/// (so many rows failing together do not retry together).
pub fn backoff(attempts: i64, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = initial.saturating_mul(1u32 << doublings).min(max);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The deliverer task's state.
pub struct Deliverer {
    store: Store,
    config: watch::Receiver<Arc<Config>>,
    clock: Arc<dyn Clock>,
    /// One client for every round (building one loads the trust store); each attempt is
    /// bounded by the current `notifications.timeout` around it.
    http: reqwest::Client,
}

impl Deliverer {
    pub fn new(
        store: Store,
        config: watch::Receiver<Arc<Config>>,
        clock: Arc<dyn Clock>,
    ) -> Deliverer {
        Deliverer {
            store,
            config,
            clock,
            http: super::http_client(Duration::from_secs(300)),
        }
    }

    /// Delivers until `cancel`; an attempt in flight at cancellation is abandoned (the row
    /// stays due and is sent again after the restart: at least once).
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = self.round() => {}
                () = cancel.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// One round: deliver what is due, then refresh the pending gauge.
    pub async fn round(&self) {
        let config = Arc::clone(&self.config.borrow());
        let http = &self.http;
        match self.store.due_notifications(self.clock.now(), BATCH).await {
            Ok(due) => {
                let mut groups: BTreeMap<String, Vec<Notification>> = BTreeMap::new();
                for row in due {
                    groups.entry(row.target.clone()).or_default().push(row);
                }
                let rounds = groups
                    .into_values()
                    .map(|rows| self.deliver_group(&config, http, rows));
                futures_util::future::join_all(rounds).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due notifications; retrying"),
        }
        self.refresh_pending(&config).await;
    }

    async fn deliver_group(
        &self,
        config: &Config,
        http: &reqwest::Client,
        rows: Vec<Notification>,
    ) {
        for row in rows {
            let timeout = config.notifications.timeout;
            let attempt = tokio::time::timeout(timeout, deliver(config, http, &row)).await;
            let result = attempt.unwrap_or_else(|_| {
                Err(NotifyError::Timeout {
                    target: row.target.clone(),
                    seconds: timeout.as_secs(),
                })
            });
            let labels = [
                ("target", row.target.clone()),
                ("event", row.event.as_str().to_string()),
            ];
            match result {
                Ok(()) => {
                    metrics::counter!("restorectl_notifications_delivered_total", &labels)
                        .increment(1);
                    tracing::info!(target_name = %row.target, event = %row.event, delivery = %row.delivery, job = row.job_name.as_deref().unwrap_or(""), attempt = row.attempts + 1, "notification delivered");
                    if let Err(e) = self
                        .store
                        .mark_notification_delivered(row.id, self.clock.now())
                        .await
                    {
                        // Sent again later: the receiver deduplicates by the delivery key.
                        tracing::warn!(delivery = %row.delivery, error = %e, "cannot record a delivered notification; it will be sent again");
                    }
                }
                Err(e) => {
                    metrics::counter!("restorectl_notifications_failed_total", &labels)
                        .increment(1);
                    let n = &config.notifications;
                    let wait = backoff(
                        row.attempts + 1,
                        n.initial_backoff,
                        n.max_backoff,
                        rand::rng().random::<f64>(),
                    );
                    let next = self.clock.now()
                        + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
                    tracing::warn!(target_name = %row.target, event = %row.event, delivery = %row.delivery, attempt = row.attempts + 1, error = %e, retry_at = %next, "notification delivery failed; retrying later");
                    if let Err(db) = self
                        .store
                        .mark_notification_failed(row.id, &e.to_string(), next)
                        .await
                    {
                        tracing::warn!(delivery = %row.delivery, error = %db, "cannot record a failed notification attempt");
                    }
                    return;
                }
            }
        }
    }

    async fn refresh_pending(&self, config: &Config) {
        match self.store.pending_notifications().await {
            Ok(pending) => {
                let mut seen: BTreeSet<String> = BTreeSet::new();
                for (target, n) in pending {
                    metrics::gauge!("restorectl_notifications_pending", "target" => target.clone())
                        .set(n as f64);
                    seen.insert(target);
                }
                for target in config.notifications.targets.keys() {
                    if !seen.contains(target) {
                        metrics::gauge!("restorectl_notifications_pending", "target" => target.clone())
                            .set(0.0);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot count pending notifications"),
        }
    }
}

/// One attempt at `row` with the current config.
async fn deliver(
    config: &Config,
    http: &reqwest::Client,
    row: &Notification,
) -> Result<(), NotifyError> {
    let secrets = SecretContext::from_config(config);
    let Some(target) = config.notifications.targets.get(&row.target) else {
        return Err(NotifyError::UnknownTarget {
            target: row.target.clone(),
        });
    };
    match target {
        NotifyTarget::Webhook { url, signing_key } => {
            webhook::send(http, &secrets, url, signing_key, row).await
        }
        NotifyTarget::Teams { url } => teams::send(http, &secrets, url, row).await,
        NotifyTarget::Email(e) => email::send(&secrets, e, row, config.notifications.timeout).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (i, m) = (Duration::from_secs(10), Duration::from_secs(3600));
        assert_eq!(backoff(1, i, m, 0.5), Duration::from_secs(10));
        assert_eq!(backoff(2, i, m, 0.5), Duration::from_secs(20));
        assert_eq!(backoff(4, i, m, 0.5), Duration::from_secs(80));
        assert_eq!(backoff(50, i, m, 0.5), m);
        assert_eq!(backoff(i64::MAX, i, m, 0.5), m);
        assert_eq!(backoff(1, i, m, 0.0), Duration::from_millis(7500));
        assert!(backoff(1, i, m, 0.999) < Duration::from_millis(12_500));
        assert_eq!(backoff(0, i, m, 0.5), i);
    }
}
