//! What a scheduled job does at one wake-up of the scheduler (SPEC §4.3): which due fire runs
//! (at most one), which are recorded as `missed`, and the new next fire instant.
//!
//! The stored next fire is the source of truth: every fire from it up to now is due. After
//! downtime that can be many (a `* * * * *` job down for a year has 525,600), so the plan lists at
//! most [`MAX_RECORDED_MISSED`] missed instants one by one and counts the rest; past
//! [`MAX_COUNTED_MISSED`] it stops counting, finds the latest due fire by bisection, and reports the
//! count as a lower bound. Runtime stays bounded whatever the outage.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::fire::next_fire;

/// Missed fires listed one by one in [`Plan::missed`] (each becomes a `missed` run row).
pub const MAX_RECORDED_MISSED: usize = 1_000;

/// Due fires enumerated one by one before the plan stops counting (see [`Plan::missed_unrecorded`]).
pub const MAX_COUNTED_MISSED: u64 = 100_000;

/// The decision for one job at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The fire to run now: the latest due fire, if it is within `startingDeadline` of now (any
    /// age when there is no deadline). At most one catch-up run, whatever the outage.
    pub run: Option<DateTime<Utc>>,
    /// Missed fires to record, oldest first: every due fire except the one that runs, at most
    /// [`MAX_RECORDED_MISSED`] of them (the oldest).
    pub missed: Vec<DateTime<Utc>>,
    /// Missed fires beyond those listed in `missed` (not recorded one by one).
    pub missed_unrecorded: u64,
    /// `false` when counting stopped at [`MAX_COUNTED_MISSED`]: `missed_unrecorded` is then a
    /// lower bound.
    pub missed_count_exact: bool,
    /// The first fire strictly after now, to store as the job's next fire (`None`: never again).
    pub next_fire: Option<DateTime<Utc>>,
}

impl Plan {
    /// All missed fires, listed or not (a lower bound when `missed_count_exact` is false).
    pub fn missed_total(&self) -> u64 {
        self.missed.len() as u64 + self.missed_unrecorded
    }
}

/// Plans one job at `now`.
///
/// - `stored_next_fire = None` (a new job, or its [`super::schedule_key`] changed, or it was just
///   resumed): nothing runs and nothing is missed; only the next fire after `now` is computed.
///   Applying or changing a schedule never fires a run by itself.
/// - `stored_next_fire` in the future: nothing is due; it stays the next fire.
/// - otherwise every fire from the stored one up to `now` (inclusive) is due: the latest runs if
///   `now - latest <= starting_deadline` (or there is no deadline), all others are missed.
pub fn plan(
    cron: &Cron,
    tz: Tz,
    stored_next_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    starting_deadline: Option<Duration>,
) -> Plan {
    let Some(first_due) = stored_next_fire else {
        return Plan {
            missed_count_exact: true,
            next_fire: next_fire(cron, tz, now),
            ..Plan::default()
        };
    };
    if first_due > now {
        return Plan {
            missed_count_exact: true,
            next_fire: Some(first_due),
            ..Plan::default()
        };
    }

    // Walk the due fires. Everything before the latest is missed; `latest` trails the walk.
    let mut missed = Vec::new();
    let mut missed_unrecorded: u64 = 0;
    let mut counted: u64 = 1;
    let mut latest = first_due;
    let mut missed_count_exact = true;
    let mut next = next_fire(cron, tz, latest);
    while let Some(fire) = next.filter(|f| *f <= now) {
        if counted >= MAX_COUNTED_MISSED {
            missed_count_exact = false;
            break;
        }
        record(&mut missed, &mut missed_unrecorded, latest);
        latest = fire;
        counted += 1;
        next = next_fire(cron, tz, latest);
    }
    if !missed_count_exact {
        // Too many to count: everything from `latest` to the last due fire is missed but not
        // counted; jump straight to the last due fire.
        record(&mut missed, &mut missed_unrecorded, latest);
        latest = last_fire_not_after(cron, tz, latest, now);
        next = next_fire(cron, tz, now);
    }

    let within_deadline = match starting_deadline {
        None => true,
        Some(deadline) => {
            TimeDelta::from_std(deadline).map_or(true, |deadline| now - latest <= deadline)
        }
    };
    let run = if within_deadline {
        Some(latest)
    } else {
        record(&mut missed, &mut missed_unrecorded, latest);
        None
    };
    Plan {
        run,
        missed,
        missed_unrecorded,
        missed_count_exact,
        next_fire: next,
    }
}

fn record(missed: &mut Vec<DateTime<Utc>>, unrecorded: &mut u64, fire: DateTime<Utc>) {
    if missed.len() < MAX_RECORDED_MISSED {
        missed.push(fire);
    } else {
        *unrecorded += 1;
    }
}

/// The latest fire in `[known, now]`, given that `known` is a fire not after `now`. Bisects on
/// "the first fire after t is not after now", which holds up to the answer and fails from it on;
/// about 35 [`next_fire`] calls for a century.
fn last_fire_not_after(
    cron: &Cron,
    tz: Tz,
    known: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let due_after = |t: DateTime<Utc>| next_fire(cron, tz, t).filter(|f| *f <= now);
    let Some(mut best) = due_after(known) else {
        return known;
    };
    // Invariant: `due_after(lo)` is Some (its value is `best`), `due_after(hi)` is None.
    let (mut lo, mut hi) = (known, now);
    while hi - lo > TimeDelta::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        match due_after(mid) {
            Some(fire) => {
                best = fire;
                lo = mid;
            }
            None => hi = mid,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Clock, ManualClock, parse_cron};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn berlin() -> Tz {
        "Europe/Berlin".parse().unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn new_or_changed_schedule_never_fires() {
        // Even exactly at a fire instant, a job without a stored next fire only learns its next
        // fire: applying a schedule is not a reason to run.
        let cron = parse_cron("0 2 * * *").unwrap();
        let clock = ManualClock::new(utc("2026-03-28T01:00:00Z")); // 02:00 CET, a fire instant
        let p = plan(&cron, berlin(), None, clock.now(), None);
        assert_eq!(p.run, None);
        assert!(p.missed.is_empty());
        assert_eq!(p.missed_total(), 0);
        assert_eq!(p.next_fire, Some(utc("2026-03-29T01:00:00Z")));
    }

    #[test]
    fn nothing_due_keeps_the_stored_next_fire() {
        let cron = parse_cron("0 2 * * *").unwrap();
        let stored = Some(utc("2026-03-29T01:00:00Z"));
        let p = plan(
            &cron,
            berlin(),
            stored,
            utc("2026-03-29T00:59:59Z"),
            Some(HOUR),
        );
        assert_eq!((p.run, p.missed.len()), (None, 0));
        assert_eq!(p.next_fire, stored);
    }

    #[test]
    fn on_time_fire_runs_and_advances_across_the_gap() {
        // The scheduler wakes at the March fire (03:00 CEST, right after the jump).
        let cron = parse_cron("30 2 * * *").unwrap();
        let clock = ManualClock::new(utc("2026-03-28T12:00:00Z"));
        let first = plan(&cron, berlin(), None, clock.now(), Some(HOUR));
        assert_eq!(first.next_fire, Some(utc("2026-03-29T01:00:00Z")));
        clock.set(utc("2026-03-29T01:00:00.250Z"));
        let p = plan(&cron, berlin(), first.next_fire, clock.now(), Some(HOUR));
        assert_eq!(p.run, Some(utc("2026-03-29T01:00:00Z")));
        assert!(p.missed.is_empty());
        assert_eq!(p.next_fire, Some(utc("2026-03-30T00:30:00Z")));
    }

    #[test]
    fn downtime_over_three_fires_runs_the_latest_within_the_deadline() {
        // Daily 02:00 Berlin. Down from before the 03-30 fire until 30 min after the 04-01 fire.
        let cron = parse_cron("0 2 * * *").unwrap();
        let stored = Some(utc("2026-03-30T00:00:00Z"));
        let now = utc("2026-04-01T00:30:00Z");
        let p = plan(&cron, berlin(), stored, now, Some(HOUR));
        assert_eq!(p.run, Some(utc("2026-04-01T00:00:00Z")));
        assert_eq!(
            p.missed,
            [utc("2026-03-30T00:00:00Z"), utc("2026-03-31T00:00:00Z")]
        );
        assert_eq!((p.missed_unrecorded, p.missed_count_exact), (0, true));
        assert_eq!(p.next_fire, Some(utc("2026-04-02T00:00:00Z")));
    }

    #[test]
    fn downtime_over_three_fires_past_the_deadline_runs_none() {
        let cron = parse_cron("0 2 * * *").unwrap();
        let stored = Some(utc("2026-03-30T00:00:00Z"));
        let now = utc("2026-04-01T01:00:01Z"); // 1 h 1 s after the latest fire
        let p = plan(&cron, berlin(), stored, now, Some(HOUR));
        assert_eq!(p.run, None);
        assert_eq!(
            p.missed,
            [
                utc("2026-03-30T00:00:00Z"),
                utc("2026-03-31T00:00:00Z"),
                utc("2026-04-01T00:00:00Z")
            ]
        );
        assert_eq!(p.next_fire, Some(utc("2026-04-02T00:00:00Z")));
        // Exactly at the deadline still runs.
        let p = plan(
            &cron,
            berlin(),
            stored,
            utc("2026-04-01T01:00:00Z"),
            Some(HOUR),
        );
        assert_eq!(p.run, Some(utc("2026-04-01T00:00:00Z")));
    }

    #[test]
    fn no_deadline_always_runs_the_latest() {
        let cron = parse_cron("0 2 * * *").unwrap();
        let stored = Some(utc("2026-03-30T00:00:00Z"));
        let p = plan(&cron, berlin(), stored, utc("2026-04-20T12:00:00Z"), None);
        assert_eq!(p.run, Some(utc("2026-04-20T00:00:00Z")));
        assert_eq!(p.missed.len(), 21);
        assert_eq!(p.missed[0], utc("2026-03-30T00:00:00Z"));
    }

    #[test]
    fn every_minute_down_for_a_month_is_listed_then_counted() {
        // 44,640 due fires: the oldest 1,000 are listed, the rest counted exactly.
        let cron = parse_cron("* * * * *").unwrap();
        let stored = Some(utc("2026-01-01T00:00:00Z"));
        let now = utc("2026-01-31T23:59:30Z");
        let p = plan(&cron, Tz::UTC, stored, now, Some(HOUR));
        assert_eq!(p.run, Some(utc("2026-01-31T23:59:00Z")));
        assert_eq!(p.missed.len(), MAX_RECORDED_MISSED);
        assert_eq!(p.missed[0], utc("2026-01-01T00:00:00Z"));
        assert_eq!(p.missed[999], utc("2026-01-01T16:39:00Z"));
        assert!(p.missed_count_exact);
        assert_eq!(p.missed_total(), 31 * 24 * 60 - 1);
        assert_eq!(p.next_fire, Some(utc("2026-02-01T00:00:00Z")));
    }

    #[test]
    fn every_second_down_for_a_year_stops_counting_but_finds_the_latest() {
        let cron = parse_cron("* * * * * *").unwrap();
        let stored = Some(utc("2025-01-01T00:00:00Z"));
        let now = utc("2026-01-01T00:00:00.500Z");
        let p = plan(&cron, Tz::UTC, stored, now, Some(HOUR));
        assert_eq!(p.run, Some(utc("2026-01-01T00:00:00Z")));
        assert_eq!(p.missed.len(), MAX_RECORDED_MISSED);
        assert!(!p.missed_count_exact);
        assert!(p.missed_total() >= MAX_COUNTED_MISSED - 1);
        assert_eq!(p.next_fire, Some(utc("2026-01-01T00:00:01Z")));
        // Past the deadline the latest is missed too.
        let p = plan(&cron, Tz::UTC, stored, now, Some(Duration::ZERO));
        assert_eq!(p.run, None);
    }

    #[test]
    fn catch_up_through_the_repeated_hour_lists_both_copies_of_a_wildcard_job() {
        let cron = parse_cron("*/30 * * * *").unwrap();
        let stored = Some(utc("2026-10-25T00:00:00Z")); // 02:00 CEST
        let now = utc("2026-10-25T01:45:00Z"); // 02:45 CET
        let p = plan(&cron, berlin(), stored, now, Some(HOUR));
        assert_eq!(p.run, Some(utc("2026-10-25T01:30:00Z")));
        assert_eq!(
            p.missed,
            [
                utc("2026-10-25T00:00:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-25T01:00:00Z")
            ]
        );
        assert_eq!(p.next_fire, Some(utc("2026-10-25T02:00:00Z")));
    }
}
