//! Persistent subscription groups' definitions: what a group reads (one stream, or `$all`
//! through a filter), where it starts, and how it dispatches, kept durably under the `g`
//! keyspace (`FORMAT.md`).
//!
//! This module owns the definitions only. Invariants:
//! - A group is named by its target and its name: the same name may be a group of two
//!   streams, or of a stream and of `$all`.
//! - Settings are checked when a group is created or updated, never later: a stored
//!   definition is one that was valid.
//! - Creating refuses a group that exists; updating and deleting refuse one that does not.
//!   One lock orders these calls, so two creates of one group cannot both succeed.
//! - A definition is durable when the call returns, under the default sync policy.

use std::time::Duration;

use caskade_engine::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Position, StreamVersion};
use crate::filter::{EventFilter, StoredFilter};
use crate::format::{
    GROUP_PREFIX, checkpoint_key, encode_checkpoint, group_key, group_key_prefix, parked_key_prefix,
};
use crate::store::EventStore;

/// Parked records deleted per engine batch when a group is deleted.
const PARKED_DELETE_BATCH: usize = 10_000;

/// The longest message timeout or checkpoint interval: what KurrentDB's wire carries, 2^31 - 1
/// milliseconds (about 24.8 days).
const MAX_DURATION: Duration = Duration::from_millis(i32::MAX as u64);

/// What a group reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupTarget {
    /// One stream's events, in version order.
    Stream(String),
    /// `$all`, in position order.
    All,
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    /// From the first event.
    Start,
    /// From what is appended after the group is created (KurrentDB's default).
    #[default]
    End,
    /// A stream group: from this version, inclusive.
    Version(StreamVersion),
    /// An `$all` group: from this position, inclusive.
    Position(Position),
}

/// How a group hands events to its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumerStrategy {
    /// Each event to the next consumer in turn that has room.
    #[default]
    RoundRobin,
    /// Every event to the first consumer while it has room, then to the next.
    DispatchToSingle,
    /// The events of one source stream always to the same consumer.
    Pinned,
    /// The events of one correlation id always to the same consumer.
    PinnedByCorrelation,
}

/// A group's settings. The defaults are KurrentDB's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// Where the group starts when it is created.
    pub start: GroupStart,
    /// Resolve link events to the events they point to (Caskade writes no links; kept for
    /// KurrentDB's clients).
    pub resolve_links: bool,
    /// Keep the extra statistics KurrentDB's clients can ask for.
    pub extra_statistics: bool,
    /// How long an event may go unacknowledged before it is retried. Default 30 s.
    pub message_timeout: Duration,
    /// Retries before an event is parked. Default 10.
    pub max_retry_count: u32,
    /// Live events buffered for the consumers. Default 500.
    pub live_buffer_size: u32,
    /// Events read from the store at a time. Default 20.
    pub read_batch_size: u32,
    /// Events buffered while catching up. Default 500.
    pub history_buffer_size: u32,
    /// How often the group records how far its consumers have acknowledged. Default 2 s.
    pub checkpoint_after: Duration,
    /// Acknowledged events before a checkpoint may be written. Default 10.
    pub min_checkpoint_count: u32,
    /// Acknowledged events after which a checkpoint is written. Default 1,000.
    pub max_checkpoint_count: u32,
    /// Consumers connected at once; 0 for no limit (the default).
    pub max_subscriber_count: u32,
    /// How events are handed out. Default round robin.
    pub consumer_strategy: ConsumerStrategy,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            start: GroupStart::End,
            resolve_links: false,
            extra_statistics: false,
            message_timeout: Duration::from_secs(30),
            max_retry_count: 10,
            live_buffer_size: 500,
            read_batch_size: 20,
            history_buffer_size: 500,
            checkpoint_after: Duration::from_secs(2),
            min_checkpoint_count: 10,
            max_checkpoint_count: 1_000,
            max_subscriber_count: 0,
            consumer_strategy: ConsumerStrategy::RoundRobin,
        }
    }
}

impl GroupSettings {
    /// Checks what KurrentDB checks, naming the first setting that is wrong.
    fn validate(&self, target: &GroupTarget) -> Result<()> {
        let invalid = |setting: &'static str, reason: &'static str| {
            Err(Error::InvalidGroupSettings { setting, reason })
        };
        match (target, self.start) {
            (GroupTarget::All, GroupStart::Version(_)) => {
                return invalid("start", "an $all group starts at a position, not a version");
            }
            (GroupTarget::Stream(_), GroupStart::Position(_)) => {
                return invalid(
                    "start",
                    "a stream group starts at a version, not a position",
                );
            }
            _ => {}
        }
        if self.read_batch_size == 0 {
            return invalid("read_batch_size", "must be at least 1");
        }
        if self.live_buffer_size < self.read_batch_size {
            return invalid("live_buffer_size", "must be at least read_batch_size");
        }
        if self.history_buffer_size < self.read_batch_size {
            return invalid("history_buffer_size", "must be at least read_batch_size");
        }
        if self.max_checkpoint_count < self.min_checkpoint_count {
            return invalid(
                "max_checkpoint_count",
                "must be at least min_checkpoint_count",
            );
        }
        if self.message_timeout.is_zero() {
            return invalid("message_timeout", "must be above zero");
        }
        if self.message_timeout > MAX_DURATION {
            return invalid("message_timeout", "must be at most 2^31 - 1 milliseconds");
        }
        if self.checkpoint_after > MAX_DURATION {
            return invalid("checkpoint_after", "must be at most 2^31 - 1 milliseconds");
        }
        Ok(())
    }
}

/// A persistent subscription group as defined.
#[derive(Debug, Clone)]
pub struct GroupDefinition {
    /// What it reads.
    pub target: GroupTarget,
    /// Its name.
    pub name: String,
    /// Which events of `$all` it reads; every event for a stream group.
    pub filter: EventFilter,
    /// Its settings.
    pub settings: GroupSettings,
}

impl EventStore {
    /// Creates the group `name` on `target`: an `$all` group reads the events `filter`
    /// matches; a stream group reads its whole stream, and takes only [`EventFilter::all`].
    ///
    /// # Errors
    /// [`Error::GroupExists`]; [`Error::InvalidGroupName`],
    /// [`Error::InvalidGroupSettings`] and the stream-name errors for bad input (nothing is
    /// written); [`Error::Engine`].
    pub fn create_group(
        &self,
        target: GroupTarget,
        name: &str,
        filter: EventFilter,
        settings: GroupSettings,
    ) -> Result<GroupDefinition> {
        let definition = self.checked_definition(target, name, filter, settings)?;
        self.store_group(definition, false)
    }

    /// Replaces the settings (and, for `$all`, the filter) of the group `name` on `target`.
    /// Its consumers are disconnected (with [`Error::GroupDropped`]) and reconnect to the
    /// group as updated, which resumes from its checkpoint. Where a group starts is fixed
    /// when it is created (its first checkpoint is written then), so an update's `start` is
    /// recorded but moves nothing.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`]; otherwise as [`EventStore::create_group`].
    pub fn update_group(
        &self,
        target: GroupTarget,
        name: &str,
        filter: EventFilter,
        settings: GroupSettings,
    ) -> Result<GroupDefinition> {
        let definition = self.checked_definition(target, name, filter, settings)?;
        self.store_group(definition, true)
    }

    /// Deletes the group `name` on `target`, with its checkpoint and parked messages. Its
    /// consumers are disconnected (with [`Error::GroupDropped`]).
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], the stream-name errors, [`Error::Engine`].
    pub fn delete_group(&self, target: &GroupTarget, name: &str) -> Result<()> {
        self.validate_target(target)?;
        let _ordered = self.shared.groups.lock();
        self.existing_group(target, name)?;
        self.shared
            .runtimes
            .stop(target, name, "the group was deleted");
        let mut batch = WriteBatch::new();
        batch.delete(group_key(target, name));
        batch.delete(checkpoint_key(target, name));
        self.shared.engine.write(batch)?;
        self.delete_parked(target, name)
    }

    /// Deletes the parked records of the group `name` on `target`, a bounded batch at a
    /// time, so that no number of them makes a batch too large. A crash part way leaves the
    /// rest, which the next create of that group deletes before it writes anything.
    fn delete_parked(&self, target: &GroupTarget, name: &str) -> Result<()> {
        let keys: Vec<Vec<u8>> = self
            .shared
            .engine
            .keys_with_prefix(&parked_key_prefix(target, name))
            .collect();
        for chunk in keys.chunks(PARKED_DELETE_BATCH) {
            let mut batch = WriteBatch::new();
            for key in chunk {
                batch.delete(key);
            }
            self.shared.engine.write(batch)?;
        }
        Ok(())
    }

    /// The group `name` on `target`, if it exists.
    ///
    /// # Errors
    /// The stream-name errors, [`Error::Engine`], [`Error::Corrupt`].
    pub fn group(&self, target: &GroupTarget, name: &str) -> Result<Option<GroupDefinition>> {
        self.validate_target(target)?;
        let key = group_key(target, name);
        self.shared
            .engine
            .get(&key)?
            .map(|value| decode_group(&key, &value))
            .transpose()
    }

    /// The group `name` on `target`.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`]; otherwise as [`EventStore::group`].
    pub(crate) fn existing_group(
        &self,
        target: &GroupTarget,
        name: &str,
    ) -> Result<GroupDefinition> {
        self.group(target, name)?
            .ok_or_else(|| Error::GroupNotFound {
                target: target_name(target),
                group: name.to_owned(),
            })
    }

    /// Every group, or only those on `target`: those on `$all` first, then by stream name,
    /// and by name within a target.
    ///
    /// # Errors
    /// The stream-name errors, [`Error::Engine`], [`Error::Corrupt`].
    pub fn list_groups(&self, target: Option<&GroupTarget>) -> Result<Vec<GroupDefinition>> {
        let prefix = match target {
            Some(target) => {
                self.validate_target(target)?;
                group_key_prefix(target)
            }
            None => vec![GROUP_PREFIX],
        };
        let keys: Vec<Vec<u8>> = self.shared.engine.keys_with_prefix(&prefix).collect();
        let mut groups = Vec::with_capacity(keys.len());
        for key in keys {
            // A group deleted since the keys were listed is skipped.
            if let Some(value) = self.shared.engine.get(&key)? {
                groups.push(decode_group(&key, &value)?);
            }
        }
        // `$all`'s first, then by stream name; within a target, by name.
        groups.sort_unstable_by(|a, b| (order(a), &a.name).cmp(&(order(b), &b.name)));
        Ok(groups)
    }

    fn checked_definition(
        &self,
        target: GroupTarget,
        name: &str,
        filter: EventFilter,
        settings: GroupSettings,
    ) -> Result<GroupDefinition> {
        self.validate_target(&target)?;
        self.validate_group_name(name)?;
        settings.validate(&target)?;
        // A stream group reads its stream whole.
        if matches!(target, GroupTarget::Stream(_)) && !filter.matches_everything() {
            return Err(Error::InvalidGroupSettings {
                setting: "filter",
                reason: "applies to an $all group only: a stream group reads its whole stream",
            });
        }
        Ok(GroupDefinition {
            target,
            name: name.to_owned(),
            filter,
            settings,
        })
    }

    fn validate_target(&self, target: &GroupTarget) -> Result<()> {
        match target {
            GroupTarget::Stream(stream) => self.validate_stream(stream),
            GroupTarget::All => Ok(()),
        }
    }

    fn validate_group_name(&self, name: &str) -> Result<()> {
        let invalid = |reason| {
            Err(Error::InvalidGroupName {
                name: name.chars().take(100).collect(),
                reason,
            })
        };
        if name.is_empty() {
            return invalid("group names must not be empty");
        }
        if name.len() > self.shared.options.max_stream_name_len {
            return invalid("group names are at most as long as stream names may be");
        }
        if name.chars().any(char::is_control) {
            return invalid("group names must not contain control characters");
        }
        Ok(())
    }

    /// Writes `definition`, which must exist already when `replacing` and must not when
    /// not.
    fn store_group(&self, definition: GroupDefinition, replacing: bool) -> Result<GroupDefinition> {
        let _ordered = self.shared.groups.lock();
        let (target, group) = (&definition.target, &definition.name);
        match (self.group(target, group)?.is_some(), replacing) {
            (true, false) => {
                return Err(Error::GroupExists {
                    target: target_name(target),
                    group: group.clone(),
                });
            }
            (false, true) => {
                return Err(Error::GroupNotFound {
                    target: target_name(target),
                    group: group.clone(),
                });
            }
            _ => {}
        }
        let value = serde_json::to_vec(&StoredGroup::from(&definition))
            .expect("a group definition serializes");
        let mut batch = WriteBatch::new();
        batch.put(group_key(target, group), value);
        if replacing {
            self.shared
                .runtimes
                .stop(target, group, "the group was updated");
        } else {
            // Records a deleted group of this name left behind are not this group's.
            self.delete_parked(target, group)?;
            // Where it starts is fixed now: `End` is the end as of its creation.
            let start = self.start_key(&definition)?;
            batch.put(checkpoint_key(target, group), encode_checkpoint(start));
        }
        self.shared.engine.write(batch)?;
        Ok(definition)
    }
}

/// Where a group lists: `$all`'s first, then by stream name.
fn order(group: &GroupDefinition) -> (u8, &str) {
    match &group.target {
        GroupTarget::All => (0, ""),
        GroupTarget::Stream(stream) => (1, stream.as_str()),
    }
}

/// How a group's target is named in errors: the stream, or `$all`.
pub(crate) fn target_name(target: &GroupTarget) -> String {
    match target {
        GroupTarget::Stream(stream) => stream.clone(),
        GroupTarget::All => "$all".to_owned(),
    }
}

fn decode_group(key: &[u8], value: &[u8]) -> Result<GroupDefinition> {
    let corrupt = |reason| Error::Corrupt {
        key: key.escape_ascii().to_string(),
        reason,
    };
    let stored: StoredGroup = serde_json::from_slice(value)
        .map_err(|_| corrupt("a group definition that does not decode"))?;
    stored
        .into_definition()
        .map_err(|_| corrupt("a group definition whose settings or filter do not hold"))
}

/// A definition as stored (`FORMAT.md`, "Persistent subscription groups").
#[derive(Serialize, Deserialize)]
struct StoredGroup {
    format: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    name: String,
    #[serde(default)]
    filter: StoredFilter,
    start: StoredStart,
    resolve_links: bool,
    extra_statistics: bool,
    message_timeout_ms: u64,
    max_retry_count: u32,
    live_buffer_size: u32,
    read_batch_size: u32,
    history_buffer_size: u32,
    checkpoint_after_ms: u64,
    min_checkpoint_count: u32,
    max_checkpoint_count: u32,
    max_subscriber_count: u32,
    consumer_strategy: StoredStrategy,
}

const GROUP_FORMAT: u8 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredStart {
    Start,
    End,
    Version(u64),
    Position(u64),
}

#[derive(Serialize, Deserialize)]
enum StoredStrategy {
    RoundRobin,
    DispatchToSingle,
    Pinned,
    PinnedByCorrelation,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<&GroupDefinition> for StoredGroup {
    fn from(definition: &GroupDefinition) -> Self {
        let settings = &definition.settings;
        StoredGroup {
            format: GROUP_FORMAT,
            stream: match &definition.target {
                GroupTarget::Stream(stream) => Some(stream.clone()),
                GroupTarget::All => None,
            },
            name: definition.name.clone(),
            filter: definition.filter.to_stored(),
            start: match settings.start {
                GroupStart::Start => StoredStart::Start,
                GroupStart::End => StoredStart::End,
                GroupStart::Version(version) => StoredStart::Version(version.0),
                GroupStart::Position(position) => StoredStart::Position(position.0),
            },
            resolve_links: settings.resolve_links,
            extra_statistics: settings.extra_statistics,
            message_timeout_ms: millis(settings.message_timeout),
            max_retry_count: settings.max_retry_count,
            live_buffer_size: settings.live_buffer_size,
            read_batch_size: settings.read_batch_size,
            history_buffer_size: settings.history_buffer_size,
            checkpoint_after_ms: millis(settings.checkpoint_after),
            min_checkpoint_count: settings.min_checkpoint_count,
            max_checkpoint_count: settings.max_checkpoint_count,
            max_subscriber_count: settings.max_subscriber_count,
            consumer_strategy: match settings.consumer_strategy {
                ConsumerStrategy::RoundRobin => StoredStrategy::RoundRobin,
                ConsumerStrategy::DispatchToSingle => StoredStrategy::DispatchToSingle,
                ConsumerStrategy::Pinned => StoredStrategy::Pinned,
                ConsumerStrategy::PinnedByCorrelation => StoredStrategy::PinnedByCorrelation,
            },
        }
    }
}

impl StoredGroup {
    fn into_definition(self) -> Result<GroupDefinition> {
        if self.format != GROUP_FORMAT {
            return Err(Error::InvalidGroupSettings {
                setting: "format",
                reason: "is not a group definition format this version reads",
            });
        }
        let target = match self.stream {
            Some(stream) => GroupTarget::Stream(stream),
            None => GroupTarget::All,
        };
        let settings = GroupSettings {
            start: match self.start {
                StoredStart::Start => GroupStart::Start,
                StoredStart::End => GroupStart::End,
                StoredStart::Version(version) => GroupStart::Version(StreamVersion(version)),
                StoredStart::Position(position) => GroupStart::Position(Position(position)),
            },
            resolve_links: self.resolve_links,
            extra_statistics: self.extra_statistics,
            message_timeout: Duration::from_millis(self.message_timeout_ms),
            max_retry_count: self.max_retry_count,
            live_buffer_size: self.live_buffer_size,
            read_batch_size: self.read_batch_size,
            history_buffer_size: self.history_buffer_size,
            checkpoint_after: Duration::from_millis(self.checkpoint_after_ms),
            min_checkpoint_count: self.min_checkpoint_count,
            max_checkpoint_count: self.max_checkpoint_count,
            max_subscriber_count: self.max_subscriber_count,
            consumer_strategy: match self.consumer_strategy {
                StoredStrategy::RoundRobin => ConsumerStrategy::RoundRobin,
                StoredStrategy::DispatchToSingle => ConsumerStrategy::DispatchToSingle,
                StoredStrategy::Pinned => ConsumerStrategy::Pinned,
                StoredStrategy::PinnedByCorrelation => ConsumerStrategy::PinnedByCorrelation,
            },
        };
        settings.validate(&target)?;
        Ok(GroupDefinition {
            target,
            name: self.name,
            filter: EventFilter::from_stored(self.filter)?,
            settings,
        })
    }
}
