//! Data files on disk: their names, the memory maps readers use, appends by the writer.
//!
//! A data file is append-only. It is mapped read-only and shared, with mappings as long as
//! the file may ever grow (`capacity`), so readers never make a syscall and the mappings
//! never move. Invariant: nobody reads past `len`, the count of bytes already handed to the
//! OS, so no access ever touches a page beyond the end of the file (which would raise
//! `SIGBUS`). Files only shrink at open, in recovery, before they are mapped; the directory
//! lock keeps other Caskade processes from truncating them.
//!
//! Each file is mapped twice, because the kernel's read-ahead advice belongs to a mapping
//! and the two kinds of reader want opposite advice. Point reads ([`DataFile::point`], a
//! `get` of one record) go through a map advised `MADV_RANDOM`: a cold fault reads just the
//! pages the record lies on, where the default read-around would read (and make room for)
//! pages around it that the next random read does not want, so a cold `get` costs one small
//! disk read even when the data is far larger than memory. Readers that go through the
//! file in order ([`DataFile::bytes`]: recovery, merge, hint writing, the offline check, and
//! `read_on`) use a map with the default advice, whose faults read ahead; hot backup copies
//! files with `read`, which reads ahead on its own. Both maps share the page cache, so a
//! page one reader brought in is warm for the other.
//!
//! The active file may be longer on disk than `len`: past `len` lies the runway, zeros
//! written and synced ahead of the writer by [`DataFile::extend_runway`], so that appends
//! overwrite allocated blocks and their syncs write no inode. Invariant: bytes at or past
//! `allocated` are written only under the `extension` lock, so the writer and the extension
//! never write the same range; below `allocated` only the writer writes, without the lock.
//! Sealing trims the runway; a crash leaves it as zeros past the last record.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{Advice, Mmap, MmapOptions, UncheckedAdvice};
use parking_lot::Mutex;

use crate::format::{FILE_HEADER_LEN, FileHeader, FileKind};

/// The number naming a data file (and its hint file). Higher ids hold newer records, except
/// that a merge writes its output into ids reserved between its inputs and the next active
/// file, which keeps that order true for every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u32);

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}", self.0)
    }
}

const DATA_SUFFIX: &str = ".data";
const HINT_SUFFIX: &str = ".hint";
/// Suffix of files being written (merge output, hint files, backups): never read, removed at
/// open. A rename to the final name is what makes such a file count.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// Name of the lock file in the store's directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

pub(crate) fn data_path(dir: &Path, id: FileId) -> PathBuf {
    dir.join(format!("{id}{DATA_SUFFIX}"))
}

pub(crate) fn hint_path(dir: &Path, id: FileId) -> PathBuf {
    dir.join(format!("{id}{HINT_SUFFIX}"))
}

pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// What a directory entry's name says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Data(FileId),
    Hint(FileId),
    Temp,
    Other,
}

pub(crate) fn classify(name: &str) -> EntryKind {
    if name.ends_with(TEMP_SUFFIX) {
        return EntryKind::Temp;
    }
    let parse = |stem: &str| {
        (stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse().ok().map(FileId))
            .flatten()
    };
    if let Some(id) = name.strip_suffix(DATA_SUFFIX).and_then(parse) {
        EntryKind::Data(id)
    } else if let Some(id) = name.strip_suffix(HINT_SUFFIX).and_then(parse) {
        EntryKind::Hint(id)
    } else {
        EntryKind::Other
    }
}

/// Syncs a directory, making the creation, rename or removal of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One data file, mapped for reading.
pub(crate) struct DataFile {
    id: FileId,
    file: File,
    /// Advised `MADV_RANDOM`, for point reads.
    point: Mmap,
    /// The kernel's default advice, for readers that go through the file in order.
    ordered: Mmap,
    /// Bytes handed to the OS; readers stay below it.
    len: AtomicU64,
    /// End of the last batch published to the keydir (under `SyncPolicy::Always`, made
    /// durable): records are read in file order only below it and below `len`.
    published: AtomicU64,
    /// The file's length on disk: `len` plus the runway of zeros (synced, except for an
    /// extension in progress). Raised by the extension and by appends past it, lowered only
    /// by sealing.
    allocated: AtomicU64,
    /// Held while writing at or past `allocated`; `true` once the file is sealed, after
    /// which the runway never grows again.
    extension: Mutex<bool>,
    /// An extension was asked for and has not finished; keeps the writer from asking twice.
    extension_requested: AtomicBool,
    /// `len` when the runway was last asked about ([`DataFile::wants_runway`]).
    runway_mark: AtomicU64,
    /// Bytes appended between the last two times the runway was asked about, which the
    /// store does once per sync (or flush): what the writer writes between two syncs.
    recent_use: AtomicU64,
    live_bytes: AtomicU64,
    dead_bytes: AtomicU64,
    has_hint: AtomicBool,
}

/// The size of a memory page.
#[expect(unsafe_code, reason = "a libc call; it has no preconditions")]
fn page_size() -> usize {
    // SAFETY: `sysconf` only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Maps `capacity` bytes of `file` for reading, with the kernel's default read-ahead.
#[expect(
    unsafe_code,
    reason = "memory-mapping a file is unsafe; the invariant is stated here"
)]
fn map(file: &File, capacity: u64) -> io::Result<Mmap> {
    let capacity = usize::try_from(capacity)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mapping exceeds usize"))?;
    // SAFETY: the mapping is read-only and shared. The bytes Caskade reads through it were
    // written before they became readable (`len` is published after the write returns) and
    // are never rewritten or truncated while the store is open: data files are append-only,
    // recovery truncates before mapping, and the directory lock keeps other Caskade
    // processes out. Pages past the end of the file are never touched (see module docs).
    unsafe { MmapOptions::new().len(capacity).map(file) }
}

/// Maps the whole hint file of data file `id` for reading; `None` if it is empty (an empty
/// mapping cannot be made, and an empty hint file never verifies).
#[expect(
    unsafe_code,
    reason = "memory-mapping a file is unsafe; the invariant is stated here"
)]
pub(crate) fn map_hint(dir: &Path, id: FileId) -> io::Result<Option<Mmap>> {
    let file = File::open(hint_path(dir, id))?;
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the mapping is read-only. A hint file is written under a temporary name,
    // synced and renamed, and never written again; it is removed only by a merge or at
    // open, neither of which runs while recovery holds the directory lock, which keeps other
    // Caskade processes out. The mapping is as long as the file, so no page past its end is
    // touched.
    unsafe { Mmap::map(&file) }.map(Some)
}

impl DataFile {
    /// Creates a new, empty data file holding only its header and syncs it. The caller
    /// syncs the directory.
    pub(crate) fn create(dir: &Path, id: FileId, capacity: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(data_path(dir, id))?;
        file.write_all_at(&FileHeader::new(FileKind::Data, id.0).encode(), 0)?;
        file.sync_all()?;
        Self::from_file(id, file, FILE_HEADER_LEN as u64, capacity)
    }

    /// Opens an existing data file whose first `len` bytes are valid, mapping `capacity`
    /// bytes (at least `len`). `writable` opens it for appending.
    pub(crate) fn open(
        dir: &Path,
        id: FileId,
        len: u64,
        capacity: u64,
        writable: bool,
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(data_path(dir, id))?;
        Self::from_file(id, file, len, capacity.max(len))
    }

    fn from_file(id: FileId, file: File, len: u64, capacity: u64) -> io::Result<Self> {
        let point = map(&file, capacity)?;
        point.advise(Advice::Random)?;
        let ordered = map(&file, capacity)?;
        Ok(DataFile {
            id,
            file,
            point,
            ordered,
            len: AtomicU64::new(len),
            published: AtomicU64::new(len),
            allocated: AtomicU64::new(len),
            extension: Mutex::new(false),
            extension_requested: AtomicBool::new(false),
            runway_mark: AtomicU64::new(len),
            recent_use: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            dead_bytes: AtomicU64::new(0),
            has_hint: AtomicBool::new(false),
        })
    }

    pub(crate) fn id(&self) -> FileId {
        self.id
    }

    /// Bytes readable: everything handed to the OS.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Bytes both handed to the OS and published: where reading records in file order
    /// stops.
    pub(crate) fn published_len(&self) -> u64 {
        self.len().min(self.published.load(Ordering::Acquire))
    }

    /// Whether the record at `offset` is published: keydir entries of records that are not
    /// are hidden from readers (see `crate::publish`). Under `Interval` and `Never` a record
    /// is published as it is written, before it reaches the OS.
    pub(crate) fn is_published(&self, offset: u32) -> bool {
        u64::from(offset) < self.published.load(Ordering::Acquire)
    }

    /// Marks the records before `end` as published.
    pub(crate) fn publish_upto(&self, end: u64) {
        self.published.fetch_max(end, Ordering::AcqRel);
    }

    /// Largest length this file can grow to while keeping its mapping.
    pub(crate) fn capacity(&self) -> u64 {
        self.ordered.len() as u64
    }

    /// The readable bytes, header included, for readers that go through them in order.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.ordered[..self.len() as usize]
    }

    /// `len` bytes at `offset` for a point read, or `None` if they are not (yet) readable.
    pub(crate) fn point(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        (end <= self.len()).then(|| &self.point[offset as usize..end as usize])
    }

    /// Writes `bytes` at `offset`, which must be the current length, and makes them
    /// readable. Only the writer calls this, under its lock.
    pub(crate) fn append(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        debug_assert_eq!(offset, self.len());
        assert!(
            offset + bytes.len() as u64 <= self.capacity(),
            "appends stay within the mapping: the writer rotates before a record would not fit"
        );
        let end = offset + bytes.len() as u64;
        if end <= self.allocated.load(Ordering::Acquire) {
            self.file.write_all_at(bytes, offset)?;
        } else {
            // Past the runway: wait out an extension in flight, which may be zeroing the
            // very range this write covers.
            let _extension = self.extension.lock();
            self.file.write_all_at(bytes, offset)?;
            self.allocated.fetch_max(end, Ordering::AcqRel);
        }
        self.len.store(end, Ordering::Release);
        Ok(())
    }

    /// Whether the runway is below its low-water mark and no extension is asked for yet. A
    /// `true` answer counts as asking: the caller must see that [`DataFile::extend_runway`]
    /// runs. The store asks after each sync (or flush), and only the writer's side asks.
    pub(crate) fn wants_runway(&self) -> bool {
        let len = self.len();
        let used = len.saturating_sub(self.runway_mark.swap(len, Ordering::AcqRel));
        self.recent_use.store(used, Ordering::Release);
        let allocated = self.allocated.load(Ordering::Acquire);
        let runway = allocated.saturating_sub(len);
        runway < runway_low_water(allocated)
            && allocated < self.capacity()
            && !self.extension_requested.swap(true, Ordering::AcqRel)
    }

    /// Writes zeros past the runway's end and syncs them, so later appends there grow
    /// nothing. Does nothing once the file is sealed.
    ///
    /// An extension replaces what the writer wrote between the
    /// last two times the runway was asked about (once per sync), tops the runway up to its
    /// low-water mark, and is at least a quarter of that mark, so the runway keeps pace with
    /// the writer in steps about as large as what it writes between two syncs. (Sized by
    /// what was written since the last extension instead, a large step would stay large:
    /// after an 8 MiB step, the next comes 8 MiB later.) That matters because an `fdatasync`
    /// waits for every page of its file under write-back, zeros included: under
    /// [`SyncPolicy::Always`](crate::SyncPolicy::Always) the store asks for an extension
    /// just after a group commit's sync, and when the disk then rests until the next group's
    /// sync, a step that size reaches the disk, with its own sync, in that rest, instead of
    /// stalling the next sync behind megabytes of zeros.
    ///
    /// The zeros go in chunks, each under the `extension` lock, so a writer that outruns the
    /// runway waits for one chunk, never for the whole extension and its sync; it then
    /// writes into zeros that may not be synced yet, and its own sync makes them durable.
    /// Each chunk's write-back starts as soon as it is written (see [`write_back`]), and the
    /// chunk before it must be on the disk before the next is written, so a writer's sync
    /// finds at most two chunks in flight even when an extension is large.
    pub(crate) fn extend_runway(&self) -> io::Result<()> {
        static ZEROS: [u8; 256 << 10] = [0; 256 << 10];
        let result = (|| {
            let to = {
                let sealed = self.extension.lock();
                if *sealed {
                    return Ok(());
                }
                let from = self.allocated.load(Ordering::Acquire);
                let runway = from.saturating_sub(self.len());
                let low_water = runway_low_water(from);
                let step = self
                    .recent_use
                    .load(Ordering::Acquire)
                    .max(low_water.saturating_sub(runway))
                    .max(low_water / 4)
                    .min(MAX_RUNWAY_STEP);
                (from + step).min(self.capacity())
            };
            let mut previous: Option<(u64, u64)> = None;
            loop {
                let sealed = self.extension.lock();
                // Appends past the runway may have moved `allocated` on: start from there,
                // never over their bytes.
                let at = self.allocated.load(Ordering::Acquire);
                if *sealed || at >= to {
                    break;
                }
                let chunk = (to - at).min(ZEROS.len() as u64);
                self.file.write_all_at(&ZEROS[..chunk as usize], at)?;
                self.allocated.store(at + chunk, Ordering::Release);
                drop(sealed);
                write_back(&self.file, at, chunk)?;
                if let Some((at, chunk)) = previous.replace((at, chunk)) {
                    wait_written_back(&self.file, at, chunk)?;
                }
            }
            self.file.sync_data()
        })();
        self.extension_requested.store(false, Ordering::Release);
        result
    }

    /// Trims the runway and stops it from growing again: the file will get no more
    /// appends. The caller syncs.
    pub(crate) fn seal(&self) -> io::Result<()> {
        let mut sealed = self.extension.lock();
        *sealed = true;
        let len = self.len();
        if self.allocated.load(Ordering::Acquire) > len {
            self.file.set_len(len)?;
            self.allocated.store(len, Ordering::Release);
        }
        Ok(())
    }

    /// Cuts the file to `len` bytes and syncs it. Only recovery calls this, before any reader
    /// can see the file.
    pub(crate) fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.len.store(len, Ordering::Release);
        self.published.store(len, Ordering::Release);
        self.allocated.store(len, Ordering::Release);
        Ok(())
    }

    /// Bytes of the readable part that are in the page cache now (whole pages).
    #[expect(
        unsafe_code,
        reason = "mincore on the map; its preconditions are stated here"
    )]
    pub(crate) fn cached_bytes(&self) -> io::Result<u64> {
        let len = self.len() as usize;
        let page = page_size();
        let mut resident = vec![0u8; len.div_ceil(page)];
        // SAFETY: the range starts at the map's page-aligned start and lies inside the map,
        // and `resident` has one byte per page of it, as `mincore` requires.
        let result = unsafe {
            libc::mincore(
                self.ordered.as_ptr() as *mut libc::c_void,
                len,
                resident.as_mut_ptr(),
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        let pages = resident.iter().filter(|&&flags| flags & 1 == 1).count();
        Ok((pages * page) as u64)
    }

    /// Drops this file's pages from the page cache: both maps let go of them, then the
    /// kernel is told they are not needed. Pages still being written back, or mapped by
    /// another process, stay. A reader touching an evicted page reads it from the file again.
    #[expect(
        unsafe_code,
        reason = "dropping mapped pages; why it is sound is stated here"
    )]
    pub(crate) fn evict(&self) -> io::Result<()> {
        for map in [&self.point, &self.ordered] {
            // SAFETY: both maps are read-only and shared, so dropping their pages discards
            // nothing: the next access faults the same bytes back in from the file.
            unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) }?;
        }
        // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
        let result =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(result))
        }
    }

    /// `fdatasync`: the bytes written so far are on disk when this returns.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub(crate) fn add_live(&self, bytes: u64) {
        self.live_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Moves `bytes` from live to dead.
    pub(crate) fn kill(&self, bytes: u64) {
        self.live_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.dead_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_dead(&self, bytes: u64) {
        self.dead_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn dead_bytes(&self) -> u64 {
        self.dead_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn has_hint(&self) -> bool {
        self.has_hint.load(Ordering::Relaxed)
    }

    pub(crate) fn set_has_hint(&self, has_hint: bool) {
        self.has_hint.store(has_hint, Ordering::Relaxed);
    }
}

/// Starts writing `len` bytes of `file` at `at` back to the disk, without waiting, syncing
/// metadata or flushing the disk's cache. The runway's zeros then go out while the writer is
/// still far behind them, instead of piling up as dirty pages that the writer's next
/// `fdatasync`, which writes back every dirty page of the file, would carry: megabytes at
/// once, stalling that append for milliseconds.
#[cfg(target_os = "linux")]
fn write_back(file: &File, at: u64, len: u64) -> io::Result<()> {
    sync_file_range(file, at, len, libc::SYNC_FILE_RANGE_WRITE)
}

/// Waits for the write-back of `len` bytes of `file` at `at`, started by [`write_back`], to
/// finish.
#[cfg(target_os = "linux")]
fn wait_written_back(file: &File, at: u64, len: u64) -> io::Result<()> {
    sync_file_range(file, at, len, libc::SYNC_FILE_RANGE_WAIT_BEFORE)
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "a plain system call on a descriptor the `File` keeps open for the call"
)]
fn sync_file_range(file: &File, at: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(nbytes)) = (i64::try_from(at), i64::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is open while `file`
    // is borrowed.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, nbytes, flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere a sync per chunk keeps the dirty pages as few.
#[cfg(not(target_os = "linux"))]
fn write_back(file: &File, _at: u64, _len: u64) -> io::Result<()> {
    file.sync_data()
}

/// Elsewhere [`write_back`] has already waited.
#[cfg(not(target_os = "linux"))]
fn wait_written_back(_file: &File, _at: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// Bounds of the runway's low-water mark, and the largest extension.
const MIN_LOW_WATER: u64 = 64 << 10;
const MAX_LOW_WATER: u64 = 1 << 20;
const MAX_RUNWAY_STEP: u64 = 8 << 20;

/// The runway a file `allocated` bytes long should keep: as long as the file, within
/// bounds, so a store that writes little zero-fills little.
fn runway_low_water(allocated: u64) -> u64 {
    allocated.clamp(MIN_LOW_WATER, MAX_LOW_WATER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = Path::new("/store");
        let data = data_path(dir, FileId(42));
        assert_eq!(data, Path::new("/store/0000000042.data"));
        let name = data.file_name().unwrap().to_str().unwrap();
        assert_eq!(classify(name), EntryKind::Data(FileId(42)));
        assert_eq!(classify("0000000042.hint"), EntryKind::Hint(FileId(42)));
        assert_eq!(classify("0000000042.hint.tmp"), EntryKind::Temp);
        assert_eq!(classify("42.data"), EntryKind::Other);
        assert_eq!(classify("LOCK"), EntryKind::Other);
    }

    #[test]
    fn appended_bytes_become_readable() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = DataFile::create(dir.path(), FileId(1), 1 << 20)?;
        assert_eq!(file.len(), FILE_HEADER_LEN as u64);
        assert!(file.point(16, 5).is_none());
        file.append(16, b"hello")?;
        assert_eq!(file.point(16, 5), Some(&b"hello"[..]));
        file.sync()?;
        let reopened = DataFile::open(dir.path(), FileId(1), 21, 21, false)?;
        assert_eq!(&reopened.bytes()[16..], b"hello");
        Ok(())
    }

    /// The `VmFlags` of the mapping that holds `address`, from `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn vm_flags(address: usize) -> io::Result<Vec<String>> {
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|first| {
                let (start, end) = first.split_once('-')?;
                Some((
                    usize::from_str_radix(start, 16).ok()?,
                    usize::from_str_radix(end, 16).ok()?,
                ))
            });
            if let Some((start, end)) = range {
                inside = (start..end).contains(&address);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Ok(flags.split_whitespace().map(str::to_owned).collect());
            }
        }
        Err(io::Error::other("no mapping holds the address"))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn point_reads_go_through_a_map_advised_random_and_ordered_reads_do_not() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = DataFile::create(dir.path(), FileId(1), 1 << 20)?;
        file.append(16, b"hello")?;
        let point = file.point(16, 5).expect("readable");
        assert!(vm_flags(point.as_ptr() as usize)?.contains(&"rr".to_owned()));
        let ordered = &file.bytes()[16..];
        assert_eq!(ordered, point);
        assert!(!vm_flags(ordered.as_ptr() as usize)?.contains(&"rr".to_owned()));
        Ok(())
    }

    #[test]
    fn runway_is_zeros_past_len_and_trimmed_by_seal() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = DataFile::create(dir.path(), FileId(1), 1 << 20)?;
        assert!(file.wants_runway());
        assert!(!file.wants_runway(), "one request at a time");
        file.extend_runway()?;
        let on_disk = fs_len(dir.path())?;
        assert_eq!(on_disk, FILE_HEADER_LEN as u64 + MIN_LOW_WATER);
        file.append(16, b"hello")?;
        assert_eq!(
            fs_len(dir.path())?,
            on_disk,
            "an append within the runway grows nothing"
        );
        assert_eq!(file.bytes().len(), 21);
        file.seal()?;
        assert_eq!(fs_len(dir.path())?, 21);
        file.extend_runway()?;
        assert_eq!(
            fs_len(dir.path())?,
            21,
            "a sealed file never grows a runway"
        );
        Ok(())
    }

    #[test]
    fn appends_past_the_runway_extend_the_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = DataFile::create(dir.path(), FileId(1), 1 << 20)?;
        let big = vec![7u8; 100_000];
        file.append(16, &big)?;
        assert_eq!(fs_len(dir.path())?, 16 + 100_000);
        assert!(file.wants_runway());
        file.extend_runway()?;
        assert_eq!(
            fs_len(dir.path())?,
            16 + 100_000 + runway_low_water(16 + 100_000)
        );
        assert_eq!(file.point(16, big.len()), Some(&big[..]));
        Ok(())
    }

    #[test]
    fn an_extension_replaces_what_was_written_since_the_runway_was_last_asked_about()
    -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = DataFile::create(dir.path(), FileId(1), 64 << 20)?;
        let mut len = FILE_HEADER_LEN as u64;
        let mut append = |bytes: u64| {
            let result = file.append(len, &vec![7u8; bytes as usize]);
            len += bytes;
            result.map(|()| len)
        };
        let len_now = append(3 << 20)?;
        assert!(file.wants_runway(), "appended past the runway");
        file.extend_runway()?;
        let allocated = fs_len(dir.path())?;
        assert_eq!(
            allocated,
            len_now + (3 << 20),
            "the 3 MiB written since creation"
        );
        append(300 << 10)?;
        assert!(!file.wants_runway(), "above the 1 MiB low-water mark");
        let len_now = append(2 << 20)?;
        assert!(allocated - len_now < MAX_LOW_WATER);
        assert!(file.wants_runway(), "below the low-water mark");
        file.extend_runway()?;
        assert_eq!(
            fs_len(dir.path())?,
            allocated + (2 << 20),
            "the 2 MiB written since the last ask, not the 300 KiB before it"
        );
        Ok(())
    }

    #[test]
    fn the_runway_stops_at_the_mapping() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = DataFile::create(dir.path(), FileId(1), 1024)?;
        assert!(file.wants_runway());
        file.extend_runway()?;
        assert_eq!(fs_len(dir.path())?, 1024);
        assert!(!file.wants_runway());
        Ok(())
    }

    fn fs_len(dir: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(data_path(dir, FileId(1)))?.len())
    }
}
