//! The PST export of a mailbox: `POST …/exportToPst`, answered by a stream (the download
//! engine reads it; [`crate::vb365::export`] holds the stream handle).

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::vb365::client::Client;
use crate::vb365::connection::Deadline;
use crate::vb365::error::{ApiError, ErrorClass, ErrorKind};
use crate::vb365::export::{ContentRange, PstExport};
use crate::vb365::operation::Operation;
use crate::vb365::request::ExportToPstOptions;

impl Client {
    /// `POST …/organization/mailboxes/{id}/exportToPst` with `Accept: application/octet-stream`
    /// and, when `range_start` is given, `Range: bytes=N-`. Returns once the response headers are
    /// in (waiting at most `first_byte_timeout` for them); the body is left to the caller as a
    /// stream with no deadline. A 200 or 206 is returned as a [`PstExport`]; anything else is an
    /// error.
    pub async fn export_to_pst(
        &self,
        session: Uuid,
        mailbox: Uuid,
        options: &ExportToPstOptions,
        range_start: Option<u64>,
        first_byte_timeout: Duration,
    ) -> Result<PstExport, ApiError> {
        let (s, m) = (session.to_string(), mailbox.to_string());
        let mut call = self.post_call(
            Operation::ExportMailboxToPst,
            &[&s, &m],
            Some(session),
            Some(options),
        );
        call.accept = "application/octet-stream";
        call.range_start = range_start;
        call.deadline = Deadline::Headers(first_byte_timeout);
        let resp = self.execute(&call).await?;
        let status = resp.status();
        if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
            return Err(self.inner.conn.error(
                call.op,
                call.display_path(),
                ErrorClass::Permanent,
                ErrorKind::Decode,
                format!("unexpected status {status} for an export (expected 200 or 206)"),
            ));
        }
        let content_range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(ContentRange::parse);
        Ok(PstExport {
            status,
            content_length: resp.content_length(),
            content_range,
            requested_start: range_start,
            server: self.inner.conn.server.clone(),
            path: call.display_path(),
            response: resp,
        })
    }
}
