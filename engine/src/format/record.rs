//! Data-file records: a 19-byte header, the key, the value.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32      CRC-32 (IEEE) of bytes 4 .. end of value
//!      4     8  timestamp  microseconds since the Unix epoch when the record was written
//!     12     1  kind       1 = put, 2 = tombstone, 3 = batch begin
//!     13     2  key_len
//!     15     4  value_len
//!     19     k  key
//!   19+k     v  value
//! ```

use super::{u16_at, u32_at, u64_at};

const CRC_LEN: usize = size_of::<u32>();
const TIMESTAMP_AT: usize = CRC_LEN;
const KIND_AT: usize = TIMESTAMP_AT + size_of::<u64>();
const KEY_LEN_AT: usize = KIND_AT + size_of::<u8>();
const VALUE_LEN_AT: usize = KEY_LEN_AT + size_of::<u16>();

/// Length of a record header; the key follows it.
pub const RECORD_HEADER_LEN: usize = VALUE_LEN_AT + size_of::<u32>();

/// Length of a batch-begin record's value: the operation count, then the body length.
pub const BATCH_BEGIN_VALUE_LEN: usize = size_of::<u32>() * 2;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// Sets the key to the value.
    Put = 1,
    /// Deletes the key; the value is empty.
    Tombstone = 2,
    /// Opens an atomic batch: the next records, `op_count` of them spanning `body_len` bytes,
    /// take effect together or not at all. The key is empty.
    BatchBegin = 3,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Tombstone),
            3 => Some(RecordKind::BatchBegin),
            _ => None,
        }
    }
}

/// The value of a batch-begin record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBegin {
    /// How many put and tombstone records follow.
    pub op_count: u32,
    /// How many bytes those records take, all together.
    pub body_len: u32,
}

impl BatchBegin {
    /// Encodes the value of a batch-begin record.
    #[must_use]
    pub fn encode(&self) -> [u8; BATCH_BEGIN_VALUE_LEN] {
        let mut out = [0u8; BATCH_BEGIN_VALUE_LEN];
        out[..4].copy_from_slice(&self.op_count.to_le_bytes());
        out[4..].copy_from_slice(&self.body_len.to_le_bytes());
        out
    }

    /// Decodes the value of a batch-begin record; `None` if it has the wrong length.
    #[must_use]
    pub fn decode(value: &[u8]) -> Option<Self> {
        (value.len() == BATCH_BEGIN_VALUE_LEN).then(|| BatchBegin {
            op_count: u32_at(value, 0),
            body_len: u32_at(value, 4),
        })
    }
}

/// A record decoded in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// What the record does.
    pub kind: RecordKind,
    /// Microseconds since the Unix epoch when it was written.
    pub timestamp_micros: u64,
    /// The key (empty for a batch begin).
    pub key: &'a [u8],
    /// The value (empty for a tombstone).
    pub value: &'a [u8],
}

impl RecordView<'_> {
    /// The record's length on disk, header included.
    #[must_use]
    #[expect(
        clippy::len_without_is_empty,
        reason = "a record is never empty: it has a header"
    )]
    pub fn len(&self) -> usize {
        record_len(self.key.len(), self.value.len())
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The slice ends before the record does: a torn write, or the end of the data.
    Truncated,
    /// The kind byte is not a known kind.
    BadKind(u8),
    /// The stored checksum does not match the bytes.
    Checksum {
        /// The checksum the record carries.
        stored: u32,
        /// The checksum of the bytes as they are.
        computed: u32,
    },
}

/// The length on disk of a record with a key and value of these lengths.
#[must_use]
pub fn record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// Appends one record to `out`.
///
/// # Panics
/// If `key` is longer than `u16::MAX` bytes or `value` longer than `u32::MAX`; the engine
/// checks both against its configured limits before anything is encoded.
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: RecordKind,
    timestamp_micros: u64,
    key: &[u8],
    value: &[u8],
) {
    let key_len = u16::try_from(key.len()).expect("key length checked against u16::MAX");
    let value_len = u32::try_from(value.len()).expect("value length checked against u32::MAX");
    let start = out.len();
    out.reserve(record_len(key.len(), value.len()));
    out.extend_from_slice(&[0u8; CRC_LEN]);
    out.extend_from_slice(&timestamp_micros.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + CRC_LEN..]);
    out[start..start + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `buf`, verifying its checksum.
pub fn decode_record(buf: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    let (view, len) = parse_record(buf)?;
    let stored = u32_at(buf, 0);
    let computed = crc32fast::hash(&buf[CRC_LEN..len]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(view)
}

/// Decodes the record at the start of `buf` **without** verifying its checksum, for
/// stepping over records whose contents are not used: nothing it returns may be trusted
/// until [`decode_record`] has verified the same bytes.
pub fn peek_record(buf: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    parse_record(buf).map(|(view, _)| view)
}

/// The record at the start of `buf` and its length, checksum unverified.
fn parse_record(buf: &[u8]) -> Result<(RecordView<'_>, usize), DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let kind = RecordKind::from_byte(buf[KIND_AT]).ok_or(DecodeError::BadKind(buf[KIND_AT]))?;
    let key_len = usize::from(u16_at(buf, KEY_LEN_AT));
    let value_len = u32_at(buf, VALUE_LEN_AT) as usize;
    let len = record_len(key_len, value_len);
    if buf.len() < len {
        return Err(DecodeError::Truncated);
    }
    let key_end = RECORD_HEADER_LEN + key_len;
    let view = RecordView {
        kind,
        timestamp_micros: u64_at(buf, TIMESTAMP_AT),
        key: &buf[RECORD_HEADER_LEN..key_end],
        value: &buf[key_end..len],
    };
    Ok((view, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(kind: RecordKind, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&mut out, kind, 1_700_000_000_000_000, key, value);
        out
    }

    #[test]
    fn header_is_nineteen_bytes() {
        assert_eq!(RECORD_HEADER_LEN, 19);
    }

    #[test]
    fn put_round_trips() {
        let bytes = encoded(RecordKind::Put, b"key", b"value");
        assert_eq!(bytes.len(), record_len(3, 5));
        let view = decode_record(&bytes).unwrap();
        assert_eq!(view.kind, RecordKind::Put);
        assert_eq!(view.key, b"key");
        assert_eq!(view.value, b"value");
        assert_eq!(view.timestamp_micros, 1_700_000_000_000_000);
        assert_eq!(view.len(), bytes.len());
    }

    #[test]
    fn decode_ignores_bytes_after_the_record() {
        let mut bytes = encoded(RecordKind::Tombstone, b"k", b"");
        let len = bytes.len();
        bytes.extend_from_slice(b"trailing");
        assert_eq!(decode_record(&bytes).unwrap().len(), len);
    }

    #[test]
    fn every_prefix_is_truncated() {
        let bytes = encoded(RecordKind::Put, b"key", b"value");
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_record(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = encoded(RecordKind::Put, b"key", b"value");
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&flipped).is_err(), "bit {bit} went unnoticed");
        }
    }

    #[test]
    fn zeroes_are_not_a_record() {
        assert_eq!(decode_record(&[0u8; 64]), Err(DecodeError::BadKind(0)));
    }

    #[test]
    fn batch_begin_round_trips() {
        let begin = BatchBegin {
            op_count: 3,
            body_len: 1234,
        };
        assert_eq!(BatchBegin::decode(&begin.encode()), Some(begin));
        assert_eq!(BatchBegin::decode(&[0u8; 7]), None);
    }
}
