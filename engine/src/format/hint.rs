//! Hint files: for one sealed data file, every record's key and location, without values.
//!
//! ```text
//! header   16 bytes, FileKind::Hint, carrying the data file's id
//! entries  one per put or tombstone record of the data file, in file order:
//!   offset  size  field
//!        0     1  kind       1 = put, 2 = tombstone
//!        1     2  key_len
//!        3     4  value_len
//!        7     4  offset     of the record in the data file
//!       11     8  timestamp  microseconds since the Unix epoch
//!       19     k  key
//! footer   20 bytes
//!        0     8  data_len     length of the data file described
//!        8     8  entry_count
//!       16     4  crc32        CRC-32 (IEEE) of every byte of the file before this field
//! ```

use std::io::{self, Write};

use super::header::{FILE_HEADER_LEN, FileHeader, FileKind, HeaderError};
use super::record::RecordKind;
use super::{u16_at, u32_at, u64_at};

/// Length of a hint entry before its key.
pub const HINT_ENTRY_HEADER_LEN: usize = 1 + 2 + 4 + 4 + 8;

/// Length of the footer that closes a hint file.
pub const HINT_FOOTER_LEN: usize = 8 + 8 + 4;

/// One entry of a hint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry<'a> {
    /// Put or tombstone.
    pub kind: RecordKind,
    /// The record's key.
    pub key: &'a [u8],
    /// The length of the record's value.
    pub value_len: u32,
    /// The offset of the record in the data file.
    pub offset: u32,
    /// When the record was written, in microseconds since the Unix epoch.
    pub timestamp_micros: u64,
}

/// Why a hint file cannot be used (the data file is then scanned instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintError {
    /// The header is missing or wrong.
    Header(HeaderError),
    /// The file is shorter than its header and footer.
    Truncated,
    /// The checksum in the footer does not match.
    Checksum,
    /// The entries do not add up to the footer's count and length.
    Malformed,
}

/// Writes a hint file entry by entry, computing the footer's checksum as it goes.
pub struct HintWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    entry_count: u64,
}

impl<W: Write> HintWriter<W> {
    /// Starts a hint file for data file `file_id`.
    pub fn new(mut out: W, file_id: u32) -> io::Result<Self> {
        let header = FileHeader::new(FileKind::Hint, file_id).encode();
        out.write_all(&header)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        Ok(HintWriter {
            out,
            crc,
            entry_count: 0,
        })
    }

    /// Appends one entry. `kind` must be a put or a tombstone.
    ///
    /// # Panics
    /// If the key is longer than `u16::MAX` bytes, which the engine never accepts.
    pub fn push(&mut self, entry: &HintEntry<'_>) -> io::Result<()> {
        debug_assert!(
            entry.kind != RecordKind::BatchBegin,
            "hint files hold no batch framing"
        );
        let mut head = [0u8; HINT_ENTRY_HEADER_LEN];
        head[0] = entry.kind as u8;
        let key_len = u16::try_from(entry.key.len()).expect("keys are at most u16::MAX bytes");
        head[1..3].copy_from_slice(&key_len.to_le_bytes());
        head[3..7].copy_from_slice(&entry.value_len.to_le_bytes());
        head[7..11].copy_from_slice(&entry.offset.to_le_bytes());
        head[11..19].copy_from_slice(&entry.timestamp_micros.to_le_bytes());
        self.write(&head)?;
        self.write(entry.key)?;
        self.entry_count += 1;
        Ok(())
    }

    /// Writes the footer and returns the underlying writer.
    pub fn finish(mut self, data_len: u64) -> io::Result<W> {
        self.write(&data_len.to_le_bytes())?;
        let count = self.entry_count.to_le_bytes();
        self.write(&count)?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        Ok(self.out)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }
}

/// A hint file whose checksum and structure have been verified.
#[derive(Debug, Clone, Copy)]
pub struct Hint<'a> {
    /// The id of the data file described.
    pub file_id: u32,
    /// The length of the data file described.
    pub data_len: u64,
    entries: &'a [u8],
}

impl<'a> Hint<'a> {
    /// The entries, in data-file order.
    ///
    /// # Panics
    /// Never: [`decode_hint`] validated every entry before handing this out.
    pub fn entries(&self) -> impl Iterator<Item = HintEntry<'a>> + 'a {
        let mut rest = self.entries;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let (entry, len) = parse_entry(rest).expect("entries were validated by decode_hint");
            rest = &rest[len..];
            Some(entry)
        })
    }
}

fn parse_entry(buf: &[u8]) -> Option<(HintEntry<'_>, usize)> {
    if buf.len() < HINT_ENTRY_HEADER_LEN {
        return None;
    }
    let kind = match buf[0] {
        1 => RecordKind::Put,
        2 => RecordKind::Tombstone,
        _ => return None,
    };
    let key_len = usize::from(u16_at(buf, 1));
    let len = HINT_ENTRY_HEADER_LEN + key_len;
    if buf.len() < len {
        return None;
    }
    let entry = HintEntry {
        kind,
        key: &buf[HINT_ENTRY_HEADER_LEN..len],
        value_len: u32_at(buf, 3),
        offset: u32_at(buf, 7),
        timestamp_micros: u64_at(buf, 11),
    };
    Some((entry, len))
}

/// Verifies a whole hint file and gives access to its entries.
pub fn decode_hint(buf: &[u8]) -> Result<Hint<'_>, HintError> {
    let body = decode_hint_checksum(buf)?;
    for entry in body.parse() {
        entry?;
    }
    Ok(Hint {
        file_id: body.file_id,
        data_len: body.data_len,
        entries: body.entries,
    })
}

/// A hint file whose header and checksum have been verified, its entries not yet parsed:
/// [`HintBody::parse`] checks them as it hands them out, for a reader that would rather not
/// walk the entries twice.
#[derive(Debug, Clone, Copy)]
pub struct HintBody<'a> {
    /// The id of the data file described.
    pub file_id: u32,
    /// The length of the data file described.
    pub data_len: u64,
    entry_count: u64,
    entries: &'a [u8],
}

/// Verifies a hint file's header and checksum; see [`HintBody`].
pub fn decode_hint_checksum(buf: &[u8]) -> Result<HintBody<'_>, HintError> {
    let header = FileHeader::decode(FileKind::Hint, buf).map_err(HintError::Header)?;
    if buf.len() < FILE_HEADER_LEN + HINT_FOOTER_LEN {
        return Err(HintError::Truncated);
    }
    let crc_at = buf.len() - size_of::<u32>();
    if crc32fast::hash(&buf[..crc_at]) != u32_at(buf, crc_at) {
        return Err(HintError::Checksum);
    }
    let footer_at = buf.len() - HINT_FOOTER_LEN;
    Ok(HintBody {
        file_id: header.file_id,
        data_len: u64_at(buf, footer_at),
        entry_count: u64_at(buf, footer_at + 8),
        entries: &buf[FILE_HEADER_LEN..footer_at],
    })
}

impl<'a> HintBody<'a> {
    /// The entries in data-file order, each parsed as it is reached. A malformed entry, or
    /// entries that do not add up to the footer's count, end the iteration with
    /// [`HintError::Malformed`]: a caller that stops at the first error and has seen no error
    /// by the end has seen exactly the entries [`decode_hint`] would give.
    pub fn parse(&self) -> impl Iterator<Item = Result<HintEntry<'a>, HintError>> + 'a {
        let mut rest = self.entries;
        let mut left = Some(self.entry_count);
        std::iter::from_fn(move || {
            let count = left?;
            if rest.is_empty() {
                left = None;
                return (count != 0).then_some(Err(HintError::Malformed));
            }
            let Some((entry, len)) = parse_entry(rest).filter(|_| count > 0) else {
                left = None;
                return Some(Err(HintError::Malformed));
            };
            rest = &rest[len..];
            left = Some(count - 1);
            Some(Ok(entry))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = HintWriter::new(Vec::new(), 7).unwrap();
        for (i, key) in [b"alpha".as_slice(), b"b", b""].into_iter().enumerate() {
            let kind = if i == 1 {
                RecordKind::Tombstone
            } else {
                RecordKind::Put
            };
            writer
                .push(&HintEntry {
                    kind,
                    key,
                    value_len: i as u32 * 10,
                    offset: 16 + i as u32 * 100,
                    timestamp_micros: 99,
                })
                .unwrap();
        }
        writer.finish(4096).unwrap()
    }

    #[test]
    fn hint_round_trips() {
        let bytes = sample();
        let hint = decode_hint(&bytes).unwrap();
        assert_eq!(hint.file_id, 7);
        assert_eq!(hint.data_len, 4096);
        let entries: Vec<_> = hint.entries().collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].key, b"alpha");
        assert_eq!(entries[1].kind, RecordKind::Tombstone);
        assert_eq!(entries[1].offset, 116);
        assert_eq!(entries[2].value_len, 20);
    }

    #[test]
    fn any_flipped_bit_rejects_the_hint() {
        let bytes = sample();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_hint(&flipped).is_err(), "bit {bit} went unnoticed");
        }
    }

    #[test]
    fn any_truncation_rejects_the_hint() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(decode_hint(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }
}
