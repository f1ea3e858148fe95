//! Soft deletes, tombstones, retention metadata (`max_count`, `truncate_before`, `max_age`)
//! and scavenging: what reads show, what appends do, and what survives a scavenge and a
//! reopen.

use std::time::Duration;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    CurrentVersion, Error, EventData, EventStore, ExpectedVersion, Position, ReadAll, ReadStream,
    RecordedEvent, StreamInfo, StreamMetadata, StreamState, StreamVersion,
};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn options() -> caskade_eventstore::Options {
    let engine = caskade_engine::Options {
        sync: SyncPolicy::Never,
        ..caskade_engine::Options::default()
    };
    caskade_eventstore::Options {
        engine,
        ..caskade_eventstore::Options::default()
    }
}

/// Small data files, so most records sit in sealed files that a merge rewrites.
fn small_file_options() -> caskade_eventstore::Options {
    let mut options = options();
    options.engine.max_file_size = 16 << 10;
    options
}

fn event(stream: &str, n: u64) -> EventData {
    EventData::json(
        "Tested",
        &json!({ "stream": stream, "n": n, "pad": "x".repeat(100) }),
    )
    .expect("a json! value serializes")
}

/// Appends `count` events to `stream`, one append each.
fn append_n(store: &EventStore, stream: &str, count: u64) -> Result<(), Error> {
    for n in 0..count {
        store.append(stream, ExpectedVersion::Any, &[event(stream, n)])?;
    }
    Ok(())
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.0).collect()
}

fn stream_versions(store: &EventStore, stream: &str) -> Result<Vec<u64>, Error> {
    Ok(versions(&store.read_stream_to_vec(stream)?))
}

fn read_all(store: &EventStore) -> Result<Vec<RecordedEvent>, Error> {
    store.read_all(ReadAll::forwards()).collect()
}

/// The versions of `stream` that `$all` shows, in position order.
fn versions_in_all(store: &EventStore, stream: &str) -> Result<Vec<u64>, Error> {
    Ok(read_all(store)?
        .iter()
        .filter(|e| &*e.stream == stream)
        .map(|e| e.version.0)
        .collect())
}

fn info(store: &EventStore, stream: &str) -> Result<StreamInfo, Box<dyn std::error::Error>> {
    Ok(store
        .stream_info(stream)?
        .ok_or_else(|| format!("stream {stream} has no info"))?)
}

fn set_metadata(store: &EventStore, stream: &str, metadata: StreamMetadata) -> Result<(), Error> {
    store.set_metadata(stream, ExpectedVersion::Any, metadata)
}

#[test]
fn a_soft_deleted_stream_reads_empty_and_the_next_append_continues_its_versions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 3)?;
    append_n(&store, "acct-2", 2)?;

    store.delete_stream("acct-1", ExpectedVersion::Exact(StreamVersion(2)))?;
    assert_eq!(stream_versions(&store, "acct-1")?, Vec::<u64>::new());
    let backwards = store.read_stream("acct-1", ReadStream::backwards())?;
    assert_eq!(backwards.count(), 0);
    assert_eq!(versions_in_all(&store, "acct-1")?, Vec::<u64>::new());
    assert_eq!(versions_in_all(&store, "acct-2")?, [0, 1]);
    let deleted = info(&store, "acct-1")?;
    assert_eq!(deleted.state, StreamState::Deleted);
    assert_eq!(deleted.last_version, Some(StreamVersion(2)));

    // A soft-deleted stream does not "exist" for StreamExists, but NoStream accepts it.
    let error = store
        .append(
            "acct-1",
            ExpectedVersion::StreamExists,
            &[event("acct-1", 9)],
        )
        .unwrap_err();
    assert!(
        matches!(error, Error::WrongExpectedVersion { .. }),
        "{error:?}"
    );

    let revived = store.append(
        "acct-1",
        ExpectedVersion::NoStream,
        &[event("acct-1", 3), event("acct-1", 4)],
    )?;
    assert_eq!(revived.next_expected_version, StreamVersion(4));
    assert_eq!(revived.first_position, Position(5));
    assert_eq!(stream_versions(&store, "acct-1")?, [3, 4]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [3, 4]);
    assert_eq!(info(&store, "acct-1")?.state, StreamState::Live);

    store.close()?;
    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(stream_versions(&store, "acct-1")?, [3, 4]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [3, 4]);
    let next = store.append(
        "acct-1",
        ExpectedVersion::Exact(StreamVersion(4)),
        &[event("acct-1", 5)],
    )?;
    assert_eq!(next.first_position, Position(7));
    assert_eq!(stream_versions(&store, "acct-1")?, [3, 4, 5]);
    Ok(())
}

#[test]
fn soft_deleting_a_stream_twice_keeps_it_empty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 2)?;
    store.delete_stream("acct-1", ExpectedVersion::Any)?;
    store.delete_stream("acct-1", ExpectedVersion::Any)?;
    assert_eq!(stream_versions(&store, "acct-1")?, Vec::<u64>::new());
    let result = store.append("acct-1", ExpectedVersion::Any, &[event("acct-1", 2)])?;
    assert_eq!(result.next_expected_version, StreamVersion(2));
    assert_eq!(stream_versions(&store, "acct-1")?, [2]);
    Ok(())
}

#[test]
fn setting_metadata_after_a_soft_delete_keeps_the_deleted_events_hidden() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 3)?;
    store.delete_stream("acct-1", ExpectedVersion::Any)?;
    set_metadata(
        &store,
        "acct-1",
        StreamMetadata {
            max_count: Some(10),
            ..StreamMetadata::default()
        },
    )?;
    assert_eq!(info(&store, "acct-1")?.state, StreamState::Deleted);
    assert_eq!(stream_versions(&store, "acct-1")?, Vec::<u64>::new());
    assert_eq!(versions_in_all(&store, "acct-1")?, Vec::<u64>::new());
    Ok(())
}

#[test]
fn setting_metadata_after_a_soft_delete_and_revival_keeps_the_deleted_events_hidden() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 3)?;
    store.delete_stream("acct-1", ExpectedVersion::Any)?;
    append_n(&store, "acct-1", 1)?;
    assert_eq!(stream_versions(&store, "acct-1")?, [3]);
    set_metadata(
        &store,
        "acct-1",
        StreamMetadata {
            custom: Some(json!({"owner": "ops"})),
            ..StreamMetadata::default()
        },
    )?;
    assert_eq!(stream_versions(&store, "acct-1")?, [3]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [3]);
    Ok(())
}

/// Asserts that `acct-1` is tombstoned (at version 2) and `acct-2` untouched.
fn assert_tombstoned(store: &EventStore, round: &str) -> TestResult {
    let deleted =
        |error: &Error| matches!(error, Error::StreamDeleted { stream } if stream == "acct-1");
    for read in [ReadStream::forwards(), ReadStream::backwards()] {
        let Err(error) = store.read_stream("acct-1", read) else {
            panic!("{round}: reading a tombstoned stream succeeded ({read:?})");
        };
        assert!(deleted(&error), "{round}: {error:?}");
    }
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(StreamVersion(2)),
    ] {
        let error = store
            .append("acct-1", expected, &[event("acct-1", 3)])
            .unwrap_err();
        assert!(deleted(&error), "{round}: append {expected:?}: {error:?}");
        let error = store.delete_stream("acct-1", expected).unwrap_err();
        assert!(deleted(&error), "{round}: delete {expected:?}: {error:?}");
        let error = store.tombstone_stream("acct-1", expected).unwrap_err();
        assert!(
            deleted(&error),
            "{round}: tombstone {expected:?}: {error:?}"
        );
        let error = store
            .set_metadata("acct-1", expected, StreamMetadata::default())
            .unwrap_err();
        assert!(
            deleted(&error),
            "{round}: set_metadata {expected:?}: {error:?}"
        );
    }
    assert_eq!(
        versions_in_all(store, "acct-1")?,
        Vec::<u64>::new(),
        "{round}"
    );
    assert_eq!(versions_in_all(store, "acct-2")?, [0, 1], "{round}");
    let tombstoned = info(store, "acct-1")?;
    assert_eq!(tombstoned.state, StreamState::Tombstoned, "{round}");
    assert_eq!(tombstoned.last_version, Some(StreamVersion(2)), "{round}");
    Ok(())
}

#[test]
fn a_tombstoned_stream_fails_reads_and_writes_with_stream_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 3)?;
    append_n(&store, "acct-2", 2)?;
    store.tombstone_stream("acct-1", ExpectedVersion::Exact(StreamVersion(2)))?;
    assert_tombstoned(&store, "at once")?;
    store.close()?;

    let store = EventStore::open(dir.path(), options())?;
    assert_tombstoned(&store, "after reopen")?;
    let live_keys = store.stats()?.engine.live_keys;
    assert_eq!(store.scavenge()?.events_removed, 3);
    // Its three events and their `$all` entries are gone; its head stays.
    assert_eq!(store.stats()?.engine.live_keys, live_keys - 6);
    assert_tombstoned(&store, "after scavenge")?;
    store.close()?;

    let store = EventStore::open(dir.path(), options())?;
    assert_tombstoned(&store, "after scavenge and reopen")?;
    Ok(())
}

#[test]
fn max_count_shows_only_the_newest_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 10)?;
    append_n(&store, "other", 2)?;
    set_metadata(
        &store,
        "acct-1",
        StreamMetadata {
            max_count: Some(3),
            ..StreamMetadata::default()
        },
    )?;
    assert_eq!(stream_versions(&store, "acct-1")?, [7, 8, 9]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [7, 8, 9]);
    let backwards = store.read_stream("acct-1", ReadStream::backwards())?;
    assert_eq!(
        versions(&backwards.collect::<Result<Vec<_>, _>>()?),
        [9, 8, 7]
    );
    // Reads starting among the hidden events start at the first visible one.
    let from_two = store.read_stream("acct-1", ReadStream::forwards().from(StreamVersion(2)))?;
    assert_eq!(
        versions(&from_two.collect::<Result<Vec<_>, _>>()?),
        [7, 8, 9]
    );
    let back_from_eight = store.read_stream(
        "acct-1",
        ReadStream::backwards().from(StreamVersion(8)).max_count(5),
    )?;
    assert_eq!(
        versions(&back_from_eight.collect::<Result<Vec<_>, _>>()?),
        [8, 7]
    );

    // The window moves with new appends.
    append_n(&store, "acct-1", 2)?;
    assert_eq!(stream_versions(&store, "acct-1")?, [9, 10, 11]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [9, 10, 11]);
    assert_eq!(versions_in_all(&store, "other")?, [0, 1]);

    // Raising max_count shows the older events again (they were not scavenged).
    set_metadata(
        &store,
        "acct-1",
        StreamMetadata {
            max_count: Some(5),
            ..StreamMetadata::default()
        },
    )?;
    assert_eq!(stream_versions(&store, "acct-1")?, [7, 8, 9, 10, 11]);

    store.close()?;
    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(stream_versions(&store, "acct-1")?, [7, 8, 9, 10, 11]);
    assert_eq!(info(&store, "acct-1")?.metadata.max_count, Some(5));
    Ok(())
}

#[test]
fn truncate_before_hides_the_versions_below_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 10)?;
    let truncate = |version| StreamMetadata {
        truncate_before: Some(StreamVersion(version)),
        ..StreamMetadata::default()
    };
    set_metadata(&store, "acct-1", truncate(4))?;
    assert_eq!(stream_versions(&store, "acct-1")?, [4, 5, 6, 7, 8, 9]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [4, 5, 6, 7, 8, 9]);
    let page = store.read_stream("acct-1", ReadStream::forwards().max_count(2))?;
    assert_eq!(versions(&page.collect::<Result<Vec<_>, _>>()?), [4, 5]);
    let back = store.read_stream("acct-1", ReadStream::backwards().from(StreamVersion(2)))?;
    assert_eq!(back.count(), 0);

    set_metadata(&store, "acct-1", truncate(9))?;
    assert_eq!(stream_versions(&store, "acct-1")?, [9]);

    // Truncating past the end hides everything, and appends carry on at the next version.
    set_metadata(&store, "acct-1", truncate(20))?;
    assert_eq!(stream_versions(&store, "acct-1")?, Vec::<u64>::new());
    let result = store.append(
        "acct-1",
        ExpectedVersion::Exact(StreamVersion(9)),
        &[event("acct-1", 10)],
    )?;
    assert_eq!(result.next_expected_version, StreamVersion(10));
    assert_eq!(stream_versions(&store, "acct-1")?, Vec::<u64>::new());
    assert_eq!(
        info(&store, "acct-1")?.last_version,
        Some(StreamVersion(10))
    );
    Ok(())
}

#[test]
fn max_count_and_truncate_before_together_hide_the_union() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 10)?;
    let both = |count, version| StreamMetadata {
        max_count: Some(count),
        truncate_before: Some(StreamVersion(version)),
        ..StreamMetadata::default()
    };
    set_metadata(&store, "acct-1", both(5, 3))?;
    assert_eq!(stream_versions(&store, "acct-1")?, [5, 6, 7, 8, 9]);
    set_metadata(&store, "acct-1", both(5, 8))?;
    assert_eq!(stream_versions(&store, "acct-1")?, [8, 9]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [8, 9]);
    Ok(())
}

#[test]
fn events_newer_than_max_age_stay_visible() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "acct-1", 4)?;
    let metadata = StreamMetadata {
        max_age: Some(Duration::from_secs(3600)),
        ..StreamMetadata::default()
    };
    set_metadata(&store, "acct-1", metadata.clone())?;
    append_n(&store, "acct-1", 1)?;
    assert_eq!(stream_versions(&store, "acct-1")?, [0, 1, 2, 3, 4]);
    assert_eq!(versions_in_all(&store, "acct-1")?, [0, 1, 2, 3, 4]);
    let report = store.scavenge()?;
    assert_eq!(report.events_removed, 0);
    store.close()?;
    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(info(&store, "acct-1")?.metadata, metadata);
    assert_eq!(stream_versions(&store, "acct-1")?, [0, 1, 2, 3, 4]);
    Ok(())
}

#[test]
fn metadata_can_be_set_on_a_stream_with_no_events_and_survives_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let metadata = StreamMetadata {
        max_count: Some(2),
        max_age: Some(Duration::from_secs(86_400)),
        truncate_before: Some(StreamVersion(1)),
        custom: Some(json!({"owner": "ops", "tags": ["a", "b"]})),
    };
    store.set_metadata("future", ExpectedVersion::NoStream, metadata.clone())?;
    let before = info(&store, "future")?;
    assert_eq!(before.last_version, None);
    assert_eq!(before.state, StreamState::Live);
    assert_eq!(before.metadata, metadata);
    assert_eq!(store.list_streams()?, vec![before.clone()]);
    // The stream still has no events: StreamExists fails, NoStream succeeds.
    let error = store
        .append(
            "future",
            ExpectedVersion::StreamExists,
            &[event("future", 0)],
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::WrongExpectedVersion {
                actual: CurrentVersion::NoStream,
                ..
            }
        ),
        "{error:?}"
    );
    store.close()?;

    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(info(&store, "future")?, before);
    store.append("future", ExpectedVersion::NoStream, &[event("future", 0)])?;
    append_n(&store, "future", 3)?;
    // truncate_before 1 and max_count 2 over versions 0..=3.
    assert_eq!(stream_versions(&store, "future")?, [2, 3]);
    assert_eq!(info(&store, "future")?.metadata, metadata);
    Ok(())
}

/// Everything a reader can see, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Visible {
    all: Vec<RecordedEvent>,
    all_backwards: Vec<RecordedEvent>,
    streams: Vec<StreamInfo>,
    per_stream: Vec<Vec<RecordedEvent>>,
}

fn visible(store: &EventStore) -> Result<Visible, Error> {
    let streams = store.list_streams()?;
    let mut per_stream = Vec::new();
    for stream in &streams {
        if stream.state != StreamState::Tombstoned {
            per_stream.push(store.read_stream_to_vec(&stream.name)?);
        }
    }
    Ok(Visible {
        all: read_all(store)?,
        all_backwards: store
            .read_all(ReadAll::backwards())
            .collect::<Result<_, _>>()?,
        streams,
        per_stream,
    })
}

/// Five streams of 20 events each, four of them with events hidden in different ways.
fn scavenge_fixture(store: &EventStore) -> Result<u64, Error> {
    for round in 0..20 {
        for stream in ["keep", "trunc", "count", "gone", "dead"] {
            store.append(stream, ExpectedVersion::Any, &[event(stream, round)])?;
        }
    }
    set_metadata(
        store,
        "trunc",
        StreamMetadata {
            truncate_before: Some(StreamVersion(15)),
            ..StreamMetadata::default()
        },
    )?;
    set_metadata(
        store,
        "count",
        StreamMetadata {
            max_count: Some(5),
            ..StreamMetadata::default()
        },
    )?;
    store.delete_stream("gone", ExpectedVersion::Any)?;
    store.tombstone_stream("dead", ExpectedVersion::Any)?;
    // Hidden: 15 of trunc, 15 of count, all 20 of gone and of dead.
    Ok(15 + 15 + 20 + 20)
}

#[test]
fn scavenge_removes_hidden_events_and_keeps_what_readers_see() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), small_file_options())?;
    let hidden = scavenge_fixture(&store)?;
    let seen = visible(&store)?;
    let before = store.stats()?.engine;

    let report = store.scavenge()?;
    assert_eq!(report.streams, 5);
    assert_eq!(report.events_removed, hidden);
    let after = store.stats()?.engine;
    // Each hidden event had an event key and an `$all` entry.
    assert_eq!(after.live_keys, before.live_keys - 2 * hidden as usize);
    assert!(
        after.live_bytes() < before.live_bytes(),
        "live bytes {} -> {}",
        before.live_bytes(),
        after.live_bytes()
    );
    assert!(
        after.total_bytes() < before.total_bytes(),
        "total bytes {} -> {}",
        before.total_bytes(),
        after.total_bytes()
    );
    assert_eq!(visible(&store)?, seen);

    // A second scavenge finds nothing more.
    assert_eq!(store.scavenge()?.events_removed, 0);
    assert_eq!(visible(&store)?, seen);

    store.close()?;
    let store = EventStore::open(dir.path(), small_file_options())?;
    assert_eq!(visible(&store)?, seen);
    assert_eq!(store.stats()?.engine.live_keys, after.live_keys);

    // Heads are intact: appends continue at the next version and the next position.
    // 100 events were appended; the last ones (of `dead`) are gone but not their positions.
    let next_position = 100;
    let keep = store.append(
        "keep",
        ExpectedVersion::Exact(StreamVersion(19)),
        &[event("keep", 20)],
    )?;
    assert_eq!(keep.first_position, Position(next_position));
    let gone = store.append("gone", ExpectedVersion::NoStream, &[event("gone", 20)])?;
    assert_eq!(gone.next_expected_version, StreamVersion(20));
    assert_eq!(stream_versions(&store, "gone")?, [20]);
    let count = store.append(
        "count",
        ExpectedVersion::Exact(StreamVersion(19)),
        &[event("count", 20)],
    )?;
    assert_eq!(count.next_expected_version, StreamVersion(20));
    assert_eq!(stream_versions(&store, "count")?, [16, 17, 18, 19, 20]);
    let error = store
        .append("dead", ExpectedVersion::Any, &[event("dead", 20)])
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error:?}");
    Ok(())
}

#[test]
fn positions_are_not_reused_after_the_newest_events_are_scavenged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "a", 2)?;
    append_n(&store, "b", 3)?;
    store.tombstone_stream("b", ExpectedVersion::Any)?;
    assert_eq!(store.scavenge()?.events_removed, 3);
    store.close()?;

    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(store.committed_position(), Position(5));
    let result = store.append("a", ExpectedVersion::Any, &[event("a", 2)])?;
    assert_eq!(result.first_position, Position(5));
    let positions: Vec<u64> = read_all(&store)?.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, [0, 1, 5]);
    Ok(())
}

#[test]
fn replacing_metadata_checks_the_metadata_version_not_the_stream_version() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "orders", 3)?;
    assert_eq!(info(&store, "orders")?.metadata_revision, None);
    let first = StreamMetadata {
        max_count: Some(2),
        ..StreamMetadata::default()
    };
    // Never set: NoStream matches even though the stream has events.
    let version = store.replace_metadata("orders", ExpectedVersion::NoStream, first.clone())?;
    assert_eq!(version, StreamVersion(0));
    let error = store
        .replace_metadata("orders", ExpectedVersion::NoStream, first.clone())
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::WrongExpectedVersion {
                actual: CurrentVersion::Current(StreamVersion(0)),
                expected: ExpectedVersion::NoStream,
                ..
            }
        ),
        "{error:?}"
    );
    // The stream's version (2) is not the metadata's.
    let error = store
        .replace_metadata("orders", ExpectedVersion::Exact(StreamVersion(2)), first)
        .unwrap_err();
    assert!(
        matches!(error, Error::WrongExpectedVersion { .. }),
        "{error:?}"
    );
    assert_eq!(stream_versions(&store, "orders")?, vec![1, 2]);
    // set_metadata raises the same version; a failed replacement changed nothing.
    let before = chrono::Utc::now();
    set_metadata(&store, "orders", StreamMetadata::default())?;
    let revision = info(&store, "orders")?
        .metadata_revision
        .ok_or("no revision")?;
    assert_eq!(revision.version, StreamVersion(1));
    assert!(revision.recorded_at >= before - chrono::Duration::seconds(1));
    let second = StreamMetadata {
        truncate_before: Some(StreamVersion(1)),
        ..StreamMetadata::default()
    };
    let version = store.replace_metadata(
        "orders",
        ExpectedVersion::Exact(StreamVersion(1)),
        second.clone(),
    )?;
    assert_eq!(version, StreamVersion(2));
    drop(store);
    let store = EventStore::open(dir.path(), options())?;
    let reopened = info(&store, "orders")?;
    assert_eq!(reopened.metadata, second);
    assert_eq!(
        reopened.metadata_revision.map(|r| r.version),
        Some(StreamVersion(2))
    );
    assert_eq!(stream_versions(&store, "orders")?, vec![1, 2]);
    // A tombstoned stream's metadata cannot be replaced.
    store.tombstone_stream("orders", ExpectedVersion::Any)?;
    let error = store
        .replace_metadata("orders", ExpectedVersion::Any, StreamMetadata::default())
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error:?}");
    Ok(())
}

#[test]
fn a_stream_read_says_what_the_head_said_when_it_started() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let never = store.read_stream("never", ReadStream::forwards())?;
    assert_eq!((never.stream_state(), never.last_version()), (None, None));

    append_n(&store, "s", 3)?;
    let one = store.read_stream("s", ReadStream::forwards().max_count(1))?;
    assert_eq!(
        (one.stream_state(), one.last_version()),
        (Some(StreamState::Live), Some(StreamVersion(2))),
        "the head's last version, not the read's"
    );
    let events: Vec<RecordedEvent> = one.collect::<Result<_, _>>()?;
    assert_eq!(versions(&events), [0]);

    store.delete_stream("s", ExpectedVersion::Exact(StreamVersion(2)))?;
    let deleted = store.read_stream("s", ReadStream::forwards())?;
    assert_eq!(
        (deleted.stream_state(), deleted.last_version()),
        (Some(StreamState::Deleted), Some(StreamVersion(2)))
    );
    assert_eq!(deleted.count(), 0);
    Ok(())
}
