//! Step retry backoff (SPEC §5): exponential from `retry.initialBackoff`, capped at
//! `retry.maxBackoff`, with "equal jitter": the delay of attempt `n` is drawn from
//! `[b/2, b]` where `b = min(initial · 2^(n-1), max)`. Half of the delay is fixed, so
//! successive delays never shrink below the cap (attempt `n+1` waits at least `b`, attempt `n`
//! at most `b`) and runs retrying after the same outage still spread out.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryPolicy;

/// The undrawn ceiling of the delay after failed attempt `attempt` (1-based).
pub fn ceiling(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let factor = 1u64 << exp;
    let base = policy
        .initial_backoff
        .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX);
    base.min(policy.max_backoff)
}

/// The delay before the next attempt after failed attempt `attempt` (1-based), jittered; a
/// server's `Retry-After` raises it (never above `maxBackoff`).
pub fn delay(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let b = ceiling(policy, attempt);
    let half = b / 2;
    let span = u64::try_from((b - half).as_millis()).unwrap_or(u64::MAX);
    let jitter = if span == 0 {
        0
    } else {
        rand::rng().random_range(0..=span)
    };
    let d = half + Duration::from_millis(jitter);
    match retry_after {
        Some(r) => d.max(r.min(policy.max_backoff)),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = policy();
        let got: Vec<u64> = (1..=8).map(|n| ceiling(&p, n).as_secs()).collect();
        assert_eq!(got, [30, 60, 120, 240, 480, 960, 1800, 1800]);
        assert_eq!(ceiling(&p, 200), p.max_backoff);
    }

    #[test]
    fn jittered_delays_never_shrink_from_one_attempt_to_the_next() {
        let p = policy();
        for _ in 0..200 {
            let mut last = Duration::ZERO;
            // Attempts 1..=6 double without reaching the 30m cap.
            for n in 1..=6 {
                let d = delay(&p, n, None);
                let b = ceiling(&p, n);
                assert!(
                    d >= b / 2 && d <= b,
                    "attempt {n}: {d:?} outside [{:?}, {b:?}]",
                    b / 2
                );
                assert!(d >= last, "attempt {n}: {d:?} < {last:?}");
                last = d;
            }
        }
    }

    #[test]
    fn retry_after_raises_the_delay_but_not_above_the_cap() {
        let p = policy();
        assert!(delay(&p, 1, Some(Duration::from_secs(100))) >= Duration::from_secs(100));
        assert_eq!(
            delay(&p, 1, Some(Duration::from_secs(99_999))),
            p.max_backoff
        );
    }
}
