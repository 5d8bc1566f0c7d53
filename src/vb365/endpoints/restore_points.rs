//! Restore points: `GET /v8/RestorePoints` for the newest restore point of an organisation,
//! which the freshness guard (`spec.maxRestorePointAge`) compares with its limit.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::vb365::client::Client;
use crate::vb365::error::ApiError;
use crate::vb365::model::{Page, RestorePoint, timestamp};
use crate::vb365::operation::Operation;

impl Client {
    /// The organisation's newest restore point
    /// (`GET /v8/RestorePoints?organizationId=…&orderAsc=false&limit=1`), or with `not_after`
    /// the newest one not after that instant (`&to=…`); `None` when there is none.
    pub async fn newest_restore_point(
        &self,
        organization_id: Uuid,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<Option<RestorePoint>, ApiError> {
        let mut call = self.get_call(Operation::ListRestorePoints, &[], None);
        call.query
            .push(("organizationId", organization_id.to_string()));
        if let Some(t) = not_after {
            call.query.push(("to", timestamp::format(&t)));
        }
        call.query.push(("orderAsc", "false".to_string()));
        call.query.push(("limit", "1".to_string()));
        let page: Page<RestorePoint> = self.call_json(call).await?;
        Ok(page.results.into_iter().next())
    }
}
