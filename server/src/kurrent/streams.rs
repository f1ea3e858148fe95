//! `event_store.client.streams.Streams`: KurrentDB's appends and deletes over the event
//! store, and its reads and subscriptions through [`super::read`], with the conventions of
//! [`super::convert`] and the errors of [`super::errors`].
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

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by this server yet"))
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
    ) -> Result<pb::AppendResp, Status> {
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
            appended(last.map(|v| v.0), None)
        } else {
            wrong_expected_version(expected, last)
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
    ) -> Result<pb::AppendResp, Status> {
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
                appended(current.map(|v| v.0), None)
            } else {
                wrong_expected_version(expected, current)
            });
        };
        let result =
            blocking(move || Ok(store.replace_metadata(&stream, expected.to_store(), metadata)))
                .await?;
        match result {
            Ok(version) => Ok(appended(Some(version.0), None)),
            Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                Ok(wrong_expected_version(expected, last_version(actual)))
            }
            Err(StoreError::StreamDeleted { .. }) => Err(stream_deleted(&name)),
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
        let max = self.store.options().max_append_size;
        let mut events: Vec<EventData> = Vec::new();
        let mut size = 0usize;
        while let Some(message) = messages.message().await? {
            let Some(Content::ProposedMessage(event)) = message.content else {
                return Err(Status::invalid_argument(
                    "an append sends its options once, then only events",
                ));
            };
            // Counted as the messages arrive, so an oversized append is refused before it
            // is all in memory.
            size += event.data.len() + event.custom_metadata.len();
            if size > max {
                return Err(kurrent_status(
                    "Append",
                    StoreError::AppendTooLarge { size, max },
                ));
            }
            events.push(convert::proposed_event(
                events.len(),
                event.id,
                event.metadata,
                event.custom_metadata,
                event.data,
            )?);
        }
        if let Some(of) = metastream::metadata_stream_of(&stream) {
            let of = of.to_owned();
            return self
                .metadata_append(of, stream, expected, events)
                .await
                .map(Response::new);
        }
        if events.is_empty() {
            return self.empty_append(stream, expected).await.map(Response::new);
        }
        let name = stream.clone();
        let ids: Vec<uuid::Uuid> = events.iter().map(|event| event.id).collect();
        match submit_append(&self.store, stream, expected.to_store(), events).await? {
            Ok(result) => Ok(Response::new(appended(
                Some(result.next_expected_version.0),
                Some(convert::wire_position(result.last_position)),
            ))),
            Err(StoreError::WrongExpectedVersion { actual, .. }) => Ok(Response::new(
                wrong_expected_version(expected, last_version(actual)),
            )),
            Err(StoreError::StreamDeleted { .. }) => Err(stream_deleted(&name)),
            Err(StoreError::EventTooLarge { index, size, max }) => {
                Err(event_too_large(ids[index], size, max))
            }
            Err(error) => Err(kurrent_status("Append", error)),
        }
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
        _request: Request<Streaming<pb::BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Err(unimplemented("BatchAppend"))
    }
}
