//! [`Stats`]: what the store holds, file by file.

use crate::data_file::FileId;

/// A snapshot of the store's size; see [`Bitcask::stats`](crate::Bitcask::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Number of live keys.
    pub live_keys: usize,
    /// Heap bytes held by the keydir (hash tables and key bytes).
    pub keydir_bytes: usize,
    /// Bytes of the data files in the page cache now: the engine's cache, which
    /// [`Options::cache_budget`](crate::Options::cache_budget) bounds.
    pub cache_bytes: u64,
    /// Every data file, oldest first.
    pub files: Vec<FileStats>,
}

/// The size of one data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStats {
    /// The file's id.
    pub file_id: FileId,
    /// Its length in bytes, header included.
    pub len: u64,
    /// Bytes of records that are the latest value of a live key.
    pub live_bytes: u64,
    /// Bytes a merge would reclaim: overwritten and deleted values, tombstones, framing.
    pub dead_bytes: u64,
    /// Whether this is the active file, the one being appended to.
    pub active: bool,
    /// Whether a hint file describes it.
    pub has_hint: bool,
}

impl Stats {
    /// Keydir bytes per live key (0 for an empty store).
    #[must_use]
    pub fn keydir_bytes_per_key(&self) -> f64 {
        if self.live_keys == 0 {
            0.0
        } else {
            #[expect(
                clippy::cast_precision_loss,
                reason = "a ratio for reports; keydir sizes fit an f64's 53 bits"
            )]
            let ratio = self.keydir_bytes as f64 / self.live_keys as f64;
            ratio
        }
    }

    /// Bytes of live records across all files.
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.live_bytes).sum()
    }

    /// Bytes a merge would reclaim across all files.
    #[must_use]
    pub fn dead_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.dead_bytes).sum()
    }

    /// Total bytes of data files.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}
