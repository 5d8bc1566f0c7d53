//! Whose restore an event or a statistics entry is ("Whose event is it" in the module doc of
//! [`super`]), whether every mailbox of a step is finished, and the step's outcome from the
//! events, statistics and result of its restore. Pure, apart from reading the step's mailboxes
//! from the session's list ([`targets`]).

use std::time::Duration;

use crate::exec::error::StepFailure;
use crate::exec::run_ctx::RunCtx;
use crate::store::{RestoreCounts, Step, StepState};
use crate::vb365::{
    EventStatus, EventType, ItemRestoreDetails, RestoreSessionEvent, RestoreSessionStatistics,
    RestoreStatus, SessionResult,
};

/// Allowance for the clock difference between this host and the VB365 server when comparing
/// event times with our own timestamps.
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// One mailbox a restore step covers.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The mailbox id (what statistics items name).
    id: String,
    /// Its e-mail address, possibly empty.
    pub(super) email: String,
    /// The address names this mailbox alone in the session's list: a `Restore` event that names
    /// it is this mailbox's. An empty address, or one an archive shares with its primary
    /// mailbox, tells nothing; such a mailbox is matched by id (statistics) or not at all.
    pub(super) distinct: bool,
}

/// The mailboxes a restore step covers.
#[derive(Debug, Clone)]
pub(super) struct Targets(pub(super) Vec<Target>);

impl Targets {
    fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|t| t.id.as_str())
    }

    /// Every target has a distinct address, so events alone can tell its restore.
    pub(super) fn all_distinct(&self) -> bool {
        self.0.iter().all(|t| t.distinct)
    }
}

/// The step's mailboxes, with whether each one's address is distinct in the session's list.
pub(super) async fn targets(ctx: &RunCtx, step: &Step) -> Result<Targets, StepFailure> {
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

/// What a `Restore` event says about one target mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// It names the mailbox's distinct address.
    Ours,
    /// It may be this mailbox's or another's: it names an address the mailbox shares (an
    /// archive and its primary), or it names no address and the mailbox has none.
    Maybe,
    /// It is about another mailbox (or is not a restore event).
    No,
}

pub(super) fn event_match(e: &RestoreSessionEvent, t: &Target) -> Match {
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
pub(super) fn ours(e: &RestoreSessionEvent, targets: &Targets) -> bool {
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
pub(super) fn stats_name_a_target(stats: &RestoreSessionStatistics, targets: &Targets) -> bool {
    flatten(&stats.items).iter().any(|i| {
        i.item_restore_details_type == "BulkMailbox"
            && i.id
                .as_deref()
                .is_some_and(|x| targets.ids().any(|id| id.eq_ignore_ascii_case(x)))
    })
}

/// Every target mailbox is finished: one with a distinct address has a `Restore` event, one
/// without has a statistics entry with its id; and no event is still running.
pub(super) fn finished(
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

/// The outcome of a finished restore for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestoreOutcome {
    pub state: StepState,
    pub counts: Option<RestoreCounts>,
    /// The server's text for a failure or warnings.
    pub message: Option<String>,
}

/// The step's outcome from its events, the statistics items of its mailboxes and the operation
/// session's result.
pub(super) fn evaluate(
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

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
