//! Conversions between the wire messages of `caskade.v1` and the event store's types: every
//! request is decoded and every answer encoded here, so that the services only call the store
//! and send its answers.
//! Decoding checks what the wire types cannot (UUID syntax, oneofs left empty, filters sent
//! with a stream) and reports it as `INVALID_ARGUMENT`.

use caskade_eventstore::{
    AppendResult, BackupReport, ContentType, Direction, EventData, EventFilter, ExpectedVersion,
    MergeReport, Position, ReadAll, ReadFrom, ReadStream, RecordedEvent, StoreStats, StreamInfo,
    StreamMetadata, StreamState, StreamVersion, SubscribeFrom, SubscriptionMessage,
};
use caskade_proto::v1 as pb;
use tonic::Status;

use crate::status::store_status;

pub(crate) fn expected_version(expected: Option<pb::ExpectedVersion>) -> ExpectedVersion {
    match expected.and_then(|e| e.kind) {
        None | Some(pb::expected_version::Kind::Any(_)) => ExpectedVersion::Any,
        Some(pb::expected_version::Kind::NoStream(_)) => ExpectedVersion::NoStream,
        Some(pb::expected_version::Kind::StreamExists(_)) => ExpectedVersion::StreamExists,
        Some(pb::expected_version::Kind::Exact(v)) => ExpectedVersion::Exact(StreamVersion(v)),
    }
}

/// An append's events, each checked (see [`event_data`]).
pub(crate) fn events(events: Vec<pb::EventData>) -> Result<Vec<EventData>, Status> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| event_data(index, event))
        .collect()
}

fn event_data(index: usize, event: pb::EventData) -> Result<EventData, Status> {
    let id = if event.id.is_empty() {
        uuid::Uuid::new_v4()
    } else {
        uuid::Uuid::parse_str(&event.id).map_err(|e| {
            Status::invalid_argument(format!(
                "event {index} has an invalid id {:?}: {e}",
                event.id
            ))
        })?
    };
    let content_type = match pb::ContentType::try_from(event.content_type) {
        Ok(pb::ContentType::Json) => ContentType::Json,
        Ok(pb::ContentType::Binary) => ContentType::Binary,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "event {index} has an unknown content type {}",
                event.content_type
            )));
        }
    };
    Ok(EventData {
        id,
        event_type: event.r#type,
        content_type,
        data: event.data,
        metadata: event.metadata,
    })
}

/// A decoded `Read` request.
pub(crate) enum Read {
    /// A read of one stream.
    Stream {
        /// The stream's name.
        stream: String,
        /// Where and which way.
        read: ReadStream,
    },
    /// A read of `$all`.
    All(ReadAll),
}

/// Decodes a read (see [`read_from`]); a `max_count` of 0 means no limit.
pub(crate) fn read_request(request: pb::ReadRequest) -> Result<Read, Status> {
    let direction = match pb::Direction::try_from(request.direction) {
        Ok(pb::Direction::Forwards) => Direction::Forwards,
        Ok(pb::Direction::Backwards) => Direction::Backwards,
        Err(_) => return Err(Status::invalid_argument("unknown read direction")),
    };
    let max_count = if request.max_count == 0 {
        u64::MAX
    } else {
        request.max_count
    };
    match request.target {
        Some(pb::read_request::Target::Stream(stream)) => {
            reject_stream_filter(request.filter.as_ref())?;
            let read = ReadStream {
                direction,
                from: read_from(request.from, direction, StreamVersion),
                max_count,
            };
            Ok(Read::Stream { stream, read })
        }
        Some(pb::read_request::Target::All(_)) => Ok(Read::All(ReadAll {
            direction,
            from: read_from(request.from, direction, Position),
            max_count,
            filter: filter(request.filter)?,
        })),
        None => Err(Status::invalid_argument("a read names a stream or `all`")),
    }
}

/// Where a read starts, the version or position made by `at`; without a `from`, the start
/// for a forwards read and the end for a backwards one.
fn read_from<T>(
    from: Option<pb::read_request::From>,
    direction: Direction,
    at: fn(u64) -> T,
) -> ReadFrom<T> {
    match from {
        Some(pb::read_request::From::At(n)) => ReadFrom::At(at(n)),
        Some(pb::read_request::From::Start(_)) => ReadFrom::Start,
        Some(pb::read_request::From::End(_)) => ReadFrom::End,
        None => match direction {
            Direction::Forwards => ReadFrom::Start,
            Direction::Backwards => ReadFrom::End,
        },
    }
}

/// A decoded `Subscribe` request.
pub(crate) enum Subscribe {
    /// A subscription to one stream.
    Stream {
        /// The stream's name.
        stream: String,
        /// Where it starts.
        from: SubscribeFrom<StreamVersion>,
    },
    /// A subscription to `$all`.
    All {
        /// Where it starts.
        from: SubscribeFrom<Position>,
        /// Which events it delivers.
        filter: EventFilter,
    },
}

/// Decodes a subscription (see [`subscribe_from`]).
pub(crate) fn subscribe_request(request: pb::SubscribeRequest) -> Result<Subscribe, Status> {
    match request.target {
        Some(pb::subscribe_request::Target::Stream(stream)) => {
            reject_stream_filter(request.filter.as_ref())?;
            Ok(Subscribe::Stream {
                stream,
                from: subscribe_from(request.from, StreamVersion),
            })
        }
        Some(pb::subscribe_request::Target::All(_)) => Ok(Subscribe::All {
            from: subscribe_from(request.from, Position),
            filter: filter(request.filter)?,
        }),
        None => Err(Status::invalid_argument(
            "a subscription names a stream or `all`",
        )),
    }
}

/// Where a subscription starts, the version or position made by `after`; without a `from`,
/// the start.
fn subscribe_from<T>(
    from: Option<pb::subscribe_request::From>,
    after: fn(u64) -> T,
) -> SubscribeFrom<T> {
    match from {
        None | Some(pb::subscribe_request::From::Start(_)) => SubscribeFrom::Start,
        Some(pb::subscribe_request::From::After(n)) => SubscribeFrom::After(after(n)),
        Some(pb::subscribe_request::From::Now(_)) => SubscribeFrom::Now,
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

/// A backup's destination directory (on the server), which must be named.
pub(crate) fn backup_destination(request: pb::BackupRequest) -> Result<String, Status> {
    if request.destination.is_empty() {
        return Err(Status::invalid_argument(
            "a backup needs a destination directory",
        ));
    }
    Ok(request.destination)
}

pub(crate) fn recorded(event: RecordedEvent) -> pb::RecordedEvent {
    pb::RecordedEvent {
        // Not `to_string`: both would go through the formatting machinery, once per event
        // of a read.
        id: event
            .id
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .to_owned(),
        stream: String::from(&*event.stream),
        version: event.version.0,
        position: event.position.0,
        r#type: event.event_type,
        content_type: match event.content_type {
            ContentType::Json => pb::ContentType::Json,
            ContentType::Binary => pb::ContentType::Binary,
        }
        .into(),
        data: event.data,
        metadata: event.metadata,
        recorded_at_micros: event.recorded_at.timestamp_micros(),
    }
}

pub(crate) fn filter(filter: Option<pb::Filter>) -> Result<EventFilter, Status> {
    let Some(filter) = filter else {
        return Ok(EventFilter::all());
    };
    let joined = |one: String, many: Vec<String>| -> Vec<String> {
        std::iter::once(one)
            .filter(|prefix| !prefix.is_empty())
            .chain(many)
            .collect()
    };
    let mut out = EventFilter::all();
    let stream_prefixes = joined(filter.stream_prefix, filter.stream_prefixes);
    if !stream_prefixes.is_empty() {
        out = out.stream_prefixes(stream_prefixes);
    }
    let type_prefixes = joined(filter.event_type_prefix, filter.event_type_prefixes);
    if !type_prefixes.is_empty() {
        out = out.event_type_prefixes(type_prefixes);
    }
    if !filter.stream_regex.is_empty() {
        out = out
            .stream_regex(&filter.stream_regex)
            .map_err(store_status)?;
    }
    if !filter.event_type_regex.is_empty() {
        out = out
            .event_type_regex(&filter.event_type_regex)
            .map_err(store_status)?;
    }
    Ok(out)
}

/// `filter` on the wire, every constraint in the repeated and regex fields.
pub(crate) fn wire_filter(filter: &EventFilter) -> pb::Filter {
    pb::Filter {
        stream_prefix: String::new(),
        event_type_prefix: String::new(),
        event_type_regex: filter.event_type_pattern().unwrap_or_default().to_owned(),
        stream_prefixes: filter.stream_prefix_list().to_vec(),
        stream_regex: filter.stream_pattern().unwrap_or_default().to_owned(),
        event_type_prefixes: filter.event_type_prefix_list().to_vec(),
    }
}

pub(crate) fn metadata(metadata: Option<pb::StreamMetadata>) -> Result<StreamMetadata, Status> {
    let Some(metadata) = metadata else {
        return Ok(StreamMetadata::default());
    };
    let custom =
        if metadata.custom_json.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&metadata.custom_json).map_err(|e| {
                Status::invalid_argument(format!("custom_json is not valid JSON: {e}"))
            })?)
        };
    Ok(StreamMetadata {
        max_count: metadata.max_count,
        max_age: metadata.max_age_seconds.map(std::time::Duration::from_secs),
        truncate_before: metadata.truncate_before.map(StreamVersion),
        custom,
    })
}

pub(crate) fn stream_info(info: StreamInfo) -> pb::StreamInfo {
    pb::StreamInfo {
        name: info.name,
        last_version: info.last_version.map(|v| v.0),
        state: match info.state {
            StreamState::Live => pb::StreamState::Live,
            StreamState::Deleted => pb::StreamState::Deleted,
            StreamState::Tombstoned => pb::StreamState::Tombstoned,
        }
        .into(),
        metadata: Some(pb::StreamMetadata {
            max_count: info.metadata.max_count,
            max_age_seconds: info.metadata.max_age.map(|d| d.as_secs()),
            truncate_before: info.metadata.truncate_before.map(|v| v.0),
            custom_json: info
                .metadata
                .custom
                .map(|v| v.to_string())
                .unwrap_or_default(),
        }),
    }
}

pub(crate) fn scavenge_progress(
    progress: &caskade_eventstore::ScavengeProgress,
) -> pb::ScavengeResponse {
    pb::ScavengeResponse {
        streams_examined: progress.streams_examined,
        streams_total: progress.streams_total,
        events_examined: progress.events_examined,
        events_removed: progress.events_removed,
        merge_bytes_read: progress.merge.map_or(0, |merge| merge.bytes_read),
        merge_bytes_total: progress.merge.map_or(0, |merge| merge.bytes_total),
        done: false,
        bytes_reclaimed: 0,
    }
}

pub(crate) fn scavenge_report(report: caskade_eventstore::ScavengeReport) -> pb::ScavengeResponse {
    pb::ScavengeResponse {
        streams_examined: report.streams as u64,
        streams_total: report.streams as u64,
        events_examined: report.events_examined,
        events_removed: report.events_removed,
        merge_bytes_read: report.merge.bytes_read,
        merge_bytes_total: report.merge.bytes_read,
        done: true,
        bytes_reclaimed: report.bytes_reclaimed,
    }
}

pub(crate) fn appended(result: &AppendResult) -> pb::AppendResponse {
    pb::AppendResponse {
        next_expected_version: result.next_expected_version.0,
        first_position: result.first_position.0,
        last_position: result.last_position.0,
    }
}

/// A subscription's message on the wire; `None` for checkpoints, which `caskade.v1` does not
/// ask for.
pub(crate) fn subscription_message(message: SubscriptionMessage) -> Option<pb::SubscribeResponse> {
    let message = match message {
        SubscriptionMessage::Event(event) => {
            pb::subscribe_response::Message::Event(recorded(event))
        }
        SubscriptionMessage::CaughtUp => pb::subscribe_response::Message::CaughtUp(pb::Empty {}),
        SubscriptionMessage::Checkpoint(_) => return None,
    };
    Some(pb::SubscribeResponse {
        message: Some(message),
    })
}

pub(crate) fn merge_report(report: &MergeReport) -> pb::MergeResponse {
    pb::MergeResponse {
        input_files: report.input_files as u64,
        output_files: report.output_files as u64,
        bytes_read: report.bytes_read,
        bytes_written: report.bytes_written,
    }
}

pub(crate) fn backup_report(report: &BackupReport) -> pb::BackupResponse {
    pb::BackupResponse {
        data_files: report.data_files as u64,
        hint_files: report.hint_files as u64,
        bytes: report.bytes,
    }
}

pub(crate) fn stats(stats: &StoreStats) -> pb::StatsResponse {
    pb::StatsResponse {
        live_keys: stats.engine.live_keys as u64,
        keydir_bytes: stats.engine.keydir_bytes as u64,
        cache_bytes: stats.engine.cache_bytes,
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
    }
}
