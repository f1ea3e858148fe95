//! Events: what callers append ([`EventData`]) and what they read back ([`RecordedEvent`]).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event's version in its stream: 0 for the first event, then 1, 2, ... with no gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event's position in the global `$all` log: 0 for the first event ever appended, then
/// increasing in append order. Positions of deleted events are not reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an event's data and metadata are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// JSON: well-formed UTF-8 JSON text, checked when appended.
    #[default]
    Json,
    /// Opaque bytes.
    Binary,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// The event's id. Re-appending the same ids at the same place is a no-op, which makes
    /// retries after a lost reply safe.
    pub id: Uuid,
    /// The event's type, e.g. `AccountOpened`.
    pub event_type: String,
    /// What `data` and `metadata` hold.
    pub content_type: ContentType,
    /// The event's payload.
    pub data: Vec<u8>,
    /// Caller-defined metadata (correlation ids and the like); may be empty.
    pub metadata: Vec<u8>,
}

impl EventData {
    /// A JSON event with a new random id, serializing `data`.
    ///
    /// # Errors
    /// The error of `serde_json` if `data` cannot be serialized.
    pub fn json(event_type: impl Into<String>, data: &impl Serialize) -> serde_json::Result<Self> {
        Ok(EventData {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            content_type: ContentType::Json,
            data: serde_json::to_vec(data)?,
            metadata: Vec::new(),
        })
    }

    /// A binary event with a new random id.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        EventData {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            content_type: ContentType::Binary,
            data: data.into(),
            metadata: Vec::new(),
        }
    }

    /// Sets the id (for idempotent retries, the caller keeps ids stable).
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<Vec<u8>>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The event's id.
    pub id: Uuid,
    /// The stream it belongs to.
    pub stream: Arc<str>,
    /// Its version in that stream.
    pub version: StreamVersion,
    /// Its position in `$all`.
    pub position: Position,
    /// Its type.
    pub event_type: String,
    /// What `data` and `metadata` hold.
    pub content_type: ContentType,
    /// The payload.
    pub data: Vec<u8>,
    /// The metadata.
    pub metadata: Vec<u8>,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Deserializes the data of a JSON event.
    ///
    /// # Errors
    /// The error of `serde_json`.
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.data)
    }
}
