//! Merge: how fast it rewrites live data, and how much it slows writers down.
//!
//! `merge/half_dead` merges a store of 500,000 keys (16-byte keys, 100-byte values) in which
//! every key has been written twice, so half of the data is dead. Before each timed merge
//! every key is overwritten once more (untimed) to make half the data dead again. Throughput
//! is in bytes of live records rewritten (criterion shows MiB/s; the summary prints MB/s).
//!
//! `merge_interference` measures `SyncPolicy::Never` puts on one thread, first alone, then
//! while another thread runs `merge` in a loop; the summary prints both rates and the
//! slowdown. The puts overwrite a second, hot set of 500,000 keys, so every merge has the
//! cold keys to copy and the writes' dead values to drop.
//!
//! The key count comes from `CASKADE_BENCH_MERGE_KEYS` (default 500,000; 10,000 when
//! criterion only tests that the bench runs).
//!
//! Run: `cargo bench -p caskade-engine --bench merge`
//! (quick: `cargo bench -p caskade-engine --bench merge -- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use caskade_engine::format::record_len;
use caskade_engine::{Bitcask, Options, SyncPolicy};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tempfile::TempDir;

mod common;
use common::{KEY_LEN, Tally, VALUE, key, test_mode};

const DEFAULT_KEYS: u64 = 500_000;
/// Keys loaded when criterion only checks that the bench runs.
const TEST_MODE_KEYS: u64 = 10_000;

fn key_count() -> u64 {
    match std::env::var("CASKADE_BENCH_MERGE_KEYS") {
        Ok(text) => text
            .replace('_', "")
            .parse()
            .expect("CASKADE_BENCH_MERGE_KEYS is a whole number of keys"),
        Err(_) if test_mode() => TEST_MODE_KEYS,
        Err(_) => DEFAULT_KEYS,
    }
}

struct Fixture {
    _dir: TempDir,
    store: Bitcask,
    keys: u64,
    /// Whether half of the data is dead (the state a timed merge starts from).
    half_dead: bool,
    /// The next hot key an interference put writes: key `keys + cursor % keys`.
    cursor: u64,
}

impl Fixture {
    fn new(keys: u64) -> Fixture {
        let dir = common::temp_dir("merge");
        let store = Bitcask::open(
            dir.path(),
            Options {
                sync: SyncPolicy::Never,
                auto_merge: None,
                maintenance_interval: Duration::from_secs(3600),
                tuning: common::tuning(),
                ..Options::default()
            },
        )
        .expect("opening a fresh store succeeds");
        let mut fixture = Fixture {
            _dir: dir,
            store,
            keys,
            half_dead: false,
            cursor: 0,
        };
        fixture.overwrite_all();
        fixture.overwrite_all();
        let stats = fixture.store.stats();
        assert_eq!(stats.live_bytes(), live_bytes(keys));
        println!(
            "merge: store of {keys} keys: {:.1} MB live, {:.1} MB dead",
            stats.live_bytes() as f64 / 1e6,
            stats.dead_bytes() as f64 / 1e6
        );
        fixture
    }

    /// Writes every key once more and hands the data to the OS, killing every older value.
    fn overwrite_all(&mut self) {
        for i in 0..self.keys {
            self.store.put(&key(i), &VALUE).expect("a put succeeds");
        }
        self.store.sync().expect("syncing the store succeeds");
        self.half_dead = true;
    }

    fn put_next(&mut self) {
        let i = self.keys + self.cursor % self.keys;
        self.cursor += 1;
        self.store
            .put(black_box(&key(i)), black_box(&VALUE))
            .expect("a put succeeds");
    }
}

/// Bytes of live records in a store of `keys` keys.
fn live_bytes(keys: u64) -> u64 {
    keys * record_len(KEY_LEN, VALUE.len()) as u64
}

#[derive(Default)]
struct Results {
    merge_bytes: Tally,
    put_alone: Tally,
    put_during_merge: Tally,
    concurrent_merges: u64,
    concurrent_merge_time: Duration,
    concurrent_records_copied: u64,
}

fn bench_merge(c: &mut Criterion, keys: u64, fixture: &mut Option<Fixture>, results: &mut Results) {
    let live = live_bytes(keys);
    let mut group = c.benchmark_group("merge");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(live));
    group.bench_function(BenchmarkId::new("half_dead", format!("{keys}_keys")), |b| {
        let f = fixture.get_or_insert_with(|| Fixture::new(keys));
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if !f.half_dead {
                    f.overwrite_all();
                }
                let start = Instant::now();
                let report = f.store.merge().expect("merging succeeds");
                timed += start.elapsed();
                f.half_dead = false;
                assert_eq!(report.records_copied, f.keys, "merge copies every live key");
            }
            results.merge_bytes.add(iters * live, timed);
            timed
        });
    });
    group.finish();
}

fn bench_interference(
    c: &mut Criterion,
    keys: u64,
    fixture: &mut Option<Fixture>,
    results: &mut Results,
) {
    let mut group = c.benchmark_group("merge_interference");
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_alone", |b| {
        let f = fixture.get_or_insert_with(|| Fixture::new(keys));
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f.put_next();
            }
            let elapsed = start.elapsed();
            results.put_alone.add(iters, elapsed);
            elapsed
        });
    });

    let stop = AtomicBool::new(false);
    let merges = AtomicU64::new(0);
    let merge_nanos = AtomicU64::new(0);
    let copied = AtomicU64::new(0);
    thread::scope(|s| {
        let mut merging = None;
        group.bench_function("put_during_merge", |b| {
            let f = fixture.get_or_insert_with(|| Fixture::new(keys));
            merging.get_or_insert_with(|| {
                // Starts from a merged store, not from the backlog `put_alone` left.
                f.store.merge().expect("merging succeeds");
                let store = f.store.clone();
                let (stop, merges, merge_nanos, copied) = (&stop, &merges, &merge_nanos, &copied);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let report = store.merge().expect("merging succeeds");
                        merge_nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        merges.fetch_add(1, Ordering::Relaxed);
                        copied.fetch_add(report.records_copied, Ordering::Relaxed);
                    }
                })
            });
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    f.put_next();
                }
                let elapsed = start.elapsed();
                results.put_during_merge.add(iters, elapsed);
                elapsed
            });
        });
        stop.store(true, Ordering::Relaxed);
    });
    group.finish();
    results.concurrent_merges = merges.into_inner();
    results.concurrent_merge_time = Duration::from_nanos(merge_nanos.into_inner());
    results.concurrent_records_copied = copied.into_inner();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let keys = key_count();
    let mut fixture = None;
    let mut results = Results::default();
    bench_merge(&mut c, keys, &mut fixture, &mut results);
    bench_interference(&mut c, keys, &mut fixture, &mut results);
    if let Some(f) = fixture {
        f.store.close().expect("closing the store succeeds");
    }
    c.final_summary();
    if test_mode() {
        return;
    }

    println!("\nmerge summary ({keys} keys; 16 B keys, 100 B values)");
    match results.merge_bytes.ops_per_sec() {
        Some(rate) => println!(
            "  merge, half the data dead:   {:.1} MB/s of live data rewritten",
            rate / 1e6
        ),
        None => println!("  merge, half the data dead:   not run"),
    }
    let alone = results.put_alone.ops_per_sec();
    let during = results.put_during_merge.ops_per_sec();
    let show =
        |rate: Option<f64>| rate.map_or_else(|| "not run".to_owned(), |r| format!("{r:.0} ops/s"));
    println!("  put, SyncPolicy::Never, alone:         {}", show(alone));
    println!("  put, SyncPolicy::Never, during merge:  {}", show(during));
    if let (Some(alone), Some(during)) = (alone, during) {
        println!(
            "  slowdown under a concurrent merge: {:.2}x ({:.0}% of the rate alone)",
            alone / during,
            100.0 * during / alone
        );
    }
    if results.concurrent_merges > 0 {
        println!(
            "  concurrent merges completed: {}, on average {:.2} s and {:.0} records copied each",
            results.concurrent_merges,
            results.concurrent_merge_time.as_secs_f64() / results.concurrent_merges as f64,
            results.concurrent_records_copied as f64 / results.concurrent_merges as f64
        );
    }
}
