//! The keydir: every live key and where its latest value lies on disk.
//!
//! Values are never held here, so memory grows with the number and length of keys, not with
//! the data. The map is split into [`SHARD_COUNT`] shards, each behind its own read-write
//! lock, so readers on different keys rarely touch the same lock word and a table resize
//! stalls one shard, not the store.
//!
//! Per key a shard holds a 24-byte [`Slot`] in a `hashbrown` table (plus one control byte per
//! bucket) and the key's bytes, after a 2-byte length, in the shard's arena: 64 KiB chunks
//! filled in order, so key storage wastes at most one partly filled chunk per shard. Keys of
//! removed entries are garbage in the arena until the shard compacts it, which it does once
//! garbage outweighs live key bytes. Invariant: every slot's `key_ref` names its own key in
//! its shard's arena, and its `hash` is the low 32 bits of that key's hash.
//!
//! The table hashes a slot from its stored `hash` alone, so growing a table never reads a
//! key back from the arena (on a table larger than the cache, that read was a miss per key),
//! and a lookup compares keys only when their stored hashes match.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use parking_lot::RwLock;

use crate::data_file::FileId;
use crate::error::{Error, Result};

pub(crate) mod load;

/// Number of shards; a power of two.
const SHARD_COUNT: usize = 64;
/// The shard is chosen from hash bits 32..38; the slot keeps bits 0..32 (see [`table_hash`]),
/// so the two are independent.
const SHARD_SHIFT: u32 = 32;

/// Size of an arena chunk. A `key_ref` is a chunk index (high 16 bits) and a position in
/// the chunk (low 16 bits), so a shard addresses 65,536 chunks: 4 GiB of keys.
const CHUNK_LEN: usize = 1 << 16;
const KEY_LEN_PREFIX: usize = size_of::<u16>();

/// Where a key's latest value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueLocation {
    /// The data file holding the record.
    pub file_id: FileId,
    /// The record's offset in that file.
    pub offset: u32,
    /// The length of the value.
    pub value_len: u32,
    /// When the record was written, in whole seconds since the Unix epoch.
    pub timestamp_secs: u32,
}

/// One keydir entry.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key_ref: u32,
    /// The low 32 bits of the key's hash.
    hash: u32,
    file_id: u32,
    offset: u32,
    value_len: u32,
    timestamp_secs: u32,
}

impl Slot {
    fn location(&self) -> ValueLocation {
        ValueLocation {
            file_id: FileId(self.file_id),
            offset: self.offset,
            value_len: self.value_len,
            timestamp_secs: self.timestamp_secs,
        }
    }

    fn set_location(&mut self, location: ValueLocation) {
        self.file_id = location.file_id.0;
        self.offset = location.offset;
        self.value_len = location.value_len;
        self.timestamp_secs = location.timestamp_secs;
    }
}

/// Key bytes of one shard, each after its `u16` length, in chunks of [`CHUNK_LEN`].
#[derive(Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    /// Bytes (lengths included) that no slot refers to.
    garbage: usize,
    /// Bytes (lengths included) in use or garbage.
    used: usize,
}

impl Arena {
    fn key(&self, key_ref: u32) -> &[u8] {
        let chunk = &self.chunks[(key_ref >> 16) as usize];
        let at = (key_ref & 0xffff) as usize;
        let len = usize::from(u16::from_le_bytes([chunk[at], chunk[at + 1]]));
        &chunk[at + KEY_LEN_PREFIX..at + KEY_LEN_PREFIX + len]
    }

    fn push(&mut self, key: &[u8]) -> Result<u32> {
        let need = KEY_LEN_PREFIX + key.len();
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.len() + need <= CHUNK_LEN);
        if !fits {
            if self.chunks.len() > usize::from(u16::MAX) {
                return Err(Error::KeyDirFull);
            }
            // A key longer than a chunk (up to 65,535 bytes plus its length) gets a chunk
            // of its own; it still starts at position 0.
            self.chunks.push(Vec::with_capacity(CHUNK_LEN.max(need)));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let at = chunk.len();
        let len = u16::try_from(key.len()).expect("keys are at most u16::MAX bytes");
        chunk.extend_from_slice(&len.to_le_bytes());
        chunk.extend_from_slice(key);
        self.used += need;
        Ok(((index as u32) << 16) | at as u32)
    }

    fn release(&mut self, key_ref: u32) {
        self.garbage += KEY_LEN_PREFIX + self.key(key_ref).len();
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>()
            + self.chunks.capacity() * size_of::<Vec<u8>>()
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    arena: Arena,
}

/// The hash hashbrown sees for a slot whose key's hash has `low` as its low 32 bits.
/// Hashbrown takes a bucket's position from the low bits of this and its control tag from the
/// top seven: multiplying by an odd constant keeps the low bits a bijection of `low`'s and
/// mixes all of `low` into the top ones.
fn table_hash(low: u32) -> u64 {
    u64::from(low).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Shard {
    fn find(&self, hash: u32, key: &[u8]) -> Option<&Slot> {
        let arena = &self.arena;
        self.table.find(table_hash(hash), |slot| {
            slot.hash == hash && arena.key(slot.key_ref) == key
        })
    }

    fn find_mut(&mut self, hash: u32, key: &[u8]) -> Option<&mut Slot> {
        let arena = &self.arena;
        self.table.find_mut(table_hash(hash), |slot| {
            slot.hash == hash && arena.key(slot.key_ref) == key
        })
    }

    /// Points `key` at `location` (one probe of the table whether or not the key is present)
    /// and returns where it pointed before; with `only_if_absent`, leaves a present key alone.
    fn upsert(
        &mut self,
        hash: u32,
        key: &[u8],
        location: ValueLocation,
        only_if_absent: bool,
    ) -> Result<Option<ValueLocation>> {
        let arena = &self.arena;
        let entry = self.table.entry(
            table_hash(hash),
            |slot| slot.hash == hash && arena.key(slot.key_ref) == key,
            |slot| table_hash(slot.hash),
        );
        match entry {
            Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                let old = slot.location();
                if !only_if_absent {
                    slot.set_location(location);
                }
                Ok(Some(old))
            }
            Entry::Vacant(vacant) => {
                let mut slot = Slot {
                    key_ref: self.arena.push(key)?,
                    hash,
                    file_id: 0,
                    offset: 0,
                    value_len: 0,
                    timestamp_secs: 0,
                };
                slot.set_location(location);
                vacant.insert(slot);
                Ok(None)
            }
        }
    }

    fn remove(&mut self, hash: u32, key: &[u8]) -> Option<ValueLocation> {
        let arena = &self.arena;
        let entry = self
            .table
            .find_entry(table_hash(hash), |slot| {
                slot.hash == hash && arena.key(slot.key_ref) == key
            })
            .ok()?;
        let (slot, _) = entry.remove();
        self.arena.release(slot.key_ref);
        self.compact_if_wasteful();
        Some(slot.location())
    }

    /// Rewrites the arena without garbage once garbage exceeds the live key bytes, so the
    /// arena stays within about twice the live key bytes.
    fn compact_if_wasteful(&mut self) {
        let live = self.arena.used - self.arena.garbage;
        if self.arena.garbage < CHUNK_LEN || self.arena.garbage < live {
            return;
        }
        let mut arena = Arena::default();
        for slot in &mut self.table {
            slot.key_ref = arena
                .push(self.arena.key(slot.key_ref))
                .expect("a compacted arena is smaller than the one it replaces");
        }
        self.arena = arena;
    }

    fn heap_bytes(&self) -> usize {
        self.table.allocation_size() + self.arena.heap_bytes()
    }
}

fn shard_index(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & (SHARD_COUNT - 1)
}

/// Hidden entries inserted under one shard lock, added to [`KeyDir::hidden`] when dropped:
/// before the lock is released, so `len` never counts them as live, and even when an insert
/// panics, so that revealing the entries marked handled never takes back more than was added.
struct HiddenCount<'a> {
    hidden: &'a AtomicUsize,
    count: usize,
}

impl Drop for HiddenCount<'_> {
    fn drop(&mut self) {
        self.hidden.fetch_add(self.count, Ordering::Relaxed);
    }
}

/// The sharded map from key to [`ValueLocation`].
pub(crate) struct KeyDir {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
    /// Entries inserted by [`KeyDir::insert_new`] and not yet revealed.
    hidden: AtomicUsize,
}

impl KeyDir {
    pub(crate) fn new() -> Self {
        KeyDir {
            shards: (0..SHARD_COUNT)
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            hidden: AtomicUsize::new(0),
        }
    }

    /// The low 32 bits of `key`'s hash, and its shard.
    fn locate(&self, key: &[u8]) -> (u32, &RwLock<Shard>) {
        let hash = self.hasher.hash_one(key);
        (hash as u32, &self.shards[shard_index(hash)])
    }

    /// The location of `key`'s value, if the key is live.
    pub(crate) fn get(&self, key: &[u8]) -> Option<ValueLocation> {
        let (hash, shard) = self.locate(key);
        shard.read().find(hash, key).map(Slot::location)
    }

    /// Points `key` at `location`, returning where it pointed before.
    pub(crate) fn insert(
        &self,
        key: &[u8],
        location: ValueLocation,
    ) -> Result<Option<ValueLocation>> {
        let (hash, shard) = self.locate(key);
        shard.write().upsert(hash, key, location, false)
    }

    /// Applies `updates` in order (a location puts, `None` removes) and returns where each
    /// key pointed before, in the same order. Each shard is locked once for all of its
    /// keys, so on a table larger than the cache the inserts' memory misses overlap instead
    /// of each waiting for the one before at its lock release.
    ///
    /// The last update is applied last (its shard's run comes last), so a reader that sees
    /// it sees every other update too.
    pub(crate) fn update_all(
        &self,
        updates: &[(&[u8], Option<ValueLocation>)],
    ) -> Result<Vec<Option<ValueLocation>>> {
        let mut replaced = vec![None; updates.len()];
        for run in self.by_shard(updates).chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[run[0].0].write();
            for &(_, hash, index) in run {
                let (key, location) = updates[index];
                replaced[index] = match location {
                    Some(location) => shard.upsert(hash, key, location, false)?,
                    None => shard.remove(hash, key),
                };
            }
        }
        Ok(replaced)
    }

    /// The first half of publishing a group of updates early (see `crate::publish`): inserts
    /// each put whose key is absent as a hidden entry and marks it in `handled`; also marks
    /// each delete of an absent key, which changes nothing. Every other update is left for
    /// the caller to apply in order later: each update of a key found present (which
    /// includes any key an earlier update of this call inserted), each update marked in
    /// `leave`, and each update of a key that an earlier left update touched. Stops at the
    /// first error, with `handled` marking what was done.
    ///
    /// Hidden entries count in [`KeyDir::len`] only once [`KeyDir::reveal`] says so; keeping
    /// them out of reads is the caller's business (their records are not yet published).
    pub(crate) fn insert_new(
        &self,
        updates: &[(&[u8], Option<ValueLocation>)],
        leave: &[bool],
        handled: &mut [bool],
    ) -> Result<()> {
        for run in self.by_shard(updates).chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[run[0].0].write();
            // Declared after the lock, so dropped before it is released, by a panic too.
            let mut inserted = HiddenCount {
                hidden: &self.hidden,
                count: 0,
            };
            let mut outcome = Ok(());
            // Keys of updates left so far in this shard: their later updates wait too.
            let mut left: Vec<&[u8]> = Vec::new();
            for &(_, hash, index) in run {
                let (key, location) = updates[index];
                if leave[index] || left.contains(&key) {
                    left.push(key);
                    continue;
                }
                let present = match location {
                    Some(location) => match shard.upsert(hash, key, location, true) {
                        Ok(old) => old.is_some(),
                        Err(error) => {
                            outcome = Err(error);
                            break;
                        }
                    },
                    None => shard.find(hash, key).is_some(),
                };
                if present {
                    continue;
                }
                inserted.count += usize::from(location.is_some());
                handled[index] = true;
            }
            drop(inserted);
            outcome?;
        }
        Ok(())
    }

    /// Makes room for about `keys` more keys spread over the shards, so loading them grows
    /// no table (each growth rehashes the whole shard).
    pub(crate) fn reserve(&self, keys: usize) {
        // Keys spread evenly over the shards by hash; a little slack covers the spread.
        let per_shard = keys / SHARD_COUNT + keys / SHARD_COUNT / 16 + 16;
        for shard in &self.shards {
            shard
                .write()
                .table
                .reserve(per_shard, |slot| table_hash(slot.hash));
        }
    }

    /// Counts `count` hidden entries as live: their records have been published.
    pub(crate) fn reveal(&self, count: usize) {
        self.hidden.fetch_sub(count, Ordering::Relaxed);
    }

    /// `(shard, hash, index)` of each update, sorted by shard, except that the last update's
    /// shard comes last; stable, so the updates of one key (always in one shard) stay in
    /// order, and the last update is last.
    fn by_shard(&self, updates: &[(&[u8], Option<ValueLocation>)]) -> Vec<(usize, u32, usize)> {
        let mut order: Vec<(usize, u32, usize)> = updates
            .iter()
            .enumerate()
            .map(|(index, (key, _))| {
                let hash = self.hasher.hash_one(key);
                (shard_index(hash), hash as u32, index)
            })
            .collect();
        let last_shard = order.last().map(|&(shard, _, _)| shard);
        order.sort_by_key(|&(shard, _, _)| (Some(shard) == last_shard, shard));
        order
    }

    /// Removes `key`, returning where it pointed.
    pub(crate) fn remove(&self, key: &[u8]) -> Option<ValueLocation> {
        let (hash, shard) = self.locate(key);
        shard.write().remove(hash, key)
    }

    /// Points `key` at `new` only if it still points at `expected`; merge uses this so a
    /// write that raced with it always wins.
    pub(crate) fn replace_if(
        &self,
        key: &[u8],
        expected: ValueLocation,
        new: ValueLocation,
    ) -> bool {
        let (hash, shard) = self.locate(key);
        let mut shard = shard.write();
        match shard.find_mut(hash, key) {
            Some(slot) if slot.location() == expected => {
                slot.set_location(new);
                true
            }
            _ => false,
        }
    }

    /// Number of live keys, hidden entries not counted. Like any count taken shard by shard
    /// while writes go on, it is exact only when no write is in flight.
    pub(crate) fn len(&self) -> usize {
        let entries: usize = self
            .shards
            .iter()
            .map(|shard| shard.read().table.len())
            .sum();
        entries.saturating_sub(self.hidden.load(Ordering::Relaxed))
    }

    /// Heap bytes held: tables and key arenas.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().heap_bytes())
            .sum::<usize>()
            + self.shards.len() * size_of::<RwLock<Shard>>()
    }

    /// The keys of shard `index` (in no order) that start with `prefix`, copied out under
    /// the shard's read lock. `None` past the last shard.
    pub(crate) fn shard_keys(
        &self,
        index: usize,
        prefix: &[u8],
        visible: impl Fn(ValueLocation) -> bool,
    ) -> Option<Vec<Box<[u8]>>> {
        let shard = self.shards.get(index)?.read();
        Some(
            shard
                .table
                .iter()
                .filter(|slot| visible(slot.location()))
                .map(|slot| shard.arena.key(slot.key_ref))
                .filter(|key| key.starts_with(prefix))
                .map(Box::from)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
