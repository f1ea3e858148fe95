//! Reading on in file order from a record: [`RecordCursor`] and [`Interest`].
//!
//! A reader that has just read a record (through the keydir) can often find the next record
//! it wants right after it, written in the same batch, and save a keydir lookup per record.
//! This module steps over records by their headers, from a cursor past a record to the next
//! record the caller's [`Interest`] takes. Invariants: it never reads past the file's
//! published mark (so it sees only what readers may see), and a record it hands out has
//! passed its checksum. It does not know whether a record is still its key's live value.
//! It reads through the file's in-order map, whose faults read ahead (see `data_file.rs`).

use crate::data_file::FileId;
use crate::file_set::FileSet;
use crate::format::{RecordKind, decode_record, peek_record, record_len};
use crate::keydir::ValueLocation;

/// A place in a data file just past a record, from which
/// [`Bitcask::read_on`](crate::Bitcask::read_on) reads on. Obtained from
/// [`Bitcask::get_with_cursor`](crate::Bitcask::get_with_cursor) or an earlier `read_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCursor {
    file_id: FileId,
    offset: u64,
}

impl RecordCursor {
    /// The cursor just past the record of `key` at `location`.
    pub(crate) fn after(key: &[u8], location: ValueLocation) -> RecordCursor {
        let len = record_len(key.len(), location.value_len as usize) as u64;
        RecordCursor {
            file_id: location.file_id,
            offset: u64::from(location.offset) + len,
        }
    }
}

/// What [`Bitcask::read_on`](crate::Bitcask::read_on) does with a record, decided from its
/// key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Step over it and read on.
    Skip,
    /// Verify it and hand it to the caller.
    Take,
    /// Stop reading: the records the caller wants do not follow.
    Stop,
}

/// Reads on from `cursor` in `files`; see [`Bitcask::read_on`](crate::Bitcask::read_on).
pub(crate) fn read_on<T>(
    files: &FileSet,
    cursor: RecordCursor,
    max_records: usize,
    mut interest: impl FnMut(&[u8]) -> Interest,
    take: impl FnOnce(&[u8], Option<&[u8]>) -> T,
) -> Option<(T, RecordCursor)> {
    let file = files.get(cursor.file_id)?;
    let end = file.published_len();
    let mut offset = cursor.offset;
    let mut records = 0;
    while offset < end && records < max_records {
        let bytes = file.bytes().get(offset as usize..end as usize)?;
        let record = peek_record(bytes).ok()?;
        let next = offset + record.len() as u64;
        if record.kind == RecordKind::BatchBegin {
            offset = next;
            continue;
        }
        records += 1;
        match interest(record.key) {
            Interest::Skip => offset = next,
            Interest::Stop => return None,
            Interest::Take => {
                let record = decode_record(bytes).ok()?;
                let value = (record.kind == RecordKind::Put).then_some(record.value);
                let cursor = RecordCursor {
                    file_id: cursor.file_id,
                    offset: next,
                };
                return Some((take(record.key, value), cursor));
            }
        }
    }
    None
}
