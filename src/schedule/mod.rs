//! When scheduled jobs fire (SPEC §4.3): cron parsing, DST-correct next fire instants, the
//! catch-up plan after downtime, the concurrency decision and the injectable clock.
//!
//! Everything here is pure and takes plain inputs (a croner [`Cron`], a [`chrono_tz::Tz`],
//! instants, durations), so the daemon can store next fire instants in the database (the source of
//! truth, CRATES.md §3 approach B) and tests can drive time through a [`ManualClock`].
//!
//! - [`parse_cron`]: 5 or 6 fields (seconds optional), Vixie cron day-of-month/day-of-week rules.
//! - [`next_fire`]: the first fire strictly after an instant, with Debian cron's daylight-saving
//!   rules (see [`fire`] for exactly what happens in skipped and repeated hours).
//! - [`plan()`]: given the stored next fire and the current time, which fire (at most one) runs now,
//!   which are recorded as missed, and the new next fire.
//! - [`schedule_key`]: identifies a schedule so a changed one is recomputed (and never fires).
//! - [`ConcurrencyPolicy`]: what to do with a fire while a run of the job is active.
//! - [`Clock`], [`SystemClock`], [`ManualClock`], [`sleep_until_next`]: time, injectable.
//! - [`explain()`]: what daylight saving does to a fire instant (for `restorectl plan`).
//!
//! Not to be confused with a job's validated `schedule:` section (`jobs::Schedule`, in
//! `jobs/schedule_spec.rs`, built with [`parse_cron`]) or with the daemon's scheduler task
//! (`daemon::fires`, which applies [`plan()`] to every job and writes the runs).

pub mod clock;
pub mod explain;
pub mod fire;
pub mod plan;
pub mod policy;

pub use clock::{Clock, MAX_SLEEP, ManualClock, SystemClock, sleep_until_next, time_to_sleep};
pub use explain::{DstNote, explain};
pub use fire::{JobTiming, LONG_CLOCK_CHANGE, next_fire};
pub use plan::{MAX_COUNTED_MISSED, MAX_RECORDED_MISSED, Plan, plan};
pub use policy::{ConcurrencyPolicy, FireAction};

use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Errors of the schedule module. Each names the expression it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("cron expression {expression:?}: {message}")]
    InvalidCron {
        /// The expression as written.
        expression: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Parses a cron expression: 5 fields (`minute hour day-of-month month day-of-week`) or 6 with a
/// leading seconds field, plus croner's `@daily`-style nicknames. A year field is rejected.
///
/// Day of month and day of week follow Vixie cron (and so Debian cron): when both fields are
/// restricted, a day matches if *either* matches; when one of them starts with `*` the day has to
/// match both (for a plain `*` that simply means the other field decides). croner only treats an
/// exact `*` as unrestricted, so a field such as `*/2` next to a restricted weekday is rewritten
/// with croner's `+` (AND) prefix to keep Vixie's meaning: `0 0 */2 * MON` fires on Mondays that
/// are odd days of the month, not on every odd day and every Monday.
///
/// # Errors
///
/// [`ScheduleError::InvalidCron`] naming the expression and croner's reason.
pub fn parse_cron(text: &str) -> Result<Cron, ScheduleError> {
    let invalid = |message: String| ScheduleError::InvalidCron {
        expression: text.to_string(),
        message,
    };
    let mut fields: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if fields.len() == 7 {
        return Err(invalid(
            "7 fields: a year field is not supported; write 5 fields (or 6 with seconds)".into(),
        ));
    }
    if fields.len() == 5 || fields.len() == 6 {
        let dom = fields.len() - 3;
        let dow = fields.len() - 1;
        let starts_wild = |f: &str| f.starts_with('*') || f.starts_with('?');
        // An exact `*` (or `?`) is already unrestricted for croner; only `*/2`-style fields
        // next to a restricted one need the AND prefix. Leaving plain patterns untouched keeps
        // the text croner stores (and prints) as written.
        let plain = |f: &str| f == "*" || f == "?";
        let (d, w) = (&fields[dom], &fields[dow]);
        if !plain(d) && !plain(w) && (starts_wild(d) || starts_wild(w)) && !w.starts_with('+') {
            fields[dow].insert(0, '+');
        }
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(&fields.join(" "))
        .map_err(|e| invalid(e.to_string()))
}

/// A stable identifier of a schedule: the cron text (whitespace collapsed, upper-cased, as croner
/// reads it case-insensitively) and the time zone, with a version prefix.
///
/// The daemon stores it next to the next fire instant. When the key of a job changes (new cron,
/// other time zone), the stored next fire is discarded and [`plan()`] is called with `None`, which
/// only computes the next fire after now: changing a schedule never fires a run by itself. The
/// version is bumped if the meaning of a schedule ever changes (for example the DST rules), so
/// stored next fires are recomputed after such an upgrade.
pub fn schedule_key(cron_text: &str, tz: Tz) -> String {
    let cron: Vec<String> = cron_text
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    format!("v1|{}|{}", cron.join(" "), tz.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn five_and_six_fields_parse_and_seven_is_rejected() {
        assert!(parse_cron("0 2 * * *").is_ok());
        assert!(parse_cron("30 0 2 * * *").is_ok());
        assert!(parse_cron("@daily").is_ok());
        let err = parse_cron("0 0 2 * * * 2026").unwrap_err().to_string();
        assert!(
            err.contains("0 0 2 * * * 2026") && err.contains("year"),
            "{err}"
        );
        let err = parse_cron("0 25 * * *").unwrap_err().to_string();
        assert!(err.contains("\"0 25 * * *\""), "{err}");
        assert!(parse_cron("").is_err());
        assert!(parse_cron("* * *").is_err());
    }

    #[test]
    fn day_of_month_or_day_of_week_like_vixie_cron() {
        // Both restricted: either matches. 2026-11-01 is a Sunday; the 1st OR any Monday.
        let cron = parse_cron("0 0 1 * MON").unwrap();
        let after = utc("2026-10-31T12:00:00Z");
        let fires: Vec<_> = std::iter::successors(next_fire(&cron, Tz::UTC, after), |t| {
            next_fire(&cron, Tz::UTC, *t)
        })
        .take(3)
        .collect();
        assert_eq!(
            fires,
            [
                utc("2026-11-01T00:00:00Z"),
                utc("2026-11-02T00:00:00Z"),
                utc("2026-11-09T00:00:00Z")
            ]
        );
        // A day-of-month field starting with `*` makes Vixie cron require both: odd days that
        // are Mondays. 2026-11-02 is an even Monday, 2026-11-09 an odd one.
        let cron = parse_cron("0 0 */2 * MON").unwrap();
        assert_eq!(cron.pattern.as_str(), "0 0 */2 * +1");
        assert_eq!(
            parse_cron("0 2 * * *").unwrap().pattern.as_str(),
            "0 2 * * *"
        );
        assert_eq!(
            next_fire(&cron, Tz::UTC, after),
            Some(utc("2026-11-09T00:00:00Z"))
        );
    }

    #[test]
    fn schedule_key_changes_with_cron_or_zone_only() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let a = schedule_key("0 2 * * sun", berlin);
        assert_eq!(a, schedule_key("  0  2 * *   SUN ", berlin));
        assert_ne!(a, schedule_key("0 3 * * SUN", berlin));
        assert_ne!(a, schedule_key("0 2 * * SUN", Tz::UTC));
        assert_eq!(a, "v1|0 2 * * SUN|Europe/Berlin");
    }
}
