//! The workloads, each over fresh streams named `bench-<run>-...` so that runs never collide:
//! - `append`: durable appends of one event per call with an expected-version check, from
//!   N concurrent clients (each its own connection and stream);
//! - `append N events`: appends of 100 and of 1,000 events per call;
//! - `read stream`: reading one stream from start to end;
//! - `read $all`: reading the whole log from the start;
//! - `random read`: reads of one event at a random version of a stream, from N concurrent
//!   clients, each read checked to return that event;
//! - `subscribe`: a live subscriber while one client appends single events, measuring on one
//!   clock the time from sending an append to the subscriber receiving its event, beside
//!   the same appends' round trips;
//! - the transport floor: health checks, which touch no disk.
//!
//! The append workloads build every call's events before the clock starts, so the figures are
//! the servers', not those of the load generator formatting payloads.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use caskade_server::client::Authed;
use tokio::sync::Mutex;

use crate::client::{Client, EventAddress, Events, Positions, StreamCursor};
use crate::figures::{Figures, histogram, micros};

/// A progress bar on a terminal, nothing otherwise.
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

/// Durable appends of `batch` events per call from `clients` concurrent connections.
pub(crate) async fn appends(
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
pub(crate) type Health = tonic_health::pb::health_client::HealthClient<Authed>;

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
pub(crate) async fn read_stream(
    client: &mut Client,
    run: &str,
    events: u64,
) -> anyhow::Result<Figures> {
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
pub(crate) async fn read_all(client: &mut Client) -> anyhow::Result<Figures> {
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

/// The stream the random reads read, and where its events are.
pub(crate) struct ReadTarget {
    stream: String,
    len: u64,
    /// On `UmaDB`, each event's position; elsewhere reads name versions and this is empty.
    positions: Vec<u64>,
}

impl ReadTarget {
    /// A fresh stream of `events` events, written in batches of 1,000.
    pub(crate) async fn write(
        client: &mut Client,
        run: &str,
        events: u64,
    ) -> anyhow::Result<ReadTarget> {
        let stream = format!("bench-{run}-random");
        let mut cursor = StreamCursor::default();
        let mut positions = Vec::new();
        while cursor.next_version < events {
            let batch = (events - cursor.next_version).min(1000);
            let last = client.append(&stream, &mut cursor, batch).await?;
            if matches!(client, Client::UmaDb(_)) {
                // One writer: a call's events take consecutive positions.
                positions.extend(last + 1 - batch..=last);
            }
        }
        Ok(ReadTarget {
            stream,
            len: events,
            positions,
        })
    }

    /// An existing stream, as long as it is now.
    pub(crate) async fn existing(client: &mut Client, stream: &str) -> anyhow::Result<ReadTarget> {
        Ok(ReadTarget {
            stream: stream.to_owned(),
            len: client.stream_len(stream).await?,
            positions: Vec::new(),
        })
    }

    fn address(&self, index: u64) -> EventAddress {
        EventAddress {
            version: index,
            position: usize::try_from(index)
                .ok()
                .and_then(|index| self.positions.get(index).copied())
                .unwrap_or(0),
        }
    }
}

/// A small, fast pseudo-random generator (SplitMix64): the reads' versions only need to be
/// spread evenly, and each client draws its own sequence.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % bound
    }
}

/// `calls` reads of one event at a random version of `target`, split across `clients`
/// concurrent connections, each call one read of one event.
pub(crate) async fn random_reads(
    connect: &(impl AsyncFn() -> anyhow::Result<Client> + Sync),
    target: &ReadTarget,
    clients: usize,
    calls: u64,
) -> anyhow::Result<Figures> {
    let per_client = calls.div_ceil(clients as u64);
    let mut readers = Vec::with_capacity(clients);
    for i in 0..clients {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        #[expect(clippy::cast_possible_truncation, reason = "any 64 bits make a seed")]
        let seed = seed as u64 ^ (i as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
        let mut random = SplitMix64(seed);
        let addresses: Vec<EventAddress> = (0..per_client)
            .map(|_| target.address(random.next_below(target.len)))
            .collect();
        readers.push((connect().await?, addresses));
    }
    let bar = progress(per_client * clients as u64, "random read");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut client, addresses) in readers {
        let (stream, bar) = (target.stream.clone(), bar.clone());
        tasks.spawn(async move {
            let mut local = histogram();
            for at in addresses {
                let call = Instant::now();
                client.read_one(&stream, at).await?;
                local.record(micros(call.elapsed()))?;
                bar.inc(1);
            }
            anyhow::Ok(local)
        });
    }
    let mut latency = histogram();
    while let Some(done) = tasks.join_next().await {
        latency.add(done??)?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let total_calls = per_client * clients as u64;
    Ok(Figures {
        workload: "random read".to_owned(),
        clients,
        calls: total_calls,
        events: total_calls,
        elapsed,
        latency,
    })
}

/// A live subscriber while a writer appends `events` single events, one after another: the
/// time from sending each append to the subscriber receiving its event, which is what a
/// user waiting on a projection feels, and the appends' own round trips, on the same clock.
pub(crate) async fn subscribe(
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
