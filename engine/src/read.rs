//! Point reads: a key's value through the index, checksum-verified.
//!
//! A read looks the key up in the index and reads the record through its file's point map
//! (advised for random reads, see `data_file.rs`); a record still in the log's write buffer
//! (under `Interval` and `Never`, where writes are visible before they reach the OS) is read
//! from the buffer. [`read`] hands the value to the caller's closure, [`read_copy`] copies it
//! out; both are one read, differing only in whether the index lookup is inlined.
//!
//! Invariant: a value handed out has passed its record's checksum and its record's key is the
//! key asked for; anything else is [`Error::Corrupt`] and the bad bytes are never returned.

use crate::error::{Corruption, Error, Result};
use crate::format::{RecordKind, decode_record, record_len};
use crate::index::{Index, Located};
use crate::keydir::ValueLocation;
use crate::log::Log;
use crate::scan::corruption;

/// Calls `with` on the value of `key` and its location; `None` if the key has no visible
/// value.
pub(crate) fn read<T>(
    index: &Index,
    log: &Log,
    key: &[u8],
    with: impl FnOnce(&[u8], ValueLocation) -> T,
) -> Result<Option<T>> {
    read_through(index, log, key, Index::locate, with)
}

/// A copy of the value of `key`; `None` if the key has no visible value.
///
/// The same read as [`read`] with the lookup inlined. The copying read is faster with the
/// lookup inlined and the closure readers are faster with it called (measured in
/// `docs/benchmarks.md`), so only this one inlines it.
pub(crate) fn read_copy(index: &Index, log: &Log, key: &[u8]) -> Result<Option<Vec<u8>>> {
    read_through(index, log, key, Index::locate_inline, |value, _| {
        value.to_vec()
    })
}

/// Finds `key` through `locate` and calls `with` on its verified value.
fn read_through<T>(
    index: &Index,
    log: &Log,
    key: &[u8],
    locate: impl Fn(&Index, &[u8]) -> Option<Located>,
    with: impl FnOnce(&[u8], ValueLocation) -> T,
) -> Result<Option<T>> {
    // Taken by whichever of the two reads below finds the record; the loop ends then.
    let mut with = Some(with);
    let mut call =
        |value: &[u8], location: ValueLocation| with.take().map(|with| with(value, location));
    loop {
        let Some((location, files)) = locate(index, key) else {
            return Ok(None);
        };
        let len = record_len(key.len(), location.value_len as usize);
        if let Some(file) = files.get(location.file_id)
            && let Some(bytes) = file.point(u64::from(location.offset), len)
        {
            return verified_value(bytes, key, location).map(|value| call(value, location));
        }
        // Either the record is still in the write buffer (only under `Interval` and
        // `Never`, where writes are visible before they reach the OS), or a merge retired
        // the file after the lookup and the keydir already points elsewhere.
        if let Some(read) = log.with_buffered(location, len, |bytes| {
            verified_value(bytes, key, location).map(|value| call(value, location))
        }) {
            return read;
        }
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
