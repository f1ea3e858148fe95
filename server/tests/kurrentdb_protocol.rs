//! KurrentDB's v1 API at the protocol level, through a tonic client generated from Caskade's
//! own copies of KurrentDB's `.proto` files: the fields, trailers and message kinds that the
//! official clients match on, which the `kurrentdb` client tests cannot see.

mod common;
mod kurrent_helpers;

use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::server_features::server_features_client::ServerFeaturesClient;
use caskade_proto::kurrentdb::event_store::client::streams as pb;
use caskade_proto::kurrentdb::event_store::client::streams::streams_client::StreamsClient;
use common::{TestResult, TestServer, within};
use kurrent_helpers::{blob_metadata, random_id};
use tonic::transport::Channel;

async fn streams(server: &TestServer) -> TestResult<StreamsClient<Channel>> {
    Ok(StreamsClient::new(
        common::channel(server.addr(), None).await?,
    ))
}

/// `stream` as the optional field requests carry.
#[allow(clippy::unnecessary_wraps, reason = "the request fields are `Option`s")]
fn identifier(stream: &str) -> Option<shared::StreamIdentifier> {
    Some(shared::StreamIdentifier {
        stream_name: stream.as_bytes().to_vec(),
    })
}

/// An append of `count` binary events to `stream` with `expected`.
fn append_messages(
    stream: &str,
    expected: pb::append_req::options::ExpectedStreamRevision,
    count: usize,
) -> Vec<pb::AppendReq> {
    let options = pb::AppendReq {
        content: Some(pb::append_req::Content::Options(pb::append_req::Options {
            stream_identifier: identifier(stream),
            expected_stream_revision: Some(expected),
        })),
    };
    let events = (0..count).map(|n| pb::AppendReq {
        content: Some(pb::append_req::Content::ProposedMessage(
            pb::append_req::ProposedMessage {
                id: Some(random_id()),
                metadata: blob_metadata(),
                custom_metadata: Vec::new(),
                data: vec![n as u8],
            },
        )),
    });
    std::iter::once(options).chain(events).collect()
}

async fn append(
    client: &mut StreamsClient<Channel>,
    messages: Vec<pb::AppendReq>,
) -> Result<pb::AppendResp, tonic::Status> {
    client
        .append(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// A forwards read of `count` events of `stream` from its start, ids in `uuid`.
fn read_request(stream: &str, uuid: pb::read_req::options::uuid_option::Content) -> pb::ReadReq {
    use pb::read_req::options as o;
    pb::ReadReq {
        options: Some(pb::read_req::Options {
            stream_option: Some(o::StreamOption::Stream(o::StreamOptions {
                stream_identifier: identifier(stream),
                revision_option: Some(o::stream_options::RevisionOption::Start(shared::Empty {})),
            })),
            read_direction: o::ReadDirection::Forwards.into(),
            resolve_links: false,
            count_option: Some(o::CountOption::Count(u64::MAX)),
            filter_option: Some(o::FilterOption::NoFilter(shared::Empty {})),
            uuid_option: Some(o::UuidOption {
                content: Some(uuid),
            }),
            control_option: None,
        }),
    }
}

async fn read(
    client: &mut StreamsClient<Channel>,
    request: pb::ReadReq,
) -> Result<Vec<pb::ReadResp>, tonic::Status> {
    let mut messages = client.read(request).await?.into_inner();
    let mut all = Vec::new();
    while let Some(message) = messages.message().await? {
        all.push(message);
    }
    Ok(all)
}

fn trailer<'s>(status: &'s tonic::Status, key: &str) -> Option<&'s str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// A server on a store in a new temporary directory (kept alive by the returned handle),
/// and a KurrentDB `Streams` client of it.
async fn started() -> TestResult<(tempfile::TempDir, TestServer, StreamsClient<Channel>)> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = streams(&server).await?;
    Ok((dir, server, client))
}

#[tokio::test]
async fn a_wrong_expected_revision_on_append_is_answered_in_band_in_both_field_sets() -> TestResult
{
    use pb::append_req::options::ExpectedStreamRevision as E;
    use pb::append_resp::wrong_expected_version as w;
    let (_dir, server, mut client) = started().await?;
    let ok = append(
        &mut client,
        append_messages("s", E::NoStream(shared::Empty {}), 2),
    )
    .await?;
    let Some(pb::append_resp::Result::Success(success)) = ok.result else {
        panic!("the first append succeeds: {ok:?}");
    };
    assert_eq!(
        success.current_revision_option,
        Some(pb::append_resp::success::CurrentRevisionOption::CurrentRevision(1))
    );

    let refused = append(&mut client, append_messages("s", E::Revision(5), 1)).await?;
    let Some(pb::append_resp::Result::WrongExpectedVersion(wrong)) = refused.result else {
        panic!("a wrong revision is an answer, not an error: {refused:?}");
    };
    assert_eq!(
        wrong.current_revision_option,
        Some(w::CurrentRevisionOption::CurrentRevision(1))
    );
    assert_eq!(
        wrong.expected_revision_option,
        Some(w::ExpectedRevisionOption::ExpectedRevision(5))
    );
    assert_eq!(
        wrong.current_revision_option_20_6_0,
        Some(w::CurrentRevisionOption2060::CurrentRevision2060(1))
    );
    assert_eq!(
        wrong.expected_revision_option_20_6_0,
        Some(w::ExpectedRevisionOption2060::ExpectedRevision2060(5))
    );

    // An append of no events checks the revision and writes nothing.
    let empty = append(&mut client, append_messages("s", E::Revision(1), 0)).await?;
    assert!(matches!(
        empty.result,
        Some(pb::append_resp::Result::Success(_))
    ));
    let empty = append(
        &mut client,
        append_messages("t", E::StreamExists(shared::Empty {}), 0),
    )
    .await?;
    let Some(pb::append_resp::Result::WrongExpectedVersion(wrong)) = empty.result else {
        panic!("StreamExists on no stream: {empty:?}");
    };
    assert_eq!(
        wrong.current_revision_option,
        Some(w::CurrentRevisionOption::CurrentNoStream(shared::Empty {}))
    );
    server.stop().await
}

#[tokio::test]
async fn errors_carry_the_exception_trailer_and_its_companions() -> TestResult {
    use pb::append_req::options::ExpectedStreamRevision as E;
    let (_dir, server, mut client) = started().await?;
    append(
        &mut client,
        append_messages("gone", E::Any(shared::Empty {}), 1),
    )
    .await?;

    let delete = client
        .delete(pb::DeleteReq {
            options: Some(pb::delete_req::Options {
                stream_identifier: identifier("gone"),
                expected_stream_revision: Some(
                    pb::delete_req::options::ExpectedStreamRevision::Revision(7),
                ),
            }),
        })
        .await
        .expect_err("a delete at the wrong revision fails");
    assert_eq!(delete.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        trailer(&delete, "exception"),
        Some("wrong-expected-version")
    );
    assert_eq!(trailer(&delete, "stream-name"), Some("gone"));
    assert_eq!(trailer(&delete, "expected-version"), Some("7"));
    assert_eq!(trailer(&delete, "actual-version"), Some("0"));

    let tombstoned = client
        .tombstone(pb::TombstoneReq {
            options: Some(pb::tombstone_req::Options {
                stream_identifier: identifier("gone"),
                expected_stream_revision: Some(
                    pb::tombstone_req::options::ExpectedStreamRevision::Any(shared::Empty {}),
                ),
            }),
        })
        .await?
        .into_inner();
    assert!(matches!(
        tombstoned.position_option,
        Some(pb::tombstone_resp::PositionOption::Position(_))
    ));
    let read_error = read(
        &mut client,
        read_request(
            "gone",
            pb::read_req::options::uuid_option::Content::String(shared::Empty {}),
        ),
    )
    .await
    .expect_err("a tombstoned stream fails the read");
    assert_eq!(read_error.code(), tonic::Code::FailedPrecondition);
    assert_eq!(trailer(&read_error, "exception"), Some("stream-deleted"));
    assert_eq!(trailer(&read_error, "stream-name"), Some("gone"));
    let append_error = append(
        &mut client,
        append_messages("gone", E::Any(shared::Empty {}), 1),
    )
    .await
    .expect_err("a tombstoned stream takes no appends");
    assert_eq!(trailer(&append_error, "exception"), Some("stream-deleted"));
    server.stop().await
}

#[tokio::test]
async fn an_append_over_the_limit_is_refused_with_the_limit_in_a_trailer() -> TestResult {
    use pb::append_req::options::ExpectedStreamRevision as E;
    let dir = tempfile::tempdir()?;
    let options = caskade_eventstore::Options {
        max_append_size: 1024,
        max_event_size: 1024,
        ..common::options()
    };
    let store = caskade_eventstore::EventStore::open(dir.path(), options)?;
    let server = TestServer::start(store, caskade_server::ServerConfig::default()).await?;
    let mut client = streams(&server).await?;
    let mut messages = append_messages("big", E::Any(shared::Empty {}), 3);
    for message in &mut messages[1..] {
        if let Some(pb::append_req::Content::ProposedMessage(event)) = &mut message.content {
            event.data = vec![7; 500];
        }
    }
    let error = append(&mut client, messages)
        .await
        .expect_err("1,500 bytes over a 1,024-byte limit");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        trailer(&error, "exception"),
        Some("maximum-append-size-exceeded")
    );
    assert_eq!(trailer(&error, "maximum-append-size"), Some("1024"));
    server.stop().await
}

#[tokio::test]
async fn reads_answer_ids_in_the_form_asked_and_a_missing_stream_with_a_message() -> TestResult {
    use pb::append_req::options::ExpectedStreamRevision as E;
    use pb::read_req::options::uuid_option::Content;
    let (_dir, server, mut client) = started().await?;
    append(
        &mut client,
        append_messages("s", E::Any(shared::Empty {}), 1),
    )
    .await?;

    let id_of = |messages: &[pb::ReadResp]| -> Option<shared::uuid::Value> {
        let Some(pb::read_resp::Content::Event(event)) = &messages.first()?.content else {
            return None;
        };
        event.event.as_ref()?.id.as_ref()?.value.clone()
    };
    let text = within(
        "a read",
        read(
            &mut client,
            read_request("s", Content::String(shared::Empty {})),
        ),
    )
    .await??;
    let structured = within(
        "a read",
        read(
            &mut client,
            read_request("s", Content::Structured(shared::Empty {})),
        ),
    )
    .await??;
    let (Some(shared::uuid::Value::String(text)), Some(shared::uuid::Value::Structured(halves))) =
        (id_of(&text), id_of(&structured))
    else {
        panic!("ids in the forms asked for");
    };
    let parsed = uuid::Uuid::parse_str(&text)?;
    assert_eq!(
        parsed.as_u128(),
        (u128::from(halves.most_significant_bits.cast_unsigned()) << 64)
            | u128::from(halves.least_significant_bits.cast_unsigned())
    );
    let Some(pb::read_resp::Content::Event(event)) = &structured[0].content else {
        panic!("an event");
    };
    let recorded = event.event.as_ref().ok_or("a recorded event")?;
    assert_eq!(
        recorded.metadata.get("type").map(String::as_str),
        Some("Blob")
    );
    assert_eq!(
        recorded.metadata.get("content-type").map(String::as_str),
        Some("application/octet-stream")
    );
    let created: i64 = recorded.metadata.get("created").ok_or("created")?.parse()?;
    let now_ticks = chrono::Utc::now().timestamp() * 10_000_000;
    assert!(
        (now_ticks - created).abs() < 300 * 10_000_000,
        "created {created} is ticks since the Unix epoch, near {now_ticks}"
    );

    let missing = read(
        &mut client,
        read_request("nobody", Content::String(shared::Empty {})),
    )
    .await?;
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(matches!(
        &missing[0].content,
        Some(pb::read_resp::Content::StreamNotFound(found)) if found.stream_identifier == identifier("nobody")
    ));
    server.stop().await
}

/// What each answer of a read is, in order: `e<revision>` for an event, `first <n>` and
/// `last <n>` for the stream positions, `not found`.
fn answer_kinds(answers: &[pb::ReadResp]) -> Vec<String> {
    use pb::read_resp::Content;
    answers
        .iter()
        .map(|answer| match &answer.content {
            Some(Content::Event(event)) => {
                format!("e{}", event.event.as_ref().map_or(0, |e| e.stream_revision))
            }
            Some(Content::FirstStreamPosition(n)) => format!("first {n}"),
            Some(Content::LastStreamPosition(n)) => format!("last {n}"),
            Some(Content::StreamNotFound(_)) => "not found".to_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn compatibility_1_adds_the_stream_positions_and_0_sends_only_events() -> TestResult {
    use pb::append_req::options::ExpectedStreamRevision as E;
    use pb::read_req::options as o;
    let (_dir, server, mut client) = started().await?;
    append(
        &mut client,
        append_messages("s", E::NoStream(shared::Empty {}), 3),
    )
    .await?;
    let structured = o::uuid_option::Content::Structured(shared::Empty {});
    let read_with = |compatibility: Option<u32>, from: o::stream_options::RevisionOption| {
        let mut request = read_request("s", structured);
        let options = request.options.as_mut().expect("options");
        options.control_option =
            compatibility.map(|compatibility| o::ControlOption { compatibility });
        options.stream_option = Some(o::StreamOption::Stream(o::StreamOptions {
            stream_identifier: identifier("s"),
            revision_option: Some(from),
        }));
        request
    };
    let start = || o::stream_options::RevisionOption::Start(shared::Empty {});
    let kinds = |answers: Vec<pb::ReadResp>| answer_kinds(&answers);
    // Go's client sends no control option and accepts nothing but events.
    assert_eq!(
        kinds(read(&mut client, read_with(None, start())).await?),
        ["e0", "e1", "e2"]
    );
    assert_eq!(
        kinds(read(&mut client, read_with(Some(0), start())).await?),
        ["e0", "e1", "e2"]
    );
    assert_eq!(
        kinds(read(&mut client, read_with(Some(1), start())).await?),
        ["e0", "e1", "e2", "last 2"]
    );
    // Past the end: nothing, so the first position to read from, then the last.
    let past = o::stream_options::RevisionOption::Revision(7);
    assert_eq!(
        kinds(read(&mut client, read_with(Some(1), past)).await?),
        ["first 3", "last 2"]
    );
    // Exactly at the next revision is where a forwards reader already is.
    let next = o::stream_options::RevisionOption::Revision(3);
    assert_eq!(
        kinds(read(&mut client, read_with(Some(1), next)).await?),
        ["last 2"]
    );
    let mut missing = read_with(Some(1), start());
    if let Some(o::StreamOption::Stream(stream)) = missing
        .options
        .as_mut()
        .and_then(|options| options.stream_option.as_mut())
    {
        stream.stream_identifier = identifier("never-written");
    }
    assert_eq!(kinds(read(&mut client, missing).await?), ["not found"]);
    server.stop().await
}

/// A proposed `$metadata` event with `data`.
fn metadata_event(event_type: &str, data: &[u8]) -> pb::AppendReq {
    pb::AppendReq {
        content: Some(pb::append_req::Content::ProposedMessage(
            pb::append_req::ProposedMessage {
                id: Some(shared::Uuid {
                    value: Some(shared::uuid::Value::String(
                        uuid::Uuid::new_v4().to_string(),
                    )),
                }),
                metadata: [
                    ("type".to_owned(), event_type.to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ]
                .into_iter()
                .collect(),
                custom_metadata: Vec::new(),
                data: data.to_vec(),
            },
        )),
    }
}

/// An append to `$$orders` with `expected` and `events`.
async fn metadata_append(
    client: &mut StreamsClient<Channel>,
    expected: pb::append_req::options::ExpectedStreamRevision,
    events: Vec<pb::AppendReq>,
) -> Result<pb::AppendResp, tonic::Status> {
    let mut messages = append_messages("$$orders", expected, 0);
    messages.extend(events);
    append(client, messages).await
}

#[tokio::test]
async fn metadata_streams_take_one_metadata_event_at_the_metadata_revision() -> TestResult {
    use pb::append_req::options::ExpectedStreamRevision as E;
    use pb::append_resp::success::{CurrentRevisionOption, PositionOption};
    let (_dir, server, mut client) = started().await?;
    let no_stream = || E::NoStream(shared::Empty {});
    // Never set: an empty append expecting no stream matches and answers "no stream".
    let empty = metadata_append(&mut client, no_stream(), Vec::new()).await?;
    let Some(pb::append_resp::Result::Success(success)) = empty.result else {
        panic!("{empty:?}");
    };
    assert!(matches!(
        success.current_revision_option,
        Some(CurrentRevisionOption::NoStream(_))
    ));
    for (events, expected) in [
        (
            vec![metadata_event("Other", b"{}")],
            "takes only \"$metadata\" events",
        ),
        (
            vec![
                metadata_event("$metadata", b"{}"),
                metadata_event("$metadata", b"{}"),
            ],
            "one event per append, not 2",
        ),
        (
            vec![metadata_event("$metadata", b"[]")],
            "not a JSON object",
        ),
        (
            vec![metadata_event("$metadata", br#"{"$maxCount":"x"}"#)],
            "$maxCount must be an integer",
        ),
    ] {
        let status = metadata_append(&mut client, E::Any(shared::Empty {}), events)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(expected), "{}", status.message());
    }
    let set = metadata_append(
        &mut client,
        no_stream(),
        vec![metadata_event("$metadata", br#"{"$maxCount":2}"#)],
    )
    .await?;
    let Some(pb::append_resp::Result::Success(success)) = set.result else {
        panic!("{set:?}");
    };
    assert_eq!(
        success.current_revision_option,
        Some(CurrentRevisionOption::CurrentRevision(0))
    );
    // Not in `$all`: no position.
    assert!(matches!(
        success.position_option,
        Some(PositionOption::NoPosition(_))
    ));
    let again = metadata_append(
        &mut client,
        no_stream(),
        vec![metadata_event("$metadata", b"{}")],
    )
    .await?;
    assert!(
        matches!(
            again.result,
            Some(pb::append_resp::Result::WrongExpectedVersion(_))
        ),
        "{again:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_metadata_stream_reads_as_one_event_without_a_position_and_is_not_subscribable()
-> TestResult {
    use pb::append_req::options::ExpectedStreamRevision as E;
    use pb::read_req::options as o;
    let (_dir, server, mut client) = started().await?;
    let text = || o::uuid_option::Content::String(shared::Empty {});
    let missing = read(&mut client, read_request("$$orders", text())).await?;
    assert_eq!(answer_kinds(&missing), ["not found"]);
    metadata_append(
        &mut client,
        E::Any(shared::Empty {}),
        vec![metadata_event(
            "$metadata",
            br#"{"$maxCount":2,"owner":"ops"}"#,
        )],
    )
    .await?;
    let mut request = read_request("$$orders", text());
    request.options.as_mut().ok_or("options")?.control_option =
        Some(o::ControlOption { compatibility: 1 });
    let answers = read(&mut client, request.clone()).await?;
    assert_eq!(answer_kinds(&answers), ["e0", "last 0"]);
    let Some(pb::read_resp::Content::Event(event)) = &answers[0].content else {
        panic!("{answers:?}");
    };
    assert!(matches!(
        event.position,
        Some(pb::read_resp::read_event::Position::NoPosition(_))
    ));
    let recorded = event.event.as_ref().ok_or("no event")?;
    assert_eq!(recorded.commit_position, 0);
    assert_eq!(
        recorded.metadata.get("type").map(String::as_str),
        Some("$metadata")
    );
    let json: serde_json::Value = serde_json::from_slice(&recorded.data)?;
    assert_eq!(json, serde_json::json!({"$maxCount": 2, "owner": "ops"}));
    // The same version answers the same id.
    let again = read(&mut client, request).await?;
    let Some(pb::read_resp::Content::Event(same)) = &again[0].content else {
        panic!("{again:?}");
    };
    assert_eq!(same.event.as_ref().map(|e| &e.id), Some(&recorded.id));

    let mut subscribe = read_request("$$orders", text());
    subscribe.options.as_mut().ok_or("options")?.count_option =
        Some(o::CountOption::Subscription(o::SubscriptionOptions {}));
    let status = read(&mut client, subscribe).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    server.stop().await
}

/// An event of type `event_type` for an append, with a fresh id.
fn typed_event(event_type: &str) -> pb::AppendReq {
    let mut metadata = blob_metadata();
    metadata.insert("type".to_owned(), event_type.to_owned());
    pb::AppendReq {
        content: Some(pb::append_req::Content::ProposedMessage(
            pb::append_req::ProposedMessage {
                id: Some(random_id()),
                metadata,
                custom_metadata: Vec::new(),
                data: event_type.as_bytes().to_vec(),
            },
        )),
    }
}

/// Appends one event of each of `types` to `stream`, expecting any revision, and answers the
/// wire position of the last one.
async fn append_typed(
    client: &mut StreamsClient<Channel>,
    stream: &str,
    types: &[&str],
) -> TestResult<u64> {
    use pb::append_req::options::ExpectedStreamRevision as E;
    let mut messages = append_messages(stream, E::Any(shared::Empty {}), 0);
    messages.extend(types.iter().map(|event_type| typed_event(event_type)));
    let answer = append(client, messages).await?;
    let Some(pb::append_resp::Result::Success(success)) = answer.result else {
        return Err(format!("the append to {stream} succeeds: {answer:?}").into());
    };
    match success.position_option {
        Some(pb::append_resp::success::PositionOption::Position(position)) => {
            assert_eq!(position.commit_position, position.prepare_position);
            Ok(position.commit_position)
        }
        other => Err(format!("an append to {stream} has a position: {other:?}").into()),
    }
}

/// A read of `$all` from `from` in `direction`, of at most `count` events, without filter.
fn all_request(
    from: pb::read_req::options::all_options::AllOption,
    direction: pb::read_req::options::ReadDirection,
    count: u64,
) -> pb::ReadReq {
    use pb::read_req::options as o;
    let mut request = read_request("", o::uuid_option::Content::String(shared::Empty {}));
    let options = request
        .options
        .as_mut()
        .expect("read_request sets the options");
    options.stream_option = Some(o::StreamOption::All(o::AllOptions {
        all_option: Some(from),
    }));
    options.read_direction = direction.into();
    options.count_option = Some(o::CountOption::Count(count));
    request
}

/// The `$all` option for a wire position.
fn at_position(commit: u64) -> pb::read_req::options::all_options::AllOption {
    pb::read_req::options::all_options::AllOption::Position(pb::read_req::options::Position {
        commit_position: commit,
        prepare_position: commit,
    })
}

/// One event of a `$all` read: its stream, revision, type and wire position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllEvent {
    stream: String,
    revision: u64,
    event_type: String,
    position: u64,
}

/// The events of `answers`, which must all be events whose commit and prepare positions are
/// one number, also given as the answer's own position.
fn all_events(answers: &[pb::ReadResp]) -> Vec<AllEvent> {
    answers
        .iter()
        .map(|answer| {
            let Some(pb::read_resp::Content::Event(event)) = &answer.content else {
                panic!("only events in a read of $all: {answer:?}");
            };
            let recorded = event.event.as_ref().expect("an event carries its record");
            assert_eq!(
                recorded.commit_position, recorded.prepare_position,
                "{recorded:?}"
            );
            assert_eq!(
                event.position,
                Some(pb::read_resp::read_event::Position::CommitPosition(
                    recorded.commit_position
                )),
                "{event:?}"
            );
            let stream = recorded.stream_identifier.as_ref().expect("a stream");
            AllEvent {
                stream: String::from_utf8(stream.stream_name.clone()).expect("UTF-8 names"),
                revision: recorded.stream_revision,
                event_type: recorded.metadata.get("type").cloned().unwrap_or_default(),
                position: recorded.commit_position,
            }
        })
        .collect()
}

/// `(stream, revision)` of each event.
fn stream_revisions(events: &[AllEvent]) -> Vec<(&str, u64)> {
    events
        .iter()
        .map(|event| (event.stream.as_str(), event.revision))
        .collect()
}

#[tokio::test]
async fn all_reads_walk_positions_in_order_from_either_end() -> TestResult {
    use pb::read_req::options::ReadDirection::{Backwards, Forwards};
    use pb::read_req::options::all_options::AllOption;
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "a", &["A", "A"]).await?;
    append_typed(&mut client, "b", &["B"]).await?;
    let last = append_typed(&mut client, "a", &["A", "A"]).await?;
    let start = || AllOption::Start(shared::Empty {});
    let end = || AllOption::End(shared::Empty {});

    let everything =
        all_events(&read(&mut client, all_request(start(), Forwards, u64::MAX)).await?);
    assert_eq!(
        stream_revisions(&everything),
        [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("a", 3)]
    );
    assert!(everything[0].position > 0, "wire positions start above 0");
    assert!(
        everything.windows(2).all(|w| w[0].position < w[1].position),
        "positions increase forwards: {everything:?}"
    );
    assert_eq!(
        everything[4].position, last,
        "the append answered its position"
    );

    let first_two = all_events(&read(&mut client, all_request(start(), Forwards, 2)).await?);
    assert_eq!(first_two, everything[..2]);
    let last_two = all_events(&read(&mut client, all_request(end(), Backwards, 2)).await?);
    assert_eq!(last_two, [everything[4].clone(), everything[3].clone()]);
    let reversed: Vec<AllEvent> = everything.iter().rev().cloned().collect();
    let backwards = all_events(&read(&mut client, all_request(end(), Backwards, u64::MAX)).await?);
    assert_eq!(backwards, reversed);

    // Forwards from a position includes the event there; backwards, only the ones before.
    let middle = everything[2].position;
    let from_middle =
        all_events(&read(&mut client, all_request(at_position(middle), Forwards, 10)).await?);
    assert_eq!(from_middle, everything[2..]);
    let before_middle =
        all_events(&read(&mut client, all_request(at_position(middle), Backwards, 10)).await?);
    assert_eq!(before_middle, reversed[3..]);
    let one_before =
        all_events(&read(&mut client, all_request(at_position(middle), Backwards, 1)).await?);
    assert_eq!(one_before, [everything[1].clone()]);
    // Nothing lies before the first event; position 0 forwards is the start.
    let first = everything[0].position;
    assert!(
        read(&mut client, all_request(at_position(first), Backwards, 10))
            .await?
            .is_empty()
    );
    assert!(
        read(&mut client, all_request(at_position(0), Backwards, 10))
            .await?
            .is_empty()
    );
    let from_zero =
        all_events(&read(&mut client, all_request(at_position(0), Forwards, 10)).await?);
    assert_eq!(from_zero, everything);
    // Past the end, forwards: nothing.
    assert!(
        read(
            &mut client,
            all_request(at_position(last + 1), Forwards, 10)
        )
        .await?
        .is_empty()
    );
    server.stop().await
}

#[tokio::test]
async fn an_all_read_without_a_filter_option_reads_unfiltered() -> TestResult {
    use pb::read_req::options::ReadDirection::Forwards;
    use pb::read_req::options::all_options::AllOption;
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "a", &["A"]).await?;
    append_typed(&mut client, "b", &["B"]).await?;
    // Go's client leaves the filter option out instead of sending `no_filter`.
    let mut request = all_request(AllOption::Start(shared::Empty {}), Forwards, u64::MAX);
    request.options.as_mut().ok_or("options")?.filter_option = None;
    let events = all_events(&within("a read of $all", read(&mut client, request)).await??);
    assert_eq!(stream_revisions(&events), [("a", 0), ("b", 0)]);
    server.stop().await
}

/// [`all_request`] from the start, forwards, of at most `count` events matching `filter`.
fn filtered_all_request(
    filter: pb::read_req::options::filter_options::Filter,
    count: u64,
) -> pb::ReadReq {
    use pb::read_req::options as o;
    let mut request = all_request(
        o::all_options::AllOption::Start(shared::Empty {}),
        o::ReadDirection::Forwards,
        count,
    );
    request.options.as_mut().expect("options").filter_option =
        Some(o::FilterOption::Filter(o::FilterOptions {
            filter: Some(filter),
            window: Some(o::filter_options::Window::Count(shared::Empty {})),
            checkpoint_interval_multiplier: 1,
        }));
    request
}

#[tokio::test]
async fn filtered_all_reads_keep_only_matching_event_types_or_stream_names() -> TestResult {
    use pb::read_req::options::filter_options::{Expression, Filter};
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "orders-1", &["OrderPlaced", "Note"]).await?;
    append_typed(&mut client, "invoices-1", &["InvoiceSent", "OrderPaid"]).await?;
    append_typed(&mut client, "orders-2", &["OrderPlaced"]).await?;
    append_typed(&mut client, "my-orders-3", &["Note"]).await?;
    let types = |events: &[AllEvent]| -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| (e.stream.clone(), e.event_type.clone()))
            .collect()
    };
    let pairs = |expected: &[(&str, &str)]| -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(s, t)| ((*s).to_owned(), (*t).to_owned()))
            .collect()
    };
    let type_prefix = |prefixes: &[&str]| {
        Filter::EventType(Expression {
            regex: String::new(),
            prefix: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        })
    };

    let orders = all_events(
        &read(
            &mut client,
            filtered_all_request(type_prefix(&["Order"]), 100),
        )
        .await?,
    );
    assert_eq!(
        types(&orders),
        pairs(&[
            ("orders-1", "OrderPlaced"),
            ("invoices-1", "OrderPaid"),
            ("orders-2", "OrderPlaced"),
        ])
    );
    // Any one prefix matching is enough; the count counts matching events only.
    let either = all_events(
        &read(
            &mut client,
            filtered_all_request(type_prefix(&["Invoice", "Note"]), 2),
        )
        .await?,
    );
    assert_eq!(
        types(&either),
        pairs(&[("orders-1", "Note"), ("invoices-1", "InvoiceSent")])
    );

    let stream_regex = Filter::StreamIdentifier(Expression {
        regex: "^orders-".to_owned(),
        prefix: Vec::new(),
    });
    let by_stream = all_events(&read(&mut client, filtered_all_request(stream_regex, 100)).await?);
    assert_eq!(
        types(&by_stream),
        pairs(&[
            ("orders-1", "OrderPlaced"),
            ("orders-1", "Note"),
            ("orders-2", "OrderPlaced"),
        ])
    );
    assert!(
        by_stream.windows(2).all(|w| w[0].position < w[1].position),
        "{by_stream:?}"
    );
    server.stop().await
}

/// The next message of `messages`, failing the test if the stream ends or errs first.
async fn next_answer(
    messages: &mut tonic::Streaming<pb::ReadResp>,
    what: &str,
) -> TestResult<pb::read_resp::Content> {
    let message = within(what, messages.message()).await??;
    let message = message.ok_or_else(|| format!("the subscription ended before {what}"))?;
    message
        .content
        .ok_or_else(|| format!("an answer without content, expecting {what}").into())
}

/// A subscription to `stream` from `from`, as a `Read` request.
fn stream_subscription(
    stream: &str,
    from: pb::read_req::options::stream_options::RevisionOption,
) -> pb::ReadReq {
    use pb::read_req::options as o;
    let mut request = read_request(stream, o::uuid_option::Content::String(shared::Empty {}));
    let options = request.options.as_mut().expect("options");
    options.count_option = Some(o::CountOption::Subscription(o::SubscriptionOptions {}));
    options.stream_option = Some(o::StreamOption::Stream(o::StreamOptions {
        stream_identifier: identifier(stream),
        revision_option: Some(from),
    }));
    request
}

/// The stream revision and wire position of an event answer.
fn revision_and_position(content: &pb::read_resp::Content) -> Option<(u64, u64)> {
    let pb::read_resp::Content::Event(event) = content else {
        return None;
    };
    let recorded = event.event.as_ref()?;
    Some((recorded.stream_revision, recorded.commit_position))
}

#[tokio::test]
async fn a_stream_subscription_confirms_catches_up_then_delivers_live_events() -> TestResult {
    use pb::read_req::options::stream_options::RevisionOption;
    use pb::read_resp::Content;
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "s", &["E", "E"]).await?;
    append_typed(&mut client, "other", &["E"]).await?;
    let mut messages = client
        .read(stream_subscription(
            "s",
            RevisionOption::Start(shared::Empty {}),
        ))
        .await?
        .into_inner();

    let Content::Confirmation(confirmation) =
        next_answer(&mut messages, "the confirmation").await?
    else {
        panic!("a subscription's first message is its confirmation");
    };
    uuid::Uuid::parse_str(&confirmation.subscription_id)?;
    for revision in 0..2 {
        let answer = next_answer(&mut messages, "a catch-up event").await?;
        assert_eq!(
            revision_and_position(&answer).map(|(r, _)| r),
            Some(revision),
            "{answer:?}"
        );
    }
    let caught_up = next_answer(&mut messages, "caught_up").await?;
    assert_eq!(
        caught_up,
        Content::CaughtUp(pb::read_resp::CaughtUp::default())
    );

    // Appended after caught_up, so it can only arrive live; the other stream's never does.
    append_typed(&mut client, "other", &["E"]).await?;
    let position = append_typed(&mut client, "s", &["E"]).await?;
    let live = next_answer(&mut messages, "the live event").await?;
    assert_eq!(
        revision_and_position(&live),
        Some((2, position)),
        "{live:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_stream_subscription_from_a_revision_starts_after_it() -> TestResult {
    use pb::read_req::options::stream_options::RevisionOption;
    use pb::read_resp::Content;
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "s", &["E", "E", "E"]).await?;
    let mut messages = client
        .read(stream_subscription("s", RevisionOption::Revision(0)))
        .await?
        .into_inner();
    assert!(matches!(
        next_answer(&mut messages, "the confirmation").await?,
        Content::Confirmation(_)
    ));
    let mut catch_up = Vec::new();
    loop {
        let answer = next_answer(&mut messages, "catch-up").await?;
        if matches!(answer, Content::CaughtUp(_)) {
            break;
        }
        catch_up.push(revision_and_position(&answer).ok_or("an event")?.0);
    }
    assert_eq!(catch_up, [1, 2]);
    server.stop().await
}

/// The answers a read sends before it ends, and the status it ends with if not OK, whether
/// that comes instead of the response or after some messages.
async fn read_to_end(
    client: &mut StreamsClient<Channel>,
    request: pb::ReadReq,
) -> TestResult<(Vec<pb::ReadResp>, Option<tonic::Status>)> {
    within("a read to end", async {
        let mut messages = match client.read(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), Some(status)),
        };
        let mut received = Vec::new();
        loop {
            match messages.message().await {
                Ok(Some(message)) => received.push(message),
                Ok(None) => return (received, None),
                Err(status) => return (received, Some(status)),
            }
        }
    })
    .await
}

/// Tombstones `stream`, expecting any revision.
async fn tombstone(client: &mut StreamsClient<Channel>, stream: &str) -> TestResult {
    client
        .tombstone(pb::TombstoneReq {
            options: Some(pb::tombstone_req::Options {
                stream_identifier: identifier(stream),
                expected_stream_revision: Some(
                    pb::tombstone_req::options::ExpectedStreamRevision::Any(shared::Empty {}),
                ),
            }),
        })
        .await?;
    Ok(())
}

/// Asserts `status` is KurrentDB's stream-deleted error for `stream`.
fn assert_stream_deleted(status: &tonic::Status, stream: &str) {
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(trailer(status, "exception"), Some("stream-deleted"));
    assert_eq!(trailer(status, "stream-name"), Some(stream));
    assert_eq!(
        status.message(),
        format!("Event stream '{stream}' is deleted.")
    );
}

#[tokio::test]
async fn a_tombstoned_stream_fails_reads_and_subscriptions_before_any_message() -> TestResult {
    use pb::read_req::options as o;
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "gone", &["E", "E"]).await?;
    tombstone(&mut client, "gone").await?;

    let text = || o::uuid_option::Content::String(shared::Empty {});
    let forwards = read_request("gone", text());
    let mut backwards = read_request("gone", text());
    let options = backwards.options.as_mut().ok_or("options")?;
    options.read_direction = o::ReadDirection::Backwards.into();
    options.stream_option = Some(o::StreamOption::Stream(o::StreamOptions {
        stream_identifier: identifier("gone"),
        revision_option: Some(o::stream_options::RevisionOption::End(shared::Empty {})),
    }));
    let mut with_positions = read_request("gone", text());
    with_positions
        .options
        .as_mut()
        .ok_or("options")?
        .control_option = Some(o::ControlOption { compatibility: 1 });
    let subscription = stream_subscription(
        "gone",
        o::stream_options::RevisionOption::Start(shared::Empty {}),
    );
    for (what, request) in [
        ("a forwards read", forwards),
        ("a backwards read", backwards),
        ("a read asking for the stream positions", with_positions),
        ("a subscription", subscription),
    ] {
        let (received, status) = read_to_end(&mut client, request).await?;
        assert_eq!(received.len(), 0, "{what} sends nothing: {received:?}");
        let status = status.unwrap_or_else(|| panic!("{what} fails"));
        assert_stream_deleted(&status, "gone");
    }
    server.stop().await
}

#[tokio::test]
async fn an_event_over_the_size_limit_is_refused_with_its_id_and_size_in_trailers() -> TestResult {
    use pb::append_req::options::ExpectedStreamRevision as E;
    let dir = tempfile::tempdir()?;
    let options = caskade_eventstore::Options {
        max_event_size: 100,
        ..common::options()
    };
    let store = caskade_eventstore::EventStore::open(dir.path(), options)?;
    let server = TestServer::start(store, caskade_server::ServerConfig::default()).await?;
    let mut client = streams(&server).await?;
    let id = uuid::Uuid::new_v4();
    let mut messages = append_messages("big", E::Any(shared::Empty {}), 1);
    if let Some(pb::append_req::Content::ProposedMessage(event)) = &mut messages[1].content {
        event.id = Some(shared::Uuid {
            value: Some(shared::uuid::Value::String(id.to_string())),
        });
        event.data = vec![7; 200];
    }
    let error = append(&mut client, messages)
        .await
        .expect_err("a 200-byte event over a 100-byte limit");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        trailer(&error, "exception"),
        Some("maximum-append-event-size-exceeded")
    );
    assert_eq!(trailer(&error, "maximum-append-event-size"), Some("100"));
    let id_text = id.to_string();
    assert_eq!(trailer(&error, "event-id"), Some(id_text.as_str()));
    let size: usize = trailer(&error, "proposed-append-event-size")
        .ok_or("a proposed-append-event-size trailer")?
        .parse()?;
    assert!(size >= 200, "the size counts the data at least: {size}");
    assert_eq!(
        error.message(),
        format!("Event with Id: {id}, Size: {size}, exceeds Maximum Append Event Size of 100.")
    );
    // Nothing was written.
    let answers = read(
        &mut client,
        read_request(
            "big",
            pb::read_req::options::uuid_option::Content::String(shared::Empty {}),
        ),
    )
    .await?;
    assert_eq!(answer_kinds(&answers), ["not found"]);
    server.stop().await
}

/// A tombstone of `stream` expecting `expected`.
fn tombstone_request(
    stream: &str,
    expected: pb::tombstone_req::options::ExpectedStreamRevision,
) -> pb::TombstoneReq {
    pb::TombstoneReq {
        options: Some(pb::tombstone_req::Options {
            stream_identifier: identifier(stream),
            expected_stream_revision: Some(expected),
        }),
    }
}

#[tokio::test]
async fn a_tombstone_at_the_wrong_revision_fails_with_the_versions_and_keeps_the_stream()
-> TestResult {
    use pb::tombstone_req::options::ExpectedStreamRevision as E;
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "s", &["E", "E"]).await?;

    let error = client
        .tombstone(tombstone_request("s", E::Revision(5)))
        .await
        .expect_err("a tombstone at the wrong revision fails");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    assert_eq!(trailer(&error, "exception"), Some("wrong-expected-version"));
    assert_eq!(trailer(&error, "stream-name"), Some("s"));
    assert_eq!(trailer(&error, "expected-version"), Some("5"));
    assert_eq!(trailer(&error, "actual-version"), Some("1"));
    assert_eq!(
        error.message(),
        "Tombstone failed due to WrongExpectedVersion. Stream: s, Expected version: 5, \
         Actual version: 1"
    );
    // "No stream" is -1 on the wire, for the expected and the actual version alike.
    let error = client
        .tombstone(tombstone_request("s", E::NoStream(shared::Empty {})))
        .await
        .expect_err("the stream exists");
    assert_eq!(trailer(&error, "expected-version"), Some("-1"));
    let error = client
        .tombstone(tombstone_request("never", E::Revision(0)))
        .await
        .expect_err("the stream does not exist");
    assert_eq!(trailer(&error, "actual-version"), Some("-1"));

    let answers = read(
        &mut client,
        read_request(
            "s",
            pb::read_req::options::uuid_option::Content::String(shared::Empty {}),
        ),
    )
    .await?;
    assert_eq!(
        answer_kinds(&answers),
        ["e0", "e1"],
        "the stream is still there"
    );
    server.stop().await
}

#[tokio::test]
async fn a_delete_at_the_wrong_revision_names_the_operation_in_its_message() -> TestResult {
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "s", &["E"]).await?;
    let error = client
        .delete(pb::DeleteReq {
            options: Some(pb::delete_req::Options {
                stream_identifier: identifier("s"),
                expected_stream_revision: Some(
                    pb::delete_req::options::ExpectedStreamRevision::Revision(3),
                ),
            }),
        })
        .await
        .expect_err("a delete at the wrong revision fails");
    assert_eq!(
        error.message(),
        "Delete failed due to WrongExpectedVersion. Stream: s, Expected version: 3, \
         Actual version: 0"
    );
    server.stop().await
}

#[tokio::test]
async fn deleting_or_tombstoning_a_tombstoned_stream_is_stream_deleted() -> TestResult {
    let (_dir, server, mut client) = started().await?;
    append_typed(&mut client, "gone", &["E"]).await?;
    tombstone(&mut client, "gone").await?;
    let delete = client
        .delete(pb::DeleteReq {
            options: Some(pb::delete_req::Options {
                stream_identifier: identifier("gone"),
                expected_stream_revision: Some(
                    pb::delete_req::options::ExpectedStreamRevision::Any(shared::Empty {}),
                ),
            }),
        })
        .await
        .expect_err("a tombstoned stream cannot be deleted");
    assert_stream_deleted(&delete, "gone");
    let again = client
        .tombstone(tombstone_request(
            "gone",
            pb::tombstone_req::options::ExpectedStreamRevision::Any(shared::Empty {}),
        ))
        .await
        .expect_err("a tombstoned stream cannot be tombstoned again");
    assert_stream_deleted(&again, "gone");
    server.stop().await
}

/// The one member `Gossip.Read` reports, asserted alive and leader.
async fn gossip_member(
    server: &TestServer,
) -> TestResult<caskade_proto::kurrentdb::event_store::client::gossip::MemberInfo> {
    use caskade_proto::kurrentdb::event_store::client::gossip as gossip_pb;
    let mut gossip =
        gossip_pb::gossip_client::GossipClient::new(common::channel(server.addr(), None).await?);
    let cluster = gossip.read(shared::Empty {}).await?.into_inner();
    let [member] = <[_; 1]>::try_from(cluster.members)
        .map_err(|members| format!("one member, not {members:?}"))?;
    assert!(member.is_alive, "{member:?}");
    assert_eq!(
        member.state(),
        gossip_pb::member_info::VNodeState::Leader,
        "{member:?}"
    );
    assert!(member.instance_id.is_some(), "{member:?}");
    Ok(member)
}

#[tokio::test]
async fn gossip_reports_one_alive_leader_at_the_advertised_address() -> TestResult {
    let dir = tempfile::tempdir()?;
    let advertised: std::net::SocketAddr = "10.20.30.40:2113".parse()?;
    let config = caskade_server::ServerConfig {
        advertise_addr: Some(advertised),
        ..caskade_server::ServerConfig::default()
    };
    let server = TestServer::start(common::open_store(dir.path())?, config).await?;
    let member = gossip_member(&server).await?;
    let endpoint = member.http_end_point.ok_or("an endpoint")?;
    assert_eq!(endpoint.address, "10.20.30.40");
    assert_eq!(endpoint.port, 2113);
    server.stop().await
}

#[tokio::test]
async fn gossip_without_an_advertised_address_reports_the_listener() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let member = gossip_member(&server).await?;
    let endpoint = member.http_end_point.ok_or("an endpoint")?;
    assert_eq!(endpoint.address, server.addr().ip().to_string());
    assert_eq!(endpoint.port, u32::from(server.addr().port()));
    server.stop().await
}

#[tokio::test]
async fn server_features_list_exactly_the_methods_served_with_their_features() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut features = ServerFeaturesClient::new(common::channel(server.addr(), None).await?);
    let methods = features
        .get_supported_methods(shared::Empty {})
        .await?
        .into_inner();
    assert_eq!(methods.event_store_server_version, "24.10.0");
    let listed: Vec<(&str, &str, Vec<&str>)> = methods
        .methods
        .iter()
        .map(|m| {
            (
                m.service_name.as_str(),
                m.method_name.as_str(),
                m.features.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let streams = "event_store.client.streams.streams";
    let persistent = "event_store.client.persistent_subscriptions.persistentsubscriptions";
    let expected: Vec<(&str, &str, Vec<&str>)> = vec![
        (streams, "read", vec!["position", "events"]),
        (streams, "append", vec![]),
        (streams, "batchappend", vec!["deadline_duration"]),
        (streams, "delete", vec![]),
        (streams, "tombstone", vec![]),
        (persistent, "create", vec!["stream", "all"]),
        (persistent, "update", vec!["stream", "all"]),
        (persistent, "delete", vec!["stream", "all"]),
        (persistent, "read", vec!["stream", "all"]),
        (persistent, "getinfo", vec!["stream", "all"]),
        (persistent, "replayparked", vec!["stream", "all"]),
        (persistent, "list", vec!["stream", "all"]),
        (persistent, "restartsubsystem", vec![]),
        (
            "event_store.client.server_features.serverfeatures",
            "getsupportedmethods",
            vec![],
        ),
        ("event_store.client.gossip.gossip", "read", vec![]),
    ];
    assert_eq!(listed, expected);
    server.stop().await
}
