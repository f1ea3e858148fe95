//! Conversions between the wire messages of `caskade.v1` and the event store's types.
//! Decoding checks what the wire types cannot (UUID syntax, oneofs left empty) and reports it
//! as `INVALID_ARGUMENT`.

use caskade_eventstore::{
    ContentType, EventData, EventFilter, ExpectedVersion, RecordedEvent, StreamInfo,
    StreamMetadata, StreamState, StreamVersion,
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

pub(crate) fn event_data(index: usize, event: pb::EventData) -> Result<EventData, Status> {
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
    let mut out = EventFilter::all();
    if !filter.stream_prefix.is_empty() {
        out = out.stream_prefix(filter.stream_prefix);
    }
    if !filter.event_type_prefix.is_empty() {
        out = out.event_type_prefix(filter.event_type_prefix);
    }
    if !filter.event_type_regex.is_empty() {
        out = out
            .event_type_regex(&filter.event_type_regex)
            .map_err(store_status)?;
    }
    Ok(out)
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
