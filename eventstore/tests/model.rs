//! Model test: random sequences of appends (with every kind of expected version, right and
//! wrong), idempotent retries, soft deletes, tombstones, metadata changes, scavenges and
//! reopens, run against the event store and an in-memory model. After every step every read
//! (streams forwards and backwards, `$all` forwards and backwards with and without a
//! stream-prefix filter, stream infos, the stream list, the committed position, the number
//! of engine keys) must match the model, and every failed call must have returned the
//! model's typed error and changed nothing.
//!
//! The model follows the documented contract: a soft delete hides the stream's events
//! ("hidden from reads at once"), and no later metadata change shows them again; a scavenge
//! removes exactly the hidden events, so what readers see never depends on whether one ran.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    AppendResult, CurrentVersion, Error, EventData, EventFilter, EventStore, ExpectedVersion,
    MetadataRevision, Options, Position, ReadAll, ReadStream, RecordedEvent, StreamInfo,
    StreamMetadata, StreamState, StreamVersion,
};
use chrono::DateTime;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Returns an error (rather than panicking, which would print a backtrace for every case
/// proptest tries while shrinking) unless the two sides are equal.
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $($what:tt)+) => {{
        let (actual, expected) = (&$actual, &$expected);
        if actual != expected {
            return Err(format!(
                "{}\n  actual: {actual:?}\nexpected: {expected:?}",
                format!($($what)+)
            )
            .into());
        }
    }};
}

/// Stream names; `acct-1` is a prefix of `acct-10`, which the prefix filters exercise.
const STREAMS: [&str; 4] = ["acct-1", "acct-10", "acct-2", "order-1"];
const TYPES: [&str; 3] = ["Opened", "Deposited", "Closed"];
/// Stream-prefix filters checked on `$all` after every step (`None`: no filter).
const PREFIXES: [Option<&str>; 4] = [None, Some("acct-1"), Some("acct-"), Some("order")];

fn options(sync: SyncPolicy) -> Options {
    let engine = caskade_engine::Options {
        sync,
        ..caskade_engine::Options::default()
    };
    Options {
        engine,
        ..Options::default()
    }
}

/// An expected version as generated; resolved against the model when the op runs.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    /// The stream's current version (`NoStream` if it has had no event).
    Current,
    /// A fixed version, usually wrong.
    Exact(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        expect: Expect,
        types: Vec<usize>,
    },
    /// Re-append the stream's last successful append (same ids, same expected version).
    Retry {
        stream: usize,
    },
    Delete {
        stream: usize,
        expect: Expect,
    },
    Tombstone {
        stream: usize,
        expect: Expect,
    },
    SetMetadata {
        stream: usize,
        expect: Expect,
        max_count: Option<u64>,
        truncate_before: Option<u64>,
        custom: bool,
        long_max_age: bool,
    },
    Reopen,
    Scavenge,
    ReadStreamPage {
        stream: usize,
        backwards: bool,
        from: Option<u64>,
        count: u64,
    },
    ReadAllPage {
        backwards: bool,
        from: Option<u64>,
        count: u64,
        prefix: usize,
    },
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::Any),
        2 => Just(Expect::NoStream),
        1 => Just(Expect::StreamExists),
        4 => Just(Expect::Current),
        2 => (0u64..6).prop_map(Expect::Exact),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // Most operations go to two streams, so they meet each other often.
    let stream = prop_oneof![3 => Just(0), 3 => Just(2), 1 => Just(1), 1 => Just(3)];
    prop_oneof![
        10 => (stream.clone(), expect_strategy(), vec(0..TYPES.len(), 1..=3))
            .prop_map(|(stream, expect, types)| Op::Append { stream, expect, types }),
        2 => stream.clone().prop_map(|stream| Op::Retry { stream }),
        2 => (stream.clone(), expect_strategy())
            .prop_map(|(stream, expect)| Op::Delete { stream, expect }),
        1 => (stream.clone(), expect_strategy())
            .prop_map(|(stream, expect)| Op::Tombstone { stream, expect }),
        3 => (
            stream.clone(),
            expect_strategy(),
            option::of(0u64..4),
            option::of(0u64..8),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(stream, expect, max_count, truncate_before, custom, long_max_age)| {
                Op::SetMetadata { stream, expect, max_count, truncate_before, custom, long_max_age }
            }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Scavenge),
        2 => (stream, any::<bool>(), option::of(0u64..8), 1u64..4).prop_map(
            |(stream, backwards, from, count)| Op::ReadStreamPage { stream, backwards, from, count }
        ),
        2 => (any::<bool>(), option::of(0u64..30), 1u64..6, 0..PREFIXES.len()).prop_map(
            |(backwards, from, count, prefix)| Op::ReadAllPage { backwards, from, count, prefix }
        ),
    ]
}

/// An event as the model holds it.
#[derive(Debug, Clone)]
struct ModelEvent {
    stream: &'static str,
    version: u64,
    position: u64,
    data: EventData,
}

/// A stream as the model holds it: every event it ever had stays (nothing is scavenged),
/// visibility decides what reads show.
#[derive(Debug, Clone)]
struct ModelStream {
    state: StreamState,
    /// Positions of the stream's events, indexed by version.
    positions: Vec<u64>,
    metadata: StreamMetadata,
    /// Versions below this were soft-deleted; later metadata changes do not bring them back.
    deleted_before: u64,
    /// How many times the metadata was set.
    metadata_changes: u64,
    /// Versions below this were removed by a scavenge.
    scavenged_before: u64,
    /// The last successful append, for retries: expected version, events, result.
    last_append: Option<(ExpectedVersion, Vec<EventData>, AppendResult)>,
}

impl Default for ModelStream {
    fn default() -> Self {
        ModelStream {
            state: StreamState::Live,
            positions: Vec::new(),
            metadata: StreamMetadata::default(),
            deleted_before: 0,
            metadata_changes: 0,
            scavenged_before: 0,
            last_append: None,
        }
    }
}

impl ModelStream {
    fn next_version(&self) -> u64 {
        self.positions.len() as u64
    }

    fn current_version(&self) -> CurrentVersion {
        match self.next_version() {
            0 => CurrentVersion::NoStream,
            next => CurrentVersion::Current(StreamVersion(next - 1)),
        }
    }

    fn expected_matches(&self, expected: ExpectedVersion) -> bool {
        match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => {
                self.next_version() == 0 || self.state == StreamState::Deleted
            }
            ExpectedVersion::StreamExists => {
                self.next_version() > 0 && self.state == StreamState::Live
            }
            ExpectedVersion::Exact(StreamVersion(v)) => v + 1 == self.next_version(),
        }
    }

    /// The first version reads show; tombstoned streams show nothing (and fail to read).
    fn first_visible(&self) -> u64 {
        let next = self.next_version();
        let truncated = self.metadata.truncate_before.map_or(0, |v| v.0);
        let counted = self
            .metadata
            .max_count
            .map_or(0, |count| next.saturating_sub(count));
        truncated
            .max(counted)
            .max(self.deleted_before)
            .max(self.scavenged_before)
            .min(next)
    }

    fn shows(&self, version: u64) -> bool {
        self.state != StreamState::Tombstoned && version >= self.first_visible()
    }

    /// What a scavenge deletes: every hidden event, which is a prefix of the stream (the
    /// model never sets `max_age` short enough to hide anything).
    fn scavenge(&mut self) {
        self.scavenged_before = if self.state == StreamState::Tombstoned {
            self.next_version()
        } else {
            self.first_visible()
        };
    }
}

/// A typed error as the model predicts it.
#[derive(Debug, Clone, PartialEq)]
enum ModelError {
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        actual: CurrentVersion,
    },
    StreamDeleted {
        stream: String,
    },
    InvalidMetadata,
    /// Any other error: the model never predicts one.
    Other(String),
}

impl From<Error> for ModelError {
    fn from(error: Error) -> Self {
        match error {
            Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => ModelError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            },
            Error::StreamDeleted { stream } => ModelError::StreamDeleted { stream },
            Error::InvalidMetadata { .. } => ModelError::InvalidMetadata,
            other => ModelError::Other(format!("{other:?}")),
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    streams: BTreeMap<&'static str, ModelStream>,
    /// Every event ever appended, indexed by position.
    all: Vec<ModelEvent>,
    /// Positions with a `$all` entry (`eventstore/FORMAT.md`): each append's first, every
    /// multiple of [`ALL_ENTRY_SPACING`], and the first event a scavenge keeps.
    all_entries: BTreeSet<u64>,
}

/// `$all` entry spacing, as `eventstore/FORMAT.md` specifies it.
const ALL_ENTRY_SPACING: u64 = 64;

impl Model {
    fn stream(&self, name: &str) -> ModelStream {
        self.streams.get(name).cloned().unwrap_or_default()
    }

    fn resolve(&self, stream: &str, expect: Expect) -> ExpectedVersion {
        match expect {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::StreamExists => ExpectedVersion::StreamExists,
            Expect::Current => match self.stream(stream).current_version() {
                CurrentVersion::NoStream => ExpectedVersion::NoStream,
                CurrentVersion::Current(version) => ExpectedVersion::Exact(version),
            },
            Expect::Exact(v) => ExpectedVersion::Exact(StreamVersion(v)),
        }
    }

    fn wrong_version(name: &str, expected: ExpectedVersion, stream: &ModelStream) -> ModelError {
        ModelError::WrongExpectedVersion {
            stream: name.to_owned(),
            expected,
            actual: stream.current_version(),
        }
    }

    /// The result of an earlier append of `events` where `expected` puts them, if there
    /// was one (the documented idempotent retry).
    fn already_appended(
        stream: &ModelStream,
        expected: ExpectedVersion,
        events: &[EventData],
        all: &[ModelEvent],
    ) -> Option<AppendResult> {
        let count = events.len() as u64;
        let first = match expected {
            ExpectedVersion::Exact(StreamVersion(v)) => v + 1,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Any => stream.next_version().checked_sub(count)?,
            ExpectedVersion::StreamExists => return None,
        };
        if first + count > stream.next_version() || first < stream.scavenged_before {
            return None;
        }
        let positions = &stream.positions[first as usize..(first + count) as usize];
        let same = positions
            .iter()
            .zip(events)
            .all(|(&position, event)| all[position as usize].data.id == event.id);
        same.then(|| AppendResult {
            next_expected_version: StreamVersion(first + count - 1),
            first_position: Position(positions[0]),
            last_position: Position(positions[positions.len() - 1]),
        })
    }

    fn append(
        &mut self,
        name: &'static str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult, ModelError> {
        let mut stream = self.stream(name);
        if stream.state == StreamState::Tombstoned {
            return Err(ModelError::StreamDeleted {
                stream: name.to_owned(),
            });
        }
        let matches = stream.expected_matches(expected);
        if !matches || expected == ExpectedVersion::Any {
            if let Some(done) = Self::already_appended(&stream, expected, events, &self.all) {
                return Ok(done);
            }
            if !matches {
                return Err(Self::wrong_version(name, expected, &stream));
            }
        }
        let first_version = stream.next_version();
        let first_position = self.all.len() as u64;
        for (i, event) in events.iter().enumerate() {
            let position = self.all.len() as u64;
            if i == 0 || position.is_multiple_of(ALL_ENTRY_SPACING) {
                self.all_entries.insert(position);
            }
            stream.positions.push(position);
            self.all.push(ModelEvent {
                stream: name,
                version: first_version + i as u64,
                position: first_position + i as u64,
                data: event.clone(),
            });
        }
        stream.state = StreamState::Live;
        let count = events.len() as u64;
        let result = AppendResult {
            next_expected_version: StreamVersion(first_version + count - 1),
            first_position: Position(first_position),
            last_position: Position(first_position + count - 1),
        };
        if expected != ExpectedVersion::StreamExists {
            stream.last_append = Some((expected, events.to_vec(), result));
        }
        self.streams.insert(name, stream);
        Ok(result)
    }

    fn change_head(
        &mut self,
        name: &'static str,
        expected: ExpectedVersion,
        change: impl FnOnce(&mut ModelStream),
    ) -> Result<(), ModelError> {
        let mut stream = self.stream(name);
        if stream.state == StreamState::Tombstoned {
            return Err(ModelError::StreamDeleted {
                stream: name.to_owned(),
            });
        }
        if !stream.expected_matches(expected) {
            return Err(Self::wrong_version(name, expected, &stream));
        }
        change(&mut stream);
        self.streams.insert(name, stream);
        Ok(())
    }

    fn delete(&mut self, name: &'static str, expected: ExpectedVersion) -> Result<(), ModelError> {
        self.change_head(name, expected, |stream| {
            let next = stream.next_version();
            stream.state = StreamState::Deleted;
            stream.deleted_before = next;
        })
    }

    fn tombstone(
        &mut self,
        name: &'static str,
        expected: ExpectedVersion,
    ) -> Result<(), ModelError> {
        self.change_head(name, expected, |stream| {
            stream.state = StreamState::Tombstoned;
        })
    }

    fn set_metadata(
        &mut self,
        name: &'static str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<(), ModelError> {
        if metadata.max_count == Some(0) || metadata.truncate_before == Some(StreamVersion(0)) {
            return Err(ModelError::InvalidMetadata);
        }
        self.change_head(name, expected, |stream| {
            stream.metadata = metadata;
            stream.metadata_changes += 1;
        })
    }

    fn info(&self, name: &str) -> Option<StreamInfo> {
        let stream = self.streams.get(name)?;
        Some(StreamInfo {
            name: name.to_owned(),
            last_version: stream.next_version().checked_sub(1).map(StreamVersion),
            state: stream.state,
            metadata: stream.metadata.clone(),
            metadata_revision: stream.metadata_changes.checked_sub(1).map(|version| {
                MetadataRevision {
                    version: StreamVersion(version),
                    recorded_at: DateTime::UNIX_EPOCH,
                }
            }),
        })
    }

    /// The visible events of `name` in version order; `Err` if it is tombstoned.
    fn visible_stream(&self, name: &str) -> Result<Vec<&ModelEvent>, ModelError> {
        let stream = self.stream(name);
        if stream.state == StreamState::Tombstoned {
            return Err(ModelError::StreamDeleted {
                stream: name.to_owned(),
            });
        }
        Ok(stream
            .positions
            .iter()
            .map(|&position| &self.all[position as usize])
            .filter(|event| stream.shows(event.version))
            .collect())
    }

    /// The visible events of `$all` in position order, with an optional stream prefix.
    fn visible_all(&self, prefix: Option<&str>) -> Vec<&ModelEvent> {
        self.all
            .iter()
            .filter(|event| prefix.is_none_or(|p| event.stream.starts_with(p)))
            .filter(|event| self.streams[event.stream].shows(event.version))
            .collect()
    }
}

/// What the tests compare of a recorded event (everything but the time it was recorded).
type Seen = (Uuid, String, u64, u64, String, Vec<u8>, Vec<u8>);

fn seen(event: &RecordedEvent) -> Seen {
    (
        event.id,
        event.stream.to_string(),
        event.version.0,
        event.position.0,
        event.event_type.clone(),
        event.data.clone(),
        event.metadata.clone(),
    )
}

/// `info` with the metadata's time set to the epoch: the model cannot know the clock.
fn untimed(mut info: StreamInfo) -> StreamInfo {
    if let Some(revision) = &mut info.metadata_revision {
        revision.recorded_at = DateTime::UNIX_EPOCH;
    }
    info
}

fn model_seen(event: &ModelEvent) -> Seen {
    (
        event.data.id,
        event.stream.to_owned(),
        event.version,
        event.position,
        event.data.event_type.clone(),
        event.data.data.clone(),
        event.data.metadata.clone(),
    )
}

fn read_stream(store: &EventStore, name: &str, read: ReadStream) -> Result<Vec<Seen>, ModelError> {
    let events = store.read_stream(name, read)?;
    Ok(events
        .map(|event| event.map(|event| seen(&event)))
        .collect::<Result<_, _>>()?)
}

fn read_all(store: &EventStore, read: ReadAll) -> Result<Vec<Seen>, Error> {
    store
        .read_all(read)
        .map(|event| event.map(|event| seen(&event)))
        .collect()
}

fn filter(prefix: Option<&str>) -> EventFilter {
    prefix.map_or_else(EventFilter::all, |p| EventFilter::all().stream_prefix(p))
}

/// Compares every read with the model.
fn check(store: &EventStore, model: &Model, step: usize) -> TestResult {
    for name in STREAMS {
        let expected: Result<Vec<Seen>, ModelError> = model
            .visible_stream(name)
            .map(|events| events.iter().map(|e| model_seen(e)).collect());
        let forwards = read_stream(store, name, ReadStream::forwards());
        ensure_eq!(forwards, expected, "step {step}: {name} forwards");
        let backwards = read_stream(store, name, ReadStream::backwards());
        let reversed = expected.map(|mut events| {
            events.reverse();
            events
        });
        ensure_eq!(backwards, reversed, "step {step}: {name} backwards");
        ensure_eq!(
            store.stream_info(name)?.map(untimed),
            model.info(name),
            "step {step}: {name} info"
        );
    }
    for prefix in PREFIXES {
        let expected: Vec<Seen> = model
            .visible_all(prefix)
            .iter()
            .map(|e| model_seen(e))
            .collect();
        let forwards = read_all(store, ReadAll::forwards().filter(filter(prefix)))?;
        ensure_eq!(
            forwards,
            expected,
            "step {step}: $all forwards, prefix {prefix:?}"
        );
        let backwards = read_all(store, ReadAll::backwards().filter(filter(prefix)))?;
        let reversed: Vec<Seen> = expected.into_iter().rev().collect();
        ensure_eq!(
            backwards,
            reversed,
            "step {step}: $all backwards, prefix {prefix:?}"
        );
    }
    let listed: Vec<StreamInfo> = store.list_streams()?.into_iter().map(untimed).collect();
    let modelled: Vec<StreamInfo> = model
        .streams
        .keys()
        .filter_map(|name| model.info(name))
        .collect();
    ensure_eq!(listed, modelled, "step {step}: list_streams");
    ensure_eq!(
        store.committed_position(),
        Position(model.all.len() as u64),
        "step {step}: committed position"
    );
    // Each event not scavenged has an event key, some an `$all` entry; each stream a head.
    let unscavenged: u64 = model
        .streams
        .values()
        .map(|s| s.next_version() - s.scavenged_before)
        .sum();
    ensure_eq!(
        store.stats()?.engine.live_keys as u64,
        unscavenged + model.all_entries.len() as u64 + model.streams.len() as u64,
        "step {step}: engine keys"
    );
    Ok(())
}

/// The events of an append: deterministic ids and bodies, so failures reproduce.
fn events_for(types: &[usize], counter: &mut u64) -> Vec<EventData> {
    types
        .iter()
        .map(|&t| {
            *counter += 1;
            let mut event = EventData::json(TYPES[t], &json!({ "n": *counter }))
                .expect("a json! value serializes")
                .with_id(Uuid::from_u128(u128::from(*counter)));
            if counter.is_multiple_of(2) {
                event = event.with_metadata(format!("{{\"m\":{counter}}}").into_bytes());
            }
            event
        })
        .collect()
}

/// Compares a call's outcome with the model's, and checks that a failed call wrote nothing.
fn compare<T: PartialEq + std::fmt::Debug>(
    step: usize,
    op: &Op,
    actual: Result<T, Error>,
    expected: &Result<T, ModelError>,
    keys_before: usize,
    store: &EventStore,
) -> TestResult {
    let failed = actual.is_err();
    let actual = actual.map_err(ModelError::from);
    ensure_eq!(actual, *expected, "step {step}: {op:?}");
    if failed {
        ensure_eq!(
            store.stats()?.engine.live_keys,
            keys_before,
            "step {step}: failed {op:?} wrote keys"
        );
    }
    Ok(())
}

fn page_expected<'a>(
    events: impl DoubleEndedIterator<Item = &'a ModelEvent>,
    backwards: bool,
    keep: impl Fn(&ModelEvent) -> bool,
    count: u64,
) -> Vec<&'a ModelEvent> {
    let events: Vec<&ModelEvent> = if backwards {
        events.rev().filter(|e| keep(e)).collect()
    } else {
        events.filter(|e| keep(e)).collect()
    };
    events.into_iter().take(count as usize).collect()
}

#[expect(clippy::too_many_lines, reason = "one arm per operation, each short")]
fn run(dir: &Path, ops: &[Op], sync: SyncPolicy) -> TestResult {
    let mut store = EventStore::open(dir, options(sync))?;
    let mut model = Model::default();
    let mut counter = 0u64;
    for (step, op) in ops.iter().enumerate() {
        let keys_before = store.stats()?.engine.live_keys;
        match op {
            Op::Append {
                stream,
                expect,
                types,
            } => {
                let name = STREAMS[*stream];
                let expected = model.resolve(name, *expect);
                let events = events_for(types, &mut counter);
                let actual = store.append(name, expected, &events);
                let predicted = model.append(name, expected, &events);
                compare(step, op, actual, &predicted, keys_before, &store)?;
            }
            Op::Retry { stream } => {
                let name = STREAMS[*stream];
                let Some((expected, events, _)) = model.stream(name).last_append else {
                    continue;
                };
                let actual = store.append(name, expected, &events);
                let predicted = model.append(name, expected, &events);
                compare(step, op, actual, &predicted, keys_before, &store)?;
            }
            Op::Delete { stream, expect } => {
                let name = STREAMS[*stream];
                let expected = model.resolve(name, *expect);
                let actual = store.delete_stream(name, expected);
                let predicted = model.delete(name, expected);
                compare(step, op, actual, &predicted, keys_before, &store)?;
            }
            Op::Tombstone { stream, expect } => {
                let name = STREAMS[*stream];
                let expected = model.resolve(name, *expect);
                let actual = store.tombstone_stream(name, expected);
                let predicted = model.tombstone(name, expected);
                compare(step, op, actual, &predicted, keys_before, &store)?;
            }
            Op::SetMetadata {
                stream,
                expect,
                max_count,
                truncate_before,
                custom,
                long_max_age,
            } => {
                let name = STREAMS[*stream];
                let expected = model.resolve(name, *expect);
                let metadata = StreamMetadata {
                    max_count: *max_count,
                    truncate_before: truncate_before.map(StreamVersion),
                    custom: custom.then(|| json!({ "step": step })),
                    // Long enough never to hide anything during the test.
                    max_age: long_max_age.then_some(Duration::from_secs(86_400)),
                };
                let actual = store.set_metadata(name, expected, metadata.clone());
                let predicted = model.set_metadata(name, expected, metadata);
                compare(step, op, actual, &predicted, keys_before, &store)?;
            }
            Op::Reopen => {
                store.close()?;
                store = EventStore::open(dir, options(sync))?;
            }
            Op::Scavenge => {
                let report = store.scavenge()?;
                let mut removed = 0;
                for stream in model.streams.values_mut() {
                    let before = stream.scavenged_before;
                    stream.scavenge();
                    let after = stream.scavenged_before;
                    removed += after - before;
                    if after > before {
                        for version in before..after {
                            model
                                .all_entries
                                .remove(&stream.positions[version as usize]);
                        }
                        if let Some(&kept) = stream.positions.get(after as usize) {
                            model.all_entries.insert(kept);
                        }
                    }
                }
                ensure_eq!(
                    report.events_removed,
                    removed,
                    "step {step}: events scavenged"
                );
            }
            Op::ReadStreamPage {
                stream,
                backwards,
                from,
                count,
            } => {
                let name = STREAMS[*stream];
                let mut read = if *backwards {
                    ReadStream::backwards()
                } else {
                    ReadStream::forwards()
                }
                .max_count(*count);
                if let Some(from) = from {
                    read = read.from(StreamVersion(*from));
                }
                let actual = read_stream(&store, name, read);
                let predicted = model.visible_stream(name).map(|events| {
                    let keep = |e: &ModelEvent| {
                        from.is_none_or(|f| {
                            if *backwards {
                                e.version <= f
                            } else {
                                e.version >= f
                            }
                        })
                    };
                    page_expected(events.into_iter(), *backwards, keep, *count)
                        .into_iter()
                        .map(model_seen)
                        .collect()
                });
                ensure_eq!(actual, predicted, "step {step}: {op:?}");
            }
            Op::ReadAllPage {
                backwards,
                from,
                count,
                prefix,
            } => {
                let prefix = PREFIXES[*prefix];
                let mut read = if *backwards {
                    ReadAll::backwards()
                } else {
                    ReadAll::forwards()
                }
                .max_count(*count)
                .filter(filter(prefix));
                if let Some(from) = from {
                    read = read.from(Position(*from));
                }
                let actual = read_all(&store, read)?;
                let keep = |e: &ModelEvent| {
                    from.is_none_or(|f| {
                        if *backwards {
                            e.position <= f
                        } else {
                            e.position >= f
                        }
                    })
                };
                let predicted: Vec<Seen> = page_expected(
                    model.visible_all(prefix).into_iter(),
                    *backwards,
                    keep,
                    *count,
                )
                .into_iter()
                .map(model_seen)
                .collect();
                ensure_eq!(actual, predicted, "step {step}: {op:?}");
            }
        }
        check(&store, &model, step)?;
    }
    store.close()?;
    Ok(())
}

fn run_in_tempdir(ops: &[Op]) -> TestResult {
    run_with_sync(ops, SyncPolicy::Never)
}

fn run_with_sync(ops: &[Op], sync: SyncPolicy) -> TestResult {
    let dir = tempfile::tempdir()?;
    run(dir.path(), ops, sync)
}

/// Runs `cases` random operation sequences (unless `PROPTEST_CASES` says otherwise).
fn check_random_operations(cases: u32, sync: SyncPolicy) -> TestResult {
    let mut config = Config {
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    let mut runner = TestRunner::new(config);
    runner
        .run(&vec(op_strategy(), 1..40), |ops| {
            run_with_sync(&ops, sync).map_err(|error| TestCaseError::fail(error.to_string()))
        })
        .map_err(|error| error.to_string().into())
}

/// Buffered writes: reads are mostly keydir lookups, with data reaching the files at
/// reopens and scavenges.
#[test]
fn random_operations_match_the_model() -> TestResult {
    check_random_operations(48, SyncPolicy::Never)
}

/// Every append durable and in its file at once, so forwards reads mostly follow the data
/// files record by record instead of looking events up.
#[test]
fn random_operations_match_the_model_with_every_write_synced() -> TestResult {
    check_random_operations(48, SyncPolicy::Always)
}

/// Found by the model: metadata set after a soft delete must not bring the deleted events
/// back.
#[test]
fn regression_metadata_set_after_a_soft_delete_keeps_deleted_events_hidden() -> TestResult {
    run_in_tempdir(&[
        Op::Append {
            stream: 0,
            expect: Expect::Any,
            types: vec![0],
        },
        Op::Delete {
            stream: 0,
            expect: Expect::Any,
        },
        Op::SetMetadata {
            stream: 0,
            expect: Expect::Any,
            max_count: None,
            truncate_before: None,
            custom: false,
            long_max_age: false,
        },
    ])
}
