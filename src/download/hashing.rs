//! SHA-256 of a download, kept across resumes.
//!
//! The running hasher is serialised (sha2's `SerializableState`, 104 bytes) together with the
//! durable byte count, so a resume restores it instead of re-reading the partial file. Re-hashing
//! the prefix ([`hash_file_prefix`]) is the fallback when no usable state was recorded; the
//! benchmark in `examples/hash_resume.rs` compares both (figures in `docs/downloads.md`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

/// The serialised state of `hasher` (to store with the durable byte count).
pub fn hasher_state(hasher: &Sha256) -> Vec<u8> {
    hasher.serialize().to_vec()
}

/// Restores a hasher from [`hasher_state`] bytes; `None` if the bytes are not a valid state
/// (wrong length, written by an incompatible sha2 version).
pub fn restore_hasher(state: &[u8]) -> Option<Sha256> {
    let array = SerializedState::<Sha256>::try_from(state).ok()?;
    Sha256::deserialize(&array).ok()
}

/// The lowercase hex digest (sha2 0.11 no longer formats with `{:x}`).
pub fn hex_digest(hasher: Sha256) -> String {
    hex::encode(hasher.finalize())
}

/// Hashes the first `len` bytes of `path` (the re-hash fallback on resume).
///
/// # Errors
///
/// The read error, or `UnexpectedEof` if the file is shorter than `len`.
pub fn hash_file_prefix(path: &Path, len: u64) -> io::Result<Sha256> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file has fewer than {len} bytes"),
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_state_continues_the_same_digest() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let whole = hex_digest(Sha256::new_with_prefix(&data));
        let mut first = Sha256::new();
        first.update(&data[..12_345]);
        let state = hasher_state(&first);
        assert_eq!(state.len(), 104);
        let mut resumed = restore_hasher(&state).unwrap();
        resumed.update(&data[12_345..]);
        assert_eq!(hex_digest(resumed), whole);
    }

    #[test]
    fn garbage_state_is_rejected() {
        assert!(restore_hasher(&[1, 2, 3]).is_none());
    }

    #[test]
    fn prefix_hash_matches_and_short_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let h = hash_file_prefix(&p, 5).unwrap();
        assert_eq!(hex_digest(h), hex_digest(Sha256::new_with_prefix(b"hello")));
        assert!(hash_file_prefix(&p, 50).is_err());
    }
}
