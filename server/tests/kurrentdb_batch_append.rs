//! `Streams.BatchAppend` against a real server on `127.0.0.1:0`: through KurrentDB's official
//! Rust client (`batch_append`), and at the protocol level with a tonic client of Caskade's
//! own protos, for what the clients of other languages send: chunks, interleaved
//! correlations, deadlines in both encodings, and errors as `google.rpc.Status` details.

mod common;
mod kurrent_helpers;

use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::streams as pb;
use caskade_proto::kurrentdb::event_store::client::streams::streams_client::StreamsClient;
use caskade_proto::kurrentdb::google::rpc::Code;
use common::{TestResult, TestServer, within};
use kurrent_helpers::{blob_metadata, client, downcast, ns, numbered, random_id, read_stream};
use kurrentdb::{
    AppendToStreamOptions, BatchAppendOptions, ReadStreamOptions, StreamState,
    TombstoneStreamOptions,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[tokio::test]
async fn the_rust_clients_batch_appends_are_written_and_checked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let batch = client.batch_append(&BatchAppendOptions::default()).await?;
    let first = batch
        .append_to_stream("orders", StreamState::NoStream, numbered(0, 3))
        .await?;
    assert_eq!(first.stream_name(), "orders");
    assert_eq!(first.current_revision(), Some(2));
    assert_eq!(first.stream_state(), Some(StreamState::NoStream));
    let second = batch
        .append_to_stream("orders", StreamState::StreamRevision(2), numbered(3, 2))
        .await?;
    assert_eq!(second.current_revision(), Some(4));
    let (first, second) = (
        first.current_position().ok_or("no position")?,
        second.current_position().ok_or("no position")?,
    );
    assert!(second.commit > first.commit, "{first:?} {second:?}");
    // Several streams on one call, in flight together.
    let (a, b) = tokio::join!(
        batch.append_to_stream("a", StreamState::Any, numbered(0, 1)),
        batch.append_to_stream("b", StreamState::Any, numbered(0, 2)),
    );
    assert_eq!(a?.current_revision(), Some(0));
    assert_eq!(b?.current_revision(), Some(1));
    // A wrong expected revision is an error for that append.
    let wrong = batch
        .append_to_stream("orders", StreamState::NoStream, numbered(9, 1))
        .await;
    match wrong {
        Err(kurrentdb::Error::Grpc { code, message }) => {
            // The client's own tonic, not this crate's: compare by name.
            assert_eq!(format!("{code:?}"), "AlreadyExists");
            assert_eq!(message, "WrongExpectedVersion");
        }
        other => panic!("expected a wrong expected version, got {other:?}"),
    }
    let events = read_stream(&client, "orders", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [0, 1, 2, 3, 4]);
    server.stop().await
}

/// A protocol-level `BatchAppend` call: requests go in through a channel, answers come out.
struct Call {
    requests: mpsc::Sender<pb::BatchAppendReq>,
    answers: tonic::Streaming<pb::BatchAppendResp>,
}

impl Call {
    async fn open(server: &TestServer) -> TestResult<Call> {
        let channel: Channel = common::channel(server.addr(), None).await?;
        let mut client = StreamsClient::new(channel);
        let (requests, receiver) = mpsc::channel(16);
        let answers = client
            .batch_append(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        Ok(Call { requests, answers })
    }

    async fn send(&self, request: pb::BatchAppendReq) -> TestResult {
        self.requests.send(request).await?;
        Ok(())
    }

    async fn answer(&mut self) -> TestResult<pb::BatchAppendResp> {
        let answer = within("a batch append answer", self.answers.message()).await??;
        Ok(answer.ok_or("the call ended")?)
    }

    /// The status the call ends with, which must come next: no more answers before it.
    async fn end(&mut self) -> TestResult<tonic::Status> {
        match within("the end of the call", self.answers.message()).await? {
            Err(status) => Ok(status),
            Ok(Some(answer)) => Err(format!("an answer instead of the end: {answer:?}").into()),
            Ok(None) => Err("the call ended without an error".into()),
        }
    }
}

fn correlation(n: u16) -> shared::Uuid {
    shared::Uuid {
        value: Some(shared::uuid::Value::String(
            uuid::Uuid::from_u128(u128::from(n) + 1)
                .hyphenated()
                .to_string(),
        )),
    }
}

fn options(
    stream: &str,
    expected: pb::batch_append_req::options::ExpectedStreamPosition,
    deadline: Option<pb::batch_append_req::options::DeadlineOption>,
) -> pb::batch_append_req::Options {
    pb::batch_append_req::Options {
        stream_identifier: Some(shared::StreamIdentifier {
            stream_name: stream.as_bytes().to_vec(),
        }),
        expected_stream_position: Some(expected),
        deadline_option: deadline,
    }
}

/// `count` binary events of `size` bytes.
fn events(count: usize, size: usize) -> Vec<pb::batch_append_req::ProposedMessage> {
    (0..count)
        .map(|_| pb::batch_append_req::ProposedMessage {
            id: Some(random_id()),
            metadata: blob_metadata(),
            custom_metadata: Vec::new(),
            data: vec![7; size],
        })
        .collect()
}

fn chunk(
    n: u16,
    options: Option<pb::batch_append_req::Options>,
    proposed_messages: Vec<pb::batch_append_req::ProposedMessage>,
    is_final: bool,
) -> pb::BatchAppendReq {
    pb::BatchAppendReq {
        correlation_id: Some(correlation(n)),
        options,
        proposed_messages,
        is_final,
    }
}

/// The revision of a successful answer.
fn revision(answer: &pb::BatchAppendResp) -> Option<u64> {
    use pb::batch_append_resp::success::CurrentRevisionOption;
    match &answer.result {
        Some(pb::batch_append_resp::Result::Success(success)) => {
            match success.current_revision_option {
                Some(CurrentRevisionOption::CurrentRevision(revision)) => Some(revision),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The error of an answer: its code, message and detail's type URL.
fn error(answer: &pb::BatchAppendResp) -> Option<(i32, String, String)> {
    match &answer.result {
        Some(pb::batch_append_resp::Result::Error(status)) => Some((
            status.code,
            status.message.clone(),
            status
                .details
                .as_ref()
                .map_or_else(String::new, |any| any.type_url.clone()),
        )),
        _ => None,
    }
}

/// Asserts that `answer` is an error with `code` whose message and detail both name
/// `name`, the way clients match on them.
#[track_caller]
fn assert_error(answer: &pb::BatchAppendResp, code: Code, name: &str) {
    assert_eq!(
        error(answer),
        Some((
            code as i32,
            name.to_owned(),
            format!("type.googleapis.com/event_store.client.{name}")
        )),
        "{answer:?}"
    );
}

/// One append sent whole: options, events and `is_final` in a single chunk.
fn whole(
    n: u16,
    stream: &str,
    expected: pb::batch_append_req::options::ExpectedStreamPosition,
    deadline: Option<pb::batch_append_req::options::DeadlineOption>,
    proposed_messages: Vec<pb::batch_append_req::ProposedMessage>,
) -> pb::BatchAppendReq {
    chunk(
        n,
        Some(options(stream, expected, deadline)),
        proposed_messages,
        true,
    )
}

#[tokio::test]
async fn chunks_of_interleaved_correlations_are_appended_when_final() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut call = Call::open(&server).await?;
    // Two appends in chunks, interleaved; options only on each first chunk.
    call.send(chunk(
        1,
        Some(options("x", E::NoStream(()), None)),
        events(2, 8),
        false,
    ))
    .await?;
    call.send(chunk(
        2,
        Some(options("y", E::Any(()), None)),
        events(1, 8),
        false,
    ))
    .await?;
    call.send(chunk(1, None, events(1, 8), false)).await?;
    call.send(chunk(2, None, events(2, 8), true)).await?;
    let y = call.answer().await?;
    assert_eq!(y.correlation_id, Some(correlation(2)));
    assert_eq!(
        y.stream_identifier.as_ref().map(|s| &s.stream_name[..]),
        Some(&b"y"[..])
    );
    assert_eq!(revision(&y), Some(2));
    call.send(chunk(1, None, events(1, 8), true)).await?;
    let x = call.answer().await?;
    assert_eq!(x.correlation_id, Some(correlation(1)));
    assert_eq!(revision(&x), Some(3), "four events over three chunks");
    assert_eq!(
        x.expected_stream_position,
        Some(pb::batch_append_resp::ExpectedStreamPosition::NoStream(()))
    );
    // The call ends cleanly after the last answer once the requests end.
    drop(call.requests);
    assert!(
        within("the end of the call", call.answers.message())
            .await??
            .is_none()
    );
    server.stop().await
}

/// A server whose appends are at most `max` bytes, and a `BatchAppend` call to it.
async fn small_server(dir: &std::path::Path, max: usize) -> TestResult<(TestServer, Call)> {
    serve(
        dir,
        caskade_eventstore::Options {
            max_append_size: max,
            ..common::options()
        },
    )
    .await
}

/// A server of a store opened in `dir` with `store_options`, and a `BatchAppend` call to it.
async fn serve(
    dir: &std::path::Path,
    store_options: caskade_eventstore::Options,
) -> TestResult<(TestServer, Call)> {
    let store = caskade_eventstore::EventStore::open(dir, store_options)?;
    let server = TestServer::start(store, caskade_server::ServerConfig::default()).await?;
    let call = Call::open(&server).await?;
    Ok((server, call))
}

#[tokio::test]
async fn a_wrong_revision_or_a_bad_request_is_an_answer_with_its_detail() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let (server, mut call) = small_server(dir.path(), 1024).await?;

    call.send(whole(1, "s", E::StreamPosition(5), None, events(1, 8)))
        .await?;
    let wrong = call.answer().await?;
    assert_error(&wrong, Code::AlreadyExists, "WrongExpectedVersion");
    let Some(pb::batch_append_resp::Result::Error(status)) = &wrong.result else {
        panic!("{wrong:?}");
    };
    let detail = shared::WrongExpectedVersion::decode(
        &status.details.as_ref().ok_or("no detail")?.value[..],
    )?;
    assert_eq!(
        detail.current_stream_revision_option,
        Some(shared::wrong_expected_version::CurrentStreamRevisionOption::CurrentNoStream(()))
    );
    assert_eq!(
        detail.expected_stream_position_option,
        Some(
            shared::wrong_expected_version::ExpectedStreamPositionOption::ExpectedStreamPosition(5)
        )
    );

    // No options on a first chunk: a bad request; its later chunks are ignored.
    call.send(chunk(2, None, events(1, 8), false)).await?;
    assert_error(&call.answer().await?, Code::InvalidArgument, "BadRequest");
    call.send(chunk(2, None, events(1, 8), true)).await?;
    // The call goes on.
    call.send(whole(3, "s", E::NoStream(()), None, events(1, 8)))
        .await?;
    assert_eq!(revision(&call.answer().await?), Some(0));
    server.stop().await
}

#[tokio::test]
async fn size_deadline_and_deleted_stream_errors_are_answers_and_write_nothing() -> TestResult {
    use pb::batch_append_req::options::{DeadlineOption, ExpectedStreamPosition as E};
    let dir = tempfile::tempdir()?;
    let max = 1024;
    let (server, mut call) = small_server(dir.path(), max).await?;

    // Over the append size limit, across two chunks.
    call.send(chunk(
        3,
        Some(options("big", E::Any(()), None)),
        events(1, max / 2),
        false,
    ))
    .await?;
    call.send(chunk(3, None, events(1, max / 2 + 1), true))
        .await?;
    assert_error(
        &call.answer().await?,
        Code::InvalidArgument,
        "MaximumAppendSizeExceeded",
    );

    // A deadline already passed, in the absolute encoding older clients send.
    let past = DeadlineOption::Deadline21100(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    call.send(whole(4, "late", E::Any(()), Some(past), events(1, 8)))
        .await?;
    assert_error(&call.answer().await?, Code::DeadlineExceeded, "Timeout");

    // A tombstoned stream.
    let kurrent = client(&server, "esdb")?;
    kurrent
        .append_to_stream("gone", &AppendToStreamOptions::default(), numbered(0, 1))
        .await?;
    kurrent
        .tombstone_stream("gone", &TombstoneStreamOptions::default())
        .await?;
    call.send(whole(5, "gone", E::Any(()), None, events(1, 8)))
        .await?;
    assert_error(&call.answer().await?, Code::NotFound, "StreamDeleted");

    // After all that, the call still appends, and nothing refused was written.
    call.send(whole(6, "s", E::NoStream(()), None, events(1, 8)))
        .await?;
    assert_eq!(revision(&call.answer().await?), Some(0));
    let written = read_stream(&kurrent, "s", &ReadStreamOptions::default()).await?;
    assert_eq!(written.len(), 1);
    for missing in ["big", "late"] {
        let events = read_stream(&kurrent, missing, &ReadStreamOptions::default()).await;
        assert!(
            matches!(downcast(events), Some(kurrentdb::Error::ResourceNotFound)),
            "{missing} was written"
        );
    }
    server.stop().await
}

/// The id of a proposed event, as its text.
fn id_text(event: &pb::batch_append_req::ProposedMessage) -> TestResult<String> {
    match &event.id {
        Some(shared::Uuid {
            value: Some(shared::uuid::Value::String(text)),
        }) => Ok(text.clone()),
        other => Err(format!("not a text id: {other:?}").into()),
    }
}

/// Asserts that `stream` was never written.
async fn assert_not_written(client: &kurrentdb::Client, stream: &str) {
    let events = read_stream(client, stream, &ReadStreamOptions::default()).await;
    assert!(
        matches!(downcast(events), Some(kurrentdb::Error::ResourceNotFound)),
        "{stream} was written"
    );
}

#[tokio::test]
async fn an_event_over_the_event_size_limit_is_answered_with_its_id_and_sizes() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let max = 1024;
    let (server, mut call) = serve(
        dir.path(),
        caskade_eventstore::Options {
            max_event_size: max,
            ..common::options()
        },
    )
    .await?;

    // A small event, then one over the event limit (the append as a whole is well under
    // the append limit).
    let mut proposed = events(1, 8);
    proposed.extend(events(1, max + 1));
    let too_large = id_text(&proposed[1])?;
    call.send(whole(1, "big", E::Any(()), None, proposed))
        .await?;
    let refused = call.answer().await?;
    assert_eq!(refused.correlation_id, Some(correlation(1)));
    assert_error(
        &refused,
        Code::InvalidArgument,
        "MaximumAppendEventSizeExceeded",
    );
    let Some(pb::batch_append_resp::Result::Error(status)) = &refused.result else {
        panic!("{refused:?}");
    };
    let detail = shared::MaximumAppendEventSizeExceeded::decode(
        &status.details.as_ref().ok_or("no detail")?.value[..],
    )?;
    assert_eq!(detail.event_id, too_large, "the id of the second event");
    assert_eq!(detail.max_append_event_size, u32::try_from(max)?);
    assert!(
        detail.proposed_event_size > detail.max_append_event_size,
        "{detail:?}"
    );

    // The call goes on, and neither event of the refused append was written.
    call.send(whole(2, "s", E::NoStream(()), None, events(1, 8)))
        .await?;
    assert_eq!(revision(&call.answer().await?), Some(0));
    let kurrent = client(&server, "esdb")?;
    assert_not_written(&kurrent, "big").await;
    server.stop().await
}

#[tokio::test]
async fn an_append_retried_with_the_same_ids_and_revision_is_written_once() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut call = Call::open(&server).await?;

    let first = events(3, 8);
    call.send(whole(1, "retried", E::NoStream(()), None, first.clone()))
        .await?;
    let original = call.answer().await?;
    assert_eq!(revision(&original), Some(2));
    call.send(whole(2, "retried", E::NoStream(()), None, first))
        .await?;
    let retried = call.answer().await?;
    assert_eq!(retried.correlation_id, Some(correlation(2)));
    assert_eq!(revision(&retried), Some(2));
    assert_eq!(
        retried.result, original.result,
        "the same revision and position"
    );

    // From an exact revision too.
    let second = events(2, 8);
    call.send(whole(
        3,
        "retried",
        E::StreamPosition(2),
        None,
        second.clone(),
    ))
    .await?;
    let original = call.answer().await?;
    assert_eq!(revision(&original), Some(4));
    call.send(whole(4, "retried", E::StreamPosition(2), None, second))
        .await?;
    let retried = call.answer().await?;
    assert_eq!(
        retried.result, original.result,
        "the same revision and position"
    );
    assert_eq!(
        retried.expected_stream_position,
        Some(pb::batch_append_resp::ExpectedStreamPosition::StreamPosition(2))
    );

    let kurrent = client(&server, "esdb")?;
    let read = read_stream(&kurrent, "retried", &ReadStreamOptions::default()).await?;
    assert_eq!(read.len(), 5, "each event written once");
    server.stop().await
}

#[tokio::test]
async fn a_retry_in_flight_with_its_original_is_written_once() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    // Synced appends, so the retry may find its original still in flight.
    let mut store_options = common::options();
    store_options.engine.sync = caskade_engine::SyncPolicy::Always;
    let (server, mut call) = serve(dir.path(), store_options).await?;

    // Both sent before either is answered: whichever the store takes second repeats the
    // first, in flight or published.
    let proposed = events(3, 8);
    call.send(whole(1, "raced", E::NoStream(()), None, proposed.clone()))
        .await?;
    call.send(whole(2, "raced", E::NoStream(()), None, proposed))
        .await?;
    let (a, b) = (call.answer().await?, call.answer().await?);
    let answered = [&a, &b].map(|answer| answer.correlation_id.clone());
    assert!(
        answered.contains(&Some(correlation(1))) && answered.contains(&Some(correlation(2))),
        "one answer each: {answered:?}"
    );
    assert_eq!(revision(&a), Some(2), "{a:?}");
    assert_eq!(a.result, b.result, "the same revision and position");

    let kurrent = client(&server, "esdb")?;
    let read = read_stream(&kurrent, "raced", &ReadStreamOptions::default()).await?;
    assert_eq!(read.len(), 3, "each event written once");
    server.stop().await
}

#[tokio::test]
async fn a_duration_deadline_appends_and_a_zero_one_is_a_timeout() -> TestResult {
    use pb::batch_append_req::options::{DeadlineOption, ExpectedStreamPosition as E};
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut call = Call::open(&server).await?;
    let after = |seconds| {
        Some(DeadlineOption::Deadline(prost_types::Duration {
            seconds,
            nanos: 0,
        }))
    };

    call.send(whole(1, "timely", E::NoStream(()), after(5), events(2, 8)))
        .await?;
    let answer = call.answer().await?;
    assert_eq!(answer.correlation_id, Some(correlation(1)));
    assert_eq!(revision(&answer), Some(1));

    call.send(whole(2, "late", E::Any(()), after(0), events(1, 8)))
        .await?;
    let late = call.answer().await?;
    assert_eq!(late.correlation_id, Some(correlation(2)));
    assert_error(&late, Code::DeadlineExceeded, "Timeout");

    let kurrent = client(&server, "esdb")?;
    let timely = read_stream(&kurrent, "timely", &ReadStreamOptions::default()).await?;
    assert_eq!(timely.len(), 2);
    assert_not_written(&kurrent, "late").await;
    server.stop().await
}

#[tokio::test]
async fn a_request_without_a_correlation_id_ends_the_call_after_the_answers_due() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut call = Call::open(&server).await?;

    // An append in flight, an early failure, then the request that cannot be answered.
    call.send(whole(1, "s", E::NoStream(()), None, events(1, 8)))
        .await?;
    call.send(chunk(2, None, events(1, 8), true)).await?;
    let mut anonymous = whole(3, "never", E::Any(()), None, events(1, 8));
    anonymous.correlation_id = None;
    call.send(anonymous).await?;

    let mut answers = [call.answer().await?, call.answer().await?];
    answers.sort_by_key(|answer| answer.correlation_id != Some(correlation(1)));
    assert_eq!(answers[0].correlation_id, Some(correlation(1)));
    assert_eq!(revision(&answers[0]), Some(0));
    assert_eq!(answers[1].correlation_id, Some(correlation(2)));
    assert_error(&answers[1], Code::InvalidArgument, "BadRequest");
    let ended = call.end().await?;
    assert_eq!(ended.code(), tonic::Code::InvalidArgument, "{ended:?}");

    let kurrent = client(&server, "esdb")?;
    let written = read_stream(&kurrent, "s", &ReadStreamOptions::default()).await?;
    assert_eq!(written.len(), 1);
    assert_not_written(&kurrent, "never").await;
    server.stop().await
}

#[tokio::test]
async fn a_shutdown_ends_an_open_call_unavailable_and_keeps_what_it_answered() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let mut store_options = common::options();
    store_options.engine.sync = caskade_engine::SyncPolicy::Always;
    let (mut server, mut call) = serve(dir.path(), store_options).await?;

    let proposed = events(2, 8);
    let ids = proposed
        .iter()
        .map(|event| Ok(uuid::Uuid::parse_str(&id_text(event)?)?))
        .collect::<TestResult<Vec<_>>>()?;
    call.send(whole(1, "kept", E::NoStream(()), None, proposed))
        .await?;
    assert_eq!(revision(&call.answer().await?), Some(1));

    server.trigger_shutdown();
    let ended = call.end().await?;
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    drop(call);
    server.join().await?;

    let store = caskade_eventstore::EventStore::open(dir.path(), common::options())?;
    let stored = store.read_stream_to_vec("kept")?;
    assert_eq!(
        stored.iter().map(|event| event.id).collect::<Vec<_>>(),
        ids,
        "the answered append, once"
    );
    store.close()?;
    Ok(())
}

#[tokio::test]
async fn a_call_gathers_a_bounded_number_of_appends_at_once() -> TestResult {
    use caskade_server::kurrent::MAX_GATHERING;
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut call = Call::open(&server).await?;
    let open = u16::try_from(MAX_GATHERING)?;
    for n in 0..open {
        let stream = format!("open-{n}");
        call.send(chunk(
            n,
            Some(options(&stream, E::Any(()), None)),
            events(1, 8),
            false,
        ))
        .await?;
    }
    // One more first chunk is refused at once, naming the limit.
    call.send(chunk(
        open,
        Some(options("one-too-many", E::Any(()), None)),
        events(1, 8),
        false,
    ))
    .await?;
    let refused = call.answer().await?;
    assert_eq!(refused.correlation_id, Some(correlation(open)));
    assert_error(&refused, Code::InvalidArgument, "BadRequest");
    let Some(pb::batch_append_resp::Result::Error(status)) = &refused.result else {
        panic!("{refused:?}");
    };
    let detail =
        shared::BadRequest::decode(&status.details.as_ref().ok_or("no detail")?.value[..])?;
    assert!(
        detail.message.contains(&MAX_GATHERING.to_string()),
        "{}",
        detail.message
    );
    // The refused correlation is not remembered (so that refusals cannot grow the call's
    // state): its final chunk, without options, is a bad first chunk.
    call.send(chunk(open, None, events(1, 8), true)).await?;
    let again = call.answer().await?;
    assert_eq!(again.correlation_id, Some(correlation(open)));
    assert_error(&again, Code::InvalidArgument, "BadRequest");
    // The open ones still complete, and then there is room again.
    call.send(chunk(0, None, events(1, 8), true)).await?;
    assert_eq!(
        revision(&call.answer().await?),
        Some(1),
        "open-0 got both its events"
    );
    call.send(whole(
        open + 1,
        "room-again",
        E::NoStream(()),
        None,
        events(1, 8),
    ))
    .await?;
    assert_eq!(revision(&call.answer().await?), Some(0));
    let kurrent = client(&server, "esdb")?;
    assert_not_written(&kurrent, "one-too-many").await;
    server.stop().await
}

#[tokio::test]
async fn the_appends_open_on_a_call_hold_at_most_one_appends_size_between_them() -> TestResult {
    use pb::batch_append_req::options::ExpectedStreamPosition as E;
    let dir = tempfile::tempdir()?;
    let max = 1024;
    let (server, mut call) = small_server(dir.path(), max).await?;
    let open = |n, stream: &str| {
        chunk(
            n,
            Some(options(stream, E::Any(()), None)),
            events(1, 600),
            false,
        )
    };
    call.send(open(1, "first")).await?;
    // A second open append of 600 bytes would make 1,200 held at once, over one append's 1,024.
    call.send(open(2, "second")).await?;
    let refused = call.answer().await?;
    assert_eq!(refused.correlation_id, Some(correlation(2)));
    assert_error(&refused, Code::InvalidArgument, "BadRequest");
    // The first completes; then there is room for another.
    call.send(chunk(1, None, Vec::new(), true)).await?;
    assert_eq!(revision(&call.answer().await?), Some(0));
    call.send(open(3, "third")).await?;
    call.send(chunk(3, None, Vec::new(), true)).await?;
    assert_eq!(revision(&call.answer().await?), Some(0));
    let kurrent = client(&server, "esdb")?;
    assert_not_written(&kurrent, "second").await;
    server.stop().await
}
