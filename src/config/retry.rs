//! The retry policy of a job's steps: the resolved [`RetryPolicy`] and the partial
//! [`RetrySpec`] written in YAML (under `defaults.retry` in the config and `spec.retry` in a job),
//! applied level over level.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// Retry policy of a job (SPEC §4, §5): per-step attempts with exponential backoff and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
        }
    }
}

/// A partial retry policy as written in YAML; missing keys come from the level above.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts per step, including the first (1..=100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay before the first retry, e.g. `30s`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub initial_backoff: Option<Duration>,
    /// Upper bound of the delay between retries, e.g. `30m`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_backoff: Option<Duration>,
}

impl RetrySpec {
    /// Applies this partial policy over `base`, checking the bounds. The error names the bad key.
    pub fn apply(&self, base: RetryPolicy) -> Result<RetryPolicy, (&'static str, String)> {
        let p = RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            initial_backoff: self.initial_backoff.unwrap_or(base.initial_backoff),
            max_backoff: self.max_backoff.unwrap_or(base.max_backoff),
        };
        if !(1..=100).contains(&p.max_attempts) {
            return Err((
                "maxAttempts",
                format!("must be between 1 and 100, got {}", p.max_attempts),
            ));
        }
        if p.initial_backoff.is_zero() {
            return Err(("initialBackoff", "must be greater than zero".into()));
        }
        if p.max_backoff < p.initial_backoff {
            return Err((
                "maxBackoff",
                "must not be smaller than initialBackoff".into(),
            ));
        }
        Ok(p)
    }
}
