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

#[tokio::test]
async fn a_wrong_expected_revision_on_append_is_answered_in_band_in_both_field_sets() -> TestResult
{
    use pb::append_req::options::ExpectedStreamRevision as E;
    use pb::append_resp::wrong_expected_version as w;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = streams(&server).await?;
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
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = streams(&server).await?;
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
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = streams(&server).await?;
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

#[tokio::test]
async fn server_features_list_the_methods_served_in_lower_case() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut features = ServerFeaturesClient::new(common::channel(server.addr(), None).await?);
    let methods = features
        .get_supported_methods(shared::Empty {})
        .await?
        .into_inner();
    let version: Vec<u64> = methods
        .event_store_server_version
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    assert_eq!(version.len(), 3, "{}", methods.event_store_server_version);
    let listed: Vec<(String, String)> = methods
        .methods
        .iter()
        .map(|m| (m.service_name.clone(), m.method_name.clone()))
        .collect();
    for (service, method) in [
        ("event_store.client.streams.streams", "read"),
        ("event_store.client.streams.streams", "append"),
        ("event_store.client.streams.streams", "delete"),
        ("event_store.client.streams.streams", "tombstone"),
        ("event_store.client.streams.streams", "batchappend"),
        ("event_store.client.gossip.gossip", "read"),
    ] {
        assert!(
            listed.contains(&(service.to_owned(), method.to_owned())),
            "{service}/{method} in {listed:?}"
        );
    }
    // What is not served is not listed: .NET and Node route appends by this list.
    assert!(
        !listed
            .iter()
            .any(|(service, _)| service.contains("persistent") || service.contains("v2")),
        "{listed:?}"
    );
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
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = streams(&server).await?;
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
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = streams(&server).await?;
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
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = streams(&server).await?;
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
