//! Event-store errors as KurrentDB's clients parse them: the gRPC status code KurrentDB uses,
//! its wording where clients read the text, and the `exception` trailer with the trailers
//! that go with each kind (clients match on those, not on the code).
//!
//! | error | code | `exception` | other trailers |
//! |---|---|---|---|
//! | wrong expected version (outside `Append`, which answers it in-band) | `FAILED_PRECONDITION` | `wrong-expected-version` | `stream-name`, `expected-version`, `actual-version` |
//! | tombstoned stream | `FAILED_PRECONDITION` | `stream-deleted` | `stream-name` |
//! | append over the size limit | `INVALID_ARGUMENT` | `maximum-append-size-exceeded` | `maximum-append-size` |
//! | event over the size limit | `INVALID_ARGUMENT` | `maximum-append-event-size-exceeded` | `maximum-append-event-size`, `event-id`, `proposed-append-event-size` |
//! | persistent subscription group missing | `NOT_FOUND` | `persistent-subscription-does-not-exist` | `stream-name` (not for `$all`), `group-name` |
//! | persistent subscription group exists | `ALREADY_EXISTS` | `persistent-subscription-exists` | `stream-name` (not for `$all`), `group-name` |
//! | group has its maximum of consumers | `FAILED_PRECONDITION` | `maximum-subscribers-reached` | `stream-name` (not for `$all`), `group-name` |
//! | group dropped its consumers | `ABORTED` | `persistent-subscription-dropped` | `stream-name` (not for `$all`), `group-name` |
//!
//! Everything else keeps the status `caskade.v1` gives it ([`crate::status::store_status`]).
//!
//! `BatchAppend` answers each append's error inside its response, as a `google.rpc.Status`
//! whose one detail is packed under the type URL of an `event_store.client` message (clients
//! match on the type name): [`batch_status`] derives it from the status above.

use caskade_eventstore::{CurrentVersion, Error as StoreError, ExpectedVersion, StreamVersion};
use caskade_proto::kurrentdb::event_store::client as shared;
use caskade_proto::kurrentdb::google::rpc;
use prost::Message;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::convert::{WireExpected, stream_identifier};

/// The trailer naming the kind of error.
pub(crate) const EXCEPTION: &str = "exception";

/// KurrentDB's number for an expected version: the revision, or a negative code.
fn expected_number(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Exact(version) => i64::try_from(version.0).unwrap_or(i64::MAX),
        ExpectedVersion::NoStream => -1,
        ExpectedVersion::Any => -2,
        ExpectedVersion::StreamExists => -4,
    }
}

/// KurrentDB's number for a current version: the revision, or -1 for no stream.
fn actual_number(actual: CurrentVersion) -> i64 {
    match actual {
        CurrentVersion::Current(version) => i64::try_from(version.0).unwrap_or(i64::MAX),
        CurrentVersion::NoStream => -1,
    }
}

/// `status` with these trailers. Values are ASCII (names are checked UTF-8 and sent as
/// percent-free text only when they are visible ASCII; others are left out).
fn with_trailers(mut status: Status, trailers: &[(&'static str, String)]) -> Status {
    for (key, value) in trailers {
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            status.metadata_mut().insert(*key, value);
        }
    }
    status
}

/// A tombstoned stream, as KurrentDB reports it.
pub(crate) fn stream_deleted(stream: &str) -> Status {
    with_trailers(
        Status::failed_precondition(format!("Event stream '{stream}' is deleted.")),
        &[
            (EXCEPTION, "stream-deleted".to_owned()),
            ("stream-name", stream.to_owned()),
        ],
    )
}

/// Maps an event-store error raised by `operation` (`"Append"`, `"Delete"`, `"Tombstone"`,
/// named in KurrentDB's wrong-expected-version text) to the status a KurrentDB client sees.
pub(crate) fn kurrent_status(operation: &str, error: StoreError) -> Status {
    match error {
        StoreError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            let (expected, actual) = (expected_number(expected), actual_number(actual));
            with_trailers(
                Status::failed_precondition(format!(
                    "{operation} failed due to WrongExpectedVersion. Stream: {stream}, \
                     Expected version: {expected}, Actual version: {actual}"
                )),
                &[
                    (EXCEPTION, "wrong-expected-version".to_owned()),
                    ("stream-name", stream),
                    ("expected-version", expected.to_string()),
                    ("actual-version", actual.to_string()),
                ],
            )
        }
        StoreError::StreamDeleted { stream } => stream_deleted(&stream),
        StoreError::AppendTooLarge { max, .. } => with_trailers(
            Status::invalid_argument(format!("Maximum Append Size of {max} Exceeded.")),
            &[
                (EXCEPTION, "maximum-append-size-exceeded".to_owned()),
                ("maximum-append-size", max.to_string()),
            ],
        ),
        StoreError::GroupNotFound {
            ref target,
            ref group,
        } => group_status(
            &error,
            "persistent-subscription-does-not-exist",
            target,
            group,
        ),
        StoreError::GroupExists {
            ref target,
            ref group,
        } => group_status(&error, "persistent-subscription-exists", target, group),
        StoreError::GroupFull {
            ref target,
            ref group,
            ..
        } => group_status(&error, "maximum-subscribers-reached", target, group),
        StoreError::GroupDropped {
            ref target,
            ref group,
            ..
        } => group_status(&error, "persistent-subscription-dropped", target, group),
        other => crate::status::store_status(other),
    }
}

/// A persistent subscription group's error: `caskade.v1`'s code, KurrentDB's trailers.
fn group_status(error: &StoreError, exception: &str, target: &str, group: &str) -> Status {
    let code = crate::status::store_status_code(error);
    let mut trailers = vec![
        (EXCEPTION, exception.to_owned()),
        ("group-name", group.to_owned()),
    ];
    if target != "$all" {
        trailers.push(("stream-name", target.to_owned()));
    }
    with_trailers(Status::new(code, error.to_string()), &trailers)
}

/// An event of an append over the event size limit; its id is known here, not in the store's
/// error.
pub(crate) fn event_too_large(id: uuid::Uuid, size: usize, max: usize) -> Status {
    with_trailers(
        Status::invalid_argument(format!(
            "Event with Id: {id}, Size: {size}, exceeds Maximum Append Event Size of {max}."
        )),
        &[
            (EXCEPTION, "maximum-append-event-size-exceeded".to_owned()),
            ("maximum-append-event-size", max.to_string()),
            ("event-id", id.to_string()),
            ("proposed-append-event-size", size.to_string()),
        ],
    )
}

/// An error answered inside a `BatchAppend` response: `code`, `message`, and `detail` packed
/// under its `event_store.client` type name.
fn packed(code: rpc::Code, message: &str, name: &str, detail: &impl Message) -> rpc::Status {
    rpc::Status {
        code: code.into(),
        message: message.to_owned(),
        details: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/event_store.client.{name}"),
            value: detail.encode_to_vec(),
        }),
    }
}

/// A wrong expected revision in a `BatchAppend` response.
pub(crate) fn batch_wrong_expected_version(
    expected: WireExpected,
    actual: Option<StreamVersion>,
) -> rpc::Status {
    use shared::wrong_expected_version::{
        CurrentStreamRevisionOption as Current, ExpectedStreamPositionOption as Expected,
    };
    let detail = shared::WrongExpectedVersion {
        current_stream_revision_option: Some(match actual {
            Some(version) => Current::CurrentStreamRevision(version.0),
            None => Current::CurrentNoStream(()),
        }),
        expected_stream_position_option: Some(match expected {
            WireExpected::Revision(revision) => Expected::ExpectedStreamPosition(revision),
            WireExpected::NoStream => Expected::ExpectedNoStream(()),
            WireExpected::Any => Expected::ExpectedAny(()),
            WireExpected::StreamExists => Expected::ExpectedStreamExists(()),
        }),
    };
    packed(
        rpc::Code::AlreadyExists,
        "WrongExpectedVersion",
        "WrongExpectedVersion",
        &detail,
    )
}

/// A `BatchAppend` deadline that passed before the append was durable. The append may still
/// become durable: a client retries it with the same ids, which the store writes once.
pub(crate) fn batch_timeout() -> rpc::Status {
    packed(
        rpc::Code::DeadlineExceeded,
        "Timeout",
        "Timeout",
        &shared::Timeout {},
    )
}

/// `status`, as produced by the functions above, as a `BatchAppend` response carries it:
/// the kind from its `exception` trailer, the numbers from the trailers that go with it.
pub(crate) fn batch_status(status: &Status) -> rpc::Status {
    let trailer = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let number = |key: &str| trailer(key).parse::<u32>().unwrap_or(u32::MAX);
    match trailer(EXCEPTION).as_str() {
        "stream-deleted" => packed(
            rpc::Code::NotFound,
            "StreamDeleted",
            "StreamDeleted",
            &shared::StreamDeleted {
                stream_identifier: Some(stream_identifier(&trailer("stream-name"))),
            },
        ),
        "maximum-append-size-exceeded" => packed(
            rpc::Code::InvalidArgument,
            "MaximumAppendSizeExceeded",
            "MaximumAppendSizeExceeded",
            &shared::MaximumAppendSizeExceeded {
                max_append_size: number("maximum-append-size"),
            },
        ),
        "maximum-append-event-size-exceeded" => packed(
            rpc::Code::InvalidArgument,
            "MaximumAppendEventSizeExceeded",
            "MaximumAppendEventSizeExceeded",
            &shared::MaximumAppendEventSizeExceeded {
                event_id: trailer("event-id"),
                proposed_event_size: number("proposed-append-event-size"),
                max_append_event_size: number("maximum-append-event-size"),
            },
        ),
        _ if status.code() == tonic::Code::InvalidArgument => packed(
            rpc::Code::InvalidArgument,
            "BadRequest",
            "BadRequest",
            &shared::BadRequest {
                message: status.message().to_owned(),
            },
        ),
        // Kept with its own code (`UNAVAILABLE` when the store is closing, say), which
        // clients retry on; the detail says only that KurrentDB has no message for it.
        _ => rpc::Status {
            code: i32::from(status.code()),
            ..packed(
                rpc::Code::Unknown,
                status.message(),
                "Unknown",
                &shared::Unknown {},
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use caskade_eventstore::StreamVersion;

    use super::*;

    fn trailer<'s>(status: &'s Status, key: &str) -> &'s str {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {key} trailer on {status:?}"))
    }

    #[test]
    fn wrong_expected_version_carries_the_numbers_clients_read() {
        let status = kurrent_status(
            "Delete",
            StoreError::WrongExpectedVersion {
                stream: "orders-1".to_owned(),
                expected: ExpectedVersion::Exact(StreamVersion(3)),
                actual: CurrentVersion::NoStream,
            },
        );
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(trailer(&status, EXCEPTION), "wrong-expected-version");
        assert_eq!(trailer(&status, "stream-name"), "orders-1");
        assert_eq!(trailer(&status, "expected-version"), "3");
        assert_eq!(trailer(&status, "actual-version"), "-1");
        assert!(
            status
                .message()
                .starts_with("Delete failed due to WrongExpectedVersion")
        );
    }

    #[test]
    fn a_tombstoned_stream_is_stream_deleted_with_its_name() {
        let status = kurrent_status(
            "Append",
            StoreError::StreamDeleted {
                stream: "gone".to_owned(),
            },
        );
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(trailer(&status, EXCEPTION), "stream-deleted");
        assert_eq!(trailer(&status, "stream-name"), "gone");
    }

    #[test]
    fn an_append_over_the_limit_names_the_limit() {
        let status = kurrent_status("Append", StoreError::AppendTooLarge { size: 10, max: 8 });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(trailer(&status, EXCEPTION), "maximum-append-size-exceeded");
        assert_eq!(trailer(&status, "maximum-append-size"), "8");
    }
}
