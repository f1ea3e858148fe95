//! `caskade bench`: a load generator that drives a running server over gRPC.
//!
//! Workloads, each over fresh streams named `bench-<run>-...` so runs never collide:
//! - `append`: durable appends of one event per call with an exact expected version, from
//!   N concurrent clients (each its own connection and stream);
//! - `batch`: appends of `--batch` events per call;
//! - `read-stream`: reading one stream of `--events` events from start to end;
//! - `read-all`: reading `$all` from the start;
//! - `subscribe`: a live `$all` subscriber while one client appends single events, measuring
//!   the time from an append's acknowledgement to the subscriber receiving that event.
//!
//! Each prints throughput and the p50/p99/p99.9 latency of its calls (hdrhistogram).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use caskade_proto::v1 as pb;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
type Streams = pb::streams_client::StreamsClient<crate::Authed>;

/// One workload's figures.
pub(crate) struct Figures {
    pub(crate) workload: String,
    pub(crate) clients: usize,
    pub(crate) calls: u64,
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    /// Microseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Figures {
    fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        format!(
            "{:<22} clients {:>3}  {:>10.0} calls/s  {:>11.0} events/s  p50 {:>8} us  p99 {:>8} us  p99.9 {:>8} us",
            self.workload,
            self.clients,
            self.calls as f64 / secs,
            self.events as f64 / secs,
            self.latency.value_at_quantile(0.5),
            self.latency.value_at_quantile(0.99),
            self.latency.value_at_quantile(0.999),
        )
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("the bounds are valid")
}

fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>22} [{bar:40}] {pos}/{len} ({per_sec})")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn event(sequence: u64) -> pb::EventData {
    // About 100 bytes of JSON, the size the engine and event-store benches use.
    let data = format!(
        r#"{{"sequence":{sequence:>12},"account":"acct-000042","amount":12345,"note":"benchmark payload"}}"#
    );
    pb::EventData {
        id: String::new(),
        r#type: "BenchEvent".to_owned(),
        content_type: pb::ContentType::Json.into(),
        data: data.into_bytes(),
        metadata: Vec::new(),
    }
}

fn expected(next: u64) -> pb::ExpectedVersion {
    let kind = match next.checked_sub(1) {
        None => pb::expected_version::Kind::NoStream(pb::Empty {}),
        Some(last) => pb::expected_version::Kind::Exact(last),
    };
    pb::ExpectedVersion { kind: Some(kind) }
}

/// Appends `calls` calls of `batch` events to `stream` through `client`, recording latency.
async fn append_calls(
    mut client: Streams,
    stream: String,
    calls: u64,
    batch: u64,
    latency: &Mutex<Histogram<u64>>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let mut local = histogram();
    let mut next = 0;
    for _ in 0..calls {
        let request = pb::AppendRequest {
            stream: stream.clone(),
            expected_version: Some(expected(next)),
            events: (0..batch).map(|i| event(next + i)).collect(),
        };
        let started = Instant::now();
        client.append(request).await.context("append")?;
        local.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        next += batch;
        bar.inc(1);
    }
    latency.lock().await.add(&local)?;
    Ok(())
}

/// Durable appends of `batch` events per call from `clients` concurrent connections.
pub(crate) async fn appends(
    connect: &(impl AsyncFn() -> anyhow::Result<Streams> + Sync),
    run: &str,
    clients: usize,
    calls: u64,
    batch: u64,
) -> anyhow::Result<Figures> {
    let workload = if batch == 1 {
        "append 1 event".to_owned()
    } else {
        format!("append {batch} events")
    };
    let per_client = calls.div_ceil(clients as u64);
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(connect().await?);
    }
    let latency = Arc::new(Mutex::new(histogram()));
    let bar = progress(per_client * clients as u64, &workload);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in connections.into_iter().enumerate() {
        let (latency, bar) = (Arc::clone(&latency), bar.clone());
        let stream = format!("bench-{run}-b{batch}-c{clients}-{i}");
        tasks.spawn(async move {
            append_calls(client, stream, per_client, batch, &latency, &bar).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let total_calls = per_client * clients as u64;
    let latency = Arc::try_unwrap(latency)
        .map_err(|_| anyhow::anyhow!("a task outlived the run"))?
        .into_inner();
    Ok(Figures {
        workload,
        clients,
        calls: total_calls,
        events: total_calls * batch,
        elapsed,
        latency,
    })
}

/// Reads a whole stream (or `$all` when `stream` is `None`), recording the time between
/// messages (each a batch of events) as the latency.
async fn read(
    client: &mut Streams,
    stream: Option<String>,
    workload: &str,
) -> anyhow::Result<Figures> {
    let target = match stream {
        Some(stream) => pb::read_request::Target::Stream(stream),
        None => pb::read_request::Target::All(pb::Empty {}),
    };
    let request = pb::ReadRequest {
        target: Some(target),
        direction: pb::Direction::Forwards.into(),
        from: None,
        max_count: 0,
        filter: None,
    };
    let mut latency = histogram();
    let started = Instant::now();
    let mut messages = client.read(request).await?.into_inner();
    let mut events = 0;
    let mut last = Instant::now();
    while let Some(message) = messages.message().await? {
        let now = Instant::now();
        latency.record(
            u64::try_from((now - last).as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
        last = now;
        events += message.events.len() as u64;
    }
    Ok(Figures {
        workload: workload.to_owned(),
        clients: 1,
        calls: 1,
        events,
        elapsed: started.elapsed(),
        latency,
    })
}

/// Writes a stream of `events` events in batches of 1,000 and reads it back.
pub(crate) async fn read_stream(
    client: &mut Streams,
    run: &str,
    events: u64,
) -> anyhow::Result<Figures> {
    let stream = format!("bench-{run}-read");
    let mut next = 0;
    while next < events {
        let batch = (events - next).min(1000);
        client
            .append(pb::AppendRequest {
                stream: stream.clone(),
                expected_version: Some(expected(next)),
                events: (0..batch).map(|i| event(next + i)).collect(),
            })
            .await?;
        next += batch;
    }
    read(client, Some(stream), "read stream").await
}

/// Reads `$all` from the start.
pub(crate) async fn read_all(client: &mut Streams) -> anyhow::Result<Figures> {
    read(client, None, "read $all").await
}

/// A live subscriber on `$all` while a writer appends `events` single events: the latency is
/// from the append's acknowledgement to the subscriber receiving the event (0 if it arrived
/// first).
pub(crate) async fn subscribe(
    connect: &(impl AsyncFn() -> anyhow::Result<Streams> + Sync),
    run: &str,
    events: u64,
) -> anyhow::Result<Figures> {
    let prefix = format!("bench-{run}-sub");
    let mut subscriber = connect().await?;
    let request = pb::SubscribeRequest {
        target: Some(pb::subscribe_request::Target::All(pb::Empty {})),
        from: Some(pb::subscribe_request::From::Now(pb::Empty {})),
        filter: Some(pb::Filter {
            stream_prefix: prefix.clone(),
            ..pb::Filter::default()
        }),
    };
    let mut messages = subscriber.subscribe(request).await?.into_inner();
    match messages.message().await?.and_then(|m| m.message) {
        Some(pb::subscribe_response::Message::CaughtUp(_)) => {}
        _ => bail!("the subscription did not start with caught_up"),
    }
    let acknowledged: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut writer = connect().await?;
    let acks = Arc::clone(&acknowledged);
    let bar = progress(events, "subscribe latency");
    let started = Instant::now();
    let writing = tokio::spawn(async move {
        for n in 0..events {
            let reply = writer
                .append(pb::AppendRequest {
                    stream: prefix.clone(),
                    expected_version: Some(expected(n)),
                    events: vec![event(n)],
                })
                .await?
                .into_inner();
            let now = Instant::now();
            acks.lock()
                .expect("no thread panics holding this lock")
                .insert(reply.last_position, now);
        }
        anyhow::Ok(())
    });
    let mut received = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
    while (received.len() as u64) < events {
        match messages.message().await?.and_then(|m| m.message) {
            Some(pb::subscribe_response::Message::Event(event)) => {
                received.push((event.position, Instant::now()));
                bar.inc(1);
            }
            Some(pb::subscribe_response::Message::CaughtUp(_)) | None => {}
        }
    }
    writing.await??;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let acks = acknowledged
        .lock()
        .expect("no thread panics holding this lock");
    let mut latency = histogram();
    for (position, at) in received {
        let acked = acks
            .get(&position)
            .context("an event arrived that was never acknowledged")?;
        let micros = at.saturating_duration_since(*acked).as_micros();
        latency.record(u64::try_from(micros).unwrap_or(u64::MAX).max(1))?;
    }
    Ok(Figures {
        workload: "subscribe ack->event".to_owned(),
        clients: 1,
        calls: events,
        events,
        elapsed,
        latency,
    })
}

/// The whole suite, printed as it goes.
pub(crate) async fn run_suite(
    connect: impl AsyncFn() -> anyhow::Result<Streams> + Sync,
    clients: &[usize],
    events: u64,
) -> anyhow::Result<Vec<Figures>> {
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut all = Vec::new();
    let mut report = |figures: Figures| {
        println!("{}", figures.line());
        all.push(figures);
    };
    for &n in clients {
        report(appends(&connect, &run, n, events, 1).await?);
    }
    report(appends(&connect, &run, 1, (events / 100).max(1), 100).await?);
    report(appends(&connect, &run, 1, (events / 1000).max(1), 1000).await?);
    let mut client = connect().await?;
    report(read_stream(&mut client, &run, events).await?);
    report(read_all(&mut client).await?);
    report(subscribe(&connect, &run, events.min(5000)).await?);
    Ok(all)
}
