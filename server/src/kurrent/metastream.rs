//! KurrentDB's metadata streams: a stream's metadata as the `$metadata` events of the stream
//! `$$<stream>`, mapped onto the event store's stream metadata, so both APIs set and enforce
//! the same retention.
//!
//! The mapping:
//! - The metadata JSON's `$maxCount`, `$maxAge` (whole seconds, as KurrentDB's server reads
//!   it) and `$tb` are the store's `max_count`, `max_age` and `truncate_before`; as in
//!   KurrentDB, a value of 0 or below is no value. Every other key (`$acl`, `$cacheControl`,
//!   `$tmp`, custom keys) is kept in the custom metadata and answered back unchanged.
//! - A metadata stream holds one event, the current metadata (KurrentDB keeps only the last
//!   one too), at the metadata's version: 0 for the first set, one more for each set after,
//!   through either API. Appends to it check their expected revision against that version.
//! - The event is not in `$all`: it has no position (0 on the wire). Its id is derived from
//!   the stream and version, so every read of one version answers the same id.
//! - Custom metadata set through `caskade.v1` that is not a JSON object reads back under the
//!   key `custom`.

use caskade_eventstore::{
    ContentType, MetadataRevision, Position, RecordedEvent, StreamMetadata, StreamVersion,
};
use serde_json::{Map, Value};
use tonic::Status;

/// What a metadata stream's name starts with.
const PREFIX: &str = "$$";
/// The type of a metadata event.
pub(crate) const METADATA_EVENT_TYPE: &str = "$metadata";
/// The key under which custom metadata that is not an object is answered.
const NON_OBJECT_KEY: &str = "custom";
/// The namespace of metadata event ids (a fixed random UUID).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c1f_4a9e_2b7d_4e08_9a35_d0c2_71e4_b5a3);

const MAX_COUNT: &str = "$maxCount";
const MAX_AGE: &str = "$maxAge";
const TRUNCATE_BEFORE: &str = "$tb";

/// The stream whose metadata `name` holds, if `name` is a metadata stream.
pub(crate) fn metadata_stream_of(name: &str) -> Option<&str> {
    name.strip_prefix(PREFIX)
        .filter(|stream| !stream.is_empty())
}

/// The metadata a `$metadata` event's JSON sets.
///
/// # Errors
/// `INVALID_ARGUMENT` if `data` is not a JSON object or a retention key is not a number.
pub(crate) fn decode(data: &[u8]) -> Result<StreamMetadata, Status> {
    let invalid =
        |reason: String| Status::invalid_argument(format!("invalid stream metadata: {reason}"));
    let value: Value =
        serde_json::from_slice(data).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(invalid("not a JSON object".to_owned()));
    };
    let mut positive = |key: &str| -> Result<Option<u64>, Status> {
        match object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => match (number.as_u64(), number.as_i64()) {
                (Some(value), _) => Ok((value > 0).then_some(value)),
                (None, Some(_)) => Ok(None),
                (None, None) => Err(invalid(format!("{key} must be an integer, not {number}"))),
            },
            Some(other) => Err(invalid(format!("{key} must be an integer, not {other}"))),
        }
    };
    let max_count = positive(MAX_COUNT)?;
    let max_age = positive(MAX_AGE)?.map(std::time::Duration::from_secs);
    let truncate_before = positive(TRUNCATE_BEFORE)?.map(StreamVersion);
    Ok(StreamMetadata {
        max_count,
        max_age,
        truncate_before,
        custom: (!object.is_empty()).then_some(Value::Object(object)),
    })
}

/// The JSON of `metadata`, as a `$metadata` event carries it.
pub(crate) fn encode(metadata: &StreamMetadata) -> Vec<u8> {
    let mut object = match &metadata.custom {
        Some(Value::Object(custom)) => custom.clone(),
        Some(other) => Map::from_iter([(NON_OBJECT_KEY.to_owned(), other.clone())]),
        None => Map::new(),
    };
    if let Some(count) = metadata.max_count {
        object.insert(MAX_COUNT.to_owned(), count.into());
    }
    if let Some(age) = metadata.max_age {
        object.insert(MAX_AGE.to_owned(), age.as_secs().into());
    }
    if let Some(StreamVersion(before)) = metadata.truncate_before {
        object.insert(TRUNCATE_BEFORE.to_owned(), before.into());
    }
    serde_json::to_vec(&Value::Object(object)).expect("a JSON object serializes")
}

/// The event of `stream`'s metadata stream for `metadata` at `revision`.
pub(crate) fn event(
    stream: &str,
    metadata: &StreamMetadata,
    revision: MetadataRevision,
) -> RecordedEvent {
    let name = format!("{PREFIX}{stream}");
    let id = uuid::Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{name}\n{}", revision.version.0).as_bytes(),
    );
    RecordedEvent {
        id,
        stream: name.into(),
        version: revision.version,
        // Not in `$all`; the answer replaces it with "no position".
        position: Position(0),
        event_type: METADATA_EVENT_TYPE.to_owned(),
        content_type: ContentType::Json,
        data: encode(metadata),
        metadata: Vec::new(),
        recorded_at: revision.recorded_at,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    #[test]
    fn metadata_stream_names_are_the_stream_after_two_dollars() {
        assert_eq!(metadata_stream_of("$$orders"), Some("orders"));
        assert_eq!(metadata_stream_of("$$$internal"), Some("$internal"));
        assert_eq!(metadata_stream_of("$$"), None);
        assert_eq!(metadata_stream_of("$orders"), None);
        assert_eq!(metadata_stream_of("orders"), None);
    }

    #[test]
    fn retention_keys_map_onto_the_store_and_the_rest_is_kept() {
        let json = json!({
            "$maxCount": 5, "$maxAge": 60, "$tb": 2,
            "$acl": {"$r": ["ops"], "$w": "admin"}, "$cacheControl": 10, "owner": "ops",
        });
        let metadata = decode(json.to_string().as_bytes()).unwrap();
        assert_eq!(metadata.max_count, Some(5));
        assert_eq!(metadata.max_age, Some(Duration::from_secs(60)));
        assert_eq!(metadata.truncate_before, Some(StreamVersion(2)));
        assert_eq!(
            metadata.custom,
            Some(
                json!({"$acl": {"$r": ["ops"], "$w": "admin"}, "$cacheControl": 10, "owner": "ops"})
            )
        );
        let back: Value = serde_json::from_slice(&encode(&metadata)).unwrap();
        assert_eq!(back, json);
    }

    #[test]
    fn zero_negative_and_null_values_are_no_value() {
        let metadata = decode(br#"{"$maxCount": 0, "$maxAge": -1, "$tb": null}"#).unwrap();
        assert_eq!(metadata, StreamMetadata::default());
        assert_eq!(encode(&metadata), b"{}");
    }

    #[test]
    fn what_is_not_metadata_is_refused_naming_the_problem() {
        for (data, expected) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"$maxCount": "five"}"#, "$maxCount must be an integer"),
            (br#"{"$maxAge": 1.5}"#, "$maxAge must be an integer"),
        ] {
            let status = decode(data).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(expected), "{}", status.message());
        }
    }

    #[test]
    fn custom_metadata_that_is_not_an_object_reads_back_under_custom() {
        let metadata = StreamMetadata {
            custom: Some(json!([1, 2])),
            ..StreamMetadata::default()
        };
        let back: Value = serde_json::from_slice(&encode(&metadata)).unwrap();
        assert_eq!(back, json!({"custom": [1, 2]}));
    }

    #[test]
    fn every_read_of_one_version_answers_the_same_id() {
        let revision = MetadataRevision {
            version: StreamVersion(3),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
        };
        let metadata = StreamMetadata::default();
        let first = event("orders", &metadata, revision);
        assert_eq!(first.id, event("orders", &metadata, revision).id);
        assert_ne!(first.id, event("order", &metadata, revision).id);
        let next = MetadataRevision {
            version: StreamVersion(4),
            ..revision
        };
        assert_ne!(first.id, event("orders", &metadata, next).id);
        assert_eq!(&*first.stream, "$$orders");
        assert_eq!(first.event_type, "$metadata");
    }
}
