//! Reads that start at an edge: `Start` is the oldest event shown and `End` the newest, and a
//! read includes the event it starts at, in both directions, on a stream and on `$all`, with
//! retention hiding a stream's first events, a filter skipping `$all`'s, and nothing to read.

use caskade_eventstore::{
    EventData, EventFilter, EventStore, ExpectedVersion, Options, ReadAll, ReadFrom, ReadStream,
    RecordedEvent, StreamMetadata, StreamVersion,
};
use serde_json::json;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn events(event_type: &str, count: u64) -> Vec<EventData> {
    (0..count)
        .map(|n| EventData::json(event_type, &json!({ "n": n })).expect("a json! value serializes"))
        .collect()
}

fn stream_versions(store: &EventStore, stream: &str, read: ReadStream) -> TestResult<Vec<u64>> {
    Ok(store
        .read_stream(stream, read)?
        .map(|event| event.map(|event| event.version.0))
        .collect::<Result<_, _>>()?)
}

fn all_positions(store: &EventStore, read: ReadAll) -> TestResult<Vec<u64>> {
    Ok(store
        .read_all(read)
        .map(|event| event.map(|event| event.position.0))
        .collect::<Result<_, _>>()?)
}

fn stream_read(forwards: bool, from: ReadFrom<StreamVersion>) -> ReadStream {
    let read = if forwards {
        ReadStream::forwards()
    } else {
        ReadStream::backwards()
    };
    ReadStream { from, ..read }
}

fn all_read(forwards: bool, from: ReadFrom<caskade_eventstore::Position>) -> ReadAll {
    let read = if forwards {
        ReadAll::forwards()
    } else {
        ReadAll::backwards()
    };
    ReadAll { from, ..read }
}

#[test]
fn a_stream_read_from_either_edge_in_either_direction_includes_the_edge_event() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), Options::default())?;
    store.append("other", ExpectedVersion::NoStream, &events("Other", 2))?;
    store.append("orders", ExpectedVersion::NoStream, &events("Placed", 5))?;

    let read = |forwards, from| stream_versions(&store, "orders", stream_read(forwards, from));
    assert_eq!(read(true, ReadFrom::Start)?, [0, 1, 2, 3, 4]);
    assert_eq!(
        read(true, ReadFrom::End)?,
        [4],
        "forwards from the newest: just it"
    );
    assert_eq!(read(false, ReadFrom::End)?, [4, 3, 2, 1, 0]);
    assert_eq!(
        read(false, ReadFrom::Start)?,
        [0],
        "backwards from the oldest: just it"
    );

    // Retention hides versions 0 and 1: the oldest event shown is 2.
    let metadata = StreamMetadata {
        truncate_before: Some(StreamVersion(2)),
        ..StreamMetadata::default()
    };
    store.set_metadata("orders", ExpectedVersion::Any, metadata)?;
    assert_eq!(read(false, ReadFrom::Start)?, [2]);
    assert_eq!(read(true, ReadFrom::Start)?, [2, 3, 4]);
    assert_eq!(read(true, ReadFrom::End)?, [4]);

    // A stream with nothing to show reads empty from every edge.
    for forwards in [true, false] {
        for from in [ReadFrom::Start, ReadFrom::End] {
            let read = stream_read(forwards, from);
            assert_eq!(stream_versions(&store, "never-written", read)?, [0u64; 0]);
        }
    }
    store.delete_stream("other", ExpectedVersion::Any)?;
    for forwards in [true, false] {
        for from in [ReadFrom::Start, ReadFrom::End] {
            let read = stream_read(forwards, from);
            assert_eq!(stream_versions(&store, "other", read)?, [0u64; 0]);
        }
    }
    Ok(())
}

#[test]
fn an_all_read_from_either_edge_in_either_direction_includes_the_edge_event() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), Options::default())?;
    for (direction, from) in [(true, ReadFrom::Start), (true, ReadFrom::End)] {
        assert_eq!(all_positions(&store, all_read(direction, from))?, [0u64; 0]);
    }
    for (direction, from) in [(false, ReadFrom::Start), (false, ReadFrom::End)] {
        assert_eq!(all_positions(&store, all_read(direction, from))?, [0u64; 0]);
    }
    store.append("a", ExpectedVersion::NoStream, &events("Kept", 3))?;
    store.append("b", ExpectedVersion::NoStream, &events("Skipped", 2))?;

    let read = |forwards, from| all_positions(&store, all_read(forwards, from));
    assert_eq!(read(true, ReadFrom::Start)?, [0, 1, 2, 3, 4]);
    assert_eq!(read(true, ReadFrom::End)?, [4]);
    assert_eq!(read(false, ReadFrom::End)?, [4, 3, 2, 1, 0]);
    assert_eq!(read(false, ReadFrom::Start)?, [0]);

    // With a filter, the edges are the newest and oldest events it shows.
    let filtered = |forwards, from, filter: EventFilter| {
        all_positions(
            &store,
            ReadAll {
                filter,
                ..all_read(forwards, from)
            },
        )
    };
    let kept = || EventFilter::all().event_type_prefix("Kept");
    assert_eq!(filtered(true, ReadFrom::End, kept())?, [2]);
    assert_eq!(filtered(false, ReadFrom::Start, kept())?, [0]);
    let skipped = || EventFilter::all().event_type_prefix("Skipped");
    assert_eq!(filtered(false, ReadFrom::Start, skipped())?, [3]);
    assert_eq!(filtered(true, ReadFrom::End, skipped())?, [4]);

    // Once the first events are scavenged, the oldest event left is the start.
    store.delete_stream("a", ExpectedVersion::Any)?;
    store.scavenge()?;
    assert_eq!(read(false, ReadFrom::Start)?, [3]);
    assert_eq!(read(true, ReadFrom::Start)?, [3, 4]);
    let none: Vec<RecordedEvent> = store
        .read_all(ReadAll {
            filter: kept(),
            ..all_read(true, ReadFrom::End)
        })
        .collect::<Result<_, _>>()?;
    assert!(none.is_empty(), "nothing the filter shows is left");
    Ok(())
}
