//! The keydir: every live key and where its latest value lies on disk.
//!
//! Values are never held here, so memory grows with the number and length of keys, not with
//! the data. The map is split into [`SHARD_COUNT`] shards, each behind its own read-write
//! lock, so readers on different keys rarely touch the same lock word and a table resize
//! stalls one shard, not the store.
//!
//! Per key a shard holds a 24-byte [`Slot`] in a `hashbrown` table (plus one control byte per
//! bucket) and the key's bytes in the shard's arena, a single `Vec<u8>`. Keys of removed
//! entries are garbage in the arena until the shard compacts it, which it does once garbage
//! outweighs live key bytes. Invariant: every slot's `key_ref` points at its own key's bytes
//! in its shard's arena.

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

const KEY_LEN_BITS: u32 = 16;
const MAX_ARENA_LEN: usize = 1 << (64 - KEY_LEN_BITS);

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

/// One keydir entry. `key_ref` packs the key's arena offset (high 48 bits) and length (low 16).
#[derive(Debug, Clone, Copy)]
struct Slot {
    key_ref: u64,
    file_id: u32,
    offset: u32,
    value_len: u32,
    timestamp_secs: u32,
}

impl Slot {
    fn key_range(&self) -> std::ops::Range<usize> {
        let start = (self.key_ref >> KEY_LEN_BITS) as usize;
        let len = (self.key_ref & ((1 << KEY_LEN_BITS) - 1)) as usize;
        start..start + len
    }

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

#[derive(Default)]
struct Shard {
    table: HashTable<Slot>,
    arena: Vec<u8>,
    /// Bytes of the arena no slot refers to.
    garbage: usize,
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        let arena = &self.arena;
        self.table
            .find(hash, |slot| &arena[slot.key_range()] == key)
    }

    fn find_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Slot> {
        let arena = &self.arena;
        self.table
            .find_mut(hash, |slot| &arena[slot.key_range()] == key)
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
        let start = self.arena.len();
        if start + key.len() > MAX_ARENA_LEN {
            return Err(Error::KeyDirFull);
        }
        self.arena.extend_from_slice(key);
        let mut slot = Slot {
            key_ref: ((start as u64) << KEY_LEN_BITS) | key.len() as u64,
            file_id: 0,
            offset: 0,
            value_len: 0,
            timestamp_secs: 0,
        };
        slot.set_location(location);
        let arena = &self.arena;
        self.table
            .insert_unique(hash, slot, |slot| hasher.hash_one(&arena[slot.key_range()]));
        Ok(None)
    }

    fn remove(&mut self, hash: u64, key: &[u8]) -> Option<ValueLocation> {
        let arena = &self.arena;
        let entry = self
            .table
            .find_entry(hash, |slot| &arena[slot.key_range()] == key)
            .ok()?;
        let (slot, _) = entry.remove();
        self.garbage += slot.key_range().len();
        self.compact_if_wasteful();
        Some(slot.location())
    }

    /// Rewrites the arena without garbage once garbage exceeds the live key bytes, so the
    /// arena stays within twice the live key bytes.
    fn compact_if_wasteful(&mut self) {
        let live = self.arena.len() - self.garbage;
        if self.garbage < 4096 || self.garbage < live {
            return;
        }
        let mut arena = Vec::with_capacity(live);
        for slot in &mut self.table {
            let range = slot.key_range();
            let start = arena.len();
            arena.extend_from_slice(&self.arena[range.clone()]);
            slot.key_ref = ((start as u64) << KEY_LEN_BITS) | range.len() as u64;
        }
        self.arena = arena;
        self.garbage = 0;
    }

    fn heap_bytes(&self) -> usize {
        self.table.allocation_size() + self.arena.capacity()
    }
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
        let shard = (hash >> SHARD_SHIFT) as usize & (SHARD_COUNT - 1);
        (hash, &self.shards[shard])
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
                .map(|slot| &shard.arena[slot.key_range()])
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
    fn slot_is_24_bytes() {
        assert_eq!(size_of::<Slot>(), 24);
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
        let keydir = KeyDir::new();
        for i in 0..20_000u32 {
            keydir
                .insert(format!("key-{i:08}").as_bytes(), location(1, i))
                .unwrap();
        }
        for i in (0..20_000u32).filter(|i| i % 4 != 0) {
            assert!(keydir.remove(format!("key-{i:08}").as_bytes()).is_some());
        }
        for i in 0..20_000u32 {
            let found = keydir.get(format!("key-{i:08}").as_bytes());
            assert_eq!(found.is_some(), i % 4 == 0, "key {i}");
            if let Some(found) = found {
                assert_eq!(found.offset, i);
            }
        }
        let garbage: usize = keydir.shards.iter().map(|s| s.read().garbage).sum();
        let arena: usize = keydir.shards.iter().map(|s| s.read().arena.len()).sum();
        assert!(
            garbage * 2 <= arena + 64 * 4096,
            "garbage {garbage} of arena {arena}"
        );
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
