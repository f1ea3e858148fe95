//! Durable append throughput, Caskade against SQLite, in one run.
//!
//! Three cases, each run on both sides with the same events (100 bytes of JSON, a fresh id,
//! no metadata) and an expected-version check on every append:
//!
//! - `1_writer`: one thread appending one event per commit to its stream;
//! - `16_writers`: sixteen threads, one stream each, one event per commit; criterion's
//!   iterations are split across the threads and the wall time of the whole round is timed;
//! - `batch_100`: one thread appending 100 events per commit.
//!
//! Caskade runs under its default `SyncPolicy::Always` (an append returns once it is on disk;
//! concurrent appends share group commits). SQLite runs in WAL mode with `synchronous=FULL`,
//! checking the expected version with `SELECT MAX(version)` inside a `BEGIN IMMEDIATE`
//! transaction; each of its writer threads has its own connection, and SQLite serialises them.
//! Every case gets fresh stores in temporary directories, all removed after the last case.
//!
//! After criterion's report the bench runs each case again, Caskade and SQLite in turn for
//! about a second each, five times, and prints a table of the medians: events per second on
//! each side and the median of the five rounds' ratios, beside the targets (Caskade at least
//! 1.5x SQLite with 1 writer, 10x with 16 writers, 2.5x in batches of 100). The rounds put
//! both sides in front of the same disk: its sync latency drifts over seconds on a shared
//! machine, and criterion runs one side after the other.
//!
//! A reference case, `16_writers/sqlite_one_shared_connection`, runs the sixteen SQLite
//! writers on one connection behind a mutex: with their own connections, writers that find
//! the database locked sleep in SQLite's busy handler (1 ms, 2 ms, 5 ms... per retry), which
//! is most of what the `16_writers` SQLite figure measures. The table's last line compares
//! Caskade's 16 writers with this one too, in rounds of its own.
//!
//! Run: `cargo bench -p caskade-eventstore --bench append`
//! (quick: `cargo bench -p caskade-eventstore --bench append -- --warm-up-time 1
//! --measurement-time 3`). Sample size defaults to 10 here; `--sample-size` overrides it.

#![expect(clippy::doc_markdown, reason = "SQLite is a name in prose, not code")]

mod common;
mod sqlite_peer;
use common::{Runner, interleaved, print_header, print_row, test_mode};

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use caskade_eventstore::{EventStore, ExpectedVersion, Options, StreamVersion};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use rusqlite::Connection;
use tempfile::TempDir;

/// Concurrent writers in the `16_writers` case.
const WRITERS: usize = 16;
/// Events per commit in the `batch_100` case.
const BATCH: usize = 100;

/// One case, both sides, and one row of the closing table.
struct Case<'a> {
    name: &'static str,
    /// The ratio wanted; `None` for a reference row.
    target: Option<f64>,
    events_per_iter: u64,
    caskade: Runner<'a>,
    sqlite: Runner<'a>,
    /// Whether criterion ran it (a filter on the command line may skip it).
    ran: bool,
}

impl Case<'_> {
    /// Criterion's measurement of both sides.
    fn bench(&mut self, group: &mut BenchmarkGroup<'_, WallTime>, sqlite_label: &str) {
        group.throughput(Throughput::Elements(self.events_per_iter));
        let ran = &mut self.ran;
        for (side, runner) in [
            ("caskade", &mut self.caskade),
            (sqlite_label, &mut self.sqlite),
        ] {
            group.bench_function(format!("{}/{side}", self.name), |b| {
                *ran = true;
                b.iter_custom(&mut *runner);
            });
        }
    }
}

/// The stores every case leaves behind, kept until the last case is over: removing a store's
/// files, or closing SQLite's last connection (which checkpoints and deletes the WAL), makes
/// the file system do work that would land in the next case's syncs. (The cases own their
/// connections and are dropped just before this.)
struct Leftovers {
    root: TempDir,
    stores: Vec<EventStore>,
}

impl Leftovers {
    fn new() -> Self {
        Leftovers {
            root: tempfile::Builder::new()
                .prefix("caskade-bench-append-")
                .tempdir()
                .expect("creating a temporary directory succeeds"),
            stores: Vec::new(),
        }
    }

    /// A fresh Caskade store in its own directory, under the default options
    /// (`SyncPolicy::Always`: every append durable before it returns) and the engine's
    /// tuning switches from `CASKADE_ENGINE_TUNING`.
    fn caskade(&mut self, name: &str) -> EventStore {
        let engine = caskade_engine::Options {
            tuning: common::tuning(),
            ..caskade_engine::Options::default()
        };
        let options = Options {
            engine,
            ..Options::default()
        };
        let store = EventStore::open(self.root.path().join(name), options)
            .expect("opening a fresh event store succeeds");
        self.stores.push(store.clone());
        store
    }

    /// The path of a fresh SQLite database in its own directory.
    fn sqlite_path(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir(&dir).expect("creating a directory in a temp dir succeeds");
        dir.join("events.db")
    }

    /// Closes the stores, then removes their files.
    fn remove(self) {
        for store in self.stores {
            store.close().expect("closing a store succeeds");
        }
        drop(self.root);
    }
}

/// What a Caskade append expects after `last` (the stream's last version, if any).
fn expected(last: Option<u64>) -> ExpectedVersion {
    last.map_or(ExpectedVersion::NoStream, |v| {
        ExpectedVersion::Exact(StreamVersion(v))
    })
}

/// Appends `count` batches of `per_commit` events to `stream` in Caskade, one after another.
fn caskade_appends(
    store: &EventStore,
    stream: &str,
    last: &mut Option<u64>,
    count: u64,
    per_commit: usize,
) {
    for _ in 0..count {
        let events = sqlite_peer::events(per_commit);
        let result = store
            .append(black_box(stream), expected(*last), &events)
            .expect("a Caskade append at the expected version succeeds");
        *last = Some(result.next_expected_version.0);
    }
}

/// Appends `count` batches of `per_commit` events to `stream` in SQLite, one after another.
fn sqlite_appends(
    conn: &mut Connection,
    stream: &str,
    last: &mut Option<i64>,
    count: u64,
    per_commit: usize,
) {
    for _ in 0..count {
        let events = sqlite_peer::events(per_commit);
        let version = sqlite_peer::append(conn, black_box(stream), *last, &events)
            .expect("a SQLite append at the expected version succeeds");
        *last = Some(version);
    }
}

/// Runs `iters` appends split across one thread per writer (`writer(state, count)` does
/// `count` of them) and returns the wall time from the moment all threads are ready until
/// the last one finishes.
fn concurrently<W: Send>(
    iters: u64,
    writers: &mut [W],
    writer: impl Fn(&mut W, u64) + Sync,
) -> Duration {
    let threads = writers.len() as u64;
    let barrier = Barrier::new(writers.len() + 1);
    let start = std::thread::scope(|scope| {
        for (i, state) in (0u64..).zip(writers.iter_mut()) {
            let count = iters / threads + u64::from(i < iters % threads);
            let (barrier, writer) = (&barrier, &writer);
            scope.spawn(move || {
                barrier.wait();
                writer(state, count);
            });
        }
        barrier.wait();
        Instant::now()
    });
    start.elapsed()
}

/// Times `count` appends of `per_commit` events to one stream of a fresh Caskade store.
fn caskade_single<'a>(leftovers: &mut Leftovers, name: &str, per_commit: usize) -> Runner<'a> {
    let store = leftovers.caskade(name);
    let mut last = None;
    Box::new(move |count| {
        let start = Instant::now();
        caskade_appends(&store, "writer-0", &mut last, count, per_commit);
        start.elapsed()
    })
}

/// Times `count` appends of `per_commit` events to one stream of a fresh SQLite database.
fn sqlite_single<'a>(leftovers: &Leftovers, name: &str, per_commit: usize) -> Runner<'a> {
    let mut conn = sqlite_peer::open(&leftovers.sqlite_path(name));
    let mut last = None;
    Box::new(move |count| {
        let start = Instant::now();
        sqlite_appends(&mut conn, "writer-0", &mut last, count, per_commit);
        start.elapsed()
    })
}

/// Times `count` single-event appends split across [`WRITERS`] threads, one stream each, on
/// a fresh Caskade store.
fn caskade_concurrent<'a>(leftovers: &mut Leftovers, name: &str) -> Runner<'a> {
    let store = leftovers.caskade(name);
    let mut writers: Vec<(String, Option<u64>)> = (0..WRITERS)
        .map(|i| (format!("writer-{i}"), None))
        .collect();
    Box::new(move |count| {
        concurrently(count, &mut writers, |(stream, last), count| {
            caskade_appends(&store, stream, last, count, 1);
        })
    })
}

/// As [`caskade_concurrent`], on a fresh SQLite database with a connection per thread.
fn sqlite_concurrent<'a>(leftovers: &Leftovers, name: &str) -> Runner<'a> {
    let path = leftovers.sqlite_path(name);
    let mut writers: Vec<(Connection, String, Option<i64>)> = (0..WRITERS)
        .map(|i| (sqlite_peer::open(&path), format!("writer-{i}"), None))
        .collect();
    Box::new(move |count| {
        concurrently(count, &mut writers, |(conn, stream, last), count| {
            sqlite_appends(conn, stream, last, count, 1);
        })
    })
}

/// A reference point, not a target: the [`WRITERS`] threads taking turns on one connection
/// behind a mutex, so no writer ever meets SQLITE_BUSY and its busy handler's sleeps.
fn sqlite_shared_connection<'a>(leftovers: &Leftovers, name: &str) -> Runner<'a> {
    let conn = Mutex::new(sqlite_peer::open(&leftovers.sqlite_path(name)));
    let mut lasts: Vec<(String, Option<i64>)> = (0..WRITERS)
        .map(|i| (format!("writer-{i}"), None))
        .collect();
    Box::new(move |count| {
        concurrently(count, &mut lasts, |(stream, last), count| {
            for _ in 0..count {
                let mut conn = conn
                    .lock()
                    .expect("no writer panics holding the connection");
                sqlite_appends(&mut conn, stream, last, 1, 1);
            }
        })
    })
}

fn print_table(cases: &mut [Case<'_>]) {
    println!();
    println!(
        "durable appends, events/s (Caskade SyncPolicy::Always vs SQLite WAL synchronous=FULL),"
    );
    println!("medians of 5 interleaved rounds of about 1 s per side");
    print_header(12);
    for case in cases.iter_mut().filter(|case| case.ran) {
        let figures = interleaved(case.events_per_iter, &mut case.caskade, &mut case.sqlite);
        print_row(12, case.name, &figures, case.target);
    }
}

fn main() {
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut leftovers = Leftovers::new();
    let mut cases = vec![
        Case {
            name: "1_writer",
            target: Some(1.5),
            events_per_iter: 1,
            caskade: caskade_single(&mut leftovers, "1-writer-caskade", 1),
            sqlite: sqlite_single(&leftovers, "1-writer-sqlite", 1),
            ran: false,
        },
        Case {
            name: "16_writers",
            target: Some(10.0),
            events_per_iter: 1,
            caskade: caskade_concurrent(&mut leftovers, "16-writers-caskade"),
            sqlite: sqlite_concurrent(&leftovers, "16-writers-sqlite"),
            ran: false,
        },
        Case {
            name: "batch_100",
            target: Some(2.5),
            events_per_iter: BATCH as u64,
            caskade: caskade_single(&mut leftovers, "batch-caskade", BATCH),
            sqlite: sqlite_single(&leftovers, "batch-sqlite", BATCH),
            ran: false,
        },
        // The reference row: Caskade's 16 writers against SQLite's on one shared connection.
        Case {
            name: "16_shared",
            target: None,
            events_per_iter: 1,
            caskade: caskade_concurrent(&mut leftovers, "16-shared-caskade"),
            sqlite: sqlite_shared_connection(&leftovers, "16-shared-sqlite"),
            ran: false,
        },
    ];
    {
        let mut group = c.benchmark_group("append");
        // Every iteration is a durable commit (milliseconds), so equal-sized samples.
        group.sampling_mode(SamplingMode::Flat);
        let [one, concurrent, batches, shared] = &mut cases[..] else {
            unreachable!("four cases")
        };
        one.bench(&mut group, "sqlite");
        concurrent.bench(&mut group, "sqlite");
        batches.bench(&mut group, "sqlite");
        shared.bench(&mut group, "sqlite_one_shared_connection");
        group.finish();
    }
    c.final_summary();
    if !test_mode() {
        print_table(&mut cases);
        println!(
            "16_shared: Caskade's 16 writers against 16 SQLite writers sharing one connection \
             (no SQLITE_BUSY); a reference, not a target"
        );
    }
    drop(cases);
    leftovers.remove();
}
