//! `caskade bench`: a load generator that drives a running server over gRPC, and optionally
//! `UmaDB` (another Rust event store with a gRPC API) with the same workloads in the same run.
//!
//! Workloads, each over fresh streams named `bench-<run>-...` so runs never collide:
//! - `append`: durable appends of one event per call with an expected-version check, from
//!   N concurrent clients (each its own connection and stream);
//! - `append N events`: appends of 100 and of 1,000 events per call, `--batch-calls` calls
//!   each;
//! - `read stream`: reading one stream of `--events` events from start to end;
//! - `read $all`: reading the whole log from the start;
//! - `subscribe`: a live subscriber while one client appends single events, measuring on one
//!   clock the time from sending an append to the subscriber receiving its event, beside
//!   the same appends' round trips.
//!
//! On `UmaDB` a stream is a tag, and the expected-version check is its append condition: fail
//! if any event with the stream's tag exists after the position of the stream's last event.
//! Each workload prints throughput and the p50/p99/p99.9 latency of its calls (hdrhistogram).
//! The append workloads build every call's events before the clock starts, so the figures are
//! the servers', not those of the load generator formatting payloads. `--only` picks parts of
//! the suite ([`Part`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use caskade_proto::v1 as pb;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// The `UmaDB` protocol, compiled from the vendored `proto/umadb/v1/umadb.proto`.
pub(crate) mod umadb {
    #![allow(
        missing_docs,
        unreachable_pub,
        dead_code,
        clippy::pedantic,
        reason = "generated code; which lints fire depends on what the bench uses"
    )]
    tonic::include_proto!("umadb.v1");
}

type Streams = pb::streams_client::StreamsClient<crate::Authed>;
type Dcb = umadb::dcb_client::DcbClient<Channel>;

/// A connection to the server under test.
pub(crate) enum Client {
    /// Caskade's `Streams` service.
    Caskade(Streams),
    /// `UmaDB`'s `DCB` service.
    UmaDb(Dcb),
}

/// What a writer knows of its stream, to state the expected version.
#[derive(Default, Clone, Copy)]
struct StreamCursor {
    next_version: u64,
    last_position: Option<u64>,
}

fn payload(sequence: u64) -> Vec<u8> {
    // About 100 bytes of JSON, the size the engine and event-store benches use.
    format!(
        r#"{{"sequence":{sequence:>12},"account":"acct-000042","amount":12345,"note":"benchmark payload"}}"#
    )
    .into_bytes()
}

fn tag(stream: &str) -> String {
    format!("stream:{stream}")
}

fn stream_query(stream: &str) -> umadb::Query {
    umadb::Query {
        items: vec![umadb::QueryItem {
            types: Vec::new(),
            tags: vec![tag(stream)],
        }],
    }
}

/// The events of one append call, built before it is timed.
enum Events {
    Caskade(Vec<pb::EventData>),
    UmaDb(Vec<umadb::Event>),
}

impl Client {
    /// `count` events for `stream`, the first of them its event number `first`.
    fn events(&self, stream: &str, first: u64, count: u64) -> Events {
        match self {
            Client::Caskade(_) => Events::Caskade(
                (first..first + count)
                    .map(|sequence| pb::EventData {
                        id: String::new(),
                        r#type: "BenchEvent".to_owned(),
                        content_type: pb::ContentType::Json.into(),
                        data: payload(sequence),
                        metadata: Vec::new(),
                    })
                    .collect(),
            ),
            Client::UmaDb(_) => Events::UmaDb(
                (first..first + count)
                    .map(|sequence| umadb::Event {
                        event_type: "BenchEvent".to_owned(),
                        tags: vec![tag(stream)],
                        data: payload(sequence),
                        uuid: uuid::Uuid::new_v4().to_string(),
                        metadata: Vec::new(),
                    })
                    .collect(),
            ),
        }
    }

    /// Appends `count` new events to `stream`; see [`Client::append_events`].
    async fn append(
        &mut self,
        stream: &str,
        cursor: &mut StreamCursor,
        count: u64,
    ) -> anyhow::Result<u64> {
        let events = self.events(stream, cursor.next_version, count);
        self.append_events(stream, cursor, events).await
    }

    /// Appends `events` to `stream`, expecting it to be where `cursor` says; returns the
    /// position of the last event appended.
    async fn append_events(
        &mut self,
        stream: &str,
        cursor: &mut StreamCursor,
        events: Events,
    ) -> anyhow::Result<u64> {
        let next = cursor.next_version;
        let (position, count) = match (self, events) {
            (Client::Caskade(client), Events::Caskade(events)) => {
                let kind = match next.checked_sub(1) {
                    None => pb::expected_version::Kind::NoStream(pb::Empty {}),
                    Some(last) => pb::expected_version::Kind::Exact(last),
                };
                let count = events.len();
                let request = pb::AppendRequest {
                    stream: stream.to_owned(),
                    expected_version: Some(pb::ExpectedVersion { kind: Some(kind) }),
                    events,
                };
                let response = client.append(request).await.context("append")?;
                (response.into_inner().last_position, count)
            }
            (Client::UmaDb(client), Events::UmaDb(events)) => {
                let count = events.len();
                let condition = umadb::AppendCondition {
                    fail_if_events_match: Some(stream_query(stream)),
                    after: cursor.last_position,
                };
                let request = umadb::AppendRequest {
                    events,
                    condition: Some(condition),
                    tracking_info: None,
                };
                let response = client.append(request).await.context("append")?;
                (response.into_inner().position, count)
            }
            _ => bail!("events built for one server sent to the other"),
        };
        cursor.next_version += count as u64;
        cursor.last_position = Some(position);
        Ok(position)
    }

    /// Reads a whole stream (or everything when `stream` is `None`); returns the events read
    /// and the gaps between response messages.
    async fn read(&mut self, stream: Option<&str>) -> anyhow::Result<(u64, Histogram<u64>)> {
        let mut gaps = histogram();
        let mut events = 0;
        let mut last = Instant::now();
        let mut note = |n: usize| -> anyhow::Result<()> {
            let now = Instant::now();
            gaps.record(micros(now - last))?;
            last = now;
            events += n as u64;
            Ok(())
        };
        match self {
            Client::Caskade(client) => {
                let target = match stream {
                    Some(stream) => pb::read_request::Target::Stream(stream.to_owned()),
                    None => pb::read_request::Target::All(pb::Empty {}),
                };
                let request = pb::ReadRequest {
                    target: Some(target),
                    ..pb::ReadRequest::default()
                };
                let mut messages = client.read(request).await?.into_inner();
                while let Some(message) = messages.message().await? {
                    note(message.events.len())?;
                }
            }
            Client::UmaDb(client) => {
                let request = umadb::ReadRequest {
                    query: stream.map(stream_query),
                    ..umadb::ReadRequest::default()
                };
                let mut messages = client.read(request).await?.into_inner();
                while let Some(message) = messages.message().await? {
                    note(message.events.len())?;
                }
            }
        }
        Ok((events, gaps))
    }
}

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
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{:<22} clients {:>3}  {:>10.0} calls/s  {:>11.0} events/s  p50 {:>8} us  p99 {:>8} us  p99.9 {:>8} us",
            self.workload,
            self.clients,
            self.calls as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON),
            self.events_per_second(),
            self.latency.value_at_quantile(0.5),
            self.latency.value_at_quantile(0.99),
            self.latency.value_at_quantile(0.999),
        )
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("the bounds are valid")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    crate::progress_bar(total, what, "{msg:>22} [{bar:40}] {pos}/{len} ({per_sec})")
}

/// Durable appends of `batch` events per call from `clients` concurrent connections.
async fn appends(
    connect: &(impl AsyncFn() -> anyhow::Result<Client> + Sync),
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
    // Each client's connection, stream and calls, the calls' events built before the clock
    // starts: the figures are the server's, not those of building payloads.
    let mut writers = Vec::with_capacity(clients);
    for i in 0..clients {
        let client = connect().await?;
        let stream = format!("bench-{run}-b{batch}-c{clients}-{i}");
        let calls: Vec<Events> = (0..per_client)
            .map(|call| client.events(&stream, call * batch, batch))
            .collect();
        writers.push((client, stream, calls));
    }
    let latency = Arc::new(Mutex::new(histogram()));
    let bar = progress(per_client * clients as u64, &workload);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut client, stream, calls) in writers {
        let (latency, bar) = (Arc::clone(&latency), bar.clone());
        tasks.spawn(async move {
            let mut local = histogram();
            let mut cursor = StreamCursor::default();
            for events in calls {
                let call = Instant::now();
                client.append_events(&stream, &mut cursor, events).await?;
                local.record(micros(call.elapsed()))?;
                bar.inc(1);
            }
            latency.lock().await.add(&local)?;
            anyhow::Ok(())
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

/// A connection to the standard health service of the server under test.
pub(crate) type Health = tonic_health::pb::health_client::HealthClient<crate::Authed>;

/// The transport's floor: `grpc.health.v1` checks from `clients` concurrent connections,
/// calls that touch no disk and do next to nothing. On a small machine a durable append's
/// round trip cannot beat this one's, so it bounds what the append workloads can reach.
pub(crate) async fn transport_floor(
    connect: impl AsyncFn() -> anyhow::Result<Health>,
    clients: usize,
    calls: u64,
) -> anyhow::Result<Figures> {
    let per_client = calls.div_ceil(clients as u64);
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(connect().await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in connections {
        tasks.spawn(async move {
            let mut local = histogram();
            for _ in 0..per_client {
                let call = Instant::now();
                client
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .context("health check")?;
                local.record(micros(call.elapsed()))?;
            }
            anyhow::Ok(local)
        });
    }
    let mut latency = histogram();
    while let Some(done) = tasks.join_next().await {
        latency.add(done??)?;
    }
    let total_calls = per_client * clients as u64;
    Ok(Figures {
        workload: "health check".to_owned(),
        clients,
        calls: total_calls,
        events: total_calls,
        elapsed: started.elapsed(),
        latency,
    })
}

/// Writes a stream of `events` events in batches of 1,000 and reads it back.
async fn read_stream(client: &mut Client, run: &str, events: u64) -> anyhow::Result<Figures> {
    let stream = format!("bench-{run}-read");
    let mut cursor = StreamCursor::default();
    while cursor.next_version < events {
        let batch = (events - cursor.next_version).min(1000);
        client.append(&stream, &mut cursor, batch).await?;
    }
    let started = Instant::now();
    let (read, latency) = client.read(Some(&stream)).await?;
    if read != events {
        bail!("read {read} events of a stream of {events}");
    }
    Ok(Figures {
        workload: "read stream".to_owned(),
        clients: 1,
        calls: 1,
        events: read,
        elapsed: started.elapsed(),
        latency,
    })
}

/// Reads everything from the start.
async fn read_all(client: &mut Client) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let (events, latency) = client.read(None).await?;
    Ok(Figures {
        workload: "read $all".to_owned(),
        clients: 1,
        calls: 1,
        events,
        elapsed: started.elapsed(),
        latency,
    })
}

/// A subscription delivering event positions, whichever the server.
enum Positions {
    Caskade(tonic::Streaming<pb::SubscribeResponse>),
    UmaDb(tonic::Streaming<umadb::SubscribeResponse>),
}

impl Positions {
    /// Subscribes to `stream` from now on.
    async fn open(client: &mut Client, stream: &str) -> anyhow::Result<Positions> {
        match client {
            Client::Caskade(client) => {
                let request = pb::SubscribeRequest {
                    target: Some(pb::subscribe_request::Target::Stream(stream.to_owned())),
                    from: Some(pb::subscribe_request::From::Now(pb::Empty {})),
                    filter: None,
                };
                let mut messages = client.subscribe(request).await?.into_inner();
                match messages.message().await?.and_then(|m| m.message) {
                    Some(pb::subscribe_response::Message::CaughtUp(_)) => {
                        Ok(Positions::Caskade(messages))
                    }
                    _ => bail!("the subscription did not start with caught_up"),
                }
            }
            Client::UmaDb(client) => {
                let head = client
                    .head(umadb::HeadRequest {})
                    .await?
                    .into_inner()
                    .position;
                let request = umadb::SubscribeRequest {
                    query: Some(stream_query(stream)),
                    after: head,
                    batch_size: None,
                };
                Ok(Positions::UmaDb(
                    client.subscribe(request).await?.into_inner(),
                ))
            }
        }
    }

    /// The positions of the next message's events, with the time they arrived.
    async fn next(&mut self) -> anyhow::Result<Vec<u64>> {
        match self {
            Positions::Caskade(messages) => match messages.message().await?.and_then(|m| m.message)
            {
                Some(pb::subscribe_response::Message::Event(event)) => Ok(vec![event.position]),
                Some(pb::subscribe_response::Message::CaughtUp(_)) => Ok(Vec::new()),
                None => bail!("the subscription ended"),
            },
            Positions::UmaDb(messages) => match messages.message().await? {
                Some(message) => Ok(message.events.iter().map(|e| e.position).collect()),
                None => bail!("the subscription ended"),
            },
        }
    }
}

/// A live subscriber while a writer appends `events` single events, one after another: the
/// time from sending each append to the subscriber receiving its event, which is what a
/// user waiting on a projection feels, and the appends' own round trips, on the same clock.
async fn subscribe(
    connect: &(impl AsyncFn() -> anyhow::Result<Client> + Sync),
    run: &str,
    events: u64,
) -> anyhow::Result<Vec<Figures>> {
    let stream = format!("bench-{run}-sub");
    let mut subscriber = connect().await?;
    let mut positions = Positions::open(&mut subscriber, &stream).await?;
    // Each appended position: when its append was sent, and when it was acknowledged.
    let acknowledged: Arc<std::sync::Mutex<HashMap<u64, (Instant, Instant)>>> = Arc::default();
    let mut writer = connect().await?;
    let (acks, name) = (Arc::clone(&acknowledged), stream.clone());
    let bar = progress(events, "subscribe latency");
    let started = Instant::now();
    let writing = tokio::spawn(async move {
        let mut cursor = StreamCursor::default();
        for _ in 0..events {
            let sent = Instant::now();
            let position = writer.append(&name, &mut cursor, 1).await?;
            let acked = Instant::now();
            acks.lock()
                .expect("no thread panics holding this lock")
                .insert(position, (sent, acked));
        }
        anyhow::Ok(())
    });
    let mut received = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
    while (received.len() as u64) < events {
        let batch = positions.next().await?;
        let now = Instant::now();
        bar.inc(batch.len() as u64);
        received.extend(batch.into_iter().map(|position| (position, now)));
    }
    writing.await??;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let acks = acknowledged
        .lock()
        .expect("no thread panics holding this lock");
    let (mut delivered, mut round_trips) = (histogram(), histogram());
    for (position, at) in received {
        let (sent, acked) = acks
            .get(&position)
            .context("an event arrived that was never acknowledged")?;
        delivered.record(micros(at.saturating_duration_since(*sent)))?;
        round_trips.record(micros(acked.saturating_duration_since(*sent)))?;
    }
    let figures = |workload: &str, latency| Figures {
        workload: workload.to_owned(),
        clients: 1,
        calls: events,
        events,
        elapsed,
        latency,
    };
    Ok(vec![
        figures("subscribe send->event", delivered),
        figures("subscribe append rtt", round_trips),
    ])
}

/// A part of the suite, as named on `caskade bench --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// Single-event appends, once per `--clients` count.
    Append,
    /// Appends of 100 events per call.
    Batch100,
    /// Appends of 1,000 events per call.
    Batch1000,
    /// Reading one whole stream.
    ReadStream,
    /// Reading `$all` from the start.
    ReadAll,
    /// Send-to-subscriber latency, beside the same appends' round trips.
    Subscribe,
    /// The transport floor: health checks, once per `--clients` count.
    Floor,
}

/// Every part, in the order the suite runs them.
pub(crate) const ALL_PARTS: [Part; 7] = [
    Part::Append,
    Part::Batch100,
    Part::Batch1000,
    Part::ReadStream,
    Part::ReadAll,
    Part::Subscribe,
    Part::Floor,
];

/// One workload of the suite.
#[derive(Debug, Clone, Copy)]
enum Workload {
    Appends {
        clients: usize,
        batch: u64,
        calls: u64,
    },
    ReadStream,
    ReadAll,
    Subscribe,
}

impl Workload {
    async fn run(
        self,
        connect: &(impl AsyncFn() -> anyhow::Result<Client> + Sync),
        run: &str,
        events: u64,
    ) -> anyhow::Result<Vec<Figures>> {
        let figures = match self {
            Workload::Appends {
                clients,
                batch,
                calls,
            } => appends(connect, run, clients, calls, batch).await?,
            Workload::ReadStream => read_stream(&mut connect().await?, run, events).await?,
            Workload::ReadAll => read_all(&mut connect().await?).await?,
            Workload::Subscribe => return subscribe(connect, run, events.min(5000)).await,
        };
        Ok(vec![figures])
    }
}

/// The whole suite against our server and, if given, the peer, printed as it goes. With a
/// peer, each workload runs against both before the next starts, so both meet the disk and
/// the machine in the same state. Returns our figures and the peer's.
pub(crate) async fn run_suite(
    ours: impl AsyncFn() -> anyhow::Result<Client> + Sync,
    peer: Option<impl AsyncFn() -> anyhow::Result<Client> + Sync>,
    parts: &[Part],
    clients: &[usize],
    events: u64,
    batch_calls: u64,
) -> anyhow::Result<(Vec<Figures>, Vec<Figures>)> {
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut workloads = Vec::new();
    for part in ALL_PARTS.into_iter().filter(|part| parts.contains(part)) {
        match part {
            Part::Append => workloads.extend(clients.iter().map(|&clients| Workload::Appends {
                clients,
                batch: 1,
                calls: events,
            })),
            Part::Batch100 => workloads.push(Workload::Appends {
                clients: 1,
                batch: 100,
                calls: batch_calls,
            }),
            Part::Batch1000 => workloads.push(Workload::Appends {
                clients: 1,
                batch: 1000,
                calls: batch_calls,
            }),
            Part::ReadStream => workloads.push(Workload::ReadStream),
            Part::ReadAll => workloads.push(Workload::ReadAll),
            Part::Subscribe => workloads.push(Workload::Subscribe),
            // Run by the caller, against our server only: the peer's health service is
            // not what is being compared.
            Part::Floor => {}
        }
    }
    let (mut our_figures, mut peer_figures) = (Vec::new(), Vec::new());
    for workload in workloads {
        let label = if peer.is_some() { "Caskade  " } else { "" };
        for figures in workload.run(&ours, &run, events).await? {
            println!("{label}{}", figures.line());
            our_figures.push(figures);
        }
        if let Some(peer) = &peer {
            for figures in workload.run(peer, &run, events).await? {
                println!("UmaDB    {}", figures.line());
                peer_figures.push(figures);
            }
        }
    }
    Ok((our_figures, peer_figures))
}

/// Prints Caskade's figures beside the peer's, with the ratios.
pub(crate) fn compare(caskade: &[Figures], peer: &[Figures]) {
    println!();
    println!(
        "{:<30} {:>14} {:>14} {:>8}",
        "workload", "Caskade", "UmaDB", "ratio"
    );
    for (ours, theirs) in caskade.iter().zip(peer) {
        let name = format!("{} x{}", ours.workload, ours.clients);
        if ours.workload.starts_with("subscribe") {
            let (a, b) = (
                ours.latency.value_at_quantile(0.5),
                theirs.latency.value_at_quantile(0.5),
            );
            println!(
                "{name:<30} {:>11} us {:>11} us {:>7.2}x  (p50 latency; lower is better)",
                a,
                b,
                b as f64 / a.max(1) as f64
            );
        } else {
            let (a, b) = (ours.events_per_second(), theirs.events_per_second());
            println!(
                "{name:<30} {a:>10.0} ev/s {b:>9.0} ev/s {:>7.2}x",
                a / b.max(f64::EPSILON)
            );
        }
    }
}
