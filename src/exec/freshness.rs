//! The freshness guard (SPEC §11) and the restore point a run shows.
//!
//! Before a run's first execution, a job with `spec.maxRestorePointAge` (only allowed with
//! `pointInTime: latest`) reads the organisation's newest restore point
//! (`GET /v8/RestorePoints?organizationId=…&orderAsc=false&limit=1`) and refuses to run when it
//! is older than the limit, or when there is none: the run fails with a reason naming the age
//! and the organisation, and raises a `stale` notification. ExportPst runs read the restore
//! point too (the newest, or the newest not after their point in time) so that every manifest
//! records its id and `backupTime`; for them a failed read is a warning, not a failure.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::jobs::{Job, JobKind};
use crate::vb365::{Client, RestorePoint};

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Go on; the restore point when it was read.
    Fresh(Option<RestorePoint>),
    /// Refused by the guard: the run fails with this reason and a `stale` event.
    Stale(String),
    /// The guard could not read the restore point: the run fails with this reason.
    Failed(String),
}

/// Reads the restore point of `job`'s organisation at `point_in_time` (`None`: the newest)
/// when the guard or the manifest needs it, and applies `spec.maxRestorePointAge` at `now`.
pub(crate) async fn check(
    client: &Client,
    job: &Job,
    point_in_time: Option<DateTime<Utc>>,
    guard: bool,
    now: DateTime<Utc>,
) -> Freshness {
    let limit = job.max_restore_point_age().filter(|_| guard);
    if limit.is_none() && job.kind() != JobKind::ExportPst {
        return Freshness::Fresh(None);
    }
    let organization = job.organization().to_string();
    let point = read(client, &organization, point_in_time).await;
    let Some(limit) = limit else {
        return match point {
            Ok(p) => Freshness::Fresh(p),
            Err(e) => {
                tracing::warn!(job = %job.name(), error = %e, "cannot read the restore point; the manifest will not name it");
                Freshness::Fresh(None)
            }
        };
    };
    match point {
        Err(e) => Freshness::Failed(format!(
            "freshness check (maxRestorePointAge): cannot read the newest restore point of \
             {organization}: {e}"
        )),
        Ok(None) => Freshness::Stale(format!(
            "{organization} has no restore point; backups of {organization} may never have run \
             (maxRestorePointAge {})",
            humantime::format_duration(limit)
        )),
        Ok(Some(p)) => {
            let age = now - p.backup_time;
            if age.to_std().is_ok_and(|a| a > limit) {
                Freshness::Stale(format!(
                    "newest restore point is {} old (backupTime {}, maxRestorePointAge {}); \
                     backups of {organization} may have stopped",
                    describe_age(age),
                    p.backup_time.to_rfc3339(),
                    humantime::format_duration(limit)
                ))
            } else {
                Freshness::Fresh(Some(p))
            }
        }
    }
}

async fn read(
    client: &Client,
    organization: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Option<RestorePoint>, crate::vb365::ApiError> {
    let org = client.resolve_organization(organization).await?;
    match org.id {
        Some(id) => client.newest_restore_point(id, at).await,
        None => Ok(None),
    }
}

/// `3 days`, `30 hours`, `12 minutes`: the unit an operator reads at a glance.
pub(crate) fn describe_age(age: chrono::Duration) -> String {
    let std = age.to_std().unwrap_or(Duration::ZERO);
    let hours = std.as_secs() / 3600;
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else if hours >= 2 {
        format!("{hours} hours")
    } else {
        format!("{} minutes", std.as_secs() / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(describe_age(chrono::Duration::hours(75)), "3 days");
        assert_eq!(describe_age(chrono::Duration::hours(30)), "30 hours");
        assert_eq!(describe_age(chrono::Duration::minutes(90)), "90 minutes");
        assert_eq!(describe_age(chrono::Duration::minutes(-5)), "0 minutes");
    }
}
