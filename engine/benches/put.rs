//! Write throughput: `put` of 16-byte keys and 100-byte values under `SyncPolicy::Never`, on
//! one thread. Every key is new (a counter), so the keydir grows as it does in real use, and
//! the data files are 2 GiB so rotation (which syncs) stays out of the way.
//!
//! Target: at least 1,000,000 puts per second. Criterion reports it as `thrpt` in elem/s; the
//! bench also prints the mean over every timed batch beside the target.
//!
//! Run: `cargo bench -p caskade-engine --bench put`
//! (quick: `cargo bench -p caskade-engine --bench put -- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;
use std::time::Instant;

use caskade_engine::{Bitcask, MAX_FILE_SIZE, Options, SyncPolicy};
use criterion::{Criterion, Throughput};

mod common;
use common::{Tally, VALUE, key, test_mode};

const TARGET_OPS_PER_SEC: f64 = 1_000_000.0;

fn bench_put(c: &mut Criterion) -> Tally {
    let dir = common::temp_dir("put");
    let store = Bitcask::open(
        dir.path(),
        Options {
            sync: SyncPolicy::Never,
            max_file_size: MAX_FILE_SIZE,
            auto_merge: None,
            tuning: common::tuning(),
            ..Options::default()
        },
    )
    .expect("opening a fresh store succeeds");
    let mut tally = Tally::default();
    let mut next = 0u64;

    let mut group = c.benchmark_group("put");
    group.throughput(Throughput::Elements(1));
    group.bench_function("16B_key_100B_value_sync_never", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                store
                    .put(black_box(&key(next)), black_box(&VALUE))
                    .expect("a put succeeds");
                next += 1;
            }
            let elapsed = start.elapsed();
            tally.add(iters, elapsed);
            elapsed
        });
    });
    group.finish();

    println!("put: {next} keys written; the keydir holds {}", store.len());
    store.close().expect("closing the store succeeds");
    tally
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let tally = bench_put(&mut c);
    c.final_summary();
    if test_mode() {
        return;
    }
    match tally.ops_per_sec() {
        Some(rate) => println!(
            "put (16 B key, 100 B value, SyncPolicy::Never, 1 thread): {rate:.0} ops/s, \
             {:.2}x the target of {TARGET_OPS_PER_SEC:.0} ops/s",
            rate / TARGET_OPS_PER_SEC
        ),
        None => println!("put: not run"),
    }
}
