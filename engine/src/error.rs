//! The engine's error type.

use std::path::PathBuf;

use crate::data_file::FileId;

/// Errors returned by the engine.
///
/// Expected outcomes of bad input (`EmptyKey`, `KeyTooLarge`, ...) are distinct from failures
/// of the machine (`Io`, `Corrupt`, `Poisoned`), so callers can correct the first and alert
/// on the second. No variant is returned after a partial write: an operation that fails
/// validation writes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// Another process (or another handle in this one) holds the directory's lock.
    #[error("the store at {} is locked by another process; only one writer may open it", dir.display())]
    Locked {
        /// The store's directory.
        dir: PathBuf,
    },

    /// The path given as the store's directory exists but is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },

    /// The directory does not exist and `create_if_missing` is off.
    #[error("no store at {}: the directory does not exist", path.display())]
    NotFound {
        /// The missing directory.
        path: PathBuf,
    },

    /// A key of length zero.
    #[error("keys must not be empty")]
    EmptyKey,

    /// A key longer than the configured maximum.
    #[error("key of {len} bytes exceeds the maximum of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A value longer than the configured maximum.
    #[error("value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A write batch whose encoded size exceeds the configured maximum.
    #[error("batch of {len} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// The batch's encoded length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A record or file failed its checksum or is malformed. The data is never returned.
    #[error("corrupt data in file {file_id} at offset {offset}: {reason}")]
    Corrupt {
        /// The data or hint file.
        file_id: FileId,
        /// The byte offset of the bad record (or of the file's header).
        offset: u64,
        /// What is wrong with it.
        reason: Corruption,
    },

    /// A file written by a newer (or unknown) version of the format.
    #[error("file {file_id} has format version {version}, which this build cannot read")]
    UnsupportedVersion {
        /// The file.
        file_id: FileId,
        /// The version it declares.
        version: u16,
    },

    /// An earlier fsync or write failed, so what is on disk is no longer known. The store
    /// refuses further writes until it is reopened (reopening re-reads the disk).
    #[error("an earlier write or sync failed; the store refuses writes until it is reopened")]
    Poisoned,

    /// The store has been closed.
    #[error("the store is closed")]
    Closed,

    /// `Options` that cannot work together.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// Which option, and why.
        reason: &'static str,
    },

    /// A backup destination that already exists and is not an empty directory.
    #[error("backup destination {} exists and is not an empty directory", path.display())]
    BackupDestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },

    /// The keydir's key storage for one shard exceeded its 256 TiB addressing limit.
    #[error("the in-memory key directory is full")]
    KeyDirFull,
}

/// What is wrong with corrupt data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The record's checksum does not match its bytes.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum of the bytes as found.
        computed: u32,
    },
    /// A record's kind byte is unknown.
    #[error("unknown record kind {0}")]
    BadKind(u8),
    /// A record runs past the end of a file that must be complete.
    #[error("record truncated by the end of the file")]
    Truncated,
    /// The file's header is missing or not a Caskade header.
    #[error("bad file header")]
    BadHeader,
    /// A batch's framing does not match the records that follow it.
    #[error("malformed batch")]
    BadBatch,
    /// The record's key differs from the key the keydir expected there.
    #[error("record holds a different key than expected")]
    KeyMismatch,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
