//! The set of open data files, and how one record changes the keydir and the files' live and
//! dead byte counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::data_file::{DataFile, FileId};
use crate::error::Result;
use crate::format::{RecordKind, record_len};
use crate::keydir::{KeyDir, ValueLocation};

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

impl FileSet {
    pub(crate) fn get(&self, id: FileId) -> Option<&Arc<DataFile>> {
        self.files.get(&id)
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
        let len = record_len(change.key.len(), change.value_len as usize) as u64;
        let file = self.get(change.file_id);
        let replaced = match change.kind {
            RecordKind::Put => {
                let location = ValueLocation {
                    file_id: change.file_id,
                    offset: change.offset,
                    value_len: change.value_len,
                    timestamp_secs: (change.timestamp_micros / 1_000_000) as u32,
                };
                let replaced = keydir.insert(change.key, location)?;
                if let Some(file) = file {
                    file.add_live(len);
                }
                replaced
            }
            RecordKind::Tombstone => {
                if let Some(file) = file {
                    file.add_dead(len);
                }
                keydir.remove(change.key)
            }
            RecordKind::BatchBegin => unreachable!("batch framing is never applied as a change"),
        };
        if let Some(old) = replaced
            && let Some(old_file) = self.get(old.file_id)
        {
            old_file.kill(record_len(change.key.len(), old.value_len as usize) as u64);
        }
        Ok(())
    }
}
