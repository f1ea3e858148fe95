//! Opening a store: rebuilding the keydir from hint and data files.
//!
//! The recovery policy:
//! - Files are replayed in id order, so a later record for a key wins.
//! - A sealed file (every file but the newest) must be whole. Its hint file is used when it
//!   verifies and describes the data file at its current length; otherwise the data file is
//!   scanned. Any bad record in a sealed file is [`Error::Corrupt`]: it is never skipped.
//! - The newest file is the active file and is always scanned. A bad record there followed
//!   by nothing valid is a torn tail, left by a crash during a write that was never
//!   acknowledged: it is truncated away and reported in [`RecoveryReport::torn_tail`]. A bad
//!   record followed by a valid one is [`Error::Corrupt`], unless the damage has the shape of
//!   sectors never persisted (zeros from the bad record to its sector's end, or a whole zero
//!   sector before the valid one): a crash can persist an unsynced write's sectors in any
//!   order, so that too is a torn tail, and everything from the bad record on was written by
//!   that unacknowledged write or after it.
//!   A batch is applied only when all of it is present and valid. A batch reaches the disk
//!   in one write whose pages a crash may persist in any order, so damage anywhere inside
//!   the last batch, with nothing valid after the batch's declared end, is a torn tail too.
//! - Zeros from the end of the active file's last record to the end of the file are the
//!   runway preallocated ahead of the writer (see [`Tuning::runway`](crate::Tuning::runway)),
//!   where no write began: they are trimmed, and not reported as a torn tail.
//! - An active file shorter than its header (a crash while it was being created) is
//!   recreated empty, and reported as a torn tail at offset 0.
//! - Leftover temporary files (an interrupted merge, hint or backup) are removed; so are hint
//!   files whose data file is gone.
//!
//! Loading runs on every core. The keydir's shards are sized from the hint files' entry
//! counts before anything is loaded. While one file's updates are applied, shard by shard on
//! one thread per core, another thread reads, checksums and sorts the next hint file by
//! shard. Every update of a key falls in the key's shard and is applied there in file
//! order, files one after another, so the keydir ends as if every record were replayed one
//! by one.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, mpsc};

use crate::data_file::{
    DataFile, EntryKind, FileId, classify, data_path, hint_path, map_hint, sync_dir,
};
use crate::error::{Corruption, Error, Result};
use crate::file_set::{Change, FileSet};
use crate::format::{
    FILE_HEADER_LEN, FileHeader, FileKind, HINT_ENTRY_HEADER_LEN, HINT_FOOTER_LEN, HeaderError,
    decode_hint_checksum,
};
use crate::keydir::KeyDir;
use crate::keydir::load::LoadBuffers;
use crate::scan::{ScanError, is_runway, lost_sectors, next_valid_record, scan_units};

/// What recovery found and did when the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Data files opened.
    pub data_files: usize,
    /// Sealed files whose keys were loaded from their hint file.
    pub hint_files_used: usize,
    /// Sealed files that had to be scanned (no hint file, or one that did not verify).
    pub data_files_scanned: usize,
    /// The torn tail cut from the active file, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Temporary files removed.
    pub temp_files_removed: usize,
}

/// A torn tail cut from the active file at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// The active file.
    pub file_id: FileId,
    /// Where the valid records end; the file was truncated to this length.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_removed: u64,
    /// What was wrong with the first cut record.
    pub reason: Corruption,
}

pub(crate) struct Recovered {
    pub(crate) keydir: KeyDir,
    pub(crate) files: FileSet,
    pub(crate) active: Arc<DataFile>,
    pub(crate) report: RecoveryReport,
}

fn header_error(file_id: FileId, error: HeaderError) -> Error {
    match error {
        HeaderError::UnsupportedVersion(version) => Error::UnsupportedVersion { file_id, version },
        HeaderError::Truncated | HeaderError::BadMagic => Error::Corrupt {
            file_id,
            offset: 0,
            reason: Corruption::BadHeader,
        },
    }
}

/// Checks a data file's header, including that it names the file it is in.
pub(crate) fn check_header(id: FileId, bytes: &[u8]) -> Result<()> {
    let header = FileHeader::decode(FileKind::Data, bytes).map_err(|e| header_error(id, e))?;
    if header.file_id != id.0 {
        return Err(Error::Corrupt {
            file_id: id,
            offset: 0,
            reason: Corruption::BadHeader,
        });
    }
    Ok(())
}

/// The data and hint files of a directory, after removing temporary files.
pub(crate) struct Listing {
    pub(crate) data: Vec<FileId>,
    pub(crate) hints: BTreeSet<FileId>,
    pub(crate) temp_files_removed: usize,
}

pub(crate) fn list(dir: &Path, remove_temp: bool) -> Result<Listing> {
    let mut listing = Listing {
        data: Vec::new(),
        hints: BTreeSet::new(),
        temp_files_removed: 0,
    };
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        match classify(&name) {
            EntryKind::Data(id) => listing.data.push(id),
            EntryKind::Hint(id) => {
                listing.hints.insert(id);
            }
            EntryKind::Temp if remove_temp => {
                fs::remove_file(entry.path())?;
                listing.temp_files_removed += 1;
            }
            EntryKind::Temp | EntryKind::Other => {}
        }
    }
    listing.data.sort_unstable();
    Ok(listing)
}

pub(crate) fn recover(dir: &Path, max_file_size: u64) -> Result<Recovered> {
    let listing = list(dir, true)?;
    let mut report = RecoveryReport {
        temp_files_removed: listing.temp_files_removed,
        ..Default::default()
    };
    let keydir = KeyDir::new();
    let mut files = FileSet::default();

    for &orphan in listing
        .hints
        .iter()
        .filter(|id| listing.data.binary_search(id).is_err())
    {
        fs::remove_file(hint_path(dir, orphan))?;
    }

    let Some((&active_id, sealed)) = listing.data.split_last() else {
        let active = Arc::new(DataFile::create(dir, FileId(1), max_file_size)?);
        sync_dir(dir)?;
        files.insert(Arc::clone(&active));
        report.data_files = 1;
        return Ok(Recovered {
            keydir,
            files,
            active,
            report,
        });
    };

    recover_sealed(
        dir,
        sealed,
        &listing.hints,
        &keydir,
        &mut files,
        &mut report,
    )?;

    let active = recover_active(
        dir,
        active_id,
        max_file_size,
        &keydir,
        &mut files,
        &mut report,
    )?;
    if listing.hints.contains(&active_id) {
        // The active file grows past what its hint describes.
        fs::remove_file(hint_path(dir, active_id))?;
    }
    report.data_files = listing.data.len();
    Ok(Recovered {
        keydir,
        files,
        active,
        report,
    })
}

/// The entries the hint files of `sealed` say they hold, read from their footers alone:
/// only a size for the keydir, so a hint that turns out not to verify costs nothing here.
fn hinted_entries(dir: &Path, sealed: &[FileId], hints: &BTreeSet<FileId>) -> usize {
    let footer_count = |id: FileId| -> std::io::Result<u64> {
        let file = fs::File::open(hint_path(dir, id))?;
        let len = file.metadata()?.len();
        let mut count = [0u8; 8];
        // The footer: data_len (8 bytes), entry_count (8), crc (4).
        let at = len
            .checked_sub(HINT_FOOTER_LEN as u64)
            .ok_or(std::io::ErrorKind::InvalidData)?;
        file.read_exact_at(&mut count, at + 8)?;
        // A damaged footer must not size the keydir past what the file could hold: every
        // entry takes its header and at least one key byte.
        Ok(u64::from_le_bytes(count).min(len / (HINT_ENTRY_HEADER_LEN as u64 + 1)))
    };
    sealed
        .iter()
        .filter(|id| hints.contains(id))
        .filter_map(|&id| footer_count(id).ok())
        .map(|count| usize::try_from(count).unwrap_or(0))
        .fold(0usize, usize::saturating_add)
}

fn change<'a>(file_id: FileId, op: &crate::scan::Op<'a>) -> Change<'a> {
    Change {
        kind: op.record.kind,
        key: op.record.key,
        file_id,
        offset: op.offset as u32,
        value_len: op.record.value.len() as u32,
        timestamp_micros: op.record.timestamp_micros,
    }
}

/// Loads the sealed files, in order: each from its hint file if that verifies, else by
/// scanning it.
fn recover_sealed(
    dir: &Path,
    sealed: &[FileId],
    hints: &BTreeSet<FileId>,
    keydir: &KeyDir,
    files: &mut FileSet,
    report: &mut RecoveryReport,
) -> Result<()> {
    // Sized up front from the hint files' entry counts, so loading them grows no table.
    keydir.reserve(hinted_entries(dir, sealed, hints));
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| -> Result<()> {
        // A thread reads, verifies and sorts the next hint file while this one's updates are
        // applied (see `prepare_hints`); two sets of buffers go back and forth between them.
        let (ready, prepared) = mpsc::sync_channel(1);
        let (spare, spares) = mpsc::channel();
        for _ in 0..2 {
            let _ = spare.send(LoadBuffers::default());
        }
        scope.spawn(move || prepare_hints(dir, sealed, hints, keydir, &spares, &ready));
        // Buffers for scanning the files whose hints cannot be used.
        let mut unused_buffers: Vec<LoadBuffers> = Vec::new();
        for &id in sealed {
            let len = fs::metadata(data_path(dir, id))?.len();
            if len < FILE_HEADER_LEN as u64 {
                return Err(Error::Corrupt {
                    file_id: id,
                    offset: 0,
                    reason: Corruption::BadHeader,
                });
            }
            let file = Arc::new(DataFile::open(dir, id, len, len, false)?);
            check_header(id, file.bytes())?;
            files.insert(Arc::clone(&file));
            let hint: PreparedHint = prepared
                .recv()
                .map_err(|_| Error::Io(std::io::Error::other("the hint-reading thread stopped")))?;
            debug_assert_eq!(hint.file_id, id);
            match hint.buffers? {
                Some(buffers) if hint.data_len == len => {
                    files.apply_prepared(keydir, &buffers, id, threads)?;
                    // Framing bytes are not in the hint; count everything unaccounted for
                    // as dead.
                    let accounted = file.live_bytes() + file.dead_bytes() + FILE_HEADER_LEN as u64;
                    file.add_dead(file.len().saturating_sub(accounted));
                    file.set_has_hint(true);
                    report.hint_files_used += 1;
                    let _ = spare.send(buffers);
                    continue;
                }
                Some(buffers) => {
                    tracing::warn!(file_id = %id, "hint file does not describe its data file; scanning the data file");
                    let _ = spare.send(buffers);
                }
                None => {}
            }
            report.data_files_scanned += 1;
            let mut buffers = unused_buffers.pop().unwrap_or_default();
            let scanned = scan_into(&file, files, keydir, &mut buffers, threads)?;
            unused_buffers.push(buffers);
            scanned.map_err(|e| Error::Corrupt {
                file_id: id,
                offset: e.offset,
                reason: e.reason,
            })?;
        }
        Ok(())
    })
}

/// Scans `file` and applies the units it finds whole, in order, on up to `threads` threads;
/// returns where the scan stopped early, if it did (everything before is applied).
fn scan_into(
    file: &DataFile,
    files: &FileSet,
    keydir: &KeyDir,
    buffers: &mut LoadBuffers,
    threads: usize,
) -> Result<std::result::Result<u64, ScanError>> {
    let id = file.id();
    let mut changes = Vec::new();
    let scanned = scan_units(file.bytes(), FILE_HEADER_LEN as u64, |ops, framing| {
        file.add_dead(framing);
        changes.extend(ops.iter().map(|op| change(id, op).keydir_update()));
    });
    keydir.prepare(buffers, changes);
    files.apply_prepared(keydir, buffers, id, threads)?;
    Ok(scanned)
}

/// A sealed file's hint, read, verified and sorted by keydir shard.
struct PreparedHint {
    file_id: FileId,
    /// The data file length the hint describes.
    data_len: u64,
    /// The sorted updates; `None` if the file has no hint or its hint does not verify (the
    /// data file is scanned instead).
    buffers: Result<Option<LoadBuffers>>,
}

/// The hint-reading thread of recovery: for each sealed file in order, reads its hint file
/// (if it has one), verifies it, and sorts its entries into buffers taken from `spares`,
/// then hands them over in `ready`. Stops when recovery stops listening.
fn prepare_hints(
    dir: &Path,
    sealed: &[FileId],
    hints: &BTreeSet<FileId>,
    keydir: &KeyDir,
    spares: &mpsc::Receiver<LoadBuffers>,
    ready: &mpsc::SyncSender<PreparedHint>,
) {
    // Buffers taken but not handed over (a hint that did not verify), for the next file.
    let mut unused: Option<LoadBuffers> = None;
    for &id in sealed {
        let mut prepared = PreparedHint {
            file_id: id,
            data_len: 0,
            buffers: Ok(None),
        };
        if hints.contains(&id) {
            let Some(mut buffers) = unused.take().or_else(|| spares.recv().ok()) else {
                return;
            };
            let verified = map_hint(dir, id).map(|bytes| {
                let body = decode_hint_checksum(bytes.as_deref()?).ok()?;
                if body.file_id != id.0 {
                    return None;
                }
                // The entries are checked as they are sorted; a bad one voids the lot.
                let mut malformed = false;
                let updates = body.parse().map_while(|entry| {
                    let entry = entry.map_err(|_| malformed = true).ok()?;
                    let change = Change {
                        kind: entry.kind,
                        key: entry.key,
                        file_id: id,
                        offset: entry.offset,
                        value_len: entry.value_len,
                        timestamp_micros: entry.timestamp_micros,
                    };
                    Some(change.keydir_update())
                });
                keydir.prepare(&mut buffers, updates);
                (!malformed).then_some(body.data_len)
            });
            match verified {
                Ok(Some(data_len)) => {
                    prepared.data_len = data_len;
                    prepared.buffers = Ok(Some(buffers));
                }
                Ok(None) => {
                    tracing::warn!(file_id = %id, "hint file does not verify; scanning the data file");
                    unused = Some(buffers);
                }
                Err(error) => {
                    prepared.buffers = Err(error.into());
                    unused = Some(buffers);
                }
            }
        }
        if ready.send(prepared).is_err() {
            return;
        }
    }
}

fn recover_active(
    dir: &Path,
    id: FileId,
    max_file_size: u64,
    keydir: &KeyDir,
    files: &mut FileSet,
    report: &mut RecoveryReport,
) -> Result<Arc<DataFile>> {
    let path = data_path(dir, id);
    let len = fs::metadata(&path)?.len();
    if len < FILE_HEADER_LEN as u64 {
        // Torn while it was being created: nothing in it was ever acknowledged.
        report.torn_tail = Some(TornTail {
            file_id: id,
            offset: 0,
            bytes_removed: len,
            reason: Corruption::BadHeader,
        });
        let file = fs::OpenOptions::new().write(true).open(&path)?;
        file.set_len(0)?;
        drop(file);
        fs::remove_file(&path)?;
        let active = Arc::new(DataFile::create(dir, id, max_file_size)?);
        sync_dir(dir)?;
        files.insert(Arc::clone(&active));
        return Ok(active);
    }
    let active = Arc::new(DataFile::open(dir, id, len, max_file_size, true)?);
    check_header(id, active.bytes())?;
    files.insert(Arc::clone(&active));
    // Units before a failure are whole and valid, so they are applied as the scan finds them;
    // if the failure turns out to be corruption the open fails and the keydir is dropped.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let scanned = scan_into(&active, files, keydir, &mut LoadBuffers::default(), threads)?;
    if let Err(error) = scanned {
        if is_runway(active.bytes(), error.unit_offset) {
            tracing::debug!(file_id = %id, offset = error.unit_offset,
                "trimming the preallocated runway left by an unclean shutdown");
            active.truncate(error.unit_offset)?;
            return Ok(active);
        }
        if let Some(next) = next_valid_record(active.bytes(), error.resume_at)
            && !lost_sectors(active.bytes(), error.unit_offset, next)
        {
            return Err(Error::Corrupt {
                file_id: id,
                offset: error.offset,
                reason: error.reason,
            });
        }
        tracing::warn!(file_id = %id, offset = error.unit_offset, reason = %error.reason,
            "truncating a torn tail from the active file");
        report.torn_tail = Some(TornTail {
            file_id: id,
            offset: error.unit_offset,
            bytes_removed: len - error.unit_offset,
            reason: error.reason,
        });
        active.truncate(error.unit_offset)?;
    }
    Ok(active)
}
