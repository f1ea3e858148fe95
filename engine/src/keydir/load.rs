//! Loading the keydir at start-up on every core: updates sorted by shard
//! ([`KeyDir::prepare`]), then applied by one thread per core, each taking whole shards
//! ([`KeyDir::apply_prepared`]).
//!
//! Invariant: every update of a key falls in the key's shard and the shard's updates are
//! applied in the order given, so a load ends as the same updates applied one by one. Only
//! the order in which different keys appear differs, which is why this is for start-up,
//! before any reader exists.

use std::hash::BuildHasher;

use super::{KeyDir, SHARD_COUNT, shard_index};
use crate::error::Result;
use crate::keydir::ValueLocation;

impl KeyDir {
    /// Sorts `updates` (a location puts, `None` removes) into `buffers` for
    /// [`KeyDir::apply_prepared`]: a batch per shard, in order, each key copied next to the
    /// others of its shard, so that applying them reads memory in order rather than from all
    /// over the caller's. Touches no shard, so it can run on another thread while an earlier
    /// load is applied.
    pub(crate) fn prepare<'k>(
        &self,
        buffers: &mut LoadBuffers,
        updates: impl IntoIterator<Item = (&'k [u8], Option<ValueLocation>)>,
    ) {
        buffers.batches.resize_with(SHARD_COUNT, LoadBatch::default);
        for batch in &mut buffers.batches {
            batch.keys.clear();
            batch.updates.clear();
        }
        for (key, location) in updates {
            let hash = self.hasher.hash_one(key);
            buffers.batches[shard_index(hash)].push(hash as u32, key, location);
        }
    }

    /// Applies the updates [`KeyDir::prepare`] put in `buffers` on up to `threads` threads,
    /// each taking whole shards. A key's updates all fall in one shard and are applied there
    /// in order, so the outcome is the same as applying them one by one.
    ///
    /// Each thread calls `applied` with its own tally (this returns one per thread), the
    /// key's length, the update's location and where the key pointed before; a tally per
    /// thread keeps the threads from sharing a counter per update. For start-up, before any
    /// reader exists: the order in which different keys become visible is not kept.
    pub(crate) fn apply_prepared<T: Default + Send>(
        &self,
        buffers: &LoadBuffers,
        threads: usize,
        applied: impl Fn(&mut T, usize, Option<ValueLocation>, Option<ValueLocation>) + Sync,
    ) -> Result<Vec<T>> {
        let threads = threads.clamp(1, SHARD_COUNT);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|worker| {
                    let (batches, applied) = (&buffers.batches, &applied);
                    scope.spawn(move || -> Result<T> {
                        let mut tally = T::default();
                        for (shard_number, batch) in
                            batches.iter().enumerate().skip(worker).step_by(threads)
                        {
                            let mut shard = self.shards[shard_number].write();
                            let mut key_start = 0;
                            for update in &batch.updates {
                                let key = &batch.keys[key_start..update.key_end];
                                key_start = update.key_end;
                                let replaced = match update.location {
                                    Some(location) => {
                                        shard.upsert(update.hash, key, location, false)?
                                    }
                                    None => shard.remove(update.hash, key),
                                };
                                applied(&mut tally, key.len(), update.location, replaced);
                            }
                        }
                        Ok(tally)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a keydir load thread panicked"))
                .collect()
        })
    }
}

/// Updates sorted by shard for [`KeyDir::apply_prepared`]; kept from one load to the next,
/// so that loading file after file does not fault fresh pages in for each.
#[derive(Default)]
pub(crate) struct LoadBuffers {
    batches: Vec<LoadBatch>,
}

/// One shard's part of a load: its updates in order, their keys back to back.
#[derive(Default)]
struct LoadBatch {
    keys: Vec<u8>,
    updates: Vec<LoadUpdate>,
}

struct LoadUpdate {
    /// The low 32 bits of the key's hash.
    hash: u32,
    /// Where the key ends in [`LoadBatch::keys`]; it starts where the one before ends.
    key_end: usize,
    location: Option<ValueLocation>,
}

impl LoadBatch {
    fn push(&mut self, hash: u32, key: &[u8], location: Option<ValueLocation>) {
        self.keys.extend_from_slice(key);
        self.updates.push(LoadUpdate {
            hash,
            key_end: self.keys.len(),
            location,
        });
    }
}
