//! The gRPC API end to end: a real server on `127.0.0.1:0` driven by the generated clients.
//! Appends and reads (one stream and `$all`, both directions, `from`/`max_count`, filters),
//! optimistic concurrency, idempotent retries, catch-up and live subscriptions, soft delete
//! and tombstone, metadata, the stream list, the key-value space and the admin calls.

mod common;

use std::collections::BTreeSet;

use caskade_eventstore::{EventStore, Options};
use caskade_proto::v1 as pb;
use caskade_server::ServerConfig;
use common::{
    Authed, TestResult, TestServer, append, exact, json_event, n_of, no_stream, numbered, read,
    read_all, read_stream, stream_exists, within,
};
use serde_json::json;
use tonic::Code;

type Streams = pb::streams_client::StreamsClient<Authed>;

fn versions(events: &[pb::RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

fn positions(events: &[pb::RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

fn read_from(
    mut request: pb::ReadRequest,
    direction: pb::Direction,
    at: Option<u64>,
    max_count: u64,
) -> pb::ReadRequest {
    request.direction = direction.into();
    request.from = at.map(pb::read_request::From::At);
    request.max_count = max_count;
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_then_read_a_stream_forwards_and_backwards() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;

    let sent = numbered("ItemAdded", 0, 5);
    let response = client
        .append(append("cart-1", no_stream(), sent.clone()))
        .await?
        .into_inner();
    assert_eq!(response.next_expected_version, 4);
    assert_eq!((response.first_position, response.last_position), (0, 4));

    let events = read(&mut client, read_stream("cart-1")).await?;
    assert_eq!(versions(&events), [0, 1, 2, 3, 4]);
    for (event, data) in events.iter().zip(&sent) {
        assert_eq!(event.id, data.id);
        assert_eq!(event.stream, "cart-1");
        assert_eq!(event.r#type, "ItemAdded");
        assert_eq!(event.content_type, i32::from(pb::ContentType::Json));
        assert_eq!(event.data, data.data);
        assert_eq!(event.position, event.version);
        assert!(event.recorded_at_micros > 0, "recorded_at is set");
    }

    let backwards = read_from(read_stream("cart-1"), pb::Direction::Backwards, None, 0);
    assert_eq!(
        versions(&read(&mut client, backwards).await?),
        [4, 3, 2, 1, 0]
    );
    let middle = read_from(read_stream("cart-1"), pb::Direction::Forwards, Some(2), 2);
    assert_eq!(versions(&read(&mut client, middle).await?), [2, 3]);
    let down_from = read_from(read_stream("cart-1"), pb::Direction::Backwards, Some(2), 0);
    assert_eq!(versions(&read(&mut client, down_from).await?), [2, 1, 0]);
    let newest_two = read_from(read_stream("cart-1"), pb::Direction::Backwards, None, 2);
    assert_eq!(versions(&read(&mut client, newest_two).await?), [4, 3]);
    let clamped = read_from(read_stream("cart-1"), pb::Direction::Backwards, Some(99), 2);
    assert_eq!(versions(&read(&mut client, clamped).await?), [4, 3]);
    let past_end = read_from(read_stream("cart-1"), pb::Direction::Forwards, Some(9), 0);
    assert!(read(&mut client, past_end).await?.is_empty());
    assert!(
        read(&mut client, read_stream("never-written"))
            .await?
            .is_empty()
    );

    // Binary data and metadata come back byte for byte.
    let binary = pb::EventData {
        id: uuid::Uuid::new_v4().to_string(),
        r#type: "Blob".into(),
        content_type: pb::ContentType::Binary.into(),
        data: vec![0, 255, 1, 254],
        metadata: b"not json either \xff".to_vec(),
    };
    client
        .append(append("blobs", None, vec![binary.clone()]))
        .await?;
    let blobs = read(&mut client, read_stream("blobs")).await?;
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].content_type, i32::from(pb::ContentType::Binary));
    assert_eq!(
        (&blobs[0].data, &blobs[0].metadata),
        (&binary.data, &binary.metadata)
    );
    assert_eq!(blobs[0].position, 5);
    server.stop().await
}

/// A read of more events than one message holds (512) comes back in several messages, every
/// event intact: the sized codec encodes each whole message into one reserved buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_spanning_several_messages_returns_every_event_intact() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    let mut sent = Vec::new();
    for batch in 0..3 {
        let events = numbered("Counted", batch * 500, 500);
        let expected = if batch == 0 {
            no_stream()
        } else {
            exact(batch * 500 - 1)
        };
        client
            .append(append("counter", expected, events.clone()))
            .await?;
        sent.extend(events);
    }
    let mut messages = client.read(read_stream("counter")).await?.into_inner();
    let mut sizes = Vec::new();
    let mut events = Vec::new();
    while let Some(message) = messages.message().await? {
        sizes.push(message.events.len());
        events.extend(message.events);
    }
    assert!(sizes.len() >= 3, "1,500 events in one message: {sizes:?}");
    assert_eq!(events.len(), sent.len());
    for (version, (event, data)) in events.iter().zip(&sent).enumerate() {
        assert_eq!(event.version, version as u64);
        assert_eq!((&event.id, &event.data), (&data.id, &data.data));
        assert_eq!(
            (event.stream.as_str(), event.r#type.as_str()),
            ("counter", "Counted")
        );
    }
    let all = read(&mut client, read_all()).await?;
    assert_eq!(positions(&all), (0..1500).collect::<Vec<u64>>());
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_walks_every_stream_in_position_order_and_filters() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    // Positions 0..9, interleaving three streams and three types.
    let plan = [
        ("user-1", "UserCreated"),
        ("order-1", "OrderPlaced"),
        ("user-2", "UserCreated"),
        ("user-1", "UserRenamed"),
        ("order-1", "OrderShipped"),
        ("user-2", "UserDeleted"),
        ("order-2", "OrderPlaced"),
        ("user-1", "UserRenamed"),
        ("order-2", "OrderCancelled"),
    ];
    for (n, (stream, event_type)) in plan.iter().enumerate() {
        let event = json_event(event_type, &json!({ "n": n }));
        client.append(append(stream, None, vec![event])).await?;
    }

    let all = read(&mut client, read_all()).await?;
    assert_eq!(positions(&all), (0..9).collect::<Vec<_>>());
    for (event, (stream, event_type)) in all.iter().zip(&plan) {
        assert_eq!(
            (event.stream.as_str(), event.r#type.as_str()),
            (*stream, *event_type)
        );
    }
    assert_eq!(versions(&all), [0, 0, 0, 1, 1, 1, 0, 2, 1]);

    let backwards = read_from(read_all(), pb::Direction::Backwards, None, 0);
    assert_eq!(
        positions(&read(&mut client, backwards).await?),
        (0..9).rev().collect::<Vec<_>>()
    );
    let window = read_from(read_all(), pb::Direction::Forwards, Some(3), 4);
    assert_eq!(positions(&read(&mut client, window).await?), [3, 4, 5, 6]);
    let down = read_from(read_all(), pb::Direction::Backwards, Some(4), 3);
    assert_eq!(positions(&read(&mut client, down).await?), [4, 3, 2]);

    let filtered = |filter: pb::Filter| pb::ReadRequest {
        filter: Some(filter),
        ..read_all()
    };
    let users = read(
        &mut client,
        filtered(pb::Filter {
            stream_prefix: "user-".into(),
            ..pb::Filter::default()
        }),
    )
    .await?;
    assert_eq!(positions(&users), [0, 2, 3, 5, 7]);
    let placed = read(
        &mut client,
        filtered(pb::Filter {
            event_type_prefix: "OrderP".into(),
            ..pb::Filter::default()
        }),
    )
    .await?;
    assert_eq!(positions(&placed), [1, 6]);
    let regex = read(
        &mut client,
        filtered(pb::Filter {
            event_type_regex: "^(UserCreated|OrderCancelled)$".into(),
            ..pb::Filter::default()
        }),
    )
    .await?;
    assert_eq!(positions(&regex), [0, 2, 8]);
    let both = read(
        &mut client,
        pb::ReadRequest {
            direction: pb::Direction::Backwards.into(),
            max_count: 2,
            ..filtered(pb::Filter {
                stream_prefix: "user-1".into(),
                event_type_prefix: "UserRenamed".into(),
                ..pb::Filter::default()
            })
        },
    )
    .await?;
    assert_eq!(positions(&both), [7, 3]);
    server.stop().await
}

#[tokio::test]
async fn filters_take_lists_of_prefixes_and_a_stream_regex() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    // Positions 0..4.
    let plan = [
        ("user-1", "UserCreated"),
        ("order-1", "OrderPlaced"),
        ("user-2", "UserCreated"),
        ("order-2", "OrderCancelled"),
    ];
    for (stream, event_type) in plan {
        let event = json_event(event_type, &json!({}));
        client.append(append(stream, None, vec![event])).await?;
    }
    let filtered = |filter: pb::Filter| pb::ReadRequest {
        filter: Some(filter),
        ..read_all()
    };
    let lists = [
        pb::Filter {
            stream_prefixes: vec!["user-2".into(), "order-2".into()],
            ..pb::Filter::default()
        },
        pb::Filter {
            stream_regex: "^order-".into(),
            ..pb::Filter::default()
        },
        pb::Filter {
            event_type_prefix: "UserC".into(),
            event_type_prefixes: vec!["OrderC".into()],
            ..pb::Filter::default()
        },
    ];
    let mut found = Vec::new();
    for filter in lists {
        found.push(positions(&read(&mut client, filtered(filter)).await?));
    }
    assert_eq!(found, [vec![2, 3], vec![1, 3], vec![0, 2, 3]]);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_expecting_the_same_version_let_exactly_one_win() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut setup = server.streams().await?;
    setup
        .append(append(
            "account-7",
            no_stream(),
            numbered("Deposited", 0, 3),
        ))
        .await?;

    for round in 0..5_u64 {
        // Two clients on two connections, both expecting the current version.
        let expected = 2 + round;
        let mut first = server.streams().await?;
        let mut second = server.streams().await?;
        let (a, b) = within("two racing appends", async {
            tokio::join!(
                first.append(append("account-7", exact(expected), numbered("A", 0, 1))),
                second.append(append("account-7", exact(expected), numbered("B", 0, 1))),
            )
        })
        .await?;
        let (winner, loser) = match (a, b) {
            (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
            (a, b) => return Err(format!("expected one winner, got {a:?} and {b:?}").into()),
        };
        assert_eq!(winner.into_inner().next_expected_version, expected + 1);
        assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
        let message = loser.message();
        assert!(
            message.contains(&format!("expected {expected}"))
                && message.contains(&format!("actual {}", expected + 1)),
            "the message names the expected and actual versions: {message:?}"
        );
    }
    let events = read(&mut setup, read_stream("account-7")).await?;
    assert_eq!(versions(&events), (0..8).collect::<Vec<_>>());
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_an_append_with_the_same_ids_writes_nothing_new() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("other", None, numbered("Noise", 0, 2)))
        .await?;

    let batch = numbered("Paid", 0, 3);
    let first = client
        .append(append("invoice-1", no_stream(), batch.clone()))
        .await?
        .into_inner();
    // A retry after a lost reply: same ids, same expected version.
    let retry = client
        .append(append("invoice-1", no_stream(), batch.clone()))
        .await?
        .into_inner();
    assert_eq!(retry, first);
    // With `any` the retry is recognised too.
    let any = client
        .append(append("invoice-1", None, batch.clone()))
        .await?
        .into_inner();
    assert_eq!(any, first);
    assert_eq!((first.first_position, first.last_position), (2, 4));

    let events = read(&mut client, read_stream("invoice-1")).await?;
    assert_eq!(versions(&events), [0, 1, 2]);
    let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    let sent: Vec<_> = batch.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, sent);
    assert_eq!(read(&mut client, read_all()).await?.len(), 5);

    // The same ids expected at a different place are not a retry: a conflict.
    let status = client
        .append(append("invoice-1", exact(0), batch))
        .await
        .expect_err("the stream is at version 2, not 0");
    assert_eq!(status.code(), Code::FailedPrecondition);
    server.stop().await
}

/// `start` is the oldest event and `end` the newest, and a read includes the one it starts
/// at: all four combinations of edge and direction, on a stream and on `$all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_start_or_end_include_the_edge_event_in_both_directions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("other", None, numbered("Noise", 0, 2)))
        .await?;
    client
        .append(append("cart-2", None, numbered("ItemAdded", 0, 4)))
        .await?;
    let edge = |mut request: pb::ReadRequest, direction: pb::Direction, end: bool| {
        request.direction = direction.into();
        request.from = Some(if end {
            pb::read_request::From::End(pb::Empty {})
        } else {
            pb::read_request::From::Start(pb::Empty {})
        });
        request
    };
    let (forwards, backwards) = (pb::Direction::Forwards, pb::Direction::Backwards);
    let cases = [
        (forwards, false, vec![0, 1, 2, 3], vec![0, 1, 2, 3, 4, 5]),
        (forwards, true, vec![3], vec![5]),
        (backwards, true, vec![3, 2, 1, 0], vec![5, 4, 3, 2, 1, 0]),
        (backwards, false, vec![0], vec![0]),
    ];
    for (direction, end, stream_versions, all_positions) in cases {
        let stream = read(&mut client, edge(read_stream("cart-2"), direction, end)).await?;
        assert_eq!(
            versions(&stream),
            stream_versions,
            "{direction:?} end={end}"
        );
        let all = read(&mut client, edge(read_all(), direction, end)).await?;
        assert_eq!(
            positions(&all),
            all_positions,
            "$all {direction:?} end={end}"
        );
    }
    server.stop().await
}

/// Eight clients send the same append (same ids, `exact`) at the same moment, under
/// `SyncPolicy::Always` so that the repeats arrive while the original is being synced: all
/// get the original's response, and the events are written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_appends_sent_at_once_all_get_the_original_response() -> TestResult {
    const SENDERS: usize = 8;
    let dir = tempfile::tempdir()?;
    let mut options = common::options();
    options.engine.sync = caskade_engine::SyncPolicy::Always;
    let server = TestServer::start(
        EventStore::open(dir.path(), options)?,
        ServerConfig::default(),
    )
    .await?;
    let mut setup = server.streams().await?;
    setup
        .append(append("order-9", no_stream(), numbered("Placed", 0, 5)))
        .await?;
    let mut clients = Vec::new();
    for _ in 0..SENDERS {
        clients.push(server.streams().await?);
    }
    for round in 0..10u64 {
        let batch = numbered("Paid", round, 2);
        let expected = exact(4 + 2 * round);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(SENDERS));
        let sends: Vec<_> = clients
            .iter()
            .cloned()
            .map(|mut client| {
                let (request, barrier) = (
                    append("order-9", expected, batch.clone()),
                    std::sync::Arc::clone(&barrier),
                );
                tokio::spawn(async move {
                    barrier.wait().await;
                    client
                        .append(request)
                        .await
                        .map(tonic::Response::into_inner)
                })
            })
            .collect();
        let mut responses = Vec::new();
        for send in sends {
            responses.push(send.await??);
        }
        assert!(
            responses.iter().all(|r| *r == responses[0]),
            "round {round}"
        );
    }
    let events = read(&mut setup, read_stream("order-9")).await?;
    assert_eq!(versions(&events), (0..25).collect::<Vec<_>>());
    server.stop().await
}

/// Subscribes and returns the response stream.
async fn subscribe(
    client: &mut Streams,
    request: pb::SubscribeRequest,
) -> TestResult<tonic::Streaming<pb::SubscribeResponse>> {
    Ok(within("subscribing", client.subscribe(request))
        .await??
        .into_inner())
}

/// What a subscription delivered: its events and where `caught_up` came among them.
#[derive(Default)]
struct Delivered {
    events: Vec<pb::RecordedEvent>,
    /// For each `caught_up` message, how many events came before it.
    caught_up_after: Vec<usize>,
}

/// Reads the subscription until `count` events have arrived.
async fn take_events(
    messages: &mut tonic::Streaming<pb::SubscribeResponse>,
    count: usize,
    delivered: &mut Delivered,
) -> TestResult {
    within("subscription events", async {
        while delivered.events.len() < count {
            let message = messages
                .message()
                .await?
                .ok_or("the subscription ended early")?;
            match message.message.ok_or("an empty subscription message")? {
                pb::subscribe_response::Message::Event(event) => delivered.events.push(event),
                pb::subscribe_response::Message::CaughtUp(_) => {
                    delivered.caught_up_after.push(delivered.events.len());
                }
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await?
}

/// Reads the subscription until its `caught_up` message and returns the events before it.
async fn until_caught_up(
    messages: &mut tonic::Streaming<pb::SubscribeResponse>,
) -> TestResult<Vec<pb::RecordedEvent>> {
    within("caught_up", async {
        let mut events = Vec::new();
        loop {
            let message = messages
                .message()
                .await?
                .ok_or("the subscription ended early")?;
            match message.message.ok_or("an empty subscription message")? {
                pb::subscribe_response::Message::Event(event) => events.push(event),
                pb::subscribe_response::Message::CaughtUp(_) => {
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(events);
                }
            }
        }
    })
    .await?
}

fn subscribe_all(from: Option<pb::subscribe_request::From>) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        target: Some(pb::subscribe_request::Target::All(pb::Empty {})),
        from,
        filter: None,
    }
}

fn subscribe_stream(
    stream: &str,
    from: Option<pb::subscribe_request::From>,
) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        target: Some(pb::subscribe_request::Target::Stream(stream.to_owned())),
        from,
        filter: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_to_all_catches_up_then_goes_live_with_no_gap_or_duplicate() -> TestResult {
    const STORED: usize = 30;
    const LIVE_APPENDS: u64 = 40;
    const PER_APPEND: u64 = 3;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    for n in 0..STORED as u64 {
        let stream = format!("stored-{}", n % 4);
        client
            .append(append(&stream, None, numbered("Stored", n, 1)))
            .await?;
    }

    let mut messages = subscribe(&mut client, subscribe_all(None)).await?;
    // Another client appends while the subscription catches up and after it has.
    let mut writer = server.streams().await?;
    let appender = tokio::spawn(async move {
        for n in 0..LIVE_APPENDS {
            let stream = format!("live-{}", n % 3);
            writer
                .append(append(
                    &stream,
                    None,
                    numbered("Live", n * PER_APPEND, PER_APPEND),
                ))
                .await?;
        }
        Ok::<_, tonic::Status>(())
    });

    let total = STORED + (LIVE_APPENDS * PER_APPEND) as usize;
    let mut delivered = Delivered::default();
    take_events(&mut messages, total, &mut delivered).await?;
    within("the appender", appender).await???;

    assert_eq!(delivered.caught_up_after.len(), 1, "caught_up is sent once");
    assert!(
        delivered.caught_up_after[0] >= STORED,
        "every event stored before subscribing comes before caught_up"
    );
    assert_eq!(
        positions(&delivered.events),
        (0..total as u64).collect::<Vec<_>>(),
        "events in position order, no gap, no duplicate"
    );
    let all = read(&mut client, read_all()).await?;
    let key = |e: &pb::RecordedEvent| (e.position, e.id.clone(), e.stream.clone(), e.version);
    assert_eq!(
        delivered.events.iter().map(key).collect::<Vec<_>>(),
        all.iter().map(key).collect::<Vec<_>>(),
        "the subscription saw exactly what $all holds"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscription_delivers_only_its_stream_in_version_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("watched", None, numbered("Before", 0, 3)))
        .await?;
    client
        .append(append("ignored", None, numbered("Noise", 0, 2)))
        .await?;

    let mut messages = subscribe(&mut client, subscribe_stream("watched", None)).await?;
    assert_eq!(versions(&until_caught_up(&mut messages).await?), [0, 1, 2]);
    for n in 3..8 {
        client
            .append(append("ignored", None, numbered("Noise", n, 1)))
            .await?;
        client
            .append(append("watched", exact(n - 1), numbered("After", n, 1)))
            .await?;
    }
    let mut delivered = Delivered::default();
    take_events(&mut messages, 5, &mut delivered).await?;
    assert!(delivered.caught_up_after.is_empty(), "caught_up only once");
    assert_eq!(versions(&delivered.events), [3, 4, 5, 6, 7]);
    assert!(delivered.events.iter().all(|e| e.stream == "watched"));
    for event in &delivered.events {
        assert_eq!(n_of(event)?, event.version);
    }

    // `after` resumes behind a version already processed.
    let after = Some(pb::subscribe_request::From::After(5));
    let mut resumed = subscribe(&mut client, subscribe_stream("watched", after)).await?;
    assert_eq!(versions(&until_caught_up(&mut resumed).await?), [6, 7]);
    // A stream not written yet: caught up at once, then its first event.
    let mut fresh = subscribe(&mut client, subscribe_stream("later", None)).await?;
    assert!(until_caught_up(&mut fresh).await?.is_empty());
    client
        .append(append("later", no_stream(), numbered("First", 0, 1)))
        .await?;
    let mut first = Delivered::default();
    take_events(&mut fresh, 1, &mut first).await?;
    assert_eq!(
        (first.events[0].stream.as_str(), first.events[0].version),
        ("later", 0)
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_from_now_and_after_skip_what_they_should() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("s", None, numbered("Old", 0, 4)))
        .await?;

    let now = Some(pb::subscribe_request::From::Now(pb::Empty {}));
    let mut live_all = subscribe(&mut client, subscribe_all(now)).await?;
    let mut live_stream = subscribe(&mut client, subscribe_stream("s", now)).await?;
    assert!(until_caught_up(&mut live_all).await?.is_empty());
    assert!(until_caught_up(&mut live_stream).await?.is_empty());

    let after = Some(pb::subscribe_request::From::After(1));
    let mut from_two = subscribe(&mut client, subscribe_all(after)).await?;
    assert_eq!(positions(&until_caught_up(&mut from_two).await?), [2, 3]);

    client
        .append(append("s", exact(3), numbered("New", 4, 2)))
        .await?;
    for messages in [&mut live_all, &mut live_stream, &mut from_two] {
        let mut delivered = Delivered::default();
        take_events(messages, 2, &mut delivered).await?;
        assert_eq!(positions(&delivered.events), [4, 5]);
        assert_eq!(versions(&delivered.events), [4, 5]);
        assert!(delivered.events.iter().all(|e| e.r#type == "New"));
    }

    // A filtered `$all` subscription sees only matching events, live too.
    let filtered = pb::SubscribeRequest {
        filter: Some(pb::Filter {
            event_type_prefix: "Match".into(),
            ..pb::Filter::default()
        }),
        ..subscribe_all(None)
    };
    let mut matching = subscribe(&mut client, filtered).await?;
    assert!(until_caught_up(&mut matching).await?.is_empty());
    client
        .append(append(
            "t",
            None,
            vec![
                json_event("Skip", &json!({})),
                json_event("Matched", &json!({})),
            ],
        ))
        .await?;
    let mut delivered = Delivered::default();
    take_events(&mut matching, 1, &mut delivered).await?;
    assert_eq!(
        (
            delivered.events[0].r#type.as_str(),
            delivered.events[0].position
        ),
        ("Matched", 7)
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deleted_stream_reads_empty_and_a_later_append_continues_its_versions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("cart", None, numbered("Added", 0, 3)))
        .await?;

    let wrong = client
        .delete(pb::DeleteRequest {
            stream: "cart".into(),
            expected_version: exact(0),
        })
        .await
        .expect_err("the stream is at version 2");
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    client
        .delete(pb::DeleteRequest {
            stream: "cart".into(),
            expected_version: exact(2),
        })
        .await?;
    assert!(read(&mut client, read_stream("cart")).await?.is_empty());
    let info = client
        .get_metadata(pb::GetMetadataRequest {
            stream: "cart".into(),
        })
        .await?
        .into_inner()
        .info
        .ok_or("a deleted stream still has a head")?;
    assert_eq!(info.state, i32::from(pb::StreamState::Deleted));
    assert_eq!(info.last_version, Some(2));

    let revived = client
        .append(append("cart", no_stream(), numbered("Added", 3, 1)))
        .await?
        .into_inner();
    assert_eq!(revived.next_expected_version, 3);
    let events = read(&mut client, read_stream("cart")).await?;
    assert_eq!(versions(&events), [3]);
    assert_eq!(
        read(&mut client, read_all()).await?.len(),
        1,
        "$all hides the deleted events too"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstoned_stream_is_not_found_for_reads_and_appends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("gone", None, numbered("E", 0, 2)))
        .await?;
    client
        .tombstone(pb::TombstoneRequest {
            stream: "gone".into(),
            expected_version: stream_exists(),
        })
        .await?;

    let read_error = client
        .read(read_stream("gone"))
        .await
        .expect_err("a tombstoned stream cannot be read");
    assert_eq!(read_error.code(), Code::NotFound, "{read_error:?}");
    let append_error = client
        .append(append("gone", None, numbered("E", 2, 1)))
        .await
        .expect_err("a tombstoned stream cannot be written");
    assert_eq!(append_error.code(), Code::NotFound, "{append_error:?}");
    let again = client
        .tombstone(pb::TombstoneRequest {
            stream: "gone".into(),
            expected_version: None,
        })
        .await
        .expect_err("a tombstone is final");
    assert_eq!(again.code(), Code::NotFound);
    let info = client
        .get_metadata(pb::GetMetadataRequest {
            stream: "gone".into(),
        })
        .await?
        .into_inner()
        .info
        .ok_or("a tombstoned stream is listed")?;
    assert_eq!(info.state, i32::from(pb::StreamState::Tombstoned));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_round_trips_and_its_retention_applies_to_reads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    let none = client
        .get_metadata(pb::GetMetadataRequest {
            stream: "unknown".into(),
        })
        .await?
        .into_inner();
    assert_eq!(none.info, None, "a stream never written has no info");

    client
        .append(append("log", None, numbered("Line", 0, 5)))
        .await?;
    let metadata = pb::StreamMetadata {
        max_count: Some(2),
        max_age_seconds: Some(86_400),
        truncate_before: None,
        custom_json: r#"{"owner":"ops","tags":["a","b"]}"#.into(),
    };
    client
        .set_metadata(pb::SetMetadataRequest {
            stream: "log".into(),
            expected_version: exact(4),
            metadata: Some(metadata.clone()),
        })
        .await?;
    let info = client
        .get_metadata(pb::GetMetadataRequest {
            stream: "log".into(),
        })
        .await?
        .into_inner()
        .info
        .ok_or("the stream exists")?;
    assert_eq!(info.name, "log");
    assert_eq!(info.last_version, Some(4));
    assert_eq!(info.state, i32::from(pb::StreamState::Live));
    let got = info.metadata.ok_or("metadata is always present")?;
    assert_eq!(
        (got.max_count, got.max_age_seconds, got.truncate_before),
        (Some(2), Some(86_400), None)
    );
    let custom: serde_json::Value = serde_json::from_str(&got.custom_json)?;
    assert_eq!(custom, json!({"owner": "ops", "tags": ["a", "b"]}));

    // max_count 2 keeps only the newest two events visible.
    assert_eq!(
        versions(&read(&mut client, read_stream("log")).await?),
        [3, 4]
    );
    client
        .set_metadata(pb::SetMetadataRequest {
            stream: "log".into(),
            expected_version: None,
            metadata: Some(pb::StreamMetadata {
                truncate_before: Some(1),
                ..pb::StreamMetadata::default()
            }),
        })
        .await?;
    assert_eq!(
        versions(&read(&mut client, read_stream("log")).await?),
        [1, 2, 3, 4]
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_streams_reports_every_stream_with_its_version_and_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    assert!(common::list_streams(&mut client).await?.is_empty());
    client
        .append(append("b-live", None, numbered("E", 0, 3)))
        .await?;
    client
        .append(append("a-deleted", None, numbered("E", 0, 1)))
        .await?;
    client
        .append(append("c-tombstoned", None, numbered("E", 0, 2)))
        .await?;
    client
        .delete(pb::DeleteRequest {
            stream: "a-deleted".into(),
            expected_version: None,
        })
        .await?;
    client
        .tombstone(pb::TombstoneRequest {
            stream: "c-tombstoned".into(),
            expected_version: None,
        })
        .await?;
    let streams = common::list_streams(&mut client).await?;
    let summary: Vec<_> = streams
        .iter()
        .map(|s| (s.name.as_str(), s.last_version, s.state))
        .collect();
    assert_eq!(
        summary,
        [
            ("a-deleted", Some(0), i32::from(pb::StreamState::Deleted)),
            ("b-live", Some(2), i32::from(pb::StreamState::Live)),
            (
                "c-tombstoned",
                Some(1),
                i32::from(pb::StreamState::Tombstoned)
            ),
        ]
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_put_get_delete_and_keys_stay_apart_from_streams() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut kv = server.kv().await?;
    let mut streams = server.streams().await?;
    streams
        .append(append("user-1", None, numbered("E", 0, 2)))
        .await?;

    let get = |key: &[u8]| pb::GetRequest { key: key.to_vec() };
    assert_eq!(kv.get(get(b"user-1")).await?.into_inner().value, None);
    for (key, value) in [
        (&b"user-1"[..], &b"kv value"[..]),
        (b"user-2", b""),
        (b"config/a", b"\x00\xff"),
    ] {
        kv.put(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .await?;
    }
    assert_eq!(
        kv.get(get(b"user-1")).await?.into_inner().value.as_deref(),
        Some(&b"kv value"[..])
    );
    assert_eq!(
        kv.get(get(b"user-2")).await?.into_inner().value.as_deref(),
        Some(&b""[..]),
        "an empty value is a value"
    );
    kv.put(pb::PutRequest {
        key: b"user-1".to_vec(),
        value: b"overwritten".to_vec(),
    })
    .await?;
    assert_eq!(
        kv.get(get(b"user-1")).await?.into_inner().value.as_deref(),
        Some(&b"overwritten"[..])
    );

    let keys = |prefix: &[u8]| pb::KeysRequest {
        prefix: prefix.to_vec(),
    };
    assert_eq!(
        kv_keys(&mut kv, keys(b"")).await?,
        BTreeSet::from([b"user-1".to_vec(), b"user-2".to_vec(), b"config/a".to_vec()]),
        "only key-value keys are listed, no event-store key"
    );
    assert_eq!(
        kv_keys(&mut kv, keys(b"user")).await?,
        BTreeSet::from([b"user-1".to_vec(), b"user-2".to_vec()])
    );

    kv.delete(pb::KvDeleteRequest {
        key: b"user-1".to_vec(),
    })
    .await?;
    kv.delete(pb::KvDeleteRequest {
        key: b"never-set".to_vec(),
    })
    .await?;
    assert_eq!(kv.get(get(b"user-1")).await?.into_inner().value, None);

    // The stream of the same name is untouched by all of that.
    let events = read(&mut streams, read_stream("user-1")).await?;
    assert_eq!(versions(&events), [0, 1]);
    server.stop().await
}

async fn kv_keys(
    kv: &mut pb::kv_client::KvClient<Authed>,
    request: pb::KeysRequest,
) -> TestResult<BTreeSet<Vec<u8>>> {
    within("a key listing", async {
        let mut keys = kv.keys(request).await?.into_inner();
        let mut out = BTreeSet::new();
        while let Some(key) = keys.message().await? {
            assert!(out.insert(key.key), "each key is listed once");
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stats_and_merge_report_the_store_and_keep_its_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut options = common::options();
    options.engine.max_file_size = 4096;
    let server = TestServer::start(
        EventStore::open(dir.path(), options)?,
        ServerConfig::default(),
    )
    .await?;
    let mut admin = server.admin().await?;
    let mut kv = server.kv().await?;
    let mut streams = server.streams().await?;

    let empty = admin.stats(pb::StatsRequest {}).await?.into_inner();
    assert_eq!(
        (empty.live_keys, empty.streams, empty.committed_position),
        (0, 0, 0)
    );

    streams
        .append(append("s", None, numbered("E", 0, 3)))
        .await?;
    for round in 0..60_u8 {
        kv.put(pb::PutRequest {
            key: b"counter".to_vec(),
            value: vec![round; 100],
        })
        .await?;
    }
    let before = admin.stats(pb::StatsRequest {}).await?.into_inner();
    // 3 events, 1 `$all` entry (one per append), 1 stream head, 1 key-value entry.
    assert_eq!(before.live_keys, 6);
    assert_eq!((before.streams, before.committed_position), (1, 3));
    assert!(
        before.files.len() > 1,
        "small files rotate: {:?}",
        before.files
    );
    assert_eq!(
        before.files.iter().filter(|f| f.active).count(),
        1,
        "one active file"
    );
    assert!(
        before.files.last().is_some_and(|f| f.active),
        "the newest file is active"
    );
    let dead_before: u64 = before.files.iter().map(|f| f.dead_bytes).sum();
    assert!(
        dead_before > 59 * 100,
        "59 overwritten values are dead bytes"
    );

    let report = admin.merge(pb::MergeRequest {}).await?.into_inner();
    assert!(report.input_files > 0, "{report:?}");
    assert!(report.bytes_written < report.bytes_read, "{report:?}");

    let after = admin.stats(pb::StatsRequest {}).await?.into_inner();
    assert_eq!(after.live_keys, 6);
    let dead_after: u64 = after.files.iter().map(|f| f.dead_bytes).sum();
    assert!(
        dead_after < dead_before / 10,
        "{dead_after} vs {dead_before}"
    );
    assert_eq!(
        versions(&read(&mut streams, read_stream("s")).await?),
        [0, 1, 2]
    );
    let value = kv
        .get(pb::GetRequest {
            key: b"counter".to_vec(),
        })
        .await?
        .into_inner()
        .value;
    assert_eq!(value, Some(vec![59; 100]));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_backup_copies_a_store_that_opens_offline() -> TestResult {
    let dir = tempfile::tempdir()?;
    let backups = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut streams = server.streams().await?;
    let mut admin = server.admin().await?;
    let mut kv = server.kv().await?;
    let sent = numbered("Saved", 0, 4);
    streams.append(append("doc-1", None, sent.clone())).await?;
    kv.put(pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    })
    .await?;

    let destination = backups.path().join("backup-1");
    let report = admin
        .backup(pb::BackupRequest {
            destination: destination.to_str().ok_or("temp paths are UTF-8")?.into(),
        })
        .await?
        .into_inner();
    assert!(report.data_files >= 1 && report.bytes > 0, "{report:?}");
    // The server keeps serving after a backup.
    streams
        .append(append("doc-1", exact(3), numbered("Later", 4, 1)))
        .await?;

    let copy = EventStore::open(&destination, common::options())?;
    let events = copy.read_stream_to_vec("doc-1")?;
    assert_eq!(
        events.len(),
        4,
        "the backup holds what was there when it ran"
    );
    for (event, data) in events.iter().zip(&sent) {
        assert_eq!(event.id.to_string(), data.id);
        assert_eq!(event.data, data.data);
    }
    assert_eq!(copy.kv().get(b"k")?, Some(b"v".to_vec()));
    assert_eq!(copy.committed_position().0, 4);
    copy.close()?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stats_file_lengths_cover_their_live_and_dead_bytes() -> TestResult {
    // `caskade serve --sync never` is a supported configuration: writes are buffered.
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut admin = server.admin().await?;
    let mut kv = server.kv().await?;
    for round in 0..10_u8 {
        kv.put(pb::PutRequest {
            key: vec![b'k', round],
            value: vec![round; 100],
        })
        .await?;
    }
    let stats = admin.stats(pb::StatsRequest {}).await?.into_inner();
    let live: u64 = stats.files.iter().map(|f| f.live_bytes).sum();
    assert!(live >= 10 * 100, "{stats:?}");
    for file in &stats.files {
        assert!(
            file.len >= file.live_bytes + file.dead_bytes,
            "a file's length (header included) is at least its live and dead bytes: {file:?}"
        );
    }
    server.stop().await
}

/// With events of up to 64 KiB and messages of at most 1 MiB, twenty 60 KB events are more
/// than one message holds: reads of the stream and of `$all`, both ways, come back whole in
/// several messages, each within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_larger_than_the_message_limit_come_back_in_messages_within_it() -> TestResult {
    const MAX_MESSAGE: usize = 1 << 20;
    let dir = tempfile::tempdir()?;
    let options = Options {
        max_event_size: 64 << 10,
        ..common::options()
    };
    let config = ServerConfig {
        max_message_size: MAX_MESSAGE,
        ..ServerConfig::default()
    };
    let server = TestServer::start(EventStore::open(dir.path(), options)?, config).await?;
    let mut client = server.streams().await?;
    for n in 0..20 {
        let big = json_event("Big", &json!({ "n": n, "blob": "x".repeat(60_000) }));
        client.append(append("big", None, vec![big])).await?;
    }
    let mut requests = Vec::new();
    for direction in [pb::Direction::Forwards, pb::Direction::Backwards] {
        requests.push(read_from(read_stream("big"), direction, None, 0));
        requests.push(read_from(read_all(), direction, None, 0));
    }
    for request in requests {
        let mut messages = within("a large read", client.read(request.clone()))
            .await??
            .into_inner();
        let mut events = Vec::new();
        let mut message_count = 0;
        while let Some(message) = within("a read message", messages.message()).await?? {
            assert!(
                prost::Message::encoded_len(&message) <= MAX_MESSAGE,
                "a message over the limit"
            );
            message_count += 1;
            events.extend(message.events);
        }
        assert_eq!(events.len(), 20, "{request:?}");
        assert!(
            message_count > 1,
            "twenty 60 KB events need more than one message"
        );
    }
    server.stop().await
}

/// Thousands of streams under a 16 KiB message limit: `ListStreams` streams them all, in name
/// order, in messages each within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_streams_pages_a_large_store_within_the_message_limit() -> TestResult {
    const STREAMS: usize = 3000;
    const MAX_MESSAGE: usize = 16 << 10;
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), common::options_for_messages_of(MAX_MESSAGE))?;
    let mut names = Vec::new();
    for n in 0..STREAMS {
        let name = format!("customer-{n:05}-with-a-longish-stream-name");
        let event = caskade_eventstore::EventData::binary("Created", b"x".to_vec());
        store.append(
            &name,
            caskade_eventstore::ExpectedVersion::NoStream,
            &[event],
        )?;
        names.push(name);
    }
    let config = ServerConfig {
        max_message_size: MAX_MESSAGE,
        ..ServerConfig::default()
    };
    let server = TestServer::start(store, config).await?;
    let mut client = server.streams().await?;
    let mut messages = client
        .list_streams(pb::ListStreamsRequest {})
        .await?
        .into_inner();
    let mut listed = Vec::new();
    let mut message_count = 0;
    while let Some(message) = within("a list message", messages.message()).await?? {
        assert!(prost::Message::encoded_len(&message) <= MAX_MESSAGE);
        message_count += 1;
        listed.extend(message.streams.into_iter().map(|s| s.name));
    }
    assert_eq!(listed, names, "every stream, in name order");
    assert!(message_count > 1);
    server.stop().await
}

/// Fills a store with `streams` streams of ten events and deletes all but the first.
async fn mostly_deleted(client: &mut Streams, streams: usize) -> TestResult {
    for n in 0..streams {
        let stream = format!("order-{n}");
        client
            .append(append(&stream, None, numbered("E", 0, 10)))
            .await?;
        if n > 0 {
            client
                .delete(pb::DeleteRequest {
                    stream,
                    expected_version: None,
                })
                .await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_scavenge_streams_progress_and_removes_deleted_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    mostly_deleted(&mut client, 20).await?;
    let shown = read(&mut client, read_all()).await?;
    assert_eq!(shown.len(), 10);

    let mut admin = server.admin().await?;
    let mut messages = within("a scavenge", admin.scavenge(pb::ScavengeRequest {}))
        .await??
        .into_inner();
    let mut last = None;
    while let Some(message) = within("scavenge progress", messages.message()).await?? {
        assert!(last.is_none(), "nothing follows the message marked done");
        if message.done {
            last = Some(message);
        }
    }
    let last = last.ok_or("the last message is marked done")?;
    assert_eq!(last.events_removed, 190);
    assert_eq!(last.streams_examined, 20);
    assert!(last.bytes_reclaimed > 0, "{last:?}");
    assert_eq!(
        read(&mut client, read_all()).await?,
        shown,
        "reads unchanged"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_scavenges_on_its_own_at_the_configured_interval() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        scavenge_interval: Some(std::time::Duration::from_millis(20)),
        ..ServerConfig::default()
    };
    let server = TestServer::start(common::open_store(dir.path())?, config).await?;
    let mut client = server.streams().await?;
    mostly_deleted(&mut client, 20).await?;
    let mut admin = server.admin().await?;
    // 10 live events, 20 heads and their `$all` entries are what a scavenge leaves.
    within("an automatic scavenge", async {
        loop {
            let stats = admin.stats(pb::StatsRequest {}).await?.into_inner();
            if stats.live_keys <= 60 {
                return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await??;
    assert_eq!(read(&mut client, read_all()).await?.len(), 10);
    server.stop().await
}
