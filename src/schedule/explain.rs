//! Explains a fire instant in its zone's wall-clock time, for `restorectl plan`: whether
//! daylight saving moved it (the cron's wall time fell into a skipped hour, so it runs right
//! after the jump) or it falls in a repeated hour (which copy it is, and whether the job runs in
//! one or both copies). The rules themselves are in [`super::fire`]; this only compares the
//! cron's nominal wall time with the wall time the instant actually has.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::Serialize;

use super::fire::JobTiming;

/// What daylight saving does to one fire instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum DstNote {
    /// The cron's wall time does not exist that day (spring forward): the fire runs at the first
    /// wall time after the jump instead.
    SkippedHour {
        /// The wall time the cron asks for (`2026-03-29T02:30:00`).
        nominal: NaiveDateTime,
        /// The skipped wall-clock range `[from, to)`.
        from: NaiveDateTime,
        to: NaiveDateTime,
    },
    /// The wall time happens twice that day (fall back).
    RepeatedHour {
        /// True for the first copy (the earlier UTC offset still in force).
        first_copy: bool,
        /// True when the job runs in both copies (wildcard minute/hour, Debian cron); false
        /// when it runs only in the first.
        runs_twice: bool,
    },
}

impl DstNote {
    /// One line for humans, e.g. `02:30 does not exist on 2026-03-29 (clocks jump from 02:00 to
    /// 03:00): runs right after the jump`.
    pub fn describe(&self, fire: DateTime<Utc>, tz: Tz) -> String {
        let local = fire.with_timezone(&tz);
        match self {
            DstNote::SkippedHour { nominal, from, to } => format!(
                "{} does not exist on {} (clocks jump from {} to {}): runs at {} instead",
                nominal.format("%H:%M"),
                nominal.format("%Y-%m-%d"),
                from.format("%H:%M"),
                to.format("%H:%M"),
                local.format("%H:%M %Z"),
            ),
            DstNote::RepeatedHour {
                first_copy,
                runs_twice,
            } => {
                let wall = local.format("%H:%M");
                let which = if *first_copy { "first" } else { "second" };
                let rule = if *runs_twice {
                    "the job runs in both copies"
                } else {
                    "the job runs once, in the first copy"
                };
                format!(
                    "{wall} happens twice on {} (clocks go back): this is the {which} {wall} ({}); {rule}",
                    local.format("%Y-%m-%d"),
                    local.format("%Z, %:z"),
                )
            }
        }
    }
}

/// Explains `fire` (an instant [`super::next_fire`] returned for `cron` in `tz`); `None` when
/// daylight saving plays no part.
pub fn explain(cron: &Cron, tz: Tz, fire: DateTime<Utc>) -> Option<DstNote> {
    let wall = fire.with_timezone(&tz).naive_local();
    if !cron.is_time_matching(&wall).unwrap_or(true) {
        // A fire whose wall time does not match the cron is a skipped-hour fire moved to the
        // transition instant. The wall time one second before it is the end of the old offset;
        // the skipped range is between the two.
        let from = (fire - TimeDelta::seconds(1))
            .with_timezone(&tz)
            .naive_local()
            + TimeDelta::seconds(1);
        let nominal = cron
            .find_next_occurrence(&from, true)
            .ok()
            .filter(|n| *n < wall)?;
        return Some(DstNote::SkippedHour {
            nominal,
            from,
            to: wall,
        });
    }
    match tz.from_local_datetime(&wall) {
        LocalResult::Ambiguous(earlier, later) => {
            let offset = fire.with_timezone(&tz).offset().fix();
            let first_copy = offset == earlier.offset().fix();
            let overlap =
                earlier.offset().fix().local_minus_utc() - later.offset().fix().local_minus_utc();
            let runs_twice = JobTiming::of(cron) == JobTiming::Wildcard
                || TimeDelta::seconds(i64::from(overlap.abs())) >= super::LONG_CLOCK_CHANGE;
            Some(DstNote::RepeatedHour {
                first_copy,
                runs_twice,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{next_fire, parse_cron};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn berlin() -> Tz {
        "Europe/Berlin".parse().unwrap()
    }

    #[test]
    fn a_fire_moved_by_the_spring_gap_names_its_nominal_time() {
        let cron = parse_cron("30 2 * * *").unwrap();
        let fire = next_fire(&cron, berlin(), utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(fire, utc("2026-03-29T01:00:00Z"));
        let note = explain(&cron, berlin(), fire).unwrap();
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(
            note,
            DstNote::SkippedHour {
                nominal: at("2026-03-29 02:30"),
                from: at("2026-03-29 02:00"),
                to: at("2026-03-29 03:00"),
            }
        );
        assert_eq!(
            note.describe(fire, berlin()),
            "02:30 does not exist on 2026-03-29 (clocks jump from 02:00 to 03:00): runs at 03:00 CEST instead"
        );
        // The day after is normal.
        let next = next_fire(&cron, berlin(), fire).unwrap();
        assert_eq!(explain(&cron, berlin(), next), None);
    }

    #[test]
    fn fires_in_the_autumn_overlap_say_which_copy() {
        let fixed = parse_cron("30 2 * * *").unwrap();
        let fire = next_fire(&fixed, berlin(), utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(fire, utc("2026-10-25T00:30:00Z"));
        assert_eq!(
            explain(&fixed, berlin(), fire),
            Some(DstNote::RepeatedHour {
                first_copy: true,
                runs_twice: false
            })
        );
        assert!(
            explain(&fixed, berlin(), fire)
                .unwrap()
                .describe(fire, berlin())
                .contains("this is the first 02:30 (CEST, +02:00); the job runs once")
        );

        let wild = parse_cron("*/30 * * * *").unwrap();
        let second = utc("2026-10-25T01:30:00Z");
        assert_eq!(
            next_fire(&wild, berlin(), utc("2026-10-25T01:00:00Z")),
            Some(second)
        );
        assert_eq!(
            explain(&wild, berlin(), second),
            Some(DstNote::RepeatedHour {
                first_copy: false,
                runs_twice: true
            })
        );
    }

    #[test]
    fn ordinary_fires_and_utc_have_no_note() {
        let cron = parse_cron("0 2 * * *").unwrap();
        let fire = next_fire(&cron, berlin(), utc("2026-06-01T00:00:00Z")).unwrap();
        assert_eq!(explain(&cron, berlin(), fire), None);
        let fire = next_fire(&cron, Tz::UTC, utc("2026-03-29T00:00:00Z")).unwrap();
        assert_eq!(explain(&cron, Tz::UTC, fire), None);
    }
}
