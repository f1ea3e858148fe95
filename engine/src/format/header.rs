//! The 16-byte header at the start of every data and hint file.

use super::{u16_at, u32_at};

/// Length of the header at the start of every data and hint file.
pub const FILE_HEADER_LEN: usize = MAGIC_LEN + size_of::<u16>() * 2 + size_of::<u32>();

const MAGIC_LEN: usize = 8;
const DATA_MAGIC: [u8; MAGIC_LEN] = *b"CASKDAT\0";
const HINT_MAGIC: [u8; MAGIC_LEN] = *b"CASKHNT\0";

/// Which kind of file a header opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A data file: records.
    Data,
    /// A hint file: the keys and locations of one data file's records.
    Hint,
}

impl FileKind {
    fn magic(self) -> [u8; MAGIC_LEN] {
        match self {
            FileKind::Data => DATA_MAGIC,
            FileKind::Hint => HINT_MAGIC,
        }
    }
}

/// The versions of the file format this build reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum FormatVersion {
    /// The first format.
    V1 = 1,
}

impl FormatVersion {
    /// The version new files are written with.
    pub const CURRENT: FormatVersion = FormatVersion::V1;
}

/// A decoded file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Data or hint.
    pub kind: FileKind,
    /// The format version the rest of the file follows.
    pub version: FormatVersion,
    /// The id of the data file (a hint file carries the id of the data file it describes).
    pub file_id: u32,
}

/// Why a file header could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`FILE_HEADER_LEN`] bytes.
    Truncated,
    /// The magic bytes are not those of the expected kind of file.
    BadMagic,
    /// A version this build does not know.
    UnsupportedVersion(u16),
}

impl FileHeader {
    /// A header for a new file of `kind` written in the current format.
    #[must_use]
    pub fn new(kind: FileKind, file_id: u32) -> Self {
        FileHeader {
            kind,
            version: FormatVersion::CURRENT,
            file_id,
        }
    }

    /// Encodes the header.
    #[must_use]
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut out = [0u8; FILE_HEADER_LEN];
        out[..MAGIC_LEN].copy_from_slice(&self.kind.magic());
        out[MAGIC_LEN..MAGIC_LEN + 2].copy_from_slice(&(self.version as u16).to_le_bytes());
        // Two reserved bytes stay zero.
        out[MAGIC_LEN + 4..].copy_from_slice(&self.file_id.to_le_bytes());
        out
    }

    /// Decodes the header of a file expected to be of `kind`.
    pub fn decode(kind: FileKind, buf: &[u8]) -> Result<Self, HeaderError> {
        if buf.len() < FILE_HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        if buf[..MAGIC_LEN] != kind.magic() {
            return Err(HeaderError::BadMagic);
        }
        let version = match u16_at(buf, MAGIC_LEN) {
            1 => FormatVersion::V1,
            other => return Err(HeaderError::UnsupportedVersion(other)),
        };
        Ok(FileHeader {
            kind,
            version,
            file_id: u32_at(buf, MAGIC_LEN + 4),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = FileHeader::new(FileKind::Data, 42);
        let bytes = header.encode();
        assert_eq!(bytes.len(), 16);
        assert_eq!(FileHeader::decode(FileKind::Data, &bytes), Ok(header));
    }

    #[test]
    fn wrong_kind_is_bad_magic() {
        let bytes = FileHeader::new(FileKind::Hint, 1).encode();
        assert_eq!(
            FileHeader::decode(FileKind::Data, &bytes),
            Err(HeaderError::BadMagic)
        );
    }

    #[test]
    fn unknown_version_is_reported() {
        let mut bytes = FileHeader::new(FileKind::Data, 1).encode();
        bytes[8] = 9;
        assert_eq!(
            FileHeader::decode(FileKind::Data, &bytes),
            Err(HeaderError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn short_header_is_truncated() {
        let bytes = FileHeader::new(FileKind::Data, 1).encode();
        assert_eq!(
            FileHeader::decode(FileKind::Data, &bytes[..15]),
            Err(HeaderError::Truncated)
        );
    }
}
