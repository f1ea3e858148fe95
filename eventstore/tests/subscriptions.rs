//! Subscriptions: catch-up then live with no gap and no duplicate while writers race the
//! switch, resuming after a position or version, starting now, filters, a slow subscriber,
//! dropping a subscription, and tombstoned streams.
//!
//! Nothing here waits for time to pass: every wait is for a message, under a generous
//! timeout that only fires when the message never comes.

use std::thread;
use std::time::Duration;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    Error, EventData, EventFilter, EventStore, ExpectedVersion, Options, Position, ReadAll,
    RecordedEvent, StreamVersion, SubscribeFrom, Subscription, SubscriptionMessage,
};
use serde_json::json;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a test waits for a message before it fails.
const WAIT: Duration = Duration::from_secs(30);
/// Upper bound on the messages any test reads from one subscription.
const MAX_MESSAGES: usize = 100_000;

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

/// Under `SyncPolicy::Always` an append is visible only once synced, so the durable heads
/// and the committed position lag the sequencer: the subscriptions must still see it all.
fn always_options() -> Options {
    Options::default()
}

fn event(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &json!({ "n": n })).expect("a json! value serializes")
}

/// The next message, failing if none comes within [`WAIT`] or the subscription ends.
async fn next_message(
    subscription: &mut Subscription,
) -> Result<SubscriptionMessage, Box<dyn std::error::Error>> {
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Err(_) => Err("no subscription message came in time".into()),
        Ok(None) => Err("the subscription ended".into()),
        Ok(Some(message)) => Ok(message?),
    }
}

const UNASKED_CHECKPOINT: &str = "a checkpoint from a subscription that asked for none";

/// What a subscription delivered: its events, and where `CaughtUp` came among them.
#[derive(Debug, Default)]
struct Received {
    events: Vec<RecordedEvent>,
    /// For each `CaughtUp`, how many events had come before it.
    caught_up_at: Vec<usize>,
}

impl Received {
    /// Reads messages until the event `until` has been received (counting what came
    /// before this call: a subscription that starts late may deliver it while catching up)
    /// and, with `need_caught_up`, `CaughtUp` too.
    async fn read_until(
        &mut self,
        subscription: &mut Subscription,
        until: Uuid,
        need_caught_up: bool,
    ) -> TestResult {
        let mut seen_until = self.events.iter().any(|event| event.id == until);
        for _ in 0..MAX_MESSAGES {
            if seen_until && (!need_caught_up || !self.caught_up_at.is_empty()) {
                return Ok(());
            }
            match next_message(subscription).await? {
                SubscriptionMessage::Event(event) => {
                    seen_until |= event.id == until;
                    self.events.push(event);
                }
                SubscriptionMessage::CaughtUp => self.caught_up_at.push(self.events.len()),
                SubscriptionMessage::Checkpoint(_) => return Err(UNASKED_CHECKPOINT.into()),
            }
        }
        Err("too many subscription messages".into())
    }

    /// Reads messages up to and including the first `CaughtUp`.
    async fn read_until_caught_up(&mut self, subscription: &mut Subscription) -> TestResult {
        for _ in 0..MAX_MESSAGES {
            match next_message(subscription).await? {
                SubscriptionMessage::Event(event) => self.events.push(event),
                SubscriptionMessage::CaughtUp => {
                    self.caught_up_at.push(self.events.len());
                    return Ok(());
                }
                SubscriptionMessage::Checkpoint(_) => return Err(UNASKED_CHECKPOINT.into()),
            }
        }
        Err("too many subscription messages".into())
    }
}

fn read_all(store: &EventStore, read: ReadAll) -> Result<Vec<RecordedEvent>, Error> {
    store.read_all(read).collect()
}

fn assert_positions_increase(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
}

/// Starts `writers` threads each making `appends` appends of one to three events, every
/// fourth to `target` and the others to streams of their own; returns their handles.
fn start_writers(
    store: &EventStore,
    writers: usize,
    appends: u64,
) -> Vec<thread::JoinHandle<Result<(), Error>>> {
    (0..writers)
        .map(|writer| {
            let store = store.clone();
            thread::spawn(move || {
                for n in 0..appends {
                    let stream = match n % 4 {
                        0 => "target".to_owned(),
                        k => format!("w-{writer}-{k}"),
                    };
                    let events: Vec<EventData> =
                        (0..=n % 3).map(|i| event("Written", n * 10 + i)).collect();
                    store.append(&stream, ExpectedVersion::Any, &events)?;
                }
                Ok(())
            })
        })
        .collect()
}

fn join(writers: Vec<thread::JoinHandle<Result<(), Error>>>) -> TestResult {
    for writer in writers {
        writer.join().map_err(|_| "writer thread panicked")??;
    }
    Ok(())
}

/// Blocking appends run off the async workers.
async fn append(
    store: &EventStore,
    stream: &str,
    events: Vec<EventData>,
) -> Result<caskade_eventstore::AppendResult, Box<dyn std::error::Error>> {
    let (store, stream) = (store.clone(), stream.to_owned());
    Ok(
        tokio::task::spawn_blocking(move || store.append(&stream, ExpectedVersion::Any, &events))
            .await??,
    )
}

/// Drives a subscription from the start while writers append before, during and after its
/// switch from catch-up to live; returns everything it delivered up to a final sentinel.
async fn subscribe_through_the_switch(
    store: &EventStore,
    subscribe: impl FnOnce(&EventStore) -> Result<Subscription, Error>,
    sentinel_stream: &str,
    appends_per_writer: u64,
) -> Result<Received, Box<dyn std::error::Error>> {
    // Before: events already on disk.
    for n in 0..50 {
        append(
            store,
            "target",
            vec![event("Before", n), event("Before", n + 100)],
        )
        .await?;
        append(store, "other", vec![event("Before", n)]).await?;
    }
    // During: writers race the catch-up.
    let writers = start_writers(store, 2, appends_per_writer);
    let mut subscription = subscribe(store)?;
    let finisher = {
        let store = store.clone();
        let sentinel_stream = sentinel_stream.to_owned();
        thread::spawn(
            move || -> Result<Uuid, Box<dyn std::error::Error + Send + Sync>> {
                join(writers).map_err(|e| e.to_string())?;
                let sentinel = event("Sentinel", 0);
                store.append(
                    &sentinel_stream,
                    ExpectedVersion::Any,
                    std::slice::from_ref(&sentinel),
                )?;
                Ok(sentinel.id)
            },
        )
    };
    let mut received = Received::default();
    // The finisher's sentinel can only be waited for once its id is known; read until the
    // subscription has caught up meanwhile.
    received.read_until_caught_up(&mut subscription).await?;
    let sentinel = tokio::task::spawn_blocking(move || finisher.join())
        .await?
        .map_err(|_| "finisher thread panicked")?
        .map_err(|e| e.to_string())?;
    received
        .read_until(&mut subscription, sentinel, true)
        .await?;

    // After: appends made once the subscription is certainly live.
    for n in 0..20 {
        append(store, "target", vec![event("After", n)]).await?;
        append(store, "other", vec![event("After", n)]).await?;
    }
    let last = event("Sentinel", 1);
    let last_id = last.id;
    append(store, sentinel_stream, vec![last]).await?;
    received
        .read_until(&mut subscription, last_id, true)
        .await?;
    Ok(received)
}

async fn all_subscription_through_the_switch(options: Options, appends: u64) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options)?;
    let received = subscribe_through_the_switch(
        &store,
        |store| Ok(store.subscribe_all(SubscribeFrom::Start, EventFilter::all())),
        "other",
        appends,
    )
    .await?;
    assert_eq!(
        received.caught_up_at.len(),
        1,
        "CaughtUp must come exactly once"
    );
    assert_positions_increase(&received.events);
    let all = read_all(&store, ReadAll::forwards())?;
    assert_eq!(received.events.len(), all.len());
    assert_eq!(received.events, all);
    // Positions have no holes: nothing was deleted.
    assert_eq!(all.last().map(|e| e.position.0 + 1), Some(all.len() as u64));
    Ok(())
}

async fn stream_subscription_through_the_switch(options: Options, appends: u64) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options)?;
    let received = subscribe_through_the_switch(
        &store,
        |store| store.subscribe_stream("target", SubscribeFrom::Start),
        "target",
        appends,
    )
    .await?;
    assert_eq!(
        received.caught_up_at.len(),
        1,
        "CaughtUp must come exactly once"
    );
    assert_positions_increase(&received.events);
    let stream = store.read_stream_to_vec("target")?;
    assert_eq!(received.events.len(), stream.len());
    assert_eq!(received.events, stream);
    let versions: Vec<u64> = received.events.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (0..stream.len() as u64).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_subscription_from_start_delivers_every_event_once_across_the_switch_to_live()
-> TestResult {
    all_subscription_through_the_switch(options(), 300).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_subscription_delivers_every_event_once_under_sync_always() -> TestResult {
    all_subscription_through_the_switch(always_options(), 60).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscription_from_start_delivers_every_event_once_across_the_switch_to_live()
-> TestResult {
    stream_subscription_through_the_switch(options(), 300).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscription_delivers_every_event_once_under_sync_always() -> TestResult {
    stream_subscription_through_the_switch(always_options(), 60).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_after_a_position_or_version_resumes_exactly_after_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    for n in 0..10 {
        append(&store, "a", vec![event("E", n)]).await?;
        append(&store, "b", vec![event("E", n)]).await?;
    }
    let all = read_all(&store, ReadAll::forwards())?;

    for after in [0u64, 7, 18, 19, 25] {
        let mut subscription =
            store.subscribe_all(SubscribeFrom::After(Position(after)), EventFilter::all());
        let mut received = Received::default();
        received.read_until_caught_up(&mut subscription).await?;
        let expected: Vec<RecordedEvent> = all
            .iter()
            .filter(|e| e.position.0 > after)
            .cloned()
            .collect();
        assert_eq!(received.events, expected, "$all after {after}");
    }

    for after in [0u64, 4, 9, 12] {
        // Each round appends one more live event.
        let stream = store.read_stream_to_vec("a")?;
        let mut subscription =
            store.subscribe_stream("a", SubscribeFrom::After(StreamVersion(after)))?;
        let mut received = Received::default();
        received.read_until_caught_up(&mut subscription).await?;
        let expected: Vec<RecordedEvent> = stream
            .iter()
            .filter(|e| e.version.0 > after)
            .cloned()
            .collect();
        assert_eq!(received.events, expected, "stream a after {after}");
        // It goes on live.
        let live = event("Live", after);
        let live_id = live.id;
        append(&store, "a", vec![live]).await?;
        received
            .read_until(&mut subscription, live_id, true)
            .await?;
        assert_eq!(received.events.last().map(|e| e.id), Some(live_id));
        assert_eq!(received.events.len(), expected.len() + 1);
    }
    Ok(())
}

/// A subscription whose task first runs after everything was appended delivers the awaited
/// event while catching up, before `CaughtUp`; waiting for it afterwards must not wait for a
/// second copy. A current-thread runtime runs the task only when the test awaits, which pins
/// that order (the one in which the switch tests above used to time out).
#[tokio::test(flavor = "current_thread")]
async fn an_event_delivered_while_catching_up_is_not_awaited_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let stream = store.subscribe_stream("target", SubscribeFrom::Start)?;
    let all = store.subscribe_all(SubscribeFrom::Start, EventFilter::all());
    let sentinel = event("Sentinel", 0);
    let sentinel_id = sentinel.id;
    store.append("target", ExpectedVersion::Any, &[event("Before", 0)])?;
    store.append("target", ExpectedVersion::Any, &[sentinel])?;
    for mut subscription in [stream, all] {
        let mut received = Received::default();
        received.read_until_caught_up(&mut subscription).await?;
        assert_eq!(received.caught_up_at, [2]);
        received
            .read_until(&mut subscription, sentinel_id, true)
            .await?;
        assert_eq!(received.events.len(), 2);
        assert_eq!(received.events[1].id, sentinel_id);
    }
    Ok(())
}

/// Many short switches from catch-up to live, each racing a writer, under each sync policy:
/// every one delivers the whole stream and the whole of `$all`, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_switches_to_live_lose_nothing_under_every_sync_policy() -> TestResult {
    let interval = caskade_engine::Options {
        sync: SyncPolicy::Interval(Duration::from_millis(1)),
        ..caskade_engine::Options::default()
    };
    let policies = [
        (options(), 60, 20),
        (
            Options {
                engine: interval,
                ..Options::default()
            },
            60,
            20,
        ),
        (always_options(), 15, 8),
    ];
    for (options, rounds, appends) in policies {
        for round in 0..rounds {
            let dir = tempfile::tempdir()?;
            let store = EventStore::open(dir.path(), options.clone())?;
            append(&store, "target", vec![event("Before", 0)]).await?;
            let writer = {
                let store = store.clone();
                thread::spawn(move || -> Result<(), Error> {
                    for n in 0..appends {
                        let stream = if n % 2 == 0 { "target" } else { "other" };
                        store.append(stream, ExpectedVersion::Any, &[event("Written", n)])?;
                    }
                    Ok(())
                })
            };
            let mut stream = store.subscribe_stream("target", SubscribeFrom::Start)?;
            let mut all = store.subscribe_all(SubscribeFrom::Start, EventFilter::all());
            tokio::task::spawn_blocking(move || writer.join())
                .await?
                .map_err(|_| "writer thread panicked")??;
            let sentinel = event("Sentinel", round);
            let sentinel_id = sentinel.id;
            append(&store, "target", vec![sentinel]).await?;
            let mut from_stream = Received::default();
            from_stream
                .read_until(&mut stream, sentinel_id, true)
                .await?;
            assert_eq!(from_stream.events, store.read_stream_to_vec("target")?);
            let mut from_all = Received::default();
            from_all.read_until(&mut all, sentinel_id, true).await?;
            assert_eq!(from_all.events, read_all(&store, ReadAll::forwards())?);
            for received in [from_stream, from_all] {
                assert_eq!(received.caught_up_at.len(), 1, "round {round}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_now_delivers_only_events_appended_afterwards() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    for n in 0..20 {
        append(&store, "a", vec![event("Old", n)]).await?;
    }
    let mut all_now = store.subscribe_all(SubscribeFrom::Now, EventFilter::all());
    let mut stream_now = store.subscribe_stream("a", SubscribeFrom::Now)?;
    let mut all_received = Received::default();
    let mut stream_received = Received::default();
    all_received.read_until_caught_up(&mut all_now).await?;
    stream_received
        .read_until_caught_up(&mut stream_now)
        .await?;
    assert!(all_received.events.is_empty());
    assert!(stream_received.events.is_empty());

    let mut new_ids = Vec::new();
    for n in 0..5 {
        let result = append(&store, "a", vec![event("New", n)]).await?;
        assert_eq!(result.next_expected_version, StreamVersion(20 + n));
        new_ids.push(read_all(&store, ReadAll::backwards().max_count(1))?[0].id);
    }
    let last = *new_ids.last().ok_or("no new events")?;
    all_received.read_until(&mut all_now, last, true).await?;
    stream_received
        .read_until(&mut stream_now, last, true)
        .await?;
    let ids = |received: &Received| received.events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&all_received), new_ids);
    assert_eq!(ids(&stream_received), new_ids);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_to_catch_up_and_live_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let write_mix = |store: EventStore, round: u64| {
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            for n in 0..6 {
                let n = round * 100 + n;
                store.append("acct-1", ExpectedVersion::Any, &[event("AccountOpened", n)])?;
                store.append(
                    "acct-2",
                    ExpectedVersion::Any,
                    &[event("MoneyDeposited", n)],
                )?;
                store.append(
                    "order-1",
                    ExpectedVersion::Any,
                    &[event("AccountLinked", n)],
                )?;
                store.append("order-2", ExpectedVersion::Any, &[event("OrderPlaced", n)])?;
            }
            Ok(())
        })
    };
    write_mix(store.clone(), 0).await??;

    let filters = [
        (
            "stream prefix acct-",
            EventFilter::all().stream_prefix("acct-"),
        ),
        (
            "type prefix Account",
            EventFilter::all().event_type_prefix("Account"),
        ),
        (
            "type regex Opened|Placed$",
            EventFilter::all().event_type_regex("Opened|Placed$")?,
        ),
        (
            "stream prefix order- and type prefix Account",
            EventFilter::all()
                .stream_prefix("order-")
                .event_type_prefix("Account"),
        ),
    ];
    let mut subscriptions: Vec<(&str, EventFilter, Subscription, Received)> = Vec::new();
    for (name, filter) in filters {
        let subscription = store.subscribe_all(SubscribeFrom::Start, filter.clone());
        subscriptions.push((name, filter, subscription, Received::default()));
    }
    for (_, _, subscription, received) in &mut subscriptions {
        received.read_until_caught_up(subscription).await?;
    }
    write_mix(store.clone(), 1).await??;
    // The last `acct-` event, then the last event of all; each filter matches one of them
    // as its last event.
    let last_acct = event("AccountOpened", 998);
    let last_acct_id = last_acct.id;
    append(&store, "acct-9", vec![last_acct]).await?;
    let last_order = event("AccountPlaced", 999);
    let last_order_id = last_order.id;
    append(&store, "order-9", vec![last_order]).await?;

    let everything = read_all(&store, ReadAll::forwards())?;
    for (name, filter, subscription, received) in &mut subscriptions {
        let until = if name.starts_with("stream prefix acct-") {
            last_acct_id
        } else {
            last_order_id
        };
        received.read_until(subscription, until, true).await?;
        let expected = read_all(&store, ReadAll::forwards().filter(filter.clone()))?;
        assert!(
            expected.len() > 2 && expected.len() < everything.len(),
            "{name}"
        );
        assert_eq!(received.events, expected, "{name}");
        assert_eq!(received.caught_up_at.len(), 1, "{name}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_still_receives_every_event_in_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "slow", vec![event("First", 0)]).await?;
    let mut all = store.subscribe_all(SubscribeFrom::Start, EventFilter::all());
    let mut stream = store.subscribe_stream("slow", SubscribeFrom::Start)?;
    // Neither subscription is polled while thousands of events are appended, far more than
    // their buffers hold.
    let writer = store.clone();
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        for n in 0..500u64 {
            let events: Vec<EventData> = (0..10).map(|i| event("Bulk", n * 10 + i)).collect();
            let stream = if n % 5 == 0 { "elsewhere" } else { "slow" };
            writer.append(stream, ExpectedVersion::Any, &events)?;
        }
        Ok(())
    })
    .await??;
    let last = event("Last", 0);
    let last_id = last.id;
    append(&store, "slow", vec![last]).await?;

    let mut all_received = Received::default();
    all_received.read_until(&mut all, last_id, true).await?;
    assert_eq!(all_received.events, read_all(&store, ReadAll::forwards())?);
    assert_eq!(all_received.events.len(), 5002);
    assert_eq!(all_received.caught_up_at.len(), 1);

    let mut stream_received = Received::default();
    stream_received
        .read_until(&mut stream, last_id, true)
        .await?;
    assert_eq!(stream_received.events, store.read_stream_to_vec("slow")?);
    assert_eq!(stream_received.events.len(), 4002);
    assert_eq!(stream_received.caught_up_at.len(), 1);
    Ok(())
}

/// Waits until the runtime has `count` alive tasks, yielding in between.
async fn wait_for_alive_tasks(count: usize) -> TestResult {
    let metrics = tokio::runtime::Handle::current().metrics();
    tokio::time::timeout(WAIT, async {
        while metrics.num_alive_tasks() != count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .map_err(|_| {
        format!(
            "alive tasks stayed at {}, not {count}",
            metrics.num_alive_tasks()
        )
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_subscription_ends_its_task() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "a", vec![event("E", 0)]).await?;
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    let mut all = store.subscribe_all(SubscribeFrom::Start, EventFilter::all());
    let mut stream = store.subscribe_stream("a", SubscribeFrom::Start)?;
    Received::default().read_until_caught_up(&mut all).await?;
    Received::default()
        .read_until_caught_up(&mut stream)
        .await?;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        baseline + 2
    );

    drop(all);
    drop(stream);
    wait_for_alive_tasks(baseline).await?;

    // The store carries on, and a new subscription works.
    append(&store, "a", vec![event("E", 1)]).await?;
    let mut again = store.subscribe_stream("a", SubscribeFrom::Start)?;
    let mut received = Received::default();
    received.read_until_caught_up(&mut again).await?;
    assert_eq!(received.events.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_when_the_store_is_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "a", vec![event("E", 0)]).await?;
    let mut all = store.subscribe_all(SubscribeFrom::Start, EventFilter::all());
    let mut stream = store.subscribe_stream("a", SubscribeFrom::Start)?;
    Received::default().read_until_caught_up(&mut all).await?;
    Received::default()
        .read_until_caught_up(&mut stream)
        .await?;
    drop(store);
    for subscription in [&mut all, &mut stream] {
        let end = tokio::time::timeout(WAIT, subscription.next()).await?;
        assert!(
            end.is_none(),
            "expected the end of the subscription, got {end:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_a_tombstoned_stream_fails_with_stream_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "gone", vec![event("E", 0)]).await?;
    store.tombstone_stream("gone", ExpectedVersion::Any)?;
    for from in [
        SubscribeFrom::Start,
        SubscribeFrom::Now,
        SubscribeFrom::After(StreamVersion(0)),
    ] {
        match store.subscribe_stream("gone", from) {
            Err(Error::StreamDeleted { stream }) => assert_eq!(stream, "gone"),
            Err(other) => panic!("expected StreamDeleted, got {other:?}"),
            Ok(_) => panic!("subscribing to a tombstoned stream from {from:?} succeeded"),
        }
    }
    // `$all` subscriptions skip its events.
    append(&store, "kept", vec![event("E", 1)]).await?;
    let mut all = store.subscribe_all(SubscribeFrom::Start, EventFilter::all());
    let mut received = Received::default();
    received.read_until_caught_up(&mut all).await?;
    let streams: Vec<&str> = received.events.iter().map(|e| &*e.stream).collect();
    assert_eq!(streams, ["kept"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_tombstoned_while_subscribed_delivers_stream_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append(&store, "doomed", vec![event("E", 0)]).await?;
    let mut subscription = store.subscribe_stream("doomed", SubscribeFrom::Start)?;
    let mut received = Received::default();
    received.read_until_caught_up(&mut subscription).await?;
    assert_eq!(received.events.len(), 1);

    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.tombstone_stream("doomed", ExpectedVersion::Any))
        .await??;
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Ok(Some(Err(Error::StreamDeleted { stream }))) => assert_eq!(stream, "doomed"),
        Ok(other) => panic!("expected StreamDeleted, got {other:?}"),
        Err(elapsed) => panic!("the subscription did not report the tombstone: {elapsed}"),
    }
    // Then it ends.
    assert!(
        tokio::time::timeout(WAIT, subscription.next())
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn checkpoints_cover_what_a_filter_skips_and_resume_without_loss() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    // 700 positions, of which the filter wants three, one near each end and one inside.
    store.append("wanted-1", ExpectedVersion::Any, &[event("A", 0)])?;
    for n in 1..700 {
        let stream = if n == 350 { "wanted-2" } else { "noise" };
        store.append(stream, ExpectedVersion::Any, &[event("A", n)])?;
    }
    let filter = EventFilter::all().stream_prefix("wanted-");
    let every = std::num::NonZeroU64::new(100).ok_or("100 is not zero")?;
    let mut subscription =
        store.subscribe_all_with_checkpoints(SubscribeFrom::Start, filter.clone(), every);
    let mut delivered = Vec::new();
    let mut checkpoints = Vec::new();
    loop {
        match next_message(&mut subscription).await? {
            SubscriptionMessage::Event(event) => delivered.push(event.position),
            SubscriptionMessage::Checkpoint(position) => {
                // Everything matching at or before a checkpoint came before it.
                assert!(delivered.iter().all(|&at| at <= position));
                checkpoints.push(position);
            }
            SubscriptionMessage::CaughtUp => break,
        }
    }
    assert_eq!(delivered, [Position(0), Position(350)]);
    assert!(
        checkpoints.windows(2).all(|pair| pair[0] < pair[1]),
        "{checkpoints:?}"
    );
    // One per 100 positions examined, the last just before going live.
    let expected: Vec<Position> = (1..=7).map(|n| Position(n * 100 - 1)).collect();
    assert_eq!(checkpoints, expected);

    store.append("wanted-3", ExpectedVersion::Any, &[event("A", 700)])?;
    let SubscriptionMessage::Event(live) = next_message(&mut subscription).await? else {
        return Err("the live event should come next".into());
    };
    assert_eq!(live.position, Position(700));

    // Resuming after any checkpoint delivers exactly the matching events after it.
    for &checkpoint in &checkpoints {
        let mut resumed = store.subscribe_all_with_checkpoints(
            SubscribeFrom::After(checkpoint),
            filter.clone(),
            every,
        );
        let expected: Vec<Position> = [350, 700]
            .into_iter()
            .map(Position)
            .filter(|&at| at > checkpoint)
            .collect();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            if let SubscriptionMessage::Event(event) = next_message(&mut resumed).await? {
                got.push(event.position);
            }
        }
        assert_eq!(got, expected, "resumed after {checkpoint}");
    }
    Ok(())
}
