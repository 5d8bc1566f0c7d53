//! Next fire instants in a job's time zone, with Debian cron's daylight-saving rules.
//!
//! # What Debian cron does
//!
//! Debian's cron (Vixie cron 3.0 with Debian patches, `cron.c` and `entry.c`) sorts every crontab
//! line into one of two classes:
//!
//! - **wildcard jobs**: the minute or the hour field starts with `*` (`* …`, `*/30 …`,
//!   `0 * …`, `@hourly`);
//! - **fixed-time jobs**: everything else (`0 2 …`, `30 2 …`, `0,30 2 …`, `0 1-3 …`, `@daily`).
//!
//! When the clock jumps forward by less than 3 hours (spring forward), cron runs the wildcard jobs
//! for the new wall time once, then every fixed-time job whose time fell into the skipped interval,
//! right after the jump (a job queued twice in one pass runs once). Wildcard jobs do not run for
//! skipped minutes. When the clock goes back by less than 3 hours (fall back), wildcard jobs keep
//! following the clock, so they run in both copies of the repeated hour, while fixed-time jobs
//! are not run again. Jumps of 3 hours or more are treated as a clock reset: only jobs that match
//! the new wall time run, so in a forward jump nothing that was skipped runs, and after a jump back
//! every job runs again as the clock passes. This was checked against the main loop of Vixie cron
//! 4.1's `cron.c`, the code Debian's DST patch carries: `find_jobs(…, doWild, doNonWild)` with its
//! `MIN_STAR|HR_STAR` test, and the `timeDiff` cases `> 5`, `> 3*MINUTE_COUNT` and
//! `> -(3*MINUTE_COUNT)` minutes.
//!
//! One case is left out on purpose: cron also runs *wildcard* jobs for the skipped minutes when the
//! clock jumps forward by at most 4 minutes (its "woke up late" case). No daylight-saving rule is
//! that short; only some historical local-mean-time corrections are, and those are treated like
//! any other jump here.
//!
//! # What we do
//!
//! The same, instant by instant, for every zone transition of the job's time zone:
//!
//! | wall time of a fire | fixed-time job | wildcard job |
//! |---|---|---|
//! | normal | runs | runs |
//! | skipped (gap < 3 h) | runs once at the transition instant (first wall time after the jump; all skipped times of the job collapse into that one fire) | does not run |
//! | repeated (overlap < 3 h) | runs once, at the first occurrence | runs in both copies |
//! | skipped (gap ≥ 3 h) | does not run | does not run |
//! | repeated (overlap ≥ 3 h) | runs in both copies | runs in both copies |
//!
//! For example in Europe/Berlin, `30 2 * * *` fires on 2026-03-29 at 03:00 CEST (01:00 UTC) and on
//! 2026-10-25 once at 02:30 CEST (00:30 UTC); `*/30 * * * *` fires every 30 minutes of real time
//! through both transitions (02:00 and 02:30 are skipped in March and happen twice in October).
//!
//! Seconds are our extension (6-field expressions); a seconds field that starts with `*` makes a
//! job a wildcard job too, like the minute and hour fields. Day-of-month/day-of-week matching
//! follows Vixie cron as well (see [`super::parse_cron`]).
//!
//! # How
//!
//! croner finds matching *wall-clock* times on a [`NaiveDateTime`], which has no daylight saving;
//! this module maps each match to instants with the rules above. croner's own zoned search is not
//! used because its idea of a "fixed-time job" differs from Debian's: it needs a single value in
//! the seconds, minute and hour fields, so `0,30 2 * * *` or `0 1-3 * * *` would be skipped on the
//! spring-forward day and run twice on the fall-back day (a test below pins this difference).

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Clock changes at least this long are treated as a clock reset, not as daylight saving
/// (Debian cron's threshold).
pub const LONG_CLOCK_CHANGE: TimeDelta = TimeDelta::hours(3);

/// Upper bound of the steps of one search. Every step either returns or moves past a match that
/// cannot be the answer (an earlier copy of a repeated hour, or a skipped range), so real searches
/// take a handful; the bound only guarantees termination.
const MAX_STEPS: usize = 100_000;

/// Widest span around a wall time that can contain the zone transition it sits in: UTC offsets in
/// the tz database stay within about ±16 h (local mean times included).
const TRANSITION_SEARCH: TimeDelta = TimeDelta::hours(17);

/// Debian cron's class of a cron line, which decides its daylight-saving behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobTiming {
    /// Seconds (when given), minute and hour fields are all restricted: fires at fixed times.
    Fixed,
    /// The seconds, minute or hour field starts with `*`: fires as the wall clock passes.
    Wildcard,
}

impl JobTiming {
    /// Classifies a parsed expression by its fields as croner stored them (nicknames expanded).
    pub fn of(cron: &Cron) -> Self {
        let fields: Vec<&str> = cron.pattern.as_str().split_whitespace().collect();
        // 5 fields: minute hour …; 6 or more: second minute hour …
        let timed = if fields.len() >= 6 {
            &fields[..3]
        } else {
            &fields[..fields.len().min(2)]
        };
        if timed.iter().any(|f| f.starts_with('*')) {
            JobTiming::Wildcard
        } else {
            JobTiming::Fixed
        }
    }

    /// Whether this job runs in both copies of a repeated range of `len`.
    fn runs_twice_in(self, len: TimeDelta) -> bool {
        self == JobTiming::Wildcard || len >= LONG_CLOCK_CHANGE
    }
}

/// The first fire instant of `cron` in zone `tz` strictly after `after`, or `None` if the
/// expression never fires again (for example `0 0 30 2 *`). See the module doc for the DST rules.
pub fn next_fire(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let timing = JobTiming::of(cron);
    let wall = floor_to_second(after.with_timezone(&tz).naive_local());
    let fold = Transition::repeating(tz, wall);
    let in_later_copy = fold.is_some_and(|f| after >= f.at);

    // Fires of matches at or after `wall`, taking the first copy of repeated times. In the later
    // copy of a repeated range, every first copy up to its end is already in the past.
    let start = match fold {
        Some(f) if in_later_copy => f.wall_end,
        _ => wall,
    };
    let mut best = first_copy_fire(cron, tz, timing, start, after);

    // Second copies of the repeated range `after` is in: they come after every first copy of it,
    // so they only matter here (ranges still ahead are reached through their first copy).
    if let Some(f) = fold.filter(|f| timing.runs_twice_in(f.len())) {
        let from = if in_later_copy { wall } else { f.wall_start };
        if let Some(second) = second_copy_fire(cron, &f, from, after) {
            best = Some(best.map_or(second, |b| b.min(second)));
        }
    }
    best
}

/// First copies only: walks the wall clock from `start` (inclusive) and returns the first
/// instant after `after`.
fn first_copy_fire(
    cron: &Cron,
    tz: Tz,
    timing: JobTiming,
    start: NaiveDateTime,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut cursor = start;
    let mut inclusive = true;
    for _ in 0..MAX_STEPS {
        let wall = cron.find_next_occurrence(&cursor, inclusive).ok()?;
        cursor = wall;
        inclusive = false;
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => {
                let t = t.with_timezone(&Utc);
                if t > after {
                    return Some(t);
                }
            }
            LocalResult::Ambiguous(a, b) => {
                let first = a.min(b).with_timezone(&Utc);
                if first > after {
                    return Some(first);
                }
            }
            LocalResult::None => {
                let Some(gap) = Transition::skipping(tz, wall) else {
                    continue;
                };
                if timing == JobTiming::Fixed && gap.len() < LONG_CLOCK_CHANGE && gap.at > after {
                    return Some(gap.at);
                }
                // Every other match in the skipped range maps to the same instant or to none:
                // continue at the first wall time after the jump.
                cursor = gap.wall_end;
                inclusive = true;
            }
        }
    }
    None
}

/// Second copies of the repeated range `fold`: the first match in `[from, fold end)` whose later
/// instant is after `after`.
fn second_copy_fire(
    cron: &Cron,
    fold: &Transition,
    from: NaiveDateTime,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut cursor = from;
    let mut inclusive = true;
    for _ in 0..MAX_STEPS {
        let wall = cron.find_next_occurrence(&cursor, inclusive).ok()?;
        if wall >= fold.wall_end {
            return None;
        }
        let t = (wall - fold.offset_after).and_utc();
        if t > after {
            return Some(t);
        }
        cursor = wall;
        inclusive = false;
    }
    None
}

/// One change of a zone's UTC offset.
#[derive(Debug, Clone, Copy)]
struct Transition {
    /// The first instant with the new offset.
    at: DateTime<Utc>,
    offset_before: TimeDelta,
    offset_after: TimeDelta,
    /// Wall-clock range affected: skipped (`[at + before, at + after)`) when the clock jumps
    /// forward, repeated (`[at + after, at + before)`) when it goes back.
    wall_start: NaiveDateTime,
    wall_end: NaiveDateTime,
}

impl Transition {
    /// How far the clock moved.
    fn len(&self) -> TimeDelta {
        (self.offset_after - self.offset_before).abs()
    }

    /// The forward jump whose skipped range contains `wall` (a time `tz` does not have).
    fn skipping(tz: Tz, wall: NaiveDateTime) -> Option<Transition> {
        let probe = wall.and_utc();
        let t = Self::find(tz, probe - TRANSITION_SEARCH, probe + TRANSITION_SEARCH)?;
        (t.offset_after > t.offset_before && t.wall_start <= wall && wall < t.wall_end).then_some(t)
    }

    /// The backward change whose repeated range contains `wall`, if `wall` is repeated.
    fn repeating(tz: Tz, wall: NaiveDateTime) -> Option<Transition> {
        let LocalResult::Ambiguous(a, b) = tz.from_local_datetime(&wall) else {
            return None;
        };
        let (first, second) = (a.min(b).with_timezone(&Utc), a.max(b).with_timezone(&Utc));
        let t = Self::find(tz, first, second)?;
        (t.offset_after < t.offset_before && t.wall_start <= wall && wall < t.wall_end).then_some(t)
    }

    /// Bisects `[lo, hi]` (whole seconds) for the instant the offset changes. Assumes one change
    /// in the span, which holds for the short spans used here.
    fn find(tz: Tz, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Option<Transition> {
        let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0);
        let (mut lo, mut hi) = (lo.timestamp(), hi.timestamp());
        let before = offset_at(tz, at(lo)?);
        if offset_at(tz, at(hi)?) == before {
            return None;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if offset_at(tz, at(mid)?) == before {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let hi = at(hi)?;
        let offset_before = seconds(before);
        let offset_after = seconds(offset_at(tz, hi));
        let shifted = |offset: TimeDelta| hi.naive_utc() + offset;
        let (wall_start, wall_end) = if offset_after > offset_before {
            (shifted(offset_before), shifted(offset_after))
        } else {
            (shifted(offset_after), shifted(offset_before))
        };
        Some(Transition {
            at: hi,
            offset_before,
            offset_after,
            wall_start,
            wall_end,
        })
    }
}

fn offset_at(tz: Tz, t: DateTime<Utc>) -> FixedOffset {
    tz.offset_from_utc_datetime(&t.naive_utc()).fix()
}

fn seconds(offset: FixedOffset) -> TimeDelta {
    TimeDelta::seconds(i64::from(offset.local_minus_utc()))
}

/// Fire times are whole seconds; a sub-second `after` searches from its whole second (matches
/// not after `after` are then filtered by instant).
fn floor_to_second(t: NaiveDateTime) -> NaiveDateTime {
    t - TimeDelta::nanoseconds(i64::from(chrono::Timelike::nanosecond(&t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::parse_cron;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn zone(name: &str) -> Tz {
        name.parse().unwrap()
    }

    /// The fires of `expr` in `tz` in `(from, to]`.
    fn fires(expr: &str, tz: &str, from: &str, to: &str) -> Vec<String> {
        let cron = parse_cron(expr).unwrap();
        let (tz, to) = (zone(tz), utc(to));
        let mut out = Vec::new();
        let mut t = utc(from);
        while let Some(next) = next_fire(&cron, tz, t) {
            if next > to {
                break;
            }
            assert!(next > t, "{expr}: {next} not after {t}");
            out.push(next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            t = next;
        }
        out
    }

    #[test]
    fn classes_follow_debian() {
        let timing = |e: &str| JobTiming::of(&parse_cron(e).unwrap());
        assert_eq!(timing("0 2 * * *"), JobTiming::Fixed);
        assert_eq!(timing("30 2 * * *"), JobTiming::Fixed);
        assert_eq!(timing("0,30 2 * * *"), JobTiming::Fixed);
        assert_eq!(timing("0 1-3 * * *"), JobTiming::Fixed);
        assert_eq!(timing("@daily"), JobTiming::Fixed);
        assert_eq!(timing("15 0 2 * * *"), JobTiming::Fixed);
        assert_eq!(timing("*/30 * * * *"), JobTiming::Wildcard);
        assert_eq!(timing("0 * * * *"), JobTiming::Wildcard);
        assert_eq!(timing("*/30 2 * * *"), JobTiming::Wildcard);
        assert_eq!(timing("@hourly"), JobTiming::Wildcard);
        assert_eq!(timing("*/10 0 2 * * *"), JobTiming::Wildcard);
    }

    #[test]
    fn berlin_0200_across_2026_transitions() {
        // Spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC): 02:00 does not exist and
        // runs right after the jump. Fall back 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC):
        // 02:00 happens twice and runs once, at the first (CEST) occurrence.
        assert_eq!(
            fires(
                "0 2 * * *",
                "Europe/Berlin",
                "2026-03-27T12:00:00Z",
                "2026-03-31T12:00:00Z"
            ),
            [
                "2026-03-28T01:00:00Z", // 02:00 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, right after the jump
                "2026-03-30T00:00:00Z", // 02:00 CEST
                "2026-03-31T00:00:00Z",
            ]
        );
        assert_eq!(
            fires(
                "0 2 * * *",
                "Europe/Berlin",
                "2026-10-23T12:00:00Z",
                "2026-10-27T12:00:00Z"
            ),
            [
                "2026-10-24T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST, first copy only
                "2026-10-26T01:00:00Z", // 02:00 CET
                "2026-10-27T01:00:00Z",
            ]
        );
    }

    #[test]
    fn berlin_0230_across_2026_transitions() {
        assert_eq!(
            fires(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-27T12:00:00Z",
                "2026-03-30T12:00:00Z"
            ),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // skipped -> 03:00 CEST
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        assert_eq!(
            fires(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-23T12:00:00Z",
                "2026-10-26T12:00:00Z"
            ),
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z", // 02:30 CEST; not again at 02:30 CET (01:30 UTC)
                "2026-10-26T01:30:00Z",
            ]
        );
    }

    #[test]
    fn asking_from_inside_the_repeated_hour_does_not_refire_fixed_jobs() {
        let cron = parse_cron("30 2 * * *").unwrap();
        let berlin = zone("Europe/Berlin");
        // 02:15 CET, the second copy: 02:30 CEST already happened.
        assert_eq!(
            next_fire(&cron, berlin, utc("2026-10-25T01:15:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        // 02:15 CEST, the first copy: 02:30 CEST is still ahead.
        assert_eq!(
            next_fire(&cron, berlin, utc("2026-10-25T00:15:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        // Just before the jump in March, the skipped 02:30 fires at the jump.
        assert_eq!(
            next_fire(&cron, berlin, utc("2026-03-29T00:59:59.5Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn every_30_minutes_runs_in_both_copies_of_the_repeated_hour() {
        // Wildcard job: follows the clock, which shows 02:00 and 02:30 twice in October and never
        // in March. In UTC this is simply every 30 minutes through both transitions.
        assert_eq!(
            fires(
                "*/30 * * * *",
                "Europe/Berlin",
                "2026-10-24T23:00:00Z",
                "2026-10-25T02:00:00Z"
            ),
            [
                "2026-10-24T23:30:00Z", // 01:30 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:30:00Z", // 02:30 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
            ]
        );
        assert_eq!(
            fires(
                "*/30 * * * *",
                "Europe/Berlin",
                "2026-03-28T23:45:00Z",
                "2026-03-29T01:30:00Z"
            ),
            [
                "2026-03-29T00:00:00Z", // 01:00 CET
                "2026-03-29T00:30:00Z", // 01:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST (02:00 and 02:30 never shown)
                "2026-03-29T01:30:00Z", // 03:30 CEST
            ]
        );
    }

    #[test]
    fn hourly_runs_in_both_copies_of_the_repeated_hour() {
        assert_eq!(
            fires(
                "0 * * * *",
                "Europe/Berlin",
                "2026-10-24T22:30:00Z",
                "2026-10-25T02:00:00Z"
            ),
            [
                "2026-10-24T23:00:00Z", // 01:00 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
            ]
        );
        assert_eq!(
            fires(
                "0 * * * *",
                "Europe/Berlin",
                "2026-03-28T23:30:00Z",
                "2026-03-29T02:00:00Z"
            ),
            [
                "2026-03-29T00:00:00Z", // 01:00 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST
                "2026-03-29T02:00:00Z", // 04:00 CEST
            ]
        );
    }

    #[test]
    fn multi_value_fixed_hours_run_once_where_croner_alone_would_not() {
        // Debian: `0,30 2 * * *` is a fixed-time job. Both skipped times run together right after
        // the jump, and in the repeated hour each runs once.
        assert_eq!(
            fires(
                "0,30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                "2026-03-29T12:00:00Z"
            ),
            ["2026-03-29T01:00:00Z"]
        );
        assert_eq!(
            fires(
                "0,30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T12:00:00Z",
                "2026-10-25T12:00:00Z"
            ),
            ["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z"]
        );
        // croner's own zoned search calls this an interval job: it skips both in March and runs
        // four times in October. This is why we map wall times to instants ourselves.
        let cron = parse_cron("0,30 2 * * *").unwrap();
        let berlin = zone("Europe/Berlin");
        let croner_next = |from: &str| {
            cron.find_next_occurrence(&utc(from).with_timezone(&berlin), false)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(
            croner_next("2026-03-28T12:00:00Z"),
            utc("2026-03-30T00:00:00Z")
        );
        assert_eq!(
            croner_next("2026-10-25T00:30:00Z"),
            utc("2026-10-25T01:00:00Z")
        );
    }

    #[test]
    fn wildcard_minutes_in_a_fixed_hour_skip_the_gap_and_repeat_in_the_overlap() {
        // `*/30 2 * * *` starts with `*`: a wildcard job for Debian.
        assert_eq!(
            fires(
                "*/30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                "2026-03-29T12:00:00Z"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            fires(
                "*/30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T12:00:00Z",
                "2026-10-25T12:00:00Z"
            ),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
            ]
        );
    }

    #[test]
    fn six_fields_with_seconds() {
        assert_eq!(
            fires(
                "15 0 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                "2026-03-30T12:00:00Z"
            ),
            [
                "2026-03-29T01:00:00Z", // 02:00:15 skipped -> right after the jump
                "2026-03-30T00:00:15Z",
            ]
        );
        assert_eq!(
            fires(
                "*/20 * * * * *",
                "UTC",
                "2026-05-01T00:00:05Z",
                "2026-05-01T00:01:00Z"
            ),
            [
                "2026-05-01T00:00:20Z",
                "2026-05-01T00:00:40Z",
                "2026-05-01T00:01:00Z"
            ]
        );
    }

    #[test]
    fn new_york_2026() {
        // DST starts 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); ends 2026-11-01 02:00 EDT ->
        // 01:00 EST (06:00 UTC).
        assert_eq!(
            fires(
                "30 2 * * *",
                "America/New_York",
                "2026-03-07T00:00:00Z",
                "2026-03-09T12:00:00Z"
            ),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
        assert_eq!(
            fires(
                "30 1 * * *",
                "America/New_York",
                "2026-10-31T12:00:00Z",
                "2026-11-02T12:00:00Z"
            ),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    #[test]
    fn lord_howe_half_hour_shift_2026() {
        // Australia/Lord_Howe: +10:30 standard, +11 summer. Summer time ends 2026-04-05 02:00
        // -> 01:30 (15:00 UTC on 04-04); starts 2026-10-04 02:00 -> 02:30 (15:30 UTC on 10-03).
        assert_eq!(
            fires(
                "45 1 * * *",
                "Australia/Lord_Howe",
                "2026-04-03T12:00:00Z",
                "2026-04-05T18:00:00Z"
            ),
            [
                "2026-04-03T14:45:00Z",
                "2026-04-04T14:45:00Z", // 01:45 +11, once
                "2026-04-05T15:15:00Z", // 01:45 +10:30
            ]
        );
        assert_eq!(
            fires(
                "*/15 * * * *",
                "Australia/Lord_Howe",
                "2026-04-04T14:20:00Z",
                "2026-04-04T15:30:00Z"
            ),
            [
                "2026-04-04T14:30:00Z", // 01:30 +11
                "2026-04-04T14:45:00Z", // 01:45 +11
                "2026-04-04T15:00:00Z", // 01:30 +10:30
                "2026-04-04T15:15:00Z", // 01:45 +10:30
                "2026-04-04T15:30:00Z", // 02:00 +10:30
            ]
        );
        assert_eq!(
            fires(
                "15 2 * * *",
                "Australia/Lord_Howe",
                "2026-10-02T12:00:00Z",
                "2026-10-04T18:00:00Z"
            ),
            [
                "2026-10-02T15:45:00Z", // 02:15 +10:30
                "2026-10-03T15:30:00Z", // skipped -> 02:30 +11
                "2026-10-04T15:15:00Z", // 02:15 +11
            ]
        );
    }

    #[test]
    fn a_skipped_day_is_a_clock_reset_not_daylight_saving() {
        // Pacific/Apia skipped 2011-12-30 entirely (-10 -> +14). Debian treats jumps of 3 hours
        // or more as a clock reset: the skipped day's fixed times do not run.
        assert_eq!(
            fires(
                "0 12 * * *",
                "Pacific/Apia",
                "2011-12-28T12:00:00Z",
                "2011-12-31T12:00:00Z"
            ),
            [
                "2011-12-28T22:00:00Z",
                "2011-12-29T22:00:00Z",
                "2011-12-30T22:00:00Z"
            ]
        );
    }

    #[test]
    fn utc_and_never_firing_expressions() {
        assert_eq!(
            fires(
                "0 2 * * *",
                "UTC",
                "2026-03-28T12:00:00Z",
                "2026-03-30T12:00:00Z"
            ),
            ["2026-03-29T02:00:00Z", "2026-03-30T02:00:00Z"]
        );
        let never = parse_cron("0 0 30 2 *").unwrap();
        assert_eq!(
            next_fire(&never, Tz::UTC, utc("2026-01-01T00:00:00Z")),
            None
        );
    }

    /// An independent, brute-force statement of the rules: look at every minute of real time and
    /// decide from the wall clock alone whether the job fires then.
    fn oracle(cron: &Cron, tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let timing = JobTiming::of(cron);
        let minute = TimeDelta::minutes(1);
        let mut out = Vec::new();
        let mut u = from + minute;
        while u <= to {
            let wall = u.with_timezone(&tz).naive_local();
            let matches = cron.is_time_matching(&wall).unwrap();
            let jump = seconds(offset_at(tz, u)) - seconds(offset_at(tz, u - minute));
            let fires = if jump < TimeDelta::zero()
                || matches!(tz.from_local_datetime(&wall), LocalResult::Ambiguous(a, b) if u == a.max(b))
            {
                // In the later copy of a repeated range (its fold length is the size of the
                // backward jump that started it; all our zones repeat less than 3 h).
                matches && timing == JobTiming::Wildcard
            } else if jump > TimeDelta::zero() {
                // First instant after a forward jump: fixed times of the skipped range fire here.
                let skipped = (1..=jump.num_minutes()).any(|k| {
                    cron.is_time_matching(&(wall - TimeDelta::minutes(k)))
                        .unwrap()
                });
                matches || (timing == JobTiming::Fixed && jump < LONG_CLOCK_CHANGE && skipped)
            } else {
                matches
            };
            if fires {
                out.push(u);
            }
            u += minute;
        }
        out
    }

    #[test]
    fn next_fire_agrees_with_a_minute_by_minute_oracle_around_2026_transitions() {
        let zones = [
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "America/Santiago",
            "Europe/London",
        ];
        let exprs = [
            "0 2 * * *",
            "30 2 * * *",
            "*/30 * * * *",
            "0 * * * *",
            "0,30 2 * * *",
            "*/30 2 * * *",
            "15 1,2,3 * * *",
            "45 1 * * *",
            "* 2 * * *",
            "59 23 * * *",
            "0 0 * * *",
        ];
        for name in zones {
            let tz = zone(name);
            // Every offset change of 2026, found hour by hour.
            let mut t = utc("2026-01-01T00:00:00Z");
            let mut transitions = Vec::new();
            while t < utc("2027-01-01T00:00:00Z") {
                if offset_at(tz, t) != offset_at(tz, t + TimeDelta::hours(1)) {
                    transitions.push(t);
                }
                t += TimeDelta::hours(1);
            }
            assert_eq!(transitions.len(), 2, "{name}: two DST changes in 2026");
            for around in transitions {
                let (from, to) = (around - TimeDelta::hours(30), around + TimeDelta::hours(30));
                for expr in exprs {
                    let cron = parse_cron(expr).unwrap();
                    let mut ours = Vec::new();
                    let mut t = from;
                    while let Some(next) = next_fire(&cron, tz, t).filter(|n| *n <= to) {
                        ours.push(next);
                        t = next;
                    }
                    assert_eq!(
                        ours,
                        oracle(&cron, tz, from, to),
                        "{expr} in {name} around {around}"
                    );
                }
            }
        }
    }
}
