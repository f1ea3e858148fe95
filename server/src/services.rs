//! The `Streams`, `Kv` and `Admin` services: decode, call the event store, encode.
//!
//! Every store call that touches the disk runs on the blocking pool (`spawn_blocking`), never
//! on the async workers; an append is submitted on the worker only when the engine says it
//! will not block (`try_begin_append`). Server-streaming reads run their iterator on a
//! blocking thread that feeds a bounded channel, so a slow client slows the read, not the
//! server's memory.

use std::pin::Pin;

use caskade_eventstore::{
    Direction, EventStore, Position, ReadAll, ReadFrom, ReadStream, RecordedEvent, StreamVersion,
    SubscribeFrom, SubscriptionMessage,
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

/// Runs `work` on the blocking pool and maps its error to a status.
async fn blocking<T: Send + 'static>(
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
fn stream_blocking<T, I>(items: I) -> MessageStream<T>
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

fn target_stream(target: Option<&pb::read_request::Target>) -> Result<Option<String>, Status> {
    match target {
        Some(pb::read_request::Target::Stream(stream)) => Ok(Some(stream.clone())),
        Some(pb::read_request::Target::All(_)) => Ok(None),
        None => Err(Status::invalid_argument("a read names a stream or `all`")),
    }
}

/// Filters apply to `$all` only; one sent with a stream would silently do nothing.
fn reject_stream_filter(filter: Option<&pb::Filter>) -> Result<(), Status> {
    match filter {
        Some(f)
            if !f.stream_prefix.is_empty()
                || !f.event_type_prefix.is_empty()
                || !f.event_type_regex.is_empty() =>
        {
            Err(Status::invalid_argument(
                "filters apply to `all` only, not to a stream",
            ))
        }
        _ => Ok(()),
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
        let events = request
            .events
            .into_iter()
            .enumerate()
            .map(|(i, event)| convert::event_data(i, event))
            .collect::<Result<Vec<_>, _>>()?;
        // Checking and submitting is CPU work unless the engine must start a new data file;
        // only then does it move to the blocking pool. Waiting for the group commit holds
        // no thread either way.
        let submitted = self
            .store
            .try_begin_append(&request.stream, expected, &events)
            .map_err(store_status)?;
        let pending = if let Some(pending) = submitted {
            pending
        } else {
            let store = self.store.clone();
            blocking(move || {
                store
                    .begin_append(&request.stream, expected, &events)
                    .map_err(store_status)
            })
            .await?
        };
        let result = pending.await.map_err(store_status)?;
        Ok(Response::new(pb::AppendResponse {
            next_expected_version: result.next_expected_version.0,
            first_position: result.first_position.0,
            last_position: result.last_position.0,
        }))
    }

    type ReadStream = MessageStream<pb::ReadResponse>;

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let direction = match pb::Direction::try_from(request.direction) {
            Ok(pb::Direction::Forwards) => Direction::Forwards,
            Ok(pb::Direction::Backwards) => Direction::Backwards,
            Err(_) => return Err(Status::invalid_argument("unknown read direction")),
        };
        let from = match request.from {
            Some(pb::read_request::From::At(at)) => ReadFrom::At(at),
            Some(pb::read_request::From::Start(_)) => ReadFrom::Start,
            Some(pb::read_request::From::End(_)) => ReadFrom::End,
            None => match direction {
                Direction::Forwards => ReadFrom::Start,
                Direction::Backwards => ReadFrom::End,
            },
        };
        let max_count = if request.max_count == 0 {
            u64::MAX
        } else {
            request.max_count
        };
        let store = self.store.clone();
        let max_message = self.max_message_size;
        let stream = if let Some(stream) = target_stream(request.target.as_ref())? {
            {
                reject_stream_filter(request.filter.as_ref())?;
                let read = ReadStream {
                    direction,
                    from: match from {
                        ReadFrom::Start => ReadFrom::Start,
                        ReadFrom::End => ReadFrom::End,
                        ReadFrom::At(v) => ReadFrom::At(StreamVersion(v)),
                    },
                    max_count,
                };
                let events =
                    blocking(move || store.read_stream(&stream, read).map_err(store_status))
                        .await?;
                stream_blocking(batched(events, max_message))
            }
        } else {
            {
                let read = ReadAll {
                    direction,
                    from: match from {
                        ReadFrom::Start => ReadFrom::Start,
                        ReadFrom::End => ReadFrom::End,
                        ReadFrom::At(p) => ReadFrom::At(Position(p)),
                    },
                    max_count,
                    filter: convert::filter(request.filter)?,
                };
                stream_blocking(batched(store.read_all(read), max_message))
            }
        };
        Ok(Response::new(stream))
    }

    type SubscribeStream = MessageStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let target = match request.target {
            Some(pb::subscribe_request::Target::Stream(stream)) => Some(stream),
            Some(pb::subscribe_request::Target::All(_)) => None,
            None => {
                return Err(Status::invalid_argument(
                    "a subscription names a stream or `all`",
                ));
            }
        };
        let from = request.from;
        let mut subscription = if let Some(stream) = target {
            {
                reject_stream_filter(request.filter.as_ref())?;
                let from = match from {
                    None | Some(pb::subscribe_request::From::Start(_)) => SubscribeFrom::Start,
                    Some(pb::subscribe_request::From::After(v)) => {
                        SubscribeFrom::After(StreamVersion(v))
                    }
                    Some(pb::subscribe_request::From::Now(_)) => SubscribeFrom::Now,
                };
                let store = self.store.clone();
                // Opening reads the stream's head from disk.
                blocking(move || store.subscribe_stream(&stream, from).map_err(store_status))
                    .await?
            }
        } else {
            {
                let from = match from {
                    None | Some(pb::subscribe_request::From::Start(_)) => SubscribeFrom::Start,
                    Some(pb::subscribe_request::From::After(p)) => {
                        SubscribeFrom::After(Position(p))
                    }
                    Some(pb::subscribe_request::From::Now(_)) => SubscribeFrom::Now,
                };
                self.store
                    .subscribe_all(from, convert::filter(request.filter)?)
            }
        };
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = subscription.next() => message,
                    _ = shutdown.wait_for(|stop| *stop) => {
                        // Never waits: a stalled client must not hold up the shutdown.
                        let _ = sender.try_send(Err(Status::unavailable(
                            "the server is shutting down; subscribe again once it is back",
                        )));
                        return;
                    }
                    () = sender.closed() => return,
                };
                let Some(message) = message else { return };
                let message = message
                    .map(|message| pb::SubscribeResponse {
                        message: Some(match message {
                            SubscriptionMessage::Event(event) => {
                                pb::subscribe_response::Message::Event(convert::recorded(event))
                            }
                            SubscriptionMessage::CaughtUp => {
                                pb::subscribe_response::Message::CaughtUp(pb::Empty {})
                            }
                        }),
                    })
                    .map_err(store_status);
                tokio::select! {
                    sent = sender.send(message) => if sent.is_err() { return },
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
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
        Ok(Response::new(pb::MergeResponse {
            input_files: report.input_files as u64,
            output_files: report.output_files as u64,
            bytes_read: report.bytes_read,
            bytes_written: report.bytes_written,
        }))
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
        let destination = request.into_inner().destination;
        if destination.is_empty() {
            return Err(Status::invalid_argument(
                "a backup needs a destination directory",
            ));
        }
        let store = self.store.clone();
        let report = blocking(move || store.backup(&destination).map_err(store_status)).await?;
        Ok(Response::new(pb::BackupResponse {
            data_files: report.data_files as u64,
            hint_files: report.hint_files as u64,
            bytes: report.bytes,
        }))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let store = self.store.clone();
        let stats = blocking(move || store.stats().map_err(store_status)).await?;
        Ok(Response::new(pb::StatsResponse {
            live_keys: stats.engine.live_keys as u64,
            keydir_bytes: stats.engine.keydir_bytes as u64,
            streams: stats.streams as u64,
            committed_position: stats.committed_position.0,
            files: stats
                .engine
                .files
                .iter()
                .map(|file| pb::FileStats {
                    file_id: file.file_id.0,
                    len: file.len,
                    live_bytes: file.live_bytes,
                    dead_bytes: file.dead_bytes,
                    active: file.active,
                })
                .collect(),
        }))
    }
}
