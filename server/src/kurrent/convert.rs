//! Conversions between KurrentDB's v1 wire messages and the event store's types.
//!
//! The conventions, which every KurrentDB service here shares:
//! - A `$all` position on the wire is Caskade's position plus one, as both the commit and the
//!   prepare position: unique, increasing, above 0 (KurrentDB clients read position 0 as the
//!   start of `$all`) and below 2^63.
//! - An event's `type` and `content-type` travel in the proposed message's metadata map; its
//!   custom metadata is Caskade's event metadata. `application/json` is a JSON event, anything
//!   else binary; reads answer `application/json` or `application/octet-stream`.
//! - `created` is the recording time in ticks (100 ns) since the Unix epoch, as decimal text.
//! - Ids come as two big-endian 64-bit halves (structured) or as text; answers use the form
//!   the read asked for.

use caskade_eventstore::{
    ContentType, EventData, EventFilter, ExpectedVersion, Position, RecordedEvent, StreamVersion,
};
use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::event_store::client::streams as pb;
use tonic::Status;

/// The metadata-map key of an event's type.
pub(crate) const TYPE_KEY: &str = "type";
/// The metadata-map key of an event's content type.
pub(crate) const CONTENT_TYPE_KEY: &str = "content-type";
/// The metadata-map key of an event's recording time.
pub(crate) const CREATED_KEY: &str = "created";
/// The content type of JSON events.
pub(crate) const JSON: &str = "application/json";
/// The content type of every other event.
pub(crate) const BINARY: &str = "application/octet-stream";

/// Ticks (100 ns) per second.
const TICKS_PER_SECOND: i64 = 10_000_000;

/// The wire position of Caskade's `position`.
pub(crate) fn wire_position(position: Position) -> u64 {
    position.0 + 1
}

/// Caskade's position of wire position `commit`; `None` for 0, which is before every event.
pub(crate) fn store_position(commit: u64) -> Option<Position> {
    commit.checked_sub(1).map(Position)
}

/// What a KurrentDB filter expression is matched against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FilterOn {
    /// The event's stream name.
    StreamName,
    /// The event's type.
    EventType,
}

/// The event store's filter for one of KurrentDB's expressions: its regular expression if it
/// has one, otherwise its prefixes (any one matching).
pub(crate) fn event_filter(
    on: FilterOn,
    regex: &str,
    prefixes: Vec<String>,
) -> Result<EventFilter, Status> {
    let invalid = |error| match error {
        caskade_eventstore::Error::InvalidFilter { pattern, reason } => Status::invalid_argument(
            format!("the filter's regular expression {pattern:?} does not compile: {reason}"),
        ),
        other => crate::status::store_status(other),
    };
    let filter = EventFilter::all();
    match (on, regex.is_empty()) {
        (FilterOn::StreamName, false) => filter.stream_regex(regex).map_err(invalid),
        (FilterOn::StreamName, true) => Ok(filter.stream_prefixes(prefixes)),
        (FilterOn::EventType, false) => filter.event_type_regex(regex).map_err(invalid),
        (FilterOn::EventType, true) => Ok(filter.event_type_prefixes(prefixes)),
    }
}

/// How an answer encodes ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdForm {
    /// Two 64-bit halves.
    Structured,
    /// Hyphenated text.
    Text,
}

/// The id form a read asked for (structured unless it asked for text).
pub(crate) fn id_form(option: Option<&pb::read_req::options::UuidOption>) -> IdForm {
    use pb::read_req::options::uuid_option::Content;
    match option.and_then(|o| o.content.as_ref()) {
        Some(Content::String(_)) => IdForm::Text,
        Some(Content::Structured(_)) | None => IdForm::Structured,
    }
}

/// `id` on the wire, in `form`.
pub(crate) fn wire_id(id: uuid::Uuid, form: IdForm) -> shared::Uuid {
    let value = match form {
        IdForm::Text => shared::uuid::Value::String(id.hyphenated().to_string()),
        IdForm::Structured => {
            let bits = id.as_u128();
            shared::uuid::Value::Structured(shared::uuid::Structured {
                most_significant_bits: ((bits >> 64) as u64).cast_signed(),
                least_significant_bits: (bits as u64).cast_signed(),
            })
        }
    };
    shared::Uuid { value: Some(value) }
}

/// Decodes an id in either form; `what` names it in the error.
pub(crate) fn store_id(id: Option<shared::Uuid>, what: &str) -> Result<uuid::Uuid, Status> {
    match id.and_then(|id| id.value) {
        Some(shared::uuid::Value::Structured(halves)) => {
            let high = u128::from(halves.most_significant_bits.cast_unsigned()) << 64;
            Ok(uuid::Uuid::from_u128(
                high | u128::from(halves.least_significant_bits.cast_unsigned()),
            ))
        }
        Some(shared::uuid::Value::String(text)) => uuid::Uuid::parse_str(&text)
            .map_err(|e| Status::invalid_argument(format!("{what} {text:?} is not a UUID: {e}"))),
        None => Err(Status::invalid_argument(format!("{what} is missing"))),
    }
}

/// The stream a request names, as UTF-8.
pub(crate) fn stream_name(identifier: Option<shared::StreamIdentifier>) -> Result<String, Status> {
    let identifier =
        identifier.ok_or_else(|| Status::invalid_argument("the stream identifier is missing"))?;
    String::from_utf8(identifier.stream_name)
        .map_err(|_| Status::invalid_argument("the stream name is not UTF-8"))
}

/// `stream` as an identifier.
pub(crate) fn stream_identifier(stream: &str) -> shared::StreamIdentifier {
    shared::StreamIdentifier {
        stream_name: stream.as_bytes().to_vec(),
    }
}

/// The four ways every request states its expected revision, as one type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WireExpected {
    /// An exact revision.
    Revision(u64),
    /// The stream must not exist.
    NoStream,
    /// Any state.
    Any,
    /// The stream must exist.
    StreamExists,
}

impl WireExpected {
    /// Whether a stream whose last revision is `current` (`None`: no stream) matches.
    pub(crate) fn matches(self, current: Option<StreamVersion>) -> bool {
        match self {
            WireExpected::Any => true,
            WireExpected::NoStream => current.is_none(),
            WireExpected::StreamExists => current.is_some(),
            WireExpected::Revision(revision) => current == Some(StreamVersion(revision)),
        }
    }

    /// As the event store takes it.
    pub(crate) fn to_store(self) -> ExpectedVersion {
        match self {
            WireExpected::Revision(revision) => ExpectedVersion::Exact(StreamVersion(revision)),
            WireExpected::NoStream => ExpectedVersion::NoStream,
            WireExpected::Any => ExpectedVersion::Any,
            WireExpected::StreamExists => ExpectedVersion::StreamExists,
        }
    }
}

/// The expected revision of a request's options (absent means any): `Append`, `Delete` and
/// `Tombstone` each have a generated enum of their own with the same four cases.
macro_rules! expected_revision {
    ($request:ident, $option:expr) => {{
        use pb::$request::options::ExpectedStreamRevision as E;
        match $option {
            Some(E::Revision(revision)) => WireExpected::Revision(revision),
            Some(E::NoStream(_)) => WireExpected::NoStream,
            Some(E::StreamExists(_)) => WireExpected::StreamExists,
            Some(E::Any(_)) | None => WireExpected::Any,
        }
    }};
}

/// The expected revision of an `Append`.
pub(crate) fn append_expected(
    option: Option<pb::append_req::options::ExpectedStreamRevision>,
) -> WireExpected {
    expected_revision!(append_req, option)
}

/// The expected revision of a `Delete`.
pub(crate) fn delete_expected(
    option: Option<pb::delete_req::options::ExpectedStreamRevision>,
) -> WireExpected {
    expected_revision!(delete_req, option)
}

/// The expected revision of a `Tombstone`.
pub(crate) fn tombstone_expected(
    option: Option<pb::tombstone_req::options::ExpectedStreamRevision>,
) -> WireExpected {
    expected_revision!(tombstone_req, option)
}

/// One proposed event of an append: its id, the `type` and `content-type` of its metadata
/// map, its custom metadata and data. `index` numbers it in errors.
pub(crate) fn proposed_event(
    index: usize,
    id: Option<shared::Uuid>,
    mut metadata: std::collections::BTreeMap<String, String>,
    custom_metadata: Vec<u8>,
    data: Vec<u8>,
) -> Result<EventData, Status> {
    let id = store_id(id, &format!("the id of event {index}"))?;
    let event_type = metadata.remove(TYPE_KEY).ok_or_else(|| {
        Status::invalid_argument(format!(
            "event {index} has no \"{TYPE_KEY}\" in its metadata"
        ))
    })?;
    let content_type = match metadata.get(CONTENT_TYPE_KEY).map(String::as_str) {
        Some(JSON) => ContentType::Json,
        _ => ContentType::Binary,
    };
    Ok(EventData {
        id,
        event_type,
        content_type,
        data,
        metadata: custom_metadata,
    })
}

/// `created` for an event recorded at `at`.
pub(crate) fn created_ticks(at: chrono::DateTime<chrono::Utc>) -> String {
    let ticks = at.timestamp() * TICKS_PER_SECOND + i64::from(at.timestamp_subsec_nanos() / 100);
    ticks.to_string()
}

/// A recorded event on the wire, its id in `form`.
pub(crate) fn recorded_event(
    event: RecordedEvent,
    form: IdForm,
) -> pb::read_resp::read_event::RecordedEvent {
    let position = wire_position(event.position);
    let content_type = match event.content_type {
        ContentType::Json => JSON,
        ContentType::Binary => BINARY,
    };
    let metadata = [
        (TYPE_KEY.to_owned(), event.event_type),
        (CONTENT_TYPE_KEY.to_owned(), content_type.to_owned()),
        (CREATED_KEY.to_owned(), created_ticks(event.recorded_at)),
    ]
    .into_iter()
    .collect();
    pb::read_resp::read_event::RecordedEvent {
        id: Some(wire_id(event.id, form)),
        stream_identifier: Some(stream_identifier(&event.stream)),
        stream_revision: event.version.0,
        prepare_position: position,
        commit_position: position,
        metadata,
        custom_metadata: event.metadata,
        data: event.data,
    }
}

/// A read answer carrying `event`.
pub(crate) fn read_event(event: RecordedEvent, form: IdForm) -> pb::ReadResp {
    let position = wire_position(event.position);
    pb::ReadResp {
        content: Some(pb::read_resp::Content::Event(pb::read_resp::ReadEvent {
            event: Some(recorded_event(event, form)),
            link: None,
            position: Some(pb::read_resp::read_event::Position::CommitPosition(
                position,
            )),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_in_both_forms_with_the_clients_bit_order() {
        let id = uuid::Uuid::parse_str("01234567-89ab-cdef-fedc-ba9876543210").unwrap();
        let structured = wire_id(id, IdForm::Structured);
        let Some(shared::uuid::Value::Structured(halves)) = &structured.value else {
            panic!("structured");
        };
        // The high half is the first eight bytes, big-endian, as a signed number.
        assert_eq!(halves.most_significant_bits, 0x0123_4567_89ab_cdef);
        assert_eq!(
            halves.least_significant_bits,
            0xfedc_ba98_7654_3210_u64.cast_signed()
        );
        assert_eq!(store_id(Some(structured), "id").unwrap(), id);
        let text = wire_id(id, IdForm::Text);
        assert_eq!(
            text.value,
            Some(shared::uuid::Value::String(
                "01234567-89ab-cdef-fedc-ba9876543210".to_owned()
            ))
        );
        assert_eq!(store_id(Some(text), "id").unwrap(), id);
        let error = store_id(
            Some(shared::Uuid {
                value: Some(shared::uuid::Value::String("nope".to_owned())),
            }),
            "the id of event 3",
        )
        .unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error.message().contains("the id of event 3"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn positions_on_the_wire_are_above_zero() {
        assert_eq!(wire_position(Position(0)), 1);
        assert_eq!(store_position(1), Some(Position(0)));
        assert_eq!(store_position(0), None);
    }

    #[test]
    fn created_is_ticks_since_the_unix_epoch() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(created_ticks(at), "17000000001234567");
    }
}
