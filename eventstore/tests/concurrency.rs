//! Concurrent appends: racing writers on one stream with exact expected versions, writers on
//! their own streams under `SyncPolicy::Always` (group commit), and readers running beside
//! them. Versions have no gaps or duplicates, every acknowledged append is in its stream and
//! in `$all` exactly once, and `$all` positions increase with no holes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    AppendResult, Error, EventData, EventStore, ExpectedVersion, Options, ReadAll, RecordedEvent,
    StreamVersion,
};
use serde_json::json;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type ThreadResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const THREADS: usize = 8;

fn options(sync: SyncPolicy) -> Options {
    let engine = caskade_engine::Options {
        sync,
        ..caskade_engine::Options::default()
    };
    Options {
        engine,
        ..Options::default()
    }
}

fn event(writer: usize, n: usize, part: usize) -> EventData {
    EventData::json("Raced", &json!({ "writer": writer, "n": n, "part": part }))
        .expect("a json! value serializes")
        .with_id(Uuid::from_u128(
            (writer as u128 + 1) << 64 | (n as u128) << 16 | part as u128,
        ))
}

fn read_all(store: &EventStore) -> Result<Vec<RecordedEvent>, Error> {
    store.read_all(ReadAll::forwards()).collect()
}

/// Checks what a reader may see at any moment: `$all` positions `0..n` with no holes, and
/// each stream's events in `$all` at consecutive versions from 0.
fn assert_consistent_prefix(all: &[RecordedEvent]) {
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    for (i, event) in all.iter().enumerate() {
        assert_eq!(
            event.position.0, i as u64,
            "hole or disorder in $all at {i}"
        );
        let next = next_version.entry(&event.stream).or_insert(0);
        assert_eq!(
            event.version.0, *next,
            "{} out of order in $all",
            event.stream
        );
        *next += 1;
    }
}

/// Appends `wins` single-event appends to `stream` with exact expected versions, re-reading
/// the version after each conflict. Returns each acknowledged append with its event id.
fn race(
    store: &EventStore,
    stream: &str,
    writer: usize,
    wins: usize,
) -> ThreadResult<Vec<(Uuid, AppendResult)>> {
    let mut acknowledged = Vec::with_capacity(wins);
    let mut attempts = 0;
    for n in 0..wins {
        let event = event(writer, n, 0);
        loop {
            attempts += 1;
            assert!(
                attempts < 1_000_000,
                "writer {writer} never won version {n}"
            );
            let expected = match store.stream_info(stream)?.and_then(|i| i.last_version) {
                Some(version) => ExpectedVersion::Exact(version),
                None => ExpectedVersion::NoStream,
            };
            match store.append(stream, expected, std::slice::from_ref(&event)) {
                Ok(result) => {
                    acknowledged.push((event.id, result));
                    break;
                }
                Err(Error::WrongExpectedVersion { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
    }
    Ok(acknowledged)
}

fn racing_exact_appends(sync: SyncPolicy, wins_per_writer: usize) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options(sync))?;
    let acknowledged: Vec<(Uuid, AppendResult)> = thread::scope(|scope| {
        let writers: Vec<_> = (0..THREADS)
            .map(|writer| {
                let store = &store;
                scope.spawn(move || race(store, "contended", writer, wins_per_writer))
            })
            .collect();
        let mut all = Vec::new();
        for writer in writers {
            all.extend(writer.join().expect("writer thread panicked")?);
        }
        ThreadResult::Ok(all)
    })
    .map_err(|e| e.to_string())?;
    let total = THREADS * wins_per_writer;
    assert_eq!(acknowledged.len(), total);

    // Exactly one append won each version.
    let mut won: Vec<u64> = acknowledged
        .iter()
        .map(|(_, r)| r.next_expected_version.0)
        .collect();
    won.sort_unstable();
    assert_eq!(won, (0..total as u64).collect::<Vec<_>>());

    // The stream holds versions 0..total, each acknowledged event exactly once, where its
    // acknowledgement said.
    let events = store.read_stream_to_vec("contended")?;
    let versions: Vec<u64> = events.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (0..total as u64).collect::<Vec<_>>());
    let by_id: HashMap<Uuid, &RecordedEvent> = events.iter().map(|e| (e.id, e)).collect();
    assert_eq!(
        by_id.len(),
        total,
        "an event id appears twice in the stream"
    );
    for (id, result) in &acknowledged {
        let event = by_id[id];
        assert_eq!(event.version, result.next_expected_version);
        assert_eq!(event.position, result.first_position);
    }

    let all = read_all(&store)?;
    assert_eq!(all.len(), total);
    assert_consistent_prefix(&all);
    assert_eq!(all, events);

    store.close()?;
    let store = EventStore::open(dir.path(), options(sync))?;
    assert_eq!(store.read_stream_to_vec("contended")?, events);
    Ok(())
}

#[test]
fn racing_exact_appends_to_one_stream_each_win_exactly_one_version() -> TestResult {
    racing_exact_appends(SyncPolicy::Never, 40)
}

#[test]
fn racing_exact_appends_each_win_exactly_one_version_under_sync_always() -> TestResult {
    racing_exact_appends(SyncPolicy::Always, 8)
}

#[test]
fn concurrent_appends_with_any_to_one_stream_all_land_in_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options(SyncPolicy::Never))?;
    let per_writer = 30;
    let acknowledged: Vec<(usize, AppendResult)> = thread::scope(|scope| {
        let writers: Vec<_> = (0..THREADS)
            .map(|writer| {
                let store = &store;
                scope.spawn(move || -> ThreadResult<Vec<(usize, AppendResult)>> {
                    let mut results = Vec::new();
                    for n in 0..per_writer {
                        let events = [event(writer, n, 0), event(writer, n, 1)];
                        results.push((
                            writer,
                            store.append("shared", ExpectedVersion::Any, &events)?,
                        ));
                    }
                    Ok(results)
                })
            })
            .collect();
        let mut all = Vec::new();
        for writer in writers {
            all.extend(writer.join().expect("writer thread panicked")?);
        }
        ThreadResult::Ok(all)
    })
    .map_err(|e| e.to_string())?;

    let events = store.read_stream_to_vec("shared")?;
    let total = THREADS * per_writer * 2;
    assert_eq!(events.len(), total);
    assert_consistent_prefix(&read_all(&store)?);
    // Each append's two events are adjacent, and each writer's appends in its own order.
    let mut last_n: HashMap<usize, i64> = HashMap::new();
    for (writer, result) in &acknowledged {
        let first = &events[result.first_position.0 as usize];
        let second = &events[result.last_position.0 as usize];
        assert_eq!(second.version.0, first.version.0 + 1);
        assert_eq!(result.next_expected_version, second.version);
        let data: serde_json::Value = first.json()?;
        assert_eq!(data["writer"], json!(writer));
        assert_eq!(second.json::<serde_json::Value>()?["part"], json!(1));
        let n = data["n"].as_i64().ok_or("n is a number")?;
        let previous = last_n.insert(*writer, n).unwrap_or(-1);
        assert!(n > previous, "writer {writer}'s appends out of order");
    }
    Ok(())
}

#[test]
fn appends_to_different_streams_under_sync_always_are_all_in_all_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options(SyncPolicy::Always))?;
    let appends_per_writer = 12;
    let events_per_append = 3;
    let writers_done = AtomicBool::new(false);
    let (acknowledged, reads) = thread::scope(|scope| {
        // A reader checks every snapshot of `$all` it sees while the writers run.
        let reader = scope.spawn(|| -> ThreadResult<usize> {
            let mut reads = 0;
            while !writers_done.load(Ordering::Acquire) && reads < 100_000 {
                let all = read_all(&store)?;
                assert_consistent_prefix(&all);
                assert!(all.len() as u64 <= store.committed_position().0);
                reads += 1;
            }
            Ok(reads)
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|writer| {
                let store = &store;
                scope.spawn(
                    move || -> ThreadResult<Vec<(String, usize, AppendResult)>> {
                        let stream = format!("stream-{writer}");
                        let mut results = Vec::new();
                        for n in 0..appends_per_writer {
                            let events: Vec<EventData> = (0..events_per_append)
                                .map(|part| event(writer, n, part))
                                .collect();
                            let expected = match n {
                                0 => ExpectedVersion::NoStream,
                                _ => ExpectedVersion::Exact(StreamVersion(
                                    (n * events_per_append - 1) as u64,
                                )),
                            };
                            results.push((
                                stream.clone(),
                                n,
                                store.append(&stream, expected, &events)?,
                            ));
                        }
                        Ok(results)
                    },
                )
            })
            .collect();
        let mut acknowledged = Vec::new();
        for writer in writers {
            acknowledged.extend(writer.join().expect("writer thread panicked")?);
        }
        writers_done.store(true, Ordering::Release);
        let reads = reader.join().expect("reader thread panicked")?;
        ThreadResult::Ok((acknowledged, reads))
    })
    .map_err(|e| e.to_string())?;
    assert!(reads > 0);

    let total = THREADS * appends_per_writer * events_per_append;
    let all = read_all(&store)?;
    assert_eq!(all.len(), total);
    assert_consistent_prefix(&all);
    let ids: HashSet<Uuid> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), total, "an event appears twice in $all");

    // Every acknowledged append is in $all, whole, at the positions it was given.
    let by_position: BTreeMap<u64, &RecordedEvent> =
        all.iter().map(|e| (e.position.0, e)).collect();
    for (stream, n, result) in &acknowledged {
        let count = result.last_position.0 - result.first_position.0 + 1;
        assert_eq!(count, events_per_append as u64);
        for (part, position) in (result.first_position.0..=result.last_position.0).enumerate() {
            let event = by_position[&position];
            assert_eq!(&*event.stream, stream.as_str());
            let writer: usize = stream["stream-".len()..].parse()?;
            assert_eq!(event.id, self::event(writer, *n, part).id);
        }
        assert_eq!(
            result.next_expected_version.0,
            ((n + 1) * events_per_append - 1) as u64
        );
    }

    // Each stream reads back in the order `$all` has its events.
    for writer in 0..THREADS {
        let stream = format!("stream-{writer}");
        let read = store.read_stream_to_vec(&stream)?;
        let in_all: Vec<&RecordedEvent> = all.iter().filter(|e| *e.stream == *stream).collect();
        assert_eq!(read.iter().collect::<Vec<_>>(), in_all);
    }

    // Everything acknowledged survives a reopen.
    store.close()?;
    let store = EventStore::open(dir.path(), options(SyncPolicy::Always))?;
    assert_eq!(read_all(&store)?, all);
    Ok(())
}

#[test]
fn cloned_handles_on_detached_threads_append_to_the_same_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options(SyncPolicy::Never))?;
    let handles: Vec<_> = (0..THREADS)
        .map(|writer| {
            // Each thread gets its own clone of the handle, not a reference.
            let store = store.clone();
            thread::spawn(move || -> ThreadResult<()> {
                for n in 0..10 {
                    store.append(
                        &format!("own-{writer}"),
                        ExpectedVersion::Any,
                        &[event(writer, n, 0)],
                    )?;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .expect("writer thread panicked")
            .map_err(|e| e.to_string())?;
    }
    let all = read_all(&store)?;
    assert_eq!(all.len(), THREADS * 10);
    assert_consistent_prefix(&all);
    assert_eq!(store.list_streams()?.len(), THREADS);
    Ok(())
}

#[test]
fn try_begin_append_declines_only_where_a_new_file_is_needed_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let engine = caskade_engine::Options {
        max_file_size: 4096,
        ..caskade_engine::Options::default()
    };
    let store = EventStore::open(
        dir.path(),
        Options {
            engine,
            ..Options::default()
        },
    )?;
    let mut declined = 0;
    let mut next = ExpectedVersion::NoStream;
    for n in 0..40 {
        let events = [event(0, n, 0)];
        let pending = if let Some(pending) = store.try_begin_append("rotating", next, &events)? {
            pending
        } else {
            declined += 1;
            let info = store.stream_info("rotating")?;
            let last = info.and_then(|info| info.last_version);
            let expected_last = n.checked_sub(1).map(|v| StreamVersion(v as u64));
            assert_eq!(last, expected_last, "a declined append wrote nothing");
            store.begin_append("rotating", next, &events)?
        };
        let result = pending.wait()?;
        next = ExpectedVersion::Exact(result.next_expected_version);
    }
    assert!(declined > 0, "4 KiB files rotate within 40 appends");
    assert!(declined < 40, "most appends fit the active file");
    let read: Vec<RecordedEvent> = store
        .read_all(ReadAll::forwards())
        .collect::<Result<_, _>>()?;
    assert_eq!(read.len(), 40);
    assert_consistent_prefix(&read);
    Ok(())
}

/// A retry submitted while its original is still waiting for its sync (neither has been
/// waited for, so no sync has run) is accepted, and both return the original's result.
#[test]
fn a_retry_submitted_while_its_original_is_unsynced_returns_the_original_result() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options(SyncPolicy::Always))?;
    for n in 0..5 {
        store.append("orders", ExpectedVersion::Any, &[event(0, n, 0)])?;
    }
    let events = [event(1, 0, 0), event(1, 0, 1)];
    let exact = ExpectedVersion::Exact(StreamVersion(4));
    let original = store.begin_append("orders", exact, &events)?;
    let other = store.begin_append("orders", ExpectedVersion::Any, &[event(2, 0, 0)])?;
    let retried = store.begin_append("orders", exact, &events)?;
    let retried_without_version = store.begin_append("orders", ExpectedVersion::Any, &events)?;
    let retried_without_blocking = store
        .try_begin_append("orders", exact, &events)?
        .ok_or("a retry writes nothing, so it never needs to block")?;

    let result = original.wait()?;
    assert_eq!(result.next_expected_version, StreamVersion(6));
    assert_eq!(retried.wait()?, result);
    assert_eq!(retried_without_version.wait()?, result);
    assert_eq!(retried_without_blocking.wait()?, result);
    assert_eq!(other.wait()?.next_expected_version, StreamVersion(7));

    let stream = store.read_stream_to_vec("orders")?;
    let ids: Vec<Uuid> = stream.iter().map(|e| e.id).collect();
    let expected_ids: Vec<Uuid> = (0..5)
        .map(|n| event(0, n, 0).id)
        .chain(events.iter().map(|e| e.id))
        .chain([event(2, 0, 0).id])
        .collect();
    assert_eq!(ids, expected_ids, "the events are written once");
    // A retry of what is now durable is still a no-op.
    assert_eq!(store.append("orders", exact, &events)?, result);
    // And a different append at the same place is still a conflict.
    assert!(matches!(
        store.append("orders", exact, &[event(3, 0, 0)]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    Ok(())
}

/// Eight threads send the same append (same ids, exact expected version) at once, round
/// after round, and in every other round two more writers append to the same stream at the
/// same moment: the senders all get the original's result (or, where another writer took the
/// version first, all the same conflict) and the events are in the stream once.
#[test]
fn identical_appends_racing_each_other_all_succeed_with_one_result() -> TestResult {
    const ROUNDS: usize = 40;
    const OTHER_WRITERS: usize = 2;
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options(SyncPolicy::Always))?;
    store.append("raced", ExpectedVersion::NoStream, &[event(99, 0, 0)])?;
    let mut appended_once = 0;
    for round in 0..ROUNDS {
        let last = store
            .stream_info("raced")?
            .and_then(|info| info.last_version)
            .ok_or("the stream has events")?;
        let expected = ExpectedVersion::Exact(last);
        let events = vec![event(round, 1, 0), event(round, 1, 1)];
        let mixed = round % 2 == 1;
        let others = if mixed { OTHER_WRITERS } else { 0 };
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS + others));
        let other_writers: Vec<_> = (0..others)
            .map(|writer| {
                let (store, barrier) = (store.clone(), std::sync::Arc::clone(&barrier));
                thread::spawn(move || -> ThreadResult<()> {
                    barrier.wait();
                    for n in 0..3 {
                        let other = event(100 + writer, round * 10 + n, 0);
                        store.append("raced", ExpectedVersion::Any, &[other])?;
                    }
                    Ok(())
                })
            })
            .collect();
        let senders: Vec<_> = (0..THREADS)
            .map(|_| {
                let (store, events, barrier) = (
                    store.clone(),
                    events.clone(),
                    std::sync::Arc::clone(&barrier),
                );
                thread::spawn(move || {
                    barrier.wait();
                    store.append("raced", expected, &events)
                })
            })
            .collect();
        let results: Vec<Result<AppendResult, Error>> = senders
            .into_iter()
            .map(|sender| sender.join().expect("sender thread panicked"))
            .collect();
        for writer in other_writers {
            writer
                .join()
                .expect("writer thread panicked")
                .map_err(|e| e.to_string())?;
        }
        let successes: Vec<AppendResult> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        if successes.is_empty() {
            assert!(mixed, "round {round}: nobody else wrote, yet {results:?}");
            for result in &results {
                assert!(
                    matches!(result, Err(Error::WrongExpectedVersion { .. })),
                    "round {round}: {result:?}"
                );
            }
            continue;
        }
        assert_eq!(successes.len(), THREADS, "round {round}: {results:?}");
        assert!(
            successes.iter().all(|r| *r == successes[0]),
            "round {round}"
        );
        assert_eq!(successes[0].next_expected_version.0, last.0 + 2);
        appended_once += 1;
    }
    assert!(appended_once >= ROUNDS / 2, "every unmixed round appends");
    let stream = store.read_stream_to_vec("raced")?;
    let mut seen = HashSet::new();
    for event in &stream {
        assert!(seen.insert(event.id), "{} written twice", event.id);
    }
    let versions: Vec<u64> = stream.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (0..stream.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        stream.len(),
        1 + appended_once * 2 + ROUNDS / 2 * OTHER_WRITERS * 3
    );
    Ok(())
}
