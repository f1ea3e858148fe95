//! The page-cache budget: `Stats::cache_bytes` reports the data files' pages in the page
//! cache, and with `Options::cache_budget` set the maintenance rounds evict sealed files
//! until the cache is within it, while every value stays readable.
//!
//! The stores live under the build's own temporary directory, on the checkout's file
//! system: on a memory file system (a `tmpfs` `/tmp`) pages are the storage and cannot be
//! evicted.

use std::time::{Duration, Instant};

use caskade_engine::{Bitcask, Options, Result, SyncPolicy, WriteBatch};

const FILE_SIZE: u64 = 1 << 20;
const VALUE_LEN: usize = 4_000;
const KEYS: u32 = 2_000;

fn key(n: u32) -> Vec<u8> {
    format!("key-{n:06}").into_bytes()
}

fn value(n: u32) -> Vec<u8> {
    let byte = u8::try_from(n % 251).expect("below 251");
    vec![byte; VALUE_LEN]
}

fn options(cache_budget: Option<u64>) -> Options {
    Options {
        max_file_size: FILE_SIZE,
        sync: SyncPolicy::Never,
        cache_budget,
        maintenance_interval: Duration::from_millis(20),
        auto_merge: None,
        ..Options::default()
    }
}

fn fill(store: &Bitcask) -> Result<()> {
    for first in (0..KEYS).step_by(100) {
        let mut batch = WriteBatch::new();
        for n in first..first + 100 {
            batch.put(key(n), value(n));
        }
        store.write(batch)?;
    }
    store.sync()
}

fn read_all(store: &Bitcask) -> Result<()> {
    for n in 0..KEYS {
        assert_eq!(store.get(&key(n))?, Some(value(n)), "key {n}");
    }
    Ok(())
}

#[test]
fn the_cache_is_reported_and_kept_within_its_budget() -> Result<()> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let store = Bitcask::open(dir.path(), options(None))?;
    fill(&store)?;
    read_all(&store)?;
    let stats = store.stats();
    let data_bytes = stats.total_bytes();
    assert!(
        data_bytes > 6 * FILE_SIZE,
        "{data_bytes} bytes of data files"
    );
    // Every value was just written and read: nearly all of the files are cached.
    assert!(
        stats.cache_bytes >= data_bytes / 2,
        "{} of {data_bytes} bytes cached",
        stats.cache_bytes
    );
    // Whole pages of each file's readable part, at most (for any page size up to 64 KiB).
    let whole_pages: u64 = stats
        .files
        .iter()
        .map(|file| file.len.next_multiple_of(64 << 10))
        .sum();
    assert!(
        stats.cache_bytes <= whole_pages,
        "{} > {whole_pages}",
        stats.cache_bytes
    );
    assert!(stats.keydir_bytes_per_key() > 10.0);
    store.close()?;

    let budget = 2 * FILE_SIZE;
    let store = Bitcask::open(dir.path(), options(Some(budget)))?;
    read_all(&store)?;
    let active_len = store
        .stats()
        .files
        .iter()
        .find(|file| file.active)
        .map_or(0, |file| file.len);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cached = store.stats().cache_bytes;
        if cached <= budget.max(active_len) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{cached} bytes still cached, over the budget of {budget}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Evicted pages come back from the files, the same bytes.
    read_all(&store)?;
    store.close()
}

#[test]
fn an_empty_store_reports_no_keydir_bytes_per_key() -> Result<()> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let store = Bitcask::open(dir.path(), options(None))?;
    let stats = store.stats();
    assert_eq!(stats.live_keys, 0);
    assert!(stats.keydir_bytes_per_key().abs() < f64::EPSILON);
    store.close()
}
