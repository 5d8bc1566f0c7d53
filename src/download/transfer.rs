//! Streaming an export into `<final>.partial` with durable, resumable progress.
//!
//! One call of [`fetch`] drives the download to the end of the body or to an error:
//!
//! 1. load the last [`Checkpoint`]; truncate the partial file to its durable size (a crash may
//!    have left a non-durable tail) and restore the SHA-256 state;
//! 2. open the export with `Range: bytes=N-` (N = durable size; no header for N = 0) under the
//!    first-byte timeout, which covers the request and the first body chunk;
//! 3. 206 with a matching `Content-Range` → append; 200 after a `Range` request → the server
//!    ignored it: truncate, restart from 0 and record that; a resume answered for an export of
//!    another length than the known one → the export changed: discard the partial file, record
//!    the restart and fail retryable (the next attempt starts from 0); 416, a bad
//!    `Content-Range` or a length no file can have → error (all header arithmetic is checked);
//! 4. stream with an idle-read timeout per chunk and no total deadline. Reading, hashing and
//!    writing are pipelined (`super::pipeline`): batches (4 MiB by default) are hashed on one
//!    thread and written (`O_DIRECT` where possible) on another while the next ones are read; at
//!    most four batches exist, so memory is bounded whatever the file size;
//! 5. `sync_data` then record progress at least every 64 MiB and every 5 s, and once more when the
//!    body ends or breaks (the writing thread syncs, the body loop records what it reports);
//! 6. check the final length against `Content-Length`/`Content-Range` when given.
//!
//! A broken body, an idle stall or a 5xx is resumed at once from the last durable offset, a
//! bounded number of times with exponential backoff (`backon`); then the error goes back to the
//! run engine as retryable.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::artefact::Fetched;
use super::error::DownloadError;
use super::hashing::{hash_file_prefix, hasher_state, hex_digest, restore_hasher};
use super::paths::SafePath;
use super::pipeline::{Batch, Event, POOL, Pipeline};
use super::progress::{Checkpoint, ProgressStore, RestartReason};
use super::source::{BodyStream, ByteSource, OpenedBody};
use super::space;
use crate::private_dir::create_private_dir;
use crate::vb365::ContentRange;

/// Tunables of the transfer. [`Default`] gives the SPEC §7 values.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Time allowed for the request and the first body chunk (the server builds the PST first).
    pub first_byte_timeout: Duration,
    /// Time allowed between two body chunks.
    pub idle_timeout: Duration,
    /// Record durable progress at least every this many bytes.
    pub checkpoint_bytes: u64,
    /// Record durable progress at least this often while data flows.
    pub checkpoint_interval: Duration,
    /// Immediate resumes inside one [`fetch`] call before giving up with a retryable error.
    pub max_immediate_resumes: u32,
    /// First backoff delay between immediate resumes (doubles, with jitter).
    pub resume_min_delay: Duration,
    /// Longest backoff delay between immediate resumes.
    pub resume_max_delay: Duration,
    /// Bytes gathered before a write (rounded up to 4 KiB); four such buffers are the transfer's
    /// whole memory.
    pub batch_bytes: usize,
    /// Write the page-aligned part of each batch with `O_DIRECT` (no copy into the page cache);
    /// falls back to buffered writes where the file system refuses it.
    pub direct_io: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            first_byte_timeout: Duration::from_secs(2 * 60 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
            checkpoint_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(5),
            max_immediate_resumes: 5,
            resume_min_delay: Duration::from_secs(1),
            resume_max_delay: Duration::from_secs(30),
            batch_bytes: 4 << 20,
            direct_io: true,
        }
    }
}

impl From<&crate::config::DownloadConfig> for DownloadOptions {
    /// The timeouts from the daemon config (`downloads:`), the other tunables at their defaults.
    fn from(config: &crate::config::DownloadConfig) -> Self {
        DownloadOptions {
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_read_timeout,
            ..DownloadOptions::default()
        }
    }
}

/// Downloads the export served by `source` into `target`'s partial file (`<final>.partial`),
/// resuming from the durable progress in `progress`.
///
/// # Errors
///
/// [`DownloadError`]; its [`class`](DownloadError::class) says whether the run engine should
/// retry. The partial file and its recorded progress are kept on every error.
pub async fn fetch<S, P>(
    source: &S,
    progress: &P,
    target: &SafePath,
    opts: &DownloadOptions,
) -> Result<Fetched, DownloadError>
where
    S: ByteSource,
    P: ProgressStore,
{
    let ctx = Ctx {
        subject: source.describe(),
        partial: target.partial_path(),
        opts,
    };
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(opts.resume_min_delay)
        .with_max_delay(opts.resume_max_delay)
        .with_max_times(opts.max_immediate_resumes as usize)
        .with_jitter()
        .build();
    let mut requests = 0u32;
    let mut resumes = 0u32;
    loop {
        match attempt(&ctx, source, progress, &mut requests).await {
            Ok(mut fetched) => {
                fetched.requests = requests;
                return Ok(fetched);
            }
            Err(err) if err.resumable_now() => match backoff.next() {
                Some(delay) => {
                    resumes += 1;
                    tracing::warn!(
                        subject = %ctx.subject,
                        error = %err,
                        resume = resumes,
                        delay_ms = delay.as_millis() as u64,
                        "download interrupted; resuming"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(DownloadError::ResumesExhausted {
                        subject: ctx.subject,
                        resumes,
                        last: Box::new(err),
                    });
                }
            },
            Err(err) => return Err(err),
        }
    }
}

/// What every step of one [`fetch`] needs to name its subject and find its file.
struct Ctx<'a> {
    subject: String,
    partial: PathBuf,
    opts: &'a DownloadOptions,
}

impl Ctx<'_> {
    fn progress_err(
        &self,
        action: &'static str,
    ) -> impl FnOnce(super::ProgressError) -> DownloadError {
        let subject = self.subject.clone();
        move |source| DownloadError::Progress {
            subject,
            action,
            source,
        }
    }

    fn io_err(&self, action: &'static str) -> impl FnOnce(io::Error) -> DownloadError {
        let path = self.partial.clone();
        move |source| DownloadError::Io {
            path,
            action,
            source,
        }
    }
}

/// The partial file and the hash of what it holds: `written` bytes, all hashed.
struct Sink {
    file: File,
    hasher: Sha256,
    written: u64,
}

/// One request: prepare the partial file, open, check the answer, stream.
async fn attempt<S, P>(
    ctx: &Ctx<'_>,
    source: &S,
    progress: &P,
    requests: &mut u32,
) -> Result<Fetched, DownloadError>
where
    S: ByteSource,
    P: ProgressStore,
{
    let cp = progress
        .load()
        .await
        .map_err(ctx.progress_err("load"))?
        .unwrap_or_default();
    let partial = ctx.partial.clone();
    let cp_for_prepare = cp.clone();
    let (sink, restart) = blocking(move || prepare_partial(&partial, &cp_for_prepare))
        .await
        .map_err(ctx.io_err("prepare the partial file"))?;
    let mut resumed_from = cp.resumed_from.clone();
    let mut restarts = cp.restarts;
    let mut expected = cp.expected_bytes;
    if let Some(reason) = restart {
        tracing::warn!(subject = %ctx.subject, %reason, "download restarts");
        progress
            .record_restart(&reason)
            .await
            .map_err(ctx.progress_err("record a restart of"))?;
        restarts += 1;
    }
    let offset = sink.written;
    if offset > 0 && expected == Some(offset) {
        // Complete before a crash or an earlier publish failure: nothing to request.
        return Ok(Fetched {
            partial_path: ctx.partial.clone(),
            bytes: offset,
            sha256: hex_digest(sink.hasher),
            resumed_from,
            restarts,
            requests: 0,
        });
    }
    if offset > 0 {
        progress
            .record_resume(offset)
            .await
            .map_err(ctx.progress_err("record a resume of"))?;
        resumed_from.push(offset);
    }

    *requests += 1;
    let range = (offset > 0).then_some(offset);
    let first_byte = ctx.opts.first_byte_timeout;
    let opened = tokio::time::timeout(first_byte, async {
        let mut opened = source.open(range).await?;
        let first = opened.body.next().await;
        Ok::<_, super::SourceError>((opened, first))
    })
    .await;
    let (opened, first) = match opened {
        Err(_) => {
            return Err(DownloadError::FirstByteTimeout {
                subject: ctx.subject.clone(),
                after: first_byte,
            });
        }
        Ok(Err(source)) => {
            return Err(DownloadError::Open {
                subject: ctx.subject.clone(),
                source,
            });
        }
        Ok(Ok(pair)) => pair,
    };
    let OpenedBody {
        status,
        content_length,
        content_range,
        body,
    } = opened;

    let mut sink = sink;
    let answer = check_answer(
        ctx,
        status,
        content_length,
        content_range.as_deref(),
        offset,
    )?;
    if offset > 0
        && let (Some(known), Some(announced)) = (expected, answer.total())
        && known != announced
    {
        // The bytes on disk belong to an export of another size: appending to them, or taking
        // this answer's length for the whole file, would publish a mix of two exports.
        drop(body);
        let shown = match content_range.as_deref() {
            Some(raw) if status == 206 => format!("HTTP 206 with Content-Range `{raw}`"),
            _ => format!("HTTP {status} with Content-Length {announced}"),
        };
        let reason = RestartReason::ExportChanged {
            offset,
            known,
            announced,
        };
        tracing::warn!(subject = %ctx.subject, %reason, "download restarts");
        blocking(move || truncate_to_zero(sink))
            .await
            .map_err(ctx.io_err("truncate the partial file"))?;
        progress
            .record_restart(&reason)
            .await
            .map_err(ctx.progress_err("record a restart of"))?;
        return Err(DownloadError::ExportChanged {
            subject: ctx.subject.clone(),
            offset,
            known,
            announced,
            answer: shown,
        });
    }
    // From here this answer's length is the length: at byte 0 nothing on disk depends on an
    // earlier answer (whose total may belong to an export the server has since rebuilt), and on
    // a resume it was just compared with the known one where both are known.
    expected = answer.total();
    if let Answer::Restart { .. } = answer {
        let reason = RestartReason::RangeIgnored { offset };
        tracing::warn!(subject = %ctx.subject, %reason, "download restarts");
        sink = blocking(move || truncate_to_zero(sink))
            .await
            .map_err(ctx.io_err("truncate the partial file"))?;
        progress
            .record_restart(&reason)
            .await
            .map_err(ctx.progress_err("record a restart of"))?;
        restarts += 1;
    }

    let sink = stream_body(ctx, progress, sink, body, first, expected).await?;
    let received = sink.written;
    if let Some(expected) = expected
        && expected != received
    {
        return Err(DownloadError::LengthMismatch {
            subject: ctx.subject.clone(),
            expected,
            received,
        });
    }
    if expected.is_none() {
        // No length announced: the clean end of the body is the end. Record the total so a
        // later attempt (after a crash before publishing) does not re-request a complete file.
        let state = hasher_state(&sink.hasher);
        progress
            .record_durable(received, &state, Some(received))
            .await
            .map_err(ctx.progress_err("record"))?;
    }
    Ok(Fetched {
        partial_path: ctx.partial.clone(),
        bytes: received,
        sha256: hex_digest(sink.hasher),
        resumed_from,
        restarts,
        requests: *requests,
    })
}

/// The longest file a file system can hold (`off_t` is a signed 64-bit offset): an announced
/// length above it is not a length this download can ever reach.
const MAX_FILE_BYTES: u64 = i64::MAX as u64;

/// What to do with an answer.
enum Answer {
    /// Append to the partial file; `total` is the announced complete size.
    Append { total: Option<u64> },
    /// The server sent the whole export: truncate and start over.
    Restart { total: Option<u64> },
}

impl Answer {
    fn total(&self) -> Option<u64> {
        match self {
            Answer::Append { total } | Answer::Restart { total } => *total,
        }
    }
}

/// Checks status, `Content-Range` and `Content-Length` of an answer to a request for
/// `bytes={offset}-` (or no `Range` for offset 0). Every number in them comes from the server,
/// so all arithmetic on them is checked: a value near `u64::MAX` is an error naming it, never a
/// wrapped length.
fn check_answer(
    ctx: &Ctx<'_>,
    status: u16,
    content_length: Option<u64>,
    content_range: Option<&str>,
    offset: u64,
) -> Result<Answer, DownloadError> {
    let bad_range = |problem: String| DownloadError::ContentRange {
        subject: ctx.subject.clone(),
        offset,
        problem,
    };
    let bad_length = |problem: String| DownloadError::BadLength {
        subject: ctx.subject.clone(),
        offset,
        problem,
    };
    if let Some(len) = content_length
        && len > MAX_FILE_BYTES
    {
        return Err(bad_length(format!(
            "HTTP {status} with Content-Length {len}, more than any file can hold ({MAX_FILE_BYTES} bytes)"
        )));
    }
    match status {
        200 if offset == 0 => Ok(Answer::Append {
            total: content_length,
        }),
        200 => Ok(Answer::Restart {
            total: content_length,
        }),
        206 => {
            let Some(raw) = content_range else {
                return Err(bad_range(
                    "HTTP 206 without a Content-Range header".to_owned(),
                ));
            };
            let range = ContentRange::check(raw)
                .map_err(|why| bad_range(format!("malformed Content-Range `{raw}`: {why}")))?;
            if range.start != offset {
                return Err(bad_range(format!(
                    "Content-Range `{raw}` starts at byte {} instead of {offset}",
                    range.start
                )));
            }
            let end = range.end_exclusive();
            if let Some(total) = range.total
                && end != total
            {
                return Err(bad_range(format!(
                    "Content-Range `{raw}` ends before the end of the export ({total} bytes)"
                )));
            }
            let total = range.total.unwrap_or(end);
            if total > MAX_FILE_BYTES {
                return Err(bad_range(format!(
                    "Content-Range `{raw}` announces {total} bytes, more than any file can hold ({MAX_FILE_BYTES} bytes)"
                )));
            }
            let piece = range.len();
            if let Some(len) = content_length
                && len != piece
            {
                return Err(bad_range(format!(
                    "Content-Range `{raw}` announces {piece} bytes but Content-Length is {len}"
                )));
            }
            Ok(Answer::Append { total: Some(total) })
        }
        416 => Err(DownloadError::RangeNotSatisfiable {
            subject: ctx.subject.clone(),
            offset,
        }),
        other => Err(DownloadError::Status {
            subject: ctx.subject.clone(),
            status: other,
        }),
    }
}

/// How the body loop ended.
enum End {
    Eof,
    Failed(DownloadError),
}

/// Streams the body into the partial file through the hashing/writing [`Pipeline`]. Returns the
/// sink after the final checkpoint at a clean end of the body; on a broken body or an idle stall
/// makes what arrived durable, records it, and returns the error.
async fn stream_body<P: ProgressStore>(
    ctx: &Ctx<'_>,
    progress: &P,
    sink: Sink,
    mut body: BodyStream,
    first: Option<Result<bytes::Bytes, io::Error>>,
    expected: Option<u64>,
) -> Result<Sink, DownloadError> {
    let opts = ctx.opts;
    let Sink {
        file,
        hasher,
        written,
    } = sink;
    let partial = ctx.partial.clone();
    let direct = opts.direct_io;
    let pipe = blocking(move || Pipeline::start(&partial, file, hasher, written, direct))
        .await
        .map_err(ctx.io_err("start writing"))?;
    let mut feed = Feed {
        ctx,
        progress,
        pipe,
        expected,
        free: Vec::new(),
        made: 0,
        since_sync: 0,
        synced_at: Instant::now(),
    };
    let outcome = read_body(ctx, &mut feed, &mut body, first, written).await;
    // Stop reading; make what arrived durable and record it, then report how the body ended.
    drop(body);
    let finished = match outcome {
        Ok((end, last)) => feed.finish(last).await.map(|sink| (end, sink)),
        Err(err) => Err(err),
    };
    match finished {
        Ok((End::Eof, sink)) => Ok(sink),
        Ok((End::Failed(err), _)) => Err(err),
        Err(err) => {
            // Let the threads stop before the caller can start another attempt on the file.
            feed.abort().await;
            Err(err)
        }
    }
}

/// Reads the body into batches until it ends, breaks or stalls; returns how it ended and the
/// last, partly filled batch. `Err` is a failure of the pipeline or of the progress store.
async fn read_body<P: ProgressStore>(
    ctx: &Ctx<'_>,
    feed: &mut Feed<'_, P>,
    body: &mut BodyStream,
    first: Option<Result<bytes::Bytes, io::Error>>,
    written: u64,
) -> Result<(End, Batch), DownloadError> {
    let opts = ctx.opts;
    let mut batch = feed.next_batch(written).await?;
    let mut received = written;
    let mut item = first;
    loop {
        match item.take() {
            None => return Ok((End::Eof, batch)),
            Some(Err(source)) => {
                let err = DownloadError::Body {
                    subject: ctx.subject.clone(),
                    offset: received,
                    source,
                };
                return Ok((End::Failed(err), batch));
            }
            Some(Ok(chunk)) => {
                received += chunk.len() as u64;
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let took = batch.push(rest);
                    rest = &rest[took..];
                    if batch.room() == 0 {
                        batch = feed.dispatch(batch, false).await?;
                    }
                }
                // Time-based checkpoint: a slow stream must not wait for a full batch.
                if !batch.is_empty() && feed.synced_at.elapsed() >= opts.checkpoint_interval {
                    batch = feed.dispatch(batch, true).await?;
                }
            }
        }
        item = match tokio::time::timeout(opts.idle_timeout, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                let err = DownloadError::IdleTimeout {
                    subject: ctx.subject.clone(),
                    offset: received,
                    after: opts.idle_timeout,
                };
                return Ok((End::Failed(err), batch));
            }
        };
    }
}

/// The async side of a running [`Pipeline`]: hands batches on, recycles buffers, decides the
/// checkpoints and records them once the writing thread reports them durable.
struct Feed<'a, P> {
    ctx: &'a Ctx<'a>,
    progress: &'a P,
    pipe: Pipeline,
    expected: Option<u64>,
    /// Buffers back from the writing thread.
    free: Vec<Batch>,
    /// Buffers allocated so far (at most [`POOL`]).
    made: usize,
    /// Bytes handed on since the last batch marked for `fdatasync`.
    since_sync: u64,
    /// When the last batch was marked for `fdatasync`.
    synced_at: Instant,
}

impl<P: ProgressStore> Feed<'_, P> {
    /// An empty buffer positioned at `offset`: a recycled one, a new one while fewer than
    /// [`POOL`] exist, or the next one the writing thread frees.
    async fn next_batch(&mut self, offset: u64) -> Result<Batch, DownloadError> {
        while let Some(event) = self.pipe.ready_event() {
            self.handle(event).await?;
        }
        loop {
            if let Some(mut batch) = self.free.pop() {
                batch.reset(offset);
                return Ok(batch);
            }
            if self.made < POOL {
                self.made += 1;
                // No bigger than what is left of an announced length: a 1 MiB export needs
                // one 1 MiB buffer, not four of `batch_bytes` (zeroing them was a measurable
                // share of a mass export's CPU). A body longer than announced still fits, in
                // more batches.
                let left = self
                    .expected
                    .map_or(u64::MAX, |total| total.saturating_sub(offset));
                let cap = usize::try_from(left).map_or(self.ctx.opts.batch_bytes, |left| {
                    left.min(self.ctx.opts.batch_bytes)
                });
                let mut batch = Batch::new(cap);
                batch.reset(offset);
                return Ok(batch);
            }
            let event = self.pipe.next_event().await;
            self.handle_or_stopped(event).await?;
        }
    }

    /// Hands `batch` on (marked for `fdatasync` when `sync` or a checkpoint is due) and returns
    /// the next empty buffer.
    async fn dispatch(&mut self, mut batch: Batch, sync: bool) -> Result<Batch, DownloadError> {
        let opts = self.ctx.opts;
        self.since_sync += batch.len() as u64;
        if sync
            || self.since_sync >= opts.checkpoint_bytes
            || self.synced_at.elapsed() >= opts.checkpoint_interval
        {
            batch.mark_sync();
            self.since_sync = 0;
            self.synced_at = Instant::now();
        }
        let end = batch.end();
        if self.pipe.send(batch).is_err() {
            return Err(self.stopped().await);
        }
        self.next_batch(end).await
    }

    /// Hands on the last (possibly empty) batch with a final `fdatasync`, waits for the threads
    /// to drain, and returns the sink.
    async fn finish(&mut self, mut last: Batch) -> Result<Sink, DownloadError> {
        last.mark_sync();
        if self.pipe.send(last).is_err() {
            return Err(self.stopped().await);
        }
        self.pipe.close();
        loop {
            match self.pipe.next_event().await {
                Some(Event::Finished(Ok(done))) => {
                    return Ok(Sink {
                        file: done.file,
                        hasher: done.hasher,
                        written: done.written,
                    });
                }
                other => self.handle_or_stopped(other).await?,
            }
        }
    }

    /// Closes the input and waits until the writing thread has ended, recording nothing more
    /// (after an error the caller reports; progress already recorded stays valid).
    async fn abort(&mut self) {
        self.pipe.close();
        while let Some(event) = self.pipe.next_event().await {
            if matches!(event, Event::Finished(_)) {
                break;
            }
        }
    }

    /// The error that stopped the pipeline (it reports it before its threads end).
    async fn stopped(&mut self) -> DownloadError {
        loop {
            let event = self.pipe.next_event().await;
            if let Err(err) = self.handle_or_stopped(event).await {
                return err;
            }
        }
    }

    async fn handle_or_stopped(&mut self, event: Option<Event>) -> Result<(), DownloadError> {
        match event {
            Some(event) => self.handle(event).await,
            None => Err(DownloadError::Io {
                path: self.ctx.partial.clone(),
                action: "write",
                source: io::Error::other("the writing thread stopped unexpectedly"),
            }),
        }
    }

    /// Recycles a buffer, records a durable checkpoint, or turns the end of the pipeline into
    /// an error (a clean end is only expected by [`Feed::finish`]).
    async fn handle(&mut self, event: Event) -> Result<(), DownloadError> {
        match event {
            Event::Free(batch) => {
                self.free.push(batch);
                Ok(())
            }
            Event::Durable { bytes, state } => self
                .progress
                .record_durable(bytes, &state, self.expected)
                .await
                .map_err(self.ctx.progress_err("record")),
            Event::Finished(Err(failure)) => Err(write_error(
                self.ctx,
                failure.written,
                failure.error,
                self.expected,
            )),
            Event::Finished(Ok(_)) => Err(DownloadError::Io {
                path: self.ctx.partial.clone(),
                action: "write",
                source: io::Error::other("the writing thread ended before the body"),
            }),
        }
    }
}

/// Turns a failed write into the right error: a full disk is retryable and says how much
/// space is missing.
fn write_error(
    ctx: &Ctx<'_>,
    written: u64,
    error: io::Error,
    expected: Option<u64>,
) -> DownloadError {
    if is_disk_full(&error) {
        DownloadError::DiskFull {
            path: ctx.partial.clone(),
            written,
            needed: expected.map(|t| t.saturating_sub(written)),
            available: space::available_bytes(&ctx.partial).ok(),
        }
    } else {
        DownloadError::Io {
            path: ctx.partial.clone(),
            action: "write",
            source: error,
        }
    }
}

/// ENOSPC or EDQUOT.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Opens (or creates) the partial file at the durable offset and restores the hasher.
/// Returns the reason when the download has to start over.
fn prepare_partial(partial: &Path, cp: &Checkpoint) -> io::Result<(Sink, Option<RestartReason>)> {
    if let Some(dir) = partial.parent() {
        create_private_dir(dir)?;
    }
    let mut open = OpenOptions::new();
    open.read(true)
        .write(true)
        .mode(0o600)
        // Never follow a symlink planted where the partial file goes.
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    let (mut file, found) = match open.open(partial) {
        Ok(file) => {
            let len = file.metadata()?.len();
            (file, Some(len))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let file = open.create(true).open(partial)?;
            // Make the new directory entry durable before progress can point at it.
            if let Some(dir) = partial.parent() {
                File::open(dir)?.sync_all()?;
            }
            (file, None)
        }
        Err(e) => return Err(e),
    };
    let durable = cp.bytes_durable;
    let restart = match found {
        None if durable > 0 => Some(RestartReason::PartialMissing { durable }),
        Some(len) if len < durable => Some(RestartReason::PartialShort {
            durable,
            found: len,
        }),
        _ => None,
    };
    let keep = if restart.is_some() { 0 } else { durable };
    // Drop any tail that was written but never recorded as durable.
    file.set_len(keep)?;
    file.seek(SeekFrom::Start(keep))?;
    let hasher = if keep == 0 {
        Sha256::new()
    } else {
        match cp.hasher_state.as_deref().and_then(restore_hasher) {
            Some(h) => h,
            None => {
                tracing::warn!(
                    path = %partial.display(),
                    bytes = keep,
                    "no usable hasher state recorded; re-hashing the partial file"
                );
                hash_file_prefix(partial, keep)?
            }
        }
    };
    Ok((
        Sink {
            file,
            hasher,
            written: keep,
        },
        restart,
    ))
}

fn truncate_to_zero(mut sink: Sink) -> io::Result<Sink> {
    sink.file.set_len(0)?;
    sink.file.seek(SeekFrom::Start(0))?;
    sink.hasher = Sha256::new();
    sink.written = 0;
    Ok(sink)
}

/// Runs blocking file work off the async threads; a panic in it becomes an I/O error.
async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::ErrorClass;

    fn ctx(opts: &DownloadOptions) -> Ctx<'_> {
        Ctx {
            subject: "export of alice@contoso.com".into(),
            partial: PathBuf::from("/exports/a.pst.partial"),
            opts,
        }
    }

    fn answer(
        status: u16,
        length: Option<u64>,
        range: Option<&str>,
        offset: u64,
    ) -> Result<Option<u64>, DownloadError> {
        let opts = DownloadOptions::default();
        check_answer(&ctx(&opts), status, length, range, offset).map(|a| a.total())
    }

    /// Server-supplied numbers near `u64::MAX`, ranges that do not match the request, and
    /// lengths no file can have are errors naming the value, of a class the run engine can act
    /// on; none of them panics, wraps or turns into a length the body is then held against.
    #[test]
    fn hostile_ranges_and_lengths_are_named_errors_never_overflows() {
        let max = u64::MAX;
        let big = MAX_FILE_BYTES + 1;
        // (status, Content-Length, Content-Range, requested offset, what the message says)
        type Case = (u16, Option<u64>, Option<String>, u64, &'static str);
        let cases: Vec<Case> = vec![
            // `last + 1` and `last - first + 1` would overflow.
            (
                206,
                None,
                Some(format!("bytes 0-{max}/*")),
                0,
                "past the end of any possible file",
            ),
            (
                206,
                Some(1),
                Some(format!("bytes 0-{max}/*")),
                0,
                "past the end of any possible file",
            ),
            (
                206,
                None,
                Some(format!("bytes 100-{max}/*")),
                100,
                "past the end of any possible file",
            ),
            // Parses, but no file is that long.
            (
                206,
                None,
                Some(format!("bytes 100-{}/{max}", max - 1)),
                100,
                "more than any file can hold",
            ),
            (
                206,
                None,
                Some(format!("bytes 100-{}/*", big - 1)),
                100,
                "more than any file can hold",
            ),
            (200, Some(max), None, 0, "more than any file can hold"),
            (200, Some(big), None, 100, "more than any file can hold"),
            (
                206,
                Some(big),
                Some("bytes 100-199/200".into()),
                100,
                "more than any file can hold",
            ),
            // first > last, last >= total, not numbers.
            (
                206,
                None,
                Some("bytes 200-100/1000".into()),
                200,
                "before the first 200",
            ),
            (
                206,
                None,
                Some("bytes 100-1000/1000".into()),
                100,
                "not below the complete length 1000",
            ),
            (
                206,
                None,
                Some("bytes 100-999/18446744073709551616".into()),
                100,
                "not a number below 2^64",
            ),
            (
                206,
                None,
                Some("bytes 100--5/1000".into()),
                100,
                "not a number below 2^64",
            ),
            (
                206,
                None,
                Some("bytes */1000".into()),
                100,
                "names no range",
            ),
            // Ranges that do not match the request.
            (
                206,
                None,
                Some("bytes 101-999/1000".into()),
                100,
                "starts at byte 101 instead of 100",
            ),
            (
                206,
                None,
                Some("bytes 0-999/1000".into()),
                100,
                "starts at byte 0 instead of 100",
            ),
            (
                206,
                None,
                Some("bytes 100-998/1000".into()),
                100,
                "ends before the end of the export",
            ),
            (
                206,
                Some(899),
                Some("bytes 100-999/1000".into()),
                100,
                "announces 900 bytes but Content-Length is 899",
            ),
            (206, None, None, 100, "without a Content-Range"),
        ];
        for (status, length, range, offset, want) in cases {
            let err = answer(status, length, range.as_deref(), offset).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(
                    err,
                    DownloadError::ContentRange { .. } | DownloadError::BadLength { .. }
                ),
                "{range:?}: {msg}"
            );
            assert!(msg.contains(want), "{range:?}: {msg}");
            assert!(msg.contains("alice@contoso.com"), "{msg}");
            if let Some(raw) = &range
                && status == 206
                && matches!(err, DownloadError::ContentRange { .. })
            {
                assert!(msg.contains(raw.as_str()), "names the value: {msg}");
            }
            assert_eq!(err.class(), ErrorClass::Permanent, "{msg}");
            assert!(!err.resumable_now(), "{msg}");
        }
    }

    #[test]
    fn sound_answers_give_the_total() {
        let last = MAX_FILE_BYTES - 1;
        assert_eq!(answer(200, Some(1000), None, 0).unwrap(), Some(1000));
        assert_eq!(answer(200, None, None, 0).unwrap(), None);
        assert_eq!(answer(200, Some(1000), None, 100).unwrap(), Some(1000));
        assert_eq!(
            answer(206, Some(900), Some("bytes 100-999/1000"), 100).unwrap(),
            Some(1000)
        );
        assert_eq!(
            answer(206, None, Some("bytes 100-999/*"), 100).unwrap(),
            Some(1000)
        );
        // The largest length a file can have is still one.
        assert_eq!(
            answer(206, None, Some(&format!("bytes 100-{last}/*")), 100).unwrap(),
            Some(MAX_FILE_BYTES)
        );
        assert!(matches!(
            answer(416, None, None, 100),
            Err(DownloadError::RangeNotSatisfiable { offset: 100, .. })
        ));
    }

    /// The export changed on the server: retryable (a download from byte 0 may work), but not
    /// resumed inside the same call, so the step records it.
    #[test]
    fn a_changed_export_is_retryable_by_the_run_engine() {
        let err = DownloadError::ExportChanged {
            subject: "export of alice@contoso.com".into(),
            offset: 300_000,
            known: 900_000,
            announced: 500_000,
            answer: "HTTP 200 with Content-Length 500000".into(),
        };
        assert_eq!(err.class(), ErrorClass::Retryable);
        assert!(!err.resumable_now());
        let msg = err.to_string();
        for part in [
            "alice@contoso.com",
            "900000 bytes when the download started",
            "`Range: bytes=300000-`",
            "HTTP 200 with Content-Length 500000",
            "announces 500000",
            "starts over from byte 0",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
    }
}
