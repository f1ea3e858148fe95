//! The `Streams`, `Kv` and `Admin` services: each method decodes its request with
//! [`convert`], calls the event store, and sends the answer encoded by [`convert`] (a
//! server stream in messages within the size limit).
//!
//! Every store call that touches the disk runs on the blocking pool (`spawn_blocking`), never
//! on the async workers; an append is submitted on the worker only when the engine says it
//! will not block (`try_begin_append`). Server-streaming reads run their iterator on a
//! blocking thread that feeds a bounded channel, so a slow client slows the read, not the
//! server's memory.

use std::pin::Pin;

use caskade_eventstore::{
    AppendResult, Error as StoreError, EventData, EventStore, ExpectedVersion, RecordedEvent,
    Subscription, SubscriptionMessage,
};
use caskade_proto::v1 as pb;
use futures_core::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::status::{join_status, store_status};

/// A stream of messages returned by a server-streaming RPC.
pub type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How often a scavenge reports its progress.
const SCAVENGE_PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Messages a server-streaming RPC buffers ahead of a slow client.
const STREAM_BUFFER: usize = 256;

/// Appends `events` and waits until they are durable; the outer error is the server's own
/// (a failed task), the inner the store's, for the caller to map as its API maps them.
///
/// Checking and submitting is CPU work unless the engine must start a new data file; only
/// then does it move to the blocking pool. Waiting for the group commit holds no thread
/// either way.
pub(crate) async fn submit_append(
    store: &EventStore,
    stream: String,
    expected: ExpectedVersion,
    events: Vec<EventData>,
) -> Result<caskade_eventstore::Result<AppendResult>, Status> {
    let pending = match store.try_begin_append(&stream, expected, &events) {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            let store = store.clone();
            let submitted =
                tokio::task::spawn_blocking(move || store.begin_append(&stream, expected, &events))
                    .await
                    .map_err(|e| join_status(&e))?;
            match submitted {
                Ok(pending) => pending,
                Err(error) => return Ok(Err(error)),
            }
        }
        Err(error) => return Ok(Err(error)),
    };
    Ok(pending.await)
}

/// Runs `work` on the blocking pool and maps its error to a status.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| join_status(&e))?
}

/// Items (events, streams) per response message at most.
const READ_BATCH_EVENTS: usize = 512;
/// Encoded bytes per response message at most, unless the configured message limit is lower.
const READ_BATCH_BYTES: usize = 1 << 20;

/// What one item adds to an encoded message whose only field is a repeated `item`: its
/// field's tag, length and body.
fn field_len(item: &impl prost::Message) -> usize {
    let len = item.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Groups read events into messages; see [`batched_within`].
fn batched(
    events: impl Iterator<Item = caskade_eventstore::Result<RecordedEvent>>,
    max_message: usize,
) -> impl Iterator<Item = Result<pb::ReadResponse, Status>> {
    let events = events.map(|event| event.map(convert::recorded).map_err(store_status));
    batched_within(events, max_message, |events| pb::ReadResponse { events })
}

/// Groups items into messages (made by `message`, whose only field is the repeated item) of
/// at most [`READ_BATCH_EVENTS`] items and at most `max_message` encoded bytes (or
/// [`READ_BATCH_BYTES`], if lower); an error ends the stream after the items before it. An
/// item too large for a message of its own ends it with `RESOURCE_EXHAUSTED` (the server
/// refuses to start with limits that allow one).
fn batched_within<T: prost::Message, M>(
    mut items: impl Iterator<Item = Result<T, Status>>,
    max_message: usize,
    message: impl Fn(Vec<T>) -> M,
) -> impl Iterator<Item = Result<M, Status>> {
    let limit = max_message.min(READ_BATCH_BYTES);
    let mut failed: Option<Status> = None;
    // An item that did not fit the message before: it opens the next one.
    let mut carried: Option<(T, usize)> = None;
    std::iter::from_fn(move || {
        let mut batch = Vec::new();
        let mut bytes = 0;
        if let Some((item, len)) = carried.take() {
            batch.push(item);
            bytes = len;
        }
        while failed.is_none() && batch.len() < READ_BATCH_EVENTS {
            let Some(item) = items.next() else { break };
            let item = match item {
                Ok(item) => item,
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            };
            let len = field_len(&item);
            if len > max_message {
                failed = Some(Status::resource_exhausted(format!(
                    "an item of the response is {len} bytes encoded, over the maximum message \
                     size of {max_message} bytes"
                )));
                break;
            }
            if !batch.is_empty() && bytes + len > limit {
                carried = Some((item, len));
                break;
            }
            batch.push(item);
            bytes += len;
        }
        if batch.is_empty() {
            return failed.take().map(Err);
        }
        Some(Ok(message(batch)))
    })
}

/// Drains `items` on a blocking thread into a bounded channel streamed to the client.
pub(crate) fn stream_blocking<T, I>(items: I) -> MessageStream<T>
where
    T: Send + 'static,
    I: Iterator<Item = Result<T, Status>> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::task::spawn_blocking(move || {
        for item in items {
            let failed = item.is_err();
            if sender.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// Forwards `subscription` to an RPC's response stream: `first` (if any), then each message
/// `convert` turns into one (`None`: not sent), errors mapped by `error`. Ends when the client
/// goes away, the subscription ends, or `shutdown` turns true (then with UNAVAILABLE, sent
/// only if there is room: a stalled client must not hold up the shutdown).
pub(crate) fn forward_subscription<T: Send + 'static>(
    mut subscription: Subscription,
    mut shutdown: watch::Receiver<bool>,
    first: Option<T>,
    mut convert: impl FnMut(SubscriptionMessage) -> Option<T> + Send + 'static,
    error: impl Fn(StoreError) -> Status + Send + 'static,
) -> MessageStream<T> {
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        if let Some(first) = first
            && sender.send(Ok(first)).await.is_err()
        {
            return;
        }
        loop {
            let message = tokio::select! {
                message = subscription.next() => message,
                _ = shutdown.wait_for(|stop| *stop) => {
                    let _ = sender.try_send(Err(Status::unavailable(
                        "the server is shutting down; subscribe again once it is back",
                    )));
                    return;
                }
                () = sender.closed() => return,
            };
            let message = match message {
                None => return,
                Some(Ok(message)) => match convert(message) {
                    Some(message) => Ok(message),
                    None => continue,
                },
                Some(Err(failure)) => Err(error(failure)),
            };
            tokio::select! {
                sent = sender.send(message) => if sent.is_err() { return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// The `caskade.v1.Streams` service.
#[derive(Clone)]
pub struct StreamsService {
    store: EventStore,
    /// The largest message the server may send.
    max_message_size: usize,
    /// Flips to `true` when the server shuts down, ending live subscriptions so connections
    /// can drain.
    shutdown: watch::Receiver<bool>,
}

impl StreamsService {
    /// The service over `store`; read responses stay within `max_message_size` encoded
    /// bytes; subscriptions end when `shutdown` turns true.
    #[must_use]
    pub fn new(
        store: EventStore,
        max_message_size: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        StreamsService {
            store,
            max_message_size,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl pb::streams_server::Streams for StreamsService {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let request = request.into_inner();
        let expected = convert::expected_version(request.expected_version);
        let events = convert::events(request.events)?;
        let result = submit_append(&self.store, request.stream, expected, events)
            .await?
            .map_err(store_status)?;
        Ok(Response::new(convert::appended(&result)))
    }

    type ReadStream = MessageStream<pb::ReadResponse>;

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let store = self.store.clone();
        let max_message = self.max_message_size;
        let stream = match convert::read_request(request.into_inner())? {
            convert::Read::Stream { stream, read } => {
                let events =
                    blocking(move || store.read_stream(&stream, read).map_err(store_status))
                        .await?;
                stream_blocking(batched(events, max_message))
            }
            convert::Read::All(read) => stream_blocking(batched(store.read_all(read), max_message)),
        };
        Ok(Response::new(stream))
    }

    type SubscribeStream = MessageStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let subscription = match convert::subscribe_request(request.into_inner())? {
            convert::Subscribe::Stream { stream, from } => {
                let store = self.store.clone();
                // Opening reads the stream's head from disk.
                blocking(move || store.subscribe_stream(&stream, from).map_err(store_status))
                    .await?
            }
            convert::Subscribe::All { from, filter } => self.store.subscribe_all(from, filter),
        };
        Ok(Response::new(forward_subscription(
            subscription,
            self.shutdown.clone(),
            None,
            convert::subscription_message,
            store_status,
        )))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        let expected = convert::expected_version(request.expected_version);
        let store = self.store.clone();
        blocking(move || {
            store
                .delete_stream(&request.stream, expected)
                .map_err(store_status)
        })
        .await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn tombstone(
        &self,
        request: Request<pb::TombstoneRequest>,
    ) -> Result<Response<pb::TombstoneResponse>, Status> {
        let request = request.into_inner();
        let expected = convert::expected_version(request.expected_version);
        let store = self.store.clone();
        blocking(move || {
            store
                .tombstone_stream(&request.stream, expected)
                .map_err(store_status)
        })
        .await?;
        Ok(Response::new(pb::TombstoneResponse {}))
    }

    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let stream = request.into_inner().stream;
        let store = self.store.clone();
        let info = blocking(move || store.stream_info(&stream).map_err(store_status)).await?;
        Ok(Response::new(pb::GetMetadataResponse {
            info: info.map(convert::stream_info),
        }))
    }

    async fn set_metadata(
        &self,
        request: Request<pb::SetMetadataRequest>,
    ) -> Result<Response<pb::SetMetadataResponse>, Status> {
        let request = request.into_inner();
        let expected = convert::expected_version(request.expected_version);
        let metadata = convert::metadata(request.metadata)?;
        let store = self.store.clone();
        blocking(move || {
            store
                .set_metadata(&request.stream, expected, metadata)
                .map_err(store_status)
        })
        .await?;
        Ok(Response::new(pb::SetMetadataResponse {}))
    }

    type ListStreamsStream = MessageStream<pb::ListStreamsResponse>;

    async fn list_streams(
        &self,
        _request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<Self::ListStreamsStream>, Status> {
        let store = self.store.clone();
        let streams = blocking(move || Ok(store.streams())).await?;
        let infos = streams.map(|info| info.map(convert::stream_info).map_err(store_status));
        let messages = batched_within(infos, self.max_message_size, |streams| {
            pb::ListStreamsResponse { streams }
        });
        Ok(Response::new(stream_blocking(messages)))
    }
}

/// The `caskade.v1.Kv` service: the store's isolated key-value space.
#[derive(Clone)]
pub struct KvService {
    store: EventStore,
}

impl KvService {
    /// The service over `store`'s key-value space.
    #[must_use]
    pub fn new(store: EventStore) -> Self {
        KvService { store }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        let kv = self.store.kv();
        blocking(move || kv.put(&request.key, &request.value).map_err(store_status)).await?;
        Ok(Response::new(pb::PutResponse {}))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let key = request.into_inner().key;
        let kv = self.store.kv();
        let value = blocking(move || kv.get(&key).map_err(store_status)).await?;
        Ok(Response::new(pb::GetResponse { value }))
    }

    async fn delete(
        &self,
        request: Request<pb::KvDeleteRequest>,
    ) -> Result<Response<pb::KvDeleteResponse>, Status> {
        let key = request.into_inner().key;
        let kv = self.store.kv();
        blocking(move || kv.delete(&key).map_err(store_status)).await?;
        Ok(Response::new(pb::KvDeleteResponse {}))
    }

    type KeysStream = MessageStream<pb::KeysResponse>;

    async fn keys(
        &self,
        request: Request<pb::KeysRequest>,
    ) -> Result<Response<Self::KeysStream>, Status> {
        let prefix = request.into_inner().prefix;
        let keys = self
            .store
            .kv()
            .keys(&prefix)
            .map(|key| Ok(pb::KeysResponse { key }));
        Ok(Response::new(stream_blocking(keys)))
    }
}

/// The `caskade.v1.Admin` service: merge, scavenge, backup, stats.
#[derive(Clone)]
pub struct AdminService {
    store: EventStore,
}

impl AdminService {
    /// The service over `store`.
    #[must_use]
    pub fn new(store: EventStore) -> Self {
        AdminService { store }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn merge(
        &self,
        _request: Request<pb::MergeRequest>,
    ) -> Result<Response<pb::MergeResponse>, Status> {
        let store = self.store.clone();
        let report = blocking(move || store.merge().map_err(store_status)).await?;
        Ok(Response::new(convert::merge_report(&report)))
    }

    type ScavengeStream = MessageStream<pb::ScavengeResponse>;

    async fn scavenge(
        &self,
        _request: Request<pb::ScavengeRequest>,
    ) -> Result<Response<Self::ScavengeStream>, Status> {
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut last_sent: Option<std::time::Instant> = None;
            let scavenged = store.scavenge_with_progress(|progress| {
                // At most a message per interval, however many streams the store has.
                if last_sent.is_some_and(|at| at.elapsed() < SCAVENGE_PROGRESS_INTERVAL) {
                    return;
                }
                last_sent = Some(std::time::Instant::now());
                let _ = sender.blocking_send(Ok(convert::scavenge_progress(progress)));
            });
            let last = scavenged
                .map(convert::scavenge_report)
                .map_err(store_status);
            let _ = sender.blocking_send(last);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let destination = convert::backup_destination(request.into_inner())?;
        let store = self.store.clone();
        let report = blocking(move || store.backup(&destination).map_err(store_status)).await?;
        Ok(Response::new(convert::backup_report(&report)))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let store = self.store.clone();
        let stats = blocking(move || store.stats().map_err(store_status)).await?;
        Ok(Response::new(convert::stats(&stats)))
    }
}
