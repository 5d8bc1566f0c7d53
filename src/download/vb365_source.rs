//! [`ByteSource`] over the VB365 client: each (re)open is one
//! `POST …/mailboxes/{id}/exportToPst` in the restore session that built the export.
//!
//! The client refreshes the access token before every request, so a token that expired during a
//! long stream becomes a resume with a fresh token. A 416 is handed to the transfer as a status
//! (it names it); every other failure keeps the client's error class (retryable, permanent,
//! auth, session lost).

use std::io;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use uuid::Uuid;

use super::error::SourceError;
use super::source::{ByteSource, OpenedBody};
use crate::vb365::{Client, ExportToPstOptions};

/// The PST export of one mailbox in one restore session.
#[derive(Clone)]
pub struct ExportSource {
    client: Client,
    session: Uuid,
    mailbox: Uuid,
    mailbox_email: String,
    options: ExportToPstOptions,
    first_byte_timeout: Duration,
}

impl ExportSource {
    /// The export of `mailbox` (shown as `mailbox_email`) in restore session `session`;
    /// `first_byte_timeout` bounds the wait for the response headers (the transfer also bounds the
    /// first body chunk with the same value).
    pub fn new(
        client: Client,
        session: Uuid,
        mailbox: Uuid,
        mailbox_email: impl Into<String>,
        options: ExportToPstOptions,
        first_byte_timeout: Duration,
    ) -> Self {
        ExportSource {
            client,
            session,
            mailbox,
            mailbox_email: mailbox_email.into(),
            options,
            first_byte_timeout,
        }
    }
}

impl ByteSource for ExportSource {
    fn describe(&self) -> String {
        format!(
            "PST export of {} (mailbox {}, restore session {}, server {})",
            self.mailbox_email,
            self.mailbox,
            self.session,
            self.client.server()
        )
    }

    async fn open(&self, range_start: Option<u64>) -> Result<OpenedBody, SourceError> {
        match self
            .client
            .export_to_pst(
                self.session,
                self.mailbox,
                &self.options,
                range_start,
                self.first_byte_timeout,
            )
            .await
        {
            Ok(export) => {
                // The raw header, so a malformed value can be quoted in the error.
                let content_range = export
                    .response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(OpenedBody {
                    status: export.status.as_u16(),
                    content_length: export.content_length,
                    content_range,
                    body: export.into_stream().map_err(io::Error::other).boxed(),
                })
            }
            Err(e) if e.status == Some(StatusCode::RANGE_NOT_SATISFIABLE) => Ok(OpenedBody {
                status: StatusCode::RANGE_NOT_SATISFIABLE.as_u16(),
                content_length: None,
                content_range: None,
                body: futures_util::stream::empty().boxed(),
            }),
            Err(e) => Err(SourceError {
                class: e.class,
                message: e.to_string(),
                source: Some(Box::new(e)),
            }),
        }
    }
}
