//! `Streams.Read`: KurrentDB's bounded reads and its catch-up subscriptions, with filters.
//!
//! One request message says everything: a stream or `$all`, where to start, a direction, a
//! count or "subscribe", a filter, the id form. What is accepted follows KurrentDB's server:
//! a stream subscription reads forwards and takes no filter, a stream read takes no filter,
//! a `$all` subscription reads forwards. The answers:
//! - A read of a stream that was never written, or was soft-deleted, answers one
//!   `stream_not_found` message with status OK; a tombstoned stream fails before any message.
//! - Reading `$all` backwards from a position returns the events before it; forwards, the
//!   events from it on. Stream reads include the revision they start at either way.
//! - A subscription's start is exclusive (the revision or position last processed); `end`
//!   means only what is appended from now on. Its first message is a `confirmation` (Go's
//!   client refuses a subscription without one), then the catch-up events, an empty
//!   `caught_up` (the form every client accepts), then live events. A subscription to a
//!   stream that does not exist yet waits for it; one to a tombstoned stream fails at once.
//! - A filtered `$all` subscription also sends `checkpoint`s, every
//!   `window × checkpointIntervalMultiplier` positions examined (the window is `max`, or 32
//!   when the client leaves it to the server), and one just before `caught_up`.

use std::num::NonZeroU64;

use caskade_eventstore::{
    Direction, EventFilter, EventStore, Position, ReadAll, ReadFrom, ReadStream, StreamState,
    StreamVersion, SubscribeFrom, Subscription, SubscriptionMessage,
};
use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::streams as pb;
use pb::read_req::options::{self as o, AllOptions, StreamOptions};
use tokio::sync::watch;
use tonic::Status;

use super::convert::{self, FilterOn, IdForm};
use super::errors::{kurrent_status, stream_deleted};
use super::metastream;
use crate::services::{MessageStream, blocking, forward_subscription, stream_blocking};

/// The checkpoint window when a filter leaves it to the server (KurrentDB's default).
const DEFAULT_CHECKPOINT_WINDOW: u64 = 32;

/// A decoded `Read`.
#[derive(Debug)]
enum Request {
    Stream {
        stream: String,
        read: ReadStream,
        /// Whether to send `first_stream_position` and `last_stream_position`.
        positions: bool,
    },
    /// A read of the metadata stream of `stream`.
    Metadata {
        stream: String,
        read: ReadStream,
        positions: bool,
    },
    All(ReadAll),
    SubscribeStream {
        stream: String,
        from: SubscribeFrom<StreamVersion>,
    },
    SubscribeAll {
        from: SubscribeFrom<Position>,
        filter: EventFilter,
        checkpoint_every: Option<NonZeroU64>,
    },
}

/// Serves one `Read`: the answers as a response stream. Subscriptions end when `shutdown`
/// turns true.
pub(super) async fn read(
    store: &EventStore,
    shutdown: watch::Receiver<bool>,
    options: pb::read_req::Options,
) -> Result<MessageStream<pb::ReadResp>, Status> {
    let form = convert::id_form(options.uuid_option.as_ref());
    let store = store.clone();
    let failed = |error| kurrent_status("Read", error);
    let event = move |event| convert::read_event(event, form);
    Ok(match decode(options)? {
        Request::Stream {
            stream,
            read,
            positions,
        } => {
            let events = blocking(move || {
                // One head read decides both what is sent and whether the stream is found.
                let events = store.read_stream(&stream, read).map_err(failed)?;
                Ok(match events.stream_state() {
                    Some(StreamState::Live) => {
                        let last = events.last_version();
                        Ok((events, last))
                    }
                    _ => Err(stream),
                })
            })
            .await?;
            match events {
                Err(stream) => stream_blocking(std::iter::once(Ok(stream_not_found(&stream)))),
                Ok((events, last)) => {
                    let events = events.map(move |e| e.map(event).map_err(failed));
                    if positions {
                        stream_blocking(with_stream_positions(events, read, last))
                    } else {
                        stream_blocking(events)
                    }
                }
            }
        }
        Request::Metadata {
            stream,
            read,
            positions,
        } => {
            let answers =
                blocking(move || metadata_read(&store, &stream, read, positions, form)).await?;
            stream_blocking(answers.into_iter().map(Ok))
        }
        Request::All(read) => stream_blocking(
            store
                .read_all(read)
                .map(move |e| e.map(event).map_err(failed)),
        ),
        Request::SubscribeStream { stream, from } => {
            // Opening reads the stream's head from disk.
            let subscription =
                blocking(move || store.subscribe_stream(&stream, from).map_err(failed)).await?;
            forward(subscription, shutdown, form)
        }
        Request::SubscribeAll {
            from,
            filter,
            checkpoint_every,
        } => {
            let subscription = match checkpoint_every {
                Some(every) => store.subscribe_all_with_checkpoints(from, filter, every),
                None => store.subscribe_all(from, filter),
            };
            forward(subscription, shutdown, form)
        }
    })
}

/// `events`, then what `control_option.compatibility` 1 adds: `first_stream_position` (the
/// next revision) after a forwards read that found nothing from another revision, and
/// `last_stream_position` (the stream's last revision) at the end.
fn with_stream_positions(
    events: impl Iterator<Item = Result<pb::ReadResp, Status>> + Send + 'static,
    read: ReadStream,
    last: Option<StreamVersion>,
) -> impl Iterator<Item = Result<pb::ReadResp, Status>> + Send + 'static {
    use pb::read_resp::Content;
    // The tail is computed once the events are spent: it depends on how many there were.
    let mut events = events.fuse();
    let mut tail: Option<std::vec::IntoIter<pb::ReadResp>> = None;
    let mut seen = 0u64;
    let mut errored = false;
    std::iter::from_fn(move || {
        if tail.is_none() {
            if let Some(answer) = events.next() {
                if answer.is_ok() {
                    seen += 1;
                } else {
                    errored = true;
                }
                return Some(answer);
            }
            let StreamVersion(last) = last.filter(|_| !errored)?;
            let next = last.saturating_add(1);
            let mut answers = Vec::with_capacity(2);
            if seen == 0
                && read.direction == Direction::Forwards
                && read.from != ReadFrom::At(StreamVersion(next))
            {
                answers.push(pb::ReadResp {
                    content: Some(Content::FirstStreamPosition(next)),
                });
            }
            answers.push(pb::ReadResp {
                content: Some(Content::LastStreamPosition(last)),
            });
            tail = Some(answers.into_iter());
        }
        tail.as_mut()?.next().map(Ok)
    })
}

/// A read of `stream`'s metadata stream: its one event, the current metadata, if the read
/// reaches it; `stream_not_found` if the metadata was never set.
fn metadata_read(
    store: &EventStore,
    stream: &str,
    read: ReadStream,
    positions: bool,
    form: IdForm,
) -> Result<Vec<pb::ReadResp>, Status> {
    let name = format!("$${stream}");
    let info = store
        .stream_info(stream)
        .map_err(|e| kurrent_status("Read", e))?;
    let Some(info) = info else {
        return Ok(vec![stream_not_found(&name)]);
    };
    if info.state == StreamState::Tombstoned {
        return Err(stream_deleted(&name));
    }
    let Some(revision) = info.metadata_revision else {
        return Ok(vec![stream_not_found(&name)]);
    };
    let version = revision.version;
    let reaches = read.max_count > 0
        && match (read.direction, read.from) {
            (_, ReadFrom::Start | ReadFrom::End) => true,
            (Direction::Forwards, ReadFrom::At(from)) => from <= version,
            (Direction::Backwards, ReadFrom::At(from)) => from >= version,
        };
    let mut answers = Vec::with_capacity(2);
    if reaches {
        let mut event =
            convert::recorded_event(metastream::event(stream, &info.metadata, revision), form);
        event.commit_position = 0;
        event.prepare_position = 0;
        answers.push(pb::ReadResp {
            content: Some(pb::read_resp::Content::Event(pb::read_resp::ReadEvent {
                event: Some(event),
                link: None,
                position: Some(pb::read_resp::read_event::Position::NoPosition(
                    shared::Empty {},
                )),
            })),
        });
    }
    if positions {
        answers.push(pb::ReadResp {
            content: Some(pb::read_resp::Content::LastStreamPosition(version.0)),
        });
    }
    Ok(answers)
}

fn stream_not_found(stream: &str) -> pb::ReadResp {
    pb::ReadResp {
        content: Some(pb::read_resp::Content::StreamNotFound(
            pb::read_resp::StreamNotFound {
                stream_identifier: Some(convert::stream_identifier(stream)),
            },
        )),
    }
}

/// Forwards a subscription as `Read` answers, a confirmation first.
fn forward(
    subscription: Subscription,
    shutdown: watch::Receiver<bool>,
    form: IdForm,
) -> MessageStream<pb::ReadResp> {
    forward_subscription(
        subscription,
        shutdown,
        Some(confirmation()),
        move |message| Some(subscription_message(message, form)),
        |error| kurrent_status("Read", error),
    )
}

/// The first message of every subscription.
fn confirmation() -> pb::ReadResp {
    pb::ReadResp {
        content: Some(pb::read_resp::Content::Confirmation(
            pb::read_resp::SubscriptionConfirmation {
                subscription_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            },
        )),
    }
}

fn subscription_message(message: SubscriptionMessage, form: IdForm) -> pb::ReadResp {
    match message {
        SubscriptionMessage::Event(event) => convert::read_event(event, form),
        SubscriptionMessage::CaughtUp => pb::ReadResp {
            content: Some(pb::read_resp::Content::CaughtUp(
                pb::read_resp::CaughtUp::default(),
            )),
        },
        SubscriptionMessage::Checkpoint(position) => {
            let position = convert::wire_position(position);
            pb::ReadResp {
                content: Some(pb::read_resp::Content::Checkpoint(
                    pb::read_resp::Checkpoint {
                        commit_position: position,
                        prepare_position: position,
                        timestamp: None,
                    },
                )),
            }
        }
    }
}

fn decode(options: pb::read_req::Options) -> Result<Request, Status> {
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
        Some(o::CountOption::Count(count)) => Some(count),
        Some(o::CountOption::Subscription(_)) => None,
        None => {
            return Err(Status::invalid_argument(
                "a read needs a count or a subscription",
            ));
        }
    };
    // A missing filter option is no filter: Go's client sends none.
    let filter = match options.filter_option {
        Some(o::FilterOption::Filter(filter)) => Some(filter),
        Some(o::FilterOption::NoFilter(_)) | None => None,
    };
    match options.stream_option {
        Some(o::StreamOption::Stream(stream)) => {
            // Level 1 adds the first and last stream positions to stream reads.
            let positions = options
                .control_option
                .is_some_and(|control| control.compatibility >= 1);
            decode_stream(stream, direction, count, filter.is_some(), positions)
        }
        Some(o::StreamOption::All(all)) => decode_all(all, direction, count, filter),
        None => Err(Status::invalid_argument("a read needs a stream or $all")),
    }
}

fn decode_stream(
    StreamOptions {
        stream_identifier,
        revision_option,
    }: StreamOptions,
    direction: Direction,
    count: Option<u64>,
    filtered: bool,
    positions: bool,
) -> Result<Request, Status> {
    use o::stream_options::RevisionOption;
    let stream = convert::stream_name(stream_identifier)?;
    let metadata_of = metastream::metadata_stream_of(&stream).map(str::to_owned);
    if filtered {
        return Err(Status::invalid_argument(format!(
            "a read of stream {stream:?} cannot be filtered: filters apply to $all"
        )));
    }
    let Some(count) = count else {
        if direction == Direction::Backwards {
            return Err(Status::invalid_argument(format!(
                "a subscription to stream {stream:?} reads forwards"
            )));
        }
        let from = match revision_option {
            Some(RevisionOption::Revision(revision)) => {
                SubscribeFrom::After(StreamVersion(revision))
            }
            Some(RevisionOption::End(_)) => SubscribeFrom::Now,
            Some(RevisionOption::Start(_)) | None => SubscribeFrom::Start,
        };
        if metadata_of.is_some() {
            return Err(Status::unimplemented(format!(
                "subscriptions to metadata streams such as {stream:?} are not supported"
            )));
        }
        return Ok(Request::SubscribeStream { stream, from });
    };
    let from = match revision_option {
        Some(RevisionOption::Revision(revision)) => ReadFrom::At(StreamVersion(revision)),
        Some(RevisionOption::End(_)) => ReadFrom::End,
        Some(RevisionOption::Start(_)) | None => ReadFrom::Start,
    };
    let read = ReadStream {
        direction,
        from,
        max_count: count,
    };
    Ok(match metadata_of {
        Some(stream) => Request::Metadata {
            stream,
            read,
            positions,
        },
        None => Request::Stream {
            stream,
            read,
            positions,
        },
    })
}

fn decode_all(
    AllOptions { all_option }: AllOptions,
    direction: Direction,
    count: Option<u64>,
    filter: Option<o::FilterOptions>,
) -> Result<Request, Status> {
    use o::all_options::AllOption;
    let (filter, checkpoint_every) = match filter {
        Some(options) => {
            let every = checkpoint_interval(&options);
            (event_filter(options)?, Some(every))
        }
        None => (EventFilter::all(), None),
    };
    let Some(count) = count else {
        if direction == Direction::Backwards {
            return Err(Status::invalid_argument(
                "a subscription to $all reads forwards",
            ));
        }
        let from = match all_option {
            Some(AllOption::Position(position)) => {
                match convert::store_position(position.commit_position) {
                    Some(at) => SubscribeFrom::After(at),
                    None => SubscribeFrom::Start,
                }
            }
            Some(AllOption::End(_)) => SubscribeFrom::Now,
            Some(AllOption::Start(_)) | None => SubscribeFrom::Start,
        };
        return Ok(Request::SubscribeAll {
            from,
            filter,
            checkpoint_every,
        });
    };
    let from = match all_option {
        Some(AllOption::Position(position)) => {
            match (direction, convert::store_position(position.commit_position)) {
                (Direction::Forwards, None) => ReadFrom::Start,
                (Direction::Forwards, Some(at)) => ReadFrom::At(at),
                // Before position 1 lies nothing: a backwards read from there is empty, and
                // one from position p starts at the event before p.
                (Direction::Backwards, None | Some(Position(0))) => {
                    return Ok(Request::All(ReadAll {
                        max_count: 0,
                        ..ReadAll::backwards()
                    }));
                }
                (Direction::Backwards, Some(at)) => ReadFrom::At(Position(at.0 - 1)),
            }
        }
        Some(AllOption::End(_)) => ReadFrom::End,
        Some(AllOption::Start(_)) | None => ReadFrom::Start,
    };
    Ok(Request::All(ReadAll {
        direction,
        from,
        max_count: count,
        filter,
    }))
}

/// How many positions a filtered subscription examines between checkpoints. A multiplier of
/// 0, which KurrentDB's server rejects, counts as 1.
fn checkpoint_interval(options: &o::FilterOptions) -> NonZeroU64 {
    let window = match options.window {
        Some(o::filter_options::Window::Max(max)) if max > 0 => u64::from(max),
        _ => DEFAULT_CHECKPOINT_WINDOW,
    };
    let multiplier = u64::from(options.checkpoint_interval_multiplier.max(1));
    NonZeroU64::new(window * multiplier).unwrap_or(NonZeroU64::MIN)
}

/// The event store's filter for a read's.
fn event_filter(options: o::FilterOptions) -> Result<EventFilter, Status> {
    use o::filter_options::Filter;
    match options.filter {
        Some(Filter::StreamIdentifier(expression)) => {
            convert::event_filter(FilterOn::StreamName, &expression.regex, expression.prefix)
        }
        Some(Filter::EventType(expression)) => {
            convert::event_filter(FilterOn::EventType, &expression.regex, expression.prefix)
        }
        None => Ok(EventFilter::all()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_options(
        window: Option<o::filter_options::Window>,
        multiplier: u32,
    ) -> o::FilterOptions {
        o::FilterOptions {
            filter: None,
            window,
            checkpoint_interval_multiplier: multiplier,
        }
    }

    #[test]
    fn the_checkpoint_interval_is_window_times_multiplier() {
        use o::filter_options::Window;
        let default_window = Some(Window::Count(
            caskade_proto::kurrentdb::event_store::client::Empty {},
        ));
        assert_eq!(
            checkpoint_interval(&filter_options(default_window, 1)).get(),
            32
        );
        assert_eq!(
            checkpoint_interval(&filter_options(Some(Window::Max(10)), 3)).get(),
            30
        );
        // A zero multiplier counts as one; a zero or missing window is the default.
        assert_eq!(
            checkpoint_interval(&filter_options(Some(Window::Max(10)), 0)).get(),
            10
        );
        assert_eq!(
            checkpoint_interval(&filter_options(Some(Window::Max(0)), 2)).get(),
            64
        );
        assert_eq!(checkpoint_interval(&filter_options(None, 1)).get(), 32);
    }

    fn read_options(
        stream_option: o::StreamOption,
        direction: o::ReadDirection,
        count_option: o::CountOption,
        filter_option: Option<o::FilterOption>,
    ) -> pb::read_req::Options {
        pb::read_req::Options {
            stream_option: Some(stream_option),
            read_direction: direction as i32,
            resolve_links: false,
            count_option: Some(count_option),
            filter_option,
            uuid_option: None,
            control_option: None,
        }
    }

    fn stream(name: &str, revision: Option<u64>) -> o::StreamOption {
        o::StreamOption::Stream(StreamOptions {
            stream_identifier: Some(convert::stream_identifier(name)),
            revision_option: revision.map(o::stream_options::RevisionOption::Revision),
        })
    }

    fn all_at(commit: u64) -> o::StreamOption {
        o::StreamOption::All(AllOptions {
            all_option: Some(o::all_options::AllOption::Position(o::Position {
                commit_position: commit,
                prepare_position: commit,
            })),
        })
    }

    fn subscription() -> o::CountOption {
        o::CountOption::Subscription(o::SubscriptionOptions {})
    }

    fn type_prefix_filter() -> o::FilterOption {
        o::FilterOption::Filter(o::FilterOptions {
            filter: Some(o::filter_options::Filter::EventType(
                o::filter_options::Expression {
                    regex: String::new(),
                    prefix: vec!["Order".to_owned()],
                },
            )),
            window: None,
            checkpoint_interval_multiplier: 1,
        })
    }

    #[test]
    fn subscription_starts_are_exclusive() {
        let request = decode(read_options(
            stream("orders", Some(4)),
            o::ReadDirection::Forwards,
            subscription(),
            None,
        ))
        .unwrap();
        assert!(
            matches!(&request, Request::SubscribeStream { stream, from: SubscribeFrom::After(StreamVersion(4)) } if stream == "orders"),
            "{request:?}"
        );
        // Wire position 8 is Caskade's 7: a subscription from it starts after 7.
        let request = decode(read_options(
            all_at(8),
            o::ReadDirection::Forwards,
            subscription(),
            None,
        ))
        .unwrap();
        assert!(
            matches!(
                request,
                Request::SubscribeAll {
                    from: SubscribeFrom::After(Position(7)),
                    checkpoint_every: None,
                    ..
                }
            ),
            "{request:?}"
        );
        let request = decode(read_options(
            all_at(0),
            o::ReadDirection::Forwards,
            subscription(),
            Some(type_prefix_filter()),
        ))
        .unwrap();
        assert!(
            matches!(request, Request::SubscribeAll { from: SubscribeFrom::Start, checkpoint_every: Some(every), .. } if every.get() == 32),
            "{request:?}"
        );
    }

    #[test]
    fn combinations_kurrentdb_refuses_are_invalid_arguments() {
        let cases = [
            (
                "a backwards stream subscription",
                read_options(
                    stream("orders", None),
                    o::ReadDirection::Backwards,
                    subscription(),
                    None,
                ),
                "reads forwards",
            ),
            (
                "a backwards $all subscription",
                read_options(all_at(0), o::ReadDirection::Backwards, subscription(), None),
                "reads forwards",
            ),
            (
                "a filtered stream read",
                read_options(
                    stream("orders", None),
                    o::ReadDirection::Forwards,
                    o::CountOption::Count(10),
                    Some(type_prefix_filter()),
                ),
                "filters apply to $all",
            ),
        ];
        for (what, options, message) in cases {
            let error = decode(options).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{what}");
            assert!(
                error.message().contains(message),
                "{what}: {}",
                error.message()
            );
        }
    }

    #[test]
    fn a_regex_that_does_not_compile_names_itself() {
        let filter = o::FilterOption::Filter(o::FilterOptions {
            filter: Some(o::filter_options::Filter::StreamIdentifier(
                o::filter_options::Expression {
                    regex: "orders-(".to_owned(),
                    prefix: Vec::new(),
                },
            )),
            window: None,
            checkpoint_interval_multiplier: 1,
        });
        let error = decode(read_options(
            all_at(0),
            o::ReadDirection::Forwards,
            o::CountOption::Count(5),
            Some(filter),
        ))
        .unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error.message().contains("\"orders-(\""),
            "{}",
            error.message()
        );
    }
}
