//! The on-disk format: pure encoding and decoding over byte slices.
//!
//! This module knows nothing about files, locks or the keydir: it turns records, hint
//! entries and file headers into bytes and back, and reports exactly why a slice of bytes is
//! not a valid record. `engine/FORMAT.md` is the specification; every constant here mirrors a
//! line of it. All integers are little-endian.

mod header;
mod hint;
mod record;

pub use header::{FILE_HEADER_LEN, FileHeader, FileKind, FormatVersion, HeaderError};
pub use hint::{
    HINT_ENTRY_HEADER_LEN, HINT_FOOTER_LEN, Hint, HintBody, HintEntry, HintError, HintWriter,
    decode_hint, decode_hint_checksum,
};
pub use record::{
    BATCH_BEGIN_VALUE_LEN, BatchBegin, DecodeError, RECORD_HEADER_LEN, RecordKind, RecordView,
    decode_record, encode_record, peek_record, record_len,
};

/// Reads a little-endian `u16` at `at`; the caller has checked the bounds.
fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

/// Reads a little-endian `u32` at `at`; the caller has checked the bounds.
fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("slice of length 4"))
}

/// Reads a little-endian `u64` at `at`; the caller has checked the bounds.
fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("slice of length 8"))
}
