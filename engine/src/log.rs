//! The log: the active data file and its write buffer, encoding batches into it, handing it
//! to the OS, and rotation to a new file.
//!
//! Everything here runs under the writer lock ([`Log::writer`]), which orders batches: a
//! batch's records are encoded into the buffer in one piece, so the file holds whole batches
//! in the order their writers took the lock. Invariants:
//! - The buffer's bytes start at the active file's `len()`: [`Log::flush`] appends all of it
//!   at once and empties it.
//! - After a failed write or sync the log is poisoned: what is on disk is no longer known,
//!   so every later write fails with [`Error::Poisoned`] until the store is reopened.
//! - A sealed file is synced before the new active file exists, so a file's records are
//!   durable before any record of a later file is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};

use crate::batch::WriteBatch;
use crate::data_file::{DataFile, FileId, sync_dir};
use crate::error::{Error, Result};
use crate::format::{
    BATCH_BEGIN_VALUE_LEN, BatchBegin, FILE_HEADER_LEN, RecordKind, encode_record, record_len,
};
use crate::index::Index;
use crate::keydir::ValueLocation;
use crate::maintenance::Maintenance;
use crate::options::{Options, SyncPolicy};
use crate::publish::PendingBatch;
use crate::runway::Runway;

/// State only the writer touches, under its lock.
pub(crate) struct Writer {
    pub(crate) active: Arc<DataFile>,
    /// Encoded records not yet handed to the OS; they start at `active.len()`.
    buf: Vec<u8>,
    /// The id the next data file gets. Merge raises it to reserve ids for its output.
    pub(crate) next_file_id: u32,
    /// The sequence number the next batch gets; batches are numbered in write order.
    pub(crate) next_seq: u64,
    /// Under `Always`: written batches waiting for a sync before they are published.
    pub(crate) pending: Vec<PendingBatch>,
}

impl Writer {
    /// Bytes in the write buffer.
    pub(crate) fn buf_len(&self) -> usize {
        self.buf.len()
    }

    /// The sequence number of the last batch written.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The active file's length counting the buffer.
    pub(crate) fn active_len(&self) -> u64 {
        self.active.len() + self.buf.len() as u64
    }
}

/// The write side of the data files.
pub(crate) struct Log {
    dir: PathBuf,
    options: Options,
    writer: Mutex<Writer>,
    poisoned: AtomicBool,
    index: Arc<Index>,
    runway: Arc<Runway>,
    maintenance: Arc<Maintenance>,
}

impl Log {
    /// The log appending to `active`, whose next file gets id `next_file_id`.
    pub(crate) fn new(
        dir: &Path,
        options: &Options,
        active: Arc<DataFile>,
        index: Arc<Index>,
        runway: Arc<Runway>,
        maintenance: Arc<Maintenance>,
    ) -> Log {
        let next_file_id = active.id().0 + 1;
        Log {
            dir: dir.to_path_buf(),
            options: options.clone(),
            writer: Mutex::new(Writer {
                active,
                buf: Vec::new(),
                next_file_id,
                next_seq: 1,
                pending: Vec::new(),
            }),
            poisoned: AtomicBool::new(false),
            index,
            runway,
            maintenance,
        }
    }

    /// Takes the writer lock.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }

    /// Whether a write or sync has failed.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// [`Error::Poisoned`] once a write or sync has failed.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_poisoned() {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Poisons the log and passes `error` on.
    pub(crate) fn poison<E>(&self, error: E) -> E {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), "a write or sync failed; refusing further writes");
        error
    }

    /// Syncs `file`, poisoning the log if that fails.
    pub(crate) fn sync_file(&self, file: &DataFile) -> Result<()> {
        file.sync().map_err(|e| self.poison(Error::Io(e)))
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
        // Under `Always` the runway is extended after each sync instead (see `crate::commit`).
        if self.options.tuning.runway
            && self.options.sync != SyncPolicy::Always
            && writer.active.wants_runway()
        {
            self.runway.request(Arc::clone(&writer.active));
        }
        if writer.buf.capacity() > self.options.write_buffer_size.max(1 << 20) * 4 {
            writer.buf.shrink_to(self.options.write_buffer_size);
        }
        Ok(())
    }

    /// Flushes the buffer and syncs the active file.
    pub(crate) fn flush_and_sync(&self) -> Result<()> {
        let file = {
            let mut writer = self.writer.lock();
            self.flush(&mut writer)?;
            Arc::clone(&writer.active)
        };
        self.sync_file(&file)
    }

    /// Whether the buffer holds `write_buffer_size` bytes or more with `incoming` added.
    pub(crate) fn buffer_full(&self, writer: &Writer, incoming: usize) -> bool {
        writer.buf.len() + incoming >= self.options.write_buffer_size
    }

    /// Whether `incoming` more bytes need a new active file.
    pub(crate) fn must_rotate(&self, writer: &Writer, incoming: u64) -> bool {
        let used = writer.active_len();
        let fits = used + incoming <= self.options.max_file_size;
        // A record larger than a file still goes into an empty active file if its mapping
        // has room (it does when the file was created for it); otherwise it gets a new one.
        let fits_empty =
            used == FILE_HEADER_LEN as u64 && used + incoming <= writer.active.capacity();
        !(fits || fits_empty)
    }

    /// Seals the active file and starts a new one if `incoming` more bytes would take it
    /// past `max_file_size` (an oversized batch gets a file of its own).
    pub(crate) fn rotate_if_full(&self, writer: &mut Writer, incoming: u64) -> Result<()> {
        if self.must_rotate(writer, incoming) {
            self.rotate(writer, incoming)?;
        }
        Ok(())
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
        self.index.add_file(&file);
        writer.active = file;
        self.maintenance.rotated();
        fail::fail_point!("rotate::after_new_file");
        Ok(())
    }

    /// Seals the active file (trimming its runway) and syncs it: a closed store's files hold
    /// only records.
    pub(crate) fn seal_active(&self) -> Result<()> {
        let active = Arc::clone(&self.writer.lock().active);
        active
            .seal()
            .and_then(|()| active.sync())
            .map_err(Error::Io)
    }

    /// Calls `with` on the record at `location`, `len` bytes, if it is still in the write
    /// buffer (only under `Interval` and `Never`, where writes are visible before they reach
    /// the OS).
    pub(crate) fn with_buffered<T>(
        &self,
        location: ValueLocation,
        len: usize,
        with: impl FnOnce(&[u8]) -> T,
    ) -> Option<T> {
        let writer = self.writer.lock();
        let offset = u64::from(location.offset);
        if writer.active.id() != location.file_id || offset < writer.active.len() {
            return None;
        }
        let start = (offset - writer.active.len()) as usize;
        Some(with(&writer.buf[start..start + len]))
    }

    /// Encodes `batch` (`encoded_len` bytes, from [`WriteBatch::encoded_len`]) into the write
    /// buffer and returns it as a batch pending publication.
    pub(crate) fn encode(
        writer: &mut Writer,
        batch: WriteBatch,
        timestamp_micros: u64,
        encoded_len: usize,
    ) -> PendingBatch {
        let file_id = writer.active.id();
        let base = writer.active_len();
        let buf = &mut writer.buf;
        let start = buf.len();
        buf.reserve(encoded_len);
        let mut framing_len = 0;
        if batch.len() > 1 {
            let body_len = encoded_len - record_len(0, BATCH_BEGIN_VALUE_LEN);
            let begin = BatchBegin {
                op_count: batch.len() as u32,
                body_len: u32::try_from(body_len)
                    .expect("batches are at most max_batch_size bytes"),
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
}
