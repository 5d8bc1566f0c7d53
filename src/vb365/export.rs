//! The response handle of a PST export (`POST …/mailboxes/{id}/exportToPst`).
//!
//! The client returns as soon as the response headers arrive; the body is handed over as a
//! stream. No total timeout applies to it: the download engine enforces its own first-byte and
//! idle-read timeouts and decides, from the status and `Content-Range`, whether to append to a
//! partial file (206 from the requested offset) or to start over (200: the range was ignored).

use std::fmt;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};

use super::error::{ApiError, ErrorKind, Replay, Transport, classify, transport_message};

/// A parsed `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte position, inclusive.
    pub start: u64,
    /// Last byte position, inclusive.
    pub end: u64,
    /// Full length of the file, when the server knows it.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parses the header value; `None` for anything malformed (including `bytes */1000`, which
    /// only accompanies a 416 and names no range). [`ContentRange::check`] says why.
    pub fn parse(value: &str) -> Option<ContentRange> {
        Self::check(value).ok()
    }

    /// Parses the header value, or says what is wrong with it. Every number is a server-supplied
    /// `u64` that later arithmetic relies on, so a range is only returned when its length and its
    /// end (`last + 1`) fit in a `u64`: `bytes 0-18446744073709551615/*` is refused here rather
    /// than overflowing there.
    ///
    /// # Errors
    ///
    /// A short reason, e.g. `the last byte position 9 is before the first 10`.
    pub fn check(value: &str) -> Result<ContentRange, String> {
        let rest = value
            .trim()
            .strip_prefix("bytes")
            .ok_or("the unit is not `bytes`")?
            .trim_start();
        let (range, total) = rest
            .split_once('/')
            .ok_or("no `/` before the complete length")?;
        let range = range.trim();
        if range == "*" {
            return Err("it names no range (`bytes */length` only accompanies a 416)".into());
        }
        let (start, end) = range
            .split_once('-')
            .ok_or("no `first-last` byte positions")?;
        let position = |text: &str, what: &str| {
            text.trim().parse::<u64>().map_err(|_| {
                format!(
                    "the {what} byte position `{}` is not a number below 2^64",
                    text.trim()
                )
            })
        };
        let start = position(start, "first")?;
        let end = position(end, "last")?;
        let total = match total.trim() {
            "*" => None,
            t => Some(
                t.parse::<u64>()
                    .map_err(|_| format!("the complete length `{t}` is not a number below 2^64"))?,
            ),
        };
        if end < start {
            return Err(format!(
                "the last byte position {end} is before the first {start}"
            ));
        }
        if let Some(t) = total
            && end >= t
        {
            return Err(format!(
                "the last byte position {end} is not below the complete length {t}"
            ));
        }
        if end == u64::MAX {
            return Err(format!(
                "the last byte position {end} is past the end of any possible file"
            ));
        }
        Ok(ContentRange { start, end, total })
    }

    /// One past the last byte position: the length of the file up to the end of this range.
    pub fn end_exclusive(&self) -> u64 {
        // Exact for every range `check` returns (it refuses `end == u64::MAX`); the fields are
        // public, so a hand-built range saturates instead of wrapping.
        self.end.saturating_add(1)
    }

    /// Number of bytes this range covers.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// Always false: a parsed range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A PST export whose headers have arrived. Read the body with [`PstExport::into_stream`] (errors
/// mapped to [`ApiError`]) or take the raw [`reqwest::Response`].
pub struct PstExport {
    /// 200 (whole file) or 206 (partial content after a `Range` request).
    pub status: StatusCode,
    /// `Content-Length` of this response body, when sent.
    pub content_length: Option<u64>,
    /// Parsed `Content-Range`, when sent (and well-formed).
    pub content_range: Option<ContentRange>,
    /// The `Range` start this request asked for.
    pub requested_start: Option<u64>,
    pub(crate) server: std::sync::Arc<str>,
    pub(crate) path: String,
    pub(crate) response: reqwest::Response,
}

impl fmt::Debug for PstExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PstExport")
            .field("status", &self.status)
            .field("content_length", &self.content_length)
            .field("content_range", &self.content_range)
            .field("requested_start", &self.requested_start)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PstExport {
    /// True when the server honoured the requested range: 206 with a `Content-Range` that starts
    /// exactly at the requested offset.
    pub fn is_resumed(&self) -> bool {
        self.status == StatusCode::PARTIAL_CONTENT
            && match (self.requested_start, self.content_range) {
                (Some(start), Some(cr)) => cr.start == start,
                _ => false,
            }
    }

    /// The full size of the export when the headers tell it: the `Content-Range` total of a 206,
    /// or the `Content-Length` of a 200.
    pub fn total_size(&self) -> Option<u64> {
        match self.status {
            StatusCode::PARTIAL_CONTENT => self.content_range.and_then(|c| c.total),
            _ => self.content_length,
        }
    }

    /// The body as a stream of chunks. A failure while reading becomes an [`ApiError`] of kind
    /// `Transport(Body)`, class retryable (an export is safe to request again with `Range`).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ApiError>> + Send + 'static {
        let server = self.server;
        let path = self.path;
        self.response.bytes_stream().map(move |r| {
            r.map_err(|e| {
                let t = match Transport::from_reqwest(&e) {
                    // Once headers are in, any failure is a broken body, even a timeout.
                    Transport::Connect => Transport::Connect,
                    _ => Transport::Body,
                };
                ApiError {
                    server: server.clone(),
                    method: Method::POST,
                    path: path.clone(),
                    status: None,
                    error_code: None,
                    message: transport_message(t, &e),
                    retry_after: None,
                    class: classify(
                        &super::error::Outcome::Transport(t),
                        Replay::Safe,
                        false,
                        false,
                    ),
                    kind: ErrorKind::Transport(t),
                }
            })
        })
    }

    /// The raw response (headers, `chunk()`, `bytes_stream()`).
    pub fn into_response(self) -> reqwest::Response {
        self.response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            ContentRange::parse("bytes 100-999/1000"),
            Some(ContentRange {
                start: 100,
                end: 999,
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-0/*"),
            Some(ContentRange {
                start: 0,
                end: 0,
                total: None
            })
        );
        assert_eq!(
            ContentRange::parse("  bytes  5-9 / 10 "),
            Some(ContentRange {
                start: 5,
                end: 9,
                total: Some(10)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 100-999/1000").map(|c| c.len()),
            Some(900)
        );
        for bad in [
            "bytes */1000",
            "bytes 10-5/100",
            "bytes 0-100/100",
            "items 0-1/2",
            "bytes 0-/10",
            "bytes -5/10",
            "bytes 1-2",
            "",
            "bytes 18446744073709551616-1/2",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }

    /// Values near `u64::MAX` either parse into a range whose length and end fit in a `u64`, or
    /// are refused with a reason; nothing a server sends can make the arithmetic wrap.
    #[test]
    fn hostile_values_are_refused_with_a_reason_or_fit_in_u64() {
        let max = u64::MAX;
        for (value, reason) in [
            (
                format!("bytes 0-{max}/*"),
                "past the end of any possible file",
            ),
            (
                format!("bytes {max}-{max}/*"),
                "past the end of any possible file",
            ),
            (
                format!("bytes 5-{max}/{max}"),
                "not below the complete length",
            ),
            (
                "bytes 10-9/100".to_owned(),
                "the last byte position 9 is before the first 10",
            ),
            (
                "bytes 0-100/100".to_owned(),
                "100 is not below the complete length 100",
            ),
            (
                "bytes 0-1/18446744073709551616".to_owned(),
                "complete length `18446744073709551616`",
            ),
            (
                "bytes 18446744073709551616-1/2".to_owned(),
                "first byte position",
            ),
            (
                "bytes 0-99999999999999999999/*".to_owned(),
                "last byte position",
            ),
            ("bytes -1-5/10".to_owned(), "first byte position"),
            ("bytes */1000".to_owned(), "names no range"),
            ("items 0-1/2".to_owned(), "not `bytes`"),
            ("bytes 0-1".to_owned(), "no `/`"),
        ] {
            let err = ContentRange::check(&value).unwrap_err();
            assert!(err.contains(reason), "{value}: {err}");
        }
        for value in [
            format!("bytes 0-{}/*", max - 1),
            format!("bytes 0-{}/{max}", max - 1),
            format!("bytes {}-{}/{max}", max - 1, max - 1),
        ] {
            let r = ContentRange::check(&value).unwrap();
            assert_eq!(r.end_exclusive(), max, "{value}");
            assert_eq!(r.len(), max - r.start, "{value}");
        }
    }
}
