//! PST export bytes: deterministic, generated on the fly and seekable.
//!
//! An export of (mailbox, keyword, restore point, size limit) is a single PST, or — when the
//! request enables the size limit and the data exceed it — a ZIP archive with stored (not
//! compressed) entries holding the PST parts, as the vendor describes (API.md §4). A PST part is
//! the PST magic `!BDN`, a plausible header (`SM` client magic, Unicode version 23) and then
//! pseudo-random blocks: block `k` (64 KiB) of a part is a window of one shared, fixed pool of
//! ChaCha8 bytes (1 MiB + 64 KiB, generated once per process), starting at an offset derived
//! from the part's key (a digest of the export's identity) and `k`. Any offset maps to a pool
//! position in constant time, so a multi-GiB export and a `Range` request from any offset cost
//! no memory; and a streamed block is a zero-copy slice of the pool, so serving an export costs
//! the simulator little more than the socket writes (it shares the machine with the client it
//! serves in `bench/download.sh`; generating a ChaCha8 stream per byte took most of a core).
//! Distinct exports, parts and blocks get distinct windows, so a client that misplaces, drops
//! or repeats bytes gets a different digest. The only pass over the data that is not a download
//! is the CRC-32 of each ZIP part, computed once when a split export is built.

use std::io;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures_util::{Stream, StreamExt};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use super::world::{Mailbox, derive};

/// First bytes of every PST file.
pub const PST_MAGIC: &[u8; 4] = b"!BDN";
/// First bytes of a ZIP archive.
pub const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// Smallest part the split threshold can be scaled down to.
const MIN_PART: u64 = 1024;
/// Chunk size of streamed bodies.
const CHUNK: usize = 64 * 1024;

/// The fixed PST header bytes; offsets 4..8 (the header CRC) come from the key stream.
fn pst_header_byte(pos: u64) -> Option<u8> {
    match pos {
        0..4 => Some(PST_MAGIC[pos as usize]),
        8 => Some(b'S'),
        9 => Some(b'M'),
        10 => Some(23),
        11 => Some(0),
        _ => None,
    }
}

/// Length of a PST block: the unit a pool window covers.
const BLOCK: usize = 64 * 1024;
/// Window starts range over this many pool bytes; the pool holds one more block.
const POOL_SPAN: usize = 1 << 20;

/// The shared pool of pseudo-random bytes the PST blocks are windows of.
fn pool() -> &'static Bytes {
    static POOL: OnceLock<Bytes> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut rng = ChaCha8Rng::from_seed(derive(&[b"pst-pool"]));
        let mut bytes = vec![0u8; POOL_SPAN + BLOCK];
        rng.fill_bytes(&mut bytes);
        Bytes::from(bytes)
    })
}

/// Where block `block` of the PST part keyed by `key` starts in the pool (splitmix64 of the
/// key and the block number).
fn window(key: &[u8; 32], block: u64) -> usize {
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&key[..8]);
    let mut z = u64::from_le_bytes(seed) ^ block.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % POOL_SPAN as u64) as usize
}

/// The bytes of the PST part keyed by `key` from `pos` to the end of its block (at most
/// `max` bytes), as a zero-copy slice of the pool — except within the fixed header, which is
/// patched into a copy.
fn pst_slice(key: &[u8; 32], pos: u64, max: usize) -> Bytes {
    let block = pos / BLOCK as u64;
    let within = (pos % BLOCK as u64) as usize;
    let n = (BLOCK - within).min(max);
    let start = window(key, block) + within;
    let slice = pool().slice(start..start + n);
    if pos >= 12 {
        return slice;
    }
    let mut bytes = slice.to_vec();
    for (i, b) in bytes.iter_mut().enumerate() {
        if let Some(h) = pst_header_byte(pos + i as u64) {
            *b = h;
        }
    }
    Bytes::from(bytes)
}

/// Fills `buf` with the bytes of a PST part keyed by `key`, starting at `pos`.
fn fill_pst(key: &[u8; 32], pos: u64, buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let piece = pst_slice(key, pos + done as u64, buf.len() - done);
        buf[done..done + piece.len()].copy_from_slice(&piece);
        done += piece.len();
    }
}

#[derive(Debug, Clone)]
enum SegmentData {
    Fixed(Arc<[u8]>),
    Pst([u8; 32]),
}

#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    len: u64,
    data: SegmentData,
}

/// The byte layout of one export: fixed ZIP records and generated PST parts.
#[derive(Debug, Clone)]
pub struct ExportLayout {
    total: u64,
    segments: Vec<Segment>,
    zip: bool,
}

/// What identifies an export's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportKey {
    pub seed: u64,
    pub mailbox_id: uuid::Uuid,
    /// `contentKeyword`, `None` when absent or empty.
    pub keyword: Option<String>,
    pub restore_point: DateTime<Utc>,
    /// `pstSizeLimitBytes` when `enablePstSizeLimit` is true.
    pub size_limit: Option<u64>,
}

impl ExportKey {
    fn digest(&self, label: &[u8]) -> [u8; 32] {
        derive(&[
            b"export",
            label,
            &self.seed.to_le_bytes(),
            self.mailbox_id.as_bytes(),
            self.keyword.as_deref().unwrap_or("").as_bytes(),
            self.restore_point.to_rfc3339().as_bytes(),
        ])
    }
}

/// The size of the exported data: the configured size for the mailbox (or the default with a
/// ±25 % deterministic variation), reduced to 20–80 % when a keyword filters the content.
pub fn data_size(key: &ExportKey, configured: Option<u64>, default: u64) -> u64 {
    let h = key.digest(b"size");
    let base = configured.unwrap_or_else(|| {
        let factor = 75 + u64::from(h[0]) % 51;
        default.saturating_mul(factor) / 100
    });
    let size = match key.keyword {
        Some(_) => base.saturating_mul(20 + u64::from(h[1]) % 61) / 100,
        None => base,
    };
    size.max(MIN_PART)
}

impl ExportLayout {
    /// Lays out the export of `data` bytes: one PST, or a ZIP of parts of at most `split_at`
    /// bytes when a limit applies and the data exceed it.
    pub fn build(key: &ExportKey, mailbox: &Mailbox, data: u64, split_at: Option<u64>) -> Self {
        Self::build_inner(key, mailbox, data, split_at, false)
    }

    fn build_inner(
        key: &ExportKey,
        mailbox: &Mailbox,
        data: u64,
        split_at: Option<u64>,
        force_zip64: bool,
    ) -> Self {
        let part = split_at.map(|s| s.max(MIN_PART));
        match part {
            Some(part) if data > part => {
                let count = data.div_ceil(part);
                let parts: Vec<(String, u64, [u8; 32])> = (0..count)
                    .map(|i| {
                        let len = if i + 1 == count {
                            data - part * i
                        } else {
                            part
                        };
                        let name = format!("{}-part{:03}.pst", sanitize(&mailbox.email), i + 1);
                        let part_key =
                            derive(&[b"pst-part", &key.digest(b"part"), &i.to_le_bytes()]);
                        (name, len, part_key)
                    })
                    .collect();
                zip_layout(&parts, key.restore_point, force_zip64)
            }
            _ => ExportLayout {
                total: data,
                segments: vec![Segment {
                    start: 0,
                    len: data,
                    data: SegmentData::Pst(key.digest(b"pst")),
                }],
                zip: false,
            },
        }
    }

    /// Total length in bytes.
    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// Whether the export is a ZIP of parts.
    pub fn is_zip(&self) -> bool {
        self.zip
    }

    /// Fills `buf` with the bytes at `offset`; returns how many were available.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let mut done = 0usize;
        let mut pos = offset;
        let first = self.segments.partition_point(|s| s.start + s.len <= pos);
        for seg in &self.segments[first..] {
            if done == buf.len() {
                break;
            }
            let within = pos - seg.start;
            let n = usize::try_from((seg.len - within).min((buf.len() - done) as u64)).unwrap_or(0);
            let out = &mut buf[done..done + n];
            match &seg.data {
                SegmentData::Fixed(bytes) => {
                    let w = within as usize;
                    out.copy_from_slice(&bytes[w..w + n]);
                }
                SegmentData::Pst(k) => fill_pst(k, within, out),
            }
            done += n;
            pos += n as u64;
        }
        done
    }

    /// SHA-256 (lower-case hex) and length of the whole export.
    pub fn digest(&self) -> (String, u64) {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < self.total {
            let n = self.read_at(pos, &mut buf);
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        (hex::encode(hasher.finalize()), self.total)
    }

    /// Streams bytes `start..end` in chunks of at most 64 KiB: zero-copy slices of the pool
    /// within PST parts, copies for the fixed ZIP records and the PST header.
    pub fn stream(
        self: Arc<Self>,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        futures_util::stream::iter(Chunks {
            layout: self,
            pos: start,
            end,
        })
        .map(Ok::<_, io::Error>)
    }

    /// The chunk at `pos`: at most `max` bytes, never across a segment or PST block boundary.
    fn chunk_at(&self, pos: u64, max: usize) -> Option<Bytes> {
        let seg = self
            .segments
            .get(self.segments.partition_point(|s| s.start + s.len <= pos))?;
        let within = pos - seg.start;
        let max = usize::try_from((seg.len - within).min(max as u64)).unwrap_or(max);
        match &seg.data {
            SegmentData::Fixed(bytes) => {
                let w = within as usize;
                Some(Bytes::copy_from_slice(&bytes[w..w + max]))
            }
            SegmentData::Pst(k) => Some(pst_slice(k, within, max)),
        }
    }
}

/// The chunks of `pos..end` of a layout, in order.
struct Chunks {
    layout: Arc<ExportLayout>,
    pos: u64,
    end: u64,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.pos >= self.end {
            return None;
        }
        let max = usize::try_from((self.end - self.pos).min(CHUNK as u64)).unwrap_or(CHUNK);
        let chunk = self.layout.chunk_at(self.pos, max)?;
        if chunk.is_empty() {
            return None;
        }
        self.pos += chunk.len() as u64;
        Some(chunk)
    }
}

/// A file-name-safe rendering of an e-mail address.
fn sanitize(email: &str) -> String {
    email
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// MS-DOS time and date of `t` (what ZIP headers carry).
fn dos_time(t: DateTime<Utc>) -> (u16, u16) {
    let time = ((t.hour() << 11) | (t.minute() << 5) | (t.second() / 2)) as u16;
    let year = t.year().clamp(1980, 2107) as u32 - 1980;
    let date = ((year << 9) | (t.month() << 5) | t.day()) as u16;
    (time, date)
}

fn crc_of(key: &[u8; 32], len: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        fill_pst(key, pos, &mut buf[..n]);
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    hasher.finalize()
}

/// Lays out a ZIP of stored entries (ZIP64 records when a size or offset needs them).
fn zip_layout(
    parts: &[(String, u64, [u8; 32])],
    at: DateTime<Utc>,
    force_zip64: bool,
) -> ExportLayout {
    const MAX32: u64 = 0xFFFF_FFFF;
    let (time, date) = dos_time(at);
    let data_total: u64 = parts.iter().map(|p| p.1).sum();
    let zip64 =
        force_zip64 || data_total + parts.len() as u64 * 200 >= MAX32 || parts.len() >= 0xFFFF;
    let version: u16 = if zip64 { 45 } else { 20 };
    let mut segments = Vec::new();
    let mut pos = 0u64;
    let mut central = Vec::new();
    let push = |segments: &mut Vec<Segment>, pos: &mut u64, bytes: Vec<u8>| {
        let len = bytes.len() as u64;
        segments.push(Segment {
            start: *pos,
            len,
            data: SegmentData::Fixed(bytes.into()),
        });
        *pos += len;
    };
    for (name, len, key) in parts {
        let crc = crc_of(key, *len);
        let offset = pos;
        let size32 = if zip64 { MAX32 as u32 } else { *len as u32 };
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&version.to_le_bytes());
        local.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        local.extend_from_slice(&0u16.to_le_bytes()); // stored
        local.extend_from_slice(&time.to_le_bytes());
        local.extend_from_slice(&date.to_le_bytes());
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&size32.to_le_bytes());
        local.extend_from_slice(&size32.to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&(if zip64 { 20u16 } else { 0 }).to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        if zip64 {
            local.extend_from_slice(&1u16.to_le_bytes());
            local.extend_from_slice(&16u16.to_le_bytes());
            local.extend_from_slice(&len.to_le_bytes());
            local.extend_from_slice(&len.to_le_bytes());
        }
        push(&mut segments, &mut pos, local);
        segments.push(Segment {
            start: pos,
            len: *len,
            data: SegmentData::Pst(*key),
        });
        pos += len;

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&(0x0300u16 | version).to_le_bytes()); // made by Unix
        central.extend_from_slice(&version.to_le_bytes());
        central.extend_from_slice(&0x0800u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&time.to_le_bytes());
        central.extend_from_slice(&date.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size32.to_le_bytes());
        central.extend_from_slice(&size32.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(if zip64 { 28u16 } else { 0 }).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
        central
            .extend_from_slice(&(if zip64 { MAX32 as u32 } else { offset as u32 }).to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        if zip64 {
            central.extend_from_slice(&1u16.to_le_bytes());
            central.extend_from_slice(&24u16.to_le_bytes());
            central.extend_from_slice(&len.to_le_bytes());
            central.extend_from_slice(&len.to_le_bytes());
            central.extend_from_slice(&offset.to_le_bytes());
        }
    }
    let cd_offset = pos;
    let cd_size = central.len() as u64;
    let entries = parts.len() as u64;
    let mut tail = central;
    if zip64 {
        let eocd64 = cd_offset + cd_size;
        tail.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        tail.extend_from_slice(&44u64.to_le_bytes());
        tail.extend_from_slice(&(0x0300u16 | 45).to_le_bytes());
        tail.extend_from_slice(&45u16.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&entries.to_le_bytes());
        tail.extend_from_slice(&entries.to_le_bytes());
        tail.extend_from_slice(&cd_size.to_le_bytes());
        tail.extend_from_slice(&cd_offset.to_le_bytes());
        tail.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&eocd64.to_le_bytes());
        tail.extend_from_slice(&1u32.to_le_bytes());
    }
    let (n16, size32, off32) = if zip64 {
        (0xFFFFu16, MAX32 as u32, MAX32 as u32)
    } else {
        (entries as u16, cd_size as u32, cd_offset as u32)
    };
    tail.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    tail.extend_from_slice(&n16.to_le_bytes());
    tail.extend_from_slice(&n16.to_le_bytes());
    tail.extend_from_slice(&size32.to_le_bytes());
    tail.extend_from_slice(&off32.to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    push(&mut segments, &mut pos, tail);
    ExportLayout {
        total: pos,
        segments,
        zip: true,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::sim::world::{World, default_latest_backup};

    fn fixture(limit: Option<u64>) -> (ExportKey, Mailbox) {
        let w = World::new(3, default_latest_backup());
        let mb = w
            .mailbox_by_email("alice@contoso.com", false)
            .expect("alice")
            .clone();
        let key = ExportKey {
            seed: 3,
            mailbox_id: mb.id,
            keyword: None,
            restore_point: w.latest_backup(),
            size_limit: limit,
        };
        (key, mb)
    }

    fn all_bytes(layout: &ExportLayout) -> Vec<u8> {
        let mut out = vec![0u8; layout.total_len() as usize];
        assert_eq!(layout.read_at(0, &mut out), out.len());
        out
    }

    #[test]
    fn reads_at_any_offset_agree_with_one_big_read() {
        let (key, mb) = fixture(None);
        let layout = ExportLayout::build(&key, &mb, 100_003, None);
        let whole = all_bytes(&layout);
        assert_eq!(&whole[..4], PST_MAGIC);
        for (offset, len) in [(0, 5), (1, 7), (3, 4096), (4097, 13), (99_990, 13)] {
            let mut part = vec![0u8; len];
            let n = layout.read_at(offset, &mut part);
            assert_eq!(&part[..n], &whole[offset as usize..offset as usize + n]);
        }
        let mut hasher = Sha256::new();
        hasher.update(&whole);
        assert_eq!(layout.digest(), (hex::encode(hasher.finalize()), 100_003));
    }

    #[tokio::test]
    async fn streamed_chunks_agree_with_reads_from_any_start() {
        for split in [None, Some(50_000)] {
            let (key, mb) = fixture(split.map(|_| 1 << 30));
            let layout = Arc::new(ExportLayout::build(&key, &mb, 300_007, split));
            let whole = all_bytes(&layout);
            let total = layout.total_len();
            for start in [0, 1, 11, 12, 65_535, 65_536, 131_073, total - 1] {
                let chunks: Vec<Bytes> = layout
                    .clone()
                    .stream(start, total)
                    .map(|c| c.unwrap())
                    .collect()
                    .await;
                assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
                let joined: Vec<u8> = chunks.concat();
                assert_eq!(joined, &whole[start as usize..], "start {start}");
            }
        }
    }

    #[test]
    fn blocks_of_one_part_and_of_different_exports_differ() {
        let (key, mb) = fixture(None);
        let layout = ExportLayout::build(&key, &mb, 4 * BLOCK as u64, None);
        let whole = all_bytes(&layout);
        let blocks: Vec<&[u8]> = whole.chunks(BLOCK).collect();
        for (i, a) in blocks.iter().enumerate() {
            for b in &blocks[i + 1..] {
                assert_ne!(&a[100..200], &b[100..200]);
            }
        }
        let mut other = key.clone();
        other.seed = 4;
        let other = all_bytes(&ExportLayout::build(&other, &mb, 4 * BLOCK as u64, None));
        assert_ne!(&whole[12..4096], &other[12..4096]);
    }

    #[test]
    fn keyword_and_point_in_time_change_the_content() {
        let (key, mb) = fixture(None);
        let mut other = key.clone();
        other.keyword = Some("falcon".into());
        assert!(data_size(&other, None, 262_144) < data_size(&key, None, 262_144));
        let a = ExportLayout::build(&key, &mb, 5000, None).digest();
        let b = ExportLayout::build(&other, &mb, 5000, None).digest();
        assert_ne!(a, b);
    }

    #[test]
    fn split_exports_are_valid_zips_of_psts_also_with_zip64_records() {
        for force in [false, true] {
            let (key, mb) = fixture(Some(1 << 30));
            let layout = ExportLayout::build_inner(&key, &mb, 10_000, Some(4096), force);
            assert!(layout.is_zip());
            let bytes = all_bytes(&layout);
            assert_eq!(&bytes[..4], ZIP_MAGIC);
            let mut archive = zip::ZipArchive::new(io::Cursor::new(bytes)).expect("zip");
            assert_eq!(archive.len(), 3);
            let mut total = 0;
            for i in 0..archive.len() {
                let mut entry = archive.by_index(i).expect("entry");
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("crc ok");
                assert_eq!(&data[..4], PST_MAGIC);
                total += data.len();
            }
            assert_eq!(total, 10_000);
        }
    }
}
