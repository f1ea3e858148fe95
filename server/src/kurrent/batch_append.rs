//! `Streams.BatchAppend`: KurrentDB's bidirectional append, in which one call carries many
//! appends, each named by a correlation id and sent in chunks, and answers each once it is
//! durable or has failed.
//!
//! The rules, as KurrentDB's clients rely on them:
//! - A correlation's first chunk carries its options (stream, expected revision, deadline);
//!   its events accumulate over chunks and are appended when a chunk says `is_final`. Chunks
//!   of other correlations may come in between, and several appends are in flight at once.
//! - Every correlation that reaches `is_final` gets exactly one answer, its correlation id,
//!   stream and expected revision echoed; answers come in the order the appends finish, not
//!   the order sent. A correlation that fails early (no options, an undecodable event, over
//!   the size limit) is answered at once and its later chunks are ignored up to its final
//!   one.
//! - Errors are answers, not the end of the call ([`super::errors::batch_status`]); only a
//!   request that cannot be answered (no correlation id) or a broken request stream ends it.
//! - The deadline comes as a duration or, from older clients, an absolute time; either is
//!   capped at [`DEADLINE_CAP`] (the Rust client sends an absolute time in the duration
//!   field, .NET the year 9999 for none). A deadline already passed is answered `Timeout`
//!   at once; one that passes while the append waits is answered `Timeout`, and the append
//!   may still become durable (a retry with the same ids is written once).
//! - What one call holds is bounded: at [`MAX_IN_FLIGHT`] appends being written it reads no
//!   more requests until one is answered; a correlation beyond [`MAX_GATHERING`] open at
//!   once, or one whose chunk takes the events gathered over all open correlations past the
//!   size limit of one append, is answered with an error.
//! - When the requests end, the call ends after the last answer. On server shutdown it stops
//!   reading, answers what is in flight (while the client has room for the answers: one that
//!   stopped reading does not hold the shutdown up), then ends with `UNAVAILABLE`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::streams as pb;
use caskade_proto::kurrentdb::google::rpc;
use pb::batch_append_req::options::{DeadlineOption, ExpectedStreamPosition};
use pb::batch_append_resp::success::{CurrentRevisionOption, PositionOption};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{self, WireExpected};
use super::errors::{batch_status, batch_timeout, batch_wrong_expected_version};
use super::streams::{AppendOutcome, KurrentStreamsService, ProposedEvents};
use crate::services::MessageStream;

/// The longest a client may ask an append to wait for.
pub(crate) const DEADLINE_CAP: Duration = Duration::from_secs(10);

/// Answers buffered ahead of a slow client.
const ANSWER_BUFFER: usize = 256;

/// Appends of one call being written at once. At this many, the call reads no more requests
/// until one is answered, so a client that sends faster than it reads answers is slowed
/// rather than held in memory.
const MAX_IN_FLIGHT: usize = 256;

/// Correlations of one `BatchAppend` call whose final chunk has not come. A new one past
/// this many is answered with a `BadRequest` at once; what a call holds stays bounded by this
/// many appends of the size limit.
pub const MAX_GATHERING: usize = 1024;

/// A correlation whose final chunk has not come yet.
struct Gathering {
    /// The id as the client sent it, echoed in the answer.
    wire_id: shared::Uuid,
    stream: String,
    expected: WireExpected,
    /// When the append stops waiting, from the deadline the first chunk carried.
    deadline: Instant,
    events: ProposedEvents,
}

/// Serves one `BatchAppend` call.
pub(super) fn batch_append(
    service: KurrentStreamsService,
    mut requests: Streaming<pb::BatchAppendReq>,
    mut shutdown: watch::Receiver<bool>,
) -> MessageStream<pb::BatchAppendResp> {
    let (answers, receiver) = mpsc::channel(ANSWER_BUFFER);
    tokio::spawn(async move {
        let mut open = Correlations::default();
        let mut in_flight = JoinSet::new();
        let ended = loop {
            let request = tokio::select! {
                request = requests.message(), if in_flight.len() < MAX_IN_FLIGHT => request,
                _ = shutdown.wait_for(|stop| *stop) => {
                    break Some(Status::unavailable(
                        "the server is shutting down; append again once it is back",
                    ));
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(error) = done {
                        // Its client gets no answer for it and waits out its own deadline.
                        tracing::error!(%error, "a batch append task failed");
                    }
                    continue;
                }
            };
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => break None,
                Err(status) => break Some(status),
            };
            let Some(wire_id) = request.correlation_id.clone() else {
                break Some(Status::invalid_argument(
                    "every BatchAppend request needs a correlation id",
                ));
            };
            let id = match convert::store_id(Some(wire_id.clone()), "the correlation id") {
                Ok(id) => id,
                Err(status) => break Some(status),
            };
            match open.take(&service, id, request) {
                Taken::Nothing => {}
                Taken::Ready(ready) => {
                    let (service, answers) = (service.clone(), answers.clone());
                    let mut shutdown = shutdown.clone();
                    in_flight.spawn(async move {
                        let answer = append(&service, ready).await;
                        deliver(&answers, Ok(answer), &mut shutdown).await;
                    });
                }
                Taken::Refused(stream, status) => {
                    let error = pb::batch_append_resp::Result::Error(status);
                    let refused = Ok(answer(wire_id, &stream, error));
                    if !deliver(&answers, refused, &mut shutdown).await {
                        // The client is gone, or stopped reading while the server shuts down.
                        in_flight.abort_all();
                        return;
                    }
                }
            }
        };
        while in_flight.join_next().await.is_some() {}
        if let Some(status) = ended {
            deliver(&answers, Err(status), &mut shutdown).await;
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// The correlations of one call that are not answered yet, and the bytes they hold.
#[derive(Default)]
struct Correlations {
    gathering: HashMap<uuid::Uuid, Gathering>,
    /// Correlations that failed early and whose final chunk has not come yet.
    failed: HashSet<uuid::Uuid>,
    /// The bytes of the events in `gathering`.
    gathered: usize,
}

/// What a request made of its correlation.
enum Taken {
    /// Nothing to do yet, or a chunk of a correlation that already failed.
    Nothing,
    /// The final chunk: the append to write.
    Ready(Gathering),
    /// The correlation fails: its stream (if known) and the error to answer.
    Refused(String, rpc::Status),
}

impl Correlations {
    /// Takes `request`, a chunk of correlation `id`.
    fn take(
        &mut self,
        service: &KurrentStreamsService,
        id: uuid::Uuid,
        request: pb::BatchAppendReq,
    ) -> Taken {
        if self.failed.contains(&id) {
            if request.is_final {
                self.failed.remove(&id);
            }
            return Taken::Nothing;
        }
        let before = self.gathering.get(&id).map(|open| open.events.size());
        if before.is_none() && self.gathering.len() + self.failed.len() >= MAX_GATHERING {
            // Not remembered as failed, so that refusals cannot grow the call's state: its
            // later chunks are refused again, or read as first chunks.
            let status = Status::invalid_argument(format!(
                "a batch append call may gather at most {MAX_GATHERING} appends at once: send \
                 the final chunks of those open before starting more"
            ));
            return Taken::Refused(String::new(), batch_status(&status));
        }
        self.gathered -= before.unwrap_or(0);
        match gather(service, &mut self.gathering, id, request) {
            Ok(Some(ready)) => Taken::Ready(ready),
            Err((stream, status, is_final)) => {
                self.gathering.remove(&id);
                if !is_final {
                    self.failed.insert(id);
                }
                Taken::Refused(stream, status)
            }
            Ok(None) => {
                let open = &self.gathering[&id];
                let (size, budget) = (open.events.size(), open.events.max());
                if self.gathered + size <= budget {
                    self.gathered += size;
                    return Taken::Nothing;
                }
                // Over what one append may hold, summed over the open ones.
                let stream = open.stream.clone();
                self.gathering.remove(&id);
                self.failed.insert(id);
                let status = Status::invalid_argument(format!(
                    "a batch append call may gather at most {budget} bytes at once over its \
                     open appends: send their final chunks first"
                ));
                Taken::Refused(stream, batch_status(&status))
            }
        }
    }
}

/// Sends `answer`, waiting for room while the client reads; once the server is shutting
/// down, only if there is room, so that a client that stopped reading cannot hold up the
/// shutdown. Whether it was sent.
async fn deliver(
    answers: &mpsc::Sender<Result<pb::BatchAppendResp, Status>>,
    answer: Result<pb::BatchAppendResp, Status>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        // First, so that an answer with room is sent even when the shutdown has begun.
        biased;
        sent = answers.send(answer) => sent.is_ok(),
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

/// Adds `request` to its correlation; the correlation when this was its final chunk, or
/// the stream and error to answer it with (and whether this was its final chunk).
fn gather(
    service: &KurrentStreamsService,
    gathering: &mut HashMap<uuid::Uuid, Gathering>,
    id: uuid::Uuid,
    request: pb::BatchAppendReq,
) -> Result<Option<Gathering>, (String, rpc::Status, bool)> {
    let is_final = request.is_final;
    let wire_id = request.correlation_id.unwrap_or_default();
    let entry = match gathering.entry(id) {
        std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::hash_map::Entry::Vacant(entry) => {
            let Some(options) = request.options else {
                let status = Status::invalid_argument(
                    "the first chunk of a batch append carries its options",
                );
                return Err((String::new(), batch_status(&status), is_final));
            };
            let stream = convert::stream_name(options.stream_identifier)
                .map_err(|status| (String::new(), batch_status(&status), is_final))?;
            entry.insert(Gathering {
                wire_id,
                stream,
                expected: expected(options.expected_stream_position),
                deadline: Instant::now() + timeout(options.deadline_option, SystemTime::now()),
                events: service.proposed_events(),
            })
        }
    };
    for event in request.proposed_messages {
        if let Err(status) =
            entry
                .events
                .push(event.id, event.metadata, event.custom_metadata, event.data)
        {
            return Err((entry.stream.clone(), batch_status(&status), is_final));
        }
    }
    Ok(if is_final {
        gathering.remove(&id)
    } else {
        None
    })
}

/// Appends a gathered correlation and makes its answer.
async fn append(service: &KurrentStreamsService, ready: Gathering) -> pb::BatchAppendResp {
    use pb::batch_append_resp::Result;
    let Gathering {
        wire_id,
        stream,
        expected,
        deadline,
        events,
    } = ready;
    let result = if deadline <= Instant::now() {
        Result::Error(batch_timeout())
    } else {
        let appending = service.append_events(stream.clone(), expected, events.events);
        match tokio::time::timeout_at(deadline, appending).await {
            Err(_elapsed) => Result::Error(batch_timeout()),
            Ok(Err(status)) => Result::Error(batch_status(&status)),
            Ok(Ok(AppendOutcome::WrongExpectedVersion { actual })) => {
                Result::Error(batch_wrong_expected_version(expected, actual))
            }
            Ok(Ok(AppendOutcome::Appended { revision, position })) => {
                Result::Success(pb::batch_append_resp::Success {
                    current_revision_option: Some(match revision {
                        Some(revision) => CurrentRevisionOption::CurrentRevision(revision),
                        None => CurrentRevisionOption::NoStream(()),
                    }),
                    position_option: Some(match position {
                        Some(commit) => PositionOption::Position(shared::AllStreamPosition {
                            commit_position: commit,
                            prepare_position: commit,
                        }),
                        None => PositionOption::NoPosition(()),
                    }),
                })
            }
        }
    };
    let mut answer = answer(wire_id, &stream, result);
    answer.expected_stream_position = Some(echo(expected));
    answer
}

/// The answer to a correlation; its expected revision is echoed once it is known.
fn answer(
    wire_id: shared::Uuid,
    stream: &str,
    result: pb::batch_append_resp::Result,
) -> pb::BatchAppendResp {
    pb::BatchAppendResp {
        correlation_id: Some(wire_id),
        result: Some(result),
        stream_identifier: Some(convert::stream_identifier(stream)),
        expected_stream_position: None,
    }
}

fn echo(expected: WireExpected) -> pb::batch_append_resp::ExpectedStreamPosition {
    use pb::batch_append_resp::ExpectedStreamPosition as Echo;
    match expected {
        WireExpected::Revision(revision) => Echo::StreamPosition(revision),
        WireExpected::NoStream => Echo::NoStream(()),
        WireExpected::Any => Echo::Any(()),
        WireExpected::StreamExists => Echo::StreamExists(()),
    }
}

fn expected(option: Option<ExpectedStreamPosition>) -> WireExpected {
    match option {
        Some(ExpectedStreamPosition::StreamPosition(revision)) => WireExpected::Revision(revision),
        Some(ExpectedStreamPosition::NoStream(())) => WireExpected::NoStream,
        Some(ExpectedStreamPosition::StreamExists(())) => WireExpected::StreamExists,
        Some(ExpectedStreamPosition::Any(())) | None => WireExpected::Any,
    }
}

/// How long an append may wait, from the deadline a client sent at `now`, capped.
fn timeout(option: Option<DeadlineOption>, now: SystemTime) -> Duration {
    let requested = match option {
        None => DEADLINE_CAP,
        Some(DeadlineOption::Deadline(duration)) => {
            Duration::try_from(duration).unwrap_or(Duration::ZERO)
        }
        Some(DeadlineOption::Deadline21100(at)) => SystemTime::try_from(at)
            // A time past what the clock can hold (the year 9999 or beyond) is no deadline.
            .map_or(DEADLINE_CAP, |at| {
                at.duration_since(now).unwrap_or(Duration::ZERO)
            }),
    };
    requested.min(DEADLINE_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn deadlines_in_every_encoding_are_capped_and_past_ones_are_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let duration = |seconds| {
            Some(DeadlineOption::Deadline(prost_types::Duration {
                seconds,
                nanos: 0,
            }))
        };
        assert_eq!(timeout(None, now), DEADLINE_CAP);
        assert_eq!(timeout(duration(3), now), Duration::from_secs(3));
        assert_eq!(timeout(duration(0), now), Duration::ZERO);
        assert_eq!(timeout(duration(-5), now), Duration::ZERO);
        // The Rust client's absolute time in the duration field.
        assert_eq!(timeout(duration(1_700_000_010), now), DEADLINE_CAP);
        let absolute = |seconds| Some(DeadlineOption::Deadline21100(at(seconds)));
        assert_eq!(
            timeout(absolute(1_700_000_002), now),
            Duration::from_secs(2)
        );
        assert_eq!(timeout(absolute(1_699_999_999), now), Duration::ZERO);
        // .NET's "no deadline": 9999-12-31T23:59:59Z.
        assert_eq!(timeout(absolute(253_402_300_799), now), DEADLINE_CAP);
    }

    #[test]
    fn every_expected_position_maps_to_its_revision_kind() {
        assert!(matches!(
            expected(Some(ExpectedStreamPosition::StreamPosition(4))),
            WireExpected::Revision(4)
        ));
        assert!(matches!(
            expected(Some(ExpectedStreamPosition::NoStream(()))),
            WireExpected::NoStream
        ));
        assert!(matches!(
            expected(Some(ExpectedStreamPosition::StreamExists(()))),
            WireExpected::StreamExists
        ));
        assert!(matches!(
            expected(Some(ExpectedStreamPosition::Any(()))),
            WireExpected::Any
        ));
        assert!(matches!(expected(None), WireExpected::Any));
    }
}
