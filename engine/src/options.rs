//! Configuration: [`Options`], the [`SyncPolicy`], the automatic-merge trigger, the
//! page-cache budget and the [`Tuning`] switches. One way to configure: a struct of public
//! fields with defaults.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{BATCH_BEGIN_VALUE_LEN, RECORD_HEADER_LEN};

/// When writes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every write returns only after its bytes are on disk (`fdatasync`). Concurrent
    /// writers are group-committed: one sync covers every write made while the previous
    /// sync ran. The default.
    #[default]
    Always,
    /// Writes return once they are buffered; a background thread writes and syncs them
    /// every interval. A crash loses at most the last interval of writes.
    Interval(Duration),
    /// Writes return once buffered; buffers reach the OS when full, on
    /// [`Bitcask::sync`](crate::Bitcask::sync) and on close, and the OS decides when they
    /// reach the disk.
    Never,
}

/// When the background thread merges on its own.
///
/// A merge starts when the sealed files hold at least `min_dead_bytes` of dead data (values
/// since overwritten or deleted, tombstones, batch framing) **and** that dead data is at
/// least `min_dead_ratio` of their total size. The ratio bounds write amplification: each
/// merge rewrites at most `1 / min_dead_ratio` bytes per byte it reclaims.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergeTrigger {
    /// Dead fraction of sealed-file bytes needed to start a merge. Default: 0.5.
    pub min_dead_ratio: f64,
    /// Dead bytes needed to start a merge. Default: 64 MiB.
    pub min_dead_bytes: u64,
}

impl Default for MergeTrigger {
    fn default() -> Self {
        MergeTrigger {
            min_dead_ratio: 0.5,
            min_dead_bytes: 64 << 20,
        }
    }
}

/// Everything [`Bitcask::open`](crate::Bitcask::open) can be told: set the fields that
/// differ from the defaults, `Options { sync: SyncPolicy::Never, ..Options::default() }`;
/// `open` validates them.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Size at which the active data file is sealed and a new one started. Default: 256 MiB.
    ///
    /// Why 256 MiB: start-up scans the active file record by record (sealed files are read
    /// from their hint files), so this bounds that scan to well under a second; it keeps
    /// the number of open files and mappings small for stores of hundreds of gigabytes;
    /// and record offsets stay far below the 4 GiB that a 32-bit offset addresses.
    pub max_file_size: u64,
    /// When writes become durable. Default: [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Largest key accepted, in bytes (at most 65,535). Default: 65,535.
    pub max_key_size: usize,
    /// Largest value accepted, in bytes. Default: 64 MiB.
    pub max_value_size: usize,
    /// Largest encoded write batch accepted, in bytes. Default: 256 MiB.
    pub max_batch_size: usize,
    /// Under `Interval` and `Never`, bytes buffered before they are handed to the OS.
    /// Default: 1 MiB. The buffer grows past it only to hold one large batch, and is shrunk
    /// back once it holds more than four times this.
    pub write_buffer_size: usize,
    /// The most page cache the data files may hold, in bytes: with the write buffer, all
    /// the memory the engine uses beyond its keydir (values are read through memory maps;
    /// the engine keeps no cache of its own). Each maintenance round evicts sealed files,
    /// oldest first, while the files hold more, so the budget is kept between rounds; the
    /// active file is never evicted. `None` leaves the page cache to the kernel (and to a
    /// memory cgroup, if the process has one). [`Stats::cache_bytes`](crate::Stats) reports
    /// the use. Default: `None`.
    pub cache_budget: Option<u64>,
    /// When to merge automatically; `None` merges only on demand. Default: `Some` of
    /// [`MergeTrigger::default`].
    pub auto_merge: Option<MergeTrigger>,
    /// How often the background thread checks the merge trigger and writes missing hint
    /// files (it also wakes on every file rotation). Default: 30 s.
    pub maintenance_interval: Duration,
    /// Create the directory if it does not exist. Default: true.
    pub create_if_missing: bool,
    /// Switches for the write path's tuning mechanisms, each on by default. They exist to
    /// measure what each mechanism buys (`docs/benchmarks.md`) and to keep files free of
    /// preallocated space where a test needs file lengths to be data; leave them on.
    pub tuning: Tuning,
}

/// The write path's tuning mechanisms, each of which can be switched off to measure what it
/// buys. Every field is `true` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Keep zero-filled, synced space (the runway) ahead of the active file's end, written by
    /// a background thread, so appends overwrite allocated blocks instead of growing the
    /// file: a sync then writes only data, where growing a file also makes each sync write
    /// the inode. Under [`SyncPolicy::Always`] the runway is extended just after each group
    /// commit's sync, by about what the writer wrote between the last two syncs, so the
    /// zeros reach the disk between syncs. The runway is trimmed when the file is sealed or
    /// the store closed, and a crash leaves it as zeros that the next open trims.
    pub runway: bool,
    /// Under [`SyncPolicy::Always`], a sync's leader waits (spinning, for at most a quarter
    /// of the last sync, within a fixed bound) for as many batches as the last group held
    /// before it takes the pending batches.
    pub gather: bool,
    /// Under [`SyncPolicy::Always`], a helper thread inserts a large group's new keys, hidden,
    /// while its sync runs; off, the leader publishes everything after the sync.
    pub publish_helper: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            runway: true,
            gather: true,
            publish_helper: true,
        }
    }
}

impl Tuning {
    /// The variable [`Tuning::from_env`] reads.
    pub const ENV: &str = "CASKADE_ENGINE_TUNING";

    /// The defaults, with the mechanisms named in `CASKADE_ENGINE_TUNING` switched off: a
    /// comma-separated list of `no-runway`, `no-gather`, `no-publish-helper` (empty or unset:
    /// all on). For benchmarks that measure a mechanism on and off.
    ///
    /// # Errors
    /// A message naming a word it does not know.
    pub fn from_env() -> std::result::Result<Tuning, String> {
        match std::env::var(Self::ENV) {
            Ok(text) => Tuning::parse(&text),
            Err(_) => Ok(Tuning::default()),
        }
    }

    /// The defaults with the mechanisms `text` names switched off; see [`Tuning::from_env`].
    ///
    /// # Errors
    /// A message naming a word it does not know.
    pub fn parse(text: &str) -> std::result::Result<Tuning, String> {
        let mut tuning = Tuning::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "no-runway" => tuning.runway = false,
                "no-gather" => tuning.gather = false,
                "no-publish-helper" => tuning.publish_helper = false,
                other => {
                    return Err(format!(
                        "{}: unknown {other:?}; expected no-runway, no-gather or \
                         no-publish-helper",
                        Self::ENV
                    ));
                }
            }
        }
        Ok(tuning)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_file_size: 256 << 20,
            sync: SyncPolicy::Always,
            max_key_size: usize::from(u16::MAX),
            max_value_size: 64 << 20,
            max_batch_size: 256 << 20,
            write_buffer_size: 1 << 20,
            cache_budget: None,
            auto_merge: Some(MergeTrigger::default()),
            maintenance_interval: Duration::from_secs(30),
            create_if_missing: true,
            tuning: Tuning::default(),
        }
    }
}

/// The smallest `max_file_size` accepted: room for the file header and a few records.
pub const MIN_FILE_SIZE: u64 = 1024;

/// The smallest `max_batch_size` accepted: a batch-begin record and one record of a
/// one-byte key.
pub(crate) const MIN_BATCH_SIZE: usize = RECORD_HEADER_LEN * 2 + BATCH_BEGIN_VALUE_LEN + 1;

/// The largest `max_file_size` and `max_batch_size`: record offsets are 32-bit.
pub const MAX_FILE_SIZE: u64 = 1 << 31;

impl Options {
    /// Checks that the options can work together.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason| Err(Error::InvalidOptions { reason });
        if self.max_file_size < MIN_FILE_SIZE {
            return invalid("max_file_size must be at least 1 KiB");
        }
        if self.max_file_size > MAX_FILE_SIZE {
            return invalid("max_file_size must be at most 2 GiB");
        }
        if self.max_key_size == 0 || self.max_key_size > usize::from(u16::MAX) {
            return invalid("max_key_size must be between 1 and 65535");
        }
        if self.max_value_size as u64 > MAX_FILE_SIZE {
            return invalid("max_value_size must be at most 2 GiB");
        }
        if self.max_batch_size < MIN_BATCH_SIZE || self.max_batch_size as u64 > MAX_FILE_SIZE {
            return invalid("max_batch_size must be between 47 bytes and 2 GiB");
        }
        if RECORD_HEADER_LEN + self.max_key_size + self.max_value_size > self.max_batch_size {
            return invalid("max_batch_size must hold one record of the largest key and value");
        }
        if let SyncPolicy::Interval(interval) = self.sync
            && interval.is_zero()
        {
            return invalid("a sync interval must be longer than zero");
        }
        if let Some(trigger) = self.auto_merge
            && !(trigger.min_dead_ratio > 0.0 && trigger.min_dead_ratio <= 1.0)
        {
            return invalid("auto_merge.min_dead_ratio must be in (0, 1]");
        }
        if self.maintenance_interval.is_zero() {
            return invalid("maintenance_interval must be longer than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_switches_are_named_off_one_by_one() {
        assert_eq!(Tuning::parse(""), Ok(Tuning::default()));
        let all = Tuning::parse("no-runway, no-gather,no-publish-helper").unwrap();
        assert!(!all.runway && !all.gather && !all.publish_helper);
        let one = Tuning::parse("no-gather").unwrap();
        assert!(one.runway && !one.gather && one.publish_helper);
        let error = Tuning::parse("no-gather,fast").unwrap_err();
        assert!(
            error.contains("\"fast\"") && error.contains(Tuning::ENV),
            "{error}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        Options::default().validate().unwrap();
    }

    #[test]
    fn tiny_files_are_rejected() {
        let options = Options {
            max_file_size: 10,
            ..Options::default()
        };
        assert!(matches!(
            options.validate(),
            Err(Error::InvalidOptions { .. })
        ));
    }

    #[test]
    fn zero_interval_is_rejected() {
        let options = Options {
            sync: SyncPolicy::Interval(Duration::ZERO),
            ..Options::default()
        };
        assert!(matches!(
            options.validate(),
            Err(Error::InvalidOptions { .. })
        ));
    }

    #[test]
    fn oversized_keys_are_rejected() {
        let options = Options {
            max_key_size: 70_000,
            ..Options::default()
        };
        assert!(matches!(
            options.validate(),
            Err(Error::InvalidOptions { .. })
        ));
    }
}
