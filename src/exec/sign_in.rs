//! Sign-in with a device code (`credentials.deviceCode`, docs/job-files.md): an operator flow,
//! since a daemon cannot click through a browser.
//!
//! Before the steps of a Restore, RestoreTo or BulkRestore run whose credentials are a device
//! code, [`prepare`] makes sure the run has a code an operator signed in with:
//!
//! 1. no code yet (or the last one was refused, or it belongs to a session the run no longer
//!    has): it asks the server for one (`POST …/organization/restoreDeviceCode` in the run's
//!    session), records a `device_code_requested` event (code, verification URL, expiry) and
//!    the run parks in `needs_attention` with a reason naming all three; the session is kept
//!    open, since the code belongs to it;
//! 2. the operator signs in at the URL and runs `restorectl resolve RUN --continue`, which
//!    records `device_code_continued` and queues the run
//!    ([`Engine::apply_continue`](super::Engine::apply_continue));
//! 3. the next execution finds the continued code and hands it to the steps: every restore
//!    POST of the run carries it as `userCode`.
//!
//! A restore the server refuses with the code (never signed in, expired before the sign-in) was
//! not executed, so the step goes back to `pending` (`device_code_refused`) and the run asks
//! for a new code. At most [`MAX_DEVICE_CODES`] codes are requested per run (the first and
//! three more); then the run fails with a reason saying so. The at-most-once protocol is
//! untouched: a POST with a `userCode` is committed `submitting` first like any other, and an
//! unknown outcome is reconciled, never resent.
//!
//! The API offers no way to ask whether a code was signed in, so the run does not notice a
//! sign-in on its own: `--continue` is the signal.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use super::error::RunError;
use super::run_ctx::RunCtx;
use crate::jobs::{self, Action, BulkCredentials, Credentials, DeviceCodeCredentials};
use crate::store::{Decision, Event, EventKind, NewEvent, RunId, RunState, Step, StepState};
use crate::vb365::{self, DeviceCodeRequestOptions};

/// Device codes requested per run at most: the first one and three more after a code was
/// refused (expired or never signed in).
pub const MAX_DEVICE_CODES: usize = 4;

/// Expiry assumed when the server's answer has no `expiresIn` (the usual device-code
/// lifetime of Microsoft Entra ID).
const DEFAULT_EXPIRY_SECS: i64 = 900;

/// What [`prepare`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignIn {
    /// The job does not sign in with a device code, or no step will send a restore.
    NotNeeded,
    /// The operator signed in; the code is in [`RunCtx::user_code`].
    Ready,
    /// A code waits for the operator: the run parks in `needs_attention` with this reason.
    Parked(String),
    /// The run fails with this reason (too many codes, or none could be requested).
    Failed(String),
}

/// The device-code options of the job, if it signs in with one.
pub(crate) fn device_code(job: &jobs::Job) -> Option<&DeviceCodeCredentials> {
    match job.action() {
        Action::Restore(a) => match &a.credentials {
            Credentials::DeviceCode(d) => Some(d),
            _ => None,
        },
        Action::RestoreTo(a) => match &a.credentials {
            Credentials::DeviceCode(d) => Some(d),
            _ => None,
        },
        Action::BulkRestore(a) => match &a.credentials {
            BulkCredentials::DeviceCode(d) => Some(d),
            _ => None,
        },
        Action::ExportPst(_) | Action::Search(_) => None,
    }
}

/// A step that may still send a restore POST (and so needs the code).
fn may_send(step: &Step) -> bool {
    match step.state {
        StepState::Pending | StepState::Submitting => true,
        StepState::InDoubt => step.operator_decision == Some(Decision::Resend),
        _ => false,
    }
}

/// The device-code history of a run, from its events.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Codes requested so far.
    pub requested: usize,
    /// The newest requested code.
    pub last: Option<Requested>,
    /// The operator continued after the newest code was requested.
    pub continued: bool,
    /// The server refused the newest code.
    pub refused: Option<String>,
}

/// One `device_code_requested` event.
#[derive(Debug, Clone)]
pub(crate) struct Requested {
    pub user_code: String,
    pub verification_url: String,
    pub expires_at: DateTime<Utc>,
    pub session: String,
}

impl History {
    /// Reads the history from the run's events (oldest first).
    pub(crate) fn from_events(events: &[Event]) -> History {
        let mut h = History::default();
        for e in events {
            let data = e.data.as_ref();
            let text = |k: &str| {
                data.and_then(|d| d.get(k))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            match e.kind.as_str() {
                k if k == EventKind::DeviceCodeRequested.as_str() => {
                    h.requested += 1;
                    h.continued = false;
                    h.refused = None;
                    h.last = Some(Requested {
                        user_code: text("userCode"),
                        verification_url: text("verificationUrl"),
                        expires_at: DateTime::parse_from_rfc3339(&text("expiresAt"))
                            .map_or(e.at, |t| t.with_timezone(&Utc)),
                        session: text("session"),
                    });
                }
                k if k == EventKind::DeviceCodeContinued.as_str() => h.continued = true,
                k if k == EventKind::DeviceCodeRefused.as_str() => {
                    h.refused = Some(text("error"));
                }
                _ => {}
            }
        }
        h
    }

    /// The session of the newest code while it is usable (not refused): kept open across
    /// executions, adopted by the next one.
    pub(crate) fn code_session(&self) -> Option<&str> {
        self.last
            .as_ref()
            .filter(|_| self.refused.is_none())
            .map(|l| l.session.as_str())
    }

    /// A code waits for the operator's `--continue`.
    pub(crate) fn waiting(&self) -> bool {
        self.code_session().is_some() && !self.continued
    }
}

/// The reason of a run that waits for a sign-in.
pub(crate) fn parked_reason(run: RunId, code: &Requested) -> String {
    format!(
        "sign-in needed: open {} and enter the code {} before {}; then run `restorectl resolve {run} --continue`",
        code.verification_url,
        code.user_code,
        code.expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Makes sure the run has a signed-in device code before its steps run (see the module doc).
///
/// # Errors
///
/// [`RunError`] when the state database fails.
pub(crate) async fn prepare(ctx: &RunCtx, steps: &[Step]) -> Result<SignIn, RunError> {
    let run = ctx.run.id;
    let Some(options) = device_code(&ctx.job) else {
        return Ok(SignIn::NotNeeded);
    };
    if !steps.iter().any(may_send) {
        return Ok(SignIn::NotNeeded);
    }
    let events = ctx
        .store()
        .list_run_events(run)
        .await
        .map_err(RunError::store(run))?;
    let history = History::from_events(&events);
    let open = match ctx.session.get(&ctx.stop.token).await {
        Ok(open) => open,
        Err(f) => {
            return Ok(SignIn::Failed(format!(
                "device code sign-in: cannot open a restore session: {}",
                f.message
            )));
        }
    };
    let session = open.id.to_string();
    if let Some(last) = &history.last
        && history.refused.is_none()
        && last.session.eq_ignore_ascii_case(&session)
    {
        if history.continued {
            *ctx.user_code.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(SecretString::from(last.user_code.clone()));
            tracing::info!(run = %run, "continuing with the device code the operator signed in with");
            return Ok(SignIn::Ready);
        }
        if last.expires_at > ctx.now() {
            // Executed again before the operator continued (a restart): the same code waits.
            return Ok(SignIn::Parked(parked_reason(run, last)));
        }
    }
    if history.requested >= MAX_DEVICE_CODES {
        let why = history
            .refused
            .as_deref()
            .map(|e| format!(" (last refusal: {e})"))
            .unwrap_or_default();
        return Ok(SignIn::Failed(format!(
            "device code sign-in failed: {} codes were requested and none was signed in and accepted before it expired{why}; sign in before the expiry shown, or use application credentials",
            history.requested
        )));
    }
    let body = DeviceCodeRequestOptions {
        target_application_id: options.application_id,
        target_region: options.region.map(super::convert::office_region),
        target_organization_name: options.organization_name.clone(),
    };
    let answer = match ctx.client.restore_device_code(open.id, &body).await {
        Ok(a) => a,
        Err(e) => {
            if e.class == vb365::ErrorClass::SessionLost {
                let _ = ctx.session.lost(open.generation, &e.to_string()).await;
            }
            return Ok(SignIn::Failed(format!(
                "device code sign-in: the server did not give a code: {e}"
            )));
        }
    };
    let (Some(user_code), Some(verification_url)) =
        (answer.user_code.clone(), answer.verification_url.clone())
    else {
        return Ok(SignIn::Failed(
            "device code sign-in: the server's answer has no userCode or verificationUrl".into(),
        ));
    };
    let expires_in = answer
        .expires_in
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_EXPIRY_SECS);
    let code = Requested {
        user_code,
        verification_url,
        expires_at: ctx.now() + chrono::Duration::seconds(expires_in),
        session: session.clone(),
    };
    let number = history.requested + 1;
    let event = NewEvent::new(
        EventKind::DeviceCodeRequested,
        format!(
            "device code {number} of at most {MAX_DEVICE_CODES} requested: open {} and enter {} before {}",
            code.verification_url,
            code.user_code,
            code.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .run(run)
    .data(json!({
        "userCode": code.user_code,
        "verificationUrl": code.verification_url,
        "expiresAt": code.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "expiresIn": expires_in,
        "message": answer.message,
        "session": session,
        "number": number,
    }));
    ctx.store()
        .append_event(&event, ctx.now())
        .await
        .map_err(RunError::store(run))?;
    let reason = parked_reason(run, &code);
    tracing::warn!(run = %run, job = %ctx.job.name(), verification_url = %code.verification_url, user_code = %code.user_code, expires_at = %code.expires_at, "a restore waits for an operator's sign-in with a device code");
    Ok(SignIn::Parked(reason))
}

/// Records that the server refused a restore with the run's device code.
pub(crate) async fn refused(ctx: &RunCtx, step: i64, error: &str) {
    let event = NewEvent::new(
        EventKind::DeviceCodeRefused,
        format!("the server refused the device code: {error}"),
    )
    .run(ctx.run.id)
    .step(step)
    .data(json!({ "error": error }));
    if let Err(e) = ctx.store().append_event(&event, ctx.now()).await {
        tracing::warn!(run = %ctx.run.id, error = %e, "cannot record the refused device code");
    }
}

/// Whether a run waits for a sign-in (`needs_attention` with a waiting device code), for the
/// CLI's checks.
pub fn waits_for_sign_in(state: RunState, events: &[Event]) -> bool {
    state == RunState::NeedsAttention && History::from_events(events).waiting()
}

/// The session the run's usable device code belongs to, parsed.
pub(crate) fn code_session(events: &[Event]) -> Option<Uuid> {
    History::from_events(events)
        .code_session()
        .and_then(|s| Uuid::parse_str(s).ok())
}
