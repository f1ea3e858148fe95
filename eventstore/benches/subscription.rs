//! Live subscription latency: the time from an append's acknowledgement (`append` returned)
//! to a live `$all` subscriber receiving that event.
//!
//! A Tokio multi-thread runtime runs a subscription to `$all` from `Now`; once it has caught
//! up, a writer thread appends single events one at a time, durably (the default
//! `SyncPolicy::Always`), noting the instant each append returns. Each event's data (about
//! 100 bytes of JSON) carries its sequence number, and the subscriber notes the instant it
//! receives each one. The bench prints the percentiles of receipt minus acknowledgement over
//! the measured events, after a warm-up, and how many events arrived before their append
//! returned (the subscription is woken as the append publishes its position, which is just
//! before `append` returns; those count as zero).
//!
//! SQLite has no push subscription (a peer would poll), so only Caskade's figures are
//! printed.
//!
//! A plain `main` (criterion is not used: the figure is a distribution, not a rate).
//! Run: `cargo bench -p caskade-eventstore --bench subscription`; `-- --events N` sets the
//! number of measured events (default 5,000). Criterion's options are accepted and ignored,
//! and `-- --test` (as `cargo test --benches` passes none, also then) runs a few events only.

#![expect(clippy::doc_markdown, reason = "SQLite is a name in prose, not code")]

use std::time::{Duration, Instant};

use caskade_eventstore::{
    ContentType, EventData, EventFilter, EventStore, ExpectedVersion, Options, StreamVersion,
    SubscribeFrom, SubscriptionMessage,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Measured events unless `--events` says otherwise.
const DEFAULT_EVENTS: usize = 5_000;
/// Events appended and received before measuring starts.
const WARM_UP_EVENTS: usize = 200;
/// The stream the writer appends to.
const STREAM: &str = "latency-1";

/// The event data: a sequence number and padding, about 100 bytes of JSON.
#[derive(Serialize, Deserialize)]
struct Payload {
    seq: usize,
    account: String,
    currency: String,
    reference: String,
}

fn event(seq: usize) -> EventData {
    let payload = Payload {
        seq,
        account: "account-000042".to_owned(),
        currency: "EUR".to_owned(),
        reference: "invoice-2024-0000000000042".to_owned(),
    };
    EventData {
        id: Uuid::new_v4(),
        event_type: "Deposited".to_owned(),
        content_type: ContentType::Json,
        data: serde_json::to_vec(&payload).expect("serializing the payload succeeds"),
        metadata: Vec::new(),
    }
}

/// How many events to measure, from the command line.
fn measured_events() -> usize {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test") {
        return 20;
    }
    args.iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(DEFAULT_EVENTS, |n| {
            n.parse().expect("--events takes a number of events")
        })
}

/// When an append was called and when it returned.
#[derive(Clone, Copy)]
struct Append {
    called: Instant,
    returned: Instant,
}

/// Appends `total` single events to `STREAM`, one at a time, and returns when each append
/// was called and returned, by sequence number.
fn write(store: &EventStore, total: usize) -> Vec<Append> {
    let mut appends = Vec::with_capacity(total);
    let mut expected = ExpectedVersion::NoStream;
    for seq in 0..total {
        let event = event(seq);
        let called = Instant::now();
        let result = store
            .append(STREAM, expected, &[event])
            .expect("an append at the expected version succeeds");
        appends.push(Append {
            called,
            returned: Instant::now(),
        });
        expected = ExpectedVersion::Exact(StreamVersion(result.next_expected_version.0));
    }
    appends
}

/// Sorted latencies, printed as percentiles.
struct Distribution(Vec<Duration>);

impl Distribution {
    fn new(latencies: impl Iterator<Item = Duration>) -> Self {
        let mut sorted: Vec<Duration> = latencies.collect();
        sorted.sort_unstable();
        Distribution(sorted)
    }

    /// The `p`-th percentile (0 to 100), nearest rank.
    fn percentile(&self, p: usize) -> f64 {
        let rank = (p * self.0.len()).div_ceil(100);
        micros(self.0[rank.clamp(1, self.0.len()) - 1])
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean = self.0.iter().sum::<Duration>() / u32::try_from(self.0.len()).unwrap_or(1);
        write!(
            f,
            "p50 {:>7.1}  p90 {:>7.1}  p99 {:>8.1}  max {:>8.1}  mean {:>7.1}",
            self.percentile(50),
            self.percentile(90),
            self.percentile(99),
            self.percentile(100),
            micros(mean)
        )
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let measured = measured_events();
    let total = WARM_UP_EVENTS + measured;
    let dir = tempfile::Builder::new()
        .prefix("caskade-bench-subscription-")
        .tempdir()
        .expect("creating a temporary directory succeeds");
    // The default options: SyncPolicy::Always, every append durable before it returns.
    let store =
        EventStore::open(dir.path(), Options::default()).expect("opening a fresh store succeeds");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building a Tokio runtime succeeds");

    let started = Instant::now();
    let (appends, receipts) = runtime.block_on(async {
        let mut subscription = store.subscribe_all(SubscribeFrom::Now, EventFilter::all());
        match subscription.next().await {
            Some(Ok(SubscriptionMessage::CaughtUp)) => {}
            other => panic!("a subscription from Now catches up at once, got {other:?}"),
        }
        // Appends block on the disk, so they run on a thread of their own.
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || write(&store, total))
        };
        let mut receipts = vec![None; total];
        for _ in 0..total {
            let message = subscription
                .next()
                .await
                .expect("the subscription lasts while the store is open")
                .expect("the subscription reads every event");
            let received = Instant::now();
            let SubscriptionMessage::Event(event) = message else {
                panic!("a subscription catches up only once");
            };
            let payload: Payload = event.json().expect("the event data is the bench's payload");
            receipts[payload.seq] = Some(received);
        }
        let appends = writer.join().expect("the writer thread does not panic");
        (appends, receipts)
    });
    let elapsed = started.elapsed();

    let measured_pairs = || {
        appends
            .iter()
            .zip(&receipts)
            .skip(WARM_UP_EVENTS)
            .map(|(append, receipt)| (*append, receipt.expect("every appended event was received")))
    };
    let early = measured_pairs()
        .filter(|(append, receipt)| *receipt < append.returned)
        .count();
    let from_ack = Distribution::new(
        measured_pairs()
            .map(|(append, receipt)| receipt.saturating_duration_since(append.returned)),
    );
    let from_call = Distribution::new(
        measured_pairs().map(|(append, receipt)| receipt.saturating_duration_since(append.called)),
    );

    println!(
        "subscription: {total} single-event durable appends ({WARM_UP_EVENTS} warm-up) in \
         {:.2} s, {:.0} appends/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!("latency to a live $all subscriber over {measured} events, microseconds:");
    println!("  append returned -> event received:  {from_ack}");
    println!("  append called   -> event received:  {from_call}  (includes the sync)");
    println!(
        "  {early} of {measured} events reached the subscriber before their append returned \
         (counted as 0 above)"
    );
    println!("  SQLite has no push subscription: no peer figure (a SQLite reader would poll)");

    drop(runtime);
    store.close().expect("closing the store succeeds");
}
