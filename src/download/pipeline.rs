//! The write side of a download: SHA-256 and file writes on two dedicated threads that work on
//! the same page-aligned buffers at the same time, fed in order from a small fixed pool.
//!
//! ```text
//!                  ┌──Arc<Batch>──▶ hashing thread ──hasher state at each sync──┐
//! async reader ────┤                                                             ▼
//!      ▲           └──Arc<Batch>──▶ writing thread ─── write, fdatasync, report durable
//!      │                                                             │
//!      └──── Event: buffer free again (from whichever thread is done last) / durable up
//!                   to N / finished or failed ───────────────────────┘
//! ```
//!
//! - The async side (the transfer's body loop) copies body chunks into a [`Batch`] and hands full
//!   batches to both threads; it waits for a free buffer when all [`POOL`] are in flight, so
//!   memory is bounded by `POOL × batch size` whatever the file size.
//! - The hashing thread updates the SHA-256 in file order. For a batch marked `sync` it sends
//!   the writing thread the serialised hasher state after that batch (the state that matches
//!   the durable offset).
//! - The writing thread writes each batch at its offset and, for a `sync` batch, `fdatasync`s,
//!   takes the matching hasher state and reports `Durable { bytes, state }`. The transfer records
//!   progress only from that report, so what the store holds is always on disk.
//! - A buffer goes back to the async side when both threads are done with it. Hashing and
//!   writing a batch overlap instead of following each other, which keeps a buffer in flight
//!   for the longer of the two rather than their sum.
//!
//! Writes use `O_DIRECT` for the page-aligned middle of each batch (a second descriptor on the
//! same file): the data goes from our buffer to the device without a copy into the page cache,
//! which is the largest CPU cost of a buffered write, and the checkpoint `fdatasync` then has
//! little left to flush. The unaligned head and tail of a batch (after a resume from an
//! unaligned offset, a time-based checkpoint or the end of the body) go through the ordinary
//! descriptor. A file system without `O_DIRECT` (the open or the first write fails with
//! `EINVAL`) falls back to buffered writes for the rest of the download, and so does tmpfs,
//! where `O_DIRECT` is emulated at a higher cost than a buffered write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, mpsc};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc as tokio_mpsc;

use super::hashing::hasher_state;

/// Alignment of `O_DIRECT` offsets, lengths and buffer addresses (the largest logical block
/// size in common use).
pub(crate) const ALIGN: usize = 4096;

/// Buffers in flight at most (being filled, hashed, written).
pub(crate) const POOL: usize = 4;

/// A page-aligned buffer holding the bytes of the file at `offset..offset + len`.
///
/// The data starts `offset % ALIGN` bytes into the aligned area, so memory addresses and file
/// offsets share their alignment; a batch ends at the next multiple of `cap` bytes in the file
/// at the latest, so after one unaligned batch all following ones are aligned.
pub(crate) struct Batch {
    mem: Vec<u8>,
    /// Index of the first page-aligned byte of `mem`.
    base: usize,
    /// Capacity of the aligned area in bytes (a multiple of [`ALIGN`]).
    cap: usize,
    /// File offset of the first data byte.
    offset: u64,
    /// Bytes of data.
    len: usize,
    /// `fdatasync` after writing this batch and report the durable size.
    sync: bool,
}

impl Batch {
    /// A new buffer of `cap` bytes (rounded up to a multiple of [`ALIGN`]).
    pub(crate) fn new(cap: usize) -> Batch {
        let cap = cap.max(ALIGN).div_ceil(ALIGN) * ALIGN;
        let mem = vec![0u8; cap + ALIGN];
        let base = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        Batch {
            mem,
            base,
            cap,
            offset: 0,
            len: 0,
            sync: false,
        }
    }

    /// Empties the batch and positions it at file offset `offset`.
    pub(crate) fn reset(&mut self, offset: u64) {
        self.offset = offset;
        self.len = 0;
        self.sync = false;
    }

    fn start(&self) -> usize {
        self.base + (self.offset % ALIGN as u64) as usize
    }

    /// Bytes that still fit.
    pub(crate) fn room(&self) -> usize {
        self.base + self.cap - self.start() - self.len
    }

    /// Copies as much of `bytes` as fits; returns how many bytes were taken.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        let at = self.start() + self.len;
        self.mem[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Bytes of data.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// File offset just after the data.
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len as u64
    }

    pub(crate) fn mark_sync(&mut self) {
        self.sync = true;
    }

    fn data(&self) -> &[u8] {
        let start = self.start();
        &self.mem[start..start + self.len]
    }
}

/// What the writing thread reports to the async side.
pub(crate) enum Event {
    /// A batch was written; its buffer can be filled again.
    Free(Batch),
    /// Everything up to `bytes` is written and `fdatasync`ed; `state` is the hasher state after
    /// exactly those bytes.
    Durable { bytes: u64, state: Vec<u8> },
    /// The pipeline stopped: both threads have ended. `done` is the file, the hasher and the
    /// byte count when everything was written; the error otherwise (`written` bytes made it).
    Finished(Result<Finished, Failure>),
}

/// The state of the partial file after a clean end of the pipeline.
pub(crate) struct Finished {
    pub(crate) file: File,
    pub(crate) hasher: Sha256,
    pub(crate) written: u64,
}

/// A failed write or sync.
pub(crate) struct Failure {
    /// Bytes written before the failure.
    pub(crate) written: u64,
    pub(crate) error: io::Error,
}

/// The pipeline has stopped (a failure is waiting in the events).
#[derive(Debug)]
pub(crate) struct Stopped;

/// What the hashing thread tells the writing thread.
enum HashNote {
    /// The hasher state after the next `sync` batch.
    State(Vec<u8>),
    /// The input ended cleanly; here is the hasher.
    End(Box<Sha256>),
}

/// The senders to both threads.
struct Inputs {
    hasher: mpsc::Sender<Arc<Batch>>,
    writer: mpsc::Sender<Arc<Batch>>,
}

/// Handle of a running pipeline.
pub(crate) struct Pipeline {
    /// `None` once closed.
    inputs: Option<Inputs>,
    events: tokio_mpsc::UnboundedReceiver<Event>,
}

impl Pipeline {
    /// Starts the two threads over `file` (the partial file at `path`, holding exactly `written`
    /// bytes hashed into `hasher`). With `direct`, tries `O_DIRECT` for aligned writes.
    pub(crate) fn start(
        path: &Path,
        file: File,
        hasher: Sha256,
        written: u64,
        direct: bool,
    ) -> io::Result<Pipeline> {
        let (to_hasher, hasher_rx) = mpsc::channel::<Arc<Batch>>();
        let (to_writer, writer_rx) = mpsc::channel::<Arc<Batch>>();
        let (notes_tx, notes_rx) = mpsc::channel::<HashNote>();
        let (events_tx, events) = tokio_mpsc::unbounded_channel();
        let direct_file = if direct {
            open_direct(path, &file)
        } else {
            None
        };
        // The threads are detached: they end when the input ends (or the pipeline is dropped)
        // and hold no async resources.
        let hash_events = events_tx.clone();
        std::thread::Builder::new()
            .name("download-hash".into())
            .spawn(move || hash_loop(hasher, hasher_rx, notes_tx, hash_events))?;
        let writer = Writer {
            file,
            direct: direct_file,
            written,
        };
        std::thread::Builder::new()
            .name("download-write".into())
            .spawn(move || write_loop(writer, writer_rx, notes_rx, events_tx))?;
        Ok(Pipeline {
            inputs: Some(Inputs {
                hasher: to_hasher,
                writer: to_writer,
            }),
            events,
        })
    }

    /// Hands a filled batch to both threads. `Err` when the pipeline has stopped (a failure is
    /// then waiting in the events).
    pub(crate) fn send(&self, batch: Batch) -> Result<(), Stopped> {
        let Some(inputs) = &self.inputs else {
            return Err(Stopped);
        };
        let batch = Arc::new(batch);
        inputs
            .writer
            .send(Arc::clone(&batch))
            .map_err(|_| Stopped)?;
        inputs.hasher.send(batch).map_err(|_| Stopped)
    }

    /// Signals the end of the input; the pipeline then drains and reports
    /// [`Event::Finished`].
    pub(crate) fn close(&mut self) {
        self.inputs = None;
    }

    /// The next event; `None` only if the writing thread died without reporting (a panic).
    pub(crate) async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An event that is already waiting, if any.
    pub(crate) fn ready_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

/// Gives the buffer back to the async side if the calling thread is the last one using it.
/// Returns false when the async side is gone.
fn release(batch: Arc<Batch>, events: &tokio_mpsc::UnboundedSender<Event>) -> bool {
    match Arc::into_inner(batch) {
        Some(batch) => events.send(Event::Free(batch)).is_ok(),
        None => true,
    }
}

/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Opens a second, `O_DIRECT` descriptor on the partial file; `None` when the file system does
/// not support it (or is tmpfs) or the path no longer names the same file.
fn open_direct(path: &Path, file: &File) -> Option<File> {
    // tmpfs accepts O_DIRECT but emulates it with a buffered write plus a flush and an
    // invalidation of the range: more CPU than a plain buffered write, and no disk to bypass.
    if rustix::fs::fstatfs(file).is_ok_and(|st| st.f_type as u64 == TMPFS_MAGIC) {
        return None;
    }
    let flags = rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::NOFOLLOW;
    let direct = match OpenOptions::new()
        .write(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no O_DIRECT; buffered writes");
            return None;
        }
    };
    let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

fn hash_loop(
    mut hasher: Sha256,
    rx: mpsc::Receiver<Arc<Batch>>,
    notes: mpsc::Sender<HashNote>,
    events: tokio_mpsc::UnboundedSender<Event>,
) {
    while let Ok(batch) = rx.recv() {
        hash_warm(&mut hasher, batch.data());
        if batch.sync && notes.send(HashNote::State(hasher_state(&hasher))).is_err() {
            // The writer stopped on an error it has reported.
            return;
        }
        if !release(batch, &events) {
            return;
        }
    }
    let _ = notes.send(HashNote::End(Box::new(hasher)));
}

/// Bytes of a batch pulled into the CPU cache ahead of each SHA-256 update (see
/// [`hash_warm`]).
const WARM: usize = 64 << 10;

/// `hasher.update(data)`, in [`WARM`]-byte pieces, each read once (one byte per 64-byte cache
/// line) just before it is hashed.
///
/// SHA-256 consumes its input one 64-byte block at a time behind a long chain of dependent
/// instructions, and on the 2-vCPU benchmark machine the hardware prefetcher does not keep up
/// with it: hashing bytes that another thread wrote a few MiB earlier ran at ≈ 1,150 MiB/s,
/// against ≈ 1,550 MiB/s with this pass first (its loads are independent, so it reads at over
/// 10 GiB/s). The hashing thread is the slowest stage of a download: in `bench/download.sh`
/// its rate per CPU-second went from ≈ 1,100 to ≈ 1,500 MiB/s, and the 1 GiB download from
/// ≈ 1,015 to ≈ 1,225 MiB/s (six interleaved rounds each).
fn hash_warm(hasher: &mut Sha256, data: &[u8]) {
    for piece in data.chunks(WARM) {
        std::hint::black_box(touch_cache_lines(piece));
        hasher.update(piece);
    }
}

/// Reads one byte of every 64-byte line of `bytes`.
fn touch_cache_lines(bytes: &[u8]) -> u8 {
    bytes.iter().step_by(64).fold(0, |acc, b| acc ^ b)
}

/// The partial file as seen by the writing thread.
struct Writer {
    file: File,
    direct: Option<File>,
    written: u64,
}

impl Writer {
    fn write(&mut self, batch: &Batch) -> io::Result<()> {
        let data = batch.data();
        let offset = batch.offset;
        if offset != self.written {
            return Err(io::Error::other(format!(
                "internal: batch at byte {offset} but {} bytes written",
                self.written
            )));
        }
        let head = ((ALIGN - (offset % ALIGN as u64) as usize) % ALIGN).min(data.len());
        let middle = (data.len() - head) / ALIGN * ALIGN;
        let (head_bytes, rest) = data.split_at(head);
        let (middle_bytes, tail_bytes) = rest.split_at(middle);
        if !head_bytes.is_empty() {
            self.file.write_all_at(head_bytes, offset)?;
        }
        if !middle_bytes.is_empty() {
            self.write_aligned(middle_bytes, offset + head as u64)?;
        }
        if !tail_bytes.is_empty() {
            self.file
                .write_all_at(tail_bytes, offset + (head + middle) as u64)?;
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn write_aligned(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if let Some(direct) = &self.direct {
            match direct.write_all_at(data, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    // Stricter alignment than ALIGN, or no O_DIRECT after all: positional
                    // writes are idempotent, so the whole range is written again, buffered.
                    tracing::debug!(error = %e, "O_DIRECT write refused; buffered writes");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(data, offset)
    }
}

fn write_loop(
    mut writer: Writer,
    rx: mpsc::Receiver<Arc<Batch>>,
    notes: mpsc::Receiver<HashNote>,
    events: tokio_mpsc::UnboundedSender<Event>,
) {
    let fail = |writer: &Writer, error: io::Error| {
        Event::Finished(Err(Failure {
            written: writer.written,
            error,
        }))
    };
    let hasher_gone = || io::Error::other("the hashing thread stopped unexpectedly");
    while let Ok(batch) = rx.recv() {
        let result = writer.write(&batch).and_then(|()| {
            if batch.sync {
                writer.file.sync_data()?;
            }
            Ok(())
        });
        if let Err(error) = result {
            let _ = events.send(fail(&writer, error));
            return;
        }
        if batch.sync {
            // The hashing thread sends one state per sync batch, in the same order.
            let Ok(HashNote::State(state)) = notes.recv() else {
                let _ = events.send(fail(&writer, hasher_gone()));
                return;
            };
            let _ = events.send(Event::Durable {
                bytes: writer.written,
                state,
            });
        }
        if !release(batch, &events) {
            // The transfer is gone (its future was dropped); stop quietly.
            return;
        }
    }
    // The input ended: the hashing thread hands over the hasher once it has hashed everything.
    let event = match notes.recv() {
        Ok(HashNote::End(hasher)) => Event::Finished(Ok(Finished {
            file: writer.file,
            hasher: *hasher,
            written: writer.written,
        })),
        _ => fail(&writer, hasher_gone()),
    };
    let _ = events.send(event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::hashing::{hex_digest, restore_hasher};

    /// Runs the pipeline over `data[from..]` appended to a file holding `data[..from]`, in
    /// chunks of `chunk` bytes and batches of `cap`, syncing every `sync_every` batches.
    async fn run(data: &[u8], from: usize, chunk: usize, cap: usize, direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, &data[..from]).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut pipe = Pipeline::start(
            &path,
            file,
            Sha256::new_with_prefix(&data[..from]),
            from as u64,
            direct,
        )
        .unwrap();
        let mut free: Vec<Batch> = Vec::new();
        let mut made = 0;
        let mut durable = Vec::new();
        let mut batch = Batch::new(cap);
        batch.reset(from as u64);
        made += 1;
        let mut n = 0;
        for piece in data[from..].chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let took = batch.push(piece);
                piece = &piece[took..];
                if batch.room() == 0 {
                    let end = batch.end();
                    n += 1;
                    if n % 3 == 0 {
                        batch.mark_sync();
                    }
                    assert!(pipe.send(batch).is_ok());
                    batch = loop {
                        if let Some(b) = free.pop() {
                            break b;
                        }
                        if made < POOL {
                            made += 1;
                            break Batch::new(cap);
                        }
                        match pipe.next_event().await.unwrap() {
                            Event::Free(b) => free.push(b),
                            Event::Durable { bytes, state } => durable.push((bytes, state)),
                            Event::Finished(_) => panic!("finished early"),
                        }
                    };
                    batch.reset(end);
                }
            }
        }
        batch.mark_sync();
        assert!(pipe.send(batch).is_ok());
        pipe.close();
        let finished = loop {
            match pipe.next_event().await.unwrap() {
                Event::Free(_) => {}
                Event::Durable { bytes, state } => durable.push((bytes, state)),
                Event::Finished(done) => break done.ok().unwrap(),
            }
        };
        assert_eq!(finished.written, data.len() as u64);
        assert_eq!(
            hex_digest(finished.hasher),
            hex_digest(Sha256::new_with_prefix(data))
        );
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // Every durable report carries the hasher state of exactly that prefix.
        assert!(!durable.is_empty());
        for (bytes, state) in durable {
            let h = restore_hasher(&state).unwrap();
            assert_eq!(
                hex_digest(h),
                hex_digest(Sha256::new_with_prefix(&data[..bytes as usize]))
            );
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    #[tokio::test]
    async fn writes_and_hashes_in_order_from_aligned_and_unaligned_offsets() {
        let data = pattern(300_001);
        for direct in [true, false] {
            for (from, chunk, cap) in [
                (0, 1000, 16_384),
                (1, 4096, 8192),
                (4095, 65_536, 16_384),
                (12_345, 777, 4096),
                (300_000, 10, 4096),
            ] {
                run(&data, from, chunk, cap, direct).await;
            }
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_with_the_bytes_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"abc").unwrap();
        // A read-only descriptor: every write fails (EBADF).
        let file = File::open(&path).unwrap();
        let mut pipe = Pipeline::start(&path, file, Sha256::new(), 3, false).unwrap();
        let mut batch = Batch::new(ALIGN);
        batch.reset(3);
        batch.push(b"more bytes");
        batch.mark_sync();
        assert!(pipe.send(batch).is_ok());
        match pipe.next_event().await {
            Some(Event::Finished(Err(failure))) => {
                assert_eq!(failure.written, 3);
                assert_eq!(failure.error.raw_os_error(), Some(9));
            }
            _ => panic!("expected the write failure"),
        }
    }

    #[test]
    fn warm_hashing_gives_the_plain_digest_at_every_piece_boundary() {
        let data = pattern(3 * WARM + 17);
        for len in [
            0,
            1,
            63,
            64,
            WARM - 1,
            WARM,
            WARM + 1,
            2 * WARM,
            3 * WARM + 17,
        ] {
            let mut warm = Sha256::new();
            hash_warm(&mut warm, &data[..len]);
            assert_eq!(
                hex_digest(warm),
                hex_digest(Sha256::new_with_prefix(&data[..len])),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn batches_align_memory_with_file_offsets() {
        let mut b = Batch::new(10_000);
        assert_eq!(b.cap, 12_288);
        b.reset(4100);
        assert_eq!(b.room(), 12_288 - 4);
        assert_eq!(b.push(&[1; 5]), 5);
        assert_eq!(b.end(), 4105);
        let addr = b.data().as_ptr() as usize;
        assert_eq!(addr % ALIGN, 4);
    }
}
