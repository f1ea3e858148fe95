//! The store handle, [`Bitcask`]: it opens the store, owns its components and routes each
//! call to the one that does the work.
//!
//! The components, each in a module of its own:
//! - the index (`crate::index`): the keydir and the file set; readers need nothing else;
//! - the log (`crate::log`): the active file, its write buffer, rotation;
//! - the committer (`crate::commit`): sequencing and group commit; [`PendingWrite`]
//!   (`crate::pending`) waits on it;
//! - the background work: the preallocator (`crate::runway`), the publish helper
//!   (`crate::publish`), and the maintenance rounds (`crate::maintenance`) that write hint
//!   files and merge (`crate::merge`);
//! - the directory lock (`crate::lock`), held from open to close.
//!
//! Readers look a key up in the index and read the record through the file's memory map: no
//! syscall, and never a wait for a sync. Writers go through the committer. Invariant: every
//! component is created before the threads that use it start, and the threads are joined
//! before the store's final sync at close.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::backup::{self, BackupReport};
use crate::batch::WriteBatch;
use crate::cache;
use crate::commit::{Committer, Submit, Submitted};
use crate::cursor::{self, Interest, RecordCursor};
use crate::error::{Error, Result};
use crate::index::{Index, Keys};
use crate::keydir::ValueLocation;
use crate::lock::lock_dir;
use crate::log::Log;
use crate::maintenance::Maintenance;
use crate::merge::{MergeProgress, MergeReport, Merger};
use crate::options::{Options, SyncPolicy};
use crate::pending::{AsyncSync, PendingWrite, WriteTicket};
use crate::publish::{EarlyPublisher, early_publish};
use crate::read;
use crate::recovery::{RecoveryReport, recover};
use crate::runway::Runway;
use crate::stats::Stats;

/// A Bitcask store: a handle that is cheap to clone and can be shared across threads.
///
/// Every clone refers to the same open store. [`Bitcask::close`] closes it for all of them;
/// dropping the last handle without closing flushes and syncs what it can.
#[derive(Clone)]
pub struct Bitcask {
    handle: Arc<Handle>,
}

/// Shared by the user's clones only (background threads hold `Store` directly), so its drop
/// marks the moment the last user handle goes away.
struct Handle {
    store: Arc<Store>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(error) = self.store.close() {
            tracing::error!(%error, "closing the store as its last handle dropped failed");
        }
    }
}

impl std::fmt::Debug for Bitcask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitcask")
            .field("dir", &self.store().dir)
            .finish_non_exhaustive()
    }
}

/// The open store's components.
struct Store {
    dir: PathBuf,
    options: Options,
    index: Arc<Index>,
    log: Arc<Log>,
    committer: Arc<Committer>,
    async_sync: Arc<AsyncSync>,
    runway: Arc<Runway>,
    early_publisher: Arc<EarlyPublisher>,
    maintenance: Arc<Maintenance>,
    /// Held for the whole of a merge, hint-file pass or backup: at most one runs, and none
    /// sees another remove or half-write files.
    merge_lock: Mutex<()>,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
    lock_file: std::fs::File,
}

impl Bitcask {
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
        let lock_file = lock_dir(&dir, options.create_if_missing)?;
        let recovered = recover(&dir, options.max_file_size)?;
        let index = Arc::new(Index::new(recovered.keydir, recovered.files));
        let runway = Arc::new(Runway::default());
        let maintenance = Arc::new(Maintenance::default());
        let early_publisher = Arc::new(EarlyPublisher::default());
        let log = Arc::new(Log::new(
            &dir,
            &options,
            recovered.active,
            Arc::clone(&index),
            Arc::clone(&runway),
            Arc::clone(&maintenance),
        ));
        let committer = Arc::new(Committer::new(
            &options,
            Arc::clone(&log),
            Arc::clone(&index),
            Arc::clone(&runway),
            Arc::clone(&early_publisher),
        ));
        let store = Arc::new(Store {
            dir,
            options,
            index,
            log,
            committer,
            async_sync: Arc::default(),
            runway,
            early_publisher,
            maintenance,
            merge_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            recovery: recovered.report,
            lock_file,
        });
        store.start_background_threads();
        Ok(Bitcask {
            handle: Arc::new(Handle { store }),
        })
    }

    fn store(&self) -> &Store {
        &self.handle.store
    }

    /// The store's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.store().dir
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.store().options
    }

    /// What recovery found and did when the store was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.store().recovery
    }

    /// The value stored under `key`, read and checksum-verified from disk.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the record fails its checksum (the bad data is never returned),
    /// [`Error::Closed`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store().read_copy(key)
    }

    /// Calls `with` on the value stored under `key` without copying it out of the map.
    ///
    /// # Errors
    /// As [`Bitcask::get`].
    pub fn get_with<T>(&self, key: &[u8], with: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        self.store().read(key, |value, _| with(value))
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
        let value = self.store().read(key, |value, location| {
            cursor = Some(RecordCursor::after(key, location));
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
        interest: impl FnMut(&[u8]) -> Interest,
        take: impl FnOnce(&[u8], Option<&[u8]>) -> T,
    ) -> Result<Option<(T, RecordCursor)>> {
        let store = self.store();
        store.check_open()?;
        let files = store.index.files();
        Ok(cursor::read_on(&files, cursor, max_records, interest, take))
    }

    /// Whether `key` is live. Answered from memory, without reading the disk.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.store().check_open()?;
        Ok(self.store().index.locate(key).is_some())
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
        match self.store().submit(batch, Submit::MayBlock)? {
            Submitted::Seq(seq) => self.store().committer.wait_published(seq),
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
        match self.store().submit(batch, Submit::MayBlock)? {
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
        Ok(match self.store().submit(batch, Submit::NonBlocking)? {
            Submitted::Seq(seq) => TryWrite::Submitted(self.pending(seq)),
            Submitted::WouldBlock(batch) => TryWrite::WouldBlock(batch),
        })
    }

    /// Whether the batch `ticket` names is published: durable (under
    /// [`SyncPolicy::Always`]) and visible to readers, so [`PendingWrite::wait`] on it
    /// would return at once. Never blocks.
    #[must_use]
    pub fn is_published(&self, ticket: WriteTicket) -> bool {
        self.store().committer.is_published(ticket.0)
    }

    /// Another [`PendingWrite`] for the batch `ticket` names, for a second caller that must
    /// wait for the same batch (an event store answering a retry with the outcome of the
    /// append it repeats). Both complete when the batch is published, or both fail.
    #[must_use = "a pending write is durable only once `wait` returns or the future completes"]
    pub fn pending_write(&self, ticket: WriteTicket) -> PendingWrite {
        self.pending(ticket.0)
    }

    fn pending(&self, seq: u64) -> PendingWrite {
        let store = self.store();
        PendingWrite::new(
            Arc::clone(&store.committer),
            Arc::clone(&store.async_sync),
            seq,
        )
    }

    /// Makes every write made so far durable, whatever the sync policy.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Closed`], [`Error::Io`].
    pub fn sync(&self) -> Result<()> {
        self.store().check_writable()?;
        self.store().committer.sync_all()
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
        self.store().index.keys(prefix)
    }

    /// Number of live keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.store().index.keydir.len()
    }

    /// Whether the store holds no live key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live keys, memory held by the keydir, and live and dead bytes per data file.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let store = self.store();
        let (active, active_len) = {
            let writer = store.log.writer();
            (writer.active.id(), writer.active_len())
        };
        store.index.stats(active, active_len)
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
        self.store().merge(&mut |_| {})
    }

    /// [`Bitcask::merge`], calling `progress` after each input file.
    ///
    /// # Errors
    /// As [`Bitcask::merge`].
    pub fn merge_with_progress(
        &self,
        mut progress: impl FnMut(MergeProgress),
    ) -> Result<MergeReport> {
        self.store().merge(&mut progress)
    }

    /// Copies the store into `dest` (created if missing; it must otherwise be an empty
    /// directory) while reads and writes go on. The copy holds every write acknowledged
    /// before the call and opens as a store of its own.
    ///
    /// # Errors
    /// [`Error::BackupDestinationNotEmpty`], [`Error::Closed`], [`Error::Io`].
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        let store = self.store();
        store.check_open()?;
        let _exclusive = store.merge_lock.lock();
        backup::backup(&store.dir, &store.index, &store.log, dest.as_ref())
    }

    /// Flushes and syncs every write, stops the background threads, writes any missing hint
    /// files and releases the directory lock. Every clone of this handle fails with [`Error::Closed`] afterwards.
    /// Closing twice is not an error.
    ///
    /// # Errors
    /// [`Error::Io`] if the final sync fails; the lock is released all the same.
    pub fn close(self) -> Result<()> {
        self.store().close()
    }
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

/// Spawns a named engine thread.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .expect("spawning a thread succeeds unless the system is out of resources")
}

impl Store {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        self.log.check_writable()
    }

    fn submit(&self, batch: WriteBatch, mode: Submit) -> Result<Submitted> {
        self.check_open()?;
        self.committer.submit(batch, mode)
    }

    fn read<T>(
        &self,
        key: &[u8],
        with: impl FnOnce(&[u8], ValueLocation) -> T,
    ) -> Result<Option<T>> {
        self.check_open()?;
        read::read(&self.index, &self.log, key, with)
    }

    fn read_copy(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        read::read_copy(&self.index, &self.log, key)
    }

    fn merger(&self) -> Merger<'_> {
        Merger {
            dir: &self.dir,
            options: &self.options,
            index: &self.index,
            committer: &self.committer,
        }
    }

    fn merge(&self, progress: &mut dyn FnMut(MergeProgress)) -> Result<MergeReport> {
        self.check_writable()?;
        let _exclusive = self.merge_lock.lock();
        self.merger().merge(progress)
    }

    fn write_missing_hints(&self) -> Result<()> {
        let _exclusive = self.merge_lock.lock();
        self.merger().write_missing_hints()
    }

    /// One maintenance round: missing hint files, then a merge if the trigger holds, then
    /// the page cache brought within its budget.
    fn maintain(&self) {
        if let Err(error) = self.write_missing_hints() {
            tracing::warn!(%error, "writing hint files failed; start-up will scan those data files");
        }
        if self.merger().merge_is_due()
            && let Err(error) = self.merge(&mut |_| {})
        {
            tracing::error!(%error, "automatic merge failed");
        }
        if let Some(budget) = self.options.cache_budget {
            let active = self.log.writer().active.id();
            if let Err(error) = cache::keep_within(&self.index.files(), active, budget) {
                tracing::warn!(%error, "evicting data files from the page cache failed");
            }
        }
    }

    fn start_background_threads(self: &Arc<Self>) {
        let mut threads = self.threads.lock();
        let sync = self.options.sync;
        if sync == SyncPolicy::Always {
            let committer = Arc::downgrade(&self.committer);
            let requests = Arc::clone(&self.async_sync);
            threads.push(spawn("caskade-syncer", move || requests.run(&committer)));
        }
        if sync == SyncPolicy::Always && self.options.tuning.publish_helper {
            let publisher = Arc::clone(&self.early_publisher);
            let keydir = Arc::clone(&self.index.keydir);
            publisher.start();
            threads.push(spawn("caskade-publish", move || {
                early_publish(&publisher, &keydir);
            }));
        }
        if let SyncPolicy::Interval(interval) = sync {
            let committer = Arc::downgrade(&self.committer);
            let maintenance = Arc::clone(&self.maintenance);
            threads.push(spawn("caskade-sync", move || {
                maintenance.run_rounds(interval, || interval_sync(&committer));
            }));
        }
        if self.options.tuning.runway {
            let runway = Arc::clone(&self.runway);
            threads.push(spawn("caskade-prealloc", move || runway.run()));
        }
        let store: Weak<Store> = Arc::downgrade(self);
        let maintenance = Arc::clone(&self.maintenance);
        let interval = self.options.maintenance_interval;
        threads.push(spawn("caskade-maintenance", move || {
            maintenance.run_rounds(interval, || {
                store.upgrade().map(|store| store.maintain()).is_some()
            });
        }));
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.maintenance.stop();
        self.async_sync.stop();
        self.runway.stop();
        self.early_publisher.stop();
        let threads = std::mem::take(&mut *self.threads.lock());
        for thread in threads {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        let synced = if self.log.is_poisoned() {
            Ok(())
        } else {
            self.committer
                .sync_all()
                .and_then(|()| self.log.seal_active())
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

/// One round of the `caskade-sync` thread under [`SyncPolicy::Interval`]; `false` once the
/// store is gone.
fn interval_sync(committer: &Weak<Committer>) -> bool {
    let Some(committer) = committer.upgrade() else {
        return false;
    };
    if !committer.log().is_poisoned()
        && let Err(error) = committer.sync_all()
    {
        tracing::error!(%error, "interval sync failed");
    }
    true
}
