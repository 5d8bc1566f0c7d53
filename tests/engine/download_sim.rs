//! Acceptance tests of issue 5 against the real parts: the built-in VB365 simulator over HTTP on
//! loopback, restorectl's VB365 client (`ExportSource`) and the state database on a temp file
//! (`StoreProgress`). Faults come from the simulator's own injection (dropped connections,
//! ignored `Range`, expired tokens, a lost restore session).
//!
//! Cases the simulator cannot produce (a wrong `Content-Range`, a body that ends cleanly but
//! short, 416) are covered in `download_transfer.rs` with a hand-written HTTP server.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use rand::{Rng, SeedableRng};
use restorectl::download::{
    DownloadError, DownloadOptions, ErrorClass, ExportSource, Format, PathError, Published,
    StoreProgress, apply_retention, download, resolve_inside,
};
use restorectl::jobs::Retention;
use restorectl::sim::{
    CallRange, DEV_PASSWORD, DEV_USERNAME, Endpoint, ExportSpec, FaultAction, FaultRule, RangeMode,
    SimConfig, SimHandle, Simulator,
};
use restorectl::store::{DownloadState, Store};
use restorectl::vb365::{Client, ExportToPstOptions, Mailbox};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::download_support::{client_for, manifest_info, seed_step, session_and_mailbox};

const ALICE: &str = "alice@contoso.com";
const JOB: &str = "legal-hold";

fn sim_config(alice_size: u64) -> SimConfig {
    let mut config = SimConfig {
        restore_delay: Duration::from_millis(50),
        export_build_delay: Duration::from_millis(5),
        ..SimConfig::default()
    };
    config.export_sizes.insert(ALICE.into(), alice_size);
    config
}

fn options() -> DownloadOptions {
    DownloadOptions {
        first_byte_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        checkpoint_bytes: 256 * 1024,
        max_immediate_resumes: 3,
        resume_min_delay: Duration::from_millis(1),
        resume_max_delay: Duration::from_millis(5),
        batch_bytes: 64 * 1024,
        ..DownloadOptions::default()
    }
}

/// A simulator, a logged-in client, a restore session with Alice, and a state database.
struct World {
    sim: SimHandle,
    client: Client,
    session: Uuid,
    alice: Mailbox,
    store: Store,
    root: tempfile::TempDir,
    _dirs: Vec<tempfile::TempDir>,
}

impl World {
    async fn start(config: SimConfig) -> World {
        let sim = Simulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (client, secrets) = client_for(&sim.base_url(), DEV_USERNAME, DEV_PASSWORD);
        let (session, alice) = session_and_mailbox(&client, ALICE).await;
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path().join("restorectl.db"))
            .await
            .unwrap();
        World {
            sim,
            client,
            session,
            alice,
            store,
            root: tempfile::tempdir().unwrap(),
            _dirs: vec![secrets, state],
        }
    }

    fn source(&self, options: ExportToPstOptions) -> ExportSource {
        ExportSource::new(
            self.client.clone(),
            self.session,
            self.alice.id,
            ALICE,
            options,
            Duration::from_secs(60),
        )
    }

    fn digest(&self, pst_size_limit: Option<u64>) -> (String, u64) {
        self.sim
            .export_digest(&ExportSpec {
                mailbox_id: self.alice.id,
                keyword: None,
                point_in_time: None,
                pst_size_limit,
            })
            .unwrap()
    }

    /// Export requests seen by the simulator: their `Range` headers, in order.
    fn export_ranges(&self) -> Vec<Option<String>> {
        self.sim
            .journal()
            .into_iter()
            .filter(|e| e.path.to_ascii_lowercase().ends_with("/exporttopst"))
            .map(|e| e.range)
            .collect()
    }

    /// Downloads Alice's export to `rel` like the run engine would: a new call after each
    /// retryable failure (bounded).
    async fn export_until_done(
        &self,
        rel: &str,
        options: ExportToPstOptions,
        opts: &DownloadOptions,
    ) -> (Published, i64) {
        let target = resolve_inside(self.root.path(), Path::new(rel)).unwrap();
        let seeded = seed_step(&self.store, JOB, &self.alice, target.absolute()).await;
        let progress = StoreProgress::new(self.store.clone(), seeded.step_id);
        let source = self.source(options);
        for _ in 0..40 {
            let info = manifest_info(JOB, &seeded, &self.alice, self.session);
            match download(&source, &progress, &target, None, info, opts).await {
                Ok(p) => return (p, seeded.step_id),
                Err(e) if e.class() == ErrorClass::Retryable => continue,
                Err(e) => panic!("permanent failure: {e}"),
            }
        }
        panic!("no success after 40 calls");
    }
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn drop_rule(call: u64, bytes: u64) -> FaultRule {
    FaultRule::on(Endpoint::ExportPst, FaultAction::DropAfterBytes { bytes })
        .calls(CallRange::only(call))
}

/// Dropped at 25 offsets (0, 1 byte, a page boundary, the last byte and random ones): one
/// published file with the simulator's digest; every resume offset is in the manifest, the
/// store and the simulator's journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_at_25_offsets_resume_to_the_simulators_digest() {
    let len: u64 = 3 * 1024 * 1024 + 123;
    let w = World::start(sim_config(len)).await;
    let (digest, digest_len) = w.digest(None);
    assert_eq!(digest_len, len, "the simulator serves the configured size");

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(25);
    let mut drops: Vec<u64> = vec![0, 1, 4096, len - 1];
    while drops.len() < 25 {
        let d = rng.random_range(2..len - 1);
        if !drops.contains(&d) {
            drops.push(d);
        }
    }
    drops.sort_unstable();
    // Call k starts where call k-1 broke off, so it drops after the difference.
    let mut start = 0;
    for (k, &d) in drops.iter().enumerate() {
        w.sim.add_fault(drop_rule(k as u64 + 1, d - start)).unwrap();
        start = d;
    }

    let (published, step_id) = w
        .export_until_done(
            "legal-hold/run-1/alice@contoso.com.pst",
            ExportToPstOptions::default(),
            &options(),
        )
        .await;
    assert_eq!(sha256_file(&published.path), digest);
    assert_eq!(published.manifest.sha256, digest);
    assert_eq!(published.manifest.bytes, len);
    assert_eq!(published.manifest.format, Format::Pst);
    let resumes: Vec<u64> = drops.iter().copied().filter(|&d| d > 0).collect();
    assert_eq!(published.manifest.resumed_from, resumes);

    let ranges = w.export_ranges();
    assert_eq!(ranges.len(), 26, "{ranges:?}");
    assert_eq!(&ranges[..2], &[None, None]);
    let expected_ranges: Vec<Option<String>> = resumes
        .iter()
        .map(|d| Some(format!("bytes={d}-")))
        .collect();
    assert_eq!(&ranges[2..], &expected_ranges[..]);

    let row = w.store.get_download(step_id).await.unwrap();
    assert_eq!(row.state, DownloadState::Published);
    assert_eq!(row.resumed_from, resumes);
    assert_eq!(row.sha256.as_deref(), Some(digest.as_str()));
    let exports = w.store.list_live_exports(JOB).await.unwrap();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].path, published.path);
    assert!(!Path::new(&format!("{}.partial", published.path.display())).exists());
}

/// With a server that ignores `Range`, the resume after a drop gets the whole body again: the
/// transfer starts over, the digest is right and the restart is recorded.
#[tokio::test]
async fn server_ignoring_range_restarts_the_download() {
    let mut config = sim_config(900_000);
    config.range_mode = RangeMode::Ignore;
    config.faults.push(drop_rule(1, 300_000));
    let w = World::start(config).await;
    let (digest, _) = w.digest(None);
    let (published, step_id) = w
        .export_until_done(
            "legal-hold/run-1/alice.pst",
            ExportToPstOptions::default(),
            &options(),
        )
        .await;
    assert_eq!(sha256_file(&published.path), digest);
    assert_eq!(published.manifest.restarts, 1);
    assert_eq!(published.manifest.resumed_from, vec![300_000]);
    assert_eq!(
        w.export_ranges(),
        vec![None, Some("bytes=300000-".to_owned())]
    );
    let row = w.store.get_download(step_id).await.unwrap();
    assert_eq!(row.restarts, 1);
    let seeded_run = w.store.list_live_exports(JOB).await.unwrap()[0].run_id;
    let kinds: Vec<String> = w
        .store
        .list_run_events(seeded_run)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "download_restarted"), "{kinds:?}");
}

/// An export split by the size limit arrives as a ZIP: published as `.zip`, a valid archive of
/// PSTs, and the manifest says `format: zip`.
#[tokio::test]
async fn split_export_is_published_as_a_zip() {
    let mut config = sim_config(300_000);
    // With this scale a 1 GiB limit splits every 64 KiB.
    config.pst_split_scale = 16_384;
    config.faults.push(drop_rule(1, 70_000));
    let w = World::start(config).await;
    let limit = 1u64 << 30;
    let (digest, _) = w.digest(Some(limit));
    let (published, _) = w
        .export_until_done(
            "legal-hold/run-1/alice.pst",
            ExportToPstOptions::new(None, Some(limit)),
            &options(),
        )
        .await;
    assert!(published.path.ends_with("legal-hold/run-1/alice.zip"));
    assert!(
        published
            .manifest_path
            .ends_with("legal-hold/run-1/alice.zip.manifest.json")
    );
    assert_eq!(sha256_file(&published.path), digest);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&published.manifest_path).unwrap()).unwrap();
    assert_eq!(json["format"], "zip");
    assert_eq!(json["file"], "legal-hold/run-1/alice.zip");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&published.path).unwrap()).unwrap();
    assert!(archive.len() > 1, "split into several PSTs");
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let mut magic = [0u8; 4];
        std::io::Read::read_exact(&mut entry, &mut magic).unwrap();
        assert_eq!(&magic, b"!BDN", "entry {} is a PST", entry.name());
    }
    assert!(!w.root.path().join("legal-hold/run-1/alice.pst").exists());
}

/// Tokens expire during a long download: the resume after a drop meets a 401, the client
/// refreshes the token and the download completes.
#[tokio::test]
async fn expired_token_on_resume_is_refreshed() {
    let mut config = sim_config(500_000);
    config.faults.push(drop_rule(1, 123_456));
    config.faults.push(
        FaultRule::on(Endpoint::ExportPst, FaultAction::ExpireTokens).calls(CallRange::only(2)),
    );
    let w = World::start(config).await;
    let (digest, _) = w.digest(None);
    let (published, _) = w
        .export_until_done(
            "legal-hold/run-1/alice.pst",
            ExportToPstOptions::default(),
            &options(),
        )
        .await;
    assert_eq!(sha256_file(&published.path), digest);
    assert_eq!(published.manifest.resumed_from, vec![123_456]);
    let statuses: Vec<Option<u16>> = w
        .sim
        .journal()
        .into_iter()
        .filter(|e| e.path.to_ascii_lowercase().ends_with("/exporttopst"))
        .map(|e| e.status)
        .collect();
    assert!(statuses.contains(&Some(401)), "{statuses:?}");
}

/// The restore session disappears before a resume: the error says the session is lost, so the
/// run engine opens a new one; the partial file is kept.
#[tokio::test]
async fn lost_restore_session_is_reported_as_such() {
    let mut config = sim_config(400_000);
    config.faults.push(drop_rule(1, 100_000));
    config.faults.push(
        FaultRule::on(Endpoint::ExportPst, FaultAction::RemoveSession).calls(CallRange::only(2)),
    );
    let w = World::start(config).await;
    let target = resolve_inside(w.root.path(), Path::new("legal-hold/run-1/alice.pst")).unwrap();
    let seeded = seed_step(&w.store, JOB, &w.alice, target.absolute()).await;
    let progress = StoreProgress::new(w.store.clone(), seeded.step_id);
    let err = download(
        &w.source(ExportToPstOptions::default()),
        &progress,
        &target,
        None,
        manifest_info(JOB, &seeded, &w.alice, w.session),
        &options(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::SessionLost, "{err}");
    assert!(target.partial_path().exists());
    let row = w.store.get_download(seeded.step_id).await.unwrap();
    assert_eq!(row.bytes_durable, 100_000);
}

fn reframe_rule(call: u64, status: u16, range: Option<&str>, length: Option<u64>) -> FaultRule {
    FaultRule::on(
        Endpoint::ExportPst,
        FaultAction::Reframe {
            status,
            content_range: range.map(str::to_owned),
            content_length: length,
        },
    )
    .calls(CallRange::only(call))
}

/// One `download` call of Alice's export into `target`, as one attempt of the run engine.
async fn one_attempt(
    w: &World,
    target: &restorectl::download::SafePath,
    seeded: &crate::download_support::SeededStep,
    opts: &DownloadOptions,
) -> Result<Published, DownloadError> {
    let progress = StoreProgress::new(w.store.clone(), seeded.step_id);
    let info = manifest_info(JOB, seeded, &w.alice, w.session);
    download(
        &w.source(ExportToPstOptions::default()),
        &progress,
        target,
        None,
        info,
        opts,
    )
    .await
}

/// Hostile `Content-Range` answers to a resume from byte 300,000 — values near `u64::MAX`,
/// ranges that do not match the request — are permanent errors naming the value. None of them
/// panics, wraps, or moves the recorded progress; the next sound answer resumes from the same
/// byte and the digest is right.
#[tokio::test]
async fn hostile_content_ranges_on_a_resume_are_errors_that_keep_the_progress() {
    let len: u64 = 900_000;
    let max = u64::MAX;
    let hostile = [
        (
            format!("bytes 300000-{max}/*"),
            "past the end of any possible file",
        ),
        (
            format!("bytes 300000-{}/{max}", max - 1),
            "more than any file can hold",
        ),
        (
            "bytes 300001-899999/900000".to_owned(),
            "starts at byte 300001 instead of 300000",
        ),
        (
            "bytes 600000-300000/900000".to_owned(),
            "is before the first 600000",
        ),
        (
            "bytes 300000-900000/900000".to_owned(),
            "not below the complete length 900000",
        ),
    ];
    let mut config = sim_config(len);
    config.faults.push(drop_rule(1, 300_000));
    for (k, (value, _)) in hostile.iter().enumerate() {
        config
            .faults
            .push(reframe_rule(k as u64 + 2, 206, Some(value), None));
    }
    let w = World::start(config).await;
    let (digest, _) = w.digest(None);
    let target = resolve_inside(w.root.path(), Path::new("legal-hold/run-1/alice.pst")).unwrap();
    let seeded = seed_step(&w.store, JOB, &w.alice, target.absolute()).await;
    let mut opts = options();
    opts.max_immediate_resumes = 0;

    let err = one_attempt(&w, &target, &seeded, &opts).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
    for (value, want) in &hostile {
        let err = one_attempt(&w, &target, &seeded, &opts).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DownloadError::ContentRange { .. }), "{msg}");
        assert_eq!(err.class(), ErrorClass::Permanent, "{msg}");
        assert!(
            msg.contains(value.as_str()) && msg.contains(want) && msg.contains(ALICE),
            "{value}: {msg}"
        );
        let row = w.store.get_download(seeded.step_id).await.unwrap();
        assert_eq!(
            (row.bytes_durable, row.expected_bytes, row.restarts),
            (300_000, Some(len as i64), 0),
            "{value}"
        );
        assert_eq!(
            std::fs::metadata(target.partial_path()).unwrap().len(),
            300_000
        );
    }
    let published = one_attempt(&w, &target, &seeded, &opts).await.unwrap();
    assert_eq!(sha256_file(&published.path), digest);
    assert_eq!(published.manifest.restarts, 0);
    assert_eq!(
        published.manifest.resumed_from,
        vec![300_000; hostile.len() + 1]
    );
    let ranges = w.export_ranges();
    assert_eq!(ranges.len(), hostile.len() + 2);
    assert!(
        ranges[1..]
            .iter()
            .all(|r| r.as_deref() == Some("bytes=300000-")),
        "{ranges:?}"
    );
}

/// A resume answered with the whole export (200) but of another length than the one the partial
/// file was downloaded from: the export changed on the server. The attempt fails retryable with
/// a message saying so, the partial file and the recorded total are discarded (restart
/// recorded), and the next attempt starts over from byte 0 without `Range` — and succeeds.
#[tokio::test]
async fn a_resume_answered_for_an_export_of_another_length_starts_over() {
    let len: u64 = 900_000;
    let mut config = sim_config(len);
    config.faults.push(drop_rule(1, 300_000));
    config
        .faults
        .push(reframe_rule(2, 200, None, Some(500_000)));
    let w = World::start(config).await;
    let (digest, _) = w.digest(None);
    let target = resolve_inside(w.root.path(), Path::new("legal-hold/run-1/alice.pst")).unwrap();
    let seeded = seed_step(&w.store, JOB, &w.alice, target.absolute()).await;
    let mut opts = options();
    opts.max_immediate_resumes = 0;

    let err = one_attempt(&w, &target, &seeded, &opts).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
    let err = one_attempt(&w, &target, &seeded, &opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DownloadError::ExportChanged {
                offset: 300_000,
                known: 900_000,
                announced: 500_000,
                ..
            }
        ),
        "{msg}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable, "{msg}");
    assert!(
        msg.contains(ALICE)
            && msg.contains("HTTP 200 with Content-Length 500000")
            && msg.contains("starts over from byte 0"),
        "{msg}"
    );
    let row = w.store.get_download(seeded.step_id).await.unwrap();
    assert_eq!(
        (row.bytes_durable, row.expected_bytes, row.restarts),
        (0, None, 1)
    );
    assert_eq!(std::fs::metadata(target.partial_path()).unwrap().len(), 0);
    let restarted: Vec<String> = w
        .store
        .list_run_events(seeded.run)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "download_restarted")
        .map(|e| e.message)
        .collect();
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert!(
        restarted[0].contains("500000") && restarted[0].contains("900000"),
        "{restarted:?}"
    );

    let published = one_attempt(&w, &target, &seeded, &opts).await.unwrap();
    assert_eq!(sha256_file(&published.path), digest);
    assert_eq!(published.manifest.bytes, len);
    assert_eq!(published.manifest.restarts, 1);
    assert_eq!(
        w.export_ranges(),
        vec![None, Some("bytes=300000-".to_owned()), None]
    );
}

/// Templates that escape `exportRoot` (`..`, absolute, a symlink out) are refused before any
/// export request reaches the server.
#[tokio::test]
async fn escaping_paths_are_refused_before_any_request() {
    let w = World::start(sim_config(10_000)).await;
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), w.root.path().join("link-out")).unwrap();
    for rel in [
        "../escape/alice.pst",
        "legal-hold/../../alice.pst",
        "/etc/restorectl/alice.pst",
        "link-out/alice.pst",
    ] {
        let err = resolve_inside(w.root.path(), Path::new(rel)).unwrap_err();
        assert!(
            matches!(err, PathError::Escapes { .. } | PathError::Absolute { .. }),
            "{rel}: {err}"
        );
        let err = DownloadError::from(err);
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(
            err.to_string().contains(rel.trim_start_matches('/')) || err.to_string().contains(rel),
            "{err}"
        );
    }
    assert!(w.export_ranges().is_empty());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// Five runs with `keepLast: 2`: exactly the newest two exports and their manifests remain, and
/// each deletion is in the event log.
#[tokio::test]
async fn retention_keeps_the_newest_two_of_five_runs() {
    let w = World::start(sim_config(50_000)).await;
    let policy = Retention {
        keep_last: Some(2),
        keep_for: None,
    };
    let mut published = Vec::new();
    let mut deleted_total = 0;
    for run in 1..=5 {
        let (p, _) = w
            .export_until_done(
                &format!("legal-hold/run-{run}/alice.pst"),
                ExportToPstOptions::default(),
                &options(),
            )
            .await;
        let outcome = apply_retention(&w.store, w.root.path(), JOB, &policy, Utc::now())
            .await
            .unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        deleted_total += outcome.deleted.len();
        published.push(p);
    }
    assert_eq!(deleted_total, 3);
    for (i, p) in published.iter().enumerate() {
        let keep = i >= 3;
        assert_eq!(p.path.exists(), keep, "{}", p.path.display());
        assert_eq!(
            p.manifest_path.exists(),
            keep,
            "{}",
            p.manifest_path.display()
        );
    }
    let live = w.store.list_live_exports(JOB).await.unwrap();
    let live_paths: Vec<_> = live.iter().map(|e| e.path.clone()).collect();
    assert_eq!(
        live_paths,
        vec![published[3].path.clone(), published[4].path.clone()]
    );
    // One export_deleted event per deletion, on the runs that wrote the files.
    let mut deleted_events = 0;
    for p in &published[..3] {
        let run = p.manifest.run.parse().unwrap();
        deleted_events += w
            .store
            .list_run_events(run)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "export_deleted")
            .count();
    }
    assert_eq!(deleted_events, 3);
}
