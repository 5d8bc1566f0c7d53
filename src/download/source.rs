//! The seam between the download engine and whatever serves the export bytes.
//!
//! The engine calls [`ByteSource::open`] to (re)issue the export request, optionally with
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
    /// The `Content-Range` header value as sent (`bytes 100-999/1000`), when present. The engine
    /// parses it with [`ContentRange::parse`] so a malformed value can be reported verbatim.
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

/// Something the engine can (re)open an export from.
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

/// A parsed `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte offset of the body.
    pub start: u64,
    /// Last byte offset of the body (inclusive).
    pub end: u64,
    /// Complete length, unless the server sent `*`.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parses a `Content-Range` value; `None` if it is malformed or inconsistent
    /// (`end < start`, `end >= total`).
    pub fn parse(value: &str) -> Option<ContentRange> {
        let rest = value.trim().strip_prefix("bytes")?.trim_start();
        let (range, total) = rest.split_once('/')?;
        let (start, end) = range.trim().split_once('-')?;
        let start: u64 = start.trim().parse().ok()?;
        let end: u64 = end.trim().parse().ok()?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse::<u64>().ok()?),
        };
        if end < start || total.is_some_and(|t| end >= t) {
            return None;
        }
        Some(ContentRange { start, end, total })
    }
}

impl std::fmt::Display for ContentRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.total {
            Some(t) => write!(f, "bytes {}-{}/{t}", self.start, self.end),
            None => write!(f, "bytes {}-{}/*", self.start, self.end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_and_rejects() {
        assert_eq!(
            ContentRange::parse("bytes 100-999/1000"),
            Some(ContentRange {
                start: 100,
                end: 999,
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-9/*"),
            Some(ContentRange {
                start: 0,
                end: 9,
                total: None
            })
        );
        for bad in [
            "bytes 10-5/100",
            "bytes 0-100/100",
            "items 0-1/2",
            "bytes */100",
            "bytes a-b/c",
            "",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
        assert_eq!(
            ContentRange::parse("bytes 5-9/10").unwrap().to_string(),
            "bytes 5-9/10"
        );
    }
}
