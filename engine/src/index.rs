//! The index: the keydir and the set of data files it points into, and publishing written
//! batches to them.
//!
//! Readers load the file set (an `ArcSwap`, no lock) and look a key up in the sharded
//! keydir; nothing here reads or writes a data file's bytes. Invariants:
//! - A keydir entry is visible only if its record lies below its file's published mark
//!   ([`FileSet::hides`]), so a batch becomes visible when [`Index::publish`] raises the
//!   mark, all at once, after everything it must wait for (the sync, under `Always`).
//! - Files enter the set when created (rotation) or written (merge) and leave it only when a
//!   merge retires them, after no keydir entry points into them.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::cache;
use crate::data_file::{DataFile, FileId};
use crate::error::Result;
use crate::file_set::FileSet;
use crate::format::RecordKind;
use crate::keydir::{KeyDir, ValueLocation};
use crate::publish::PendingBatch;
use crate::stats::{FileStats, Stats};

/// A key's visible location and the file set it was found in, held so the file stays mapped
/// while its record is read.
pub(crate) type Located = (ValueLocation, Guard<Arc<FileSet>>);

/// The keydir and the file set.
pub(crate) struct Index {
    pub(crate) keydir: Arc<KeyDir>,
    files: ArcSwap<FileSet>,
}

impl Index {
    pub(crate) fn new(keydir: KeyDir, files: FileSet) -> Index {
        Index {
            keydir: Arc::new(keydir),
            files: ArcSwap::from_pointee(files),
        }
    }

    /// The current file set, for as long as the caller holds it.
    pub(crate) fn files(&self) -> Guard<Arc<FileSet>> {
        self.files.load()
    }

    /// The current file set, owned.
    pub(crate) fn files_owned(&self) -> Arc<FileSet> {
        self.files.load_full()
    }

    /// Replaces the file set with `change` applied to a copy of it.
    pub(crate) fn change_files(&self, change: impl Fn(&mut FileSet)) {
        self.files.rcu(|files| {
            let mut files = FileSet::clone(files);
            change(&mut files);
            files
        });
    }

    /// Adds a new data file to the set.
    pub(crate) fn add_file(&self, file: &Arc<DataFile>) {
        self.change_files(|files| files.insert(Arc::clone(file)));
    }

    /// The keys starting with `prefix`, walked one keydir shard at a time.
    pub(crate) fn keys(self: &Arc<Self>, prefix: &[u8]) -> Keys {
        Keys {
            index: Arc::clone(self),
            prefix: prefix.to_vec(),
            shard: 0,
            current: Vec::new().into_iter(),
        }
    }

    /// The store's statistics, with the active file (`active`) at `active_len` bytes
    /// counting the write buffer.
    pub(crate) fn stats(&self, active: FileId, active_len: u64) -> Stats {
        let files = self.files.load();
        Stats {
            live_keys: self.keydir.len(),
            keydir_bytes: self.keydir.heap_bytes(),
            cache_bytes: cache::cached_bytes(&files),
            files: files
                .iter()
                .map(|file| FileStats {
                    file_id: file.id(),
                    len: if file.id() == active {
                        active_len
                    } else {
                        file.len()
                    },
                    live_bytes: file.live_bytes(),
                    dead_bytes: file.dead_bytes(),
                    active: file.id() == active,
                    has_hint: file.has_hint(),
                })
                .collect(),
        }
    }

    /// Where `key`'s live value is, if it has a visible one, with the file set it was found
    /// in.
    pub(crate) fn locate(&self, key: &[u8]) -> Option<Located> {
        self.locate_inline(key)
    }

    /// [`Index::locate`], inlined into its caller. Whether the lookup is faster inlined or
    /// called depends on the read around it, so each read path picks one (see `crate::read`).
    #[expect(
        clippy::inline_always,
        reason = "a plain `#[inline]` leaves the lookup a call in the copying read"
    )]
    #[inline(always)]
    pub(crate) fn locate_inline(&self, key: &[u8]) -> Option<Located> {
        let location = self.keydir.get(key)?;
        let files = self.files.load();
        (!files.hides(location)).then_some((location, files))
    }

    /// Makes a written batch visible: raises its file's published mark, then applies it to
    /// the keydir and the files' byte counts. `handled` marks the ops the publish helper
    /// already inserted as hidden entries (see `crate::publish`); the mark makes them
    /// visible.
    ///
    /// The mark goes first. An entry whose record lies past it is hidden, so a key updated in
    /// the keydir before the mark covers its new record would seem absent for a moment.
    pub(crate) fn publish(&self, unit: &PendingBatch, handled: Option<&[bool]>) -> Result<()> {
        let files = self.files.load();
        if let Some(file) = files.get(unit.file_id) {
            file.add_dead(unit.framing_len);
            file.publish_upto(unit.end);
        }
        let Some(handled) = handled else {
            if unit.op_count() == 1 {
                for change in unit.changes() {
                    files.apply(&self.keydir, &change)?;
                }
                return Ok(());
            }
            let changes: Vec<_> = unit.changes().collect();
            return files.apply_all(&self.keydir, &changes);
        };
        let mut revealed = 0;
        let mut rest = Vec::new();
        for (change, &handled) in unit.changes().zip(handled) {
            if handled {
                revealed += usize::from(change.kind == RecordKind::Put);
                files.account(&change, None);
            } else {
                rest.push(change);
            }
        }
        self.keydir.reveal(revealed);
        files.apply_all(&self.keydir, &rest)
    }
}

/// Iterator over keys; see [`Bitcask::keys`](crate::Bitcask::keys).
pub struct Keys {
    index: Arc<Index>,
    prefix: Vec<u8>,
    shard: usize,
    current: std::vec::IntoIter<Box<[u8]>>,
}

impl Iterator for Keys {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(key) = self.current.next() {
                return Some(key.into_vec());
            }
            let files = self.index.files();
            let keys = self
                .index
                .keydir
                .shard_keys(self.shard, &self.prefix, |location| !files.hides(location))?;
            self.shard += 1;
            self.current = keys.into_iter();
        }
    }
}
