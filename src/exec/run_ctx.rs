//! What one execution of a run shares with its steps, and nothing else: the run context
//! ([`RunCtx`]: the run, its job, client, session, config snapshot, mailbox list), the stop signal
//! ([`Stopper`] with its [`StopReason`]), what an attempt tells the step loop ([`Next`],
//! [`StepEnd`]), the sleep that a stop interrupts, the template values of a mailbox and the
//! run's scratch directory.
//!
//! Why a file of its own: the engine builds the context and every kind of step (restore, export,
//! search) and the step loop use it. Here it imports none of them, so none of them imports back
//! into the engine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::error::StepFailure;
use super::options::EngineOptions;
use super::session::SessionSlot;
use crate::config::{Config, SecretContext};
use crate::jobs::{Job, TemplateValues};
use crate::store::{EventKind, NewEvent, Run, RunId, Store};
use crate::vb365::paging::Listing;
use crate::vb365::{Client, Mailbox};

/// How a step's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// `done`, `warning`, `failed` or `skipped`.
    Finished,
    /// Waits for a backoff longer than the in-run threshold, until then.
    Later(DateTime<Utc>),
    /// `in_doubt` without an operator's decision.
    Blocked,
    /// The server refused the run's device code; the step is `pending` again and the run
    /// needs a new sign-in.
    SignInRefused,
    /// The run was stopped (cancel, timeout, shutdown, lost lease).
    Stopped,
}

/// What an attempt asks the loop to do next.
pub(crate) enum Next {
    /// Read the step again and continue.
    Continue,
    /// End the loop.
    End(StepEnd),
}

/// Why a run's execution stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Cancelled,
    Timeout,
    Shutdown,
    LeaseLost,
}

/// The stop signal of one execution with the first reason given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stopper {
    pub(crate) token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl Stopper {
    pub(crate) fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Everything the steps of one run share.
pub(crate) struct RunCtx {
    pub(crate) store: Store,
    /// The engine's tunables.
    pub(crate) options: EngineOptions,
    pub(crate) run: Run,
    pub(crate) job: Job,
    pub(crate) client: Client,
    pub(crate) session: SessionSlot,
    pub(crate) stop: Stopper,
    /// The config this execution started with: a reload (SIGHUP) reaches the next execution,
    /// never the middle of one.
    pub(crate) config: Arc<Config>,
    /// Where secrets are looked up, from [`RunCtx::config`].
    pub(crate) secrets: SecretContext,
    /// The session's mailbox list, fetched once (selectors, bulk e-mails, search reports).
    pub(crate) mailboxes: tokio::sync::Mutex<MailboxCache>,
    /// The server's `requestTimeout`.
    pub(crate) request_timeout: Duration,
    /// The restore point the run's session shows, when it was read (exports, the freshness
    /// guard); recorded in export manifests.
    pub(crate) restore_point: Option<crate::vb365::RestorePoint>,
    /// The device code an operator signed in with (`credentials.deviceCode`), set by
    /// [`super::sign_in::prepare`] before the steps run.
    pub(crate) user_code: Mutex<Option<secrecy::SecretString>>,
}

/// What a run knows of its session's mailbox list.
#[derive(Default)]
pub(crate) enum MailboxCache {
    /// Not read yet (or forgotten with a lost session).
    #[default]
    Empty,
    /// Read up to a failed page, in `session`.
    Partial {
        session: Uuid,
        listing: Listing<Mailbox>,
    },
    /// Read to the end.
    Complete(Arc<Vec<Mailbox>>),
}

impl RunCtx {
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The current time, from the engine's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.options.clock.now()
    }

    /// The signed-in device code, if the run has one.
    pub(crate) fn user_code(&self) -> Option<secrecy::SecretString> {
        self.user_code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The server's `requestTimeout` (how long a request may still be in flight).
    pub(crate) fn client_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The mailbox list of the current session (opened if needed), fetched once per run. A
    /// failed page is kept as the place to go on from: the next call (after the caller's
    /// backoff) asks for that page again, in the same session, instead of for the whole list.
    pub(crate) async fn mailboxes(&self) -> Result<Arc<Vec<Mailbox>>, StepFailure> {
        let mut cached = self.mailboxes.lock().await;
        if let MailboxCache::Complete(list) = &*cached {
            return Ok(Arc::clone(list));
        }
        let open = self.session.get(&self.stop.token).await?;
        // Offsets and links of another session (lost and reopened since) mean nothing here.
        let mut listing = match std::mem::take(&mut *cached) {
            MailboxCache::Partial { session, listing } if session == open.id => listing,
            _ => self.client.mailbox_listing(),
        };
        match self.client.continue_mailboxes(open.id, &mut listing).await {
            Ok(()) => {
                let list = Arc::new(listing.into_items());
                *cached = MailboxCache::Complete(Arc::clone(&list));
                Ok(list)
            }
            Err(e) => {
                if listing.pages() > 0 {
                    tracing::info!(
                        run = %self.run.id,
                        pages = listing.pages(),
                        mailboxes = listing.items().len(),
                        error = %e,
                        "a page of the mailbox list failed; the pages read are kept"
                    );
                }
                *cached = MailboxCache::Partial {
                    session: open.id,
                    listing,
                };
                let failure = StepFailure::from(&e);
                if failure.class == crate::store::ErrorClass::SessionLost {
                    self.session.lost(open.generation, &e.to_string()).await?;
                }
                Err(failure)
            }
        }
    }

    /// Appends a note to the run's history (failures to write it are logged only).
    pub(crate) async fn note(&self, step: Option<i64>, message: String, data: serde_json::Value) {
        let mut event = NewEvent::new(EventKind::Note, message)
            .run(self.run.id)
            .data(data);
        event.step_id = step;
        if let Err(e) = self.store().append_event(&event, self.now()).await {
            tracing::warn!(run = %self.run.id, error = %e, "cannot append a note");
        }
    }
}

/// Sleeps `d` unless the run stops first; false when it stopped.
pub(crate) async fn sleep(ctx: &RunCtx, d: std::time::Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = ctx.stop.token.cancelled() => false,
    }
}

/// The template values of the run for one mailbox (`{date}`/`{time}` in the job's time zone).
pub(crate) async fn template_values(
    ctx: &RunCtx,
    email: &str,
    id: &str,
    is_archive: bool,
) -> TemplateValues {
    let tz = ctx
        .job
        .schedule()
        .map(|s| s.timezone())
        .unwrap_or(ctx.config().timezone);
    let org = match ctx.session.organization().await {
        Some(o) => o.name,
        None => ctx.job.organization().to_string(),
    };
    TemplateValues::for_run(
        ctx.job.name(),
        &ctx.run.id.to_string(),
        &ctx.run.scheduled_for.with_timezone(&tz),
        &org,
    )
    .with_mailbox(email, id)
    .archive(is_archive)
}

/// Where the search report parts of a run live (under the state directory, never exported).
pub(crate) fn run_scratch_dir(config: &Config, run: RunId) -> PathBuf {
    config.state_dir.join("runs").join(run.to_string())
}
