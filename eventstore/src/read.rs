//! Reading streams and `$all`, lazily, with retention and filters applied.
//!
//! Reads see only what is durable: a stream read bounds itself by the stream head stored in
//! the engine (written in the same atomic batch as, and after, the events it counts), and an
//! `$all` read by the committed watermark. Events hidden by a stream's metadata (truncation,
//! `max_count`, `max_age`, deletion) are skipped; so are positions whose events were
//! scavenged.

use std::collections::HashMap;
use std::sync::Arc;

use caskade_engine::{Bitcask, Interest, RecordCursor};
use chrono::Utc;

use crate::error::{Error, Result};
use crate::event::{Position, RecordedEvent, StreamVersion};
use crate::filter::EventFilter;
use crate::format::{
    ALL_ENTRY_SPACING, ALL_PREFIX, EVENT_PREFIX, HEAD_PREFIX, Head, StoredEvent, all_key,
    decode_event, event_key, head_key, is_event_key, micros_to_time, parse_event_key,
};
use crate::metadata::StreamState;
use crate::store::{EventStore, corrupt};

/// Which way a read walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forwards,
    /// Newest first.
    Backwards,
}

/// Where a read starts. A read includes the event it starts at, whichever way it walks: a
/// forwards read from `End` returns just the newest event, a backwards read from `Start`
/// just the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom<T> {
    /// The oldest event the read would show (after retention, scavenging and its filter).
    Start,
    /// The newest event the read would show.
    End,
    /// This version or position, inclusive.
    At(T),
}

/// A read of one stream: [`EventStore::read_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStream {
    /// Which way to walk.
    pub direction: Direction,
    /// Where to start.
    pub from: ReadFrom<StreamVersion>,
    /// At most this many events.
    pub max_count: u64,
}

impl ReadStream {
    /// Every event, oldest first.
    #[must_use]
    pub fn forwards() -> Self {
        ReadStream {
            direction: Direction::Forwards,
            from: ReadFrom::Start,
            max_count: u64::MAX,
        }
    }

    /// Every event, newest first.
    #[must_use]
    pub fn backwards() -> Self {
        ReadStream {
            direction: Direction::Backwards,
            from: ReadFrom::End,
            max_count: u64::MAX,
        }
    }

    /// Starts at `version` (inclusive).
    #[must_use]
    pub fn from(mut self, version: StreamVersion) -> Self {
        self.from = ReadFrom::At(version);
        self
    }

    /// Reads at most `count` events.
    #[must_use]
    pub fn max_count(mut self, count: u64) -> Self {
        self.max_count = count;
        self
    }
}

/// A read of `$all`: [`EventStore::read_all`].
#[derive(Debug, Clone)]
pub struct ReadAll {
    /// Which way to walk.
    pub direction: Direction,
    /// Where to start.
    pub from: ReadFrom<Position>,
    /// At most this many events (after filtering).
    pub max_count: u64,
    /// Which events to return.
    pub filter: EventFilter,
}

impl ReadAll {
    /// Every event, oldest first.
    #[must_use]
    pub fn forwards() -> Self {
        ReadAll {
            direction: Direction::Forwards,
            from: ReadFrom::Start,
            max_count: u64::MAX,
            filter: EventFilter::all(),
        }
    }

    /// Every event, newest first.
    #[must_use]
    pub fn backwards() -> Self {
        ReadAll {
            direction: Direction::Backwards,
            from: ReadFrom::End,
            ..ReadAll::forwards()
        }
    }

    /// Starts at `position` (inclusive).
    #[must_use]
    pub fn from(mut self, position: Position) -> Self {
        self.from = ReadFrom::At(position);
        self
    }

    /// Returns at most `count` events.
    #[must_use]
    pub fn max_count(mut self, count: u64) -> Self {
        self.max_count = count;
        self
    }

    /// Returns only events matching `filter`.
    #[must_use]
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }
}

/// Which versions of a stream its head and metadata let readers see.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Visibility {
    /// The first visible version.
    pub(crate) min_version: u64,
    /// One past the last version.
    pub(crate) end: u64,
    /// Events recorded before this (microseconds) are hidden.
    pub(crate) cutoff_micros: Option<i64>,
}

impl Visibility {
    pub(crate) fn of(head: &Head) -> Visibility {
        let metadata = &head.metadata;
        let mut min_version = metadata
            .truncate_before
            .map_or(0, |v| v.0)
            .max(head.deleted_before);
        if let Some(max_count) = metadata.max_count {
            min_version = min_version.max(head.next_version.saturating_sub(max_count));
        }
        if head.state == StreamState::Tombstoned {
            min_version = head.next_version;
        }
        let cutoff_micros = metadata.max_age.map(|age| {
            Utc::now().timestamp_micros() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX)
        });
        Visibility {
            min_version: min_version.min(head.next_version),
            end: head.next_version,
            cutoff_micros,
        }
    }

    pub(crate) fn shows(&self, version: u64, recorded_at_micros: i64) -> bool {
        version >= self.min_version
            && version < self.end
            && self
                .cutoff_micros
                .is_none_or(|cutoff| recorded_at_micros >= cutoff)
    }
}

/// Decodes an event value of `stream` at `version`; `None` if `visibility` hides it.
fn recorded_event(
    value: &[u8],
    stream: &Arc<str>,
    version: StreamVersion,
    visibility: &Visibility,
) -> Result<Option<RecordedEvent>, &'static str> {
    decode_event(value).map(|stored| shown_event(&stored, stream, version, visibility))
}

/// The event as readers get it; `None` if `visibility` hides it.
fn shown_event(
    stored: &StoredEvent<'_>,
    stream: &Arc<str>,
    version: StreamVersion,
    visibility: &Visibility,
) -> Option<RecordedEvent> {
    if !visibility.shows(version.0, stored.recorded_at_micros) {
        return None;
    }
    Some(RecordedEvent {
        id: stored.id,
        stream: Arc::clone(stream),
        version,
        position: stored.position,
        event_type: stored.event_type.to_owned(),
        content_type: stored.content_type,
        data: stored.data.to_vec(),
        metadata: stored.metadata.to_vec(),
        recorded_at: micros_to_time(stored.recorded_at_micros),
    })
}

/// Looks up and decodes the event stored under `key`, with a cursor past its record; `None`
/// if it is gone (scavenged).
fn load_event(
    engine: &Bitcask,
    key: &[u8],
    stream: &Arc<str>,
    version: StreamVersion,
    visibility: &Visibility,
) -> Result<Option<(Option<RecordedEvent>, RecordCursor)>> {
    match engine.get_with_cursor(key, |value| {
        recorded_event(value, stream, version, visibility)
    })? {
        None => Ok(None),
        Some((decoded, cursor)) => Ok(Some((decoded.map_err(|r| corrupt(key, r))?, cursor))),
    }
}

/// Records an append writes around its events that a sequential read steps over: `$all`
/// entries (one before each event) and stream heads (one after the last).
fn between_events(key: &[u8]) -> bool {
    matches!(key.first(), Some(&ALL_PREFIX | &HEAD_PREFIX))
}

/// At most this many records are looked at for the next one wanted in file order before
/// falling back to a keydir lookup.
const MAX_STEPS: usize = 3;

/// Reads on from `cursor` in file order to the record `wanted` picks out, stepping over
/// what [`between_events`] matches, and calls `take` on its value. `None` (fall back to a
/// lookup) if another record comes first, or the wanted one is a delete.
///
/// Sequential reads are sound because event keys and `$all` keys are written once and
/// deleted only by scavenging, which first raises the stream's `deleted_before` above every
/// version it deletes: a record read this way whose version is visible is live.
fn read_on<T>(
    engine: &Bitcask,
    cursor: RecordCursor,
    wanted: impl Fn(&[u8]) -> bool,
    take: impl FnOnce(&[u8]) -> T,
) -> Result<Option<(T, RecordCursor)>> {
    let interest = |key: &[u8]| {
        if wanted(key) {
            Interest::Take
        } else if between_events(key) {
            Interest::Skip
        } else {
            Interest::Stop
        }
    };
    let found = engine.read_on(cursor, MAX_STEPS, interest, |_, value| value.map(take))?;
    Ok(found.and_then(|(taken, next)| taken.map(|taken| (taken, next))))
}

/// A walk over versions or positions, in either direction, returning at most `remaining`
/// events; what a version or position holds is up to the reader.
#[derive(Debug, Clone, Copy)]
struct Walk {
    direction: Direction,
    /// The next version or position to look at; `None` once the walk is over.
    next: Option<u64>,
    remaining: u64,
}

impl Walk {
    /// Steps until `load` finds an event, the walk leaves `in_range`, or `load` fails (which
    /// also ends the walk).
    fn step(
        &mut self,
        in_range: impl Fn(u64) -> bool,
        mut load: impl FnMut(u64) -> Result<Option<RecordedEvent>>,
    ) -> Option<Result<RecordedEvent>> {
        while self.remaining > 0 {
            let at = self.next?;
            if !in_range(at) {
                self.next = None;
                return None;
            }
            self.next = match self.direction {
                Direction::Forwards => at.checked_add(1),
                Direction::Backwards => at.checked_sub(1),
            };
            match load(at) {
                Ok(Some(event)) => {
                    self.remaining -= 1;
                    return Some(Ok(event));
                }
                Ok(None) => {}
                Err(error) => {
                    self.next = None;
                    return Some(Err(error));
                }
            }
        }
        None
    }
}

/// The events of one stream, read lazily; see [`EventStore::read_stream`].
pub struct StreamEvents {
    engine: Bitcask,
    stream: Arc<str>,
    /// The head's state when the read started; `None` for a stream never written.
    state: Option<StreamState>,
    /// The stream's last version when the read started, if it had had an event.
    last_version: Option<StreamVersion>,
    visibility: Visibility,
    walk: Walk,
    /// Forwards: just past the last event read, where the next one usually follows.
    cursor: Option<RecordCursor>,
}

impl StreamEvents {
    /// The stream's state when the read started (live or soft-deleted: a tombstoned stream
    /// is not read); `None` if it was never written. The events the read returns are the
    /// ones that state shows.
    #[must_use]
    pub fn stream_state(&self) -> Option<StreamState> {
        self.state
    }

    /// The version of the stream's last event when the read started, if it had had any
    /// (soft-deleted ones count).
    #[must_use]
    pub fn last_version(&self) -> Option<StreamVersion> {
        self.last_version
    }

    /// One past the last version of the stream when the read started.
    pub(crate) fn end(&self) -> u64 {
        self.visibility.end
    }
}

impl Iterator for StreamEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        let StreamEvents {
            engine,
            stream,
            visibility,
            walk,
            cursor,
            ..
        } = self;
        let visibility = *visibility;
        let forwards = walk.direction == Direction::Forwards;
        walk.step(
            |version| version >= visibility.min_version && version < visibility.end,
            |version| {
                let version = StreamVersion(version);
                if let Some(at) = cursor.take() {
                    let found = read_on(
                        engine,
                        at,
                        |key| is_event_key(key, stream, version),
                        |value| recorded_event(value, stream, version, &visibility),
                    )?;
                    if let Some((decoded, next)) = found {
                        *cursor = Some(next);
                        return decoded
                            .map_err(|reason| corrupt(&event_key(stream, version), reason));
                    }
                }
                let key = event_key(stream, version);
                let Some((event, next)) = load_event(engine, &key, stream, version, &visibility)?
                else {
                    return Ok(None);
                };
                if forwards {
                    *cursor = Some(next);
                }
                Ok(event)
            },
        )
    }
}

/// Events of `$all`, read lazily; see [`EventStore::read_all`].
pub struct AllEvents {
    engine: Bitcask,
    filter: EventFilter,
    walk: Walk,
    /// One past the last position the read may return.
    end: u64,
    visibility: HashMap<Arc<str>, Visibility>,
    /// Forwards: just past the last event read, where the next event usually follows.
    cursor: Option<RecordCursor>,
    /// The last `$all` entry found by a seek, valid for the positions it covers.
    anchor: Option<Anchor>,
    /// A failure finding where the read starts, yielded first.
    failed: Option<Error>,
}

/// A `$all` entry and the positions it locates: every position from its own up to `upto`
/// (inclusive) belongs to its append, since no entry lies between.
struct Anchor {
    position: u64,
    upto: u64,
    stream: String,
    version: u64,
}

/// How many streams' visibility an `$all` read remembers before starting afresh.
const VISIBILITY_CACHE: usize = 4096;

impl AllEvents {
    fn visibility(&mut self, stream: &str) -> Result<(Arc<str>, Visibility)> {
        if let Some((name, visibility)) = self.visibility.get_key_value(stream) {
            return Ok((Arc::clone(name), *visibility));
        }
        let key = head_key(stream);
        let visibility = match self.engine.get(&key)? {
            Some(value) => {
                Visibility::of(&Head::decode(&value).map_err(|reason| corrupt(&key, reason))?)
            }
            None => Visibility {
                min_version: 0,
                end: 0,
                cutoff_micros: None,
            },
        };
        if self.visibility.len() >= VISIBILITY_CACHE {
            self.visibility.clear();
        }
        let name: Arc<str> = Arc::from(stream);
        self.visibility.insert(Arc::clone(&name), visibility);
        Ok((name, visibility))
    }

    fn load(&mut self, position: u64) -> Result<Option<RecordedEvent>> {
        if let Some(at) = self.cursor.take()
            && let Some((event, next)) = self.next_in_file(at, position)?
        {
            self.cursor = Some(next);
            return Ok(event);
        }
        let Some((stream, version)) = self.locate(position)? else {
            return Ok(None);
        };
        let key = event_key(&stream, StreamVersion(version));
        let shown = self.filter.matches_stream(&stream);
        let (stream, visibility) = self.visibility(&stream)?;
        let found = self.engine.get_with_cursor(&key, |value| {
            decode_at(
                value,
                position,
                shown,
                &stream,
                StreamVersion(version),
                &visibility,
            )
        })?;
        let Some((decoded, next)) = found else {
            return Ok(None);
        };
        let Some(event) = decoded.map_err(|reason| corrupt(&key, reason))? else {
            // Another position's event (this one was scavenged): nothing here.
            return Ok(None);
        };
        if self.walk.direction == Direction::Forwards {
            self.cursor = Some(next);
        }
        Ok(event.filter(|event| self.filter.matches_type(&event.event_type)))
    }

    /// The event at `position` if it is the next event record in file order after `at`
    /// (past `$all` entries and heads) and its stream's visibility is known; `None` to fall
    /// back to [`AllEvents::locate`]. The inner `None`: the event is hidden.
    fn next_in_file(
        &self,
        at: RecordCursor,
        position: u64,
    ) -> Result<Option<(Option<RecordedEvent>, RecordCursor)>> {
        let interest = |key: &[u8]| match key.first() {
            Some(&EVENT_PREFIX) => Interest::Take,
            Some(&ALL_PREFIX | &HEAD_PREFIX) => Interest::Skip,
            _ => Interest::Stop,
        };
        let take = |key: &[u8], value: Option<&[u8]>| {
            let (stream, version) = parse_event_key(key)?;
            let (name, visibility) = self.visibility.get_key_value(stream)?;
            let shown = self.filter.matches_stream(stream);
            match decode_at(value?, position, shown, name, version, visibility) {
                Ok(Some(event)) => {
                    Some(event.filter(|event| self.filter.matches_type(&event.event_type)))
                }
                // Another position's event, or damage the lookup will report.
                Ok(None) | Err(_) => None,
            }
        };
        let found = self.engine.read_on(at, MAX_STEPS, interest, take)?;
        Ok(found.and_then(|(event, next)| event.map(|event| (event, next))))
    }

    /// The stream and version of the event at `position`, from the nearest `$all` entry at
    /// or below it (at most [`ALL_ENTRY_SPACING`] lookups back, or none within the anchor
    /// of the last seek); `None` if there is none, when every event of the position's append
    /// up to it was scavenged.
    fn locate(&mut self, position: u64) -> Result<Option<(String, u64)>> {
        if let Some(anchor) = &self.anchor
            && (anchor.position..=anchor.upto).contains(&position)
        {
            return Ok(Some((
                anchor.stream.clone(),
                anchor.version + (position - anchor.position),
            )));
        }
        let lowest = position - position % ALL_ENTRY_SPACING;
        for candidate in (lowest..=position).rev() {
            let entry_key = all_key(Position(candidate));
            let Some(event_key) = self.engine.get(&entry_key)? else {
                continue;
            };
            let (stream, version) = parse_event_key(&event_key)
                .ok_or_else(|| corrupt(&entry_key, "$all entry is not an event key"))?;
            let anchor = Anchor {
                position: candidate,
                upto: position,
                stream: stream.to_owned(),
                version: version.0,
            };
            let located = (
                anchor.stream.clone(),
                anchor.version + (position - candidate),
            );
            self.anchor = Some(anchor);
            return Ok(Some(located));
        }
        Ok(None)
    }
}

/// Decodes the event `value` of `stream` at `version` if it is the event at `position`
/// (`Ok(None)` if it is another's); the inner `None` if the filter (`shown` false) or the
/// stream's visibility hides it.
#[expect(
    clippy::option_option,
    reason = "outer: this position's event or not; inner: shown or hidden"
)]
fn decode_at(
    value: &[u8],
    position: u64,
    shown: bool,
    stream: &Arc<str>,
    version: StreamVersion,
    visibility: &Visibility,
) -> Result<Option<Option<RecordedEvent>>, &'static str> {
    let stored = decode_event(value)?;
    if stored.position.0 != position {
        return Ok(None);
    }
    Ok(Some(
        shown
            .then(|| shown_event(&stored, stream, version, visibility))
            .flatten(),
    ))
}

impl Iterator for AllEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.failed.take() {
            return Some(Err(error));
        }
        let end = self.end;
        // Copied out so `load` may borrow the reader mutably; written back after.
        let mut walk = self.walk;
        let event = walk.step(|position| position < end, |position| self.load(position));
        self.walk = walk;
        event
    }
}

impl EventStore {
    /// Reads `stream` lazily: events are fetched as the iterator is advanced, so a stream of
    /// any length reads in constant memory. A stream never written, or soft-deleted, reads
    /// as empty.
    ///
    /// # Errors
    /// [`Error::StreamDeleted`] for a tombstoned stream, the stream-name errors,
    /// [`Error::Engine`]; the iterator yields [`Error::Engine`] or [`Error::Corrupt`] if a
    /// read fails midway, and then ends.
    pub fn read_stream(&self, stream: &str, read: ReadStream) -> Result<StreamEvents> {
        self.validate_stream(stream)?;
        let durable = self.durable_head(stream)?;
        let state = durable.as_ref().map(|head| head.state);
        let head = durable.unwrap_or_else(Head::new);
        if head.state == StreamState::Tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        let visibility = Visibility::of(&head);
        let cursor = match (read.direction, read.from) {
            (Direction::Forwards, ReadFrom::Start) => Some(visibility.min_version),
            (Direction::Forwards, ReadFrom::At(v)) => Some(v.0.max(visibility.min_version)),
            (Direction::Backwards, ReadFrom::End) => visibility.end.checked_sub(1),
            (Direction::Backwards, ReadFrom::At(v)) => {
                visibility.end.checked_sub(1).map(|last| last.min(v.0))
            }
            // The edge a read starts from is the newest or oldest event shown, found by a
            // read of one event the other way (retention can hide any prefix).
            (Direction::Forwards, ReadFrom::End) => {
                self.edge_version(stream, ReadStream::backwards())?
            }
            (Direction::Backwards, ReadFrom::Start) => {
                self.edge_version(stream, ReadStream::forwards())?
            }
        };
        Ok(StreamEvents {
            engine: self.shared.engine.clone(),
            stream: Arc::from(stream),
            state,
            last_version: head.next_version.checked_sub(1).map(StreamVersion),
            visibility,
            walk: Walk {
                direction: read.direction,
                next: cursor,
                remaining: read.max_count,
            },
            cursor: None,
        })
    }

    /// The version of the first event `read` returns, if any.
    fn edge_version(&self, stream: &str, read: ReadStream) -> Result<Option<u64>> {
        self.read_stream(stream, read.max_count(1))?
            .next()
            .transpose()
            .map(|event| event.map(|event| event.version.0))
    }

    /// Reads `$all`, the log of every stream's events in append order, lazily. Only committed
    /// (durable) events are returned; events hidden by their stream's metadata or filtered
    /// out are skipped.
    ///
    /// # Errors
    /// The iterator yields [`Error::Engine`] or [`Error::Corrupt`] if a read fails, and
    /// then ends.
    #[must_use]
    pub fn read_all(&self, read: ReadAll) -> AllEvents {
        let end = self.committed_position().0;
        let cursor = match (read.direction, read.from) {
            (Direction::Forwards, ReadFrom::Start) => Ok(Some(0)),
            (Direction::Forwards, ReadFrom::At(p)) => Ok(Some(p.0)),
            (Direction::Backwards, ReadFrom::End) => Ok(end.checked_sub(1)),
            (Direction::Backwards, ReadFrom::At(p)) => {
                Ok(end.checked_sub(1).map(|last| last.min(p.0)))
            }
            // The edge a read starts from is the newest or oldest event the filter shows,
            // found by a read of one event the other way under the same watermark (scavenging
            // leaves holes at the start, and the filter may skip any event).
            (Direction::Forwards, ReadFrom::End) => {
                self.all_edge(end, Direction::Backwards, &read.filter)
            }
            (Direction::Backwards, ReadFrom::Start) => {
                self.all_edge(end, Direction::Forwards, &read.filter)
            }
        };
        match cursor {
            Ok(cursor) => self.read_all_from(end, read, cursor),
            Err(error) => {
                let mut events = self.read_all_from(end, read, None);
                events.failed = Some(error);
                events
            }
        }
    }

    /// The position of the first event a walk `direction` from the first (forwards) or last
    /// (backwards) position below `end` returns through `filter`.
    fn all_edge(
        &self,
        end: u64,
        direction: Direction,
        filter: &EventFilter,
    ) -> Result<Option<u64>> {
        let first = match direction {
            Direction::Forwards => 0,
            Direction::Backwards => match end.checked_sub(1) {
                Some(last) => last,
                None => return Ok(None),
            },
        };
        let probe = ReadAll {
            direction,
            from: ReadFrom::At(Position(first)),
            max_count: 1,
            filter: filter.clone(),
        };
        self.read_all_from(end, probe, Some(first))
            .next()
            .transpose()
            .map(|event| event.map(|event| event.position.0))
    }

    fn read_all_from(&self, end: u64, read: ReadAll, cursor: Option<u64>) -> AllEvents {
        AllEvents {
            engine: self.shared.engine.clone(),
            filter: read.filter,
            walk: Walk {
                direction: read.direction,
                next: cursor,
                remaining: read.max_count,
            },
            end,
            visibility: HashMap::new(),
            cursor: None,
            anchor: None,
            failed: None,
        }
    }

    /// `$all` from position `from` up to (not including) `end`, forwards.
    pub(crate) fn read_all_range(&self, from: u64, end: u64, filter: EventFilter) -> AllEvents {
        let read = ReadAll {
            direction: Direction::Forwards,
            from: ReadFrom::At(Position(from)),
            max_count: u64::MAX,
            filter,
        };
        self.read_all_from(end, read, Some(from))
    }

    /// Reads the whole of `stream` forwards into memory; for small streams and tests.
    ///
    /// # Errors
    /// As [`EventStore::read_stream`].
    pub fn read_stream_to_vec(&self, stream: &str) -> Result<Vec<RecordedEvent>> {
        self.read_stream(stream, ReadStream::forwards())?.collect()
    }
}
