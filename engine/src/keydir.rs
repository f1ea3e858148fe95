//! The keydir: every live key and where its latest value lies on disk.
//!
//! Values are never held here, so memory grows with the number and length of keys, not with
//! the data. The map is split into [`SHARD_COUNT`] shards, each behind its own read-write
//! lock, so readers on different keys rarely touch the same lock word and a table resize
//! stalls one shard, not the store.
//!
//! Per key a shard holds a 20-byte [`Slot`] in a `hashbrown` table (plus one control byte per
//! bucket) and the key's bytes, after a 2-byte length, in the shard's arena: 64 KiB chunks
//! filled in order, so key storage wastes at most one partly filled chunk per shard. Keys of
//! removed entries are garbage in the arena until the shard compacts it, which it does once
//! garbage outweighs live key bytes. Invariant: every slot's `key_ref` names its own key in
//! its shard's arena.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::data_file::FileId;
use crate::error::{Error, Result};

/// Number of shards; a power of two.
const SHARD_COUNT: usize = 64;
/// The shard is chosen from hash bits 32..38. Hashbrown takes a bucket's position from the
/// low bits and its control tag from the top seven, so neither loses entropy to sharding.
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

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        let arena = &self.arena;
        self.table.find(hash, |slot| arena.key(slot.key_ref) == key)
    }

    fn find_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Slot> {
        let arena = &self.arena;
        self.table
            .find_mut(hash, |slot| arena.key(slot.key_ref) == key)
    }

    fn insert(
        &mut self,
        hasher: &impl BuildHasher,
        hash: u64,
        key: &[u8],
        location: ValueLocation,
    ) -> Result<Option<ValueLocation>> {
        if let Some(slot) = self.find_mut(hash, key) {
            let old = slot.location();
            slot.set_location(location);
            return Ok(Some(old));
        }
        let mut slot = Slot {
            key_ref: self.arena.push(key)?,
            file_id: 0,
            offset: 0,
            value_len: 0,
            timestamp_secs: 0,
        };
        slot.set_location(location);
        let arena = &self.arena;
        self.table
            .insert_unique(hash, slot, |slot| hasher.hash_one(arena.key(slot.key_ref)));
        Ok(None)
    }

    fn remove(&mut self, hash: u64, key: &[u8]) -> Option<ValueLocation> {
        let arena = &self.arena;
        let entry = self
            .table
            .find_entry(hash, |slot| arena.key(slot.key_ref) == key)
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

/// The sharded map from key to [`ValueLocation`].
pub(crate) struct KeyDir {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
}

impl KeyDir {
    pub(crate) fn new() -> Self {
        KeyDir {
            shards: (0..SHARD_COUNT)
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn locate(&self, key: &[u8]) -> (u64, &RwLock<Shard>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[shard_index(hash)])
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
        shard.write().insert(&self.hasher, hash, key, location)
    }

    /// Applies `updates` in order (a location puts, `None` removes) and returns where each
    /// key pointed before, in the same order. Each shard is locked once for all of its
    /// keys, so on a table larger than the cache the inserts' memory misses overlap instead
    /// of each waiting for the one before at its lock release.
    pub(crate) fn update_all(
        &self,
        updates: &[(&[u8], Option<ValueLocation>)],
    ) -> Result<Vec<Option<ValueLocation>>> {
        let mut order: Vec<(usize, u64, usize)> = updates
            .iter()
            .enumerate()
            .map(|(index, (key, _))| {
                let hash = self.hasher.hash_one(key);
                (shard_index(hash), hash, index)
            })
            .collect();
        // Stable: updates of one key stay in order (a key always maps to one shard).
        order.sort_by_key(|&(shard, _, _)| shard);
        let mut replaced = vec![None; updates.len()];
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[run[0].0].write();
            for &(_, hash, index) in run {
                let (key, location) = updates[index];
                replaced[index] = match location {
                    Some(location) => shard.insert(&self.hasher, hash, key, location)?,
                    None => shard.remove(hash, key),
                };
            }
        }
        Ok(replaced)
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

    /// Number of live keys.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().table.len())
            .sum()
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
    pub(crate) fn shard_keys(&self, index: usize, prefix: &[u8]) -> Option<Vec<Box<[u8]>>> {
        let shard = self.shards.get(index)?.read();
        Some(
            shard
                .table
                .iter()
                .map(|slot| shard.arena.key(slot.key_ref))
                .filter(|key| key.starts_with(prefix))
                .map(Box::from)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(file: u32, offset: u32) -> ValueLocation {
        ValueLocation {
            file_id: FileId(file),
            offset,
            value_len: 10,
            timestamp_secs: 1,
        }
    }

    #[test]
    fn slot_is_20_bytes() {
        assert_eq!(size_of::<Slot>(), 20);
    }

    #[test]
    fn insert_get_remove() {
        let keydir = KeyDir::new();
        assert_eq!(keydir.insert(b"a", location(1, 16)).unwrap(), None);
        assert_eq!(
            keydir.insert(b"a", location(1, 50)).unwrap(),
            Some(location(1, 16))
        );
        assert_eq!(keydir.get(b"a"), Some(location(1, 50)));
        assert_eq!(keydir.len(), 1);
        assert_eq!(keydir.remove(b"a"), Some(location(1, 50)));
        assert_eq!(keydir.get(b"a"), None);
        assert_eq!(keydir.remove(b"a"), None);
    }

    #[test]
    fn replace_if_only_swaps_the_expected_location() {
        let keydir = KeyDir::new();
        keydir.insert(b"k", location(1, 16)).unwrap();
        assert!(!keydir.replace_if(b"k", location(1, 99), location(5, 16)));
        assert!(keydir.replace_if(b"k", location(1, 16), location(5, 16)));
        assert_eq!(keydir.get(b"k"), Some(location(5, 16)));
        assert!(!keydir.replace_if(b"missing", location(1, 16), location(5, 16)));
    }

    #[test]
    fn arena_compaction_keeps_every_key() {
        let hasher = foldhash::fast::RandomState::default();
        let mut shard = Shard::default();
        let key = |i: u32| format!("key-{i:08}");
        for i in 0..20_000u32 {
            let k = key(i);
            shard
                .insert(
                    &hasher,
                    hasher.hash_one(k.as_bytes()),
                    k.as_bytes(),
                    location(1, i),
                )
                .unwrap();
        }
        for i in (0..20_000u32).filter(|i| i % 4 != 0) {
            let k = key(i);
            assert!(
                shard
                    .remove(hasher.hash_one(k.as_bytes()), k.as_bytes())
                    .is_some()
            );
        }
        assert!(
            shard.arena.garbage < shard.arena.used / 2,
            "the arena was compacted"
        );
        for i in 0..20_000u32 {
            let k = key(i);
            let found = shard.find(hasher.hash_one(k.as_bytes()), k.as_bytes());
            assert_eq!(
                found.map(|slot| slot.offset),
                (i % 4 == 0).then_some(i),
                "key {i}"
            );
        }
    }

    #[test]
    fn keys_of_every_length_round_trip() {
        let keydir = KeyDir::new();
        let keys: Vec<Vec<u8>> = [1, 2, 100, 40_000, 65_533, 65_534, 65_535]
            .iter()
            .map(|&n| vec![n as u8; n])
            .collect();
        for (i, key) in keys.iter().enumerate() {
            keydir.insert(key, location(1, i as u32)).unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                keydir.get(key).map(|l| l.offset),
                Some(i as u32),
                "key of {}",
                key.len()
            );
        }
    }

    #[test]
    fn memory_per_key_is_key_length_plus_at_most_48_bytes() {
        let keydir = KeyDir::new();
        let count = 200_000u32;
        for i in 0..count {
            keydir
                .insert(format!("{i:016}").as_bytes(), location(1, i))
                .unwrap();
        }
        let per_key = keydir.heap_bytes() as f64 / f64::from(count);
        assert!(per_key <= 16.0 + 48.0, "{per_key:.1} bytes per 16-byte key");
    }

    #[test]
    fn shard_keys_filters_by_prefix() {
        let keydir = KeyDir::new();
        for key in [b"s:a".as_slice(), b"s:b", b"e:a"] {
            keydir.insert(key, location(1, 1)).unwrap();
        }
        let mut keys: Vec<Box<[u8]>> = (0..SHARD_COUNT)
            .flat_map(|i| keydir.shard_keys(i, b"s:").unwrap())
            .collect();
        keys.sort();
        assert_eq!(keys, vec![Box::from(&b"s:a"[..]), Box::from(&b"s:b"[..])]);
        assert!(keydir.shard_keys(SHARD_COUNT, b"").is_none());
    }
}
