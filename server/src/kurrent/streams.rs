//! `event_store.client.streams.Streams`: KurrentDB's appends and deletes over the event
//! store, its reads and subscriptions through `read` and its `BatchAppend` through
//! `batch_append`, with the conventions of `convert` and the errors of
//! `errors`. The append path is one for `Append` and `BatchAppend`:
//! `ProposedEvents` decodes and sizes the events, `KurrentStreamsService::append_events`
//! writes them, and each call answers the `AppendOutcome` in its own form.
//!
//! What a KurrentDB client relies on, and where it differs from `caskade.v1`:
//! - A wrong expected version on `Append` is an answer, not an error, filling the current
//!   and the legacy fields; on `Delete` and `Tombstone` it is an error with trailers.
//! - An append of no events checks the expected revision and answers the current one.

use caskade_eventstore::{
    CurrentVersion, Error as StoreError, EventData, EventStore, StreamState, StreamVersion,
};
use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::streams as pb;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, WireExpected};
use super::errors::{event_too_large, kurrent_status, stream_deleted};
use super::metastream;
use crate::services::{MessageStream, blocking, submit_append};

/// The KurrentDB `Streams` service.
#[derive(Clone)]
pub struct KurrentStreamsService {
    store: EventStore,
    /// Flips to `true` when the server shuts down, ending live subscriptions.
    shutdown: watch::Receiver<bool>,
}

impl KurrentStreamsService {
    /// The service over `store`; subscriptions end when `shutdown` turns true.
    #[must_use]
    pub fn new(store: EventStore, shutdown: watch::Receiver<bool>) -> Self {
        KurrentStreamsService { store, shutdown }
    }
}

/// The in-band answer to a wrong expected revision, in the current and the legacy fields.
fn wrong_expected_version(expected: WireExpected, actual: Option<StreamVersion>) -> pb::AppendResp {
    use pb::append_resp::wrong_expected_version as w;
    let (current, legacy_current) = match actual {
        Some(version) => (
            w::CurrentRevisionOption::CurrentRevision(version.0),
            w::CurrentRevisionOption2060::CurrentRevision2060(version.0),
        ),
        None => (
            w::CurrentRevisionOption::CurrentNoStream(shared::Empty {}),
            w::CurrentRevisionOption2060::NoStream2060(shared::Empty {}),
        ),
    };
    let (expected_now, legacy_expected) = match expected {
        WireExpected::Revision(revision) => (
            w::ExpectedRevisionOption::ExpectedRevision(revision),
            Some(w::ExpectedRevisionOption2060::ExpectedRevision2060(
                revision,
            )),
        ),
        WireExpected::NoStream => (
            w::ExpectedRevisionOption::ExpectedNoStream(shared::Empty {}),
            // The legacy fields have no way to say "no stream".
            None,
        ),
        WireExpected::Any => (
            w::ExpectedRevisionOption::ExpectedAny(shared::Empty {}),
            Some(w::ExpectedRevisionOption2060::Any2060(shared::Empty {})),
        ),
        WireExpected::StreamExists => (
            w::ExpectedRevisionOption::ExpectedStreamExists(shared::Empty {}),
            Some(w::ExpectedRevisionOption2060::StreamExists2060(
                shared::Empty {},
            )),
        ),
    };
    pb::AppendResp {
        result: Some(pb::append_resp::Result::WrongExpectedVersion(
            pb::append_resp::WrongExpectedVersion {
                current_revision_option_20_6_0: Some(legacy_current),
                expected_revision_option_20_6_0: legacy_expected,
                current_revision_option: Some(current),
                expected_revision_option: Some(expected_now),
            },
        )),
    }
}

/// The last version a wrong-expected-version error reports.
fn last_version(actual: CurrentVersion) -> Option<StreamVersion> {
    match actual {
        CurrentVersion::Current(version) => Some(version),
        CurrentVersion::NoStream => None,
    }
}

/// A successful append's answer.
fn appended(revision: Option<u64>, position: Option<u64>) -> pb::AppendResp {
    use pb::append_resp::success as s;
    pb::AppendResp {
        result: Some(pb::append_resp::Result::Success(pb::append_resp::Success {
            current_revision_option: Some(match revision {
                Some(revision) => s::CurrentRevisionOption::CurrentRevision(revision),
                None => s::CurrentRevisionOption::NoStream(shared::Empty {}),
            }),
            position_option: Some(match position {
                Some(commit) => s::PositionOption::Position(pb::append_resp::Position {
                    commit_position: commit,
                    prepare_position: commit,
                }),
                None => s::PositionOption::NoPosition(shared::Empty {}),
            }),
        })),
    }
}

impl KurrentStreamsService {
    /// An append of no events: KurrentDB checks the expected revision and answers the
    /// current one, writing nothing.
    async fn empty_append(
        &self,
        stream: String,
        expected: WireExpected,
    ) -> Result<AppendOutcome, Status> {
        let store = self.store.clone();
        let (state, last) = blocking(move || {
            let info = store
                .stream_info(&stream)
                .map_err(|e| kurrent_status("Append", e))?;
            if info
                .as_ref()
                .is_some_and(|i| i.state == StreamState::Tombstoned)
            {
                return Err(stream_deleted(&stream));
            }
            Ok(info.map_or((StreamState::Live, None), |i| (i.state, i.last_version)))
        })
        .await?;
        let live_last = if state == StreamState::Deleted {
            None
        } else {
            last
        };
        Ok(if expected.matches(live_last) {
            AppendOutcome::Appended {
                revision: last.map(|v| v.0),
                position: None,
            }
        } else {
            AppendOutcome::WrongExpectedVersion { actual: last }
        })
    }
}

impl KurrentStreamsService {
    /// An append to `name`, the metadata stream of `stream`: its one `$metadata` event
    /// replaces the stream's metadata if the metadata is at the expected revision.
    async fn metadata_append(
        &self,
        stream: String,
        name: String,
        expected: WireExpected,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome, Status> {
        let metadata = match events.as_slice() {
            [] => None,
            [event] if event.event_type == metastream::METADATA_EVENT_TYPE => {
                Some(metastream::decode(&event.data)?)
            }
            [event] => {
                return Err(Status::invalid_argument(format!(
                    "the metadata stream {name:?} takes only {:?} events, not {:?}",
                    metastream::METADATA_EVENT_TYPE,
                    event.event_type
                )));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "the metadata stream {name:?} takes one event per append, not {}",
                    events.len()
                )));
            }
        };
        let store = self.store.clone();
        let Some(metadata) = metadata else {
            // No event: check the expected revision, write nothing.
            let current = blocking(move || {
                let info = store
                    .stream_info(&stream)
                    .map_err(|e| kurrent_status("Append", e))?;
                Ok(info
                    .and_then(|info| info.metadata_revision)
                    .map(|revision| revision.version))
            })
            .await?;
            return Ok(if expected.matches(current) {
                AppendOutcome::Appended {
                    revision: current.map(|v| v.0),
                    position: None,
                }
            } else {
                AppendOutcome::WrongExpectedVersion { actual: current }
            });
        };
        let result =
            blocking(move || Ok(store.replace_metadata(&stream, expected.to_store(), metadata)))
                .await?;
        match result {
            Ok(version) => Ok(AppendOutcome::Appended {
                revision: Some(version.0),
                position: None,
            }),
            Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                Ok(AppendOutcome::WrongExpectedVersion {
                    actual: last_version(actual),
                })
            }
            Err(StoreError::StreamDeleted { .. }) => Err(stream_deleted(&name)),
            Err(error) => Err(kurrent_status("Append", error)),
        }
    }
}

/// The events of one append as they arrive, refused as soon as they pass the append size
/// limit, so an oversized append is never all in memory.
pub(super) struct ProposedEvents {
    pub(super) events: Vec<EventData>,
    size: usize,
    max: usize,
}

impl ProposedEvents {
    /// The bytes of the events so far, as the size limit counts them.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// The size limit of one append.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// Decodes one more event and adds it.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for an undecodable event or past the size limit.
    pub(super) fn push(
        &mut self,
        id: Option<shared::Uuid>,
        metadata: std::collections::BTreeMap<String, String>,
        custom_metadata: Vec<u8>,
        data: Vec<u8>,
    ) -> Result<(), Status> {
        // Everything the event holds counts, its type and the rest of its system metadata
        // too, so that no part of a request escapes the limit.
        let system: usize = metadata
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        let (size, max) = (
            self.size + data.len() + custom_metadata.len() + system,
            self.max,
        );
        if size > max {
            return Err(kurrent_status(
                "Append",
                StoreError::AppendTooLarge { size, max },
            ));
        }
        self.size = size;
        let event =
            convert::proposed_event(self.events.len(), id, metadata, custom_metadata, data)?;
        self.events.push(event);
        Ok(())
    }
}

/// How an append by a KurrentDB client ended, for `Append` and `BatchAppend` to answer each
/// in its own form.
pub(super) enum AppendOutcome {
    /// Written, or nothing to write: the stream's revision now (`None`: no stream) and the
    /// wire position of the last event written (`None`: no event in `$all`).
    Appended {
        revision: Option<u64>,
        position: Option<u64>,
    },
    /// The stream, or for a metadata stream the metadata, was at `actual` instead.
    WrongExpectedVersion { actual: Option<StreamVersion> },
}

impl KurrentStreamsService {
    /// An empty append under the store's size limit.
    pub(super) fn proposed_events(&self) -> ProposedEvents {
        ProposedEvents {
            events: Vec::new(),
            size: 0,
            max: self.store.options().max_append_size,
        }
    }

    /// Appends `events` to `stream` (a metadata stream sets the metadata) and waits until
    /// they are durable. `events` are within the append size limit.
    pub(super) async fn append_events(
        &self,
        stream: String,
        expected: WireExpected,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome, Status> {
        if let Some(of) = metastream::metadata_stream_of(&stream) {
            let of = of.to_owned();
            return self.metadata_append(of, stream, expected, events).await;
        }
        if events.is_empty() {
            return self.empty_append(stream, expected).await;
        }
        let name = stream.clone();
        let ids: Vec<uuid::Uuid> = events.iter().map(|event| event.id).collect();
        match submit_append(&self.store, stream, expected.to_store(), events).await? {
            Ok(result) => Ok(AppendOutcome::Appended {
                revision: Some(result.next_expected_version.0),
                position: Some(convert::wire_position(result.last_position)),
            }),
            Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                Ok(AppendOutcome::WrongExpectedVersion {
                    actual: last_version(actual),
                })
            }
            Err(StoreError::StreamDeleted { .. }) => Err(stream_deleted(&name)),
            Err(StoreError::EventTooLarge { index, size, max }) => {
                Err(event_too_large(ids[index], size, max))
            }
            Err(error) => Err(kurrent_status("Append", error)),
        }
    }
}

/// A soft delete or a tombstone.
#[derive(Debug, Clone, Copy)]
enum Removal {
    Delete,
    Tombstone,
}

impl KurrentStreamsService {
    /// Deletes or tombstones `stream`; answers the position to report.
    async fn remove(
        &self,
        removal: Removal,
        stream: String,
        expected: WireExpected,
    ) -> Result<Option<u64>, Status> {
        let store = self.store.clone();
        let expected = expected.to_store();
        blocking(move || {
            match removal {
                Removal::Delete => store.delete_stream(&stream, expected),
                Removal::Tombstone => store.tombstone_stream(&stream, expected),
            }
            .map_err(|e| kurrent_status(&format!("{removal:?}"), e))?;
            Ok(committed(&store))
        })
        .await
    }
}

/// The position a delete or tombstone answers: the last committed `$all` position, which the
/// change follows (it writes no event of its own); none on an empty store.
fn committed(store: &EventStore) -> Option<u64> {
    let next = store.committed_position().0;
    (next > 0).then_some(next)
}

#[tonic::async_trait]
impl pb::streams_server::Streams for KurrentStreamsService {
    type ReadStream = MessageStream<pb::ReadResp>;

    async fn read(
        &self,
        request: Request<pb::ReadReq>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a read needs its options"))?;
        let messages = super::read::read(&self.store, self.shutdown.clone(), options).await?;
        Ok(Response::new(messages))
    }

    async fn append(
        &self,
        request: Request<Streaming<pb::AppendReq>>,
    ) -> Result<Response<pb::AppendResp>, Status> {
        use pb::append_req::Content;
        let mut messages = request.into_inner();
        let Some(pb::AppendReq {
            content: Some(Content::Options(options)),
        }) = messages.message().await?
        else {
            return Err(Status::invalid_argument(
                "an append starts with its options, before any event",
            ));
        };
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = convert::append_expected(options.expected_stream_revision);
        let mut events = self.proposed_events();
        while let Some(message) = messages.message().await? {
            let Some(Content::ProposedMessage(event)) = message.content else {
                return Err(Status::invalid_argument(
                    "an append sends its options once, then only events",
                ));
            };
            events.push(event.id, event.metadata, event.custom_metadata, event.data)?;
        }
        let outcome = self.append_events(stream, expected, events.events).await?;
        Ok(Response::new(match outcome {
            AppendOutcome::Appended { revision, position } => appended(revision, position),
            AppendOutcome::WrongExpectedVersion { actual } => {
                wrong_expected_version(expected, actual)
            }
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteReq>,
    ) -> Result<Response<pb::DeleteResp>, Status> {
        use pb::delete_resp::{Position, PositionOption};
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a delete needs its options"))?;
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = convert::delete_expected(options.expected_stream_revision);
        let position = self.remove(Removal::Delete, stream, expected).await?;
        let position_option = Some(match position {
            Some(commit) => PositionOption::Position(Position {
                commit_position: commit,
                prepare_position: commit,
            }),
            None => PositionOption::NoPosition(shared::Empty {}),
        });
        Ok(Response::new(pb::DeleteResp { position_option }))
    }

    async fn tombstone(
        &self,
        request: Request<pb::TombstoneReq>,
    ) -> Result<Response<pb::TombstoneResp>, Status> {
        use pb::tombstone_resp::{Position, PositionOption};
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a tombstone needs its options"))?;
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = convert::tombstone_expected(options.expected_stream_revision);
        let position = self.remove(Removal::Tombstone, stream, expected).await?;
        let position_option = Some(match position {
            Some(commit) => PositionOption::Position(Position {
                commit_position: commit,
                prepare_position: commit,
            }),
            None => PositionOption::NoPosition(shared::Empty {}),
        });
        Ok(Response::new(pb::TombstoneResp { position_option }))
    }

    type BatchAppendStream = MessageStream<pb::BatchAppendResp>;

    async fn batch_append(
        &self,
        request: Request<Streaming<pb::BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Ok(Response::new(super::batch_append::batch_append(
            self.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        )))
    }
}
