//! The raw key-value space: a keyspace of its own beside the event store's.
//!
//! Every key is stored under a prefix no event-store key uses, so no key-value call can
//! read, overwrite or delete a stream, an event or an `$all` entry.

use caskade_engine::Bitcask;

use crate::error::{Error, Result};
use crate::format::{KV_PREFIX, kv_key};
use crate::store::EventStore;

/// The key-value space of an [`EventStore`]; see [`EventStore::kv`].
#[derive(Debug, Clone)]
pub struct KeyValue {
    engine: Bitcask,
}

impl EventStore {
    /// The store's raw key-value space, isolated from its streams.
    #[must_use]
    pub fn kv(&self) -> KeyValue {
        KeyValue {
            engine: self.shared.engine.clone(),
        }
    }
}

impl KeyValue {
    fn key(&self, key: &[u8]) -> Result<Vec<u8>> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let max = self.engine.options().max_key_size - 1;
        if key.len() > max {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        Ok(kv_key(key))
    }

    /// Stores `value` under `key`; durable when it returns under the default sync policy.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`] (nothing
    /// written), or [`Error::Engine`] for a failure of the engine.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.engine.put(&self.key(key)?, value)?)
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// As [`KeyValue::put`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.engine.get(&self.key(key)?)?)
    }

    /// Deletes `key`; deleting an absent key is not an error.
    ///
    /// # Errors
    /// As [`KeyValue::put`].
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        Ok(self.engine.delete(&self.key(key)?)?)
    }

    /// The keys starting with `prefix` (all keys for an empty prefix), in no particular order.
    pub fn keys(&self, prefix: &[u8]) -> impl Iterator<Item = Vec<u8>> + use<> {
        let mut full = Vec::with_capacity(1 + prefix.len());
        full.push(KV_PREFIX);
        full.extend_from_slice(prefix);
        self.engine.keys_with_prefix(&full).map(|mut key| {
            key.remove(0);
            key
        })
    }
}
