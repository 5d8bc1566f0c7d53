//! `concurrencyPolicy` (SPEC §4.3): what a fire does while a run of the same job is active.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a scheduled fire treats an active run of the same job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the fire (recorded as a `skipped` run). The default: two restores or exports of the
    /// same mailboxes at once are rarely what anyone wants.
    #[default]
    Forbid,
    /// Run both.
    Allow,
    /// Cancel the active run, then start the new one.
    Replace,
}

impl ConcurrencyPolicy {
    /// The policy as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Replace => "Replace",
        }
    }
}

/// What the scheduler does with one due fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireAction {
    /// Queue a run for the fire.
    Enqueue,
    /// Queue nothing; record the fire as a `skipped` run.
    Skip,
    /// Request cancellation of the active run(s), then queue a run for the fire.
    ReplaceActive,
}

impl ConcurrencyPolicy {
    /// The action for a fire, given whether a run of the job is active (queued, running or
    /// waiting for a retry).
    pub fn decide(self, run_active: bool) -> FireAction {
        match (self, run_active) {
            (_, false) | (ConcurrencyPolicy::Allow, true) => FireAction::Enqueue,
            (ConcurrencyPolicy::Forbid, true) => FireAction::Skip,
            (ConcurrencyPolicy::Replace, true) => FireAction::ReplaceActive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        use ConcurrencyPolicy::*;
        assert_eq!(Forbid.decide(false), FireAction::Enqueue);
        assert_eq!(Forbid.decide(true), FireAction::Skip);
        assert_eq!(Allow.decide(false), FireAction::Enqueue);
        assert_eq!(Allow.decide(true), FireAction::Enqueue);
        assert_eq!(Replace.decide(false), FireAction::Enqueue);
        assert_eq!(Replace.decide(true), FireAction::ReplaceActive);
    }

    #[test]
    fn yaml_names_are_the_spec_names() {
        let p: ConcurrencyPolicy = serde_yaml::from_str("Replace").unwrap();
        assert_eq!(p, ConcurrencyPolicy::Replace);
        assert!(serde_yaml::from_str::<ConcurrencyPolicy>("forbid").is_err());
    }
}
