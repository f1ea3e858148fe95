//! Caskade's event store, on the `caskade-engine` Bitcask.
//!
//! Streams of events, each event stored once under its stream and version, each stream's
//! head under its own key, and the `$all` log mapping global positions to events; one append
//! is one atomic engine batch. Appends check an [`ExpectedVersion`]; reads go forwards or
//! backwards, lazily; subscriptions catch up from disk and then go live with no gap and no
//! duplicate. Streams can be soft-deleted, tombstoned, and given retention rules, whose dead
//! events [`EventStore::scavenge`] reclaims. Persistent subscription groups
//! ([`EventStore::create_group`], [`EventStore::connect_group`]) share a stream's events
//! among competing consumers, with acks, retries, parking and durable checkpoints. The key
//! layout is specified in `eventstore/FORMAT.md`.
//!
//! This crate knows nothing about the network: `caskade-server` exposes it over gRPC.
//!
//! ```
//! use caskade_eventstore::{EventData, EventStore, ExpectedVersion, Options, StreamVersion};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = EventStore::open(dir.path(), Options::default())?;
//! let opened = EventData::json("AccountOpened", &serde_json::json!({"owner": "ada"}))?;
//! let result = store.append("account-1", ExpectedVersion::NoStream, &[opened])?;
//! assert_eq!(result.next_expected_version, StreamVersion(0));
//!
//! let deposit = EventData::json("Deposited", &serde_json::json!({"amount": 10}))?;
//! store.append("account-1", ExpectedVersion::Exact(StreamVersion(0)), &[deposit])?;
//!
//! let events = store.read_stream_to_vec("account-1")?;
//! assert_eq!(events.len(), 2);
//! assert_eq!(events[1].event_type, "Deposited");
//! # Ok(())
//! # }
//! ```

mod admin;
mod error;
mod event;
mod filter;
mod format;
mod groups;
mod in_flight;
mod kv;
mod metadata;
mod options;
mod read;
mod scavenge;
mod store;
mod subscription;

pub use admin::StoreStats;
pub use caskade_engine::{BackupReport, FileStats, MergeProgress, MergeReport, Stats};
pub use error::{CurrentVersion, Error, Result};
pub use event::{ContentType, EventData, Position, RecordedEvent, StreamVersion};
pub use filter::EventFilter;
pub use groups::{
    ConsumerInfo, ConsumerStrategy, GroupAcks, GroupConsumer, GroupDefinition, GroupEvent,
    GroupInfo, GroupSettings, GroupStart, GroupStatus, GroupTarget, NackAction,
};
pub use kv::KeyValue;
pub use metadata::{MetadataRevision, StreamInfo, StreamMetadata, StreamState};
pub use options::Options;
pub use read::{AllEvents, Direction, ReadAll, ReadFrom, ReadStream, StreamEvents};
pub use scavenge::{ScavengeProgress, ScavengeReport};
pub use store::{
    AppendResult, EventStore, ExpectedVersion, MAX_EVENT_TYPE_LEN, PendingAppend, Streams,
};
pub use subscription::{SubscribeFrom, Subscription, SubscriptionMessage};
