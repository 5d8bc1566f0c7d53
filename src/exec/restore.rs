//! Restore, RestoreTo and BulkRestore: the at-most-once protocol (SPEC §5), reconciliation of a
//! POST whose outcome is unknown, and following an asynchronous v8 restore to its result
//! (API.md §3.6).
//!
//! # At most once
//!
//! Before each restore POST the step is committed `submitting` (which counts the POST in
//! `restore_posts`); after the answer it is `submitted` with the returned `sessionId`. A POST
//! whose outcome is unknown (a timeout or broken connection after the request may have been
//! written, a crash between the two records) leaves the step `submitting`, and only
//! [`reconcile_step`] decides what happens to it:
//!
//! - **received**: a `Restore` event for the step's mailbox(es), started after the step was
//!   committed `submitting` (less a clock-skew allowance), in an operation session created since
//!   then, or in the explore session itself → `submitted`, followed like an answered POST;
//! - **not received**: the explore session is still `Working`, its events and the session list
//!   were read and show no such trace, and the grace time (`engine.reconcileGrace`, at least the
//!   server's `requestTimeout`) has passed since `submitting` → the POST is sent again;
//! - otherwise **unknown** → `in_doubt` (at once when a session that could hold the trace
//!   vanishes while it is read: its contents can no longer be known); the run ends
//!   `needs_attention` and nothing is sent until an operator decides (`restorectl resolve`).
//!
//! Which POSTs get here is decided by [`crate::vb365::error::classify`]: every answer except a
//! refusal before execution (400, 401, 403, 404, 409, 429). "Not received" is a failed attempt
//! under the retry policy.
//!
//! # Whose event is it
//!
//! Events name a mailbox by its address. That identifies only a mailbox whose address is
//! distinct in the session's list; a mailbox without an address, or an archive (it shares its
//! primary's address), is recognised by its id in the statistics (`BulkMailbox` entries) or not
//! at all — an event that may be its own is never taken as proof either way.
//!
//! # Following a restore
//!
//! Both readings of `sessionId` are handled: when it differs from the explore session it is an
//! operation session, done when `Stopped` (its `result`, events and statistics tell the
//! outcome); when it is the explore session, the step is done when every mailbox of the step has
//! a `Restore` event there and none is `Running`, and the explore session's statistics give the
//! counts. Failed items, a `cannotContinueMailboxError` or a failed event fail the step with the
//! server's text; warnings make it `warning`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::error::{AttemptError, RunError, StepFailure};
use super::run_ctx::{Next, RunCtx, StepEnd, sleep, template_values};
use crate::jobs::{self, Action, BulkCredentials, Credentials};
use crate::store::{ErrorClass, RestoreCounts, Step, StepError, StepState};
use crate::vb365::{
    self, ApiError, BulkRestoreOptions, EventStatus, EventType, ItemRestoreDetails, MailboxRef,
    MailboxRestoreCredentials, RestoreCredentials, RestoreFlags, RestoreSessionEvent,
    RestoreSessionFilter, RestoreSessionStatistics, RestoreStatus, RestoreToDifferentLocation,
    RestoreToOriginalLocation, SessionResult,
};

/// Allowance for the clock difference between this host and the VB365 server when comparing
/// event times with our own timestamps.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Consecutive failed polls of a submitted restore before the step fails.
const MAX_POLL_ERRORS: u32 = 30;

/// One mailbox a restore step covers.
#[derive(Debug, Clone)]
struct Target {
    /// The mailbox id (what statistics items name).
    id: String,
    /// Its e-mail address, possibly empty.
    email: String,
    /// The address names this mailbox alone in the session's list: a `Restore` event that names
    /// it is this mailbox's. An empty address, or one an archive shares with its primary
    /// mailbox, tells nothing; such a mailbox is matched by id (statistics) or not at all.
    distinct: bool,
}

/// The mailboxes a restore step covers.
#[derive(Debug, Clone)]
struct Targets(Vec<Target>);

impl Targets {
    fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|t| t.id.as_str())
    }

    /// Every target has a distinct address, so events alone can tell its restore.
    fn all_distinct(&self) -> bool {
        self.0.iter().all(|t| t.distinct)
    }
}

/// The step's mailboxes, with whether each one's address is distinct in the session's list.
async fn targets(ctx: &RunCtx, step: &Step) -> Result<Targets, StepFailure> {
    let all = ctx.mailboxes().await?;
    let ids: Vec<String> = match &step.mailbox_ids {
        Some(ids) => ids.clone(),
        None => step.mailbox_id.clone().into_iter().collect(),
    };
    let list = ids
        .into_iter()
        .map(|id| {
            let email = all
                .iter()
                .find(|m| m.id.to_string().eq_ignore_ascii_case(&id))
                .map(|m| m.email.clone())
                .or_else(|| {
                    step.mailbox_email
                        .clone()
                        .filter(|_| step.mailbox_ids.is_none())
                })
                .unwrap_or_default();
            let sharing = all
                .iter()
                .filter(|m| !email.is_empty() && m.email.eq_ignore_ascii_case(&email))
                .count();
            Target {
                distinct: !email.is_empty() && sharing <= 1,
                id,
                email,
            }
        })
        .collect();
    Ok(Targets(list))
}

fn resolve_credentials(ctx: &RunCtx, c: &Credentials) -> Result<RestoreCredentials, StepFailure> {
    let secrets = &ctx.secrets;
    let text = |r: &crate::config::SecretRef| {
        r.resolve(secrets)
            .map_err(|e| StepFailure::permanent(format!("restore credentials: {e}")))
    };
    Ok(match c {
        Credentials::Application(a) => {
            let cert = a
                .certificate
                .resolve_bytes(secrets)
                .map_err(|e| StepFailure::permanent(format!("restore certificate: {e}")))?;
            let password = a.certificate_password.as_ref().map(text).transpose()?;
            RestoreCredentials::application(
                a.application_id,
                &cert,
                password,
                a.impersonation_account_name.clone(),
            )
        }
        Credentials::User {
            user_name,
            password,
        } => RestoreCredentials::User {
            user_name: user_name.clone(),
            password: text(password)?,
        },
    })
}

fn resolve_bulk_credentials(
    ctx: &RunCtx,
    c: &BulkCredentials,
) -> Result<RestoreCredentials, StepFailure> {
    let secrets = &ctx.secrets;
    let text = |r: &crate::config::SecretRef| {
        r.resolve(secrets)
            .map_err(|e| StepFailure::permanent(format!("restore credentials: {e}")))
    };
    Ok(match c {
        BulkCredentials::Application(a) => {
            resolve_credentials(ctx, &Credentials::Application(a.clone()))?
        }
        BulkCredentials::Office365 {
            user_name,
            password,
        } => RestoreCredentials::User {
            user_name: user_name.clone(),
            password: text(password)?,
        },
        BulkCredentials::OnPremises {
            domain_name,
            user_name,
            password,
        } => RestoreCredentials::OnPremises {
            domain_name: domain_name.clone(),
            user_name: user_name.clone(),
            password: text(password)?,
        },
    })
}

fn region(r: jobs::OfficeRegion) -> vb365::OfficeRegion {
    match r {
        jobs::OfficeRegion::Worldwide => vb365::OfficeRegion::Worldwide,
        jobs::OfficeRegion::Germany => vb365::OfficeRegion::Germany,
        jobs::OfficeRegion::China => vb365::OfficeRegion::China,
        jobs::OfficeRegion::USDefence => vb365::OfficeRegion::USDefence,
        jobs::OfficeRegion::USGovernment => vb365::OfficeRegion::USGovernment,
    }
}

fn parse_id(text: Option<&str>, what: &str, step: &Step) -> Result<Uuid, StepFailure> {
    text.and_then(|t| Uuid::parse_str(t).ok()).ok_or_else(|| {
        StepFailure::permanent(format!("step {}: no valid {what} recorded", step.seq))
    })
}

/// Sends the step's restore POST under the at-most-once protocol: `submitting` committed first,
/// `submitted` with the answer. An ambiguous failure leaves the step `submitting` for
/// reconciliation; any other failure means the request was not executed.
pub(crate) async fn submit(ctx: &RunCtx, step: &Step) -> Result<Next, AttemptError> {
    let run = ctx.run.id;
    let store = ctx.store();
    let open = ctx.session.get(&ctx.stop.token).await?;
    // Bodies are built (and secrets read) before anything is recorded: a missing secret fails
    // the step without a POST.
    enum Body {
        Original(Uuid, RestoreToOriginalLocation),
        To(Uuid, RestoreToDifferentLocation),
        Bulk(BulkRestoreOptions),
    }
    let body = match ctx.job.action() {
        Action::Restore(a) => {
            let creds = resolve_credentials(ctx, &a.credentials)?;
            let mailbox = parse_id(step.mailbox_id.as_deref(), "mailbox id", step)?;
            let body = RestoreToOriginalLocation::new(&creds)
                .map_err(|e| StepFailure::permanent(e.to_string()))?;
            Body::Original(mailbox, body)
        }
        Action::RestoreTo(a) => {
            let creds = resolve_credentials(ctx, &a.credentials)?;
            let mailbox = parse_id(step.mailbox_id.as_deref(), "mailbox id", step)?;
            let values = template_values(
                ctx,
                step.mailbox_email.as_deref().unwrap_or(""),
                step.mailbox_id.as_deref().unwrap_or(""),
                step.is_archive,
            )
            .await;
            let o = a.options;
            Body::To(
                mailbox,
                RestoreToDifferentLocation {
                    mailbox: Some(a.mailbox.clone()),
                    folder: a
                        .folder
                        .as_ref()
                        .map(|f| f.render(&values).to_string_lossy().into_owned()),
                    cas_server: a.cas_server.clone(),
                    office_region: a.office_region.map(region),
                    office_organization_name: a.office_organization_name.clone(),
                    flags: RestoreFlags {
                        changed_items: o.changed_items,
                        deleted_items: o.deleted_items,
                        mark_restored_as_unread: o.mark_restored_as_unread,
                        exclude_drafts: o.exclude_drafts,
                        exclude_deleted_items: o.exclude_deleted_items,
                        exclude_in_place_hold_items: o.exclude_in_place_hold_items,
                        exclude_litigation_hold_items: o.exclude_litigation_hold_items,
                    },
                    credentials: MailboxRestoreCredentials::try_from(&creds)
                        .map_err(|e| StepFailure::permanent(e.to_string()))?,
                },
            )
        }
        Action::BulkRestore(a) => {
            let creds = resolve_bulk_credentials(ctx, &a.credentials)?;
            let ids = step.mailbox_ids.clone().unwrap_or_default();
            let mailboxes = ids
                .iter()
                .map(|id| {
                    Uuid::parse_str(id)
                        .map(|id| MailboxRef { id })
                        .map_err(|_| StepFailure::permanent(format!("bad mailbox id {id}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let o = a.options;
            Body::Bulk(
                BulkRestoreOptions {
                    mailboxes,
                    cas_server: a.cas_server.clone(),
                    flags: RestoreFlags {
                        changed_items: o.changed_items,
                        deleted_items: o.deleted_items,
                        mark_restored_as_unread: o.mark_restored_as_unread,
                        exclude_drafts: o.exclude_drafts,
                        exclude_deleted_items: o.exclude_deleted_items,
                        exclude_in_place_hold_items: o.exclude_in_place_hold_items,
                        exclude_litigation_hold_items: o.exclude_litigation_hold_items,
                    },
                    skip_unresolved: o.skip_unresolved,
                    recent_item_restore_period: a
                        .recent_item_restore_period
                        .map(|d| i32::try_from(d).unwrap_or(i32::MAX)),
                    ..BulkRestoreOptions::default()
                }
                .with_credentials(&creds),
            )
        }
        Action::ExportPst(_) | Action::Search(_) => {
            return Err(StepFailure::permanent("not a restore job").into());
        }
    };
    store
        .set_step_session(step.id, Some(&open.id.to_string()), Utc::now())
        .await
        .map_err(RunError::store(run))?;
    // The commit BEFORE the POST: from here on a crash leaves `submitting` for reconciliation.
    store
        .mark_submitting(step.id, Utc::now())
        .await
        .map_err(RunError::store(run))?;
    let answer = match &body {
        Body::Original(mailbox, b) => ctx.client.restore_mailbox(open.id, *mailbox, b).await,
        Body::To(mailbox, b) => ctx.client.restore_mailbox_to(open.id, *mailbox, b).await,
        Body::Bulk(b) => ctx.client.restore_mailboxes(open.id, b).await,
    };
    match answer {
        Ok(a) => {
            store
                .mark_submitted(step.id, &a.session_id.to_string(), Utc::now())
                .await
                .map_err(RunError::store(run))?;
            tracing::info!(run = %run, step = step.id, mailbox = step.mailbox_email.as_deref().unwrap_or(""), operation = %a.session_id, "restore submitted");
            Ok(Next::Continue)
        }
        Err(e) if e.class == vb365::ErrorClass::Ambiguous => {
            tracing::warn!(run = %run, step = step.id, error = %e, "restore POST outcome unknown; reconciling");
            ctx.note(
                Some(step.id),
                format!(
                    "restore POST outcome unknown: {e}; reconciling through the restore session"
                ),
                json!({ "error": e.to_string() }),
            )
            .await;
            Ok(Next::Continue)
        }
        Err(e) => {
            if e.class == vb365::ErrorClass::SessionLost {
                ctx.session.lost(open.generation, &e.to_string()).await?;
            }
            Err(AttemptError::Step(StepFailure::from(&e)))
        }
    }
}

/// What the restore session's history says about a POST whose outcome is unknown.
enum Evidence {
    /// Received: follow this operation (an operation session, or the explore session).
    Received(Uuid),
    /// Read completely and no trace of it.
    NoTrace,
    /// A session that could hold the trace vanished while it was being read: what it held can
    /// no longer be known, so the absence of a trace proves nothing.
    Vanished(Uuid),
    /// This session holds a restore event that may be the step's or another mailbox's (an
    /// empty address, or one an archive shares with its primary) and nothing by id settles it.
    Unsure(Uuid),
}

/// What a `Restore` event says about one target mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// It names the mailbox's distinct address.
    Ours,
    /// It may be this mailbox's or another's: it names an address the mailbox shares (an
    /// archive and its primary), or it names no address and the mailbox has none.
    Maybe,
    /// It is about another mailbox (or is not a restore event).
    No,
}

fn event_match(e: &RestoreSessionEvent, t: &Target) -> Match {
    if e.event_type != Some(EventType::Restore) {
        return Match::No;
    }
    let source = e.source.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if t.email.is_empty() {
        // Nothing of ours to look for; an event naming nobody could be ours.
        return if source.is_none() && !names_an_address(&e.message) {
            Match::Maybe
        } else {
            Match::No
        };
    }
    let named = match source {
        Some(s) => s.eq_ignore_ascii_case(&t.email),
        None => contains_address(&e.message, &t.email),
    };
    match (named, t.distinct) {
        (true, true) => Match::Ours,
        (true, false) => Match::Maybe,
        (false, _) => Match::No,
    }
}

/// An event that is certainly about one of the targets.
fn ours(e: &RestoreSessionEvent, targets: &Targets) -> bool {
    targets.0.iter().any(|t| event_match(e, t) == Match::Ours)
}

/// Characters that can be part of an e-mail address (so a match must not be next to one).
fn address_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-@'!#$&*/=?^`{|}~".contains(c)
}

/// `text` names `address` as a whole word (case-insensitively): `bob@x` is not found in
/// `alice.bob@x`, and an empty address is never found.
fn contains_address(text: &str, address: &str) -> bool {
    if address.is_empty() {
        return false;
    }
    let (text, address) = (text.to_lowercase(), address.to_lowercase());
    let mut from = 0;
    while let Some(pos) = text[from..].find(&address) {
        let start = from + pos;
        let end = start + address.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(address_char) && !after.is_some_and(address_char) {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The text holds something that looks like an e-mail address.
fn names_an_address(text: &str) -> bool {
    text.split(|c: char| !address_char(c))
        .any(|w| w.len() > 2 && w.trim_matches('@').contains('@'))
}

/// A statistics entry for one of the target ids (what identifies a mailbox whatever its address).
fn stats_name_a_target(stats: &RestoreSessionStatistics, targets: &Targets) -> bool {
    flatten(&stats.items).iter().any(|i| {
        i.item_restore_details_type == "BulkMailbox"
            && i.id
                .as_deref()
                .is_some_and(|x| targets.ids().any(|id| id.eq_ignore_ascii_case(x)))
    })
}

/// Looks for a trace of the step's restore started at or after `since`: first in operation
/// sessions created since then (reading a), then in the explore session's events (reading b).
/// `others` are the operations other steps of the run are known to follow: not this step's.
async fn find_evidence(
    ctx: &RunCtx,
    explore: Uuid,
    since: DateTime<Utc>,
    targets: &Targets,
    others: &HashSet<Uuid>,
) -> Result<Evidence, ApiError> {
    let since = since - chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default();
    let filter = RestoreSessionFilter {
        start_time_from: Some(since),
        ..RestoreSessionFilter::default()
    };
    let maybe = |e: &RestoreSessionEvent| {
        e.start_time >= since && targets.0.iter().any(|t| event_match(e, t) == Match::Maybe)
    };
    let mut unsure = None;
    for s in ctx.client.restore_sessions(&filter).await? {
        if s.id == explore || s.creation_time < since || others.contains(&s.id) {
            continue;
        }
        // A session this daemon opened is an explore session of some run, not an operation.
        if ctx.store().get_session(&s.id.to_string()).await.is_ok() {
            continue;
        }
        let events = match ctx.client.restore_session_events(s.id).await {
            Ok(events) => events,
            Err(e) if e.is_gone() => return Ok(Evidence::Vanished(s.id)),
            Err(e) => return Err(e),
        };
        if events
            .iter()
            .any(|e| ours(e, targets) && e.start_time >= since)
        {
            return Ok(Evidence::Received(s.id));
        }
        if events.iter().any(maybe) {
            // An operation session's statistics list every mailbox of its restore by id once
            // it is done: they tell whose restore it is.
            match ctx.client.restore_session_statistics(s.id).await {
                Ok(st) if stats_name_a_target(&st, targets) => {
                    return Ok(Evidence::Received(s.id));
                }
                Ok(st) if !st.items.is_empty() => {}
                Ok(_) => {
                    unsure.get_or_insert(s.id);
                }
                Err(e) if e.is_gone() => return Ok(Evidence::Vanished(s.id)),
                Err(e) => return Err(e),
            }
        }
    }
    let events = ctx.client.restore_session_events(explore).await?;
    if events
        .iter()
        .any(|e| ours(e, targets) && e.start_time >= since)
    {
        return Ok(Evidence::Received(explore));
    }
    if events.iter().any(maybe) {
        // The explore session collects the statistics of this run's restores only, and a
        // mailbox has one step: an entry with its id is this step's restore.
        let st = ctx.client.restore_session_statistics(explore).await?;
        if stats_name_a_target(&st, targets) {
            return Ok(Evidence::Received(explore));
        }
        unsure.get_or_insert(explore);
    }
    Ok(unsure.map_or(Evidence::NoTrace, Evidence::Unsure))
}

/// Decides about a step left `submitting` (see the module doc). A POST proven not received (or
/// never sent) is a failed attempt: it comes back as [`AttemptError::Step`], and the step loop
/// handles it under the retry policy like any other.
pub(crate) async fn reconcile_step(ctx: &RunCtx, step: &Step) -> Result<Next, AttemptError> {
    let run = ctx.run.id;
    let store = ctx.store();
    // The row's last update is the `submitting` commit (nothing else touches it until the
    // answer is recorded).
    let since = step.updated_at;
    let grace = ctx
        .options()
        .reconcile_grace
        .max(ctx.client_request_timeout());
    let decide_after = since + chrono::Duration::from_std(grace).unwrap_or_default();
    let Some(explore) = step
        .restore_session_id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        // No session was recorded, so no POST can have been sent.
        return submit(ctx, step).await;
    };
    // Which mailboxes to look for, and the operations the run's other steps follow (not ours).
    let (targets, others) = loop {
        let known = async {
            let t = targets(ctx, step).await?;
            let others: HashSet<Uuid> = store
                .list_steps(run)
                .await
                .map_err(|e| StepFailure::new(ErrorClass::Retryable, e.to_string()))?
                .iter()
                .filter(|s| s.id != step.id)
                .filter_map(|s| s.remote_operation_id.as_deref())
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect();
            Ok::<_, StepFailure>((t, others))
        };
        match known.await {
            Ok(k) => break k,
            Err(f) if Utc::now() >= decide_after => {
                return in_doubt(
                    ctx,
                    step,
                    &format!("cannot tell which mailboxes to look for: {}", f.message),
                )
                .await;
            }
            Err(_) => {
                if !sleep(ctx, ctx.options().poll_interval).await {
                    return Ok(Next::End(StepEnd::Stopped));
                }
            }
        }
    };
    let mut last_error = None;
    loop {
        if ctx.stop.is_stopped() {
            return Ok(Next::End(StepEnd::Stopped));
        }
        match find_evidence(ctx, explore, since, &targets, &others).await {
            Ok(Evidence::Received(op)) => {
                store
                    .mark_submitted(step.id, &op.to_string(), Utc::now())
                    .await
                    .map_err(RunError::store(run))?;
                ctx.note(
                    Some(step.id),
                    format!(
                        "reconciled: the restore POST was received (operation {op}); following it"
                    ),
                    json!({ "reconciled": "received", "operation": op }),
                )
                .await;
                return Ok(Next::Continue);
            }
            // Decided at once: a later look (after a restart, say) could not tell that the
            // session was ever there, and would take the missing trace for proof.
            Ok(Evidence::Vanished(id)) => {
                return in_doubt(
                    ctx,
                    step,
                    &format!("restore session {id}, which could hold the restore's trace, vanished while it was read; cannot prove the restore was not received"),
                )
                .await;
            }
            Ok(Evidence::Unsure(id)) if Utc::now() >= decide_after => {
                let who: Vec<&str> = targets
                    .0
                    .iter()
                    .filter(|t| !t.distinct)
                    .map(|t| {
                        if t.email.is_empty() {
                            "(no address)"
                        } else {
                            t.email.as_str()
                        }
                    })
                    .collect();
                return in_doubt(
                    ctx,
                    step,
                    &format!("restore session {id} holds a restore of an address this step cannot be told apart by ({}: empty, or shared by an archive and its primary mailbox) and its statistics do not name the mailbox id; cannot prove whose restore it is", who.join(", ")),
                )
                .await;
            }
            Ok(Evidence::Unsure(_)) => {}
            Ok(Evidence::NoTrace) if Utc::now() >= decide_after => {
                let alive = match ctx.client.restore_session(explore).await {
                    Ok(s) => s.state == vb365::SessionState::Working,
                    Err(_) => false,
                };
                if !alive {
                    return in_doubt(
                        ctx,
                        step,
                        &format!("restore session {explore} is gone and shows no trace of the restore; cannot prove it was not received"),
                    )
                    .await;
                }
                ctx.note(
                    Some(step.id),
                    format!(
                        "reconciled: restore session {explore} is working and shows no trace of the restore {}s after it was committed; it was not received and will be sent again",
                        grace.as_secs()
                    ),
                    json!({ "reconciled": "not_received" }),
                )
                .await;
                // Proven not executed: an ordinary failed attempt, so the next POST comes under
                // the retry policy (backoff, `retry.maxAttempts`) like any refused one.
                let failure = StepFailure::new(
                    ErrorClass::Retryable,
                    format!(
                        "the restore POST was not received (no trace in restore session {explore} {}s after it was sent)",
                        grace.as_secs()
                    ),
                );
                return Err(AttemptError::Step(failure));
            }
            Ok(Evidence::NoTrace) => {}
            Err(e) => {
                if Utc::now() >= decide_after {
                    return in_doubt(
                        ctx,
                        step,
                        &format!("the restore session's history could not be read: {e}"),
                    )
                    .await;
                }
                last_error = Some(e.to_string());
            }
        }
        let remaining = (decide_after - Utc::now()).to_std().unwrap_or_default();
        let wait = ctx
            .options()
            .poll_interval
            .min(remaining.max(Duration::from_millis(50)));
        if !sleep(ctx, wait).await {
            return Ok(Next::End(StepEnd::Stopped));
        }
        if let Some(e) = &last_error {
            tracing::debug!(run = %run, step = step.id, error = %e, "reconciliation read failed; retrying");
        }
    }
}

async fn in_doubt(ctx: &RunCtx, step: &Step, why: &str) -> Result<Next, AttemptError> {
    let message = format!("restore POST outcome unknown: {why}");
    tracing::warn!(run = %ctx.run.id, step = step.id, mailbox = step.mailbox_email.as_deref().unwrap_or(""), "{message}");
    ctx.store()
        .mark_in_doubt(step.id, &message, Utc::now())
        .await
        .map_err(RunError::store(ctx.run.id))?;
    Ok(Next::End(StepEnd::Blocked))
}

/// The outcome of a finished restore for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestoreOutcome {
    pub state: StepState,
    pub counts: Option<RestoreCounts>,
    /// The server's text for a failure or warnings.
    pub message: Option<String>,
}

/// Follows a `submitted` step until its restore has an outcome, then records it.
pub(crate) async fn follow_step(ctx: &RunCtx, step: &Step) -> Result<Next, RunError> {
    let run = ctx.run.id;
    let store = ctx.store();
    let op = step
        .remote_operation_id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok());
    let explore = step
        .restore_session_id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s).ok());
    let (Some(op), Some(explore)) = (op, explore) else {
        let error = StepError {
            class: ErrorClass::Permanent,
            code: None,
            message: "submitted restore without a recorded operation or session id".into(),
        };
        store
            .set_step_state(step.id, StepState::Failed, Some(&error), Utc::now())
            .await
            .map_err(RunError::store(run))?;
        return Ok(Next::Continue);
    };
    let submitted = step.submitted_at.unwrap_or(step.updated_at);
    let since = submitted
        - chrono::Duration::from_std(ctx.client_request_timeout() + CLOCK_SKEW).unwrap_or_default();
    // The mailboxes to look for (a bulk step needs the session's list for their e-mails).
    let mut errors = 0u32;
    let targets = loop {
        match targets(ctx, step).await {
            Ok(t) => break t,
            Err(f) => {
                errors += 1;
                if errors >= MAX_POLL_ERRORS {
                    let error = StepError {
                        class: f.class,
                        code: f.code,
                        message: format!("the restore's outcome could not be read: {}", f.message),
                    };
                    store
                        .set_step_state(step.id, StepState::Failed, Some(&error), Utc::now())
                        .await
                        .map_err(RunError::store(run))?;
                    return Ok(Next::Continue);
                }
                if !sleep(ctx, ctx.options().poll_interval).await {
                    return Ok(Next::End(StepEnd::Stopped));
                }
            }
        }
    };
    errors = 0;
    loop {
        if ctx.stop.is_stopped() {
            return Ok(Next::End(StepEnd::Stopped));
        }
        match poll_once(ctx, op, explore, since, &targets).await {
            Ok(Some(outcome)) => {
                record_outcome(ctx, step, outcome).await?;
                return Ok(Next::Continue);
            }
            Ok(None) => errors = 0,
            Err(e) => {
                errors += 1;
                tracing::warn!(run = %run, step = step.id, error = %e, "polling the restore failed");
                if errors >= MAX_POLL_ERRORS || e.class == vb365::ErrorClass::Auth {
                    let error = StepError {
                        class: super::error::store_class(e.class),
                        code: e.error_code.map(|c| c.to_string()),
                        message: format!("the restore's outcome could not be read: {e}"),
                    };
                    store
                        .set_step_state(step.id, StepState::Failed, Some(&error), Utc::now())
                        .await
                        .map_err(RunError::store(run))?;
                    return Ok(Next::Continue);
                }
            }
        }
        if !sleep(ctx, ctx.options().poll_interval).await {
            return Ok(Next::End(StepEnd::Stopped));
        }
    }
}

async fn poll_once(
    ctx: &RunCtx,
    op: Uuid,
    explore: Uuid,
    since: DateTime<Utc>,
    targets: &Targets,
) -> Result<Option<RestoreOutcome>, ApiError> {
    if op != explore {
        match ctx.client.restore_session(op).await {
            Ok(s) if s.state == vb365::SessionState::Stopped => {
                let events = ctx
                    .client
                    .restore_session_events(op)
                    .await
                    .unwrap_or_default();
                let stats = ctx.client.restore_session_statistics(op).await.ok();
                let restore_events: Vec<&RestoreSessionEvent> = events
                    .iter()
                    .filter(|e| e.event_type == Some(EventType::Restore))
                    .collect();
                return Ok(Some(evaluate(
                    &restore_events,
                    stats.as_ref(),
                    Some(s.result),
                    targets,
                )));
            }
            Ok(_) => return Ok(None),
            Err(e) if e.is_gone() => {
                // The operation session is gone: the explore session's events may still tell.
                return match explore_outcome(ctx, explore, since, targets).await? {
                    Some(outcome) => Ok(Some(outcome)),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        }
    }
    explore_outcome(ctx, explore, since, targets).await
}

/// The step's outcome as the explore session tells it (reading b), once every target mailbox
/// is finished there; `None` while one is not.
async fn explore_outcome(
    ctx: &RunCtx,
    explore: Uuid,
    since: DateTime<Utc>,
    targets: &Targets,
) -> Result<Option<RestoreOutcome>, ApiError> {
    let events = ctx.client.restore_session_events(explore).await?;
    let relevant: Vec<&RestoreSessionEvent> = events
        .iter()
        .filter(|e| ours(e, targets) && e.start_time >= since)
        .collect();
    // A mailbox without a distinct address is finished when the statistics name its id.
    let stats = if targets.all_distinct() {
        None
    } else {
        Some(ctx.client.restore_session_statistics(explore).await?)
    };
    if !finished(&relevant, stats.as_ref(), targets) {
        return Ok(None);
    }
    let stats = match stats {
        Some(s) => Some(s),
        None => ctx.client.restore_session_statistics(explore).await.ok(),
    };
    Ok(Some(evaluate(&relevant, stats.as_ref(), None, targets)))
}

/// Every target mailbox is finished: one with a distinct address has a `Restore` event, one
/// without has a statistics entry with its id; and no event is still running.
fn finished(
    events: &[&RestoreSessionEvent],
    stats: Option<&RestoreSessionStatistics>,
    targets: &Targets,
) -> bool {
    !targets.0.is_empty()
        && events.iter().all(|e| e.status != EventStatus::Running)
        && targets.0.iter().all(|t| {
            if t.distinct {
                events.iter().any(|e| event_match(e, t) == Match::Ours)
            } else {
                stats.is_some_and(|st| stats_name_a_target(st, &Targets(vec![t.clone()])))
            }
        })
}

fn flatten(items: &[ItemRestoreDetails]) -> Vec<&ItemRestoreDetails> {
    let mut out = Vec::new();
    for i in items {
        out.push(i);
        out.extend(flatten(&i.child_items));
    }
    out
}

/// The step's outcome from its events, the statistics items of its mailboxes and the operation
/// session's result.
fn evaluate(
    events: &[&RestoreSessionEvent],
    stats: Option<&RestoreSessionStatistics>,
    result: Option<SessionResult>,
    targets: &Targets,
) -> RestoreOutcome {
    let mut failures: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut counts = None;
    if let Some(stats) = stats {
        let all = flatten(&stats.items);
        // The last entry per mailbox: an explore session accumulates the items of every
        // restore run in it.
        let mut mine: Vec<&ItemRestoreDetails> = Vec::new();
        for id in targets.ids() {
            if let Some(item) = all.iter().rev().find(|i| {
                i.item_restore_details_type == "BulkMailbox"
                    && i.id.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(id))
            }) {
                mine.push(item);
            }
        }
        if mine.is_empty() {
            // By address only where the address names one mailbox.
            for t in targets.0.iter().filter(|t| t.distinct) {
                if let Some(item) = all.iter().rev().find(|i| {
                    i.mailbox_email
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(&t.email))
                }) {
                    mine.push(item);
                }
            }
        }
        if !mine.is_empty() {
            let sum = |f: fn(&ItemRestoreDetails) -> Option<i64>| {
                mine.iter()
                    .map(|i| u64::try_from(f(i).unwrap_or(0)).unwrap_or(0))
                    .sum::<u64>()
            };
            counts = Some(RestoreCounts {
                created: sum(|i| i.created_mailbox_items_count),
                merged: sum(|i| i.merged_mailbox_items_count),
                failed: sum(|i| i.failed_mailbox_items_count),
                skipped: sum(|i| i.skipped_mailbox_items_count),
            });
            for i in &mine {
                let who = i.mailbox_email.clone().unwrap_or_default();
                if let Some(text) = i
                    .cannot_continue_mailbox_error
                    .as_deref()
                    .filter(|t| !t.is_empty())
                {
                    failures.push(format!("{who}: {text}"));
                } else if i.status == Some(RestoreStatus::Failed) {
                    failures.push(format!(
                        "{who}: {}",
                        i.error.clone().unwrap_or_else(|| "restore failed".into())
                    ));
                } else if i.status == Some(RestoreStatus::Warning)
                    || i.failed_mailbox_items_count.unwrap_or(0) > 0
                {
                    if i.warnings.is_empty() {
                        warnings.push(format!(
                            "{who}: {} items failed",
                            i.failed_mailbox_items_count.unwrap_or(0)
                        ));
                    } else {
                        warnings.extend(i.warnings.iter().map(|w| format!("{who}: {w}")));
                    }
                }
            }
        } else {
            failures.extend(stats.errors.iter().cloned());
            warnings.extend(stats.warnings.iter().cloned());
        }
    }
    for e in events {
        match e.status {
            EventStatus::Failed if failures.is_empty() => failures.push(e.message.clone()),
            EventStatus::Cancelled if failures.is_empty() => {
                failures.push(format!("restore cancelled on the server: {}", e.message));
            }
            EventStatus::Warning | EventStatus::Skipped if warnings.is_empty() => {
                warnings.push(e.message.clone());
            }
            _ => {}
        }
    }
    match result {
        Some(SessionResult::Failed) if failures.is_empty() => {
            failures.push("the restore operation finished with result Failed".into());
        }
        Some(SessionResult::Warning) if warnings.is_empty() && failures.is_empty() => {
            warnings.push("the restore operation finished with result Warning".into());
        }
        _ => {}
    }
    if !failures.is_empty() {
        RestoreOutcome {
            state: StepState::Failed,
            counts,
            message: Some(failures.join("; ")),
        }
    } else if !warnings.is_empty() {
        RestoreOutcome {
            state: StepState::Warning,
            counts,
            message: Some(warnings.join("; ")),
        }
    } else {
        RestoreOutcome {
            state: StepState::Done,
            counts,
            message: None,
        }
    }
}

async fn record_outcome(
    ctx: &RunCtx,
    step: &Step,
    outcome: RestoreOutcome,
) -> Result<(), RunError> {
    let run = ctx.run.id;
    let store = ctx.store();
    if let Some(c) = outcome.counts {
        store
            .record_restore_counts(step.id, c, Utc::now())
            .await
            .map_err(RunError::store(run))?;
    }
    let error = outcome.message.as_ref().map(|m| StepError {
        class: ErrorClass::Permanent,
        code: None,
        message: m.clone(),
    });
    store
        .set_step_state(step.id, outcome.state, error.as_ref(), Utc::now())
        .await
        .map_err(RunError::store(run))?;
    tracing::info!(run = %run, step = step.id, mailbox = step.mailbox_email.as_deref().unwrap_or(""), state = %outcome.state, "restore finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: EventStatus, source: &str) -> RestoreSessionEvent {
        RestoreSessionEvent {
            id: Uuid::new_v4(),
            order: 1,
            event_type: Some(EventType::Restore),
            status,
            title: None,
            message: format!("Restoring {source}"),
            start_time: Utc::now(),
            end_time: None,
            duration: None,
            item_name: None,
            item_type: None,
            item_size_bytes: None,
            source: Some(source.into()),
            target: None,
        }
    }

    fn item(
        id: &str,
        status: RestoreStatus,
        failed: i64,
        cannot: Option<&str>,
    ) -> ItemRestoreDetails {
        serde_json::from_value(json!({
            "itemRestoreDetailsType": "BulkMailbox", "id": id, "status": status,
            "mailboxEmail": "a@x", "createdMailboxItemsCount": 5, "mergedMailboxItemsCount": 1,
            "failedMailboxItemsCount": failed, "skippedMailboxItemsCount": 2,
            "cannotContinueMailboxError": cannot,
        }))
        .unwrap()
    }

    fn stats(items: Vec<ItemRestoreDetails>) -> RestoreSessionStatistics {
        RestoreSessionStatistics {
            total_items_count: 0,
            restored_items_count: 0,
            failed_items_count: 0,
            skipped_items_count: 0,
            items,
            warnings: vec![],
            errors: vec![],
        }
    }

    fn target(id: &str, email: &str, distinct: bool) -> Target {
        Target {
            id: id.into(),
            email: email.into(),
            distinct,
        }
    }

    fn targets() -> Targets {
        Targets(vec![target("m1", "a@x", true)])
    }

    #[test]
    fn outcome_from_statistics_and_events() {
        let done = event(EventStatus::Success, "a@x");
        let ok = evaluate(
            &[&done],
            Some(&stats(vec![
                item("m0", RestoreStatus::Failed, 9, Some("other mailbox")),
                item("m1", RestoreStatus::Success, 0, None),
            ])),
            Some(SessionResult::Success),
            &targets(),
        );
        assert_eq!(ok.state, StepState::Done, "{ok:?}");
        assert_eq!(
            ok.counts,
            Some(RestoreCounts {
                created: 5,
                merged: 1,
                failed: 0,
                skipped: 2
            })
        );
        let warn = evaluate(
            &[&done],
            Some(&stats(vec![item("m1", RestoreStatus::Warning, 3, None)])),
            None,
            &targets(),
        );
        assert_eq!(warn.state, StepState::Warning);
        assert!(warn.message.unwrap().contains("3 items failed"));
        let cannot = evaluate(
            &[&done],
            Some(&stats(vec![item(
                "m1",
                RestoreStatus::Failed,
                8,
                Some("mailbox is locked"),
            )])),
            None,
            &targets(),
        );
        assert_eq!(cannot.state, StepState::Failed);
        assert!(cannot.message.unwrap().contains("mailbox is locked"));
        let failed_event = event(EventStatus::Failed, "a@x");
        let by_event = evaluate(&[&failed_event], None, None, &targets());
        assert_eq!(by_event.state, StepState::Failed);
    }

    #[test]
    fn finished_needs_every_mailbox_and_nothing_running() {
        let t = Targets(vec![target("m1", "a@x", true), target("m2", "b@x", true)]);
        let a = event(EventStatus::Success, "a@x");
        let b_running = event(EventStatus::Running, "b@x");
        let b = event(EventStatus::Success, "B@X");
        assert!(!finished(&[&a], None, &t));
        assert!(!finished(&[&a, &b_running], None, &t));
        assert!(finished(&[&a, &b], None, &t));
    }

    /// An empty address is found nowhere, and `message.contains("")` is not a match.
    #[test]
    fn an_empty_address_never_matches_an_event_of_another_mailbox() {
        let empty = target("m9", "", false);
        let other = event(EventStatus::Success, "a@x");
        assert_eq!(event_match(&other, &empty), Match::No);
        let mut unnamed = event(EventStatus::Success, "a@x");
        unnamed.source = None;
        assert_eq!(
            event_match(&unnamed, &empty),
            Match::No,
            "the message names a@x"
        );
        unnamed.message = "Restoring mailbox".into();
        assert_eq!(event_match(&unnamed, &empty), Match::Maybe);
        assert!(!contains_address("Restoring a@x", ""));
        // Finished only by a statistics entry with its id, never by another mailbox's event.
        let t = Targets(vec![empty]);
        assert!(!finished(&[&other], None, &t));
        let st = stats(vec![item("m1", RestoreStatus::Success, 0, None)]);
        assert!(!finished(&[], Some(&st), &t));
        let st = stats(vec![item("m9", RestoreStatus::Success, 0, None)]);
        assert!(finished(&[], Some(&st), &t));
    }

    /// An archive shares its primary's address: an event naming it is only "maybe", and the
    /// outcome comes from the statistics entry with the archive's own id.
    #[test]
    fn an_archive_sharing_its_primarys_address_is_matched_by_id() {
        let archive = target("arch", "a@x", false);
        let e = event(EventStatus::Failed, "a@x");
        assert_eq!(event_match(&e, &archive), Match::Maybe);
        let t = Targets(vec![archive]);
        assert!(!ours(&e, &t));
        assert!(!finished(&[], None, &t));
        let primary_failed = item("prim", RestoreStatus::Failed, 9, Some("primary broke"));
        let st = stats(vec![primary_failed.clone()]);
        assert!(
            !finished(&[], Some(&st), &t),
            "the primary's entry is not ours"
        );
        let st = stats(vec![
            primary_failed,
            item("arch", RestoreStatus::Success, 0, None),
        ]);
        assert!(finished(&[], Some(&st), &t));
        let outcome = evaluate(&[], Some(&st), None, &t);
        assert_eq!(outcome.state, StepState::Done, "{outcome:?}");
    }

    #[test]
    fn an_address_matches_only_as_a_whole_word() {
        assert!(contains_address("Restored Bob@X (3 items)", "bob@x"));
        assert!(contains_address("bob@x", "bob@x"));
        assert!(!contains_address("Restored alice.bob@x", "bob@x"));
        assert!(!contains_address("Restored bob@x.org", "bob@x"));
        assert!(contains_address("Failed to restore bob@x: locked", "bob@x"));
        assert!(names_an_address("Restoring a@x"));
        assert!(!names_an_address("Restoring mailbox @ 10:00"));
    }
}
