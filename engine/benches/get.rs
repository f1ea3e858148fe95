//! Read throughput: `get` of random existing keys (16-byte keys, 100-byte values) from a warm
//! page cache, on one thread and on two threads sharing a cloned handle, beside a bare 4 KiB
//! `pread` from a page-cached file so the ratio to the cheapest possible read shows.
//!
//! The store is loaded once with 1,000,000 keys (`SyncPolicy::Never`, then a sync, so every
//! record is in a data file and every get goes through the memory map), then read through
//! once to warm the page cache. Multi-threaded cases split criterion's iteration count across
//! scoped threads (each `get` thread with its own clone of the handle) and report aggregate
//! throughput (wall time for all of them).
//!
//! Targets: at least 800,000 gets per second on one thread, scaling near-linearly to two.
//!
//! Run: `cargo bench -p caskade-engine --bench get`
//! (quick: `cargo bench -p caskade-engine --bench get -- --warm-up-time 1 --measurement-time 3`).

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use caskade_engine::{Bitcask, Options, SyncPolicy};
use criterion::{BenchmarkId, Criterion, Throughput};
use tempfile::TempDir;

mod common;
use common::{Tally, VALUE, key, test_mode};

const PRELOAD_KEYS: u64 = 1_000_000;
/// Keys loaded when criterion only checks that the bench runs.
const TEST_MODE_KEYS: u64 = 10_000;
const PAGE_LEN: usize = 4096;
/// Size of the page-cached file the `pread` baseline reads from.
const PREAD_FILE_LEN: u64 = 64 << 20;
const THREADS: [usize; 2] = [1, 2];
const TARGET_OPS_PER_SEC: f64 = 800_000.0;

/// splitmix64: a fast, good-enough generator for picking keys and offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A loaded store and a page-cached plain file, both in one temporary directory.
struct Fixture {
    _dir: TempDir,
    store: Bitcask,
    keys: u64,
    file: File,
    pages: u64,
}

impl Fixture {
    fn new(keys: u64) -> Fixture {
        let dir = common::temp_dir("get");
        let started = Instant::now();
        let store = Bitcask::open(
            dir.path().join("store"),
            Options {
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
        // Hands the write buffer to the OS, so every get reads through the memory map.
        store.sync().expect("syncing the store succeeds");
        let mut checked = 0u64;
        for i in 0..keys {
            let len = store
                .get_with(&key(i), <[u8]>::len)
                .expect("a get succeeds")
                .expect("every loaded key is present");
            checked += len as u64;
        }
        assert_eq!(checked, keys * VALUE.len() as u64);

        let path = dir.path().join("pread-baseline");
        let mut file = File::create(&path).expect("creating the baseline file succeeds");
        let chunk = vec![0xa5u8; 1 << 20];
        for _ in 0..PREAD_FILE_LEN / chunk.len() as u64 {
            file.write_all(&chunk)
                .expect("writing the baseline file succeeds");
        }
        file.sync_all().expect("syncing the baseline file succeeds");
        let file = File::open(&path).expect("opening the baseline file succeeds");
        let mut page = [0u8; PAGE_LEN];
        let pages = PREAD_FILE_LEN / PAGE_LEN as u64;
        for p in 0..pages {
            file.read_exact_at(&mut page, p * PAGE_LEN as u64)
                .expect("reading the baseline file succeeds");
        }
        println!(
            "get: loaded {keys} keys in {:.1} s; baseline file {} MiB",
            started.elapsed().as_secs_f64(),
            PREAD_FILE_LEN >> 20
        );
        Fixture {
            _dir: dir,
            store,
            keys,
            file,
            pages,
        }
    }
}

/// Runs `op` `iters` times in all, split across `threads` scoped threads, each with its own
/// generator and its own state made by `state` (a cloned store handle, say) before timing
/// starts, and returns the wall time from the moment every thread is ready.
fn run_split<S>(
    threads: usize,
    iters: u64,
    seed: u64,
    state: impl Fn() -> S + Sync,
    op: impl Fn(&S, &mut Rng) + Sync,
) -> Duration {
    if threads == 1 {
        let (state, mut rng) = (state(), Rng(seed));
        let start = Instant::now();
        for _ in 0..iters {
            op(&state, &mut rng);
        }
        return start.elapsed();
    }
    let shares: Vec<u64> = (0..threads as u64)
        .map(|t| iters / threads as u64 + u64::from(t < iters % threads as u64))
        .filter(|&share| share > 0)
        .collect();
    let ready = Barrier::new(shares.len() + 1);
    thread::scope(|s| {
        for (t, &share) in shares.iter().enumerate() {
            let (state, op, ready) = (&state, &op, &ready);
            s.spawn(move || {
                let state = state();
                let mut rng = Rng(seed ^ (t as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                ready.wait();
                for _ in 0..share {
                    op(&state, &mut rng);
                }
            });
        }
        ready.wait();
        // Leaving the scope joins every thread.
        Instant::now()
    })
    .elapsed()
}

#[derive(Default)]
struct Results {
    get: [Tally; THREADS.len()],
    get_with: Tally,
    pread: [Tally; THREADS.len()],
}

fn bench_get(c: &mut Criterion) -> Results {
    let keys = if test_mode() {
        TEST_MODE_KEYS
    } else {
        PRELOAD_KEYS
    };
    let mut fixture: Option<Fixture> = None;
    let mut results = Results::default();
    let mut seed = 1u64;

    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    for (i, &threads) in THREADS.iter().enumerate() {
        let tally = &mut results.get[i];
        group.bench_function(BenchmarkId::new("get", format!("{threads}_threads")), |b| {
            let f = fixture.get_or_insert_with(|| Fixture::new(keys));
            b.iter_custom(|iters| {
                seed += 1;
                let clone = || f.store.clone();
                let elapsed = run_split(threads, iters, seed, clone, |store, rng| {
                    let value = store.get(&key(rng.below(f.keys))).expect("a get succeeds");
                    black_box(value);
                });
                tally.add(iters, elapsed);
                elapsed
            });
        });
    }
    group.bench_function(BenchmarkId::new("get_with", "1_threads"), |b| {
        let f = fixture.get_or_insert_with(|| Fixture::new(keys));
        b.iter_custom(|iters| {
            seed += 1;
            let elapsed = run_split(
                1,
                iters,
                seed,
                || (),
                |(), rng| {
                    let sum = f
                        .store
                        .get_with(&key(rng.below(f.keys)), |v| {
                            v.iter().map(|&b| u32::from(b)).sum::<u32>()
                        })
                        .expect("a get succeeds");
                    black_box(sum);
                },
            );
            results.get_with.add(iters, elapsed);
            elapsed
        });
    });
    for (i, &threads) in THREADS.iter().enumerate() {
        let tally = &mut results.pread[i];
        group.bench_function(
            BenchmarkId::new("pread_4KiB", format!("{threads}_threads")),
            |b| {
                let f = fixture.get_or_insert_with(|| Fixture::new(keys));
                b.iter_custom(|iters| {
                    seed += 1;
                    let elapsed = run_split(
                        threads,
                        iters,
                        seed,
                        || (),
                        |(), rng| {
                            let mut page = [0u8; PAGE_LEN];
                            let offset = rng.below(f.pages) * PAGE_LEN as u64;
                            f.file
                                .read_exact_at(&mut page, offset)
                                .expect("a pread succeeds");
                            black_box(&page);
                        },
                    );
                    tally.add(iters, elapsed);
                    elapsed
                });
            },
        );
    }
    group.finish();
    if let Some(f) = fixture {
        f.store.close().expect("closing the store succeeds");
    }
    results
}

fn rate(tally: &Tally) -> String {
    tally
        .ops_per_sec()
        .map_or_else(|| "not run".to_owned(), |r| format!("{r:.0} ops/s"))
}

fn ratio(a: &Tally, b: &Tally) -> String {
    match (a.ops_per_sec(), b.ops_per_sec()) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "n/a".to_owned(),
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let results = bench_get(&mut c);
    c.final_summary();
    if test_mode() {
        return;
    }
    println!("\nget summary (16 B keys, 100 B values, warm page cache)");
    for (i, threads) in THREADS.iter().enumerate() {
        println!(
            "  get,            {threads} thread(s): {}",
            rate(&results.get[i])
        );
    }
    println!("  get_with,       1 thread(s): {}", rate(&results.get_with));
    for (i, threads) in THREADS.iter().enumerate() {
        println!(
            "  4 KiB pread,    {threads} thread(s): {}",
            rate(&results.pread[i])
        );
    }
    if let Some(one) = results.get[0].ops_per_sec() {
        println!(
            "  get, 1 thread / target {TARGET_OPS_PER_SEC:.0}: {:.2}",
            one / TARGET_OPS_PER_SEC
        );
    }
    println!(
        "  get scaling, 2 threads / 1 thread: {} (pread: {})",
        ratio(&results.get[1], &results.get[0]),
        ratio(&results.pread[1], &results.pread[0])
    );
    println!(
        "  get / pread, 1 thread: {}; 2 threads: {}",
        ratio(&results.get[0], &results.pread[0]),
        ratio(&results.get[1], &results.pread[1])
    );
}
