//! Persistent subscriptions through the embedded API: competing consumers share a group's
//! events, acks finish them, nacks and timeouts retry them, retries run out into parked
//! messages that a replay brings back, and checkpoints survive a reopen.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    ConsumerStrategy, Error, EventData, EventFilter, EventStore, ExpectedVersion, GroupConsumer,
    GroupEvent, GroupSettings, GroupStart, GroupStatus, GroupTarget, NackAction, Options,
    StreamVersion,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a test waits for something it expects; never reached when the code works.
const PATIENCE: Duration = Duration::from_secs(20);

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

fn stream(name: &str) -> GroupTarget {
    GroupTarget::Stream(name.to_owned())
}

fn from_start() -> GroupSettings {
    GroupSettings {
        start: GroupStart::Start,
        ..GroupSettings::default()
    }
}

fn append(store: &EventStore, name: &str, count: usize) -> TestResult {
    let events: Vec<EventData> = (0..count)
        .map(|n| EventData::json("Happened", &serde_json::json!({ "n": n })))
        .collect::<Result<_, _>>()?;
    store.append(name, ExpectedVersion::Any, &events)?;
    Ok(())
}

async fn next(consumer: &mut GroupConsumer) -> Result<GroupEvent, Box<dyn std::error::Error>> {
    match tokio::time::timeout(PATIENCE, consumer.next()).await? {
        Some(event) => Ok(event?),
        None => Err("the consumer ended".into()),
    }
}

/// Waits until `check` holds of the group's info.
async fn until_info(
    store: &EventStore,
    target: &GroupTarget,
    name: &str,
    check: impl Fn(&caskade_eventstore::GroupInfo) -> bool,
) -> TestResult {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let info = store.group_info(target, name).await?;
        if check(&info) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the group never reached the state expected: {info:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn round_robin_consumers_together_receive_every_event_once_before_acks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 30)?;
    let target = stream("orders");
    store.create_group(target.clone(), "workers", EventFilter::all(), from_start())?;
    let mut consumers = Vec::new();
    for name in ["a", "b", "c"] {
        consumers.push(store.connect_group(&target, "workers", name, 10).await?);
    }
    let mut seen = BTreeSet::new();
    for consumer in &mut consumers {
        for _ in 0..10 {
            let event = next(consumer).await?;
            assert_eq!(event.retry_count, 0);
            assert!(
                seen.insert(event.event.version),
                "delivered twice: {event:?}"
            );
        }
    }
    assert_eq!(seen, (0..30).map(StreamVersion).collect());
    let info = store.group_info(&target, "workers").await?;
    assert_eq!(info.in_flight, 30);
    assert_eq!(info.consumers.len(), 3);
    assert!(
        info.consumers
            .iter()
            .all(|consumer| consumer.in_flight == 10)
    );
    Ok(())
}

#[tokio::test]
async fn acks_finish_events_and_move_the_checkpoint_durably() -> TestResult {
    let dir = tempfile::tempdir()?;
    let target = stream("orders");
    {
        let store = EventStore::open(dir.path(), options())?;
        append(&store, "orders", 10)?;
        let settings = GroupSettings {
            min_checkpoint_count: 1,
            max_checkpoint_count: 1,
            ..from_start()
        };
        store.create_group(target.clone(), "workers", EventFilter::all(), settings)?;
        let mut consumer = store.connect_group(&target, "workers", "a", 10).await?;
        let mut received = Vec::new();
        for _ in 0..10 {
            received.push(next(&mut consumer).await?);
        }
        // The first five acked, the sixth left in flight, the rest acked: the checkpoint
        // stops below the sixth.
        let ids: Vec<_> = received.iter().map(|event| event.event.id).collect();
        consumer.ack(ids[..5].to_vec()).await?;
        consumer.ack(ids[6..].to_vec()).await?;
        until_info(&store, &target, "workers", |info| {
            info.last_checkpointed == Some(4) && info.in_flight == 1
        })
        .await?;
        store.close()?;
    }
    let store = EventStore::open(dir.path(), options())?;
    let info = store.group_info(&target, "workers").await?;
    assert_eq!(info.status, GroupStatus::Idle);
    assert_eq!(info.last_checkpointed, Some(4));
    let mut consumer = store.connect_group(&target, "workers", "a", 10).await?;
    // Resumed at the sixth: it and everything after are delivered again, nothing before.
    for version in 5..10 {
        assert_eq!(
            next(&mut consumer).await?.event.version,
            StreamVersion(version)
        );
    }
    Ok(())
}

#[tokio::test]
async fn nacked_retries_count_up_then_park_and_a_replay_brings_the_event_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 1)?;
    let target = stream("orders");
    let settings = GroupSettings {
        max_retry_count: 2,
        ..from_start()
    };
    store.create_group(target.clone(), "workers", EventFilter::all(), settings)?;
    let mut consumer = store.connect_group(&target, "workers", "a", 10).await?;
    for retry in 0..=2 {
        let event = next(&mut consumer).await?;
        assert_eq!(event.retry_count, retry);
        consumer
            .nack(vec![event.event.id], NackAction::Retry)
            .await?;
    }
    until_info(&store, &target, "workers", |info| info.parked == 1).await?;
    // Parked, the event no longer holds the checkpoint back.
    until_info(&store, &target, "workers", |info| info.in_flight == 0).await?;
    assert_eq!(store.replay_parked(&target, "workers", None).await?, 1);
    let replayed = next(&mut consumer).await?;
    assert_eq!(replayed.event.version, StreamVersion(0));
    assert_eq!(replayed.retry_count, 0);
    consumer.ack(vec![replayed.event.id]).await?;
    until_info(&store, &target, "workers", |info| info.parked == 0).await?;
    Ok(())
}

#[tokio::test]
async fn a_nack_can_park_or_skip_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 2)?;
    let target = stream("orders");
    store.create_group(target.clone(), "workers", EventFilter::all(), from_start())?;
    let mut consumer = store.connect_group(&target, "workers", "a", 10).await?;
    let first = next(&mut consumer).await?;
    let second = next(&mut consumer).await?;
    consumer
        .nack(vec![first.event.id], NackAction::Park)
        .await?;
    consumer
        .nack(vec![second.event.id], NackAction::Skip)
        .await?;
    until_info(&store, &target, "workers", |info| {
        info.parked == 1 && info.in_flight == 0 && info.retrying == 0
    })
    .await?;
    assert_eq!(store.replay_parked(&target, "workers", Some(5)).await?, 1);
    assert_eq!(next(&mut consumer).await?.event.id, first.event.id);
    Ok(())
}

#[tokio::test]
async fn an_event_not_acked_in_time_goes_to_another_consumer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 1)?;
    let target = stream("orders");
    let settings = GroupSettings {
        message_timeout: Duration::from_millis(100),
        ..from_start()
    };
    store.create_group(target.clone(), "workers", EventFilter::all(), settings)?;
    let mut stuck = store.connect_group(&target, "workers", "stuck", 1).await?;
    let first = next(&mut stuck).await?;
    assert_eq!(first.retry_count, 0);
    let mut healthy = store
        .connect_group(&target, "workers", "healthy", 1)
        .await?;
    // The stuck consumer has room again, but a message that timed out goes to another.
    let retried = next(&mut healthy).await?;
    assert_eq!(retried.event.id, first.event.id);
    assert_eq!(retried.retry_count, 1);
    Ok(())
}

#[tokio::test]
async fn a_consumer_that_disconnects_hands_its_events_to_another() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 3)?;
    let target = stream("orders");
    store.create_group(target.clone(), "workers", EventFilter::all(), from_start())?;
    let mut leaving = store
        .connect_group(&target, "workers", "leaving", 3)
        .await?;
    for _ in 0..3 {
        next(&mut leaving).await?;
    }
    let mut staying = store
        .connect_group(&target, "workers", "staying", 3)
        .await?;
    drop(leaving);
    for version in 0..3 {
        let event = next(&mut staying).await?;
        assert_eq!(event.event.version, StreamVersion(version));
        assert_eq!(event.retry_count, 1);
    }
    Ok(())
}

#[tokio::test]
async fn pinned_groups_keep_each_stream_with_one_consumer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let settings = GroupSettings {
        consumer_strategy: ConsumerStrategy::Pinned,
        ..from_start()
    };
    store.create_group(
        GroupTarget::All,
        "pinned",
        EventFilter::all().stream_prefix("account-"),
        settings,
    )?;
    let mut consumers = Vec::new();
    for name in ["a", "b"] {
        consumers.push(
            store
                .connect_group(&GroupTarget::All, "pinned", name, 100)
                .await?,
        );
    }
    for round in 0..5 {
        for account in 0..4 {
            append(&store, &format!("account-{account}"), 1)?;
            append(&store, &format!("other-{round}"), 1)?;
        }
    }
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut received = 0;
    while received < 20 {
        for (index, consumer) in consumers.iter_mut().enumerate() {
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(50), consumer.next()).await
            {
                let event = event?;
                assert!(event.event.stream.starts_with("account-"));
                let owner = *owners
                    .entry(event.event.stream.to_string())
                    .or_insert(index);
                assert_eq!(owner, index, "{} went to two consumers", event.event.stream);
                received += 1;
            }
        }
    }
    assert_eq!(owners.len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_group_from_the_end_starts_where_the_stream_was_when_it_was_created() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 3)?;
    let target = stream("orders");
    store.create_group(
        target.clone(),
        "workers",
        EventFilter::all(),
        GroupSettings::default(),
    )?;
    // Appended after the group was created, before anyone connected.
    append(&store, "orders", 1)?;
    let mut consumer = store.connect_group(&target, "workers", "a", 10).await?;
    assert_eq!(next(&mut consumer).await?.event.version, StreamVersion(3));
    Ok(())
}

#[tokio::test]
async fn deleting_or_updating_a_group_drops_its_consumers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let target = stream("orders");
    store.create_group(target.clone(), "workers", EventFilter::all(), from_start())?;
    let mut consumer = store.connect_group(&target, "workers", "a", 10).await?;
    store.update_group(target.clone(), "workers", EventFilter::all(), from_start())?;
    let dropped = tokio::time::timeout(PATIENCE, consumer.next()).await?;
    assert!(
        matches!(dropped, Some(Err(Error::GroupDropped { .. }))),
        "{dropped:?}"
    );
    let mut consumer = store.connect_group(&target, "workers", "a", 10).await?;
    store.delete_group(&target, "workers")?;
    let dropped = tokio::time::timeout(PATIENCE, consumer.next()).await?;
    assert!(
        matches!(dropped, Some(Err(Error::GroupDropped { .. }))),
        "{dropped:?}"
    );
    let refused = store.connect_group(&target, "workers", "a", 10).await;
    assert!(
        matches!(refused, Err(Error::GroupNotFound { .. })),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_group_refuses_consumers_beyond_its_maximum_and_a_zero_buffer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let target = stream("orders");
    let settings = GroupSettings {
        max_subscriber_count: 1,
        ..from_start()
    };
    store.create_group(target.clone(), "workers", EventFilter::all(), settings)?;
    let _first = store.connect_group(&target, "workers", "a", 10).await?;
    let refused = store.connect_group(&target, "workers", "b", 10).await;
    assert!(
        matches!(refused, Err(Error::GroupFull { max: 1, .. })),
        "{refused:?}"
    );
    let refused = store.connect_group(&target, "workers", "b", 0).await;
    assert!(
        matches!(
            refused,
            Err(Error::InvalidGroupSettings {
                setting: "buffer_size",
                ..
            })
        ),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_filtered_all_group_checkpoints_through_what_its_filter_skips() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let settings = GroupSettings {
        checkpoint_after: Duration::from_millis(50),
        ..from_start()
    };
    let filter = EventFilter::all().stream_prefix("wanted");
    store.create_group(GroupTarget::All, "few", filter, settings)?;
    append(&store, "wanted", 1)?;
    append(&store, "unwanted", 600)?;
    let mut consumer = store
        .connect_group(&GroupTarget::All, "few", "a", 10)
        .await?;
    let event = next(&mut consumer).await?;
    assert_eq!(&*event.event.stream, "wanted");
    consumer.ack(vec![event.event.id]).await?;
    // Past the one event it delivered, into the positions it skipped.
    until_info(&store, &GroupTarget::All, "few", |info| {
        info.last_checkpointed == Some(600)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn dispatch_to_single_fills_the_first_consumer_before_the_next() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 5)?;
    let target = stream("orders");
    let settings = GroupSettings {
        consumer_strategy: ConsumerStrategy::DispatchToSingle,
        ..from_start()
    };
    store.create_group(target.clone(), "single", EventFilter::all(), settings)?;
    let mut first = store.connect_group(&target, "single", "first", 3).await?;
    let mut second = store.connect_group(&target, "single", "second", 3).await?;
    // The first takes as many as it has room for, the rest go to the second.
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(next(&mut first).await?.event);
    }
    assert_eq!(
        taken.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let rest = [next(&mut second).await?, next(&mut second).await?];
    assert_eq!(rest.map(|event| event.event.version.0), [3, 4]);
    // The first has room again, and the second has some too: the next goes to the first.
    first.ack(vec![taken[0].id]).await?;
    append(&store, "orders", 1)?;
    assert_eq!(next(&mut first).await?.event.version, StreamVersion(5));
    let info = store.group_info(&target, "single").await?;
    let in_flight: Vec<u32> = info.consumers.iter().map(|c| c.in_flight).collect();
    assert_eq!(in_flight, [3, 2]);
    Ok(())
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_disconnected_and_its_events_move_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "orders", 1)?;
    let target = stream("orders");
    let settings = GroupSettings {
        message_timeout: Duration::from_millis(20),
        ..from_start()
    };
    store.create_group(target.clone(), "workers", EventFilter::all(), settings)?;
    // Connected, never read: the event times out into its channel again and again until
    // the channel is full and the group lets it go.
    let mut asleep = store.connect_group(&target, "workers", "asleep", 1).await?;
    until_info(&store, &target, "workers", |info| info.consumers.is_empty()).await?;
    let mut awake = store.connect_group(&target, "workers", "awake", 1).await?;
    let event = next(&mut awake).await?;
    assert_eq!(event.event.version, StreamVersion(0));
    assert!(event.retry_count >= 2, "{event:?}");
    // What the sleeper's channel held is still there to read, then its stream ends.
    let mut held = 0;
    while let Some(message) = tokio::time::timeout(PATIENCE, asleep.next()).await? {
        message?;
        held += 1;
    }
    assert_eq!(held, 2);
    Ok(())
}

#[tokio::test]
async fn a_group_whose_checkpoint_is_corrupt_fails_with_the_cause() -> TestResult {
    let dir = tempfile::tempdir()?;
    let target = stream("orders");
    {
        let store = EventStore::open(dir.path(), options())?;
        store.create_group(target.clone(), "workers", EventFilter::all(), from_start())?;
        store.close()?;
    }
    {
        // The checkpoint key of `FORMAT.md`: `c`, `s`, the stream's length, the stream, the
        // group's name; its value cut short.
        let engine = caskade_engine::Bitcask::open(dir.path(), caskade_engine::Options::default())?;
        let mut key = b"cs".to_vec();
        key.extend_from_slice(&6_u16.to_be_bytes());
        key.extend_from_slice(b"ordersworkers");
        assert!(
            engine.get(&key)?.is_some(),
            "the checkpoint is where FORMAT.md says"
        );
        engine.put(&key, b"\x01")?;
        engine.close()?;
    }
    let store = EventStore::open(dir.path(), options())?;
    let failed = store.connect_group(&target, "workers", "a", 1).await;
    match failed {
        Err(Error::GroupFailed { cause, .. }) => {
            assert!(matches!(*cause, Error::Corrupt { .. }), "{cause:?}");
        }
        other => return Err(format!("expected the corruption, got {other:?}").into()),
    }
    Ok(())
}
