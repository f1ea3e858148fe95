//! A persistent subscription group through a crash of the server: `caskade serve` as a child
//! process with the default sync policy (every acknowledged write on disk before its
//! answer), driven with KurrentDB's official Rust client, killed with SIGKILL while a
//! consumer holds events in flight, then restarted on the same directory. The group resumes
//! right after its last durable checkpoint: nothing finished at or before it comes back,
//! nothing after it is lost.

mod process;

use std::future::Future;
use std::time::{Duration, Instant};

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, GetPersistentSubscriptionInfoOptions,
    PersistentSubscription, PersistentSubscriptionEvent, PersistentSubscriptionOptions,
    ResolvedEvent, StreamPosition, SubscribeToPersistentSubscriptionOptions,
};
use process::{Server, TIMEOUT, TestResult};

const STREAM: &str = "orders";
const GROUP: &str = "billing";
/// Events in the stream, revisions `0..EVENTS`.
const EVENTS: u64 = 200;
/// Events received and acked, in order, before the crash.
const ACKED: u64 = 120;
/// Events received after the last ack and never acked: in flight when the server dies.
const HELD: u64 = 5;
/// The consumer's buffer: how many events the group may have in flight to it.
const BUFFER: usize = 10;
/// How long the checkpoint may lag the acks before the test fails.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// A client of the server at `addr`, connected the way an application would be, without TLS.
fn client(addr: &str) -> TestResult<Client> {
    let settings: ClientSettings = format!("esdb://{addr}?tls=false").parse()?;
    Ok(Client::new(settings)?)
}

/// Awaits `future`, failing the test (naming `what`) if it takes longer than [`TIMEOUT`].
async fn within<F: Future>(what: &str, future: F) -> TestResult<F::Output> {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .map_err(|_| format!("timed out after {TIMEOUT:?} waiting for {what}").into())
}

/// The next event the group hands `subscription`, with its revision and retry count.
async fn next_event(
    subscription: &mut PersistentSubscription,
) -> TestResult<(u64, usize, ResolvedEvent)> {
    loop {
        let message = within("a persistent subscription event", async {
            subscription.next_subscription_event().await
        })
        .await??;
        if let PersistentSubscriptionEvent::EventAppeared { retry_count, event } = message {
            return Ok((event.get_original_event().revision, retry_count, event));
        }
    }
}

/// The group's last checkpointed revision, as `GetInfo` reports it.
async fn last_checkpointed(client: &Client) -> TestResult<Option<u64>> {
    let options = GetPersistentSubscriptionInfoOptions::default();
    let info = within(
        "the group's info",
        client.get_persistent_subscription_info(STREAM, GROUP, &options),
    )
    .await??;
    Ok(info.stats.last_checkpointed_event_revision)
}

/// Polls until the group reports `revision` as its last checkpoint, which it does only once
/// the checkpoint is written; fails if it goes past it or takes over [`CHECKPOINT_WAIT`].
async fn wait_for_checkpoint(client: &Client, revision: u64) -> TestResult {
    let deadline = Instant::now() + CHECKPOINT_WAIT;
    loop {
        let last = last_checkpointed(client).await?;
        if last == Some(revision) {
            return Ok(());
        }
        if last.is_some_and(|last| last > revision) || Instant::now() >= deadline {
            return Err(format!("the last checkpoint is {last:?}, waiting for {revision}").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Appends the events, creates the group from the start with a checkpoint after every
/// finished event, acks the first [`ACKED`] and holds [`HELD`] more, and waits for the
/// checkpoint of the last ack. Returns the client and the still open subscription.
async fn consume_until_the_crash(addr: &str) -> TestResult<(Client, PersistentSubscription)> {
    let client = client(addr)?;
    let events: Vec<EventData> = (0..EVENTS)
        .map(|n| EventData::json("Ordered", &serde_json::json!({ "n": n })))
        .collect::<Result<_, _>>()?;
    within(
        "the append",
        client.append_to_stream(STREAM, &AppendToStreamOptions::default(), events),
    )
    .await??;
    let group = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .checkpoint_lower_bound(1)
        .checkpoint_upper_bound(1)
        // No retry by timeout while the test runs: what is in flight stays in flight.
        .message_timeout(Duration::from_secs(600));
    within(
        "the group's creation",
        client.create_persistent_subscription(STREAM, GROUP, &group),
    )
    .await??;
    let options = SubscribeToPersistentSubscriptionOptions::default().buffer_size(BUFFER);
    let mut subscription = within(
        "the subscription",
        client.subscribe_to_persistent_subscription(STREAM, GROUP, &options),
    )
    .await??;
    for expected in 0..ACKED + HELD {
        let (revision, retry_count, event) = next_event(&mut subscription).await?;
        assert_eq!((revision, retry_count), (expected, 0));
        if revision < ACKED {
            within("an ack", subscription.ack(&event)).await??;
        }
    }
    wait_for_checkpoint(&client, ACKED - 1).await?;
    let info = within(
        "the group's info",
        client.get_persistent_subscription_info(
            STREAM,
            GROUP,
            &GetPersistentSubscriptionInfoOptions::default(),
        ),
    )
    .await??;
    assert!(
        info.stats.total_in_flight_messages >= usize::try_from(HELD)?,
        "the held events are in flight: {:?}",
        info.stats
    );
    Ok((client, subscription))
}

/// Subscribes to the restarted server's group and checks that it resumes right after
/// `checkpoint`: that checkpoint reported before any new ack, then every later revision,
/// in order, each once, and a checkpoint at the end once they are all acked.
async fn resume_after_the_crash(addr: &str, checkpoint: u64) -> TestResult {
    let client = client(addr)?;
    assert_eq!(last_checkpointed(&client).await?, Some(checkpoint));
    let options = SubscribeToPersistentSubscriptionOptions::default().buffer_size(BUFFER);
    let mut subscription = within(
        "the subscription after the restart",
        client.subscribe_to_persistent_subscription(STREAM, GROUP, &options),
    )
    .await??;
    let (first, _, event) = next_event(&mut subscription).await?;
    assert_eq!(
        first,
        checkpoint + 1,
        "nothing at or before the checkpoint comes back"
    );
    assert_eq!(last_checkpointed(&client).await?, Some(checkpoint));
    within("an ack", subscription.ack(&event)).await??;
    let mut delivered = vec![first];
    while delivered.len() < usize::try_from(EVENTS - first)? {
        let (revision, _, event) = next_event(&mut subscription).await?;
        delivered.push(revision);
        within("an ack", subscription.ack(&event)).await??;
    }
    let expected: Vec<u64> = (checkpoint + 1..EVENTS).collect();
    assert_eq!(delivered, expected, "nothing after the checkpoint is lost");
    wait_for_checkpoint(&client, EVENTS - 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_keeps_every_ack_before_its_last_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start_durable(dir.path(), logs.path(), &[])?;
    let (client, subscription) = consume_until_the_crash(server.addr()).await?;
    // Everything up to the last ack is checkpointed, and nothing later is acked.
    let checkpoint = ACKED - 1;
    server.kill9()?;
    drop((subscription, client));

    let server = Server::start_durable(dir.path(), logs.path(), &[])?;
    resume_after_the_crash(server.addr(), checkpoint)
        .await
        .map_err(|error| format!("{error}; log: {}", server.log_text()).into())
}
