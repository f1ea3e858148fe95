//! Stream metadata and state, as callers see them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::StreamVersion;

/// Retention rules (and free-form metadata) of a stream, honoured on every read. Events that
/// fall outside them are hidden at once and their space is reclaimed by
/// [`EventStore::scavenge`](crate::EventStore::scavenge).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamMetadata {
    /// Keep only the newest `max_count` events.
    pub max_count: Option<u64>,
    /// Keep only events recorded less than `max_age` ago (whole seconds).
    pub max_age: Option<Duration>,
    /// Hide every event before this version.
    pub truncate_before: Option<StreamVersion>,
    /// Caller-defined JSON, stored and returned as is.
    pub custom: Option<serde_json::Value>,
}

/// Whether a stream can be read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Readable and writable.
    Live,
    /// Soft-deleted: its events are hidden; the next append revives it at the next version.
    Deleted,
    /// Deleted for good: reads and appends fail with `StreamDeleted`.
    Tombstoned,
}

/// A stream as listed by [`EventStore::list_streams`](crate::EventStore::list_streams).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// The version of its last event, if it has had any.
    pub last_version: Option<StreamVersion>,
    /// Live, deleted or tombstoned.
    pub state: StreamState,
    /// Its metadata.
    pub metadata: StreamMetadata,
    /// Which version of the metadata this is and when it was set; `None` if it never was.
    pub metadata_revision: Option<MetadataRevision>,
}

/// The version of a stream's metadata: 0 for the first set, one more for each set after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRevision {
    /// The version.
    pub version: StreamVersion,
    /// When that version was set (the Unix epoch for metadata set before versions were kept).
    pub recorded_at: DateTime<Utc>,
}
