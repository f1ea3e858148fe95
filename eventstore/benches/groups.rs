//! Persistent subscription groups: events per second delivered and acked by 1, 4 and 16
//! competing consumers of one group, next to a catch-up subscription reading the same
//! events from the same store, and the latency from an ack to the durable checkpoint that
//! covers it.
//!
//! One store (the default `SyncPolicy::Always`) holds a 20,000-event stream (100 bytes of
//! JSON each), appended in batches of 1,000. Each iteration of a group case creates a group
//! from the start (untimed), connects its consumers (each with room for 10 events in flight,
//! the official clients' default), and times until they have received and acked every event,
//! one ack per event, the group's settings KurrentDB's defaults; the group is then deleted.
//! Each iteration of `catch_up` subscribes to the stream from the start and times until every
//! event has arrived.
//!
//! After criterion's report the bench runs each group case and `catch_up` in turn, about a
//! second each, five times, and prints the medians with the ratio to `catch_up` (taken within
//! each round, so both sides meet the same machine). Then it measures ack-to-checkpoint
//! latency: a group that checkpoints after every finished event (`min_checkpoint_count` and
//! `max_checkpoint_count` 1) gets one event at a time; the time from its ack to the group's
//! info reporting a checkpoint at it (the write is durable before the info reports it) is
//! taken 300 times and printed as percentiles.
//!
//! Run: `cargo bench -p caskade-eventstore --bench groups`
//! (quick: `-- --warm-up-time 1 --measurement-time 3`).

mod common;
use common::{Runner, interleaved, test_mode};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caskade_eventstore::{
    ContentType, EventData, EventFilter, EventStore, ExpectedVersion, GroupSettings, GroupStart,
    GroupTarget, Options, StreamVersion, SubscribeFrom, SubscriptionMessage,
};
use criterion::{Criterion, SamplingMode, Throughput};
use uuid::Uuid;

/// Events in the stream every case reads.
const EVENTS: u64 = 20_000;
/// Events per append while loading.
const LOAD_BATCH: usize = 1_000;
/// The stream.
const STREAM: &str = "orders-1";
/// Events each consumer may have in flight.
const CONSUMER_BUFFER: u32 = 10;
/// Round trips measured for the ack-to-checkpoint latency.
const LATENCY_SAMPLES: usize = 300;

fn event(n: usize) -> EventData {
    EventData {
        id: Uuid::new_v4(),
        event_type: "OrderPlaced".to_owned(),
        content_type: ContentType::Json,
        data: format!(
            r#"{{"n":{n},"customer":"customer-000042","total":"129.95","currency":"EUR"}}"#
        )
        .into_bytes(),
        metadata: Vec::new(),
    }
}

fn build_store(dir: &std::path::Path) -> EventStore {
    let engine = caskade_engine::Options {
        tuning: common::tuning(),
        ..caskade_engine::Options::default()
    };
    let store = EventStore::open(
        dir,
        Options {
            engine,
            ..Options::default()
        },
    )
    .expect("opening a fresh event store succeeds");
    let mut n = 0;
    while n < EVENTS as usize {
        let events: Vec<EventData> = (n..n + LOAD_BATCH).map(event).collect();
        store
            .append(STREAM, ExpectedVersion::Any, &events)
            .expect("loading the store succeeds");
        n += LOAD_BATCH;
    }
    store
}

/// One pass of a group with `consumers` consumers over the whole stream: the time from the
/// first connect to the last ack.
async fn group_pass(store: &EventStore, consumers: usize, pass: u64) -> Duration {
    let target = GroupTarget::Stream(STREAM.to_owned());
    let name = format!("bench-{consumers}-{pass}");
    let settings = GroupSettings {
        start: GroupStart::Start,
        ..GroupSettings::default()
    };
    store
        .create_group(target.clone(), &name, EventFilter::all(), settings)
        .expect("creating the group succeeds");
    let started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let done = Arc::new(std::sync::Mutex::new(Some(done)));
    let mut tasks = Vec::with_capacity(consumers);
    for index in 0..consumers {
        let mut consumer = store
            .connect_group(&target, &name, &format!("c{index}"), CONSUMER_BUFFER)
            .await
            .expect("connecting succeeds");
        let (acked, done) = (Arc::clone(&acked), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(delivered)) = consumer.next().await {
                if consumer.ack(vec![delivered.event.id]).await.is_err() {
                    break;
                }
                if acked.fetch_add(1, Ordering::Relaxed) + 1 == EVENTS
                    && let Some(done) = done.lock().expect("not poisoned").take()
                {
                    let _ = done.send(());
                }
            }
        }));
    }
    finished.await.expect("the consumers ack every event");
    let elapsed = started.elapsed();
    for task in tasks {
        task.abort();
    }
    store
        .delete_group(&target, &name)
        .expect("deleting the group succeeds");
    elapsed
}

/// One catch-up subscription over the whole stream.
async fn catch_up_pass(store: &EventStore) -> Duration {
    let started = Instant::now();
    let mut subscription = store
        .subscribe_stream(STREAM, SubscribeFrom::Start)
        .expect("subscribing succeeds");
    let mut received = 0;
    while received < EVENTS {
        match subscription.next().await {
            Some(Ok(SubscriptionMessage::Event(_))) => received += 1,
            Some(Ok(_)) => {}
            other => panic!("the subscription ended early: {other:?}"),
        }
    }
    started.elapsed()
}

fn runner<'a, F: Future<Output = Duration>>(
    runtime: &'a tokio::runtime::Runtime,
    mut pass: impl FnMut(u64) -> F + 'a,
) -> Runner<'a> {
    let mut passes = 0;
    Box::new(move |count| {
        let mut elapsed = Duration::ZERO;
        for _ in 0..count {
            passes += 1;
            elapsed += runtime.block_on(pass(passes));
        }
        elapsed
    })
}

/// Percentiles of ack-to-checkpoint latency over `samples` single-event round trips.
async fn checkpoint_latency(store: &EventStore, samples: usize) -> Vec<Duration> {
    let target = GroupTarget::Stream("latency-1".to_owned());
    let settings = GroupSettings {
        start: GroupStart::Start,
        min_checkpoint_count: 1,
        max_checkpoint_count: 1,
        ..GroupSettings::default()
    };
    store
        .create_group(target.clone(), "latency", EventFilter::all(), settings)
        .expect("creating the group succeeds");
    let mut consumer = store
        .connect_group(&target, "latency", "c", 1)
        .await
        .expect("connecting succeeds");
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples {
        store
            .append("latency-1", ExpectedVersion::Any, &[event(n)])
            .expect("appending succeeds");
        let delivered = consumer
            .next()
            .await
            .expect("the group delivers")
            .expect("without error");
        let version = delivered.event.version;
        let acked = Instant::now();
        consumer
            .ack(vec![delivered.event.id])
            .await
            .expect("acking succeeds");
        loop {
            let info = store
                .group_info(&target, "latency")
                .await
                .expect("the group has info");
            if info.last_checkpointed >= Some(version.0) {
                break;
            }
            tokio::task::yield_now().await;
        }
        latencies.push(acked.elapsed());
        assert_eq!(version, StreamVersion(n as u64));
    }
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short sorted list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let dir = tempfile::Builder::new()
        .prefix("caskade-bench-groups-")
        .tempdir()
        .expect("creating a temporary directory succeeds");
    let store = build_store(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building a runtime succeeds");
    let mut catch_up = runner(&runtime, |_| catch_up_pass(&store));
    let mut cases: Vec<(usize, Runner<'_>)> = [1, 4, 16]
        .into_iter()
        .map(|consumers| {
            let store = &store;
            let run = runner(&runtime, move |pass| group_pass(store, consumers, pass));
            (consumers, run)
        })
        .collect();
    {
        let mut group = c.benchmark_group("groups");
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Elements(EVENTS));
        group.bench_function("catch_up", |b| b.iter_custom(&mut catch_up));
        for (consumers, run) in &mut cases {
            group.bench_function(format!("consumers_{consumers}"), |b| {
                b.iter_custom(&mut *run);
            });
        }
        group.finish();
    }
    c.final_summary();
    if !test_mode() {
        println!();
        println!(
            "{EVENTS} events delivered and acked, events/s, against a catch-up subscription \
             of the same events; medians of 5 interleaved rounds of about 1 s per side"
        );
        println!(
            "{:<14} {:>14} {:>14} {:>8}",
            "case", "group", "catch-up", "ratio"
        );
        for (consumers, run) in &mut cases {
            let figures = interleaved(EVENTS, run, &mut catch_up);
            println!(
                "{:<14} {:>14.0} {:>14.0} {:>7.3}x",
                format!("consumers_{consumers}"),
                figures.ours,
                figures.peer,
                figures.ratio
            );
        }
    }
    let samples = if test_mode() { 5 } else { LATENCY_SAMPLES };
    let latencies = runtime.block_on(checkpoint_latency(&store, samples));
    println!();
    println!(
        "ack to durable checkpoint, checkpointing every event, {samples} round trips: \
         p50 {:?}, p90 {:?}, p99 {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99)
    );
    drop(cases);
    drop(catch_up);
    drop(runtime);
    store.close().expect("closing the store succeeds");
}
