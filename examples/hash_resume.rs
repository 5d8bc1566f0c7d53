//! Measures the two ways to get the SHA-256 state back when a download resumes:
//! re-hashing the partial file's prefix, or restoring the 104-byte state recorded with the
//! durable progress. Prints figures; used for `docs/downloads.md`.
//!
//! `cargo run --release --example hash_resume -- [SIZE_MIB]` (default 1024).

use std::io::Write;
use std::time::Instant;

use restorectl::download::hashing::{hash_file_prefix, hasher_state, hex_digest, restore_hasher};
use sha2::{Digest, Sha256};

fn main() -> std::io::Result<()> {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let len = mib << 20;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("partial");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let block: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for _ in 0..mib {
            f.write_all(&block)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }

    // Re-hash (file in the page cache: the best case for re-hashing).
    let t = Instant::now();
    let rehashed = hash_file_prefix(&path, len)?;
    let rehash_secs = t.elapsed().as_secs_f64();

    // Restore from the serialised state (what the transfer does).
    let state = hasher_state(&rehashed);
    let rounds = 10_000u32;
    let t = Instant::now();
    let mut restored = None;
    for _ in 0..rounds {
        restored = restore_hasher(std::hint::black_box(&state));
    }
    let restore_secs = t.elapsed().as_secs_f64() / f64::from(rounds);
    let restored = restored.ok_or_else(|| std::io::Error::other("state did not restore"))?;
    assert_eq!(hex_digest(restored), hex_digest(rehashed.clone()));

    // Raw hashing speed in memory, for reference.
    let block = vec![7u8; 64 << 20];
    let t = Instant::now();
    let _ = Sha256::digest(&block);
    let mem_rate = 64.0 / t.elapsed().as_secs_f64();

    println!("prefix size:            {mib} MiB");
    println!(
        "re-hash partial file:   {:.3} s ({:.0} MiB/s, warm page cache)",
        rehash_secs,
        mib as f64 / rehash_secs
    );
    println!(
        "restore hasher state:   {:.3} µs ({} bytes of state)",
        restore_secs * 1e6,
        state.len()
    );
    println!("sha-256 in memory:      {mem_rate:.0} MiB/s");
    println!("restore is {:.0}x faster", rehash_secs / restore_secs);
    Ok(())
}
