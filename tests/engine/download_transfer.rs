//! Downloads (the transfer and the publisher) against real HTTP on loopback (phase A of
//! issue 5).
//!
//! A small HTTP/1.1 server in this file serves deterministic export bytes with `Range`/206 and
//! injects the faults the transfer must survive or report: dropped connections at chosen offsets,
//! a server that ignores `Range`, a wrong `Content-Range`, a cleanly truncated body, 416, stalls
//! and a slow first byte. Durable progress goes to a small in-memory recorder; the real store and
//! the real simulator replace both in phase B.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::{StreamExt, TryStreamExt};
use rand::{Rng, SeedableRng};
use reqwest::header::{self, HeaderValue};
use restorectl::download::{
    ByteSource, Checkpoint, DownloadError, DownloadOptions, ErrorClass, ManifestInfo, OpenedBody,
    ProgressError, ProgressStore, Published, RestartReason, SafePath, SourceError, download,
    resolve_inside,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Test server

/// What the server does with the next requests.
#[derive(Default)]
struct Plan {
    /// Absolute offsets at which to drop the connection, one per request, ascending.
    drops: VecDeque<u64>,
    /// Answer every request with 200 and the whole body.
    ignore_range: bool,
    /// Answer range requests with a `Content-Range` that starts one byte late.
    wrong_content_range: bool,
    /// Claim the whole range but end the (chunked) body cleanly at this offset.
    truncate_at: Option<u64>,
    /// Answer 416.
    range_not_satisfiable: bool,
    /// Stall once for the duration before sending the byte at this offset.
    stall: Option<(u64, Duration)>,
    /// Wait this long before sending the status line (once).
    header_delay: Option<Duration>,
}

#[derive(Clone)]
struct Server {
    data: Arc<Vec<u8>>,
    plan: Arc<Mutex<Plan>>,
    /// The `Range` header of every request, in order.
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

const CHUNK: usize = 16 * 1024;

/// Serves one request per connection. Raw HTTP/1.1 rather than axum: a hyper server throws away
/// body bytes still in its write buffer when the body stream fails, so "drop after exactly N
/// bytes" needs a server that writes the bytes itself and then closes the socket.
async fn serve_connection(s: Server, mut conn: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body_len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut request_body = vec![0u8; body_len];
    conn.read_exact(&mut request_body).await?;
    let range = header("range");
    s.ranges.lock().unwrap().push(range.clone());

    let total = s.data.len() as u64;
    let requested = requested_start(range.as_deref());
    let (header_delay, drop_at, stall, ignore, wrong, truncate, refuse) = {
        let mut p = s.plan.lock().unwrap();
        let drop_at = match p.drops.front() {
            Some(&d) if d >= requested => p.drops.pop_front(),
            _ => None,
        };
        (
            p.header_delay.take(),
            drop_at,
            p.stall.take(),
            p.ignore_range,
            p.wrong_content_range,
            p.truncate_at,
            p.range_not_satisfiable,
        )
    };
    if let Some(d) = header_delay {
        tokio::time::sleep(d).await;
    }
    if refuse {
        let resp = format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */{total}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        return conn.write_all(resp.as_bytes()).await;
    }
    let start = if ignore { 0 } else { requested };
    let mut resp = String::new();
    if range.is_some() && !ignore {
        let shown = if wrong { start + 1 } else { start };
        resp.push_str("HTTP/1.1 206 Partial Content\r\n");
        resp.push_str(&format!(
            "content-range: bytes {shown}-{}/{total}\r\n",
            total - 1
        ));
    } else if truncate.is_some() {
        // A truncated answer claims the full range so the client knows the length.
        resp.push_str("HTTP/1.1 206 Partial Content\r\n");
        resp.push_str(&format!("content-range: bytes 0-{}/{total}\r\n", total - 1));
    } else {
        resp.push_str("HTTP/1.1 200 OK\r\n");
    }
    let chunked = truncate.is_some();
    if chunked {
        resp.push_str("transfer-encoding: chunked\r\n");
    } else {
        resp.push_str(&format!("content-length: {}\r\n", total - start));
    }
    resp.push_str("content-type: application/octet-stream\r\nconnection: close\r\n\r\n");
    conn.write_all(resp.as_bytes()).await?;
    let end = match (drop_at, truncate) {
        (Some(d), _) => d.min(total),
        (None, Some(t)) => t.min(total),
        (None, None) => total,
    };
    let mut pos = start;
    let mut stall = stall;
    while pos < end {
        let mut stop = end;
        if let Some((at, dur)) = stall {
            if pos >= at {
                tokio::time::sleep(dur).await;
                stall = None;
            } else {
                stop = stop.min(at);
            }
        }
        let next = (pos + CHUNK as u64).min(stop);
        let piece = &s.data[pos as usize..next as usize];
        if chunked {
            conn.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            conn.write_all(piece).await?;
            conn.write_all(b"\r\n").await?;
        } else {
            conn.write_all(piece).await?;
        }
        pos = next;
    }
    if chunked {
        conn.write_all(b"0\r\n\r\n").await?;
    }
    // Dropping the socket closes it: after a drop the client sees EOF before Content-Length.
    conn.flush().await
}

fn requested_start(range: Option<&str>) -> u64 {
    range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn start_server(data: Vec<u8>) -> (String, Server) {
    let server = Server {
        data: Arc::new(data),
        plan: Arc::new(Mutex::new(Plan::default())),
        ranges: Arc::new(Mutex::new(Vec::new())),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let _ = serve_connection(s, conn).await;
            });
        }
    });
    (format!("http://{addr}/export"), server)
}

/// Deterministic PST-looking bytes: the `!BDN` magic, then a pattern.
fn pst_bytes(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    v[..4].copy_from_slice(b"!BDN");
    v
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------------
// Byte source over HTTP and an in-memory progress recorder (phase A stand-ins)

struct HttpSource {
    client: reqwest::Client,
    url: String,
}

impl HttpSource {
    fn new(url: &str) -> Self {
        HttpSource {
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            url: url.to_owned(),
        }
    }
}

impl ByteSource for HttpSource {
    fn describe(&self) -> String {
        format!("export from {}", self.url)
    }

    async fn open(&self, range_start: Option<u64>) -> Result<OpenedBody, SourceError> {
        let mut req = self
            .client
            .post(&self.url)
            .header(header::ACCEPT, "application/octet-stream");
        if let Some(n) = range_start {
            req = req.header(header::RANGE, format!("bytes={n}-"));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SourceError::retryable(format!("POST {}", self.url)).with_source(e))?;
        let header_u64 = |h: Option<&HeaderValue>| {
            h.and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Ok(OpenedBody {
            status: resp.status().as_u16(),
            content_length: header_u64(resp.headers().get(header::CONTENT_LENGTH)),
            content_range: resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: resp.bytes_stream().map_err(std::io::Error::other).boxed(),
        })
    }
}

#[derive(Default)]
struct MemoryProgress {
    cp: Mutex<Option<Checkpoint>>,
    restarts: Mutex<Vec<RestartReason>>,
    durable_records: Mutex<u32>,
    published: Mutex<Option<Published>>,
}

impl ProgressStore for MemoryProgress {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressError> {
        Ok(self.cp.lock().unwrap().clone())
    }

    async fn record_durable(
        &self,
        bytes_durable: u64,
        hasher_state: &[u8],
        expected_bytes: Option<u64>,
    ) -> Result<(), ProgressError> {
        *self.durable_records.lock().unwrap() += 1;
        let mut cp = self.cp.lock().unwrap();
        let cp = cp.get_or_insert_with(Checkpoint::default);
        cp.bytes_durable = bytes_durable;
        cp.hasher_state = Some(hasher_state.to_vec());
        cp.expected_bytes = expected_bytes;
        Ok(())
    }

    async fn record_resume(&self, offset: u64) -> Result<(), ProgressError> {
        self.cp
            .lock()
            .unwrap()
            .get_or_insert_with(Checkpoint::default)
            .resumed_from
            .push(offset);
        Ok(())
    }

    async fn record_restart(&self, reason: &RestartReason) -> Result<(), ProgressError> {
        self.restarts.lock().unwrap().push(reason.clone());
        let mut cp = self.cp.lock().unwrap();
        let cp = cp.get_or_insert_with(Checkpoint::default);
        cp.bytes_durable = 0;
        cp.hasher_state = None;
        cp.expected_bytes = None;
        cp.restarts += 1;
        Ok(())
    }

    async fn mark_published(&self, published: &Published) -> Result<(), ProgressError> {
        *self.published.lock().unwrap() = Some(published.clone());
        Ok(())
    }
}

fn fast_options() -> DownloadOptions {
    DownloadOptions {
        first_byte_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        checkpoint_bytes: 256 * 1024,
        checkpoint_interval: Duration::from_secs(5),
        max_immediate_resumes: 3,
        resume_min_delay: Duration::from_millis(1),
        resume_max_delay: Duration::from_millis(5),
        batch_bytes: 64 * 1024,
        direct_io: true,
    }
}

fn info() -> ManifestInfo {
    ManifestInfo {
        job: "legal-hold".into(),
        run: "0190f3c2-0000-7000-8000-000000000001".into(),
        step: 7,
        kind: "ExportPst".into(),
        server: "primary".into(),
        organization: "contoso.onmicrosoft.com".into(),
        mailbox: "alice@contoso.com".into(),
        mailbox_id: "2f6c8d9e-0000-4000-8000-000000000001".into(),
        point_in_time: "2026-01-04T02:00:00Z".into(),
        restore_session_id: "5b1f0a3c-0000-4000-8000-000000000002".into(),
        keyword: None,
        pst_size_limit_bytes: Some(10 * (1 << 30)),
        started_at: Utc::now(),
        restore_point_id: None,
        backup_time: None,
        attempts: 1,
        job_file: "jobs/legal.yaml".into(),
        job_spec_hash: "ab".repeat(32),
    }
}

fn target(root: &Path, rel: &str) -> SafePath {
    resolve_inside(root, Path::new(rel)).unwrap()
}

/// Calls [`download`] like the run engine would: again after each retryable failure.
async fn download_until_done(
    source: &HttpSource,
    progress: &MemoryProgress,
    target: &SafePath,
    opts: &DownloadOptions,
) -> Published {
    for _ in 0..50 {
        match download(source, progress, target, None, info(), opts).await {
            Ok(p) => return p,
            Err(e) if e.class() == ErrorClass::Retryable => continue,
            Err(e) => panic!("permanent failure: {e}"),
        }
    }
    panic!("no success after 50 calls");
}

// ---------------------------------------------------------------------------------------------
// Tests

/// 25 drops at random offsets (plus 0, 1 byte, a page boundary and the last byte) still end in
/// one published file with the right digest, every resume offset recorded in the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_resume_to_the_exact_digest() {
    let len = 3 * 1024 * 1024 + 123;
    let data = pst_bytes(len);
    let digest = sha256_hex(&data);
    let (url, server) = start_server(data).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut drops: Vec<u64> = vec![0, 1, 4096, len as u64 - 1];
    while drops.len() < 25 {
        let d = rng.random_range(2..len as u64 - 1);
        if !drops.contains(&d) {
            drops.push(d);
        }
    }
    drops.sort_unstable();
    server.plan.lock().unwrap().drops = drops.iter().copied().collect();

    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "legal-hold/2026-01-04/alice@contoso.com.pst");
    let progress = MemoryProgress::default();
    let source = HttpSource::new(&url);
    let published = download_until_done(&source, &progress, &t, &fast_options()).await;

    let bytes = std::fs::read(&published.path).unwrap();
    assert_eq!(sha256_hex(&bytes), digest);
    assert_eq!(published.manifest.sha256, digest);
    assert_eq!(published.manifest.bytes, len as u64);
    // Every drop after byte 0 became a resume from exactly that offset.
    let expected_resumes: Vec<u64> = drops.iter().copied().filter(|&d| d > 0).collect();
    assert_eq!(published.manifest.resumed_from, expected_resumes);
    assert_eq!(published.manifest.restarts, 0);
    // The server saw a Range request for each resume and none for the first two requests.
    let ranges = server.ranges.lock().unwrap().clone();
    assert_eq!(ranges[0], None);
    assert_eq!(ranges[1], None);
    assert_eq!(
        ranges.last().unwrap().as_deref(),
        Some(format!("bytes={}-", len - 1).as_str())
    );
    assert!(!t.partial_path().exists());
    // Checkpoints happened along the way, not only at the drops.
    assert!(*progress.durable_records.lock().unwrap() > 25);
    assert!(progress.published.lock().unwrap().is_some());
}

/// The published file and manifest carry every SPEC §7 field, are 0600, and the directories
/// created for them are 0700.
#[tokio::test]
async fn manifest_has_every_field_and_modes_are_private() {
    let data = pst_bytes(200_000);
    let digest = sha256_hex(&data);
    let (url, _server) = start_server(data).await;
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "job/run-1/alice.pst");
    let progress = MemoryProgress::default();
    let p = download(
        &HttpSource::new(&url),
        &progress,
        &t,
        Some(1),
        info(),
        &fast_options(),
    )
    .await
    .unwrap();
    assert!(p.path.ends_with("job/run-1/alice.pst"));
    assert_eq!(p.relative, Path::new("job/run-1/alice.pst"));
    let text = std::fs::read_to_string(&p.manifest_path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for field in [
        "job",
        "run",
        "step",
        "kind",
        "server",
        "organization",
        "mailbox",
        "mailboxId",
        "pointInTime",
        "restoreSessionId",
        "keyword",
        "pstSizeLimitBytes",
        "file",
        "format",
        "bytes",
        "sha256",
        "startedAt",
        "finishedAt",
        "attempts",
        "resumedFrom",
        "restorectlVersion",
        "jobFile",
        "jobSpecHash",
    ] {
        assert!(json.get(field).is_some(), "manifest lacks {field}: {text}");
    }
    assert_eq!(json["format"], "pst");
    assert_eq!(json["sha256"], digest.as_str());
    assert_eq!(json["file"], "job/run-1/alice.pst");
    assert_eq!(json["resumedFrom"], serde_json::json!([]));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&p.path), 0o600);
    assert_eq!(mode(&p.manifest_path), 0o600);
    assert_eq!(mode(&root.path().join("job")), 0o700);
    assert_eq!(mode(&root.path().join("job/run-1")), 0o700);
    // No temp or partial files are left behind.
    let names: Vec<String> = std::fs::read_dir(root.path().join("job/run-1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A server that ignores `Range` after a drop makes the transfer truncate and start over, and the
/// restart is recorded.
#[tokio::test]
async fn server_ignoring_range_restarts_from_zero() {
    let data = pst_bytes(1_000_000);
    let digest = sha256_hex(&data);
    let (url, server) = start_server(data).await;
    server.plan.lock().unwrap().drops = [400_000].into();
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let progress = MemoryProgress::default();
    let source = HttpSource::new(&url);
    let mut opts = fast_options();
    opts.max_immediate_resumes = 0;
    let err = download(&source, &progress, &t, None, info(), &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::ResumesExhausted { .. }),
        "{err}"
    );
    assert_eq!(
        progress.cp.lock().unwrap().as_ref().unwrap().bytes_durable,
        400_000
    );

    server.plan.lock().unwrap().ignore_range = true;
    let p = download(&source, &progress, &t, None, info(), &opts)
        .await
        .unwrap();
    assert_eq!(sha256_hex(&std::fs::read(&p.path).unwrap()), digest);
    assert_eq!(p.manifest.restarts, 1);
    assert_eq!(p.manifest.resumed_from, vec![400_000]);
    assert_eq!(
        progress.restarts.lock().unwrap().clone(),
        vec![RestartReason::RangeIgnored { offset: 400_000 }]
    );
    assert_eq!(
        server.ranges.lock().unwrap().clone(),
        vec![None, Some("bytes=400000-".to_owned())]
    );
}

/// A 206 whose `Content-Range` does not start at the requested offset is an error naming it.
#[tokio::test]
async fn wrong_content_range_is_an_error_naming_it() {
    let data = pst_bytes(500_000);
    let (url, server) = start_server(data).await;
    {
        let mut p = server.plan.lock().unwrap();
        p.drops = [100_000].into();
        p.wrong_content_range = true;
    }
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let progress = MemoryProgress::default();
    let err = download(
        &HttpSource::new(&url),
        &progress,
        &t,
        None,
        info(),
        &fast_options(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::ContentRange { .. }), "{msg}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        msg.contains("Content-Range `bytes 100001-499999/500000`") && msg.contains("100000"),
        "{msg}"
    );
    assert!(!t.absolute().exists());
}

/// A body that ends cleanly before the announced length is caught by the length check and
/// nothing is published.
#[tokio::test]
async fn truncated_body_is_detected_and_not_published() {
    let data = pst_bytes(300_000);
    let (url, server) = start_server(data).await;
    server.plan.lock().unwrap().truncate_at = Some(123_456);
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let progress = MemoryProgress::default();
    let err = download(
        &HttpSource::new(&url),
        &progress,
        &t,
        None,
        info(),
        &fast_options(),
    )
    .await
    .unwrap_err();
    match &err {
        DownloadError::LengthMismatch {
            expected, received, ..
        } => {
            assert_eq!((*expected, *received), (300_000, 123_456));
        }
        other => panic!("expected a length mismatch, got {other}"),
    }
    assert!(err.to_string().contains("not published"));
    assert!(!t.absolute().exists());
    assert!(!t.manifest_path().exists());
    assert!(progress.published.lock().unwrap().is_none());
}

/// 416 on a resume is an error that says so.
#[tokio::test]
async fn range_not_satisfiable_is_an_error() {
    let data = pst_bytes(200_000);
    let (url, server) = start_server(data).await;
    server.plan.lock().unwrap().drops = [50_000].into();
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let progress = MemoryProgress::default();
    let source = HttpSource::new(&url);
    let mut opts = fast_options();
    opts.max_immediate_resumes = 0;
    assert!(
        download(&source, &progress, &t, None, info(), &opts)
            .await
            .is_err()
    );
    server.plan.lock().unwrap().range_not_satisfiable = true;
    let err = download(&source, &progress, &t, None, info(), &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::RangeNotSatisfiable { offset: 50_000, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("416"));
}

/// A ZIP answer is published with the `.zip` extension, opens as an archive, and the manifest
/// says `format: zip`.
#[tokio::test]
async fn zip_export_is_published_as_zip() {
    let mut zip_bytes = Vec::new();
    {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        let opts = zip::write::SimpleFileOptions::default();
        w.start_file("alice_1.pst", opts).unwrap();
        std::io::Write::write_all(&mut w, &pst_bytes(150_000)).unwrap();
        w.start_file("alice_2.pst", opts).unwrap();
        std::io::Write::write_all(&mut w, &pst_bytes(70_000)).unwrap();
        w.finish().unwrap();
    }
    let digest = sha256_hex(&zip_bytes);
    let (url, server) = start_server(zip_bytes).await;
    server.plan.lock().unwrap().drops = [10_000].into();
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/alice.pst");
    let progress = MemoryProgress::default();
    let p = download_until_done(&HttpSource::new(&url), &progress, &t, &fast_options()).await;
    assert!(p.path.ends_with("j/alice.zip"), "{}", p.path.display());
    assert!(p.manifest_path.ends_with("j/alice.zip.manifest.json"));
    assert_eq!(p.manifest.format, restorectl::download::Format::Zip);
    assert_eq!(p.manifest.file, "j/alice.zip");
    assert_eq!(p.manifest.sha256, digest);
    let archive = zip::ZipArchive::new(std::fs::File::open(&p.path).unwrap()).unwrap();
    assert_eq!(archive.len(), 2);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p.manifest_path).unwrap()).unwrap();
    assert_eq!(json["format"], "zip");
    assert!(!root.path().join("j/alice.pst").exists());
}

/// Bytes that are neither PST nor ZIP are not published; the error shows the first bytes.
#[tokio::test]
async fn unknown_format_is_not_published() {
    let (url, _server) = start_server(b"<html>maintenance</html>".to_vec()).await;
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let err = download(
        &HttpSource::new(&url),
        &MemoryProgress::default(),
        &t,
        None,
        info(),
        &fast_options(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::UnknownFormat { .. }), "{msg}");
    assert!(msg.contains("3c 68 74 6d (\"<htm\")"), "{msg}");
    assert!(!t.absolute().exists());
    assert!(t.partial_path().exists());
}

/// An existing final file is never overwritten.
#[tokio::test]
async fn existing_final_file_is_not_overwritten() {
    let (url, _server) = start_server(pst_bytes(10_000)).await;
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    std::fs::create_dir_all(t.absolute().parent().unwrap()).unwrap();
    std::fs::write(t.absolute(), b"!BDN precious earlier export").unwrap();
    let err = download(
        &HttpSource::new(&url),
        &MemoryProgress::default(),
        &t,
        None,
        info(),
        &fast_options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DownloadError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("{run}"));
    assert_eq!(
        std::fs::read(t.absolute()).unwrap(),
        b"!BDN precious earlier export"
    );
}

/// A crash leaves a tail beyond the durable size; the next attempt truncates it and resumes
/// from the durable offset with `Range`.
#[tokio::test]
async fn non_durable_tail_is_truncated_before_resuming() {
    let data = pst_bytes(800_000);
    let digest = sha256_hex(&data);
    let (url, server) = start_server(data).await;
    server.plan.lock().unwrap().drops = [300_000].into();
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let progress = MemoryProgress::default();
    let source = HttpSource::new(&url);
    let mut opts = fast_options();
    opts.max_immediate_resumes = 0;
    assert!(
        download(&source, &progress, &t, None, info(), &opts)
            .await
            .is_err()
    );
    // Simulate bytes written after the last checkpoint, then lost in a crash: garbage tail.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(t.partial_path())
            .unwrap();
        f.write_all(&[0xEE; 5000]).unwrap();
    }
    let p = download(&source, &progress, &t, None, info(), &opts)
        .await
        .unwrap();
    assert_eq!(sha256_hex(&std::fs::read(&p.path).unwrap()), digest);
    assert_eq!(
        server.ranges.lock().unwrap().last().unwrap().as_deref(),
        Some("bytes=300000-")
    );
}

/// Without a usable hasher state (e.g. recorded by an incompatible version) the transfer
/// re-hashes the durable prefix and still gets the right digest.
#[tokio::test]
async fn missing_hasher_state_falls_back_to_rehashing() {
    let data = pst_bytes(600_000);
    let digest = sha256_hex(&data);
    let (url, server) = start_server(data).await;
    server.plan.lock().unwrap().drops = [250_000].into();
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let progress = MemoryProgress::default();
    let source = HttpSource::new(&url);
    let mut opts = fast_options();
    opts.max_immediate_resumes = 0;
    assert!(
        download(&source, &progress, &t, None, info(), &opts)
            .await
            .is_err()
    );
    progress.cp.lock().unwrap().as_mut().unwrap().hasher_state = Some(vec![1, 2, 3]);
    let p = download(&source, &progress, &t, None, info(), &opts)
        .await
        .unwrap();
    assert_eq!(p.manifest.sha256, digest);
    assert_eq!(p.manifest.resumed_from, vec![250_000]);
}

/// A stall longer than the idle-read timeout is resumed from where the data stopped.
#[tokio::test]
async fn idle_stall_is_resumed() {
    let data = pst_bytes(400_000);
    let digest = sha256_hex(&data);
    let (url, server) = start_server(data).await;
    server.plan.lock().unwrap().stall = Some((200_000, Duration::from_secs(5)));
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let progress = MemoryProgress::default();
    let mut opts = fast_options();
    opts.idle_timeout = Duration::from_millis(300);
    let p = download_until_done(&HttpSource::new(&url), &progress, &t, &opts).await;
    assert_eq!(p.manifest.sha256, digest);
    assert!(
        p.manifest.resumed_from.contains(&200_000),
        "{:?}",
        p.manifest.resumed_from
    );
}

/// No first byte within the first-byte timeout is a retryable error, not an immediate resume
/// (the server may still be building the PST).
#[tokio::test]
async fn first_byte_timeout_is_retryable_and_not_resumed_at_once() {
    let (url, server) = start_server(pst_bytes(10_000)).await;
    server.plan.lock().unwrap().header_delay = Some(Duration::from_secs(5));
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let mut opts = fast_options();
    opts.first_byte_timeout = Duration::from_millis(200);
    let err = download(
        &HttpSource::new(&url),
        &MemoryProgress::default(),
        &t,
        None,
        info(),
        &opts,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, DownloadError::FirstByteTimeout { .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(server.ranges.lock().unwrap().len(), 1);
}

/// A required size larger than the free space fails before any request.
#[tokio::test]
async fn insufficient_space_fails_before_any_request() {
    let (url, server) = start_server(pst_bytes(10_000)).await;
    let root = tempfile::tempdir().unwrap();
    let t = target(root.path(), "j/a.pst");
    let err = download(
        &HttpSource::new(&url),
        &MemoryProgress::default(),
        &t,
        Some(u64::MAX / 2),
        info(),
        &fast_options(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, DownloadError::InsufficientSpace { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not enough free space"));
    assert!(server.ranges.lock().unwrap().is_empty());
}
