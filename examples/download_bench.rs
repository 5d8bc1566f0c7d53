//! restorectl's download through the real code path, for `bench/download.sh`: the VB365 client
//! (`ExportSource`), durable progress in a state database on disk (`StoreProgress`), the transfer
//! (streaming, checkpoints with `fdatasync`, SHA-256) and the publisher (fsync, rename,
//! manifest) — exactly what the run engine calls for an ExportPst step.
//!
//! ```text
//! RESTORECTL_BENCH_PASSWORD=… cargo run --release --example download_bench -- \
//!     --server http://127.0.0.1:4443 --mailbox alice@contoso.com --out /tmp/bench [--username U]
//! ```
//!
//! Prints one line: `bytes=… seconds=… mib_per_s=… sha256=… file=…`.
//!
//! `download_bench --sha256-rate` prints instead how fast one SHA-256 stream runs on this
//! machine, on cached bytes and on bytes from memory (`sha256_cached_mib_per_s=…
//! sha256_memory_mib_per_s=…`).

#[path = "../tests/download_support/mod.rs"]
mod download_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use restorectl::download::{
    DownloadOptions, ExportSource, StoreProgress, download, resolve_inside,
};
use restorectl::store::Store;
use restorectl::vb365::ExportToPstOptions;
use sha2::{Digest, Sha256};

struct Args {
    server: String,
    mailbox: String,
    out: PathBuf,
    username: String,
}

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut mailbox = None;
    let mut out = None;
    let mut username = "CONTOSO\\svc-restore".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => server = Some(value),
            "--mailbox" => mailbox = Some(value),
            "--out" => out = Some(PathBuf::from(value)),
            "--username" => username = value,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        server: server.ok_or("--server is required")?,
        mailbox: mailbox.ok_or("--mailbox is required")?,
        out: out.ok_or("--out is required")?,
        username,
    })
}

/// How fast one SHA-256 stream runs here, alone on an idle thread, over 1 GiB: from a 4 MiB
/// buffer (bytes in the CPU cache, the ceiling of any download that hashes what it writes) and
/// from a 64 MiB one (bytes from memory, read by SHA-256 alone).
fn sha256_rates() {
    let rate = |buffer_mib: u32| {
        let buffer: Vec<u8> = (0..buffer_mib << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let started = Instant::now();
        let mut hasher = Sha256::new();
        for _ in 0..1024 / buffer_mib {
            hasher.update(&buffer);
        }
        std::hint::black_box(hasher.finalize());
        1024.0 / started.elapsed().as_secs_f64()
    };
    println!(
        "sha256_cached_mib_per_s={:.0} sha256_memory_mib_per_s={:.0}",
        rate(4),
        rate(64)
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("--sha256-rate") {
        sha256_rates();
        return Ok(());
    }
    let args = parse_args()?;
    let password = std::env::var("RESTORECTL_BENCH_PASSWORD")
        .map_err(|_| "set RESTORECTL_BENCH_PASSWORD to the VB365 password")?;
    let (client, _secrets) = download_support::client_for(&args.server, &args.username, &password);
    let (session, mailbox) = download_support::session_and_mailbox(&client, &args.mailbox).await;

    std::fs::create_dir_all(&args.out)?;
    let store = Store::open(args.out.join("state/restorectl.db")).await?;
    let run_dir = format!("bench/{}", uuid::Uuid::now_v7());
    let target = resolve_inside(
        &args.out,
        &PathBuf::from(format!("{run_dir}/{}.pst", mailbox.email)),
    )?;
    let seeded = download_support::seed_step(&store, "bench", &mailbox, target.absolute()).await;
    let progress = StoreProgress::new(store.clone(), seeded.step_id);
    let source = ExportSource::new(
        client.clone(),
        session,
        mailbox.id,
        mailbox.email.clone(),
        ExportToPstOptions::default(),
        Duration::from_secs(2 * 60 * 60),
    );
    let info = download_support::manifest_info("bench", &seeded, &mailbox, session);

    let started = Instant::now();
    let published = download(
        &source,
        &progress,
        &target,
        None,
        info,
        &DownloadOptions::default(),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = published.manifest.bytes;
    println!(
        "bytes={bytes} seconds={seconds:.3} mib_per_s={:.1} sha256={} file={}",
        bytes as f64 / (1 << 20) as f64 / seconds,
        published.manifest.sha256,
        published.path.display()
    );
    client.stop_restore_session(session).await?;
    Ok(())
}
