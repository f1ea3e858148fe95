//! Appends submitted to the engine but not yet published, kept so that a retry racing its
//! original is answered with the original's outcome instead of a version conflict.
//!
//! A client that times out while its append is still being synced sends it again. The retry
//! finds the sequencer's head already past the original's events, but it cannot find those
//! events in the engine: they become visible only once the group commit covering them ends.
//! So the sequencer records each append it submits that the engine has not published yet:
//! its stream, first version, event ids, result and engine [`WriteTicket`]. A retry whose ids
//! match an entry waits for the same engine batch and returns the same result.
//!
//! Invariants, under the sequencer's lock: every submitted append is published in the engine
//! or recorded here (or both, until [`InFlightAppends::retire`] notices), so a retry looks in
//! one place or the other and never misses its original. Entries are retired in submission
//! order, which is the order the engine publishes in, so memory holds only what is in flight
//! plus what was published since the last append. Under [`SyncPolicy::Interval`] and
//! [`SyncPolicy::Never`] an append is published as it is submitted and nothing is recorded.
//!
//! [`SyncPolicy::Interval`]: caskade_engine::SyncPolicy::Interval
//! [`SyncPolicy::Never`]: caskade_engine::SyncPolicy::Never

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use caskade_engine::{Bitcask, WriteTicket};
use uuid::Uuid;

use crate::event::EventData;
use crate::store::AppendResult;

/// One append in flight.
struct InFlightAppend {
    ticket: WriteTicket,
    first_version: u64,
    ids: Box<[Uuid]>,
    result: AppendResult,
}

/// The appends in flight, by stream; see the module docs.
#[derive(Default)]
pub(crate) struct InFlightAppends {
    by_stream: HashMap<Arc<str>, Vec<InFlightAppend>>,
    /// Every entry of `by_stream`, in submission order.
    order: VecDeque<(WriteTicket, Arc<str>)>,
}

impl InFlightAppends {
    /// Forgets the appends the engine has published: from now on reads find them.
    pub(crate) fn retire(&mut self, engine: &Bitcask) {
        while let Some((ticket, _)) = self.order.front() {
            if !engine.is_published(*ticket) {
                return;
            }
            let Some((ticket, stream)) = self.order.pop_front() else {
                return;
            };
            if let Some(appends) = self.by_stream.get_mut(&stream) {
                appends.retain(|append| append.ticket != ticket);
                if appends.is_empty() {
                    self.by_stream.remove(&stream);
                }
            }
        }
    }

    /// Records an append just submitted, unless the engine published it already.
    pub(crate) fn record(
        &mut self,
        engine: &Bitcask,
        stream: &Arc<str>,
        ticket: WriteTicket,
        first_version: u64,
        events: &[EventData],
        result: AppendResult,
    ) {
        if engine.is_published(ticket) {
            return;
        }
        self.by_stream
            .entry(Arc::clone(stream))
            .or_default()
            .push(InFlightAppend {
                ticket,
                first_version,
                ids: events.iter().map(|event| event.id).collect(),
                result,
            });
        self.order.push_back((ticket, Arc::clone(stream)));
    }

    /// The append in flight on `stream` with exactly `events`' ids, starting at
    /// `first_version` if one is given (an expected version anchors the retry) or anywhere
    /// (it had none).
    pub(crate) fn find(
        &self,
        stream: &str,
        first_version: Option<u64>,
        events: &[EventData],
    ) -> Option<(WriteTicket, AppendResult)> {
        self.by_stream
            .get(stream)?
            .iter()
            .find(|append| {
                first_version.is_none_or(|first| first == append.first_version)
                    && append.ids.len() == events.len()
                    && append
                        .ids
                        .iter()
                        .zip(events)
                        .all(|(id, event)| *id == event.id)
            })
            .map(|append| (append.ticket, append.result))
    }

    /// How many appends are recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use caskade_engine::{SyncPolicy, WriteBatch};

    use super::*;
    use crate::event::Position;
    use crate::store::AppendResult;

    fn result(version: u64) -> AppendResult {
        AppendResult {
            next_expected_version: crate::StreamVersion(version),
            first_position: Position(version),
            last_position: Position(version),
        }
    }

    #[test]
    fn entries_are_found_by_ids_and_retired_once_published() -> crate::Result<()> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let engine = Bitcask::open(
            dir.path(),
            caskade_engine::Options {
                sync: SyncPolicy::Always,
                ..caskade_engine::Options::default()
            },
        )?;
        let mut batch = WriteBatch::new();
        batch.put(b"k", b"v");
        let pending = engine.begin_write(batch)?;
        let events = [EventData::binary("E", b"1"), EventData::binary("E", b"2")];
        let stream: Arc<str> = Arc::from("s");
        let mut in_flight = InFlightAppends::default();
        in_flight.record(&engine, &stream, pending.ticket(), 3, &events, result(4));
        assert_eq!(in_flight.len(), 1);

        let found = in_flight
            .find("s", Some(3), &events)
            .map(|(_, result)| result);
        assert_eq!(found, Some(result(4)));
        assert!(in_flight.find("s", None, &events).is_some());
        assert!(
            in_flight.find("s", Some(2), &events).is_none(),
            "another place"
        );
        assert!(
            in_flight.find("s", None, &events[..1]).is_none(),
            "a part of it"
        );
        assert!(
            in_flight.find("t", None, &events).is_none(),
            "another stream"
        );

        in_flight.retire(&engine);
        assert_eq!(in_flight.len(), 1, "not published yet");
        pending.wait()?;
        in_flight.retire(&engine);
        assert_eq!(in_flight.len(), 0);
        assert!(in_flight.find("s", None, &events).is_none());
        Ok(())
    }
}
