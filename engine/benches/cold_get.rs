//! Cold random reads: single `get`s of random keys over a store several times larger than the
//! memory the process may use, next to raw `pread`s of random records of the same files (each
//! a record's bytes at its offset, found in the hint files), in the same run, and the ratio of
//! their latencies. Also start-up under the
//! same cap against start-up without it.
//!
//! The store (1,000-byte values, about an event's size, 16-byte keys) is built with
//! `SyncPolicy::Never` and closed, so its files have hint files. The process then confines
//! itself to a memory cgroup of its own (v2 `memory.max`, else v1 `memory.limit_in_bytes`;
//! the keydir, the process and the page cache all count against it), after evicting the
//! store's pages from the page cache (`posix_fadvise(DONTNEED)`), which pages charged to
//! another cgroup would otherwise stay in. Without a cgroup it can create (not root, no
//! memory controller) the bench evicts the store's pages before every round instead, and
//! says so.
//!
//! Start-up: the store is opened once before confining, after an eviction, and once after,
//! both cold; the ratio is printed against the target (within 1.2x).
//!
//! Rounds: five, each timing 3,000 single `get`s and then 3,000 `pread`s, one at a time,
//! each operation timed on its own; the percentiles of each round, the medians over rounds,
//! and the median of the rounds' ratios (get over pread) at p50 and p99 are printed against
//! the targets (within 1.5x at p50, 2x at p99). Then criterion times the same two
//! operations (`cold_get/get`, `cold_get/pread`), still confined, for their mean times.
//!
//! Sizes come from `CASKADE_BENCH_COLD_BYTES` (the values' total; default 1 GiB) and
//! `CASKADE_BENCH_COLD_MEMORY` (the cap; default 256 MiB). The full run needs the store's size
//! in the temporary directory. `-- --test` (and `cargo test --benches`) builds a small store
//! and runs a few reads, without a cgroup.
//!
//! Run: `cargo bench -p caskade-engine --bench cold_get`.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caskade_engine::format::{RecordKind, decode_hint, record_len};
use caskade_engine::{Bitcask, MIN_FILE_SIZE, Options, SyncPolicy, WriteBatch};
use criterion::{Criterion, SamplingMode};

mod common;
use common::{key, temp_dir, test_mode};

/// Bytes per value: about one event.
const VALUE_LEN: usize = 1_000;
/// Keys per write batch while building.
const BUILD_BATCH: u64 = 1_000;
/// Operations timed per side per round.
const SAMPLES: usize = 3_000;
/// Rounds of gets then preads.
const ROUNDS: usize = 5;
const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_MEMORY: u64 = 256 << 20;

fn env_bytes(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} takes a number of bytes, not {value:?}"))
    })
}

/// A small, fast, deterministic generator: the bench needs spread, not quality.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// The store's options: files of a quarter of the data (at most the default 256 MiB), so
/// that even the small store of `--test` has sealed files with hint files.
fn options(keys: u64) -> Options {
    Options {
        max_file_size: (keys * VALUE_LEN as u64 / 4).clamp(MIN_FILE_SIZE, 256 << 20),
        ..Options::default()
    }
}

fn build(dir: &Path, keys: u64) {
    let options = Options {
        sync: SyncPolicy::Never,
        ..options(keys)
    };
    let store = Bitcask::open(dir, options).expect("opening a fresh store succeeds");
    let value = vec![0x5a; VALUE_LEN];
    let mut next = 0;
    while next < keys {
        let mut batch = WriteBatch::new();
        for i in next..(next + BUILD_BATCH).min(keys) {
            batch.put(key(i), &value);
        }
        store.write(batch).expect("building the store succeeds");
        next += BUILD_BATCH;
    }
    store.close().expect("closing the built store succeeds");
}

/// Where a record lies: its data file (an index into the opened files), offset and length.
struct RecordAt {
    file: usize,
    offset: u64,
    len: usize,
}

/// The store's data files, opened, and where each record of the sealed ones lies, from
/// their hint files (the active file has none; it holds the last few records).
fn records(dir: &Path) -> (Vec<File>, Vec<RecordAt>) {
    let mut hints: Vec<PathBuf> = fs::read_dir(dir)
        .expect("listing the store succeeds")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "hint"))
        .collect();
    hints.sort();
    let mut files = Vec::new();
    let mut records = Vec::new();
    for hint_path in hints {
        let bytes = fs::read(&hint_path).expect("reading a hint file succeeds");
        let hint = decode_hint(&bytes).expect("the hint file is whole");
        let data = File::open(hint_path.with_extension("data")).expect("its data file opens");
        files.push(data);
        records.extend(
            hint.entries()
                .filter(|entry| entry.kind == RecordKind::Put)
                .map(|entry| RecordAt {
                    file: files.len() - 1,
                    offset: u64::from(entry.offset),
                    len: record_len(entry.key.len(), entry.value_len as usize),
                }),
        );
    }
    assert!(!records.is_empty(), "the store has sealed files");
    (files, records)
}

/// Drops every file of the store from the page cache.
fn evict(dir: &Path) {
    for entry in fs::read_dir(dir).expect("listing the store succeeds") {
        let path = entry.expect("a directory entry").path();
        if path.is_file() {
            let file = File::open(&path).expect("opening a store file succeeds");
            fadvise_dont_need(&file);
        }
    }
}

#[expect(
    unsafe_code,
    reason = "posix_fadvise has no safe wrapper in the crates the engine depends on; it only \
              advises the kernel about a file this function holds open"
)]
fn fadvise_dont_need(file: &File) {
    // SAFETY: the descriptor is open for the duration of the call; the advice changes no
    // memory of this process.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(result, 0, "posix_fadvise(DONTNEED) fails with {result}");
}

/// A memory cgroup the process has moved itself into; moves back and removes it when dropped.
struct Confined {
    dir: PathBuf,
    parent_procs: PathBuf,
}

impl Confined {
    /// Moves the process into a new memory cgroup capped at `limit` bytes, v2 first, then v1.
    fn new(limit: u64) -> io::Result<Confined> {
        let pid = std::process::id().to_string();
        let root = Path::new("/sys/fs/cgroup");
        let v2 = fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"));
        let (parent, limit_file) = if v2 {
            (root.to_path_buf(), "memory.max")
        } else {
            (root.join("memory"), "memory.limit_in_bytes")
        };
        let dir = parent.join(format!("caskade-bench-cold-{pid}"));
        fs::create_dir(&dir)?;
        let confined = Confined {
            dir,
            parent_procs: parent.join("cgroup.procs"),
        };
        fs::write(confined.dir.join(limit_file), limit.to_string())?;
        fs::write(confined.dir.join("cgroup.procs"), &pid)?;
        Ok(confined)
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        let pid = std::process::id().to_string();
        let _ = fs::write(&self.parent_procs, pid);
        let _ = fs::remove_dir(&self.dir);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short sorted list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// `samples` single gets of random keys, each timed.
fn time_gets(store: &Bitcask, keys: u64, samples: usize, random: &mut Random) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let wanted = key(random.below(keys));
            let started = Instant::now();
            let value = store.get(&wanted).expect("a get succeeds");
            let took = started.elapsed();
            assert_eq!(
                value.map(|v| v.len()),
                Some(VALUE_LEN),
                "every key was written"
            );
            took
        })
        .collect();
    times.sort_unstable();
    times
}

/// `samples` preads of random records, each of the record's bytes at its offset, each timed.
fn time_preads(
    files: &[File],
    records: &[RecordAt],
    samples: usize,
    random: &mut Random,
) -> Vec<Duration> {
    let mut buffer = Vec::new();
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let record = &records[random.below(records.len() as u64) as usize];
            buffer.resize(record.len, 0);
            let started = Instant::now();
            files[record.file]
                .read_exact_at(&mut buffer, record.offset)
                .expect("a pread succeeds");
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    times
}

fn timed_open(dir: &Path, keys: u64) -> (Bitcask, Duration) {
    let started = Instant::now();
    let store = Bitcask::open(dir, options(keys)).expect("reopening the store succeeds");
    (store, started.elapsed())
}

/// The same two operations through criterion, for its mean time per operation and its
/// comparison with the last saved run.
fn with_criterion(
    store: &Bitcask,
    keys: u64,
    files: &[File],
    records: &[RecordAt],
    random: &mut Random,
) {
    let mut criterion = Criterion::default().sample_size(10).configure_from_args();
    let mut group = criterion.benchmark_group("cold_get");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("get", |b| {
        b.iter_custom(|iters| {
            let samples = usize::try_from(iters).unwrap_or(usize::MAX);
            time_gets(store, keys, samples, random).iter().sum()
        });
    });
    group.bench_function("pread", |b| {
        b.iter_custom(|iters| {
            let samples = usize::try_from(iters).unwrap_or(usize::MAX);
            time_preads(files, records, samples, random).iter().sum()
        });
    });
    group.finish();
    criterion.final_summary();
}

fn main() {
    let testing = test_mode();
    let bytes = if testing {
        4 << 20
    } else {
        env_bytes("CASKADE_BENCH_COLD_BYTES", DEFAULT_BYTES)
    };
    let memory = env_bytes("CASKADE_BENCH_COLD_MEMORY", DEFAULT_MEMORY);
    let keys = bytes / VALUE_LEN as u64;
    let samples = if testing { 50 } else { SAMPLES };
    let dir = temp_dir("cold-get");
    let started = Instant::now();
    build(dir.path(), keys);
    println!(
        "cold_get: built {keys} keys ({} MiB of values) in {:.1} s",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );

    let (files, records) = records(dir.path());
    evict(dir.path());
    let (store, uncapped_open) = timed_open(dir.path(), keys);
    store.close().expect("closing succeeds");
    evict(dir.path());
    let confined = if testing {
        None
    } else {
        match Confined::new(memory) {
            Ok(confined) => Some(confined),
            Err(error) => {
                println!(
                    "cold_get: no memory cgroup ({error}); evicting the store before every round \
                     instead"
                );
                None
            }
        }
    };
    if let Some(confined) = &confined {
        println!(
            "cold_get: confined to {} MiB in {}",
            memory >> 20,
            confined.dir.display()
        );
    }
    let (store, capped_open) = timed_open(dir.path(), keys);
    let stats = store.stats();
    println!(
        "cold_get: start-up {:.0} ms uncapped, {:.0} ms capped ({:.2}x, target within 1.20x); \
         keydir {} MiB",
        uncapped_open.as_secs_f64() * 1e3,
        capped_open.as_secs_f64() * 1e3,
        capped_open.as_secs_f64() / uncapped_open.as_secs_f64(),
        stats.keydir_bytes >> 20
    );

    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let (mut p50_ratios, mut p99_ratios) = (Vec::new(), Vec::new());
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "round", "get p50", "get p90", "get p99", "pread p50", "pread p90", "pread p99"
    );
    for round in 0..ROUNDS {
        if confined.is_none() {
            evict(dir.path());
        }
        let gets = time_gets(&store, keys, samples, &mut random);
        if confined.is_none() {
            evict(dir.path());
        }
        let preads = time_preads(&files, &records, samples, &mut random);
        let row = [0.5, 0.9, 0.99].map(|p| micros(percentile(&gets, p)));
        let raw = [0.5, 0.9, 0.99].map(|p| micros(percentile(&preads, p)));
        println!(
            "{round:<6} {:>8.0}us {:>8.0}us {:>8.0}us {:>8.0}us {:>8.0}us {:>8.0}us",
            row[0], row[1], row[2], raw[0], raw[1], raw[2]
        );
        p50_ratios.push(row[0] / raw[0]);
        p99_ratios.push(row[2] / raw[2]);
    }
    println!(
        "get over pread, median of {ROUNDS} rounds: p50 {:.2}x (target within 1.50x), p99 \
         {:.2}x (target within 2.00x)",
        median(&mut p50_ratios),
        median(&mut p99_ratios)
    );
    io::stdout().flush().expect("flushing stdout succeeds");

    with_criterion(&store, keys, &files, &records, &mut random);
    store.close().expect("closing succeeds");
    drop(confined);
}
