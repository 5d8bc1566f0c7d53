//! The seam between the transfer ([`fetch`](super::fetch)) and whatever serves the export bytes.
//!
//! The transfer calls [`ByteSource::open`] to (re)issue the export request, optionally with
//! `Range: bytes=N-`, and reads the answer's status, lengths and body stream. The production
//! implementation wraps the VB365 client's `exportToPst` call (which refreshes the token before
//! each request, so a 401 after a long stream turns into a resume with a fresh token); tests can
//! implement it over any HTTP endpoint.

use std::future::Future;
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use super::error::SourceError;

/// The body of an export answer: chunks of bytes, or the I/O error that broke the stream.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// An opened export answer.
pub struct OpenedBody {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Length` of this answer, when sent.
    pub content_length: Option<u64>,
    /// The `Content-Range` header value as sent (`bytes 100-999/1000`), when present. The transfer
    /// parses it with [`ContentRange::parse`](crate::vb365::ContentRange::parse) so a malformed
    /// value can be reported verbatim.
    pub content_range: Option<String>,
    /// The body.
    pub body: BodyStream,
}

impl std::fmt::Debug for OpenedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedBody")
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .field("content_range", &self.content_range)
            .finish_non_exhaustive()
    }
}

/// Something the transfer can (re)open an export from.
pub trait ByteSource: Sync {
    /// A short description for messages and logs, without secrets (e.g. `export of
    /// alice@contoso.com (restore session 1234…)`).
    fn describe(&self) -> String;

    /// Sends the export request; `range_start = Some(n)` adds `Range: bytes=n-`, `None` sends no
    /// `Range` header. Any HTTP status is returned as an [`OpenedBody`]; `Err` is for failures
    /// before a status was read (connection, TLS, token, lost session).
    fn open(
        &self,
        range_start: Option<u64>,
    ) -> impl Future<Output = Result<OpenedBody, SourceError>> + Send;
}
