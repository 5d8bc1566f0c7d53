//! The wall clock, injectable: [`SystemClock`] in the daemon, [`ManualClock`] in tests, and the
//! scheduler's bounded sleep.
//!
//! Why the sleep is bounded: tokio timers run on the monotonic clock, which stops while the machine
//! is suspended and ignores wall-clock steps (NTP corrections, an operator setting the date;
//! rust-lang/rust#87906). A single long `sleep` until a fire instant could wake hours late. The
//! scheduler therefore never sleeps longer than [`MAX_SLEEP`] and re-reads the wall clock after
//! every wake-up (CRATES.md §3).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest the scheduler sleeps before it looks at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock (`Utc::now()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same time, so a test keeps one clone
/// and hands another to the code under test.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Sets the time (it may go backwards, like a real clock being corrected).
    pub fn set(&self, to: DateTime<Utc>) {
        *self.lock() = to;
    }

    /// Moves the time forward by `by` (saturating at chrono's maximum instant).
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        let delta = chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX);
        *now = now
            .checked_add_signed(delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // The guarded value is a plain instant that is always valid, so a panic in another
        // holder cannot leave it half-written: keep going with it.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// How long to sleep at `now` to wake at `earliest_next_fire`, but never longer than `max`.
/// No fire (`None`) sleeps `max`; a fire in the past sleeps zero.
pub fn time_to_sleep(
    earliest_next_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    max: Duration,
) -> Duration {
    match earliest_next_fire {
        None => max,
        Some(fire) => (fire - now).to_std().map_or(Duration::ZERO, |d| d.min(max)),
    }
}

/// Sleeps until `earliest_next_fire` by `clock`, but never longer than `max` (normally
/// [`MAX_SLEEP`]), then returns the wall-clock time read afresh. The caller then handles whatever
/// is due at that instant and calls this again; combine it with a reload or cancellation signal in
/// `tokio::select!`.
pub async fn sleep_until_next(
    earliest_next_fire: Option<DateTime<Utc>>,
    clock: &dyn Clock,
    max: Duration,
) -> DateTime<Utc> {
    let wait = time_to_sleep(earliest_next_fire, clock.now(), max);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    clock.now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(utc("2026-03-29T00:00:00Z"));
        let other = clock.clone();
        clock.advance(Duration::from_secs(90));
        assert_eq!(other.now(), utc("2026-03-29T00:01:30Z"));
        other.set(utc("2026-01-01T00:00:00Z"));
        assert_eq!(clock.now(), utc("2026-01-01T00:00:00Z"));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn sleep_is_capped_and_never_negative() {
        let now = utc("2026-03-29T00:00:00Z");
        let max = MAX_SLEEP;
        assert_eq!(time_to_sleep(None, now, max), max);
        assert_eq!(
            time_to_sleep(Some(utc("2026-03-29T00:00:10Z")), now, max),
            Duration::from_secs(10)
        );
        assert_eq!(
            time_to_sleep(Some(utc("2026-03-30T00:00:00Z")), now, max),
            max
        );
        assert_eq!(
            time_to_sleep(Some(utc("2026-03-28T00:00:00Z")), now, max),
            Duration::ZERO
        );
        assert_eq!(time_to_sleep(Some(now), now, max), Duration::ZERO);
    }

    #[tokio::test]
    async fn sleep_until_next_rereads_the_clock() {
        // A fire a year ahead on the injected clock must not keep the loop asleep: with a tiny
        // cap the call returns, and it reports the clock as read after the sleep.
        let clock = ManualClock::new(utc("2026-03-29T00:00:00Z"));
        let far = Some(utc("2027-03-29T00:00:00Z"));
        let woke = tokio::time::timeout(
            Duration::from_secs(10),
            sleep_until_next(far, &clock, Duration::from_millis(5)),
        )
        .await
        .expect("the capped sleep returns");
        assert_eq!(woke, utc("2026-03-29T00:00:00Z"));
        // A due fire returns at once with the current time.
        clock.advance(Duration::from_secs(3600));
        let woke = sleep_until_next(Some(utc("2026-03-29T00:30:00Z")), &clock, MAX_SLEEP).await;
        assert_eq!(woke, utc("2026-03-29T01:00:00Z"));
    }
}
