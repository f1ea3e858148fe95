//! Deletions, retention, positions and subscriptions cross the two APIs identically: what
//! `caskade.v1` does to a stream, KurrentDB's official Rust client (`kurrentdb` from
//! crates.io, unmodified) sees, and the reverse, against one real server on `127.0.0.1:0`.
//! A soft delete hides the stream through both and a later append continues its revisions;
//! a tombstone is refused through both; `$tb` and `truncate_before` are one rule; `$all`
//! positions on KurrentDB's wire are Caskade's plus one; a subscription through either API
//! goes live with events appended through the other.

mod common;
mod kurrent_helpers;

use caskade_proto::v1 as pb;
use common::{Authed, TestResult, TestServer, within};
use kurrent_helpers::{client, downcast, n_of, ns, numbered, read_all, read_stream};
use kurrentdb::{
    AppendToStreamOptions, DeleteStreamOptions, Position, ReadAllOptions, ReadStreamOptions,
    StreamMetadata, StreamMetadataResult, StreamPosition, StreamState, SubscribeToStreamOptions,
    Subscription, SubscriptionEvent, TombstoneStreamOptions,
};
use pb::streams_client::StreamsClient;
use tonic::Code;

/// A server in `dir`, KurrentDB's client of it and a `caskade.v1` `Streams` client.
async fn start(
    dir: &std::path::Path,
) -> TestResult<(TestServer, kurrentdb::Client, StreamsClient<Authed>)> {
    let server = TestServer::start_in(dir).await?;
    let kurrent = client(&server, "esdb")?;
    let native = server.streams().await?;
    Ok((server, kurrent, native))
}

/// Appends `count` numbered events of `event_type` to `stream` through `caskade.v1`.
async fn native_append(
    native: &mut StreamsClient<Authed>,
    stream: &str,
    expected: Option<pb::ExpectedVersion>,
    event_type: &str,
    first: u64,
    count: u64,
) -> TestResult {
    let events = common::numbered(event_type, first, count);
    native
        .append(common::append(stream, expected, events))
        .await?;
    Ok(())
}

/// Asserts that a call of KurrentDB's client failed because the stream is tombstoned.
#[track_caller]
fn assert_deleted<T: std::fmt::Debug>(result: &Result<T, kurrentdb::Error>) {
    assert!(
        matches!(result, Err(kurrentdb::Error::ResourceDeleted)),
        "{result:?}"
    );
}

fn expecting(state: StreamState) -> AppendToStreamOptions {
    AppendToStreamOptions::default().stream_state(state)
}

/// The versions of events read through `caskade.v1`.
fn versions(events: &[pb::RecordedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.version).collect()
}

/// The `n`s of events read through `caskade.v1`.
fn native_ns(events: &[pb::RecordedEvent]) -> TestResult<Vec<u64>> {
    events.iter().map(common::n_of).collect()
}

/// `stream`'s description through `caskade.v1`; an error if it was never written.
async fn native_info(
    native: &mut StreamsClient<Authed>,
    stream: &str,
) -> TestResult<pb::StreamInfo> {
    let response = native
        .get_metadata(pb::GetMetadataRequest {
            stream: stream.to_owned(),
        })
        .await?;
    Ok(response
        .into_inner()
        .info
        .ok_or_else(|| format!("`{stream}` has no head"))?)
}

/// The status of a `caskade.v1` read of `stream` that must fail.
async fn native_read_error(
    native: &mut StreamsClient<Authed>,
    stream: &str,
) -> TestResult<tonic::Status> {
    match common::read(native, common::read_stream(stream)).await {
        Ok(events) => {
            Err(format!("the read of `{stream}` returned {} events", events.len()).into())
        }
        Err(error) => Ok(*error.downcast::<tonic::Status>()?),
    }
}

/// The next message of a Kurrent subscription.
async fn next_message(subscription: &mut Subscription) -> TestResult<SubscriptionEvent> {
    Ok(within(
        "a subscription message",
        subscription.next_subscription_event(),
    )
    .await??)
}

/// The `n`s a Kurrent subscription delivers up to its `CaughtUp`.
async fn kurrent_until_caught_up(subscription: &mut Subscription) -> TestResult<Vec<u64>> {
    let mut events = Vec::new();
    loop {
        match next_message(subscription).await? {
            SubscriptionEvent::Confirmed(_) if events.is_empty() => {}
            SubscriptionEvent::EventAppeared(event) => events.push(n_of(&event)?),
            SubscriptionEvent::CaughtUp(_) => return Ok(events),
            other => return Err(format!("unexpected {other:?} before caught up").into()),
        }
    }
}

/// The next `count` events a Kurrent subscription delivers once live.
async fn kurrent_live(
    subscription: &mut Subscription,
    count: usize,
) -> TestResult<Vec<kurrentdb::RecordedEvent>> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        match next_message(subscription).await? {
            SubscriptionEvent::EventAppeared(event) => {
                events.push(event.event.ok_or("an event appeared without its event")?);
            }
            other => return Err(format!("unexpected {other:?} while live").into()),
        }
    }
    Ok(events)
}

/// The events a `caskade.v1` subscription delivers up to its `caught_up`.
async fn native_until_caught_up(
    messages: &mut tonic::Streaming<pb::SubscribeResponse>,
) -> TestResult<Vec<pb::RecordedEvent>> {
    let mut events = Vec::new();
    loop {
        let message = within("a subscription message", messages.message())
            .await??
            .ok_or("the subscription ended early")?;
        match message.message.ok_or("an empty subscription message")? {
            pb::subscribe_response::Message::Event(event) => events.push(event),
            pb::subscribe_response::Message::CaughtUp(_) => return Ok(events),
        }
    }
}

/// The next `count` events a `caskade.v1` subscription delivers once live.
async fn native_live(
    messages: &mut tonic::Streaming<pb::SubscribeResponse>,
    count: usize,
) -> TestResult<Vec<pb::RecordedEvent>> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = within("a subscription message", messages.message())
            .await??
            .ok_or("the subscription ended early")?;
        match message.message.ok_or("an empty subscription message")? {
            pb::subscribe_response::Message::Event(event) => events.push(event),
            pb::subscribe_response::Message::CaughtUp(_) => {
                return Err("a second caught_up".into());
            }
        }
    }
    Ok(events)
}

#[tokio::test]
async fn a_native_soft_delete_is_not_found_then_revives_at_the_next_revision() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    native_append(&mut native, "cart", common::no_stream(), "Added", 0, 3).await?;
    native
        .delete(pb::DeleteRequest {
            stream: "cart".into(),
            expected_version: common::exact(2),
        })
        .await?;

    let read = read_stream(&kurrent, "cart", &ReadStreamOptions::default()).await;
    assert!(
        matches!(downcast(read), Some(kurrentdb::Error::ResourceNotFound)),
        "a soft-deleted stream is not found"
    );
    assert!(
        read_all(&kurrent, &ReadAllOptions::default())
            .await?
            .is_empty(),
        "$all hides the deleted events too"
    );

    // `NoStream` matches a soft-deleted stream, and the append continues at its next version.
    let revived = kurrent
        .append_to_stream("cart", &expecting(StreamState::NoStream), numbered(3, 1))
        .await?;
    assert_eq!(revived.next_expected_version, 3);
    let events = read_stream(&kurrent, "cart", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [3]);
    assert_eq!(events[0].get_original_event().revision, 3);
    let info = native_info(&mut native, "cart").await?;
    assert_eq!(info.state, i32::from(pb::StreamState::Live));
    assert_eq!(info.last_version, Some(3));
    let events = common::read(&mut native, common::read_stream("cart")).await?;
    assert_eq!(versions(&events), [3]);
    server.stop().await
}

#[tokio::test]
async fn a_stream_deleted_through_the_client_reads_as_deleted_natively() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    kurrent
        .append_to_stream("cart", &expecting(StreamState::NoStream), numbered(0, 3))
        .await?;
    kurrent
        .delete_stream(
            "cart",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(2)),
        )
        .await?;

    assert!(
        common::read(&mut native, common::read_stream("cart"))
            .await?
            .is_empty(),
        "a soft-deleted stream reads empty"
    );
    assert!(
        common::read(&mut native, common::read_all())
            .await?
            .is_empty()
    );
    let info = native_info(&mut native, "cart").await?;
    assert_eq!(info.state, i32::from(pb::StreamState::Deleted));
    assert_eq!(info.last_version, Some(2));
    let listed = common::list_streams(&mut native).await?;
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.name.as_str(), s.state))
            .collect::<Vec<_>>(),
        [("cart", i32::from(pb::StreamState::Deleted))]
    );
    // The delete is kept apart from the metadata: replacing it reveals nothing.
    kurrent
        .set_stream_metadata(
            "cart",
            &expecting(StreamState::Any),
            &StreamMetadata::builder().truncate_before(0).build(),
        )
        .await?;
    assert!(
        common::read(&mut native, common::read_stream("cart"))
            .await?
            .is_empty(),
        "new metadata does not undo a delete"
    );

    let revived = native
        .append(common::append(
            "cart",
            common::no_stream(),
            common::numbered("Added", 3, 1),
        ))
        .await?
        .into_inner();
    assert_eq!(revived.next_expected_version, 3);
    let events = read_stream(&kurrent, "cart", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [3]);
    assert_eq!(events[0].get_original_event().revision, 3);
    server.stop().await
}

#[tokio::test]
async fn a_stream_tombstoned_through_the_client_is_refused_natively() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    kurrent
        .append_to_stream("gone", &expecting(StreamState::NoStream), numbered(0, 2))
        .await?;
    kurrent
        .tombstone_stream("gone", &TombstoneStreamOptions::default())
        .await?;

    let read = native_read_error(&mut native, "gone").await?;
    assert_eq!(read.code(), Code::NotFound, "{read:?}");
    let append = native
        .append(common::append("gone", None, common::numbered("E", 2, 1)))
        .await
        .expect_err("a tombstoned stream cannot be written");
    assert_eq!(append.code(), Code::NotFound, "{append:?}");
    let delete = native
        .delete(pb::DeleteRequest {
            stream: "gone".into(),
            expected_version: None,
        })
        .await
        .expect_err("a tombstoned stream cannot be deleted");
    assert_eq!(delete.code(), Code::NotFound, "{delete:?}");
    let info = native_info(&mut native, "gone").await?;
    assert_eq!(info.state, i32::from(pb::StreamState::Tombstoned));
    assert_eq!(info.last_version, Some(1));
    assert!(
        common::read(&mut native, common::read_all())
            .await?
            .is_empty()
    );
    server.stop().await
}

#[tokio::test]
async fn a_stream_tombstoned_natively_is_deleted_through_the_client() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    native_append(&mut native, "gone", common::no_stream(), "E", 0, 2).await?;
    native
        .tombstone(pb::TombstoneRequest {
            stream: "gone".into(),
            expected_version: common::exact(1),
        })
        .await?;

    let read = read_stream(&kurrent, "gone", &ReadStreamOptions::default()).await;
    assert!(
        matches!(downcast(read), Some(kurrentdb::Error::ResourceDeleted)),
        "a tombstoned stream reads as deleted"
    );
    let append = kurrent
        .append_to_stream("gone", &AppendToStreamOptions::default(), numbered(2, 1))
        .await;
    assert_deleted(&append);
    let delete = kurrent
        .delete_stream("gone", &DeleteStreamOptions::default())
        .await;
    assert_deleted(&delete);
    let metadata = kurrent
        .get_stream_metadata("gone", &ReadStreamOptions::default())
        .await;
    assert_deleted(&metadata);
    assert!(
        read_all(&kurrent, &ReadAllOptions::default())
            .await?
            .is_empty()
    );
    server.stop().await
}

#[tokio::test]
async fn truncate_before_is_one_rule_whichever_api_sets_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    native_append(&mut native, "ledger", common::no_stream(), "Posted", 0, 5).await?;
    native_append(&mut native, "other", common::no_stream(), "Posted", 5, 1).await?;

    // `$tb` alone, through the client: versions below 2 are hidden through both APIs.
    let metadata = StreamMetadata::builder().truncate_before(2).build();
    kurrent
        .set_stream_metadata("ledger", &expecting(StreamState::NoStream), &metadata)
        .await?;
    let events = read_stream(&kurrent, "ledger", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [2, 3, 4]);
    let revisions: Vec<u64> = events
        .iter()
        .map(|e| e.get_original_event().revision)
        .collect();
    assert_eq!(revisions, [2, 3, 4]);
    let events = common::read(&mut native, common::read_stream("ledger")).await?;
    assert_eq!(versions(&events), [2, 3, 4]);
    assert_eq!(native_ns(&events)?, [2, 3, 4]);
    let all = common::read(&mut native, common::read_all()).await?;
    assert_eq!(native_ns(&all)?, [2, 3, 4, 5]);
    let all = read_all(&kurrent, &ReadAllOptions::default()).await?;
    assert_eq!(ns(&all)?, [2, 3, 4, 5]);
    let stored = native_info(&mut native, "ledger")
        .await?
        .metadata
        .ok_or("no metadata")?;
    assert_eq!(
        stored,
        pb::StreamMetadata {
            max_count: None,
            max_age_seconds: None,
            truncate_before: Some(2),
            custom_json: String::new(),
        }
    );

    // `truncate_before` natively: read back as `$tb` by the client, and enforced.
    native
        .set_metadata(pb::SetMetadataRequest {
            stream: "ledger".into(),
            expected_version: None,
            metadata: Some(pb::StreamMetadata {
                truncate_before: Some(4),
                ..pb::StreamMetadata::default()
            }),
        })
        .await?;
    let read = ReadStreamOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(1);
    let StreamMetadataResult::Success(versioned) =
        kurrent.get_stream_metadata("ledger", &read).await?
    else {
        panic!("the metadata set natively is found");
    };
    assert_eq!(versioned.version(), 1, "the metadata's second revision");
    assert_eq!(
        versioned.metadata(),
        &StreamMetadata::builder().truncate_before(4).build()
    );
    let events = read_stream(&kurrent, "$$ledger", &ReadStreamOptions::default()).await?;
    let event = events
        .last()
        .ok_or("no metadata event")?
        .get_original_event();
    let json: serde_json::Value = serde_json::from_slice(&event.data)?;
    assert_eq!(json, serde_json::json!({ "$tb": 4 }));
    let events = read_stream(&kurrent, "ledger", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [4]);
    let events = common::read(&mut native, common::read_stream("ledger")).await?;
    assert_eq!(versions(&events), [4]);
    server.stop().await
}

#[tokio::test]
async fn all_positions_through_the_client_are_the_native_ones_plus_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    let first = native
        .append(common::append(
            "a",
            common::no_stream(),
            common::numbered("E", 0, 2),
        ))
        .await?
        .into_inner();
    let written = kurrent
        .append_to_stream("b", &expecting(StreamState::NoStream), numbered(2, 2))
        .await?;
    let last = native
        .append(common::append(
            "a",
            common::exact(1),
            common::numbered("E", 4, 1),
        ))
        .await?
        .into_inner();

    let native_all = common::read(&mut native, common::read_all()).await?;
    let kurrent_all = read_all(&kurrent, &ReadAllOptions::default()).await?;
    assert_eq!(native_ns(&native_all)?, [0, 1, 2, 3, 4]);
    assert_eq!(ns(&kurrent_all)?, [0, 1, 2, 3, 4]);
    for (mine, theirs) in native_all.iter().zip(&kurrent_all) {
        let theirs = theirs.get_original_event();
        assert_eq!(theirs.id.to_string(), mine.id);
        assert_eq!(
            theirs.position,
            Position {
                commit: mine.position + 1,
                prepare: mine.position + 1,
            },
            "event {}",
            mine.id
        );
    }
    let kurrent_position = |i: usize| kurrent_all[i].get_original_event().position.commit;
    // What the appends answered, each API in its own terms.
    assert_eq!(first.first_position + 1, kurrent_position(0));
    assert_eq!(first.last_position + 1, kurrent_position(1));
    assert_eq!(written.position.commit, native_all[3].position + 1);
    assert_eq!(written.position.prepare, written.position.commit);
    assert_eq!(last.last_position + 1, kurrent_position(4));

    // Stream reads carry the same positions.
    let native_a = common::read(&mut native, common::read_stream("a")).await?;
    let kurrent_a = read_stream(&kurrent, "a", &ReadStreamOptions::default()).await?;
    let native_positions: Vec<u64> = native_a.iter().map(|e| e.position + 1).collect();
    let kurrent_positions: Vec<u64> = kurrent_a
        .iter()
        .map(|e| e.get_original_event().position.commit)
        .collect();
    assert_eq!(kurrent_positions, native_positions);

    // A position taken from one API starts a read of `$all` at the same event in the other.
    let native_at = native_all[2].position;
    let from = ReadAllOptions::default().position(StreamPosition::Position(Position {
        commit: native_at + 1,
        prepare: native_at + 1,
    }));
    assert_eq!(ns(&read_all(&kurrent, &from).await?)?, [2, 3, 4]);
    let from = pb::ReadRequest {
        from: Some(pb::read_request::From::At(written.position.commit - 1)),
        ..common::read_all()
    };
    assert_eq!(native_ns(&common::read(&mut native, from).await?)?, [3, 4]);
    server.stop().await
}

#[tokio::test]
async fn a_client_subscription_goes_live_with_events_appended_natively() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    native_append(&mut native, "orders", common::no_stream(), "Placed", 0, 2).await?;

    let options = SubscribeToStreamOptions::default().start_from(StreamPosition::Start);
    let mut subscription = kurrent.subscribe_to_stream("orders", &options).await;
    assert_eq!(kurrent_until_caught_up(&mut subscription).await?, [0, 1]);

    let appended = native
        .append(common::append(
            "orders",
            common::exact(1),
            common::numbered("Placed", 2, 2),
        ))
        .await?
        .into_inner();
    let live = kurrent_live(&mut subscription, 2).await?;
    let stored = common::read(&mut native, common::read_stream("orders")).await?;
    for (event, stored) in live.iter().zip(&stored[2..]) {
        assert_eq!(event.id.to_string(), stored.id);
        assert_eq!(event.revision, stored.version);
        assert_eq!(event.event_type, "Placed");
        assert_eq!(event.position.commit, stored.position + 1);
        assert_eq!(&event.data[..], &stored.data[..]);
    }
    assert_eq!(live.iter().map(|e| e.revision).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(live[1].position.commit, appended.last_position + 1);
    server.stop().await
}

#[tokio::test]
async fn a_native_subscription_goes_live_with_events_appended_through_the_client() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (server, kurrent, mut native) = start(dir.path()).await?;
    kurrent
        .append_to_stream("orders", &expecting(StreamState::NoStream), numbered(0, 2))
        .await?;

    let request = pb::SubscribeRequest {
        target: Some(pb::subscribe_request::Target::Stream("orders".into())),
        from: Some(pb::subscribe_request::From::Start(pb::Empty {})),
        filter: None,
    };
    let mut messages = within("subscribing", native.subscribe(request))
        .await??
        .into_inner();
    let stored = native_until_caught_up(&mut messages).await?;
    assert_eq!(versions(&stored), [0, 1]);
    assert_eq!(native_ns(&stored)?, [0, 1]);

    let written = kurrent
        .append_to_stream(
            "orders",
            &expecting(StreamState::StreamRevision(1)),
            numbered(2, 2),
        )
        .await?;
    let live = native_live(&mut messages, 2).await?;
    assert_eq!(versions(&live), [2, 3]);
    assert_eq!(native_ns(&live)?, [2, 3]);
    let read = read_stream(&kurrent, "orders", &ReadStreamOptions::default()).await?;
    for (event, read) in live.iter().zip(&read[2..]) {
        let read = read.get_original_event();
        assert_eq!(event.id, read.id.to_string());
        assert_eq!(event.r#type, "Numbered");
        assert_eq!(event.content_type, i32::from(pb::ContentType::Json));
        assert_eq!(event.position + 1, read.position.commit);
    }
    assert_eq!(live[1].position + 1, written.position.commit);
    server.stop().await
}
