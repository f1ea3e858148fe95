//! Read throughput, Caskade against SQLite, in one run: a 100,000-event stream read forwards,
//! and `$all` read forwards over the same 100,000 events.
//!
//! Both stores are built once per process with the same events (100 bytes of JSON, a fresh
//! id, no metadata), appended durably in batches of 1,000. Each iteration reads every event
//! and materialises it as a [`RecordedEvent`] (id, stream, version, position, type, data,
//! metadata, recorded time) on both sides:
//!
//! - `stream_forwards`: Caskade's `read_stream`; SQLite's
//!   `SELECT ... WHERE stream = ? ORDER BY version` through the `(stream, version)` index;
//! - `all_forwards`: Caskade's `read_all`; SQLite's `SELECT ... ORDER BY position` (a scan of
//!   the table in rowid order).
//!
//! After criterion's report the bench runs each case again, Caskade and SQLite in turn for
//! about a second each, five times, and prints the medians: events per second on each side
//! and the median of the rounds' ratios, beside the target for stream reads (Caskade at least
//! 3x SQLite). Taking each ratio within a round keeps the CPU the two sides get comparable
//! on a shared machine.
//!
//! Run: `cargo bench -p caskade-eventstore --bench read`
//! (quick: `cargo bench -p caskade-eventstore --bench read -- --warm-up-time 1
//! --measurement-time 3`). Sample size defaults to 10 here; `--sample-size` overrides it.

#![expect(clippy::doc_markdown, reason = "SQLite is a name in prose, not code")]

mod common;
mod sqlite_peer;
use common::{Runner, interleaved, print_header, print_row, test_mode};

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use caskade_eventstore::{
    ContentType, EventStore, ExpectedVersion, Options, Position, ReadAll, ReadStream,
    RecordedEvent, StreamVersion,
};
use chrono::DateTime;
use criterion::{Criterion, SamplingMode, Throughput};
use rusqlite::{Connection, Row};
use tempfile::TempDir;
use uuid::Uuid;

/// Events in the stream, and in `$all`.
const EVENTS: u64 = 100_000;
/// Events per append while building the stores.
const LOAD_BATCH: usize = 1_000;
/// The one stream.
const STREAM: &str = "account-1";

/// One case, both sides, and one row of the closing table.
struct Case<'a> {
    name: &'static str,
    target: Option<f64>,
    caskade: Runner<'a>,
    sqlite: Runner<'a>,
    /// Whether criterion ran it (a filter on the command line may skip it).
    ran: bool,
}

/// The two stores, holding the same events, and the directories they live in.
struct Stores {
    caskade: EventStore,
    sqlite: Connection,
    _dirs: (TempDir, TempDir),
}

fn build_stores() -> Stores {
    let temp_dir = |side: &str| {
        tempfile::Builder::new()
            .prefix(&format!("caskade-bench-read-{side}-"))
            .tempdir()
            .expect("creating a temporary directory succeeds")
    };
    let (caskade_dir, sqlite_dir) = (temp_dir("caskade"), temp_dir("sqlite"));
    let engine = caskade_engine::Options {
        tuning: common::tuning(),
        ..caskade_engine::Options::default()
    };
    let caskade = EventStore::open(
        caskade_dir.path(),
        Options {
            engine,
            ..Options::default()
        },
    )
    .expect("opening a fresh event store succeeds");
    let mut sqlite = sqlite_peer::open(&sqlite_dir.path().join("events.db"));

    let started = Instant::now();
    let mut caskade_last = ExpectedVersion::NoStream;
    let mut sqlite_last = None;
    for _ in 0..EVENTS / LOAD_BATCH as u64 {
        let events = sqlite_peer::events(LOAD_BATCH);
        let result = caskade
            .append(STREAM, caskade_last, &events)
            .expect("loading Caskade succeeds");
        caskade_last = ExpectedVersion::Exact(result.next_expected_version);
        let version = sqlite_peer::append(&mut sqlite, STREAM, sqlite_last, &events)
            .expect("loading SQLite succeeds");
        sqlite_last = Some(version);
    }
    println!(
        "read: loaded {EVENTS} events into each store in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Stores {
        caskade,
        sqlite,
        _dirs: (caskade_dir, sqlite_dir),
    }
}

/// A version or position as SQLite stores it, back as the store's `u64`.
fn to_u64(value: i64) -> u64 {
    u64::try_from(value).expect("versions and positions stored by the bench are non-negative")
}

/// Materialises a row of `version, position, id, type, data, metadata, recorded` (columns
/// from `first`) as the [`RecordedEvent`] Caskade would return.
fn recorded_event(
    row: &Row<'_>,
    first: usize,
    stream: Arc<str>,
) -> rusqlite::Result<RecordedEvent> {
    Ok(RecordedEvent {
        id: Uuid::from_bytes(row.get::<_, [u8; 16]>(first + 2)?),
        stream,
        version: StreamVersion(to_u64(row.get(first)?)),
        position: Position(to_u64(row.get(first + 1)?)),
        event_type: row.get(first + 3)?,
        content_type: ContentType::Json,
        data: row.get(first + 4)?,
        metadata: row.get(first + 5)?,
        recorded_at: DateTime::from_timestamp_micros(row.get(first + 6)?).unwrap_or_default(),
    })
}

fn caskade_read_stream(store: &EventStore) -> u64 {
    let mut count = 0;
    for event in store
        .read_stream(STREAM, ReadStream::forwards())
        .expect("starting a read succeeds")
    {
        black_box(event.expect("reading an event succeeds"));
        count += 1;
    }
    count
}

fn caskade_read_all(store: &EventStore) -> u64 {
    let mut count = 0;
    for event in store.read_all(ReadAll::forwards()) {
        black_box(event.expect("reading an event succeeds"));
        count += 1;
    }
    count
}

fn sqlite_read_stream(conn: &Connection) -> u64 {
    let mut statement = conn
        .prepare_cached(
            "SELECT version, position, id, type, data, metadata, recorded
             FROM events WHERE stream = ?1 ORDER BY version",
        )
        .expect("preparing the stream query succeeds");
    let stream: Arc<str> = Arc::from(STREAM);
    let events = statement
        .query_map([STREAM], |row| recorded_event(row, 0, Arc::clone(&stream)))
        .expect("starting the stream query succeeds");
    let mut count = 0;
    for event in events {
        black_box(event.expect("reading a row succeeds"));
        count += 1;
    }
    count
}

fn sqlite_read_all(conn: &Connection) -> u64 {
    let mut statement = conn
        .prepare_cached(
            "SELECT stream, version, position, id, type, data, metadata, recorded
             FROM events ORDER BY position",
        )
        .expect("preparing the $all query succeeds");
    let mut rows = statement
        .query([])
        .expect("starting the $all query succeeds");
    // Consecutive events of one stream share its name, as Caskade's `$all` reads do.
    let mut stream: Option<Arc<str>> = None;
    let mut count = 0;
    while let Some(row) = rows.next().expect("reading a row succeeds") {
        let name = row
            .get_ref(0)
            .expect("the row has a stream column")
            .as_str()
            .expect("stream names are text");
        let shared = match &stream {
            Some(last) if **last == *name => Arc::clone(last),
            _ => Arc::clone(stream.insert(Arc::from(name))),
        };
        black_box(recorded_event(row, 1, shared).expect("a row materialises"));
        count += 1;
    }
    count
}

/// Times `count` runs of `read` (which returns how many events it read).
fn reads<'a>(name: &'static str, mut read: impl FnMut() -> u64 + 'a) -> Runner<'a> {
    Box::new(move |count| {
        let start = Instant::now();
        for _ in 0..count {
            assert_eq!(read(), EVENTS, "{name} reads every event");
        }
        start.elapsed()
    })
}

fn print_table(cases: &mut [Case<'_>]) {
    println!();
    println!(
        "reads of {EVENTS} events, events/s (Caskade vs SQLite), medians of 5 interleaved \
         rounds of about 1 s per side"
    );
    print_header(16);
    for case in cases.iter_mut().filter(|case| case.ran) {
        let figures = interleaved(EVENTS, &mut case.caskade, &mut case.sqlite);
        print_row(16, case.name, &figures, case.target);
    }
}

fn main() {
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let stores = build_stores();
    let mut cases = [
        Case {
            name: "stream_forwards",
            target: Some(3.0),
            caskade: reads("Caskade's stream read", || {
                caskade_read_stream(&stores.caskade)
            }),
            sqlite: reads("SQLite's stream read", || {
                sqlite_read_stream(&stores.sqlite)
            }),
            ran: false,
        },
        Case {
            name: "all_forwards",
            target: None,
            caskade: reads("Caskade's $all read", || caskade_read_all(&stores.caskade)),
            sqlite: reads("SQLite's $all read", || sqlite_read_all(&stores.sqlite)),
            ran: false,
        },
    ];
    {
        let mut group = c.benchmark_group("read");
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Elements(EVENTS));
        for case in &mut cases {
            let ran = &mut case.ran;
            for (side, runner) in [("caskade", &mut case.caskade), ("sqlite", &mut case.sqlite)] {
                group.bench_function(format!("{}/{side}", case.name), |b| {
                    *ran = true;
                    b.iter_custom(&mut *runner);
                });
            }
        }
        group.finish();
    }
    c.final_summary();
    if !test_mode() {
        print_table(&mut cases);
    }
    drop(cases);
    stores.caskade.close().expect("closing the store succeeds");
}
