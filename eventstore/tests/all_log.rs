//! The `$all` log over appends much larger than its entry spacing: a read may start at any
//! position, in either direction, and finds exactly the event there, including after a
//! scavenge has deleted the first part of an append.

use caskade_eventstore::{
    EventData, EventStore, ExpectedVersion, Options, Position, ReadAll, RecordedEvent,
    StreamMetadata, StreamVersion,
};
use serde_json::json;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;
/// An event as these tests compare them: stream, version, position.
type Logged = (String, u64, u64);

fn events(stream: &str, count: u64) -> Vec<EventData> {
    (0..count)
        .map(|n| {
            EventData::json("Tested", &json!({ "stream": stream, "n": n }))
                .expect("a json! value serializes")
        })
        .collect()
}

/// Every event a read returns.
fn read(store: &EventStore, read: ReadAll) -> TestResult<Vec<Logged>> {
    Ok(store
        .read_all(read)
        .collect::<Result<Vec<RecordedEvent>, _>>()?
        .into_iter()
        .map(|event| (event.stream.to_string(), event.version.0, event.position.0))
        .collect())
}

/// Appends 150 events to `a`, 1 to `b` and 200 to `c`, each in one append: positions 0–149,
/// 150 and 151–350.
fn three_appends(store: &EventStore) -> TestResult<Vec<Logged>> {
    let mut log = Vec::new();
    for (stream, count) in [("a", 150), ("b", 1), ("c", 200)] {
        let result = store.append(stream, ExpectedVersion::NoStream, &events(stream, count))?;
        for version in 0..count {
            log.push((
                stream.to_owned(),
                version,
                result.first_position.0 + version,
            ));
        }
    }
    Ok(log)
}

#[test]
fn a_read_from_any_position_of_a_large_append_starts_exactly_there() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), Options::default())?;
    let log = three_appends(&store)?;
    assert_eq!(read(&store, ReadAll::forwards())?, log);
    for start in 0..log.len() {
        let at = Position(start as u64);
        let forwards = read(&store, ReadAll::forwards().from(at).max_count(3))?;
        let end = (start + 3).min(log.len());
        assert_eq!(forwards, log[start..end], "forwards from {start}");
        let backwards = read(&store, ReadAll::backwards().from(at).max_count(3))?;
        let expected: Vec<_> = log[start.saturating_sub(2)..=start]
            .iter()
            .rev()
            .cloned()
            .collect();
        assert_eq!(backwards, expected, "backwards from {start}");
    }
    let reversed: Vec<_> = log.iter().rev().cloned().collect();
    assert_eq!(read(&store, ReadAll::backwards())?, reversed);
    Ok(())
}

#[test]
fn reads_find_the_rest_of_an_append_whose_first_part_was_scavenged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), Options::default())?;
    let log = three_appends(&store)?;
    // Delete a's first 100 events, and with them the `$all` entries that located the rest.
    let truncate = StreamMetadata {
        truncate_before: Some(StreamVersion(100)),
        ..StreamMetadata::default()
    };
    store.set_metadata("a", ExpectedVersion::Any, truncate)?;
    assert_eq!(store.scavenge()?.events_removed, 100);
    assert_reads_skip_the_first_100(&store, &log, "after the scavenge")?;
    store.close()?;
    let store = EventStore::open(dir.path(), Options::default())?;
    assert_reads_skip_the_first_100(&store, &log, "after a reopen")?;
    Ok(())
}

fn assert_reads_skip_the_first_100(store: &EventStore, log: &[Logged], round: &str) -> TestResult {
    assert_eq!(read(store, ReadAll::forwards())?, log[100..], "{round}");
    for start in 0..log.len() {
        let at = Position(start as u64);
        let forwards = read(store, ReadAll::forwards().from(at).max_count(2))?;
        let from = start.max(100);
        assert_eq!(
            forwards,
            log[from..(from + 2).min(log.len())],
            "{round}: forwards from {start}"
        );
        let backwards = read(store, ReadAll::backwards().from(at).max_count(2))?;
        let expected: Vec<_> = log[100..=start.max(99)]
            .iter()
            .rev()
            .take(2)
            .cloned()
            .collect();
        assert_eq!(backwards, expected, "{round}: backwards from {start}");
    }
    Ok(())
}
