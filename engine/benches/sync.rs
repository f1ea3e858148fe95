//! Durable write throughput: `SyncPolicy::Always` puts (16-byte keys, 100-byte values) with 1,
//! 8 and 64 concurrent writers, beside the disk's own limit: writing 200 bytes at the next
//! offset of a plain file whose blocks are already allocated and synced (as the store's
//! preallocated runway is) and calling `fdatasync` (`File::sync_data`) once per operation,
//! measured before the writers and again after them, since a shared disk's speed drifts.
//!
//! Each multi-writer sample spawns its writers, lets them start together, and times the wall
//! clock until the last of them has done its share of criterion's iteration count, so the
//! reported throughput is the aggregate. After the run a table prints every case's rate and
//! the two ratios the issue sets targets for: one writer against the disk's limit (within
//! 10%), and 64 writers against one (at least 15x, which is what group commit is for).
//! Because a shared disk's speed drifts between criterion's cases, the first ratio is also
//! checked by a paired run that alternates short rounds of both on the same disk.
//!
//! Run: `cargo bench -p caskade-engine --bench sync` (about two minutes; samples are few and
//! each case measures for 5 s). Quick: add `-- --warm-up-time 1 --measurement-time 3`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use caskade_engine::{Bitcask, Options, SyncPolicy};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use tempfile::TempDir;

mod common;
use common::{Tally, VALUE, key, test_mode};

/// Bytes written per operation to the plain file.
const PLAIN_APPEND_LEN: usize = 200;
/// Bytes of the plain file allocated up front; writes wrap around within them.
const PLAIN_FILE_LEN: u64 = 64 << 20;
const WRITERS: [usize; 3] = [1, 8, 64];
/// One writer should reach at least this fraction of the plain file's rate.
const TARGET_ONE_WRITER_RATIO: f64 = 0.9;
/// 64 writers should reach at least this multiple of one writer's rate.
const TARGET_GROUP_COMMIT_GAIN: f64 = 15.0;
/// The paired check after the group: rounds, and operations of each kind per round.
const PAIRED_ROUNDS: usize = 20;
const PAIRED_OPS: u64 = 200;

/// A store under `SyncPolicy::Always` and a plain file, in one temporary directory.
struct Fixture {
    _dir: TempDir,
    store: Bitcask,
    plain: File,
    /// Where the next plain write goes.
    plain_offset: u64,
    /// The next key to write: every put writes a new key.
    next_key: AtomicU64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = common::temp_dir("sync");
        let store = Bitcask::open(
            dir.path().join("store"),
            Options {
                sync: SyncPolicy::Always,
                auto_merge: None,
                tuning: common::tuning(),
                ..Options::default()
            },
        )
        .expect("opening a fresh store succeeds");
        let plain = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(dir.path().join("plain"))
            .expect("creating the plain file succeeds");
        let zeros = vec![0u8; 1 << 20];
        for at in (0..PLAIN_FILE_LEN).step_by(zeros.len()) {
            plain
                .write_all_at(&zeros, at)
                .expect("zero-filling the plain file succeeds");
        }
        plain.sync_all().expect("syncing the plain file succeeds");
        Fixture {
            _dir: dir,
            store,
            plain,
            plain_offset: 0,
            next_key: AtomicU64::new(0),
        }
    }

    /// One durable write at the disk's limit: 200 bytes into allocated blocks, then
    /// `fdatasync`.
    fn plain_write(&mut self, record: &[u8]) {
        self.plain
            .write_all_at(record, self.plain_offset)
            .expect("writing the plain file succeeds");
        self.plain.sync_data().expect("fdatasync succeeds");
        self.plain_offset = (self.plain_offset + record.len() as u64) % PLAIN_FILE_LEN;
    }

    /// Does `iters` puts across `writers` threads; the wall time from when all are ready.
    fn put_concurrently(&self, writers: usize, iters: u64) -> Duration {
        let shares: Vec<u64> = (0..writers as u64)
            .map(|t| iters / writers as u64 + u64::from(t < iters % writers as u64))
            .filter(|&share| share > 0)
            .collect();
        let ready = Barrier::new(shares.len() + 1);
        thread::scope(|s| {
            for &share in &shares {
                let ready = &ready;
                s.spawn(move || {
                    ready.wait();
                    for _ in 0..share {
                        let i = self.next_key.fetch_add(1, Ordering::Relaxed);
                        self.store.put(&key(i), &VALUE).expect("a put succeeds");
                    }
                });
            }
            ready.wait();
            // Leaving the scope joins every writer.
            Instant::now()
        })
        .elapsed()
    }

    /// Alternates rounds of plain writes and single-writer puts, so both see the same
    /// disk; returns both rates and the median over rounds of put rate / write rate.
    fn paired(&mut self) -> (f64, f64, f64) {
        let record = [0xa5u8; PLAIN_APPEND_LEN];
        let (mut plain_time, mut put_time) = (Duration::ZERO, Duration::ZERO);
        let mut ratios = Vec::with_capacity(PAIRED_ROUNDS);
        for _ in 0..PAIRED_ROUNDS {
            let start = Instant::now();
            for _ in 0..PAIRED_OPS {
                self.plain_write(&record);
            }
            let plain = start.elapsed();
            let put = self.put_concurrently(1, PAIRED_OPS);
            ratios.push(plain.as_secs_f64() / put.as_secs_f64());
            plain_time += plain;
            put_time += put;
        }
        ratios.sort_by(f64::total_cmp);
        let ops = (PAIRED_ROUNDS as u64 * PAIRED_OPS) as f64;
        (
            ops / plain_time.as_secs_f64(),
            ops / put_time.as_secs_f64(),
            ratios[ratios.len() / 2],
        )
    }
}

struct Results {
    /// Measured first and again last: the disk's speed drifts when others share it, and
    /// the faster of the two is taken as the limit.
    disk_limit: [Tally; 2],
    writers: [Tally; WRITERS.len()],
}

fn bench_disk_limit(
    group: &mut BenchmarkGroup<'_, WallTime>,
    fixture: &mut Option<Fixture>,
    id: &str,
    tally: &mut Tally,
) {
    group.bench_function(id, |b| {
        let f = fixture.get_or_insert_with(Fixture::new);
        let record = [0xa5u8; PLAIN_APPEND_LEN];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f.plain_write(black_box(&record));
            }
            let elapsed = start.elapsed();
            tally.add(iters, elapsed);
            elapsed
        });
    });
}

fn bench_sync(c: &mut Criterion) -> (Results, Option<Fixture>) {
    let mut fixture: Option<Fixture> = None;
    let mut results = Results {
        disk_limit: Default::default(),
        writers: Default::default(),
    };
    let mut group = c.benchmark_group("sync");
    group.throughput(Throughput::Elements(1));

    let [before, after] = &mut results.disk_limit;
    bench_disk_limit(
        &mut group,
        &mut fixture,
        "disk_limit_200B_write_fdatasync",
        before,
    );
    for (i, &writers) in WRITERS.iter().enumerate() {
        let tally = &mut results.writers[i];
        group.bench_function(
            BenchmarkId::new("put_sync_always", format!("{writers}_writers")),
            |b| {
                let f = fixture.get_or_insert_with(Fixture::new);
                b.iter_custom(|iters| {
                    let elapsed = f.put_concurrently(writers, iters);
                    tally.add(iters, elapsed);
                    elapsed
                });
            },
        );
    }
    bench_disk_limit(
        &mut group,
        &mut fixture,
        "disk_limit_200B_write_fdatasync_again",
        after,
    );
    group.finish();
    (results, fixture)
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let (results, mut fixture) = bench_sync(&mut c);
    c.final_summary();
    let paired = match &mut fixture {
        Some(f) if !test_mode() && results.disk_limit[0].ops > 0 && results.writers[0].ops > 0 => {
            Some(f.paired())
        }
        _ => None,
    };
    if let Some(f) = fixture {
        f.store.close().expect("closing the store succeeds");
    }
    if test_mode() {
        return;
    }

    let show = |tally: &Tally| {
        tally
            .ops_per_sec()
            .map_or_else(|| "not run".to_owned(), |r| format!("{r:>10.0} ops/s"))
    };
    println!("\nsync summary (durable writes; 16 B keys, 100 B values)");
    println!(
        "  disk limit: 200 B write + fdatasync    {} (first), {} (last; the faster counts)",
        show(&results.disk_limit[0]),
        show(&results.disk_limit[1])
    );
    for (i, writers) in WRITERS.iter().enumerate() {
        println!(
            "  put, SyncPolicy::Always, {writers:>2} writer(s)  {}",
            show(&results.writers[i])
        );
    }
    let disk: Vec<f64> = results
        .disk_limit
        .iter()
        .filter_map(Tally::ops_per_sec)
        .collect();
    // The limit is what the disk can do, so the faster of the two measurements.
    let disk = disk.into_iter().reduce(f64::max);
    let one = results.writers[0].ops_per_sec();
    let many = results.writers[WRITERS.len() - 1].ops_per_sec();
    if let (Some(disk), Some(one)) = (disk, one) {
        println!(
            "  1 writer / disk limit:   {:.2} (target >= {TARGET_ONE_WRITER_RATIO:.2})",
            one / disk
        );
    }
    if let Some((plain, put, median)) = paired {
        println!(
            "  paired check, {PAIRED_ROUNDS} alternating rounds of {PAIRED_OPS} ops: disk limit \
             {plain:.0} ops/s, 1 writer {put:.0} ops/s; 1 writer / disk limit: median {median:.2} \
             (target >= {TARGET_ONE_WRITER_RATIO:.2})"
        );
    }
    if let (Some(one), Some(many)) = (one, many) {
        println!(
            "  64 writers / 1 writer:   {:.1}x (target >= {TARGET_GROUP_COMMIT_GAIN:.0}x)",
            many / one
        );
    }
}
