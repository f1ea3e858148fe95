//! The store handle: open, read, write, sync, close.
//!
//! Threading model. Readers look a key up in the sharded keydir, load the current file set
//! (an `ArcSwap`, no lock) and read the record through the file's memory map: no syscall,
//! and never a wait for a sync. Writers take the writer lock only to encode their records
//! into the write buffer. Under [`SyncPolicy::Always`] they then wait for a sync: the first
//! waiter becomes the syncer, writes the whole buffer with one `write`, calls `fdatasync`
//! with no lock held, then publishes every batch it covered to the keydir in write order and
//! wakes the others. Writes that arrive during a sync are covered by the next one (group
//! commit). Invariant: under `Always` a record becomes visible to readers only after it is
//! durable, so nothing a reader saw can be lost by a crash. For a large group, a helper
//! thread inserts the new keys, hidden, while the sync runs (see `crate::publish`).
//!
//! After a failed write or sync the store is poisoned: what is on disk is no longer known,
//! so every later write fails with [`Error::Poisoned`] until the store is reopened.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use crate::backup::BackupReport;
use crate::batch::WriteBatch;
use crate::data_file::{DataFile, FileId, LOCK_FILE, RunwayStep, sync_dir};
use crate::error::{Corruption, Error, Result};
use crate::file_set::FileSet;
use crate::format::{
    BatchBegin, FILE_HEADER_LEN, RecordKind, decode_record, encode_record, peek_record, record_len,
};
use crate::keydir::{KeyDir, ValueLocation};
use crate::merge::{MergeProgress, MergeReport};
use crate::options::{Builder, Options, SyncPolicy};
use crate::publish::{EARLY_PUBLISH_MIN_OPS, EarlyPublisher, PendingBatch, early_publish};
use crate::recovery::{RecoveryReport, recover};
use crate::scan::corruption;
use crate::stats::{FileStats, Stats};

/// A Bitcask store: a handle that is cheap to clone and can be shared across threads.
///
/// Every clone refers to the same open store. [`Bitcask::close`] closes it for all of them;
/// dropping the last handle without closing flushes and syncs what it can.
#[derive(Clone)]
pub struct Bitcask {
    handle: Arc<Handle>,
}

/// Shared by the user's clones only (background threads hold `Inner` directly), so its drop
/// marks the moment the last user handle goes away.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(error) = self.inner.close() {
            tracing::error!(%error, "closing the store as its last handle dropped failed");
        }
    }
}

impl std::fmt::Debug for Bitcask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitcask")
            .field("dir", &self.handle.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) keydir: Arc<KeyDir>,
    pub(crate) files: ArcSwap<FileSet>,
    pub(crate) writer: Mutex<Writer>,
    commit: Mutex<CommitState>,
    /// Waiters of even and odd sync generations; see `wait_durable`.
    committed: [Condvar; 2],
    group: GroupStats,
    poisoned: AtomicBool,
    closed: AtomicBool,
    /// Held for the whole of a merge or backup: at most one runs, and neither sees the other
    /// remove or half-write files.
    pub(crate) merge_lock: Mutex<()>,
    pub(crate) background: Arc<Background>,
    async_sync: Arc<AsyncSync>,
    preallocator: Arc<Preallocator>,
    early_publisher: Arc<EarlyPublisher>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
    lock_file: File,
}

/// State only the writer touches, under its lock.
pub(crate) struct Writer {
    pub(crate) active: Arc<DataFile>,
    /// Encoded records not yet handed to the OS; they start at `active.len()`.
    buf: Vec<u8>,
    /// The id the next data file gets. Merge raises it to reserve ids for its output.
    pub(crate) next_file_id: u32,
    next_seq: u64,
    /// Under `Always`: written batches waiting for a sync before they are published.
    pending: Vec<PendingBatch>,
}

impl Writer {
    pub(crate) fn buf_len(&self) -> usize {
        self.buf.len()
    }

    /// The sequence number of the last batch written.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// What the last group commit looked like, so the next syncer can wait for stragglers.
#[derive(Default)]
struct GroupStats {
    /// Batches the last sync covered.
    last_size: AtomicUsize,
    /// How long the last `fdatasync` took.
    last_sync_nanos: AtomicU64,
    /// Batches submitted and not yet taken by a syncer.
    pending: AtomicUsize,
    /// How busy the syncs keep the disk; only a sync's leader touches it.
    disk: Mutex<DiskPace>,
}

/// Running averages of how long syncs take and how long the disk rests between them (from
/// one sync's end to the next one's start), over the last several syncs.
#[derive(Default)]
struct DiskPace {
    last_end: Option<Instant>,
    /// Nanoseconds: the average sync, then the average rest; `None` until a rest is known.
    averages: Option<(f64, f64)>,
}

impl DiskPace {
    /// Weight of the newest sync in the averages: one spell of slow syncs, or one pause
    /// of the writers, changes little.
    const WEIGHT: f64 = 1.0 / 8.0;

    /// Takes in a sync that ran from `started` to `ended`, and says how to extend the
    /// runway after it: by the largest step once the disk rests less, on average, than a
    /// sync takes, so the syncs run about back to back (see [`RunwayStep`]).
    fn synced(&mut self, started: Instant, ended: Instant) -> RunwayStep {
        let Some(last_end) = self.last_end.replace(ended) else {
            return RunwayStep::Paced;
        };
        let took = ended.saturating_duration_since(started).as_nanos() as f64;
        let rested = started.saturating_duration_since(last_end).as_nanos() as f64;
        let (sync, rest) = match self.averages {
            None => (took, rested),
            Some((sync, rest)) => (
                sync + (took - sync) * Self::WEIGHT,
                rest + (rested - rest) * Self::WEIGHT,
            ),
        };
        self.averages = Some((sync, rest));
        if rest < sync {
            RunwayStep::Largest
        } else {
            RunwayStep::Paced
        }
    }
}

/// The longest a syncer waits for more batches to join its group.
const MAX_GATHER: Duration = Duration::from_micros(500);

#[derive(Default)]
struct CommitState {
    /// Every batch with a sequence number up to this one is durable and published.
    durable_seq: u64,
    /// Whether a leader is running a sync.
    syncing: bool,
    /// The number of the sync running, or of the last one.
    generation: u64,
    /// The last sequence number the running sync covers; `None` until it has taken the
    /// pending batches (every batch submitted before then is covered).
    covered_upto: Option<u64>,
}

/// Requests for the syncer thread, which syncs on behalf of async waiters (and of pending
/// writes dropped without waiting) so that none of them blocks a thread.
#[derive(Default)]
pub(crate) struct AsyncSync {
    state: Mutex<AsyncSyncState>,
    wake: Condvar,
}

#[derive(Default)]
struct AsyncSyncState {
    /// Futures to wake once their sequence number is durable.
    wakers: Vec<(u64, std::task::Waker)>,
    /// The highest sequence number anyone wants durable.
    wanted: u64,
    /// Every sequence number up to this one has been made durable (or failed).
    served: u64,
    stop: bool,
}

impl AsyncSync {
    /// Asks the syncer to make `seq` durable, waking `waker` when it is.
    fn request(&self, seq: u64, waker: Option<std::task::Waker>) {
        let mut state = self.state.lock();
        if let Some(waker) = waker {
            state.wakers.push((seq, waker));
        }
        state.wanted = state.wanted.max(seq);
        self.wake.notify_one();
    }

    fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    /// Wakes every registered future, whatever its sequence number: they poll again and
    /// find their batch durable or the store poisoned.
    fn wake_all(&self) {
        let wakers = mem::take(&mut self.state.lock().wakers);
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

/// Hands files whose runway runs short to the preallocation thread (see
/// [`Options::preallocate`]).
#[derive(Default)]
struct Preallocator {
    state: Mutex<PreallocatorState>,
    wake: Condvar,
}

#[derive(Default)]
struct PreallocatorState {
    stop: bool,
    file: Option<(Arc<DataFile>, RunwayStep)>,
}

impl Preallocator {
    fn request(&self, file: Arc<DataFile>, step: RunwayStep) {
        self.state.lock().file = Some((file, step));
        self.wake.notify_one();
    }

    /// The next file to extend, and by how much; `None` once the store is closing.
    fn next(&self) -> Option<(Arc<DataFile>, RunwayStep)> {
        let mut state = self.state.lock();
        loop {
            if state.stop {
                return None;
            }
            if let Some(file) = state.file.take() {
                return Some(file);
            }
            self.wake.wait(&mut state);
        }
    }

    fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }
}

/// The preallocation thread: extends runways until the store closes. A failure (a full
/// disk, say) costs only speed: appends then grow the file themselves.
fn preallocate(preallocator: &Preallocator) {
    while let Some((file, step)) = preallocator.next() {
        if let Err(error) = file.extend_runway(step) {
            tracing::warn!(file_id = %file.id(), %error,
                "preallocating data file space failed; appends will grow the file instead");
        }
    }
}

/// A place in a data file just past a record, from which [`Bitcask::read_on`] reads on.
/// Obtained from [`Bitcask::get_with_cursor`] or an earlier `read_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCursor {
    file_id: FileId,
    offset: u64,
}

/// What [`Bitcask::read_on`] does with a record, decided from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Step over it and read on.
    Skip,
    /// Verify it and hand it to the caller.
    Take,
    /// Stop reading: the records the caller wants do not follow.
    Stop,
}

/// Whether a submission may make blocking system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submit {
    MayBlock,
    NonBlocking,
}

/// What a submission did.
enum Submitted {
    /// Submitted as this sequence number.
    Seq(u64),
    /// Not submitted: it would have blocked.
    WouldBlock(WriteBatch),
}

/// What [`Bitcask::try_begin_write`] did.
#[derive(Debug)]
#[must_use = "a submitted write is acknowledged only once it is waited for; a batch handed back was not written"]
pub enum TryWrite {
    /// The batch was submitted: wait for it as for [`Bitcask::begin_write`].
    Submitted(PendingWrite),
    /// Nothing was written: submitting would have waited for the disk. The batch is
    /// handed back for [`Bitcask::begin_write`] on a thread that may block.
    WouldBlock(WriteBatch),
}

/// Wakes the background threads: on rotation, on close, and on their own timers.
#[derive(Default)]
pub(crate) struct Background {
    state: Mutex<BackgroundState>,
    wake: Condvar,
}

#[derive(Default)]
struct BackgroundState {
    stop: bool,
    /// Bumped on every rotation so the maintenance thread writes the new hint file at once.
    rotations: u64,
}

impl Background {
    /// Waits until `timeout` passes, a rotation happens, or the store closes; `false` once
    /// the store is closing.
    fn wait(&self, timeout: Duration, seen_rotations: &mut u64) -> bool {
        let mut state = self.state.lock();
        if !state.stop && state.rotations == *seen_rotations {
            self.wake.wait_for(&mut state, timeout);
        }
        *seen_rotations = state.rotations;
        !state.stop
    }

    pub(crate) fn rotated(&self) {
        self.state.lock().rotations += 1;
        self.wake.notify_all();
    }

    fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }
}

pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Locks the store's directory, creating it if allowed.
pub(crate) fn lock_dir(dir: &Path, options: &Options) -> Result<File> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Err(Error::NotADirectory { path: dir.into() }),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !options.create_if_missing {
                return Err(Error::NotFound { path: dir.into() });
            }
            fs::create_dir_all(dir)?;
        }
        Err(e) => return Err(e.into()),
    }
    let mut lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    match lock_file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(Error::Locked { dir: dir.into() }),
        Err(TryLockError::Error(e)) => return Err(e.into()),
    }
    // The pid is for people reading the directory; the lock itself is the flock.
    lock_file.set_len(0)?;
    writeln!(lock_file, "{}", std::process::id())?;
    Ok(lock_file)
}

impl Bitcask {
    /// Starts building options for a store in `dir`: `Bitcask::builder(dir).open()`.
    pub fn builder(dir: impl AsRef<Path>) -> Builder {
        Builder::new(dir.as_ref())
    }

    /// Opens (or creates) the store in `dir`.
    ///
    /// Takes an exclusive lock on the directory, removes leftovers of interrupted merges,
    /// rebuilds the keydir from hint files (or by scanning data files without one), and cuts
    /// a torn tail off the active file (see [`Bitcask::recovery_report`]).
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle or process has it open, [`Error::NotADirectory`],
    /// [`Error::NotFound`], [`Error::InvalidOptions`], [`Error::Corrupt`] for a bad record
    /// anywhere but a torn tail, and [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Bitcask> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let lock_file = lock_dir(&dir, &options)?;
        let recovered = recover(&dir, options.max_file_size)?;
        let next_file_id = recovered.active.id().0 + 1;
        let inner = Arc::new(Inner {
            dir,
            keydir: Arc::new(recovered.keydir),
            files: ArcSwap::from_pointee(recovered.files),
            writer: Mutex::new(Writer {
                active: recovered.active,
                buf: Vec::new(),
                next_file_id,
                next_seq: 1,
                pending: Vec::new(),
            }),
            commit: Mutex::new(CommitState::default()),
            committed: [Condvar::new(), Condvar::new()],
            group: GroupStats::default(),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            merge_lock: Mutex::new(()),
            background: Arc::default(),
            preallocator: Arc::default(),
            early_publisher: Arc::default(),
            async_sync: Arc::default(),
            threads: Mutex::new(Vec::new()),
            recovery: recovered.report,
            lock_file,
            options,
        });
        inner.start_background_threads();
        Ok(Bitcask {
            handle: Arc::new(Handle { inner }),
        })
    }

    /// The store's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.handle.inner.dir
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.handle.inner.options
    }

    /// What recovery found and did when the store was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.handle.inner.recovery
    }

    /// The value stored under `key`, read and checksum-verified from disk.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the record fails its checksum (the bad data is never returned),
    /// [`Error::Closed`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.handle.inner.read(key, |value, _| value.to_vec())
    }

    /// Calls `with` on the value stored under `key` without copying it out of the map.
    ///
    /// # Errors
    /// As [`Bitcask::get`].
    pub fn get_with<T>(&self, key: &[u8], with: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        self.handle.inner.read(key, |value, _| with(value))
    }

    /// Like [`Bitcask::get_with`], also returning a cursor just past the value's record,
    /// from which [`Bitcask::read_on`] reads the records written after it.
    ///
    /// # Errors
    /// As [`Bitcask::get`].
    pub fn get_with_cursor<T>(
        &self,
        key: &[u8],
        with: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<(T, RecordCursor)>> {
        let mut cursor = None;
        let value = self.handle.inner.read(key, |value, location| {
            let len = record_len(key.len(), value.len()) as u64;
            cursor = Some(RecordCursor {
                file_id: location.file_id,
                offset: u64::from(location.offset) + len,
            });
            with(value)
        })?;
        Ok(value.zip(cursor))
    }

    /// Reads on in file order from `cursor` (just past a record from
    /// [`Bitcask::get_with_cursor`] or an earlier `read_on`), stepping over batch framing
    /// and every record `interest` answers [`Interest::Skip`] for, at most `max_records` of
    /// them in all. Calls `take` on the first record it answers [`Interest::Take`] for,
    /// with its key and value (`None` for a delete), and returns what `take` made and a
    /// cursor past that record.
    ///
    /// Returns `None` on [`Interest::Stop`], after `max_records`, at the end of the file's
    /// published records (under [`SyncPolicy::Always`] only durable records are read), if a
    /// merge has since removed the file, or if a record does not decode or verify: this
    /// is a fast path, and its caller falls back to [`Bitcask::get`], which reports
    /// corruption. Skipped records are stepped over without verifying their checksums
    /// (`interest` sees keys that may be damaged); a taken record is always verified.
    ///
    /// Records are read as written, **whether or not they are still their keys' live
    /// values**: a later write or delete of the key, or a merge, does not change what this
    /// returns. It is for callers that know the records they take this way are live, such as
    /// keys written once and deleted only below a bound the caller tracks; it saves a keydir
    /// lookup per record when reading records written together.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn read_on<T>(
        &self,
        cursor: RecordCursor,
        max_records: usize,
        mut interest: impl FnMut(&[u8]) -> Interest,
        take: impl FnOnce(&[u8], Option<&[u8]>) -> T,
    ) -> Result<Option<(T, RecordCursor)>> {
        let inner = &self.handle.inner;
        inner.check_open()?;
        let files = inner.files.load();
        let Some(file) = files.get(cursor.file_id) else {
            return Ok(None);
        };
        let end = file.published_len();
        let mut offset = cursor.offset;
        let mut records = 0;
        while offset < end && records < max_records {
            let Some(bytes) = file.slice(offset, (end - offset) as usize) else {
                break;
            };
            let Ok(record) = peek_record(bytes) else {
                break;
            };
            let next = offset + record.len() as u64;
            if record.kind == RecordKind::BatchBegin {
                offset = next;
                continue;
            }
            records += 1;
            match interest(record.key) {
                Interest::Skip => offset = next,
                Interest::Stop => break,
                Interest::Take => {
                    let Ok(record) = decode_record(bytes) else {
                        break;
                    };
                    let value = (record.kind == RecordKind::Put).then_some(record.value);
                    let cursor = RecordCursor {
                        file_id: cursor.file_id,
                        offset: next,
                    };
                    return Ok(Some((take(record.key, value), cursor)));
                }
            }
        }
        Ok(None)
    }

    /// Whether `key` is live. Answered from memory, without reading the disk.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.handle.inner.check_open()?;
        let inner = &self.handle.inner;
        Ok(inner
            .keydir
            .get(key)
            .is_some_and(|location| !inner.files.load().hides(location)))
    }

    /// Stores `value` under `key`.
    ///
    /// Under [`SyncPolicy::Always`] this returns after the record is on disk.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`] (nothing is
    /// written), [`Error::Poisoned`], [`Error::Closed`], [`Error::Io`].
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch)
    }

    /// Deletes `key` by writing a tombstone (also when the key is absent).
    ///
    /// Under [`SyncPolicy::Always`] this returns after the tombstone is on disk.
    ///
    /// # Errors
    /// As [`Bitcask::put`].
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch)
    }

    /// Applies every operation of `batch` atomically: after a crash, all or none of them
    /// are visible. An empty batch writes nothing.
    ///
    /// Under [`SyncPolicy::Always`] this returns after the whole batch is on disk.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`],
    /// [`Error::BatchTooLarge`] (nothing is written), [`Error::Poisoned`], [`Error::Closed`],
    /// [`Error::Io`].
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        match self.handle.inner.submit(batch, Submit::MayBlock)? {
            Submitted::Seq(seq) => self.handle.inner.wait_published(seq),
            Submitted::WouldBlock(_) => unreachable!("a submission that may block never refuses"),
        }
    }

    /// Starts writing `batch` and returns without waiting for it to become durable; call
    /// [`PendingWrite::wait`] for that. Batches are written, made durable and made visible
    /// in the order of the calls to this method, so a caller that assigns sequence numbers
    /// (an event store's global positions, say) under its own lock and submits under the
    /// same lock gets them published in that order, while the waits of many callers share
    /// one sync.
    ///
    /// # Errors
    /// As [`Bitcask::write`], except that sync failures surface from
    /// [`PendingWrite::wait`].
    pub fn begin_write(&self, batch: WriteBatch) -> Result<PendingWrite> {
        match self.handle.inner.submit(batch, Submit::MayBlock)? {
            Submitted::Seq(seq) => Ok(self.pending(seq)),
            Submitted::WouldBlock(_) => unreachable!("a submission that may block never refuses"),
        }
    }

    /// Like [`Bitcask::begin_write`] if submitting `batch` makes no system call that can
    /// wait for the disk; otherwise writes nothing and hands the batch back. Submitting
    /// blocks only when the active file must be sealed and a new one created (under
    /// [`SyncPolicy::Always`]) or, under the other policies, when the write buffer must be
    /// handed to the OS. Async callers use it to submit on their own thread, and move to
    /// a blocking thread only when it returns [`TryWrite::WouldBlock`].
    ///
    /// # Errors
    /// As [`Bitcask::begin_write`].
    pub fn try_begin_write(&self, batch: WriteBatch) -> Result<TryWrite> {
        Ok(
            match self.handle.inner.submit(batch, Submit::NonBlocking)? {
                Submitted::Seq(seq) => TryWrite::Submitted(self.pending(seq)),
                Submitted::WouldBlock(batch) => TryWrite::WouldBlock(batch),
            },
        )
    }

    /// Whether the batch `ticket` names is published: durable (under
    /// [`SyncPolicy::Always`]) and visible to readers, so [`PendingWrite::wait`] on it
    /// would return at once. Never blocks.
    #[must_use]
    pub fn is_published(&self, ticket: WriteTicket) -> bool {
        let inner = &self.handle.inner;
        inner.options.sync != SyncPolicy::Always || inner.durable_seq() >= ticket.0
    }

    /// Another [`PendingWrite`] for the batch `ticket` names, for a second caller that must
    /// wait for the same batch (an event store answering a retry with the outcome of the
    /// append it repeats). Both complete when the batch is published, or both fail.
    #[must_use = "a pending write is durable only once `wait` returns or the future completes"]
    pub fn pending_write(&self, ticket: WriteTicket) -> PendingWrite {
        self.pending(ticket.0)
    }

    fn pending(&self, seq: u64) -> PendingWrite {
        PendingWrite {
            inner: Arc::clone(&self.handle.inner),
            seq: Some(seq),
            polled: false,
        }
    }

    /// Makes every write made so far durable, whatever the sync policy.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Closed`], [`Error::Io`].
    pub fn sync(&self) -> Result<()> {
        self.handle.inner.check_writable()?;
        self.handle.inner.sync_all()
    }

    /// Every live key, in no particular order. The keydir is walked one shard at a time, so
    /// memory stays bounded; keys written or deleted during the walk may or may not appear.
    #[must_use]
    pub fn keys(&self) -> Keys {
        self.keys_with_prefix(&[])
    }

    /// Every live key starting with `prefix`, in no particular order; see [`Bitcask::keys`].
    #[must_use]
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Keys {
        Keys {
            inner: Arc::clone(&self.handle.inner),
            prefix: prefix.to_vec(),
            shard: 0,
            current: Vec::new().into_iter(),
        }
    }

    /// Number of live keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.handle.inner.keydir.len()
    }

    /// Whether the store holds no live key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live keys, memory held by the keydir, and live and dead bytes per data file.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let files = self.handle.inner.files.load();
        let (active, active_len) = {
            let writer = self.handle.inner.writer.lock();
            (
                writer.active.id(),
                writer.active.len() + writer.buf_len() as u64,
            )
        };
        Stats {
            live_keys: self.handle.inner.keydir.len(),
            keydir_bytes: self.handle.inner.keydir.heap_bytes(),
            files: files
                .iter()
                .map(|file| FileStats {
                    file_id: file.id(),
                    len: if file.id() == active {
                        active_len
                    } else {
                        file.len()
                    },
                    live_bytes: file.live_bytes(),
                    dead_bytes: file.dead_bytes(),
                    active: file.id() == active,
                    has_hint: file.has_hint(),
                })
                .collect(),
        }
    }

    /// Merges every sealed file now, on the calling thread, while other threads keep reading
    /// and writing. Returns once the old files are removed. Only one merge runs at a time; a
    /// second call waits for the first.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if an input file has a bad record (the merge stops and the store
    /// is left as it was, less any temporary files), [`Error::Poisoned`], [`Error::Closed`],
    /// [`Error::Io`].
    pub fn merge(&self) -> Result<MergeReport> {
        self.handle.inner.merge(&mut |_| {})
    }

    /// [`Bitcask::merge`], calling `progress` after each input file.
    ///
    /// # Errors
    /// As [`Bitcask::merge`].
    pub fn merge_with_progress(
        &self,
        mut progress: impl FnMut(MergeProgress),
    ) -> Result<MergeReport> {
        self.handle.inner.merge(&mut progress)
    }

    /// Copies the store into `dest` (created if missing; it must otherwise be an empty
    /// directory) while reads and writes go on. The copy holds every write acknowledged
    /// before the call and opens as a store of its own.
    ///
    /// # Errors
    /// [`Error::BackupDestinationNotEmpty`], [`Error::Closed`], [`Error::Io`].
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        self.handle.inner.backup(dest.as_ref())
    }

    /// Flushes and syncs every write, stops the background threads, writes any missing hint
    /// files and releases the directory lock. Every clone of this handle fails with [`Error::Closed`] afterwards.
    /// Closing twice is not an error.
    ///
    /// # Errors
    /// [`Error::Io`] if the final sync fails; the lock is released all the same.
    pub fn close(self) -> Result<()> {
        self.handle.inner.close()
    }
}

/// A batch submitted by [`Bitcask::begin_write`] that may not be durable yet.
///
/// Wait for it with [`PendingWrite::wait`] (blocking) or by awaiting it: it is a
/// [`Future`](std::future::Future), driven by the engine's syncer thread, so async callers
/// need no thread per write in flight. Dropping it without waiting waits all the same
/// (blocking), unless it was already polled as a future: then the syncer thread finishes the
/// job, so cancelling an async caller never blocks its executor.
#[must_use = "a pending write is durable only once `wait` returns or the future completes"]
pub struct PendingWrite {
    inner: Arc<Inner>,
    seq: Option<u64>,
    polled: bool,
}

impl fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingWrite")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Names a batch submitted by [`Bitcask::begin_write`], so it can be asked about
/// ([`Bitcask::is_published`]) or waited for again ([`Bitcask::pending_write`]) without
/// holding its [`PendingWrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTicket(u64);

impl PendingWrite {
    /// The ticket naming this write's batch.
    #[must_use]
    pub fn ticket(&self) -> WriteTicket {
        // A completed write's batch is published, which sequence 0 always is.
        WriteTicket(self.seq.unwrap_or(0))
    }

    /// Waits until the batch is durable (under [`SyncPolicy::Always`]) and visible to
    /// readers.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`] if the sync covering the batch failed.
    pub fn wait(mut self) -> Result<()> {
        match self.seq.take() {
            Some(seq) => self.inner.wait_published(seq),
            None => Ok(()),
        }
    }
}

impl std::future::Future for PendingWrite {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        let Some(seq) = self.seq else {
            return std::task::Poll::Ready(Ok(()));
        };
        let inner = &self.inner;
        if inner.options.sync != SyncPolicy::Always || inner.durable_seq() >= seq {
            self.seq = None;
            return std::task::Poll::Ready(Ok(()));
        }
        if inner.poisoned.load(Ordering::Acquire) {
            self.seq = None;
            return std::task::Poll::Ready(Err(Error::Poisoned));
        }
        inner.async_sync.request(seq, Some(cx.waker().clone()));
        let durable = inner.durable_seq() >= seq;
        self.polled = true;
        // Checked again after registering: the syncer may have finished in between.
        if durable {
            self.seq = None;
            return std::task::Poll::Ready(Ok(()));
        }
        std::task::Poll::Pending
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        let Some(seq) = self.seq.take() else { return };
        if self.polled {
            // Polled as a future: the syncer thread makes it durable and published.
            self.inner.async_sync.request(seq, None);
        } else if let Err(error) = self.inner.wait_published(seq) {
            tracing::error!(%error, "a write dropped without waiting failed to sync");
        }
    }
}

/// Iterator over keys; see [`Bitcask::keys`].
pub struct Keys {
    inner: Arc<Inner>,
    prefix: Vec<u8>,
    shard: usize,
    current: std::vec::IntoIter<Box<[u8]>>,
}

impl Iterator for Keys {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(key) = self.current.next() {
                return Some(key.into_vec());
            }
            let files = self.inner.files.load();
            let keys = self
                .inner
                .keydir
                .shard_keys(self.shard, &self.prefix, |location| !files.hides(location))?;
            self.shard += 1;
            self.current = keys.into_iter();
        }
    }
}

impl Inner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.poisoned.load(Ordering::Acquire) {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    pub(crate) fn poison<E>(&self, error: E) -> E {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), "a write or sync failed; refusing further writes");
        error
    }

    fn read<T>(
        &self,
        key: &[u8],
        with: impl FnOnce(&[u8], ValueLocation) -> T,
    ) -> Result<Option<T>> {
        self.check_open()?;
        loop {
            let Some(location) = self.keydir.get(key) else {
                return Ok(None);
            };
            let len = record_len(key.len(), location.value_len as usize);
            let offset = u64::from(location.offset);
            let files = self.files.load();
            if files.hides(location) {
                return Ok(None);
            }
            if let Some(file) = files.get(location.file_id)
                && let Some(bytes) = file.slice(offset, len)
            {
                return verified_value(bytes, key, location)
                    .map(|value| Some(with(value, location)));
            }
            // Either the record is still in the write buffer (only under `Interval` and
            // `Never`, where writes are visible before they reach the OS), or a merge retired
            // the file after the lookup and the keydir already points elsewhere.
            let writer = self.writer.lock();
            if writer.active.id() == location.file_id && offset >= writer.active.len() {
                let start = (offset - writer.active.len()) as usize;
                return verified_value(&writer.buf[start..start + len], key, location)
                    .map(|value| Some(with(value, location)));
            }
        }
    }

    fn validate(&self, batch: &WriteBatch) -> Result<usize> {
        let options = &self.options;
        let mut encoded = if batch.len() > 1 {
            record_len(0, crate::format::BATCH_BEGIN_VALUE_LEN)
        } else {
            0
        };
        for (_, key, value) in batch.ops() {
            if key.is_empty() {
                return Err(Error::EmptyKey);
            }
            if key.len() > options.max_key_size {
                return Err(Error::KeyTooLarge {
                    len: key.len(),
                    max: options.max_key_size,
                });
            }
            if value.len() > options.max_value_size {
                return Err(Error::ValueTooLarge {
                    len: value.len(),
                    max: options.max_value_size,
                });
            }
            encoded += record_len(key.len(), value.len());
        }
        if encoded > options.max_batch_size {
            return Err(Error::BatchTooLarge {
                len: encoded,
                max: options.max_batch_size,
            });
        }
        Ok(encoded)
    }

    /// Encodes `batch` into the log and returns its sequence number (0 for an empty batch,
    /// which is always durable). Batches are ordered by the calls to this function.
    fn submit(&self, batch: WriteBatch, mode: Submit) -> Result<Submitted> {
        let encoded_len = self.validate(&batch)?;
        self.check_writable()?;
        if batch.is_empty() {
            return Ok(Submitted::Seq(0));
        }
        let timestamp_micros = now_micros();
        let mut writer = self.writer.lock();
        // Checked again under the lock: a sync may have failed since.
        self.check_writable()?;
        if mode == Submit::NonBlocking
            && (self.must_rotate(&writer, encoded_len as u64)
                || (self.options.sync != SyncPolicy::Always
                    && writer.buf.len() + encoded_len >= self.options.write_buffer_size))
        {
            return Ok(Submitted::WouldBlock(batch));
        }
        self.rotate_if_full(&mut writer, encoded_len as u64)?;
        let seq = writer.next_seq;
        writer.next_seq += 1;
        let unit = encode_unit(&mut writer, batch, timestamp_micros, encoded_len);
        if self.options.sync == SyncPolicy::Always {
            writer.pending.push(unit);
            self.group.pending.fetch_add(1, Ordering::Relaxed);
        } else {
            self.publish(&unit, None)?;
            if writer.buf.len() >= self.options.write_buffer_size {
                self.flush(&mut writer)?;
            }
        }
        Ok(Submitted::Seq(seq))
    }

    /// Hands the write buffer to the OS.
    pub(crate) fn flush(&self, writer: &mut Writer) -> Result<()> {
        if writer.buf.is_empty() {
            return Ok(());
        }
        let offset = writer.active.len();
        writer
            .active
            .append(offset, &writer.buf)
            .map_err(|e| self.poison(Error::Io(e)))?;
        writer.buf.clear();
        // Under `Always` the runway is extended after each sync instead (see `lead_sync`).
        if self.options.preallocate
            && self.options.sync != SyncPolicy::Always
            && writer.active.wants_runway()
        {
            self.preallocator
                .request(Arc::clone(&writer.active), RunwayStep::Paced);
        }
        if writer.buf.capacity() > self.options.write_buffer_size.max(1 << 20) * 4 {
            writer.buf.shrink_to(self.options.write_buffer_size);
        }
        Ok(())
    }

    /// Waits until batch `seq` is durable and published, syncing on behalf of every waiter
    /// if no one else is.
    ///
    /// Syncs are numbered in generations. A waiter whose batch the sync in progress will
    /// cover (it was submitted before that sync took the pending batches) sleeps on that
    /// generation's condition variable; any other waiter is covered by the next sync and
    /// sleeps on the other one. A finished sync wakes all of its own waiters and exactly one
    /// of the next generation's, which leads that sync; the rest sleep on until it ends.
    /// So no writer is woken just to find its batch still pending.
    fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut commit = self.commit.lock();
        loop {
            if commit.durable_seq >= seq {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(Error::Poisoned);
            }
            if commit.syncing {
                let covered = commit.covered_upto.is_none_or(|upto| seq <= upto);
                let generation = commit.generation + u64::from(!covered);
                self.committed[generation as usize % 2].wait(&mut commit);
                continue;
            }
            commit.syncing = true;
            commit.generation += 1;
            commit.covered_upto = None;
            let generation = commit.generation;
            let synced = self.lead_sync(&mut commit);
            commit.syncing = false;
            match synced {
                Ok(upto) => {
                    commit.durable_seq = commit.durable_seq.max(upto);
                    self.committed[generation as usize % 2].notify_all();
                    self.committed[(generation as usize + 1) % 2].notify_one();
                }
                Err(error) => {
                    for condvar in &self.committed {
                        condvar.notify_all();
                    }
                    return Err(error);
                }
            }
        }
    }

    /// When the last group held several batches, gives the writers it woke a moment to submit
    /// again before this sync takes the pending batches: without it the first writer back
    /// syncs alone and groups alternate between one batch and many. A lone writer never
    /// waits.
    fn gather(&self) {
        let wanted = self.group.last_size.load(Ordering::Relaxed);
        if wanted <= 1 {
            return;
        }
        let window = Duration::from_nanos(self.group.last_sync_nanos.load(Ordering::Relaxed) / 4);
        let deadline = Instant::now() + window.min(MAX_GATHER);
        while self.group.pending.load(Ordering::Relaxed) < wanted && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// The leader's part of a group commit: gathers stragglers, takes every pending batch
    /// (recording what it covers while holding the commit lock, so waiters can tell whether
    /// this sync is theirs), syncs and publishes with the commit lock released. Returns the
    /// last sequence number now durable.
    fn lead_sync(&self, commit: &mut parking_lot::MutexGuard<'_, CommitState>) -> Result<u64> {
        parking_lot::MutexGuard::unlocked(commit, || self.gather());
        let (file, pending, upto) = {
            let mut writer = self.writer.lock();
            self.flush(&mut writer)?;
            self.group.pending.store(0, Ordering::Relaxed);
            (
                Arc::clone(&writer.active),
                mem::take(&mut writer.pending),
                writer.next_seq - 1,
            )
        };
        commit.covered_upto = Some(upto);
        parking_lot::MutexGuard::unlocked(commit, || {
            let op_count: usize = pending.iter().map(PendingBatch::op_count).sum();
            let (pending, handed_over) = if op_count >= EARLY_PUBLISH_MIN_OPS {
                match self.early_publisher.hand_over(pending) {
                    Some(refused) => (refused, false),
                    None => (Vec::new(), true),
                }
            } else {
                (pending, false)
            };
            let started = Instant::now();
            let synced = file.sync();
            let ended = Instant::now();
            let took = u64::try_from((ended - started).as_nanos()).unwrap_or(u64::MAX);
            // Taken back even if the sync failed: the helper must be idle for the next group.
            let (pending, handled) = if handed_over {
                let group = self.early_publisher.take_back();
                fail::fail_point!("publish::before_reveal");
                (group.units, Some(group.handled))
            } else {
                (pending, None)
            };
            synced.map_err(|e| self.poison(Error::Io(e)))?;
            // Asked for now, while the writers prepare the next group, the zeros usually
            // reach the disk before that group's sync starts (see `DataFile::extend_runway`),
            // unless the syncs run back to back.
            let step = self.group.disk.lock().synced(started, ended);
            if self.options.preallocate && file.wants_runway() {
                self.preallocator.request(Arc::clone(&file), step);
            }
            self.group.last_sync_nanos.store(took, Ordering::Relaxed);
            self.group.last_size.store(pending.len(), Ordering::Relaxed);
            let mut first_op = 0;
            for unit in &pending {
                let next_op = first_op + unit.op_count();
                self.publish(unit, handled.as_ref().map(|h| &h[first_op..next_op]))?;
                first_op = next_op;
            }
            Ok(upto)
        })
    }

    /// Every batch up to this sequence number is durable and published.
    fn durable_seq(&self) -> u64 {
        self.commit.lock().durable_seq
    }

    /// Waits until every batch up to `seq` is in the keydir (under `Interval` and `Never`
    /// batches are published as they are written).
    pub(crate) fn wait_published(&self, seq: u64) -> Result<()> {
        if self.options.sync == SyncPolicy::Always {
            self.wait_durable(seq)
        } else {
            Ok(())
        }
    }

    /// Flushes and syncs everything written so far, under any policy.
    pub(crate) fn sync_all(&self) -> Result<()> {
        if self.options.sync == SyncPolicy::Always {
            let seq = self.writer.lock().next_seq - 1;
            return self.wait_durable(seq);
        }
        let file = {
            let mut writer = self.writer.lock();
            self.flush(&mut writer)?;
            Arc::clone(&writer.active)
        };
        file.sync().map_err(|e| self.poison(Error::Io(e)))
    }

    /// Seals the active file and starts a new one if `incoming` more bytes would take it
    /// past `max_file_size` (an oversized batch gets a file of its own).
    fn rotate_if_full(&self, writer: &mut Writer, incoming: u64) -> Result<()> {
        if self.must_rotate(writer, incoming) {
            self.rotate(writer, incoming)?;
        }
        Ok(())
    }

    /// Whether `incoming` more bytes need a new active file.
    fn must_rotate(&self, writer: &Writer, incoming: u64) -> bool {
        let used = writer.active.len() + writer.buf.len() as u64;
        let fits = used + incoming <= self.options.max_file_size;
        // A record larger than a file still goes into an empty active file if its mapping
        // has room (it does when the file was created for it); otherwise it gets a new one.
        let fits_empty =
            used == FILE_HEADER_LEN as u64 && used + incoming <= writer.active.capacity();
        !(fits || fits_empty)
    }

    /// Flushes and syncs the active file, then opens a new active file with room for at
    /// least `incoming` bytes. Batches pending publication stay pending: the sync here made
    /// them durable and the next group sync publishes them, in order.
    pub(crate) fn rotate(&self, writer: &mut Writer, incoming: u64) -> Result<()> {
        self.flush(writer)?;
        writer
            .active
            .seal()
            .and_then(|()| writer.active.sync())
            .map_err(|e| self.poison(Error::Io(e)))?;
        let id = FileId(writer.next_file_id);
        let capacity = self
            .options
            .max_file_size
            .max(FILE_HEADER_LEN as u64 + incoming);
        let file = Arc::new(DataFile::create(&self.dir, id, capacity)?);
        sync_dir(&self.dir)?;
        writer.next_file_id += 1;
        self.files.rcu(|files| {
            let mut files = FileSet::clone(files);
            files.insert(Arc::clone(&file));
            files
        });
        writer.active = file;
        self.background.rotated();
        fail::fail_point!("rotate::after_new_file");
        Ok(())
    }

    fn start_background_threads(self: &Arc<Self>) {
        let mut threads = self.threads.lock();
        if self.options.sync == SyncPolicy::Always {
            let store = Arc::downgrade(self);
            let requests = Arc::clone(&self.async_sync);
            threads.push(
                std::thread::Builder::new()
                    .name("caskade-syncer".into())
                    .spawn(move || async_syncer(&store, &requests))
                    .expect("spawning a thread succeeds unless the system is out of resources"),
            );
        }
        if let SyncPolicy::Interval(interval) = self.options.sync {
            let store = Arc::downgrade(self);
            let background = Arc::clone(&self.background);
            threads.push(
                std::thread::Builder::new()
                    .name("caskade-sync".into())
                    .spawn(move || interval_sync(&store, &background, interval))
                    .expect("spawning a thread succeeds unless the system is out of resources"),
            );
        }
        if self.options.preallocate {
            let preallocator = Arc::clone(&self.preallocator);
            threads.push(
                std::thread::Builder::new()
                    .name("caskade-prealloc".into())
                    .spawn(move || preallocate(&preallocator))
                    .expect("spawning a thread succeeds unless the system is out of resources"),
            );
        }
        if self.options.sync == SyncPolicy::Always {
            let publisher = Arc::clone(&self.early_publisher);
            let keydir = Arc::clone(&self.keydir);
            publisher.start();
            threads.push(
                std::thread::Builder::new()
                    .name("caskade-publish".into())
                    .spawn(move || early_publish(&publisher, &keydir))
                    .expect("spawning a thread succeeds unless the system is out of resources"),
            );
        }
        let store = Arc::downgrade(self);
        let background = Arc::clone(&self.background);
        let interval = self.options.maintenance_interval;
        threads.push(
            std::thread::Builder::new()
                .name("caskade-maintenance".into())
                .spawn(move || maintenance(&store, &background, interval))
                .expect("spawning a thread succeeds unless the system is out of resources"),
        );
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.background.stop();
        self.async_sync.stop();
        self.preallocator.stop();
        self.early_publisher.stop();
        let threads = mem::take(&mut *self.threads.lock());
        for thread in threads {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        let synced = if self.poisoned.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.sync_all().and_then(|()| {
                // The runway goes, so a closed store's files hold only records.
                let active = Arc::clone(&self.writer.lock().active);
                active
                    .seal()
                    .and_then(|()| active.sync())
                    .map_err(Error::Io)
            })
        };
        // A clean shutdown leaves a hint file beside every sealed file, so the next open
        // reads no values; failing to write one only slows that open down.
        if let Err(error) = self.write_missing_hints() {
            tracing::warn!(%error, "writing hint files at close failed");
        }
        self.async_sync.wake_all();
        let unlocked = self.lock_file.unlock();
        synced?;
        unlocked?;
        Ok(())
    }
}

/// Encodes `batch` into the write buffer and returns it as a batch pending publication.
fn encode_unit(
    writer: &mut Writer,
    batch: WriteBatch,
    timestamp_micros: u64,
    encoded_len: usize,
) -> PendingBatch {
    let file_id = writer.active.id();
    let base = writer.active.len() + writer.buf.len() as u64;
    let buf = &mut writer.buf;
    let start = buf.len();
    buf.reserve(encoded_len);
    let mut framing_len = 0;
    if batch.len() > 1 {
        let body_len = encoded_len - record_len(0, crate::format::BATCH_BEGIN_VALUE_LEN);
        let begin = BatchBegin {
            op_count: batch.len() as u32,
            body_len: u32::try_from(body_len).expect("batches are at most max_batch_size bytes"),
        };
        encode_record(
            buf,
            RecordKind::BatchBegin,
            timestamp_micros,
            &[],
            &begin.encode(),
        );
        framing_len = (buf.len() - start) as u64;
    }
    let mut offsets = Vec::with_capacity(batch.len());
    for (kind, key, value) in batch.ops() {
        let offset = base + (buf.len() - start) as u64;
        offsets.push(u32::try_from(offset).expect("data files stay below 4 GiB"));
        encode_record(buf, kind, timestamp_micros, key, value);
    }
    debug_assert_eq!(buf.len() - start, encoded_len);
    PendingBatch {
        file_id,
        end: base + encoded_len as u64,
        framing_len,
        timestamp_micros,
        batch,
        offsets,
    }
}

/// Decodes and checks the record a keydir entry points at, returning its value.
fn verified_value<'a>(bytes: &'a [u8], key: &[u8], location: ValueLocation) -> Result<&'a [u8]> {
    let corrupt = |reason| Error::Corrupt {
        file_id: location.file_id,
        offset: u64::from(location.offset),
        reason,
    };
    let record = decode_record(bytes).map_err(|e| corrupt(corruption(e)))?;
    if record.kind != RecordKind::Put || record.key != key {
        return Err(corrupt(Corruption::KeyMismatch));
    }
    Ok(record.value)
}

/// The syncer thread: leads (or joins) group commits for what async waiters and dropped
/// pending writes want durable, then wakes the futures whose batches are.
fn async_syncer(store: &Weak<Inner>, requests: &AsyncSync) {
    loop {
        let wanted = {
            let mut state = requests.state.lock();
            while !state.stop && state.wanted <= state.served {
                requests.wake.wait(&mut state);
            }
            if state.stop {
                return;
            }
            state.wanted
        };
        let Some(store) = store.upgrade() else { return };
        let synced = store.wait_durable(wanted);
        let durable = store.durable_seq();
        drop(store);
        let ready: Vec<std::task::Waker> = {
            let mut state = requests.state.lock();
            // After a failure the store is poisoned: every waiter learns it when it polls.
            let upto = if synced.is_ok() { durable } else { u64::MAX };
            state.served = state.served.max(upto);
            let (ready, waiting) = mem::take(&mut state.wakers)
                .into_iter()
                .partition::<Vec<_>, _>(|(seq, _)| *seq <= upto);
            state.wakers = waiting;
            ready.into_iter().map(|(_, waker)| waker).collect()
        };
        for waker in ready {
            waker.wake();
        }
    }
}

fn interval_sync(store: &Weak<Inner>, background: &Background, interval: Duration) {
    let mut rotations = 0;
    while background.wait(interval, &mut rotations) {
        let Some(store) = store.upgrade() else { return };
        if store.check_writable().is_ok()
            && let Err(error) = store.sync_all()
        {
            tracing::error!(%error, "interval sync failed");
        }
    }
}

fn maintenance(store: &Weak<Inner>, background: &Background, interval: Duration) {
    let mut rotations = 0;
    while background.wait(interval, &mut rotations) {
        let Some(store) = store.upgrade() else { return };
        if let Err(error) = store.write_missing_hints() {
            tracing::warn!(%error, "writing hint files failed; start-up will scan those data files");
        }
        if store.merge_is_due()
            && let Err(error) = store.merge(&mut |_| {})
        {
            tracing::error!(%error, "automatic merge failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pace` `count` syncs of `sync_micros` each, `rest_micros` apart, from `*now`;
    /// returns the step after the last.
    fn syncs(
        pace: &mut DiskPace,
        now: &mut Instant,
        count: usize,
        sync_micros: u64,
        rest_micros: u64,
    ) -> RunwayStep {
        let mut step = RunwayStep::Paced;
        for _ in 0..count {
            let started = *now + Duration::from_micros(rest_micros);
            let ended = started + Duration::from_micros(sync_micros);
            step = pace.synced(started, ended);
            *now = ended;
        }
        step
    }

    #[test]
    fn the_runway_takes_the_largest_steps_once_syncs_run_back_to_back() {
        use RunwayStep::{Largest, Paced};
        let mut pace = DiskPace::default();
        let mut now = Instant::now();
        // Phases of (syncs, µs each, µs of rest before each), in order, and the step after.
        let phases = [
            (1, 100, 0, Paced, "a first sync has no rest to compare"),
            (50, 300, 900, Paced, "the disk rests 3 times a sync"),
            (1, 300, 0, Paced, "one sync right after another"),
            (50, 150, 40, Largest, "the disk rests a quarter of a sync"),
            (50, 100, 400, Paced, "the writers slowed down"),
        ];
        for (count, sync_micros, rest_micros, expected, why) in phases {
            let step = syncs(&mut pace, &mut now, count, sync_micros, rest_micros);
            assert_eq!(step, expected, "{why}");
        }
    }
}
