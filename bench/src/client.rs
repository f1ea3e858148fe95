//! The servers under test as one [`Client`]: Caskade's `Streams` service; the same server's
//! KurrentDB API through KurrentDB's official Rust client (the `kurrentdb` crate), as an
//! application using that client would call it; or `UmaDB`'s `DCB` service with the same
//! workloads mapped onto it. On `UmaDB` a stream is a tag, and the expected-version check is
//! its append condition: fail if any event with the stream's tag exists after the position
//! of the stream's last event.

use anyhow::{Context, bail};
use caskade_proto::v1 as pb;
use caskade_server::client::Authed;
use hdrhistogram::Histogram;
use std::time::Instant;
use tonic::transport::Channel;

use crate::figures::{histogram, micros};

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

type Streams = pb::streams_client::StreamsClient<Authed>;
type Dcb = umadb::dcb_client::DcbClient<Channel>;

/// A connection to the server under test.
pub(crate) enum Client {
    /// Caskade's `Streams` service.
    Caskade(Streams),
    /// The KurrentDB API, through KurrentDB's client.
    Kurrent(Kurrent),
    /// `UmaDB`'s `DCB` service.
    UmaDb(Dcb),
}

/// KurrentDB's client, and the credentials it sends with every call.
#[derive(Clone)]
pub(crate) struct Kurrent {
    pub(crate) client: kurrentdb::Client,
    pub(crate) authentication: Option<kurrentdb::Authentication>,
}

/// `options` carrying `kurrent`'s credentials, when it has any. (The client's option types
/// share no public trait, so this is a macro.)
macro_rules! authenticated {
    ($options:expr, $kurrent:expr) => {
        match &$kurrent.authentication {
            Some(authentication) => $options.authenticated(authentication.clone()),
            None => $options,
        }
    };
}

/// What a writer knows of its stream, to state the expected version.
#[derive(Default, Clone, Copy)]
pub(crate) struct StreamCursor {
    pub(crate) next_version: u64,
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
pub(crate) enum Events {
    Caskade(Vec<pb::EventData>),
    Kurrent(Vec<kurrentdb::EventData>),
    UmaDb(Vec<umadb::Event>),
}

impl Client {
    /// `count` events for `stream`, the first of them its event number `first`.
    pub(crate) fn events(&self, stream: &str, first: u64, count: u64) -> Events {
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
            Client::Kurrent(_) => Events::Kurrent(
                (first..first + count)
                    .map(|sequence| {
                        // The same JSON bytes as the other servers', sent as they are.
                        let json =
                            String::from_utf8(payload(sequence)).expect("the payload is UTF-8");
                        let raw = serde_json::value::RawValue::from_string(json)
                            .expect("the payload is JSON");
                        kurrentdb::EventData::json("BenchEvent", &raw)
                            .expect("a raw JSON value serializes")
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
    pub(crate) async fn append(
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
    pub(crate) async fn append_events(
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
            (Client::Kurrent(kurrent), Events::Kurrent(events)) => {
                let expected = match next.checked_sub(1) {
                    None => kurrentdb::StreamState::NoStream,
                    Some(last) => kurrentdb::StreamState::StreamRevision(last),
                };
                let count = events.len();
                let options = kurrentdb::AppendToStreamOptions::default().stream_state(expected);
                let options = authenticated!(options, kurrent);
                let written = kurrent
                    .client
                    .append_to_stream(stream, &options, events)
                    .await
                    .context("append")?;
                (written.position.commit, count)
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
    pub(crate) async fn read(
        &mut self,
        stream: Option<&str>,
    ) -> anyhow::Result<(u64, Histogram<u64>)> {
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
            Client::Kurrent(kurrent) => {
                let mut read = if let Some(stream) = stream {
                    let options = kurrentdb::ReadStreamOptions::default();
                    let options = authenticated!(options, kurrent);
                    kurrent.client.read_stream(stream, &options).await?
                } else {
                    let options = kurrentdb::ReadAllOptions::default();
                    let options = authenticated!(options, kurrent);
                    kurrent.client.read_all(&options).await?
                };
                // The client hands over one event at a time, not messages.
                while read.next().await?.is_some() {
                    note(1)?;
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

/// Where one event of a stream is, as a single-event read names it: its version on
/// Caskade's APIs, its position on `UmaDB`, where a stream is a tag and reads start at a
/// position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventAddress {
    pub(crate) version: u64,
    pub(crate) position: u64,
}

impl Client {
    /// Reads the one event of `stream` at `at` and checks that it is that event.
    pub(crate) async fn read_one(&mut self, stream: &str, at: EventAddress) -> anyhow::Result<()> {
        // What the read returned, in the terms it was asked in: versions, or UmaDB positions.
        let (asked, returned) = match self {
            Client::Caskade(client) => {
                let request = pb::ReadRequest {
                    target: Some(pb::read_request::Target::Stream(stream.to_owned())),
                    from: Some(pb::read_request::From::At(at.version)),
                    max_count: 1,
                    ..pb::ReadRequest::default()
                };
                let mut messages = client.read(request).await?.into_inner();
                let mut versions = Vec::new();
                while let Some(message) = messages.message().await? {
                    versions.extend(message.events.iter().map(|event| event.version));
                }
                (at.version, versions)
            }
            Client::Kurrent(kurrent) => {
                let options = kurrentdb::ReadStreamOptions::default()
                    .position(kurrentdb::StreamPosition::Position(at.version))
                    .max_count(1);
                let options = authenticated!(options, kurrent);
                let mut read = kurrent.client.read_stream(stream, &options).await?;
                let mut versions = Vec::new();
                while let Some(event) = read.next().await? {
                    versions.push(event.get_original_event().revision);
                }
                (at.version, versions)
            }
            Client::UmaDb(client) => {
                let request = umadb::ReadRequest {
                    query: Some(stream_query(stream)),
                    start: Some(at.position),
                    limit: Some(1),
                    ..umadb::ReadRequest::default()
                };
                let mut messages = client.read(request).await?.into_inner();
                let mut positions = Vec::new();
                while let Some(message) = messages.message().await? {
                    positions.extend(message.events.iter().map(|event| event.position));
                }
                (at.position, positions)
            }
        };
        if returned != [asked] {
            bail!("reading event {asked} of {stream} returned {returned:?}");
        }
        Ok(())
    }

    /// The number of events in an existing `stream`, from a read of its newest event.
    pub(crate) async fn stream_len(&mut self, stream: &str) -> anyhow::Result<u64> {
        let newest = match self {
            Client::Caskade(client) => {
                let request = pb::ReadRequest {
                    target: Some(pb::read_request::Target::Stream(stream.to_owned())),
                    direction: pb::Direction::Backwards.into(),
                    max_count: 1,
                    ..pb::ReadRequest::default()
                };
                let mut messages = client.read(request).await?.into_inner();
                let mut newest = None;
                while let Some(message) = messages.message().await? {
                    newest = newest.or(message.events.first().map(|event| event.version));
                }
                newest
            }
            Client::Kurrent(kurrent) => {
                let options = kurrentdb::ReadStreamOptions::default()
                    .backwards()
                    .position(kurrentdb::StreamPosition::End)
                    .max_count(1);
                let options = authenticated!(options, kurrent);
                let mut read = kurrent.client.read_stream(stream, &options).await?;
                read.next()
                    .await?
                    .map(|event| event.get_original_event().revision)
            }
            Client::UmaDb(_) => bail!("an existing stream can only be read on Caskade"),
        };
        newest
            .map(|version| version + 1)
            .with_context(|| format!("the stream {stream} has no events"))
    }
}

/// A subscription delivering event positions, whichever the server.
pub(crate) enum Positions {
    Caskade(tonic::Streaming<pb::SubscribeResponse>),
    Kurrent(Box<kurrentdb::Subscription>),
    UmaDb(tonic::Streaming<umadb::SubscribeResponse>),
}

impl Positions {
    /// Subscribes to `stream` from now on.
    pub(crate) async fn open(client: &mut Client, stream: &str) -> anyhow::Result<Positions> {
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
            Client::Kurrent(kurrent) => {
                let options = kurrentdb::SubscribeToStreamOptions::default()
                    .start_from(kurrentdb::StreamPosition::End);
                let options = authenticated!(options, kurrent);
                let mut subscription = kurrent.client.subscribe_to_stream(stream, &options).await;
                // Writing starts once the server has the subscription, so that no event is
                // appended before it.
                match subscription.next_subscription_event().await? {
                    kurrentdb::SubscriptionEvent::Confirmed(_) => {
                        Ok(Positions::Kurrent(Box::new(subscription)))
                    }
                    other => bail!("the subscription did not start with a confirmation: {other:?}"),
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
    pub(crate) async fn next(&mut self) -> anyhow::Result<Vec<u64>> {
        match self {
            Positions::Caskade(messages) => match messages.message().await?.and_then(|m| m.message)
            {
                Some(pb::subscribe_response::Message::Event(event)) => Ok(vec![event.position]),
                Some(pb::subscribe_response::Message::CaughtUp(_)) => Ok(Vec::new()),
                None => bail!("the subscription ended"),
            },
            Positions::Kurrent(subscription) => {
                match subscription.next_subscription_event().await? {
                    kurrentdb::SubscriptionEvent::EventAppeared(event) => {
                        Ok(vec![event.get_original_event().position.commit])
                    }
                    _ => Ok(Vec::new()),
                }
            }
            Positions::UmaDb(messages) => match messages.message().await? {
                Some(message) => Ok(message.events.iter().map(|e| e.position).collect()),
                None => bail!("the subscription ended"),
            },
        }
    }
}
