//! The store's maintenance calls: statistics, merge and backup (scavenging has its own module).
//!
//! These are the only whole-store engine operations the layer above reaches, and none of them
//! writes a key: every write to the engine goes through the sequencer, which hands out
//! versions and positions, so the engine handle itself stays private to this crate.

use std::path::Path;

use caskade_engine::{BackupReport, MergeProgress, MergeReport, Stats};

use crate::error::Result;
use crate::event::Position;
use crate::store::EventStore;

/// What [`EventStore::stats`] reports: the event store's counts and the engine's sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Streams with a head: live, soft-deleted and tombstoned ones.
    pub streams: usize,
    /// One past the last durable position, as [`EventStore::committed_position`].
    pub committed_position: Position,
    /// The engine's live keys, keydir memory, and live and dead bytes per data file.
    pub engine: Stats,
}

impl EventStore {
    /// The number of streams, the committed position and the engine's sizes. Counting the
    /// streams reads each stream's head, never an event.
    ///
    /// # Errors
    /// [`Error::Engine`](crate::Error::Engine), [`Error::Corrupt`](crate::Error::Corrupt) for
    /// a stream head that does not decode.
    pub fn stats(&self) -> Result<StoreStats> {
        let streams = self
            .streams()
            .try_fold(0, |count, stream| stream.map(|_| count + 1))?;
        Ok(StoreStats {
            streams,
            committed_position: self.committed_position(),
            engine: self.shared.engine.stats(),
        })
    }

    /// Rewrites the engine's sealed data files keeping only live records, while appends and
    /// reads go on; a crash at any step leaves the store as it was before or after the merge.
    /// Events that retention or deletes hide are still live records: [`EventStore::scavenge`]
    /// removes them first.
    ///
    /// # Errors
    /// [`Error::Engine`](crate::Error::Engine): corruption in an input file (the merge stops
    /// and the store is left as it was), a closed or poisoned store, I/O.
    pub fn merge(&self) -> Result<MergeReport> {
        Ok(self.shared.engine.merge()?)
    }

    /// [`EventStore::merge`], calling `progress` after each input file.
    ///
    /// # Errors
    /// As [`EventStore::merge`].
    pub fn merge_with_progress(&self, progress: impl FnMut(MergeProgress)) -> Result<MergeReport> {
        Ok(self.shared.engine.merge_with_progress(progress)?)
    }

    /// Copies the store into `dest` (created if missing; it must otherwise be an empty
    /// directory) while appends and reads go on. The copy holds every append acknowledged
    /// before the call, whole (an append is one engine batch), and opens as a store of its own.
    ///
    /// # Errors
    /// [`Error::BackupDestinationNotEmpty`](crate::Error::BackupDestinationNotEmpty) (nothing
    /// copied), [`Error::Engine`](crate::Error::Engine): a closed store, I/O.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        Ok(self.shared.engine.backup(dest)?)
    }
}
