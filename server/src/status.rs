//! The one place where library errors become gRPC statuses.
//!
//! | error | status |
//! |---|---|
//! | wrong expected version | `FAILED_PRECONDITION`, naming the expected and actual versions |
//! | persistent subscription group with its maximum of consumers | `FAILED_PRECONDITION` |
//! | a group dropped its consumer (deleted, updated, restarted) | `ABORTED` |
//! | a group stopped by a failure | the failure's status |
//! | tombstoned stream, missing persistent subscription group | `NOT_FOUND` |
//! | invalid input (names, types, JSON, filters, metadata, group names and settings, empty keys, bad ids) | `INVALID_ARGUMENT` |
//! | over a size limit (stream name, event type, event, append, key, value, batch) | `RESOURCE_EXHAUSTED` |
//! | backup destination not empty, group that exists | `ALREADY_EXISTS` |
//! | corrupt data | `DATA_LOSS` |
//! | store closed, poisoned or locked | `UNAVAILABLE` |
//! | I/O and anything else | `INTERNAL` |

use caskade_engine::Error as EngineError;
use caskade_eventstore::Error as StoreError;
use tonic::{Code, Status};

/// Maps an event-store error to the status a client sees.
#[must_use]
pub fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::Engine(engine) => engine_status(&engine),
        other => Status::new(store_status_code(&other), other.to_string()),
    }
}

/// The code of [`store_status`].
#[must_use]
pub fn store_status_code(error: &StoreError) -> Code {
    match error {
        StoreError::WrongExpectedVersion { .. } | StoreError::GroupFull { .. } => {
            Code::FailedPrecondition
        }
        StoreError::GroupDropped { .. } => Code::Aborted,
        StoreError::StreamDeleted { .. } | StoreError::GroupNotFound { .. } => Code::NotFound,
        StoreError::InvalidStreamName { .. }
        | StoreError::ReservedStreamName { .. }
        | StoreError::InvalidEventType { .. }
        | StoreError::EmptyAppend
        | StoreError::InvalidJson { .. }
        | StoreError::DuplicateEventId { .. }
        | StoreError::NilEventId { .. }
        | StoreError::InvalidFilter { .. }
        | StoreError::InvalidMetadata { .. }
        | StoreError::InvalidGroupName { .. }
        | StoreError::InvalidGroupSettings { .. }
        | StoreError::EmptyKey
        | StoreError::InvalidOptions { .. } => Code::InvalidArgument,
        StoreError::EventTooLarge { .. }
        | StoreError::AppendTooLarge { .. }
        | StoreError::StreamNameTooLong { .. }
        | StoreError::EventTypeTooLong { .. }
        | StoreError::MetadataTooLarge { .. }
        | StoreError::KeyTooLarge { .. }
        | StoreError::ValueTooLarge { .. } => Code::ResourceExhausted,
        StoreError::BackupDestinationNotEmpty { .. } | StoreError::GroupExists { .. } => {
            Code::AlreadyExists
        }
        StoreError::Corrupt { .. } => Code::DataLoss,
        StoreError::Engine(engine) => engine_status(engine).code(),
        StoreError::GroupFailed { cause, .. } => store_status_code(cause),
        _ => Code::Internal,
    }
}

/// Maps an engine error to the status a client sees.
#[must_use]
pub fn engine_status(error: &EngineError) -> Status {
    let message = error.to_string();
    match error {
        EngineError::EmptyKey | EngineError::InvalidOptions { .. } => {
            Status::invalid_argument(message)
        }
        EngineError::KeyTooLarge { .. }
        | EngineError::ValueTooLarge { .. }
        | EngineError::BatchTooLarge { .. } => Status::resource_exhausted(message),
        EngineError::BackupDestinationNotEmpty { .. } => Status::already_exists(message),
        EngineError::Corrupt { .. } | EngineError::UnsupportedVersion { .. } => {
            Status::data_loss(message)
        }
        EngineError::Closed | EngineError::Poisoned | EngineError::Locked { .. } => {
            Status::unavailable(message)
        }
        _ => Status::internal(message),
    }
}

/// A task that panicked or was cancelled inside the server.
pub(crate) fn join_status(error: &tokio::task::JoinError) -> Status {
    Status::internal(format!("the request's task failed: {error}"))
}
