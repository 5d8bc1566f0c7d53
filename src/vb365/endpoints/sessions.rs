//! Restore sessions: listing them (with the filters of `GET /v8/RestoreSessions`), reading one,
//! stopping one, and reading its events and statistics.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::vb365::client::Client;
use crate::vb365::connection::{Call, NoBody};
use crate::vb365::error::ApiError;
use crate::vb365::model::{
    RestoreSession, RestoreSessionEvent, RestoreSessionStatistics, timestamp,
};
use crate::vb365::operation::Operation;

/// Optional filters of `GET /v8/RestoreSessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSessionFilter {
    pub start_time_from: Option<DateTime<Utc>>,
    pub start_time_to: Option<DateTime<Utc>>,
    pub end_time_from: Option<DateTime<Utc>>,
    pub end_time_to: Option<DateTime<Utc>>,
    pub order_asc: Option<bool>,
    pub order_by: Option<SessionOrder>,
}

/// `orderBy` of `GET /v8/RestoreSessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOrder {
    CreationTime,
    EndTime,
}

impl Client {
    /// `GET /v8/RestoreSessions` with filters, all pages.
    pub async fn restore_sessions(
        &self,
        filter: &RestoreSessionFilter,
    ) -> Result<Vec<RestoreSession>, ApiError> {
        let mut call = self.get_call(Operation::ListRestoreSessions, &[], None);
        let times = [
            ("startTimeFrom", filter.start_time_from),
            ("startTimeTo", filter.start_time_to),
            ("endTimeFrom", filter.end_time_from),
            ("endTimeTo", filter.end_time_to),
        ];
        for (key, value) in times {
            if let Some(t) = value {
                call.query.push((key, timestamp::format(&t)));
            }
        }
        if let Some(asc) = filter.order_asc {
            call.query.push(("orderAsc", asc.to_string()));
        }
        if let Some(by) = filter.order_by {
            let v = match by {
                SessionOrder::CreationTime => "CreationTime",
                SessionOrder::EndTime => "EndTime",
            };
            call.query.push(("orderBy", v.to_string()));
        }
        self.all_pages(call, false).await
    }

    /// `GET /v8/RestoreSessions/{id}`.
    pub async fn restore_session(&self, id: Uuid) -> Result<RestoreSession, ApiError> {
        let s = id.to_string();
        self.call_json(self.get_call(Operation::GetRestoreSession, &[&s], Some(id)))
            .await
    }

    /// `POST /v8/RestoreSessions/{id}/Stop` (204).
    pub async fn stop_restore_session(&self, id: Uuid) -> Result<(), ApiError> {
        let s = id.to_string();
        let call: Call<NoBody> =
            self.post_call(Operation::StopRestoreSession, &[&s], Some(id), None);
        self.execute(&call).await.map(drop)
    }

    /// `GET /v8/RestoreSessions/{id}/Events`, all pages.
    pub async fn restore_session_events(
        &self,
        id: Uuid,
    ) -> Result<Vec<RestoreSessionEvent>, ApiError> {
        let s = id.to_string();
        self.all_pages(
            self.get_call(Operation::ListRestoreSessionEvents, &[&s], Some(id)),
            false,
        )
        .await
    }

    /// `GET /v8/RestoreSessions/{id}/Statistics`.
    pub async fn restore_session_statistics(
        &self,
        id: Uuid,
    ) -> Result<RestoreSessionStatistics, ApiError> {
        let s = id.to_string();
        self.call_json(self.get_call(Operation::GetRestoreSessionStatistics, &[&s], Some(id)))
            .await
    }
}
