//! A job file's `schedule:` section, validated (SPEC §4.3): the cron expression parsed by
//! croner, the job's time zone, `startingDeadline` and `concurrencyPolicy`, as a [`Schedule`].
//!
//! Three places carry the word "schedule"; this is the one about what a job file says. When a
//! schedule fires is [`crate::schedule`] (pure time arithmetic); the daemon task that turns due
//! fires into runs is `daemon::fires`.
//!
//! Parsing and fire times are delegated to [`crate::schedule`], so validation, `plan` and the
//! daemon's scheduler agree on every instant: computed in the job's own time zone for every
//! occurrence, with Debian cron's DST rules (a fixed fire time inside the skipped spring hour
//! runs right after the jump, a fixed time in the repeated autumn hour runs once).

use std::fmt;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::raw::ConcurrencyPolicy;

/// A checked schedule. Only the validator builds one.
#[derive(Clone)]
pub struct Schedule {
    /// Shared by every schedule with the same expression ([`parse_cron`]).
    cron: Arc<Cron>,
    text: String,
    timezone: Tz,
    starting_deadline: Option<Duration>,
    concurrency_policy: ConcurrencyPolicy,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("cron", &self.text)
            .field("timezone", &self.timezone.name())
            .field("starting_deadline", &self.starting_deadline)
            .field("concurrency_policy", &self.concurrency_policy)
            .finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
            && self.timezone == other.timezone
            && self.starting_deadline == other.starting_deadline
            && self.concurrency_policy == other.concurrency_policy
    }
}

/// Parsed expressions by text, shared by the schedules that use them, and the table size at
/// which the entries no schedule holds any more are dropped.
///
/// croner keeps a table of every year (≈ 5 KiB) in each parsed `Cron`, even with the year field
/// disallowed: 10,000 jobs held ≈ 50 MiB of identical tables, a third of the daemon's memory
/// (heaptrack, bench/daemon.sh). Jobs mostly share a few expressions; parsing each distinct
/// text once keeps one table per expression.
struct Parsed {
    by_text: HashMap<String, Weak<Cron>>,
    sweep_at: usize,
}

static PARSED: LazyLock<Mutex<Parsed>> = LazyLock::new(|| {
    Mutex::new(Parsed {
        by_text: HashMap::new(),
        sweep_at: 1024,
    })
});

/// Parses a cron expression with 5 fields, or 6 with seconds first (no year field), with the
/// scheduler's rules ([`crate::schedule::parse_cron`]). An expression already held by another
/// schedule is not parsed again: both share it.
pub fn parse_cron(text: &str) -> Result<Arc<Cron>, String> {
    // The lock is held while parsing (microseconds, never across an await): two validations of
    // the same new text then parse it once.
    let mut parsed = PARSED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cron) = parsed.by_text.get(text).and_then(Weak::upgrade) {
        return Ok(cron);
    }
    let cron = Arc::new(crate::schedule::parse_cron(text).map_err(|e| e.to_string())?);
    if parsed.by_text.len() >= parsed.sweep_at {
        parsed.by_text.retain(|_, cron| cron.strong_count() > 0);
        parsed.sweep_at = (2 * parsed.by_text.len()).max(1024);
    }
    parsed
        .by_text
        .insert(text.to_string(), Arc::downgrade(&cron));
    Ok(cron)
}

impl Schedule {
    /// Builds a schedule; the caller has already parsed `cron` from `text`.
    pub(crate) fn new(
        cron: Arc<Cron>,
        text: &str,
        timezone: Tz,
        starting_deadline: Option<Duration>,
        concurrency_policy: ConcurrencyPolicy,
    ) -> Schedule {
        Schedule {
            cron,
            text: text.trim().to_string(),
            timezone,
            starting_deadline,
            concurrency_policy,
        }
    }

    /// The first fire time strictly after `after`, or `None` if the expression never fires
    /// again ([`crate::schedule::next_fire`]: Debian cron's DST rules).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        crate::schedule::next_fire(&self.cron, self.timezone, after)
    }

    /// The parsed expression, for the scheduler's catch-up plan ([`crate::schedule::plan()`]).
    pub fn parsed(&self) -> &Cron {
        &self.cron
    }

    /// The cron expression as written (trimmed).
    pub fn cron(&self) -> &str {
        &self.text
    }

    /// The time zone fire times are computed in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// A missed fire older than this is recorded as missed, not run. `None`: no limit.
    pub fn starting_deadline(&self) -> Option<Duration> {
        self.starting_deadline
    }

    pub fn concurrency_policy(&self) -> ConcurrencyPolicy {
        self.concurrency_policy
    }

    /// What the next fire time was computed from (`"0 2 * * SUN Europe/Berlin"`): when it
    /// changes, the stored next fire time must be recomputed.
    pub fn key(&self) -> String {
        crate::schedule::schedule_key(&self.text, self.timezone)
    }

    /// A short human form for summaries: `weekly 0 2 * * SUN Europe/Berlin`.
    pub fn summary(&self) -> String {
        format!("{} {} {}", self.cadence(), self.text, self.timezone.name())
    }

    /// `hourly`, `daily`, `weekly`, `monthly`, `yearly` for the common fixed-time shapes,
    /// `cron` for everything else.
    pub fn cadence(&self) -> &'static str {
        cadence(&self.text)
    }
}

fn cadence(text: &str) -> &'static str {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "@hourly" => return "hourly",
        "@daily" | "@midnight" => return "daily",
        "@weekly" => return "weekly",
        "@monthly" => return "monthly",
        "@yearly" | "@annually" => return "yearly",
        _ => {}
    }
    let mut fields: Vec<&str> = t.split_whitespace().collect();
    if fields.len() == 6 {
        if !is_number(fields[0]) {
            return "cron";
        }
        fields.remove(0);
    }
    let [m, h, dom, mon, dow] = fields[..] else {
        return "cron";
    };
    let single = |s: &str| s != "*" && !s.contains([',', '-', '/', '*', '#', 'l', 'w', '?']);
    match (is_number(m), is_number(h), dom, mon, dow) {
        (true, false, "*", "*", "*") if h == "*" => "hourly",
        (true, true, "*", "*", "*") => "daily",
        (true, true, "*", "*", d) if single(d) => "weekly",
        (true, true, d, "*", "*") if is_number(d) => "monthly",
        (true, true, d, mo, "*") if is_number(d) && single(mo) => "yearly",
        _ => "cron",
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(cron: &str, tz: Tz) -> Schedule {
        Schedule::new(
            parse_cron(cron).unwrap(),
            cron,
            tz,
            None,
            ConcurrencyPolicy::Forbid,
        )
    }

    #[test]
    fn schedules_with_the_same_expression_share_one_parsed_cron() {
        let a = parse_cron("17 3 * * 1-5").unwrap();
        let b = parse_cron("17 3 * * 1-5").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &parse_cron("18 3 * * 1-5").unwrap()));
        drop((a, b));
        // Nobody holds it any more: parsed again (and still right).
        let c = parse_cron("17 3 * * 1-5").unwrap();
        assert_eq!(c.pattern.to_string(), "17 3 * * 1-5");
    }

    #[test]
    fn five_and_six_fields_parse_seven_do_not() {
        assert!(parse_cron("0 2 * * SUN").is_ok());
        assert!(parse_cron("30 0 2 * * SUN").is_ok());
        assert!(parse_cron("0 0 2 * * SUN 2027").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("").is_err());
    }

    #[test]
    fn berlin_02_00_stays_local_across_dst() {
        let s = schedule("0 2 * * *", chrono_tz::Europe::Berlin);
        // Winter: 02:00 CET = 01:00 UTC.
        let t = s
            .next_after(Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap())
            .unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 1, 11, 1, 0, 0).unwrap());
        // Spring forward on 2026-03-29: 02:00 does not exist, runs right after the jump (03:00 CEST = 01:00 UTC).
        let t = s
            .next_after(Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap())
            .unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap());
        // Summer: 02:00 CEST = 00:00 UTC.
        let t = s
            .next_after(Utc.with_ymd_and_hms(2026, 3, 30, 12, 0, 0).unwrap())
            .unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 3, 31, 0, 0, 0).unwrap());
        // Fall back on 2026-10-25: 02:00 happens twice, runs once.
        let a = s
            .next_after(Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap())
            .unwrap();
        let b = s.next_after(a).unwrap();
        assert_eq!(a, Utc.with_ymd_and_hms(2026, 10, 25, 0, 0, 0).unwrap());
        assert_eq!(b, Utc.with_ymd_and_hms(2026, 10, 26, 1, 0, 0).unwrap());
    }

    #[test]
    fn never_firing_expression_has_no_next() {
        let s = schedule("0 0 30 2 *", Tz::UTC);
        assert_eq!(
            s.next_after(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
            None
        );
    }

    #[test]
    fn cadence_names_common_shapes() {
        assert_eq!(cadence("0 2 * * SUN"), "weekly");
        assert_eq!(cadence("0 0 2 * * sun"), "weekly");
        assert_eq!(cadence("0 6 1 * *"), "monthly");
        assert_eq!(cadence("15 3 * * *"), "daily");
        assert_eq!(cadence("5 * * * *"), "hourly");
        assert_eq!(cadence("0 0 1 1 *"), "yearly");
        assert_eq!(cadence("*/5 * * * *"), "cron");
        assert_eq!(cadence("0 2 * * MON-FRI"), "cron");
        assert_eq!(cadence("@weekly"), "weekly");
        assert_eq!(
            schedule("0 2 * * SUN", chrono_tz::Europe::Berlin).summary(),
            "weekly 0 2 * * SUN Europe/Berlin"
        );
    }
}
