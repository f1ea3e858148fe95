//! [`EventStore`]: appends with expected versions, deletes, metadata, listing.
//!
//! Concurrency. Appends are checked and submitted to the engine under one short lock, the
//! sequencer, which holds every stream's head in memory and the next global position. The
//! sequencer never waits for a sync: it submits the engine batch with
//! [`Bitcask::begin_write`] and the append waits for durability after releasing it, so
//! appends to different streams share group commits while positions are handed out in the
//! exact order the engine makes them durable and visible. Invariant: when an append returns,
//! every position below its last one is durable and readable, so the committed watermark
//! (all positions below it are durable) can only move forward.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use caskade_engine::{Bitcask, PendingWrite, TryWrite, WriteBatch, WriteTicket};
use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::{CurrentVersion, Error, Result};
use crate::event::{ContentType, EventData, Position, StreamVersion};
use crate::format::{
    ALL_ENTRY_SPACING, ALL_KEY_LEN, HEAD_FIXED_LEN, HEAD_PREFIX, Head, StoredEvent, all_key,
    decode_event, encoded_event_len, event_key, event_key_len, has_all_entry, head_key,
    head_key_name, micros_to_time, write_event_key,
};
use crate::groups::Runtimes;
use crate::in_flight::InFlightAppends;
use crate::metadata::{MetadataRevision, StreamInfo, StreamMetadata, StreamState};
use crate::options::Options;

/// The longest event type accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 1024;

/// Whether submitting an append may make blocking system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submit {
    MayBlock,
    NonBlocking,
}

/// The version an append expects the stream to be at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must have no events (it never had, or it was soft-deleted).
    NoStream,
    /// The stream must exist and be live.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(StreamVersion),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// What an append wrote (or, for an idempotent retry, had already written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendResult {
    /// The version of the last event appended: the expected version for the next append.
    pub next_expected_version: StreamVersion,
    /// The position of the first event appended.
    pub first_position: Position,
    /// The position of the last event appended.
    pub last_position: Position,
}

/// An append submitted by [`EventStore::begin_append`], durable once [`PendingAppend::wait`]
/// returns or the future completes. Dropping it does not undo it: the append still becomes
/// durable (see [`PendingWrite`]).
#[must_use = "an append is acknowledged only once `wait` returns or the future completes"]
pub struct PendingAppend {
    shared: Arc<Shared>,
    /// `None` for a retry of an append already durable.
    write: Option<PendingWrite>,
    result: AppendResult,
}

impl PendingAppend {
    /// Waits until the append is durable and returns what it wrote.
    ///
    /// # Errors
    /// [`Error::Engine`] if the sync covering the append failed.
    pub fn wait(mut self) -> Result<AppendResult> {
        if let Some(write) = self.write.take() {
            write.wait()?;
        }
        Ok(self.committed())
    }

    /// Moves the committed watermark past this append: every position below its end is
    /// durable now, because the engine makes batches durable in submission order.
    fn committed(&self) -> AppendResult {
        let end = self.result.last_position.0 + 1;
        self.shared.committed.send_if_modified(|committed| {
            let advanced = *committed < end;
            *committed = (*committed).max(end);
            advanced
        });
        self.result
    }
}

impl Future for PendingAppend {
    type Output = Result<AppendResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(write) = self.write.as_mut() {
            match Pin::new(write).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => {
                    self.write = None;
                    done?;
                }
            }
        }
        Poll::Ready(Ok(self.committed()))
    }
}

/// Every stream's [`StreamInfo`], in name order; see [`EventStore::streams`]. Yields
/// [`Error::Engine`] or [`Error::Corrupt`] if a head cannot be read, and then ends.
pub struct Streams {
    engine: Bitcask,
    keys: std::vec::IntoIter<Vec<u8>>,
}

impl Iterator for Streams {
    type Item = Result<StreamInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        for key in self.keys.by_ref() {
            match stored_head(&self.engine, &key) {
                Ok(Some((name, head))) => return Some(Ok(info(name, &head))),
                Ok(None) => {}
                Err(error) => {
                    self.keys = Vec::new().into_iter();
                    return Some(Err(error));
                }
            }
        }
        None
    }
}

/// An event store: a cheap-to-clone, `Send + Sync` handle.
#[derive(Clone)]
pub struct EventStore {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("dir", &self.shared.engine.dir())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) engine: Bitcask,
    pub(crate) options: Options,
    sequencer: Mutex<Sequencer>,
    /// Every position below this value is durable and readable.
    pub(crate) committed: watch::Sender<u64>,
    /// Held while a persistent subscription group is created, updated, deleted or started.
    pub(crate) groups: Mutex<()>,
    /// The persistent subscription groups running.
    pub(crate) runtimes: Runtimes,
}

struct Sequencer {
    next_position: u64,
    heads: HashMap<Arc<str>, Head>,
    in_flight: InFlightAppends,
}

/// An append found to repeat one already made (see [`EventStore::already_appended`]).
#[derive(Clone, Copy)]
enum Repeated {
    /// The original is published: its result stands.
    Published(AppendResult),
    /// The original is still in flight: the repeat waits for its engine batch.
    InFlight(WriteTicket, AppendResult),
}

impl Sequencer {
    /// A copy of the stream's head (a fresh one for a new stream), unless the stream is
    /// tombstoned.
    fn writable_head(&self, stream: &str) -> Result<Head> {
        let head = self.heads.get(stream).cloned().unwrap_or_else(Head::new);
        if head.state == StreamState::Tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        Ok(head)
    }
}

pub(crate) fn corrupt(key: &[u8], reason: &'static str) -> Error {
    Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

/// The stream named by the head key `key` and its head, read from `engine`; `None` if the
/// key has gone since it was listed. Every walk over the stream heads reads them here.
pub(crate) fn stored_head<'k>(engine: &Bitcask, key: &'k [u8]) -> Result<Option<(&'k str, Head)>> {
    let Some(value) = engine.get(key)? else {
        return Ok(None);
    };
    let head = Head::decode(&value).map_err(|reason| corrupt(key, reason))?;
    let name = head_key_name(key).ok_or_else(|| corrupt(key, "stream name is not UTF-8"))?;
    Ok(Some((name, head)))
}

impl EventStore {
    /// Opens (or creates) the event store in `dir`.
    ///
    /// # Errors
    /// [`Error::Engine`] for any failure of the engine (see
    /// [`Bitcask::open`](caskade_engine::Bitcask::open)), [`Error::Corrupt`] for a stream
    /// head that does not decode.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<EventStore> {
        options.validate()?;
        let engine = Bitcask::open(dir, options.engine.clone())?;
        let mut heads = HashMap::new();
        let mut next_position = 0;
        for key in engine.keys_with_prefix(&[HEAD_PREFIX]) {
            let Some((name, head)) = stored_head(&engine, &key)? else {
                continue;
            };
            if head.next_version > 0 {
                next_position = next_position.max(head.last_position + 1);
            }
            heads.insert(Arc::from(name), head);
        }
        let (committed, _) = watch::channel(next_position);
        Ok(EventStore {
            shared: Arc::new(Shared {
                engine,
                options,
                sequencer: Mutex::new(Sequencer {
                    next_position,
                    heads,
                    in_flight: InFlightAppends::default(),
                }),
                committed,
                groups: Mutex::new(()),
                runtimes: Runtimes::default(),
            }),
        })
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// One past the last durable position: every position below it has been committed.
    #[must_use]
    pub fn committed_position(&self) -> Position {
        Position(*self.shared.committed.borrow())
    }

    /// Appends `events` to `stream` if its version is `expected`, atomically: all of them or
    /// none. Returns after they are durable (under the engine's default sync policy).
    ///
    /// Re-appending events whose ids were already appended at the same place (a retry after
    /// a lost reply) succeeds and writes nothing new. A repeat that arrives while the
    /// original is still being synced waits for the original and returns its result; if
    /// that sync fails, both fail (the engine then refuses every write until reopened).
    ///
    /// # Errors
    /// [`Error::WrongExpectedVersion`] (nothing written), [`Error::StreamDeleted`],
    /// [`Error::InvalidStreamName`], [`Error::ReservedStreamName`], [`Error::EmptyAppend`],
    /// [`Error::InvalidEventType`], [`Error::EventTooLarge`], [`Error::AppendTooLarge`],
    /// [`Error::InvalidJson`], [`Error::DuplicateEventId`], [`Error::Engine`].
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.begin_append(stream, expected, events)?.wait()
    }

    /// Checks and submits an append like [`EventStore::append`] without waiting for it to
    /// become durable: wait with [`PendingAppend::wait`], or await it. Appends are ordered
    /// by the calls to this method. Async callers (the gRPC server) use it so that an append
    /// in flight holds no thread while its group commit runs.
    ///
    /// # Errors
    /// As [`EventStore::append`]; sync failures surface from the wait.
    pub fn begin_append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<PendingAppend> {
        match self.submit_append(stream, expected, events, Submit::MayBlock)? {
            Some(pending) => Ok(pending),
            None => unreachable!("a submission that may block always submits"),
        }
    }

    /// Like [`EventStore::begin_append`] if submitting makes no system call that can wait
    /// for the disk (see [`Bitcask::try_begin_write`]); otherwise `Ok(None)`, having
    /// written and changed nothing, and the caller retries with `begin_append` on a thread
    /// that may block. The gRPC server calls it on its async workers.
    ///
    /// # Errors
    /// As [`EventStore::begin_append`].
    pub fn try_begin_append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<Option<PendingAppend>> {
        self.submit_append(stream, expected, events, Submit::NonBlocking)
    }

    fn submit_append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
        mode: Submit,
    ) -> Result<Option<PendingAppend>> {
        self.validate_stream(stream)?;
        self.validate_events(events)?;
        let recorded_at_micros = Utc::now().timestamp_micros();
        let (pending, result) = {
            let mut sequencer = self.shared.sequencer.lock();
            let sequencer = &mut *sequencer;
            sequencer.in_flight.retire(&self.shared.engine);
            let head = sequencer.writable_head(stream)?;
            if !expected_matches(expected, &head) {
                if let Some(repeated) =
                    self.already_appended(&sequencer.in_flight, stream, expected, &head, events)?
                {
                    return Ok(Some(self.repeated(repeated)));
                }
                return Err(wrong_version(stream, expected, &head));
            }
            if matches!(
                expected,
                ExpectedVersion::Any | ExpectedVersion::StreamExists
            ) && let Some(repeated) =
                self.already_appended(&sequencer.in_flight, stream, expected, &head, events)?
            {
                return Ok(Some(self.repeated(repeated)));
            }
            let first_version = head.next_version;
            let first_position = sequencer.next_position;
            let key_len = event_key_len(stream);
            let bytes: usize = events
                .iter()
                .map(|e| key_len + encoded_event_len(&e.event_type, &e.metadata, &e.data))
                .sum();
            let entries = 2 + events.len() / ALL_ENTRY_SPACING as usize;
            let mut batch = WriteBatch::with_capacity(
                events.len() + entries + 1,
                // The head: its key is at most an event key long.
                bytes + entries * (ALL_KEY_LEN + key_len) + key_len + HEAD_FIXED_LEN,
            );
            // Reused for every event: the batch copies them.
            let mut key = Vec::with_capacity(key_len);
            let mut value = Vec::new();
            for (i, event) in events.iter().enumerate() {
                write_event_key(&mut key, stream, StreamVersion(first_version + i as u64));
                let stored = StoredEvent {
                    id: event.id,
                    position: Position(first_position + i as u64),
                    recorded_at_micros,
                    content_type: event.content_type,
                    event_type: &event.event_type,
                    metadata: &event.metadata,
                    data: &event.data,
                };
                let position = Position(first_position + i as u64);
                if has_all_entry(i, position) {
                    batch.put(all_key(position), &key);
                }
                stored.encode_into(&mut value);
                batch.put(&key, &value);
            }
            let count = events.len() as u64;
            let mut new_head = head;
            new_head.state = StreamState::Live;
            new_head.next_version = first_version + count;
            new_head.last_position = first_position + count - 1;
            // The head goes last: the engine shows a batch's last op only after the rest, so
            // a reader that sees the head sees every event it counts.
            batch.put(head_key(stream), new_head.encode());
            let pending = match mode {
                Submit::MayBlock => self.shared.engine.begin_write(batch)?,
                Submit::NonBlocking => match self.shared.engine.try_begin_write(batch)? {
                    TryWrite::Submitted(pending) => pending,
                    TryWrite::WouldBlock(_) => return Ok(None),
                },
            };
            sequencer.next_position += count;
            let name: Arc<str> = Arc::from(stream);
            let result = AppendResult {
                next_expected_version: StreamVersion(first_version + count - 1),
                first_position: Position(first_position),
                last_position: Position(first_position + count - 1),
            };
            sequencer.in_flight.record(
                &self.shared.engine,
                &name,
                pending.ticket(),
                first_version,
                events,
                result,
            );
            sequencer.heads.insert(name, new_head);
            (pending, result)
        };
        Ok(Some(self.pending(Some(pending), result)))
    }

    fn repeated(&self, repeated: Repeated) -> PendingAppend {
        match repeated {
            Repeated::Published(result) => self.pending(None, result),
            Repeated::InFlight(ticket, result) => {
                self.pending(Some(self.shared.engine.pending_write(ticket)), result)
            }
        }
    }

    fn pending(&self, write: Option<PendingWrite>, result: AppendResult) -> PendingAppend {
        PendingAppend {
            shared: Arc::clone(&self.shared),
            write,
            result,
        }
    }

    /// Soft-deletes `stream`: its events are hidden from reads at once and reclaimed by
    /// [`EventStore::scavenge`]; a later append continues at the next version.
    ///
    /// # Errors
    /// [`Error::WrongExpectedVersion`], [`Error::StreamDeleted`] if tombstoned, the
    /// stream-name errors, [`Error::Engine`].
    pub fn delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<()> {
        self.change_head(stream, expected, |head| {
            head.state = StreamState::Deleted;
            head.deleted_before = head.next_version;
            Ok(())
        })
    }

    /// Tombstones `stream`: deleted for good. Reads and appends fail with
    /// [`Error::StreamDeleted`] from now on; the events are reclaimed by scavenging.
    ///
    /// # Errors
    /// As [`EventStore::delete_stream`].
    pub fn tombstone_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<()> {
        self.change_head(stream, expected, |head| {
            head.state = StreamState::Tombstoned;
            Ok(())
        })
    }

    /// Replaces `stream`'s metadata. A stream with no events may have metadata.
    ///
    /// # Errors
    /// [`Error::InvalidMetadata`] for a zero `max_count` or `max_age`,
    /// [`Error::MetadataTooLarge`] for custom metadata over [`Options::max_event_size`], and
    /// as [`EventStore::delete_stream`].
    pub fn set_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<()> {
        self.validate_metadata(&metadata)?;
        self.change_head(stream, expected, |head| {
            record_metadata(head, metadata);
            Ok(())
        })
    }

    /// Replaces `stream`'s metadata if the metadata is at the version `expected` says:
    /// unlike [`EventStore::set_metadata`], `expected` is about the metadata's own version
    /// ([`StreamInfo::metadata_revision`]; `NoStream` means never set), as KurrentDB's
    /// `$$stream` revisions are. Returns the metadata's new version.
    ///
    /// # Errors
    /// [`Error::WrongExpectedVersion`] naming the metadata's version, otherwise as
    /// [`EventStore::set_metadata`].
    pub fn replace_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<StreamVersion> {
        self.validate_metadata(&metadata)?;
        let mut version = StreamVersion(0);
        self.change_head(stream, ExpectedVersion::Any, |head| {
            let actual = match head.metadata_changes {
                0 => CurrentVersion::NoStream,
                changes => CurrentVersion::Current(StreamVersion(changes - 1)),
            };
            let matches = match (expected, actual) {
                (ExpectedVersion::Any, _)
                | (ExpectedVersion::NoStream, CurrentVersion::NoStream)
                | (ExpectedVersion::StreamExists, CurrentVersion::Current(_)) => true,
                (ExpectedVersion::Exact(want), CurrentVersion::Current(have)) => want == have,
                _ => false,
            };
            if !matches {
                return Err(Error::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    actual,
                });
            }
            record_metadata(head, metadata);
            version = StreamVersion(head.metadata_changes - 1);
            Ok(())
        })?;
        Ok(version)
    }

    fn validate_metadata(&self, metadata: &StreamMetadata) -> Result<()> {
        if metadata.max_count == Some(0) {
            return Err(Error::InvalidMetadata {
                reason: "max_count must be at least 1",
            });
        }
        if metadata.max_age.is_some_and(|age| age.as_secs() == 0) {
            return Err(Error::InvalidMetadata {
                reason: "max_age must be at least one second",
            });
        }
        if metadata.truncate_before == Some(StreamVersion(0)) {
            return Err(Error::InvalidMetadata {
                reason: "truncate_before must be above 0",
            });
        }
        if let Some(custom) = &metadata.custom {
            // The same compact text the head stores.
            let size = custom.to_string().len();
            let max = self.shared.options.max_event_size;
            if size > max {
                return Err(Error::MetadataTooLarge { size, max });
            }
        }
        Ok(())
    }

    /// The stream's metadata, state and last version; `None` for a stream never written.
    ///
    /// # Errors
    /// The stream-name errors, [`Error::Engine`], [`Error::Corrupt`].
    pub fn stream_info(&self, stream: &str) -> Result<Option<StreamInfo>> {
        self.validate_stream(stream)?;
        Ok(self.durable_head(stream)?.map(|head| info(stream, &head)))
    }

    /// Every stream with its last version, state and metadata, in name order. Reads one
    /// head per stream, never an event.
    ///
    /// # Errors
    /// [`Error::Engine`], [`Error::Corrupt`].
    pub fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.streams().collect()
    }

    /// Every stream, like [`EventStore::list_streams`], lazily: the names are gathered and
    /// sorted up front (memory for the names only) and each head is read as the iterator
    /// reaches it. A stream created meanwhile may be missing; one deleted for good since
    /// is skipped.
    #[must_use]
    pub fn streams(&self) -> Streams {
        let mut keys: Vec<Vec<u8>> = self
            .shared
            .engine
            .keys_with_prefix(&[HEAD_PREFIX])
            .collect();
        keys.sort_unstable();
        Streams {
            engine: self.shared.engine.clone(),
            keys: keys.into_iter(),
        }
    }

    /// Flushes and syncs everything, then closes the engine (and its directory lock).
    /// Persistent subscription groups' checkpoints are written on their own schedule: call
    /// [`EventStore::checkpoint_groups`] first so that a reopened store does not deliver again
    /// what consumers acked since.
    ///
    /// # Errors
    /// [`Error::Engine`] if the final sync fails.
    pub fn close(self) -> Result<()> {
        self.shared.engine.clone().close()?;
        Ok(())
    }

    /// The stream's head as durable in the engine (not the sequencer's, which may be ahead
    /// by appends still waiting for their sync).
    pub(crate) fn durable_head(&self, stream: &str) -> Result<Option<Head>> {
        let key = head_key(stream);
        match self.shared.engine.get(&key)? {
            Some(value) => Head::decode(&value)
                .map(Some)
                .map_err(|reason| corrupt(&key, reason)),
            None => Ok(None),
        }
    }

    pub(crate) fn change_head(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        change: impl FnOnce(&mut Head) -> Result<()>,
    ) -> Result<()> {
        self.validate_stream(stream)?;
        let pending = {
            let mut sequencer = self.shared.sequencer.lock();
            let mut head = sequencer.writable_head(stream)?;
            if !expected_matches(expected, &head) {
                return Err(wrong_version(stream, expected, &head));
            }
            change(&mut head)?;
            let mut batch = WriteBatch::new();
            batch.put(head_key(stream), head.encode());
            let pending = self.shared.engine.begin_write(batch)?;
            sequencer.heads.insert(Arc::from(stream), head);
            pending
        };
        pending.wait()?;
        // Stream subscribers re-read the head: a tombstone ends their subscription. The
        // watermark itself does not move.
        self.shared.committed.send_modify(|_| {});
        Ok(())
    }

    /// If `events` were already appended where `expected` says (a retried append), what
    /// that append returned, or the append in flight it repeats. Unless `expected` is an
    /// exact version, an append in flight with the same ids anywhere in the stream is the
    /// one repeated.
    fn already_appended(
        &self,
        in_flight: &InFlightAppends,
        stream: &str,
        expected: ExpectedVersion,
        head: &Head,
        events: &[EventData],
    ) -> Result<Option<Repeated>> {
        // A soft-deleted stream takes `NoStream` at its next version, not at 0: only an exact
        // version pins where the original must start.
        let anchor = match expected {
            ExpectedVersion::Exact(StreamVersion(v)) => Some(v.saturating_add(1)),
            ExpectedVersion::NoStream | ExpectedVersion::Any | ExpectedVersion::StreamExists => {
                None
            }
        };
        if let Some((ticket, result)) = in_flight.find(stream, anchor, events) {
            return Ok(Some(Repeated::InFlight(ticket, result)));
        }
        let count = events.len() as u64;
        let first = match expected {
            ExpectedVersion::Exact(StreamVersion(v)) => match v.checked_add(1) {
                Some(first) => first,
                None => return Ok(None),
            },
            ExpectedVersion::NoStream => 0,
            // Without a version to anchor on, a retry is recognised by its ids being the
            // stream's last events.
            ExpectedVersion::Any | ExpectedVersion::StreamExists => {
                match head.next_version.checked_sub(count) {
                    Some(first) => first,
                    None => return Ok(None),
                }
            }
        };
        if first.saturating_add(count) > head.next_version {
            return Ok(None);
        }
        let mut positions = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let key = event_key(stream, StreamVersion(first + i as u64));
            let found = self.shared.engine.get_with(&key, |value| {
                decode_event(value).map(|stored| (stored.id, stored.position))
            })?;
            match found {
                Some(Ok((id, position))) if id == event.id => positions.push(position),
                Some(Err(reason)) => return Err(corrupt(&key, reason)),
                Some(Ok(_)) | None => return Ok(None),
            }
        }
        Ok(Some(Repeated::Published(AppendResult {
            next_expected_version: StreamVersion(first + count - 1),
            first_position: positions[0],
            last_position: positions[positions.len() - 1],
        })))
    }

    pub(crate) fn validate_stream(&self, stream: &str) -> Result<()> {
        let invalid = |reason| {
            Err(Error::InvalidStreamName {
                name: stream.chars().take(100).collect(),
                reason,
            })
        };
        if stream.is_empty() {
            return invalid("stream names must not be empty");
        }
        if stream.len() > self.shared.options.max_stream_name_len {
            return Err(Error::StreamNameTooLong {
                name: stream.chars().take(100).collect(),
                len: stream.len(),
                max: self.shared.options.max_stream_name_len,
            });
        }
        if stream.chars().any(char::is_control) {
            return invalid("stream names must not contain control characters");
        }
        if stream.starts_with('$') {
            return Err(Error::ReservedStreamName {
                name: stream.to_owned(),
            });
        }
        Ok(())
    }

    fn validate_events(&self, events: &[EventData]) -> Result<()> {
        if events.is_empty() {
            return Err(Error::EmptyAppend);
        }
        let options = &self.shared.options;
        let mut total = 0usize;
        // foldhash, randomly seeded: SipHash cost a large append tens of microseconds here.
        let mut ids = foldhash::HashSet::with_capacity_and_hasher(
            events.len(),
            foldhash::fast::RandomState::default(),
        );
        for (index, event) in events.iter().enumerate() {
            if event.event_type.is_empty() {
                return Err(Error::InvalidEventType {
                    event_type: String::new(),
                    reason: "event types must not be empty",
                });
            }
            if event.event_type.len() > MAX_EVENT_TYPE_LEN {
                return Err(Error::EventTypeTooLong {
                    index,
                    event_type: event.event_type.chars().take(100).collect(),
                    len: event.event_type.len(),
                    max: MAX_EVENT_TYPE_LEN,
                });
            }
            if event.id.is_nil() {
                return Err(Error::NilEventId { index });
            }
            let size = encoded_event_len(&event.event_type, &event.metadata, &event.data);
            if size > options.max_event_size {
                return Err(Error::EventTooLarge {
                    index,
                    size,
                    max: options.max_event_size,
                });
            }
            total += size;
            if event.content_type == ContentType::Json {
                check_json(index, "data", &event.data)?;
                if !event.metadata.is_empty() {
                    check_json(index, "metadata", &event.metadata)?;
                }
            }
            if !ids.insert(event.id) {
                return Err(Error::DuplicateEventId { id: event.id });
            }
        }
        if total > options.max_append_size {
            return Err(Error::AppendTooLarge {
                size: total,
                max: options.max_append_size,
            });
        }
        Ok(())
    }
}

/// JSON text is UTF-8 (RFC 8259, section 8.1). The UTF-8 is checked apart because `serde_json`
/// does not check the strings it skips: `from_slice::<IgnoredAny>` accepts `"\xff"`.
fn check_json(index: usize, field: &'static str, bytes: &[u8]) -> Result<()> {
    let invalid = |reason: String| Error::InvalidJson {
        index,
        field,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| invalid(e.to_string()))
}

fn expected_matches(expected: ExpectedVersion, head: &Head) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => head.next_version == 0 || head.state == StreamState::Deleted,
        ExpectedVersion::StreamExists => head.next_version > 0 && head.state == StreamState::Live,
        ExpectedVersion::Exact(StreamVersion(v)) => v.checked_add(1) == Some(head.next_version),
    }
}

fn current_version(head: &Head) -> CurrentVersion {
    match head.next_version {
        0 => CurrentVersion::NoStream,
        next => CurrentVersion::Current(StreamVersion(next - 1)),
    }
}

fn wrong_version(stream: &str, expected: ExpectedVersion, head: &Head) -> Error {
    Error::WrongExpectedVersion {
        stream: stream.to_owned(),
        expected,
        actual: current_version(head),
    }
}

fn info(stream: &str, head: &Head) -> StreamInfo {
    StreamInfo {
        name: stream.to_owned(),
        last_version: head.next_version.checked_sub(1).map(StreamVersion),
        state: head.state,
        metadata: head.metadata.clone(),
        metadata_revision: head
            .metadata_changes
            .checked_sub(1)
            .map(|version| MetadataRevision {
                version: StreamVersion(version),
                recorded_at: micros_to_time(head.metadata_recorded_at_micros),
            }),
    }
}

/// Puts `metadata` in `head`, raising its version.
fn record_metadata(head: &mut Head, metadata: StreamMetadata) {
    head.metadata = metadata;
    head.metadata_changes += 1;
    head.metadata_recorded_at_micros = Utc::now().timestamp_micros();
}
