//! `event_store.client.streams.Streams`: KurrentDB's reads, appends and deletes over the
//! event store, with the conventions of [`super::convert`] and the errors of
//! [`super::errors`].
//!
//! What a KurrentDB client relies on, and where it differs from `caskade.v1`:
//! - A read of a stream that was never written, or was soft-deleted, answers one
//!   `stream_not_found` message and ends with status OK; a tombstoned stream fails before
//!   any message. Each event is a message of its own.
//! - Reading `$all` backwards from a position returns the events before it; forwards, the
//!   events from it on. Stream reads include the revision they start at either way.
//! - A wrong expected version on `Append` is an answer, not an error, filling the current
//!   and the legacy fields; on `Delete` and `Tombstone` it is an error with trailers.
//! - An append of no events checks the expected revision and answers the current one.

use caskade_eventstore::{
    Direction, Error as StoreError, EventData, EventStore, ReadAll, ReadFrom, ReadStream,
    StreamState, StreamVersion,
};
use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::streams as pb;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, WireExpected};
use super::errors::{event_too_large, kurrent_status, stream_deleted};
use crate::services::{MessageStream, blocking, stream_blocking, submit_append};

/// The KurrentDB `Streams` service.
#[derive(Clone)]
pub struct KurrentStreamsService {
    store: EventStore,
}

impl KurrentStreamsService {
    /// The service over `store`.
    #[must_use]
    pub fn new(store: EventStore) -> Self {
        KurrentStreamsService { store }
    }
}

/// A decoded bounded read.
enum Read {
    Stream { stream: String, read: ReadStream },
    All(ReadAll),
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by this server yet"))
}

/// Decodes a `Read` that is not a subscription and has no filter.
fn decode_read(options: pb::read_req::Options) -> Result<Read, Status> {
    use pb::read_req::options::{self as o, AllOptions, StreamOptions};
    let direction = match o::ReadDirection::try_from(options.read_direction) {
        Ok(o::ReadDirection::Forwards) => Direction::Forwards,
        Ok(o::ReadDirection::Backwards) => Direction::Backwards,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown read direction {}",
                options.read_direction
            )));
        }
    };
    let count = match options.count_option {
        Some(o::CountOption::Count(count)) => count,
        Some(o::CountOption::Subscription(_)) => return Err(unimplemented("subscribing")),
        None => return Err(Status::invalid_argument("a read needs a count")),
    };
    if matches!(options.filter_option, Some(o::FilterOption::Filter(_))) {
        return Err(unimplemented("server-side filtering"));
    }
    match options.stream_option {
        Some(o::StreamOption::Stream(StreamOptions {
            stream_identifier,
            revision_option,
        })) => {
            let stream = convert::stream_name(stream_identifier)?;
            let from = match revision_option {
                Some(o::stream_options::RevisionOption::Revision(revision)) => {
                    ReadFrom::At(StreamVersion(revision))
                }
                Some(o::stream_options::RevisionOption::End(_)) => ReadFrom::End,
                Some(o::stream_options::RevisionOption::Start(_)) | None => ReadFrom::Start,
            };
            let read = ReadStream {
                direction,
                from,
                max_count: count,
            };
            Ok(Read::Stream { stream, read })
        }
        Some(o::StreamOption::All(AllOptions { all_option })) => {
            let from = match all_option {
                Some(o::all_options::AllOption::Position(position)) => {
                    match (direction, convert::store_position(position.commit_position)) {
                        (Direction::Forwards, None) => ReadFrom::Start,
                        (Direction::Forwards, Some(at)) => ReadFrom::At(at),
                        // Before position 1 lies nothing: a backwards read from there is
                        // empty, and one from position p starts at the event before p.
                        (Direction::Backwards, None | Some(caskade_eventstore::Position(0))) => {
                            return Ok(Read::All(ReadAll {
                                max_count: 0,
                                ..ReadAll::backwards()
                            }));
                        }
                        (Direction::Backwards, Some(at)) => {
                            ReadFrom::At(caskade_eventstore::Position(at.0 - 1))
                        }
                    }
                }
                Some(o::all_options::AllOption::End(_)) => ReadFrom::End,
                Some(o::all_options::AllOption::Start(_)) | None => ReadFrom::Start,
            };
            let read = match direction {
                Direction::Forwards => ReadAll::forwards(),
                Direction::Backwards => ReadAll::backwards(),
            };
            Ok(Read::All(ReadAll {
                from,
                max_count: count,
                ..read
            }))
        }
        None => Err(Status::invalid_argument("a read needs a stream or $all")),
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
        let matches = match expected {
            WireExpected::Any => true,
            WireExpected::NoStream => live_last.is_none(),
            WireExpected::StreamExists => live_last.is_some(),
            WireExpected::Revision(revision) => live_last == Some(StreamVersion(revision)),
        };
        Ok(if matches {
            appended(last.map(|v| v.0), None)
        } else {
            wrong_expected_version(expected, last)
        })
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
        let form = convert::id_form(options.uuid_option.as_ref());
        let store = self.store.clone();
        let messages = match decode_read(options)? {
            Read::Stream { stream, read } => {
                let events = blocking(move || {
                    let missing = match store.stream_info(&stream) {
                        Ok(None) => true,
                        Ok(Some(info)) => info.state == StreamState::Deleted,
                        Err(error) => return Err(kurrent_status("Read", error)),
                    };
                    if missing {
                        return Ok(Err(stream));
                    }
                    store
                        .read_stream(&stream, read)
                        .map(Ok)
                        .map_err(|e| kurrent_status("Read", e))
                })
                .await?;
                match events {
                    Err(stream) => {
                        let not_found = pb::ReadResp {
                            content: Some(pb::read_resp::Content::StreamNotFound(
                                pb::read_resp::StreamNotFound {
                                    stream_identifier: Some(convert::stream_identifier(&stream)),
                                },
                            )),
                        };
                        stream_blocking(std::iter::once(Ok(not_found)))
                    }
                    Ok(events) => stream_blocking(events.map(move |event| {
                        event
                            .map(|event| convert::read_event(event, form))
                            .map_err(|e| kurrent_status("Read", e))
                    })),
                }
            }
            Read::All(read) => stream_blocking(store.read_all(read).map(move |event| {
                event
                    .map(|event| convert::read_event(event, form))
                    .map_err(|e| kurrent_status("Read", e))
            })),
        };
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
            Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                let actual = match actual {
                    caskade_eventstore::CurrentVersion::Current(version) => Some(version),
                    caskade_eventstore::CurrentVersion::NoStream => None,
                };
                Ok(Response::new(wrong_expected_version(expected, actual)))
            }
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
