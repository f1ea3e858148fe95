//! The event store's error type.

use crate::ExpectedVersion;
use crate::event::StreamVersion;

/// Errors returned by the event store.
///
/// Expected outcomes a caller reacts to (`WrongExpectedVersion`, `StreamDeleted`, the
/// invalid-input variants, the key-value space's and the options' too) are distinct from
/// failures of the machine (`Engine`), so callers can retry or correct the first and alert on
/// the second. Every failed call changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's current version is not the one the append expected.
    #[error("wrong expected version for stream '{stream}': expected {expected}, actual {actual}")]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked.
        actual: CurrentVersion,
    },

    /// The stream was tombstoned (deleted permanently): it can be neither read nor written.
    #[error("stream '{stream}' has been deleted permanently")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },

    /// A stream name that is empty, too long, or not valid.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName {
        /// The name as given (cut to 100 characters).
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// A stream name longer than [`Options::max_stream_name_len`](crate::Options).
    #[error("stream name {name:?} is {len} bytes, over the maximum of {max} bytes")]
    StreamNameTooLong {
        /// The start of the name (its first 100 characters).
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// An event type longer than [`MAX_EVENT_TYPE_LEN`](crate::MAX_EVENT_TYPE_LEN).
    #[error("event {index}'s type {event_type:?} is {len} bytes, over the maximum of {max} bytes")]
    EventTypeTooLong {
        /// The event's index in the append.
        index: usize,
        /// The start of the type (its first 100 characters).
        event_type: String,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },

    /// An event whose id is the nil UUID, which names no event.
    #[error("event {index} has the nil UUID as its id; ids must be unique")]
    NilEventId {
        /// The event's index in the append.
        index: usize,
    },

    /// A name reserved by the store, such as `$all`.
    #[error("stream name '{name}' is reserved")]
    ReservedStreamName {
        /// The name.
        name: String,
    },

    /// An event type that is empty.
    #[error("invalid event type {event_type:?}: {reason}")]
    InvalidEventType {
        /// The type as given (cut to 100 characters).
        event_type: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyAppend,

    /// An event bigger than the configured maximum.
    #[error("event {index} of the append is {size} bytes, over the maximum of {max} bytes")]
    EventTooLarge {
        /// The event's index in the append.
        index: usize,
        /// Its encoded size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// An append bigger than the configured maximum.
    #[error("the append is {size} bytes, over the maximum of {max} bytes")]
    AppendTooLarge {
        /// The append's encoded size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// Data or metadata declared JSON that does not parse.
    #[error("event {index}'s {field} is declared JSON but is not: {reason}")]
    InvalidJson {
        /// The event's index in the append.
        index: usize,
        /// `data` or `metadata`.
        field: &'static str,
        /// The parser's message.
        reason: String,
    },

    /// The same event id twice in one append.
    #[error("event id {id} appears twice in the append")]
    DuplicateEventId {
        /// The id.
        id: uuid::Uuid,
    },

    /// A filter's regular expression that does not compile.
    #[error("invalid filter regular expression {pattern:?}: {reason}")]
    InvalidFilter {
        /// The pattern as given.
        pattern: String,
        /// Why it does not compile.
        reason: String,
    },

    /// A persistent subscription group that exists already.
    #[error("the group {group:?} on {target} exists already")]
    GroupExists {
        /// The group's stream, or `$all`.
        target: String,
        /// The group's name.
        group: String,
    },

    /// A persistent subscription group that does not exist.
    #[error("there is no group {group:?} on {target}")]
    GroupNotFound {
        /// The group's stream, or `$all`.
        target: String,
        /// The group's name.
        group: String,
    },

    /// A persistent subscription group that has as many consumers as it allows.
    #[error("the group {group:?} on {target} has its maximum of {max} consumers")]
    GroupFull {
        /// The group's stream, or `$all`.
        target: String,
        /// The group's name.
        group: String,
        /// Its `max_subscriber_count`.
        max: u32,
    },

    /// A persistent subscription group that stopped serving its consumers: they may connect
    /// again (to the group as it is now, if it still exists).
    #[error("the group {group:?} on {target} dropped its consumers: {reason}")]
    GroupDropped {
        /// The group's stream, or `$all`.
        target: String,
        /// The group's name.
        group: String,
        /// Why.
        reason: &'static str,
    },

    /// A persistent subscription group that stopped because reading its events or writing its
    /// checkpoint or parked records failed; `cause` says how. Connecting again starts it
    /// again.
    #[error("the group {group:?} on {target} stopped: {cause}")]
    GroupFailed {
        /// The group's stream, or `$all`.
        target: String,
        /// The group's name.
        group: String,
        /// What failed, shared by every consumer told.
        #[source]
        cause: std::sync::Arc<Error>,
    },

    /// A group name that cannot be one.
    #[error("invalid group name {name:?}: {reason}")]
    InvalidGroupName {
        /// The name (its first 100 characters).
        name: String,
        /// Why.
        reason: &'static str,
    },

    /// A group's settings that cannot apply.
    #[error("invalid group settings: {setting} {reason}")]
    InvalidGroupSettings {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Custom stream metadata bigger than [`Options::max_event_size`](crate::Options).
    #[error("the stream's custom metadata is {size} bytes, over the maximum of {max} bytes")]
    MetadataTooLarge {
        /// The custom metadata's size, serialized as JSON.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// Stream metadata that cannot apply (for instance a zero `max_count`).
    #[error("invalid stream metadata: {reason}")]
    InvalidMetadata {
        /// Why.
        reason: &'static str,
    },

    /// A record in the store that the event store cannot decode.
    #[error("corrupt event store record under key {key:?}: {reason}")]
    Corrupt {
        /// The engine key, escaped.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A key-value key that is empty.
    #[error("keys must not be empty")]
    EmptyKey,

    /// A key-value key longer than the engine's maximum (less the key-value prefix).
    #[error("key of {len} bytes exceeds the maximum of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The maximum.
        max: usize,
    },

    /// A key-value value longer than the engine's maximum.
    #[error("value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The maximum.
        max: usize,
    },

    /// Options that cannot work together; nothing was opened.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// Which option, and why.
        reason: &'static str,
    },

    /// A backup destination that exists and is not an empty directory; nothing was copied.
    #[error("backup destination {} exists and is not an empty directory", path.display())]
    BackupDestinationNotEmpty {
        /// The destination.
        path: std::path::PathBuf,
    },

    /// The storage engine failed: I/O, corruption, a closed, poisoned or locked store. Bad
    /// input never ends up here (it has the variants above).
    #[error(transparent)]
    Engine(caskade_engine::Error),
}

impl From<caskade_engine::Error> for Error {
    /// Sorts the engine's errors: the caller's bad input gets the event store's own
    /// variants, everything else is [`Error::Engine`].
    fn from(error: caskade_engine::Error) -> Self {
        use caskade_engine::Error as Engine;
        match error {
            Engine::EmptyKey => Error::EmptyKey,
            Engine::KeyTooLarge { len, max } => Error::KeyTooLarge { len, max },
            Engine::ValueTooLarge { len, max } => Error::ValueTooLarge { len, max },
            Engine::InvalidOptions { reason } => Error::InvalidOptions { reason },
            Engine::BackupDestinationNotEmpty { path } => Error::BackupDestinationNotEmpty { path },
            other => Error::Engine(other),
        }
    }
}

/// A stream's version as reported in [`Error::WrongExpectedVersion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentVersion {
    /// The stream has never had an event.
    NoStream,
    /// The version of the stream's last event (also for a soft-deleted stream, whose
    /// versions continue).
    Current(StreamVersion),
}

impl std::fmt::Display for CurrentVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CurrentVersion::NoStream => f.write_str("no stream"),
            CurrentVersion::Current(version) => write!(f, "{version}"),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
