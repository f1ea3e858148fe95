//! Helpers shared by the engine's integration tests.

use std::collections::BTreeMap;

use caskade_engine::{Bitcask, Result};

/// What a store should hold: every live key and its value.
pub(crate) type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every live key and its value, read through `keys()` and `get()`.
pub(crate) fn contents(store: &Bitcask) -> Result<Model> {
    let mut out = Model::new();
    for key in store.keys() {
        let value = store.get(&key)?;
        let value = value.unwrap_or_else(|| panic!("listed key {key:?} has no value"));
        out.insert(key, value);
    }
    assert_eq!(out.len(), store.len(), "keys() and len() disagree");
    Ok(out)
}
