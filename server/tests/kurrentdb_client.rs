//! KurrentDB's official Rust client (`kurrentdb` from crates.io), unmodified, against a real
//! server on `127.0.0.1:0`: appends with every expected-revision kind, reads of streams and
//! `$all` both ways, deletes and tombstones, server features and cluster discovery, and
//! events written through one API read back identically through the other.

mod common;
mod kurrent_helpers;

use common::{TestResult, TestServer, within};
use kurrent_helpers::{client, downcast, ns, numbered, read_all, read_stream};
use kurrentdb::{
    AppendToStreamOptions, CurrentRevision, DeleteStreamOptions, EventData, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, TombstoneStreamOptions,
};

#[tokio::test]
async fn appends_check_every_kind_of_expected_revision() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let expect = |state| AppendToStreamOptions::default().stream_state(state);

    let first = client
        .append_to_stream("orders", &expect(StreamState::NoStream), numbered(0, 2))
        .await?;
    assert_eq!(first.next_expected_version, 1);
    let second = client
        .append_to_stream(
            "orders",
            &expect(StreamState::StreamRevision(1)),
            numbered(2, 1),
        )
        .await?;
    assert_eq!(second.next_expected_version, 2);
    assert!(second.position.commit > first.position.commit);
    client
        .append_to_stream("orders", &expect(StreamState::StreamExists), numbered(3, 1))
        .await?;
    client
        .append_to_stream("orders", &expect(StreamState::Any), numbered(4, 1))
        .await?;

    let cases = [
        (StreamState::NoStream, CurrentRevision::Current(4)),
        (StreamState::StreamRevision(1), CurrentRevision::Current(4)),
    ];
    for (expected, current) in cases {
        match client
            .append_to_stream("orders", &expect(expected), numbered(9, 1))
            .await
        {
            Err(kurrentdb::Error::WrongExpectedVersion {
                expected: got_expected,
                current: got_current,
            }) => {
                assert_eq!(got_expected, expected);
                assert_eq!(got_current, current);
            }
            other => panic!("expected a wrong expected version for {expected:?}, got {other:?}"),
        }
    }
    match client
        .append_to_stream("new", &expect(StreamState::StreamExists), numbered(0, 1))
        .await
    {
        Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
            assert_eq!(current, CurrentRevision::NoStream);
        }
        other => panic!("StreamExists on a new stream must fail, got {other:?}"),
    }
    // Nothing was written by the refused appends.
    let events = read_stream(&client, "orders", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [0, 1, 2, 3, 4]);
    server.stop().await
}

#[tokio::test]
async fn an_append_retried_with_the_same_ids_is_written_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    // Ids set here: the client draws a new id for an event without one each time it sends it.
    let events: Vec<EventData> = numbered(0, 3)
        .into_iter()
        .map(|event| event.id(uuid::Uuid::new_v4()))
        .collect();
    let options = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let first = client
        .append_to_stream("retried", &options, events.clone())
        .await?;
    let again = client.append_to_stream("retried", &options, events).await?;
    assert_eq!(again.next_expected_version, first.next_expected_version);
    let read = read_stream(&client, "retried", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&read)?, [0, 1, 2]);
    server.stop().await
}

#[tokio::test]
async fn streams_read_both_ways_from_start_end_and_a_revision_with_counts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    client
        .append_to_stream("s", &AppendToStreamOptions::default(), numbered(0, 10))
        .await?;
    let read = |options: ReadStreamOptions| {
        let client = &client;
        async move { ns(&read_stream(client, "s", &options).await?) }
    };
    let all = ReadStreamOptions::default();
    assert_eq!(read(all.clone()).await?, (0..10).collect::<Vec<_>>());
    assert_eq!(read(all.clone().max_count(3)).await?, [0, 1, 2]);
    assert_eq!(
        read(all.clone().position(StreamPosition::Position(7))).await?,
        [7, 8, 9]
    );
    assert_eq!(
        read(
            all.clone()
                .backwards()
                .position(StreamPosition::End)
                .max_count(2)
        )
        .await?,
        [9, 8]
    );
    assert_eq!(
        read(
            all.clone()
                .backwards()
                .position(StreamPosition::Position(2))
        )
        .await?,
        [2, 1, 0]
    );
    let events = read_stream(&client, "s", &all).await?;
    for (revision, event) in events.iter().enumerate() {
        let event = event.get_original_event();
        assert_eq!(event.revision, revision as u64);
        assert_eq!(event.event_type, "Numbered");
        assert!(event.is_json);
        assert_eq!(event.stream_id(), "s");
        let age = chrono::Utc::now() - event.created;
        assert!(
            age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(5),
            "created is now: {}",
            event.created
        );
    }
    server.stop().await
}

#[tokio::test]
async fn all_reads_both_ways_with_positions_above_zero_that_appends_return() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let a = client
        .append_to_stream("a", &AppendToStreamOptions::default(), numbered(0, 2))
        .await?;
    let b = client
        .append_to_stream("b", &AppendToStreamOptions::default(), numbered(2, 2))
        .await?;

    let forwards = read_all(&client, &ReadAllOptions::default()).await?;
    assert_eq!(ns(&forwards)?, [0, 1, 2, 3]);
    let positions: Vec<u64> = forwards
        .iter()
        .map(|e| e.get_original_event().position.commit)
        .collect();
    assert!(positions[0] > 0, "positions are above 0: {positions:?}");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    for event in &forwards {
        let position = event.get_original_event().position;
        assert_eq!(position.commit, position.prepare);
    }
    // An append answers the position of its last event.
    assert_eq!(a.position.commit, positions[1]);
    assert_eq!(b.position.commit, positions[3]);

    let backwards = read_all(
        &client,
        &ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End),
    )
    .await?;
    assert_eq!(ns(&backwards)?, [3, 2, 1, 0]);
    // Forwards from a position includes its event; backwards returns those before it.
    let from = ReadAllOptions::default().position(StreamPosition::Position(a.position));
    assert_eq!(ns(&read_all(&client, &from).await?)?, [1, 2, 3]);
    let before = ReadAllOptions::default()
        .backwards()
        .position(StreamPosition::Position(b.position));
    assert_eq!(ns(&read_all(&client, &before).await?)?, [2, 1, 0]);
    let two = ReadAllOptions::default().max_count(2);
    assert_eq!(ns(&read_all(&client, &two).await?)?, [0, 1]);
    server.stop().await
}

#[tokio::test]
async fn deleted_streams_read_as_not_found_and_tombstoned_ones_as_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    for stream in ["soft", "hard"] {
        client
            .append_to_stream(stream, &AppendToStreamOptions::default(), numbered(0, 3))
            .await?;
    }

    let missing = read_stream(&client, "never-written", &ReadStreamOptions::default()).await;
    assert!(
        matches!(downcast(missing), Some(kurrentdb::Error::ResourceNotFound)),
        "a stream never written is not found"
    );

    let wrong = client
        .delete_stream(
            "soft",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
        )
        .await;
    match wrong {
        Err(kurrentdb::Error::Grpc { code, message }) => {
            // The client's own tonic: compared by number.
            assert_eq!(code as i32, tonic::Code::FailedPrecondition as i32);
            assert!(message.contains("WrongExpectedVersion"), "{message}");
        }
        other => panic!("a delete at the wrong revision fails, got {other:?}"),
    }
    let deleted = client
        .delete_stream(
            "soft",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(2)),
        )
        .await?;
    assert!(deleted.is_some_and(|p| p.commit > 0));
    let read = read_stream(&client, "soft", &ReadStreamOptions::default()).await;
    assert!(matches!(
        downcast(read),
        Some(kurrentdb::Error::ResourceNotFound)
    ));
    // A soft-deleted stream takes appends again, continuing its revisions.
    let revived = client
        .append_to_stream("soft", &AppendToStreamOptions::default(), numbered(3, 1))
        .await?;
    assert_eq!(revived.next_expected_version, 3);
    assert_eq!(
        ns(&read_stream(&client, "soft", &ReadStreamOptions::default()).await?)?,
        [3]
    );

    client
        .tombstone_stream("hard", &TombstoneStreamOptions::default())
        .await?;
    let read = read_stream(&client, "hard", &ReadStreamOptions::default()).await;
    assert!(matches!(
        downcast(read),
        Some(kurrentdb::Error::ResourceDeleted)
    ));
    let append = client
        .append_to_stream("hard", &AppendToStreamOptions::default(), numbered(9, 1))
        .await;
    assert!(
        matches!(append, Err(kurrentdb::Error::ResourceDeleted)),
        "{append:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn the_client_discovers_one_leader_and_reads_the_server_features() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    // `+discover` asks Gossip.Read for the members and connects to the leader it names.
    let client = client(&server, "esdb+discover")?;
    let info = within("the server's features", client.server_info()).await??;
    assert!(info.version() >= (24, 10), "{}", info.version());
    client
        .append_to_stream("found", &AppendToStreamOptions::default(), numbered(0, 1))
        .await?;
    let events = read_stream(&client, "found", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [0]);
    server.stop().await
}

#[tokio::test]
async fn what_one_api_writes_the_other_reads_back_the_same() -> TestResult {
    use caskade_proto::v1 as pb;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let kurrent = client(&server, "esdb")?;
    let mut native = server.streams().await?;

    // Written natively, read through KurrentDB's API.
    let native_event = pb::EventData {
        metadata: br#"{"by":"native"}"#.to_vec(),
        ..common::json_event("Native", &serde_json::json!({ "n": 0 }))
    };
    let binary = pb::EventData {
        id: uuid::Uuid::new_v4().to_string(),
        r#type: "Blob".to_owned(),
        content_type: pb::ContentType::Binary.into(),
        data: vec![0, 159, 146, 150],
        metadata: Vec::new(),
    };
    let appended = native
        .append(common::append(
            "mixed",
            common::no_stream(),
            vec![native_event.clone(), binary.clone()],
        ))
        .await?
        .into_inner();
    let events = read_stream(&kurrent, "mixed", &ReadStreamOptions::default()).await?;
    let [first, second] = &events[..] else {
        panic!("two events, got {}", events.len());
    };
    let (first, second) = (first.get_original_event(), second.get_original_event());
    assert_eq!(first.id.to_string(), native_event.id);
    assert_eq!(first.event_type, "Native");
    assert!(first.is_json);
    assert_eq!(&first.custom_metadata[..], &native_event.metadata[..]);
    assert_eq!(&first.data[..], &native_event.data[..]);
    assert_eq!(second.id.to_string(), binary.id);
    assert!(!second.is_json);
    assert_eq!(
        second.metadata.get("content-type").map(String::as_str),
        Some("application/octet-stream")
    );
    assert_eq!(&second.data[..], &binary.data[..]);
    assert_eq!(second.revision, 1);

    // Written through KurrentDB's API, read natively.
    let id = uuid::Uuid::new_v4();
    let event = EventData::json("Kurrent", &serde_json::json!({ "n": 2 }))?
        .id(id)
        .metadata(bytes::Bytes::from_static(br#"{"by":"kurrent"}"#));
    let written = kurrent
        .append_to_stream(
            "mixed",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
            event,
        )
        .await?;
    assert_eq!(written.next_expected_version, 2);
    let native_events = common::read(&mut native, common::read_stream("mixed")).await?;
    let last = native_events.last().ok_or("no events")?;
    assert_eq!(last.id, id.to_string());
    assert_eq!(last.r#type, "Kurrent");
    assert_eq!(last.content_type, i32::from(pb::ContentType::Json));
    assert_eq!(last.metadata, br#"{"by":"kurrent"}"#);
    assert_eq!(last.version, 2);
    // Positions agree: the wire position is Caskade's plus one.
    assert_eq!(written.position.commit, last.position + 1);
    assert_eq!(
        first.position.commit,
        native_events[0].position + 1,
        "the first event's positions agree"
    );
    assert_eq!(appended.last_position + 1, second.position.commit);
    server.stop().await
}
