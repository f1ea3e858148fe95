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
//! After criterion's report the bench prints a table: events per second on each side (over
//! every timed iteration) and the ratio, beside the targets (Caskade at least 1.5x SQLite
//! with 1 writer, 10x with 16 writers, 2.5x in batches of 100).
//!
//! A reference case, `16_writers/sqlite_one_shared_connection`, runs the sixteen SQLite
//! writers on one connection behind a mutex: with their own connections, writers that find
//! the database locked sleep in SQLite's busy handler (1 ms, 2 ms, 5 ms... per retry), which
//! is most of what the `16_writers` SQLite figure measures. The table's last line compares
//! Caskade's 16 writers with this one too.
//!
//! Run: `cargo bench -p caskade-eventstore --bench append`
//! (quick: `cargo bench -p caskade-eventstore --bench append -- --warm-up-time 1
//! --measurement-time 3`). Sample size defaults to 10 here; `--sample-size` overrides it.

#![expect(clippy::doc_markdown, reason = "SQLite is a name in prose, not code")]

mod common;
mod sqlite_peer;
use common::{Tally, test_mode};

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

/// One row of the closing table.
struct Case {
    name: &'static str,
    target: f64,
    caskade: Tally,
    sqlite: Tally,
}

impl Case {
    fn new(name: &'static str, target: f64) -> Self {
        Case {
            name,
            target,
            caskade: Tally::default(),
            sqlite: Tally::default(),
        }
    }
}

/// The stores every case leaves behind, kept until the last case is over: removing a store's
/// files, or closing SQLite's last connection (which checkpoints and deletes the WAL), makes
/// the file system do work that would land in the next case's syncs.
struct Leftovers {
    root: TempDir,
    stores: Vec<EventStore>,
    connections: Vec<Connection>,
}

impl Leftovers {
    fn new() -> Self {
        Leftovers {
            root: tempfile::Builder::new()
                .prefix("caskade-bench-append-")
                .tempdir()
                .expect("creating a temporary directory succeeds"),
            stores: Vec::new(),
            connections: Vec::new(),
        }
    }

    /// A fresh Caskade store in its own directory, under the default options
    /// (`SyncPolicy::Always`: every append durable before it returns).
    fn caskade(&mut self, name: &str) -> EventStore {
        let store = EventStore::open(self.root.path().join(name), Options::default())
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

    /// Closes the stores and connections, then removes their files.
    fn remove(self) {
        for store in self.stores {
            store.close().expect("closing a store succeeds");
        }
        drop(self.connections);
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

fn bench_one_writer(
    group: &mut BenchmarkGroup<'_, WallTime>,
    case: &mut Case,
    leftovers: &mut Leftovers,
) {
    group.throughput(Throughput::Elements(1));

    let store = leftovers.caskade("1-writer-caskade");
    let mut last = None;
    let tally = &mut case.caskade;
    group.bench_function("1_writer/caskade", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            caskade_appends(&store, "writer-0", &mut last, iters, 1);
            let elapsed = start.elapsed();
            tally.add(iters, elapsed);
            elapsed
        });
    });

    let mut conn = sqlite_peer::open(&leftovers.sqlite_path("1-writer-sqlite"));
    let mut last = None;
    let tally = &mut case.sqlite;
    group.bench_function("1_writer/sqlite", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            sqlite_appends(&mut conn, "writer-0", &mut last, iters, 1);
            let elapsed = start.elapsed();
            tally.add(iters, elapsed);
            elapsed
        });
    });
    leftovers.connections.push(conn);
}

/// A Caskade writer thread's stream and last version.
struct CaskadeWriter {
    stream: String,
    last: Option<u64>,
}

/// A SQLite writer thread's connection, stream and last version.
struct SqliteWriter {
    conn: Connection,
    stream: String,
    last: Option<i64>,
}

fn bench_concurrent_writers(
    group: &mut BenchmarkGroup<'_, WallTime>,
    case: &mut Case,
    shared_connection: &mut Tally,
    leftovers: &mut Leftovers,
) {
    group.throughput(Throughput::Elements(1));

    let store = leftovers.caskade("16-writers-caskade");
    let mut writers: Vec<CaskadeWriter> = (0..WRITERS)
        .map(|i| CaskadeWriter {
            stream: format!("writer-{i}"),
            last: None,
        })
        .collect();
    let tally = &mut case.caskade;
    group.bench_function("16_writers/caskade", |b| {
        b.iter_custom(|iters| {
            let elapsed = concurrently(iters, &mut writers, |w, count| {
                caskade_appends(&store, &w.stream, &mut w.last, count, 1);
            });
            tally.add(iters, elapsed);
            elapsed
        });
    });

    let path = leftovers.sqlite_path("16-writers-sqlite");
    let mut writers: Vec<SqliteWriter> = (0..WRITERS)
        .map(|i| SqliteWriter {
            conn: sqlite_peer::open(&path),
            stream: format!("writer-{i}"),
            last: None,
        })
        .collect();
    let tally = &mut case.sqlite;
    group.bench_function("16_writers/sqlite", |b| {
        b.iter_custom(|iters| {
            let elapsed = concurrently(iters, &mut writers, |w, count| {
                sqlite_appends(&mut w.conn, &w.stream, &mut w.last, count, 1);
            });
            tally.add(iters, elapsed);
            elapsed
        });
    });
    leftovers
        .connections
        .extend(writers.into_iter().map(|w| w.conn));

    // A reference point, not a target: the same sixteen threads taking turns on one
    // connection behind a mutex, so no writer ever meets SQLITE_BUSY and its busy handler's
    // sleeps.
    let conn = Mutex::new(sqlite_peer::open(
        &leftovers.sqlite_path("16-writers-sqlite-shared"),
    ));
    let mut lasts: Vec<(String, Option<i64>)> = (0..WRITERS)
        .map(|i| (format!("writer-{i}"), None))
        .collect();
    let tally = shared_connection;
    group.bench_function("16_writers/sqlite_one_shared_connection", |b| {
        b.iter_custom(|iters| {
            let elapsed = concurrently(iters, &mut lasts, |(stream, last), count| {
                for _ in 0..count {
                    let mut conn = conn
                        .lock()
                        .expect("no writer panics holding the connection");
                    sqlite_appends(&mut conn, stream, last, 1, 1);
                }
            });
            tally.add(iters, elapsed);
            elapsed
        });
    });
    leftovers.connections.push(
        conn.into_inner()
            .expect("no writer panicked holding the connection"),
    );
}

fn bench_batches(
    group: &mut BenchmarkGroup<'_, WallTime>,
    case: &mut Case,
    leftovers: &mut Leftovers,
) {
    group.throughput(Throughput::Elements(BATCH as u64));

    let store = leftovers.caskade("batch-caskade");
    let mut last = None;
    let tally = &mut case.caskade;
    group.bench_function("batch_100/caskade", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            caskade_appends(&store, "writer-0", &mut last, iters, BATCH);
            let elapsed = start.elapsed();
            tally.add(iters * BATCH as u64, elapsed);
            elapsed
        });
    });

    let mut conn = sqlite_peer::open(&leftovers.sqlite_path("batch-sqlite"));
    let mut last = None;
    let tally = &mut case.sqlite;
    group.bench_function("batch_100/sqlite", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            sqlite_appends(&mut conn, "writer-0", &mut last, iters, BATCH);
            let elapsed = start.elapsed();
            tally.add(iters * BATCH as u64, elapsed);
            elapsed
        });
    });
    leftovers.connections.push(conn);
}

fn print_table(cases: &[Case], shared_connection: &Tally) {
    println!();
    println!(
        "durable appends, events/s (Caskade SyncPolicy::Always vs SQLite WAL synchronous=FULL)"
    );
    println!(
        "{:<12} {:>14} {:>14} {:>8} {:>8}",
        "case", "Caskade", "SQLite", "ratio", "target"
    );
    for case in cases {
        match (case.caskade.events_per_sec(), case.sqlite.events_per_sec()) {
            (Some(caskade), Some(sqlite)) => {
                let ratio = caskade / sqlite;
                let verdict = if ratio >= case.target {
                    ""
                } else {
                    "  below target"
                };
                println!(
                    "{:<12} {caskade:>14.0} {sqlite:>14.0} {:>7.2}x {:>7.1}x{verdict}",
                    case.name, ratio, case.target
                );
            }
            _ => println!("{:<12} not run", case.name),
        }
    }
    if let (Some(caskade), Some(sqlite)) = (
        cases[1].caskade.events_per_sec(),
        shared_connection.events_per_sec(),
    ) {
        println!(
            "reference: 16 SQLite writers sharing one connection (no SQLITE_BUSY): {sqlite:.0} \
             events/s; Caskade with 16 writers is {:.2}x that",
            caskade / sqlite
        );
    }
}

fn main() {
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut cases = [
        Case::new("1_writer", 1.5),
        Case::new("16_writers", 10.0),
        Case::new("batch_100", 2.5),
    ];
    let mut shared_connection = Tally::default();
    let mut leftovers = Leftovers::new();
    {
        let mut group = c.benchmark_group("append");
        // Every iteration is a durable commit (milliseconds), so equal-sized samples.
        group.sampling_mode(SamplingMode::Flat);
        let [one, concurrent, batches] = &mut cases;
        bench_one_writer(&mut group, one, &mut leftovers);
        bench_concurrent_writers(
            &mut group,
            concurrent,
            &mut shared_connection,
            &mut leftovers,
        );
        bench_batches(&mut group, batches, &mut leftovers);
        group.finish();
    }
    c.final_summary();
    if !test_mode() {
        print_table(&cases, &shared_connection);
    }
    leftovers.remove();
}
