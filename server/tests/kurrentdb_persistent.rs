//! Persistent subscriptions through KurrentDB's official Rust client, unmodified, against a
//! real server on `127.0.0.1:0`: groups on a stream and on `$all` created, connected to,
//! acked and nacked, described, listed, replayed from their parked messages, restarted,
//! updated and deleted.

mod common;
mod kurrent_helpers;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestResult, TestServer, within};
use kurrent_helpers::{client, n_of, numbered};
use kurrentdb::{
    AppendToStreamOptions, Client, DeletePersistentSubscriptionOptions,
    GetPersistentSubscriptionInfoOptions, ListPersistentSubscriptionsOptions, NakAction,
    PersistentSubscription, PersistentSubscriptionEvent, PersistentSubscriptionOptions,
    PersistentSubscriptionToAllOptions, ReplayParkedMessagesOptions,
    RestartPersistentSubscriptionSubsystem, StreamPosition,
    SubscribeToPersistentSubscriptionOptions, SubscriptionFilter, SystemConsumerStrategy,
};

/// The next event and its retry count.
async fn next(
    subscription: &mut PersistentSubscription,
) -> TestResult<(kurrentdb::ResolvedEvent, usize)> {
    loop {
        let event = within("a persistent subscription event", async {
            subscription.next_subscription_event().await
        })
        .await??;
        if let PersistentSubscriptionEvent::EventAppeared { event, retry_count } = event {
            return Ok((event, retry_count));
        }
    }
}

async fn subscribe(
    client: &Client,
    stream: &str,
    group: &str,
    buffer: usize,
) -> TestResult<PersistentSubscription> {
    let options = SubscribeToPersistentSubscriptionOptions::default().buffer_size(buffer);
    Ok(client
        .subscribe_to_persistent_subscription(stream, group, &options)
        .await?)
}

/// Polls the group's info until `check` holds of it.
async fn until_info(
    client: &Client,
    stream: &str,
    group: &str,
    check: impl Fn(&kurrentdb::PersistentSubscriptionInfo<u64>) -> bool,
) -> TestResult<kurrentdb::PersistentSubscriptionInfo<u64>> {
    within("the group's info", async {
        loop {
            let info = client
                .get_persistent_subscription_info(
                    stream,
                    group,
                    &GetPersistentSubscriptionInfoOptions::default(),
                )
                .await?;
            if check(&info) {
                return Ok(info);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?
}

#[tokio::test]
async fn a_stream_group_acks_nacks_parks_and_replays() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    client
        .append_to_stream("orders", &AppendToStreamOptions::default(), numbered(0, 4))
        .await?;
    let options = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .max_retry_count(1)
        .checkpoint_lower_bound(1)
        .checkpoint_upper_bound(1);
    client
        .create_persistent_subscription("orders", "workers", &options)
        .await?;
    let again = client
        .create_persistent_subscription("orders", "workers", &options)
        .await;
    assert!(
        matches!(again, Err(kurrentdb::Error::ResourceAlreadyExists)),
        "{again:?}"
    );

    let mut subscription = subscribe(&client, "orders", "workers", 10).await?;
    let mut events = Vec::new();
    for n in 0..4 {
        let (event, retry_count) = next(&mut subscription).await?;
        assert_eq!((n_of(&event)?, retry_count), (n, 0));
        events.push(event);
    }
    subscription.ack(&events[0]).await?;
    subscription
        .nack(&events[1], NakAction::Retry, "try again")
        .await?;
    let (retried, retry_count) = next(&mut subscription).await?;
    assert_eq!((n_of(&retried)?, retry_count), (1, 1));
    // Its one retry spent, the next failure parks it.
    subscription
        .nack(&retried, NakAction::Retry, "still failing")
        .await?;
    subscription
        .nack(&events[2], NakAction::Park, "poison")
        .await?;
    subscription
        .nack(&events[3], NakAction::Skip, "not ours")
        .await?;
    let info = until_info(&client, "orders", "workers", |info| {
        info.stats.parked_message_count == 2 && info.stats.total_in_flight_messages == 0
    })
    .await?;
    assert_eq!(info.event_source, "orders");
    assert_eq!(info.status, "Live");
    assert_eq!(info.connections.len(), 1);
    let settings = info.settings.ok_or("the info has settings")?;
    assert_eq!(settings.max_retry_count, 1);
    assert_eq!(settings.start_from, StreamPosition::Start);
    assert_eq!(
        settings.consumer_strategy_name,
        SystemConsumerStrategy::RoundRobin
    );
    // Everything is finished: the checkpoint reaches the last event.
    until_info(&client, "orders", "workers", |info| {
        info.stats.last_checkpointed_event_revision == Some(3)
    })
    .await?;

    client
        .replay_parked_messages("orders", "workers", &ReplayParkedMessagesOptions::default())
        .await?;
    let mut replayed = BTreeSet::new();
    for _ in 0..2 {
        let (event, retry_count) = next(&mut subscription).await?;
        assert_eq!(retry_count, 0);
        replayed.insert(n_of(&event)?);
        subscription.ack(&event).await?;
    }
    assert_eq!(replayed, BTreeSet::from([1, 2]));
    until_info(&client, "orders", "workers", |info| {
        info.stats.parked_message_count == 0
    })
    .await?;

    server.stop().await
}

#[tokio::test]
async fn a_deleted_group_drops_its_consumers_and_refuses_new_ones() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let options = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);
    client
        .create_persistent_subscription("orders", "workers", &options)
        .await?;
    let mut subscription = subscribe(&client, "orders", "workers", 10).await?;
    let listed = client
        .list_persistent_subscriptions_for_stream(
            "orders",
            &ListPersistentSubscriptionsOptions::default(),
        )
        .await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_name, "workers");
    client
        .delete_persistent_subscription(
            "orders",
            "workers",
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await?;
    let dropped = within("the drop", subscription.next()).await?;
    assert!(dropped.is_err(), "{dropped:?}");
    let gone = client
        .subscribe_to_persistent_subscription(
            "orders",
            "workers",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .err();
    assert!(
        matches!(gone, Some(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn competing_consumers_share_a_group_and_a_restart_drops_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    client
        .append_to_stream("jobs", &AppendToStreamOptions::default(), numbered(0, 20))
        .await?;
    let options = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);
    client
        .create_persistent_subscription("jobs", "pool", &options)
        .await?;
    let mut first = subscribe(&client, "jobs", "pool", 10).await?;
    let mut second = subscribe(&client, "jobs", "pool", 10).await?;
    let mut seen = BTreeSet::new();
    for subscription in [&mut first, &mut second] {
        for _ in 0..10 {
            let (event, _) = next(subscription).await?;
            assert!(seen.insert(n_of(&event)?), "delivered twice");
        }
    }
    assert_eq!(seen, (0..20).collect());
    let info = until_info(&client, "jobs", "pool", |info| info.connections.len() == 2).await?;
    assert!(
        info.connections
            .iter()
            .all(|connection| connection.in_flight_messages == 10)
    );

    client
        .restart_persistent_subscription_subsystem(
            &RestartPersistentSubscriptionSubsystem::default(),
        )
        .await?;
    let dropped = within("the drop", first.next()).await?;
    assert!(dropped.is_err(), "{dropped:?}");
    // Reconnected, the group resumes from its checkpoint: nothing was acked, so all again.
    let mut again = subscribe(&client, "jobs", "pool", 20).await?;
    let (event, _) = next(&mut again).await?;
    assert_eq!(n_of(&event)?, 0);
    server.stop().await
}

#[tokio::test]
async fn an_all_group_with_a_filter_reports_positions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let options = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix("invoice-"));
    client
        .create_persistent_subscription_to_all("billing", &options)
        .await?;
    for stream in ["invoice-1", "other", "invoice-2"] {
        client
            .append_to_stream(stream, &AppendToStreamOptions::default(), numbered(0, 1))
            .await?;
    }
    let mut subscription = client
        .subscribe_to_persistent_subscription_to_all(
            "billing",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await?;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let (event, _) = next(&mut subscription).await?;
        streams.push(event.get_original_event().stream_id().to_owned());
        subscription.ack(&event).await?;
    }
    assert_eq!(streams, ["invoice-1", "invoice-2"]);
    let info = within("the info", async {
        loop {
            let info = client
                .get_persistent_subscription_info_to_all(
                    "billing",
                    &GetPersistentSubscriptionInfoOptions::default(),
                )
                .await?;
            if info.stats.last_known_position.is_some() {
                return Ok::<_, kurrentdb::Error>(info);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await??;
    assert_eq!(info.event_source, "$all");
    let settings = info.settings.ok_or("the info has settings")?;
    assert_eq!(settings.start_from, StreamPosition::Start);
    let listed = client
        .list_persistent_subscriptions_to_all(&ListPersistentSubscriptionsOptions::default())
        .await?;
    assert_eq!(listed.len(), 1);
    server.stop().await
}

#[tokio::test]
async fn a_consumer_that_goes_away_hands_its_events_to_another() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let options = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);
    let staying = client(&server, "esdb")?;
    staying
        .append_to_stream("jobs", &AppendToStreamOptions::default(), numbered(0, 3))
        .await?;
    staying
        .create_persistent_subscription("jobs", "pool", &options)
        .await?;
    {
        // A client of its own, so that dropping it closes its connection.
        let leaving = client(&server, "esdb")?;
        let mut subscription = subscribe(&leaving, "jobs", "pool", 3).await?;
        for n in 0..3 {
            let (event, _) = next(&mut subscription).await?;
            assert_eq!(n_of(&event)?, n);
        }
    }
    let mut subscription = subscribe(&staying, "jobs", "pool", 3).await?;
    for n in 0..3 {
        let (event, retry_count) = next(&mut subscription).await?;
        assert_eq!((n_of(&event)?, retry_count), (n, 1));
    }
    server.stop().await
}

#[tokio::test]
async fn a_stop_nack_takes_the_consumer_out_but_keeps_its_call_for_acks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    client
        .append_to_stream("jobs", &AppendToStreamOptions::default(), numbered(0, 3))
        .await?;
    let options = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);
    client
        .create_persistent_subscription("jobs", "pool", &options)
        .await?;
    let mut stopping = subscribe(&client, "jobs", "pool", 2).await?;
    let (first, _) = next(&mut stopping).await?;
    let (second, _) = next(&mut stopping).await?;
    stopping
        .nack(&first, NakAction::Stop, "shutting down")
        .await?;
    // Still acked through the same call.
    stopping.ack(&second).await?;
    let info = until_info(&client, "jobs", "pool", |info| {
        info.stats.total_in_flight_messages == 0
    })
    .await?;
    assert_eq!(info.connections.len(), 1);
    let mut taking_over = subscribe(&client, "jobs", "pool", 10).await?;
    let mut taken = Vec::new();
    for _ in 0..2 {
        let (event, retry_count) = next(&mut taking_over).await?;
        taken.push((n_of(&event)?, retry_count));
    }
    assert_eq!(taken, [(0, 1), (2, 0)]);
    server.stop().await
}

#[tokio::test]
async fn an_update_changes_the_settings_and_drops_the_consumers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "esdb")?;
    let created = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);
    client
        .create_persistent_subscription("orders", "workers", &created)
        .await?;
    client
        .append_to_stream("orders", &AppendToStreamOptions::default(), numbered(0, 1))
        .await?;
    let mut subscription = subscribe(&client, "orders", "workers", 10).await?;
    let (event, _) = next(&mut subscription).await?;
    subscription.ack(&event).await?;
    let updated = created
        .max_retry_count(3)
        .message_timeout(Duration::from_secs(5))
        .max_subscriber_count(2)
        .consumer_strategy_name(SystemConsumerStrategy::DispatchToSingle);
    client
        .update_persistent_subscription("orders", "workers", &updated)
        .await?;
    let dropped = within("the drop", subscription.next()).await?;
    assert!(dropped.is_err(), "{dropped:?}");
    let info = client
        .get_persistent_subscription_info(
            "orders",
            "workers",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await?;
    let settings = info.settings.ok_or("the info has settings")?;
    assert_eq!(settings.max_retry_count, 3);
    assert_eq!(settings.message_timeout, Duration::from_secs(5));
    assert_eq!(settings.max_subscriber_count, 2);
    assert_eq!(
        settings.consumer_strategy_name,
        SystemConsumerStrategy::DispatchToSingle
    );

    let all = PersistentSubscriptionToAllOptions::default()
        .filter(SubscriptionFilter::on_stream_name().add_prefix("invoice-"));
    client
        .create_persistent_subscription_to_all("billing", &all)
        .await?;
    client
        .update_persistent_subscription_to_all("billing", &all.max_retry_count(7))
        .await?;
    let info = client
        .get_persistent_subscription_info_to_all(
            "billing",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await?;
    assert_eq!(
        info.settings
            .ok_or("the info has settings")?
            .max_retry_count,
        7
    );

    let missing = client
        .update_persistent_subscription("orders", "nobody", &updated)
        .await
        .err();
    assert!(
        matches!(missing, Some(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );
    server.stop().await
}
