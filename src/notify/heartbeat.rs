//! Heartbeats (dead-man's switch, SPEC §11), the healthchecks.io convention: `POST URL/start`
//! when a run starts, `POST URL` when it succeeds, `POST URL/fail` with the reason as a text
//! body when it ends otherwise. A [`Pinger`] sends one run's pings in order from a task of its
//! own, each bounded by [`TIMEOUT`]; the run never waits for it and a failed ping is a log line.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// Bound of one ping.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What a ping says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    /// The reason, sent as the text body.
    Fail(String),
}

impl Ping {
    fn suffix(&self) -> &'static str {
        match self {
            Ping::Start => "/start",
            Ping::Success => "",
            Ping::Fail(_) => "/fail",
        }
    }
}

/// The pings of one run. Dropping it ends its task once the pings sent are out.
#[derive(Debug)]
pub struct Pinger {
    tx: mpsc::UnboundedSender<Ping>,
}

impl Pinger {
    /// Starts the task of one run's pings on `tasks`.
    pub fn start(
        tasks: &TaskTracker,
        http: reqwest::Client,
        url: SecretString,
        job: String,
    ) -> Pinger {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ping>();
        tasks.spawn(async move {
            let base = url.expose_secret().trim().trim_end_matches('/').to_string();
            while let Some(ping) = rx.recv().await {
                let request = http
                    .post(format!("{base}{}", ping.suffix()))
                    .timeout(TIMEOUT)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
                let request = match &ping {
                    Ping::Fail(reason) => request.body(reason.clone()),
                    _ => request,
                };
                let result = tokio::time::timeout(TIMEOUT, request.send()).await;
                let failure = match result {
                    Ok(Ok(r)) if r.status().is_success() => None,
                    Ok(Ok(r)) => Some(format!("answered HTTP {}", r.status().as_u16())),
                    Ok(Err(e)) => Some(e.without_url().to_string()),
                    Err(_) => Some(format!("no answer within {}s", TIMEOUT.as_secs())),
                };
                if let Some(error) = failure {
                    tracing::warn!(job = %job, ping = ping.suffix(), %error, "heartbeat ping failed (best effort; the run is not affected)");
                }
            }
        });
        Pinger { tx }
    }

    /// Queues a ping (never waits).
    pub fn send(&self, ping: Ping) {
        let _ = self.tx.send(ping);
    }
}
