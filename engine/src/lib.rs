//! Caskade's storage engine: a Bitcask.
//!
//! A Bitcask is a log-structured hash table. Every write is appended to the active data file
//! as a checksummed record; an in-memory [keydir](crate::ValueLocation) maps each live key to
//! the file, offset and length of its latest value, so a read is one lookup and one read
//! through a memory map. Values stay on disk: memory grows with the number of keys, not with
//! the data, and a cold read costs one small disk read, because point reads go through a map
//! advised for random access while scans keep the kernel's read-ahead
//! ([`Options::cache_budget`] can bound the page cache the files hold). Data files are
//! sealed at a configurable size and get a hint file (keys and locations, no values) for
//! fast start-up; [`Bitcask::merge`] rewrites live records and drops dead ones, in the
//! background, while reads and writes go on.
//!
//! Durability: under the default [`SyncPolicy::Always`] a write returns after `fdatasync`,
//! and concurrent writers share one sync (group commit). A [`WriteBatch`] is atomic across a
//! crash. At open, a torn tail left by a crash is cut off; a bad checksum anywhere else is
//! [`Error::Corrupt`] and bad data is never returned. The on-disk format is specified in
//! `engine/FORMAT.md`.
//!
//! This crate knows nothing about events, streams or the network: the `caskade-eventstore`
//! crate builds those on its public API.
//!
//! ```
//! use caskade_engine::{Bitcask, Options, WriteBatch};
//!
//! # fn main() -> caskade_engine::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let options = Options {
//!     max_file_size: 64 << 20,
//!     ..Options::default()
//! };
//! let store = Bitcask::open(dir.path(), options)?;
//! store.put(b"greeting", b"hello")?;
//!
//! let mut batch = WriteBatch::new();
//! batch.put(b"a", b"1").delete(b"greeting");
//! store.write(batch)?; // both or neither, even across a crash
//!
//! assert_eq!(store.get(b"a")?, Some(b"1".to_vec()));
//! assert_eq!(store.get(b"greeting")?, None);
//! store.close()?;
//!
//! let reopened = Bitcask::open(dir.path(), Options::default())?;
//! assert_eq!(reopened.get(b"a")?, Some(b"1".to_vec()));
//! # Ok(())
//! # }
//! ```

mod backup;
mod batch;
mod bitcask;
mod cache;
mod check;
mod commit;
mod cursor;
mod data_file;
mod error;
mod file_set;
pub mod format;
mod index;
mod keydir;
mod lock;
mod log;
mod maintenance;
mod merge;
mod options;
mod pending;
mod publish;
mod read;
mod recovery;
mod runway;
mod scan;
mod stats;

pub use backup::BackupReport;
pub use batch::WriteBatch;
pub use bitcask::{Bitcask, TryWrite};
pub use check::{CheckReport, Problem, ProblemKind, check};
pub use cursor::{Interest, RecordCursor};
pub use data_file::FileId;
pub use error::{Corruption, Error, Result};
pub use index::Keys;
pub use keydir::ValueLocation;
pub use merge::{MergeProgress, MergeReport};
pub use options::{MAX_FILE_SIZE, MIN_FILE_SIZE, MergeTrigger, Options, SyncPolicy, Tuning};
pub use pending::{PendingWrite, WriteTicket};
pub use recovery::{RecoveryReport, TornTail};
pub use stats::{FileStats, Stats};
