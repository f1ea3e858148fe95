//! Bad input: every invalid call returns its typed error and changes nothing (streams, `$all`
//! and the engine's live keys and bytes are the same before and after); idempotent retries;
//! the isolation of the key-value space from the event store's keys.

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    AppendResult, ContentType, CurrentVersion, Error, EventData, EventFilter, EventStore,
    ExpectedVersion, MAX_EVENT_TYPE_LEN, Options, ReadAll, RecordedEvent, StreamInfo,
    StreamMetadata, StreamVersion,
};
use serde_json::json;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Bytes of an encoded event before its type, metadata and data (`eventstore/FORMAT.md`).
const EVENT_FIXED_LEN: usize = 44;

fn options() -> Options {
    let engine = caskade_engine::Options {
        sync: SyncPolicy::Never,
        ..caskade_engine::Options::default()
    };
    Options {
        engine,
        ..Options::default()
    }
}

fn event(n: u64) -> EventData {
    EventData::json("Tested", &json!({ "n": n })).expect("a json! value serializes")
}

/// Everything a failed call must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    streams: Vec<StreamInfo>,
    all: Vec<RecordedEvent>,
    live_keys: usize,
    live_bytes: u64,
    dead_bytes: u64,
}

fn snapshot(store: &EventStore) -> Result<Snapshot, Error> {
    let stats = store.stats()?.engine;
    Ok(Snapshot {
        streams: store.list_streams()?,
        all: store
            .read_all(ReadAll::forwards())
            .collect::<Result<_, _>>()?,
        live_keys: stats.live_keys,
        live_bytes: stats.live_bytes(),
        dead_bytes: stats.dead_bytes(),
    })
}

/// A store holding a couple of streams, so "changed nothing" has something to compare.
fn populated(dir: &std::path::Path, options: Options) -> Result<EventStore, Error> {
    let store = EventStore::open(dir, options)?;
    store.append("acct-1", ExpectedVersion::NoStream, &[event(0), event(1)])?;
    store.append("acct-2", ExpectedVersion::NoStream, &[event(2)])?;
    store.set_metadata(
        "acct-2",
        ExpectedVersion::Any,
        StreamMetadata {
            custom: Some(json!({"owner": "ops"})),
            ..StreamMetadata::default()
        },
    )?;
    Ok(store)
}

/// Runs `call`, which must fail with an error accepted by `check`, and asserts that the
/// store is unchanged.
fn assert_rejected<T>(
    store: &EventStore,
    what: &str,
    call: impl FnOnce() -> Result<T, Error>,
    check: impl FnOnce(&Error) -> bool,
) -> TestResult {
    let before = snapshot(store)?;
    match call() {
        Ok(_) => panic!("{what}: the call succeeded but should have failed"),
        Err(error) => assert!(check(&error), "{what}: unexpected error {error:?}"),
    }
    assert_eq!(
        snapshot(store)?,
        before,
        "{what}: a failed call changed the store"
    );
    Ok(())
}

#[test]
fn invalid_stream_names_are_rejected_on_every_call() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let max = store.options().max_stream_name_len;
    let too_long = "s".repeat(max + 1);
    let with_control = "acct\n1".to_owned();
    for name in [String::new(), too_long, with_control] {
        let long = name.len() > max;
        let invalid = |e: &Error| {
            if long {
                matches!(e, Error::StreamNameTooLong { len, max: m, .. } if *len == max + 1 && *m == max)
                    && e.to_string()
                        .contains(&format!("over the maximum of {max} bytes"))
            } else {
                matches!(e, Error::InvalidStreamName { .. })
            }
        };
        let what = format!("name {:?}", name.chars().take(20).collect::<String>());
        assert_rejected(
            &store,
            &what,
            || store.append(&name, ExpectedVersion::Any, &[event(9)]),
            invalid,
        )?;
        assert_rejected(
            &store,
            &what,
            || store.delete_stream(&name, ExpectedVersion::Any),
            invalid,
        )?;
        assert_rejected(
            &store,
            &what,
            || store.tombstone_stream(&name, ExpectedVersion::Any),
            invalid,
        )?;
        assert_rejected(
            &store,
            &what,
            || store.set_metadata(&name, ExpectedVersion::Any, StreamMetadata::default()),
            invalid,
        )?;
        assert_rejected(&store, &what, || store.stream_info(&name), invalid)?;
        assert_rejected(&store, &what, || store.read_stream_to_vec(&name), invalid)?;
    }
    Ok(())
}

#[test]
fn a_stream_name_of_exactly_the_maximum_length_is_accepted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let name = "s".repeat(store.options().max_stream_name_len);
    store.append(&name, ExpectedVersion::NoStream, &[event(0)])?;
    assert_eq!(store.read_stream_to_vec(&name)?.len(), 1);
    assert_eq!(store.list_streams()?[0].name, name);
    Ok(())
}

#[test]
fn names_starting_with_a_dollar_are_reserved() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    for name in ["$all", "$", "$settings"] {
        let reserved = |e: &Error| matches!(e, Error::ReservedStreamName { name: n } if n == name);
        assert_rejected(
            &store,
            name,
            || store.append(name, ExpectedVersion::Any, &[event(9)]),
            reserved,
        )?;
        assert_rejected(
            &store,
            name,
            || store.delete_stream(name, ExpectedVersion::Any),
            reserved,
        )?;
        assert_rejected(
            &store,
            name,
            || store.set_metadata(name, ExpectedVersion::Any, StreamMetadata::default()),
            reserved,
        )?;
        assert_rejected(&store, name, || store.read_stream_to_vec(name), reserved)?;
    }
    Ok(())
}

#[test]
fn an_empty_append_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        for stream in ["acct-1", "fresh"] {
            assert_rejected(
                &store,
                "empty append",
                || store.append(stream, expected, &[]),
                |e| matches!(e, Error::EmptyAppend),
            )?;
        }
    }
    Ok(())
}

#[test]
fn empty_and_overlong_event_types_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let empty = EventData::binary(String::new(), b"x".to_vec());
    assert_rejected(
        &store,
        "empty event type",
        // The bad event comes second: nothing of the append may be written.
        || store.append("acct-1", ExpectedVersion::Any, &[event(9), empty.clone()]),
        |e| matches!(e, Error::InvalidEventType { .. }),
    )?;
    let long = EventData::binary("T".repeat(MAX_EVENT_TYPE_LEN + 1), b"x".to_vec());
    assert_rejected(
        &store,
        "over-long event type",
        || store.append("acct-1", ExpectedVersion::Any, &[event(9), long.clone()]),
        |e| {
            matches!(
                e,
                Error::EventTypeTooLong {
                    index: 1,
                    len: 1025,
                    max: 1024,
                    ..
                }
            ) && e
                .to_string()
                .contains("1025 bytes, over the maximum of 1024 bytes")
        },
    )?;
    // 1,024 bytes is the longest accepted.
    store.append(
        "acct-1",
        ExpectedVersion::Any,
        &[EventData::binary(
            "T".repeat(MAX_EVENT_TYPE_LEN),
            Vec::new(),
        )],
    )?;
    Ok(())
}

#[test]
fn the_nil_uuid_is_refused_as_an_event_id() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let nil = EventData::binary("Nil", b"x".to_vec()).with_id(Uuid::nil());
    assert_rejected(
        &store,
        "nil event id",
        || store.append("acct-1", ExpectedVersion::Any, &[event(9), nil.clone()]),
        |e| matches!(e, Error::NilEventId { index: 1 }),
    )?;
    Ok(())
}

#[test]
fn an_event_over_max_event_size_is_rejected_with_its_index_and_size() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(
        dir.path(),
        Options {
            max_event_size: 1024,
            ..options()
        },
    )?;
    let exact = EventData::binary("Big", vec![7; 1024 - EVENT_FIXED_LEN - 3]);
    let over = EventData::binary("Big", vec![7; 1024 - EVENT_FIXED_LEN - 3 + 1]);
    assert_rejected(
        &store,
        "event over max_event_size",
        || store.append("acct-1", ExpectedVersion::Any, &[exact.clone(), over]),
        |e| {
            matches!(
                e,
                Error::EventTooLarge {
                    index: 1,
                    size: 1025,
                    max: 1024
                }
            )
        },
    )?;
    // An event of exactly the maximum is accepted.
    store.append("acct-1", ExpectedVersion::Any, &[exact])?;
    Ok(())
}

#[test]
fn an_append_over_max_append_size_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = Options {
        max_event_size: 1024,
        max_append_size: 4096,
        ..options()
    };
    let store = populated(dir.path(), options)?;
    let events: Vec<EventData> = (0..5)
        .map(|_| EventData::binary("Chunk", vec![1; 1000 - EVENT_FIXED_LEN - 5]))
        .collect();
    assert_rejected(
        &store,
        "append over max_append_size",
        || store.append("acct-3", ExpectedVersion::NoStream, &events),
        |e| {
            matches!(
                e,
                Error::AppendTooLarge {
                    size: 5000,
                    max: 4096
                }
            )
        },
    )?;
    store.append("acct-3", ExpectedVersion::NoStream, &events[..4])?;
    Ok(())
}

#[test]
fn data_or_metadata_declared_json_must_parse() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let mut bad_data = event(9);
    bad_data.data = b"{not json".to_vec();
    assert_rejected(
        &store,
        "bad JSON data",
        || store.append("acct-1", ExpectedVersion::Any, &[event(8), bad_data]),
        |e| {
            matches!(
                e,
                Error::InvalidJson {
                    index: 1,
                    field: "data",
                    ..
                }
            )
        },
    )?;
    let bad_metadata = event(9).with_metadata(b"[1, 2".to_vec());
    assert_rejected(
        &store,
        "bad JSON metadata",
        || store.append("acct-1", ExpectedVersion::Any, &[bad_metadata]),
        |e| {
            matches!(
                e,
                Error::InvalidJson {
                    index: 0,
                    field: "metadata",
                    ..
                }
            )
        },
    )?;
    // Well-formed JSON but for a byte that is not UTF-8, inside a string.
    let mut not_utf8 = event(9);
    not_utf8.data = b"{\"note\":\"caf\xe9\"}".to_vec();
    assert_rejected(
        &store,
        "JSON data that is not UTF-8",
        || store.append("acct-1", ExpectedVersion::Any, &[not_utf8]),
        |e| match e {
            Error::InvalidJson {
                index: 0,
                field: "data",
                reason,
            } => reason.contains("UTF-8"),
            _ => false,
        },
    )?;
    let mut empty_data = event(9);
    empty_data.data = Vec::new();
    assert_rejected(
        &store,
        "empty JSON data",
        || store.append("acct-1", ExpectedVersion::Any, &[empty_data]),
        |e| {
            matches!(
                e,
                Error::InvalidJson {
                    index: 0,
                    field: "data",
                    ..
                }
            )
        },
    )?;
    // The same bytes are fine as binary, and empty metadata is fine on a JSON event.
    let binary = EventData::binary("Raw", b"{not json".to_vec()).with_metadata(b"[1, 2".to_vec());
    store.append("acct-1", ExpectedVersion::Any, &[binary, event(10)])?;
    let events = store.read_stream_to_vec("acct-1")?;
    assert_eq!(events[2].content_type, ContentType::Binary);
    assert_eq!(events[2].data, b"{not json");
    Ok(())
}

#[test]
fn a_duplicate_event_id_in_one_append_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let id = Uuid::new_v4();
    let events = [event(7), event(8).with_id(id), event(9).with_id(id)];
    assert_rejected(
        &store,
        "duplicate event id",
        || store.append("acct-1", ExpectedVersion::Any, &events),
        |e| matches!(e, Error::DuplicateEventId { id: dup } if *dup == id),
    )?;
    Ok(())
}

#[test]
fn an_invalid_regex_filter_is_rejected() {
    let error = EventFilter::all().event_type_regex("Acct(").unwrap_err();
    assert!(
        matches!(&error, Error::InvalidFilter { pattern, .. } if pattern == "Acct("),
        "{error:?}"
    );
    let error = EventFilter::all().stream_regex("[z-a]").unwrap_err();
    assert!(
        matches!(&error, Error::InvalidFilter { pattern, .. } if pattern == "[z-a]"),
        "{error:?}"
    );
}

#[test]
fn invalid_metadata_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let invalid = [
        StreamMetadata {
            max_count: Some(0),
            ..StreamMetadata::default()
        },
        StreamMetadata {
            max_age: Some(std::time::Duration::from_millis(500)),
            ..StreamMetadata::default()
        },
        StreamMetadata {
            truncate_before: Some(StreamVersion(0)),
            ..StreamMetadata::default()
        },
    ];
    for metadata in invalid {
        for stream in ["acct-1", "fresh"] {
            let what = format!("{metadata:?} on {stream}");
            assert_rejected(
                &store,
                &what,
                || store.set_metadata(stream, ExpectedVersion::Any, metadata.clone()),
                |e| matches!(e, Error::InvalidMetadata { .. }),
            )?;
        }
    }
    Ok(())
}

#[test]
fn custom_metadata_over_max_event_size_is_rejected_with_its_size() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(
        dir.path(),
        Options {
            max_event_size: 1000,
            ..options()
        },
    )?;
    // A JSON string serializes with its two quotes.
    let at_limit = json!("m".repeat(998));
    store.set_metadata(
        "acct-1",
        ExpectedVersion::Any,
        StreamMetadata {
            custom: Some(at_limit.clone()),
            ..StreamMetadata::default()
        },
    )?;
    let stored = store.stream_info("acct-1")?.ok_or("acct-1 exists")?;
    assert_eq!(stored.metadata.custom, Some(at_limit));
    let over = StreamMetadata {
        custom: Some(json!("m".repeat(999))),
        ..StreamMetadata::default()
    };
    for stream in ["acct-1", "fresh"] {
        assert_rejected(
            &store,
            stream,
            || store.set_metadata(stream, ExpectedVersion::Any, over.clone()),
            |e| {
                matches!(
                    e,
                    Error::MetadataTooLarge {
                        size: 1001,
                        max: 1000
                    }
                )
            },
        )?;
    }
    Ok(())
}

#[test]
fn wrong_expected_versions_are_rejected_with_the_actual_version() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let cases = [
        (
            "acct-1",
            ExpectedVersion::NoStream,
            CurrentVersion::Current(StreamVersion(1)),
        ),
        (
            "acct-1",
            ExpectedVersion::Exact(StreamVersion(0)),
            CurrentVersion::Current(StreamVersion(1)),
        ),
        (
            "acct-1",
            ExpectedVersion::Exact(StreamVersion(2)),
            CurrentVersion::Current(StreamVersion(1)),
        ),
        (
            "fresh",
            ExpectedVersion::StreamExists,
            CurrentVersion::NoStream,
        ),
        (
            "fresh",
            ExpectedVersion::Exact(StreamVersion(0)),
            CurrentVersion::NoStream,
        ),
    ];
    for (stream, expected, actual) in cases {
        let wrong = |e: &Error| {
            matches!(e, Error::WrongExpectedVersion { stream: s, expected: x, actual: a }
                if s == stream && *x == expected && *a == actual)
        };
        let what = format!("{expected:?} on {stream}");
        assert_rejected(
            &store,
            &what,
            || store.append(stream, expected, &[event(9)]),
            wrong,
        )?;
        assert_rejected(
            &store,
            &what,
            || store.delete_stream(stream, expected),
            wrong,
        )?;
        assert_rejected(
            &store,
            &what,
            || store.tombstone_stream(stream, expected),
            wrong,
        )?;
        assert_rejected(
            &store,
            &what,
            || store.set_metadata(stream, expected, StreamMetadata::default()),
            wrong,
        )?;
    }
    Ok(())
}

#[test]
fn bad_input_is_rejected_after_a_reopen_too() -> TestResult {
    let dir = tempfile::tempdir()?;
    populated(dir.path(), options())?.close()?;
    let store = EventStore::open(dir.path(), options())?;
    assert_rejected(
        &store,
        "reserved name after reopen",
        || store.append("$all", ExpectedVersion::Any, &[event(1)]),
        |e| matches!(e, Error::ReservedStreamName { .. }),
    )?;
    assert_rejected(
        &store,
        "wrong version after reopen",
        || store.append("acct-1", ExpectedVersion::NoStream, &[event(1)]),
        |e| matches!(e, Error::WrongExpectedVersion { .. }),
    )?;
    Ok(())
}

fn assert_idempotent_retry(
    store: &EventStore,
    stream: &str,
    expected: ExpectedVersion,
    events: &[EventData],
    first: AppendResult,
) -> TestResult {
    let before = snapshot(store)?;
    let retried = store.append(stream, expected, events)?;
    assert_eq!(
        retried, first,
        "retry with {expected:?} returned a different result"
    );
    assert_eq!(
        snapshot(store)?,
        before,
        "retry with {expected:?} wrote something"
    );
    Ok(())
}

#[test]
fn retrying_an_append_with_the_same_ids_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;

    let first_events = [event(10), event(11)];
    let first = store.append("orders", ExpectedVersion::NoStream, &first_events)?;
    assert_idempotent_retry(
        &store,
        "orders",
        ExpectedVersion::NoStream,
        &first_events,
        first,
    )?;

    let second_events = [event(12)];
    let second = store.append(
        "orders",
        ExpectedVersion::Exact(StreamVersion(1)),
        &second_events,
    )?;
    assert_idempotent_retry(
        &store,
        "orders",
        ExpectedVersion::Exact(StreamVersion(1)),
        &second_events,
        second,
    )?;
    // The earlier append can still be retried after a later one.
    assert_idempotent_retry(
        &store,
        "orders",
        ExpectedVersion::NoStream,
        &first_events,
        first,
    )?;

    let third_events = [event(13), event(14)];
    let third = store.append("orders", ExpectedVersion::Any, &third_events)?;
    assert_idempotent_retry(&store, "orders", ExpectedVersion::Any, &third_events, third)?;

    // After a reopen too.
    store.close()?;
    let store = EventStore::open(dir.path(), options())?;
    assert_idempotent_retry(
        &store,
        "orders",
        ExpectedVersion::Exact(StreamVersion(1)),
        &second_events,
        second,
    )?;
    let ids: Vec<Uuid> = store
        .read_stream_to_vec("orders")?
        .iter()
        .map(|e| e.id)
        .collect();
    let appended: Vec<Uuid> = first_events
        .iter()
        .chain(&second_events)
        .chain(&third_events)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, appended);
    Ok(())
}

#[test]
fn retrying_an_append_with_stream_exists_writes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let events = [event(10), event(11)];
    let first = store.append("acct-1", ExpectedVersion::StreamExists, &events)?;
    assert_idempotent_retry(
        &store,
        "acct-1",
        ExpectedVersion::StreamExists,
        &events,
        first,
    )?;
    Ok(())
}

#[test]
fn retrying_with_different_ids_or_a_partial_overlap_is_a_version_conflict() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let events = [event(10), event(11)];
    store.append("orders", ExpectedVersion::NoStream, &events)?;
    let conflict = |e: &Error| {
        matches!(
            e,
            Error::WrongExpectedVersion {
                actual: CurrentVersion::Current(StreamVersion(1)),
                ..
            }
        )
    };
    assert_rejected(
        &store,
        "different ids",
        || store.append("orders", ExpectedVersion::NoStream, &[event(10), event(11)]),
        conflict,
    )?;
    assert_rejected(
        &store,
        "first id only, then a new one",
        || {
            store.append(
                "orders",
                ExpectedVersion::NoStream,
                &[events[0].clone(), event(12)],
            )
        },
        conflict,
    )?;
    assert_rejected(
        &store,
        "the same ids plus one more",
        || {
            let mut more = events.to_vec();
            more.push(event(12));
            store.append("orders", ExpectedVersion::NoStream, &more)
        },
        conflict,
    )?;
    assert_rejected(
        &store,
        "the same ids at the wrong place",
        || store.append("orders", ExpectedVersion::Exact(StreamVersion(0)), &events),
        conflict,
    )?;
    Ok(())
}

#[test]
fn kv_keys_that_look_like_event_store_keys_do_not_collide() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let kv = store.kv();
    let mut all_zero_position = vec![b'p'];
    all_zero_position.extend_from_slice(&0u64.to_be_bytes());
    let mut event_key = vec![b'e'];
    event_key.extend_from_slice(&6u16.to_be_bytes());
    event_key.extend_from_slice(b"acct-1");
    event_key.extend_from_slice(&0u64.to_be_bytes());
    let lookalikes: Vec<Vec<u8>> = vec![
        b"e".to_vec(),
        b"h".to_vec(),
        b"p".to_vec(),
        b"k".to_vec(),
        b"hacct-1".to_vec(),
        b"hacct-9".to_vec(),
        all_zero_position,
        event_key,
    ];
    let events_before = store
        .read_all(ReadAll::forwards())
        .collect::<Result<Vec<_>, _>>()?;
    let streams_before = store.list_streams()?;

    // Nothing of the event store is visible through the key-value space.
    for key in &lookalikes {
        assert_eq!(kv.get(key)?, None, "kv sees an event-store key {key:?}");
    }
    assert_eq!(kv.keys(b"").count(), 0);

    for key in &lookalikes {
        kv.put(key, b"kv value")?;
    }
    assert_eq!(
        store
            .read_all(ReadAll::forwards())
            .collect::<Result<Vec<_>, _>>()?,
        events_before
    );
    assert_eq!(store.list_streams()?, streams_before);
    assert_eq!(store.stream_info("acct-9")?, None);

    let mut keys: Vec<Vec<u8>> = kv.keys(b"").collect();
    keys.sort();
    let mut expected = lookalikes.clone();
    expected.sort();
    assert_eq!(keys, expected);
    let mut h_keys: Vec<Vec<u8>> = kv.keys(b"h").collect();
    h_keys.sort();
    assert_eq!(
        h_keys,
        vec![b"h".to_vec(), b"hacct-1".to_vec(), b"hacct-9".to_vec()]
    );

    // Event-store writes do not touch the key-value space.
    store.append("acct-1", ExpectedVersion::Any, &[event(20)])?;
    store.append("acct-9", ExpectedVersion::NoStream, &[event(21)])?;
    store.tombstone_stream("acct-2", ExpectedVersion::Any)?;
    store.scavenge()?;
    for key in &lookalikes {
        assert_eq!(
            kv.get(key)?.as_deref(),
            Some(&b"kv value"[..]),
            "kv key {key:?}"
        );
    }

    // Deleting key-value entries leaves the streams alone, also across a reopen.
    for key in &lookalikes {
        kv.delete(key)?;
    }
    assert_eq!(kv.keys(b"").count(), 0);
    store.close()?;
    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(store.read_stream_to_vec("acct-1")?.len(), 3);
    assert_eq!(store.read_stream_to_vec("acct-9")?.len(), 1);
    let names: Vec<String> = store.list_streams()?.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["acct-1", "acct-2", "acct-9"]);
    assert_eq!(store.kv().keys(b"").count(), 0);
    Ok(())
}

#[test]
fn kv_rejects_empty_and_overlong_keys_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = populated(dir.path(), options())?;
    let kv = store.kv();
    let longest = store.options().engine.max_key_size - 1;
    assert_rejected(
        &store,
        "empty kv key",
        || kv.put(b"", b"v"),
        |e| matches!(e, Error::EmptyKey),
    )?;
    let too_long = vec![b'k'; longest + 1];
    assert_rejected(
        &store,
        "overlong kv key",
        || kv.put(&too_long, b"v"),
        |e| matches!(e, Error::KeyTooLarge { .. }),
    )?;
    let just_fits = vec![b'k'; longest];
    kv.put(&just_fits, b"v")?;
    assert_eq!(kv.get(&just_fits)?.as_deref(), Some(&b"v"[..]));
    Ok(())
}

#[test]
fn a_stream_name_the_options_accept_never_fails_as_an_engine_key_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut options = options();
    // Event keys are the name plus 11 bytes (`eventstore/FORMAT.md`): a 60-byte name
    // cannot fit a 64-byte engine key.
    options.engine.max_key_size = 64;
    options.max_stream_name_len = 60;
    let store = match EventStore::open(dir.path(), options) {
        // Rejecting the options at open is one right answer.
        Err(Error::InvalidOptions { .. }) => return Ok(()),
        Err(other) => return Err(other.into()),
        Ok(store) => store,
    };
    // Otherwise every name up to max_stream_name_len must work.
    let name = "s".repeat(60);
    let result = store.append(&name, ExpectedVersion::NoStream, &[event(0)]);
    assert!(result.is_ok(), "a 60-byte stream name failed: {result:?}");
    Ok(())
}
