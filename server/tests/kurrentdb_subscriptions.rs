//! Catch-up subscriptions and server-side filters through KurrentDB's official Rust client
//! (`kurrentdb` from crates.io), unmodified, against a real server on `127.0.0.1:0`: the
//! confirmation first, catch-up then `caught_up` then live events, exclusive starts, a
//! stream that does not exist yet, a tombstoned one, filtered `$all` subscriptions with
//! checkpoints that can be resumed from, and filtered reads with the clients' default
//! regular expression and a .NET-style look-ahead.

mod common;
mod kurrent_helpers;

use common::{TestResult, TestServer, within};
use kurrent_helpers::{client, n_of, numbered, read_all};
use kurrentdb::{
    AppendToStreamOptions, Client, EventData, Position, ReadAllOptions, StreamPosition,
    SubscribeToAllOptions, SubscribeToStreamOptions, Subscription, SubscriptionEvent,
    SubscriptionFilter, TombstoneStreamOptions,
};

async fn next(subscription: &mut Subscription) -> TestResult<SubscriptionEvent> {
    Ok(within(
        "a subscription message",
        subscription.next_subscription_event(),
    )
    .await??)
}

/// What a subscription said, compactly: `n` of each event, `CaughtUp`, checkpoints'
/// commit positions.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Event(u64),
    CaughtUp,
    Checkpoint(u64),
}

async fn said(subscription: &mut Subscription) -> TestResult<Said> {
    Ok(match next(subscription).await? {
        SubscriptionEvent::EventAppeared(event) => Said::Event(n_of(&event)?),
        SubscriptionEvent::CaughtUp(_) => Said::CaughtUp,
        SubscriptionEvent::Checkpoint(position) => Said::Checkpoint(position.commit),
        SubscriptionEvent::Confirmed(_) => return Err("a second confirmation".into()),
        other => return Err(format!("unexpected {other:?}").into()),
    })
}

/// Takes `count` messages, checkpoints included.
async fn take(subscription: &mut Subscription, count: usize) -> TestResult<Vec<Said>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(said(subscription).await?);
    }
    Ok(out)
}

/// Takes messages until `count` events arrived, dropping checkpoints and `CaughtUp`.
async fn events(subscription: &mut Subscription, count: usize) -> TestResult<Vec<u64>> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        if let Said::Event(n) = said(subscription).await? {
            out.push(n);
        }
    }
    Ok(out)
}

async fn confirmed(subscription: &mut Subscription) -> TestResult {
    match next(subscription).await? {
        SubscriptionEvent::Confirmed(id) => {
            uuid::Uuid::parse_str(&id)?;
            Ok(())
        }
        other => Err(format!("the first message was {other:?}, not a confirmation").into()),
    }
}

async fn append(client: &Client, stream: &str, events: Vec<EventData>) -> TestResult<u64> {
    let written = client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await?;
    Ok(written.position.commit)
}

#[tokio::test]
async fn a_stream_subscription_confirms_catches_up_then_goes_live() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    append(&client, "orders", numbered(0, 3)).await?;

    let options = SubscribeToStreamOptions::default().start_from(StreamPosition::Start);
    let mut from_start = client.subscribe_to_stream("orders", &options).await;
    confirmed(&mut from_start).await?;
    assert_eq!(
        take(&mut from_start, 4).await?,
        [
            Said::Event(0),
            Said::Event(1),
            Said::Event(2),
            Said::CaughtUp
        ]
    );
    // A revision is the last one processed: the subscription starts after it.
    let options = SubscribeToStreamOptions::default().start_from(StreamPosition::Position(1));
    let mut after_one = client.subscribe_to_stream("orders", &options).await;
    confirmed(&mut after_one).await?;
    assert_eq!(
        take(&mut after_one, 2).await?,
        [Said::Event(2), Said::CaughtUp]
    );
    let options = SubscribeToStreamOptions::default().start_from(StreamPosition::End);
    let mut from_end = client.subscribe_to_stream("orders", &options).await;
    confirmed(&mut from_end).await?;
    assert_eq!(take(&mut from_end, 1).await?, [Said::CaughtUp]);

    append(&client, "orders", numbered(3, 2)).await?;
    for subscription in [&mut from_start, &mut after_one, &mut from_end] {
        assert_eq!(events(subscription, 2).await?, [3, 4]);
    }
    server.stop().await
}

#[tokio::test]
async fn a_subscription_to_a_missing_stream_waits_for_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let mut subscription = client
        .subscribe_to_stream("later", &SubscribeToStreamOptions::default())
        .await;
    confirmed(&mut subscription).await?;
    assert_eq!(take(&mut subscription, 1).await?, [Said::CaughtUp]);
    append(&client, "later", numbered(7, 1)).await?;
    assert_eq!(events(&mut subscription, 1).await?, [7]);
    server.stop().await
}

#[tokio::test]
async fn a_subscription_to_a_tombstoned_stream_fails_as_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    append(&client, "gone", numbered(0, 1)).await?;
    client
        .tombstone_stream("gone", &TombstoneStreamOptions::default())
        .await?;
    let mut subscription = client
        .subscribe_to_stream("gone", &SubscribeToStreamOptions::default())
        .await;
    let error = within(
        "the subscription's failure",
        subscription.next_subscription_event(),
    )
    .await?
    .expect_err("a tombstoned stream cannot be subscribed to");
    assert!(
        matches!(error, kurrentdb::Error::ResourceDeleted),
        "{error:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn an_all_subscription_starts_after_a_position_and_sees_every_stream() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let first = append(&client, "a", numbered(0, 2)).await?;
    append(&client, "b", numbered(2, 2)).await?;

    let mut from_start = client
        .subscribe_to_all(&SubscribeToAllOptions::default())
        .await;
    confirmed(&mut from_start).await?;
    assert_eq!(
        take(&mut from_start, 5).await?,
        [
            Said::Event(0),
            Said::Event(1),
            Said::Event(2),
            Said::Event(3),
            Said::CaughtUp
        ]
    );
    // `first` is the position of the first append's last event.
    let position = Position {
        commit: first,
        prepare: first,
    };
    let options = SubscribeToAllOptions::default().position(StreamPosition::Position(position));
    let mut after_first = client.subscribe_to_all(&options).await;
    confirmed(&mut after_first).await?;
    assert_eq!(
        take(&mut after_first, 3).await?,
        [Said::Event(2), Said::Event(3), Said::CaughtUp]
    );
    append(&client, "c", numbered(4, 1)).await?;
    assert_eq!(events(&mut from_start, 1).await?, [4]);
    assert_eq!(events(&mut after_first, 1).await?, [4]);
    server.stop().await
}

#[tokio::test]
async fn a_filtered_all_subscription_checkpoints_through_what_it_skips() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    // 300 events no filter below wants, with one wanted event in the middle.
    append(&client, "noise-1", numbered(0, 150)).await?;
    append(&client, "orders-1", numbered(150, 1)).await?;
    append(&client, "noise-2", numbered(151, 149)).await?;

    let filter = SubscriptionFilter::on_stream_name()
        .add_prefix("orders-")
        .add_prefix("invoices-")
        .max(10);
    let options = SubscribeToAllOptions::default().filter(filter.clone());
    let mut subscription = client.subscribe_to_all(&options).await;
    confirmed(&mut subscription).await?;
    let mut wanted = Vec::new();
    let mut checkpoints = Vec::new();
    loop {
        match said(&mut subscription).await? {
            Said::Event(n) => wanted.push(n),
            Said::Checkpoint(commit) => checkpoints.push(commit),
            Said::CaughtUp => break,
        }
    }
    assert_eq!(wanted, [150]);
    // The client asks for a window of 10 and a multiplier of 1: a checkpoint every 10
    // positions examined, the last covering the whole log before going live.
    let every_ten: Vec<u64> = (1..=30).map(|n| n * 10).collect();
    assert_eq!(checkpoints, every_ten);

    // Resuming from a checkpoint loses nothing that matches after it.
    append(&client, "invoices-9", numbered(300, 1)).await?;
    assert_eq!(events(&mut subscription, 1).await?, [300]);
    let resume = Position {
        commit: checkpoints[0],
        prepare: checkpoints[0],
    };
    let options = SubscribeToAllOptions::default()
        .filter(filter)
        .position(StreamPosition::Position(resume));
    let mut resumed = client.subscribe_to_all(&options).await;
    confirmed(&mut resumed).await?;
    let expected: &[u64] = if checkpoints[0] < 151 {
        &[150, 300]
    } else {
        &[300]
    };
    assert_eq!(events(&mut resumed, expected.len()).await?, expected);
    server.stop().await
}

#[tokio::test]
async fn filtered_reads_take_prefixes_the_default_regex_and_look_aheads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let typed = |event_type: &str, n: u64| {
        EventData::json(event_type, &serde_json::json!({ "n": n })).expect("JSON")
    };
    append(
        &client,
        "orders-1",
        vec![
            typed("Placed", 0),
            typed("$internal", 1),
            typed("Shipped", 2),
        ],
    )
    .await?;
    append(&client, "carts-1", vec![typed("Placed", 3)]).await?;

    let read = |filter| ReadAllOptions::default().filter(filter);
    let wanted = |events: Vec<kurrentdb::ResolvedEvent>| -> TestResult<Vec<u64>> {
        events.iter().map(n_of).collect()
    };
    let by_default = SubscriptionFilter::on_event_type().exclude_system_events();
    assert_eq!(
        wanted(read_all(&client, &read(by_default)).await?)?,
        [0, 2, 3]
    );
    let look_ahead = SubscriptionFilter::on_event_type().regex(r"^(?!Placed$)");
    assert_eq!(wanted(read_all(&client, &read(look_ahead)).await?)?, [1, 2]);
    let prefixes = SubscriptionFilter::on_stream_name()
        .add_prefix("carts-")
        .add_prefix("nothing-");
    assert_eq!(wanted(read_all(&client, &read(prefixes)).await?)?, [3]);
    let stream_regex = SubscriptionFilter::on_stream_name().regex(r"^orders-\d$");
    assert_eq!(
        wanted(read_all(&client, &read(stream_regex)).await?)?,
        [0, 1, 2]
    );

    let broken = SubscriptionFilter::on_stream_name().regex("orders-(");
    let error = read_all(&client, &read(broken))
        .await
        .expect_err("a regex that does not compile is refused");
    let error = error.downcast::<kurrentdb::Error>()?;
    assert!(
        matches!(&*error, kurrentdb::Error::Grpc { code, message }
            if format!("{code:?}") == "InvalidArgument" && message.contains("\"orders-(\"")),
        "{error:?}"
    );
    server.stop().await
}
