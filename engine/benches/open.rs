//! Start-up time: `Bitcask::open` of a store holding 10,000,000 keys (16-byte keys, 100-byte
//! values, about 1.4 GB of data files and 0.35 GB of hint files), with its hint files and
//! without them (every `*.hint` deleted, so every data file is scanned and checksummed).
//!
//! The store is built once (`SyncPolicy::Never`, then `close`, which writes a hint file beside
//! every sealed file) and its files stay in the page cache, so this measures the CPU cost of
//! rebuilding the keydir rather than the disk. Only `open` is timed. The handle is then closed
//! (with hints) or dropped (without: `close` would write the hint files back, which is not
//! start-up work) outside the timing. The bench also prints the keydir's heap bytes per key
//! (`stats().keydir_bytes / live_keys`) against the target of key length + 48 bytes.
//!
//! Data files have the engine's default size (256 MiB), or less for a small store so that it
//! still has a few sealed files with hint files to load.
//!
//! The key count comes from `CASKADE_BENCH_OPEN_KEYS` (default 10,000,000; 100,000 when
//! criterion only tests that the bench runs). The full run needs about 2 GB in the temporary
//! directory and several minutes.
//!
//! Run: `cargo bench -p caskade-engine --bench open`
//! (smoke: `CASKADE_BENCH_OPEN_KEYS=1000000 cargo bench -p caskade-engine --bench open`).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use caskade_engine::format::record_len;
use caskade_engine::{Bitcask, MIN_FILE_SIZE, Options, SyncPolicy};
use criterion::{Criterion, SamplingMode};
use tempfile::TempDir;

mod common;
use common::{KEY_LEN, VALUE, key, test_mode};

const DEFAULT_KEYS: u64 = 10_000_000;
/// Keys loaded when criterion only checks that the bench runs.
const TEST_MODE_KEYS: u64 = 100_000;
/// The engine's default `max_file_size`.
const DEFAULT_FILE_SIZE: u64 = 256 << 20;
/// Small stores get smaller data files so that at least this many are sealed (and hinted).
const MIN_SEALED_FILES: u64 = 4;
/// The keydir may hold at most this many bytes per key beyond the key itself.
const TARGET_OVERHEAD_PER_KEY: usize = 48;

fn key_count() -> u64 {
    match std::env::var("CASKADE_BENCH_OPEN_KEYS") {
        Ok(text) => text
            .replace('_', "")
            .parse()
            .expect("CASKADE_BENCH_OPEN_KEYS is a whole number of keys"),
        Err(_) if test_mode() => TEST_MODE_KEYS,
        Err(_) => DEFAULT_KEYS,
    }
}

/// The engine's default file size, or less for a small store so that it still has at least
/// [`MIN_SEALED_FILES`] sealed files: 256 MiB at 10,000,000 keys, about 26 MiB at 1,000,000.
fn file_size(keys: u64) -> u64 {
    let data = keys * record_len(KEY_LEN, VALUE.len()) as u64;
    (data / (MIN_SEALED_FILES + 1)).clamp(MIN_FILE_SIZE, DEFAULT_FILE_SIZE)
}

fn open(dir: &Path, keys: u64) -> Bitcask {
    let options = Options {
        max_file_size: file_size(keys),
        sync: SyncPolicy::Never,
        auto_merge: None,
        // Keeps the maintenance thread from writing hint files while a case runs.
        maintenance_interval: Duration::from_secs(3600),
        create_if_missing: false,
        tuning: common::tuning(),
        ..Options::default()
    };
    Bitcask::open(dir, options).expect("opening the store succeeds")
}

/// Sizes of the files in `dir` whose names end with `suffix`.
fn bytes_of(dir: &Path, suffix: &str) -> u64 {
    fs::read_dir(dir)
        .expect("listing the store succeeds")
        .map(|entry| entry.expect("listing the store succeeds"))
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(suffix))
        .map(|entry| entry.metadata().expect("stat succeeds").len())
        .sum()
}

fn remove_hints(dir: &Path) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(dir).expect("listing the store succeeds") {
        let entry = entry.expect("listing the store succeeds");
        if entry.file_name().to_string_lossy().ends_with(".hint") {
            fs::remove_file(entry.path()).expect("removing a hint file succeeds");
            removed += 1;
        }
    }
    removed
}

/// The store, built once.
struct Fixture {
    dir: TempDir,
    keys: u64,
}

impl Fixture {
    fn build(keys: u64) -> Fixture {
        let dir = common::temp_dir("open");
        let started = Instant::now();
        let store = Bitcask::open(
            dir.path(),
            Options {
                max_file_size: file_size(keys),
                sync: SyncPolicy::Never,
                auto_merge: None,
                tuning: common::tuning(),
                ..Options::default()
            },
        )
        .expect("opening a fresh store succeeds");
        for i in 0..keys {
            store.put(&key(i), &VALUE).expect("a put succeeds");
        }
        store.close().expect("closing the store succeeds");
        println!(
            "open: built a store of {keys} keys in {:.1} s: {:.0} MB of data files \
             ({} MiB each), {:.0} MB of hint files",
            started.elapsed().as_secs_f64(),
            bytes_of(dir.path(), ".data") as f64 / 1e6,
            file_size(keys) >> 20,
            bytes_of(dir.path(), ".hint") as f64 / 1e6,
        );
        Fixture { dir, keys }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes sure every sealed file has its hint file, or that none has.
    fn set_hints(&self, wanted: bool) {
        if wanted {
            // `close` writes the hint files that are missing.
            open(self.path(), self.keys)
                .close()
                .expect("closing the store succeeds");
        } else {
            remove_hints(self.path());
        }
    }

    /// Opens the store once outside the timing and prints what recovery did and what the
    /// keydir costs per key.
    fn describe(&self, case: &str) {
        let store = open(self.path(), self.keys);
        let report = store.recovery_report().clone();
        let stats = store.stats();
        assert_eq!(stats.live_keys as u64, self.keys, "every key is recovered");
        let per_key = stats.keydir_bytes as f64 / stats.live_keys as f64;
        let limit = KEY_LEN + TARGET_OVERHEAD_PER_KEY;
        println!(
            "open {case}: {} data files, {} loaded from hint files, {} scanned; keydir {:.0} MB \
             = {per_key:.1} bytes per key (key {KEY_LEN} + {:.1}); target <= {limit} \
             (key + {TARGET_OVERHEAD_PER_KEY}): {}",
            report.data_files,
            report.hint_files_used,
            report.data_files_scanned,
            stats.keydir_bytes as f64 / 1e6,
            per_key - KEY_LEN as f64,
            if per_key <= limit as f64 {
                "met"
            } else {
                "MISSED"
            },
        );
        drop(store);
    }
}

fn bench_open(c: &mut Criterion) {
    let keys = key_count();
    let mut fixture: Option<Fixture> = None;
    let mut group = c.benchmark_group("open");
    group.sampling_mode(SamplingMode::Flat);

    let cases = [("with_hints", true), ("without_hints", false)];
    for (case, hints) in cases {
        // Criterion calls the closure for the warm-up and for every sample.
        let mut prepared = false;
        group.bench_function(format!("{case}/{keys}_keys"), |b| {
            let f = fixture.get_or_insert_with(|| Fixture::build(keys));
            if !prepared {
                f.set_hints(hints);
                f.describe(case);
                prepared = true;
            }
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let store = open(f.path(), f.keys);
                    timed += start.elapsed();
                    assert_eq!(store.len() as u64, f.keys, "every key is recovered");
                    if hints {
                        store.close().expect("closing the store succeeds");
                    } else {
                        drop(store);
                    }
                }
                timed
            });
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    bench_open(&mut c);
    c.final_summary();
}
