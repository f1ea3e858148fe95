//! The set of open data files, and how one record changes the keydir and the files' live and
//! dead byte counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::data_file::{DataFile, FileId};
use crate::error::Result;
use crate::format::{RecordKind, record_len};
use crate::keydir::load::LoadBuffers;
use crate::keydir::{KeyDir, ValueLocation};

/// Bytes a load thread counted: records of the file loaded, added live or dead, and records
/// of earlier files moved from live to dead, by file.
#[derive(Default)]
struct ByteTally {
    live: u64,
    dead: u64,
    killed: HashMap<FileId, u64, foldhash::fast::RandomState>,
}

/// The data files of a store by id. The newest is the active file.
#[derive(Default, Clone)]
pub(crate) struct FileSet {
    files: BTreeMap<FileId, Arc<DataFile>>,
}

/// A put or tombstone to apply, wherever it came from (a data file, a hint file, the writer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    pub(crate) kind: RecordKind,
    pub(crate) key: &'a [u8],
    pub(crate) file_id: FileId,
    pub(crate) offset: u32,
    pub(crate) value_len: u32,
    pub(crate) timestamp_micros: u64,
}

impl<'a> Change<'a> {
    fn location(&self) -> ValueLocation {
        ValueLocation {
            file_id: self.file_id,
            offset: self.offset,
            value_len: self.value_len,
            timestamp_secs: (self.timestamp_micros / 1_000_000) as u32,
        }
    }

    /// The change as a keydir update: a location puts, `None` removes.
    pub(crate) fn keydir_update(&self) -> (&'a [u8], Option<ValueLocation>) {
        match self.kind {
            RecordKind::Put => (self.key, Some(self.location())),
            RecordKind::Tombstone => (self.key, None),
            RecordKind::BatchBegin => unreachable!("batch framing is never applied as a change"),
        }
    }
}

impl FileSet {
    pub(crate) fn get(&self, id: FileId) -> Option<&Arc<DataFile>> {
        self.files.get(&id)
    }

    /// Whether a keydir entry at `location` is hidden: its record is not yet published (see
    /// `crate::publish`). An entry whose file a merge has just retired is not hidden.
    pub(crate) fn hides(&self, location: ValueLocation) -> bool {
        self.get(location.file_id)
            .is_some_and(|file| !file.is_published(location.offset))
    }

    pub(crate) fn insert(&mut self, file: Arc<DataFile>) {
        self.files.insert(file.id(), file);
    }

    pub(crate) fn remove(&mut self, id: FileId) -> Option<Arc<DataFile>> {
        self.files.remove(&id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<DataFile>> {
        self.files.values()
    }

    /// Applies one change to the keydir and moves the byte counts it affects between live
    /// and dead. Changes to one key must be applied in the order they were written.
    pub(crate) fn apply(&self, keydir: &KeyDir, change: &Change<'_>) -> Result<()> {
        let replaced = match change.kind {
            RecordKind::Put => keydir.insert(change.key, change.location())?,
            RecordKind::Tombstone => keydir.remove(change.key),
            RecordKind::BatchBegin => unreachable!("batch framing is never applied as a change"),
        };
        self.account(change, replaced);
        Ok(())
    }

    /// Applies `changes` in order, as [`FileSet::apply`] one by one would, locking each
    /// keydir shard once.
    pub(crate) fn apply_all(&self, keydir: &KeyDir, changes: &[Change<'_>]) -> Result<()> {
        let updates: Vec<_> = changes.iter().map(Change::keydir_update).collect();
        let replaced = keydir.update_all(&updates)?;
        for (change, replaced) in changes.iter().zip(replaced) {
            self.account(change, replaced);
        }
        Ok(())
    }

    /// Applies the updates of file `file_id` that [`KeyDir::prepare`] put in `buffers`, as
    /// [`FileSet::apply_all`] would apply them as changes, on up to `threads` threads (see
    /// [`KeyDir::apply_prepared`]); for start-up only. Each thread tallies the byte counts
    /// per file, which are added once at the end.
    pub(crate) fn apply_prepared(
        &self,
        keydir: &KeyDir,
        buffers: &LoadBuffers,
        file_id: FileId,
        threads: usize,
    ) -> Result<()> {
        let tallies = keydir.apply_prepared(
            buffers,
            threads,
            |tally: &mut ByteTally, key_len, location, replaced| {
                match location {
                    Some(location) => {
                        tally.live += record_len(key_len, location.value_len as usize) as u64;
                    }
                    None => tally.dead += record_len(key_len, 0) as u64,
                }
                if let Some(old) = replaced {
                    *tally.killed.entry(old.file_id).or_default() +=
                        record_len(key_len, old.value_len as usize) as u64;
                }
            },
        )?;
        for tally in tallies {
            if let Some(file) = self.get(file_id) {
                file.add_live(tally.live);
                file.add_dead(tally.dead);
            }
            for (id, killed) in tally.killed {
                if let Some(file) = self.get(id) {
                    file.kill(killed);
                }
            }
        }
        Ok(())
    }

    /// Counts `change`'s record as live (a put) or dead (a tombstone), and the record it
    /// replaced, if any, as dead.
    pub(crate) fn account(&self, change: &Change<'_>, replaced: Option<ValueLocation>) {
        let len = record_len(change.key.len(), change.value_len as usize) as u64;
        if let Some(file) = self.get(change.file_id) {
            match change.kind {
                RecordKind::Put => file.add_live(len),
                _ => file.add_dead(len),
            }
        }
        if let Some(old) = replaced
            && let Some(old_file) = self.get(old.file_id)
        {
            old_file.kill(record_len(change.key.len(), old.value_len as usize) as u64);
        }
    }
}
