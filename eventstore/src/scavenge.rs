//! Scavenging: deleting the events that streams' metadata hides, then merging the engine so
//! their space is reclaimed.
//!
//! Crash safety. Each stream's `deleted_before` is raised (one atomic head write) before any
//! of its events is deleted, and the deletes go in atomic batches, so at any point a crash
//! leaves a store whose reads show exactly what they showed before: the hidden events are
//! hidden by the head whether or not their records are gone yet. The merge is the engine's,
//! crash-safe on its own. A scavenge interrupted anywhere is finished by the next one.

use caskade_engine::{MergeProgress, MergeReport, WriteBatch};

use crate::error::Result;
use crate::event::StreamVersion;
use crate::format::{HEAD_PREFIX, all_key, decode_event, event_key};
use crate::metadata::StreamState;
use crate::read::Visibility;
use crate::store::{EventStore, ExpectedVersion, corrupt, stored_head};

/// What [`EventStore::scavenge`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScavengeReport {
    /// Streams looked at.
    pub streams: usize,
    /// Events looked at: every event up to and including each stream's first one shown.
    pub events_examined: u64,
    /// Events deleted (with their `$all` entries).
    pub events_removed: u64,
    /// Bytes the data files shrank by: what the merge read less what it wrote.
    pub bytes_reclaimed: u64,
    /// The engine merge that reclaimed their space.
    pub merge: MergeReport,
}

/// How far a scavenge has got, for progress bars: first the deletes, stream by stream,
/// then the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScavengeProgress {
    /// Streams looked at so far.
    pub streams_examined: u64,
    /// Streams in all.
    pub streams_total: u64,
    /// Events looked at so far.
    pub events_examined: u64,
    /// Events deleted so far.
    pub events_removed: u64,
    /// Once the deletes are done, the merge's progress.
    pub merge: Option<MergeProgress>,
}

/// Deletes written per engine batch.
const DELETES_PER_BATCH: usize = 1024;

impl EventStore {
    /// Deletes every event hidden by its stream's metadata (truncation, `max_count`,
    /// `max_age`, soft deletion, tombstones) with its `$all` entry, then merges the engine
    /// to reclaim the space. Reads already hide those events, so nothing a reader sees
    /// changes. Appends and reads go on meanwhile. A crash at any point leaves a correct
    /// store, and the next scavenge finishes the work (see the module docs).
    ///
    /// # Errors
    /// [`Error::Engine`](crate::Error::Engine), [`Error::Corrupt`](crate::Error::Corrupt).
    pub fn scavenge(&self) -> Result<ScavengeReport> {
        self.scavenge_with_progress(|_| {})
    }

    /// [`EventStore::scavenge`], calling `progress` after each stream and each merged file.
    ///
    /// # Errors
    /// As [`EventStore::scavenge`].
    pub fn scavenge_with_progress(
        &self,
        mut progress: impl FnMut(&ScavengeProgress),
    ) -> Result<ScavengeReport> {
        let mut state = ScavengeProgress::default();
        let mut report = self.delete_hidden_events(&mut state, &mut progress)?;
        report.merge = self.shared.engine.merge_with_progress(|merge| {
            state.merge = Some(merge);
            progress(&state);
        })?;
        report.bytes_reclaimed = report
            .merge
            .bytes_read
            .saturating_sub(report.merge.bytes_written);
        Ok(report)
    }

    /// The first half of a scavenge: deletes the hidden events, leaving their records (and
    /// the tombstones) in the data files until a merge.
    fn delete_hidden_events(
        &self,
        state: &mut ScavengeProgress,
        progress: &mut impl FnMut(&ScavengeProgress),
    ) -> Result<ScavengeReport> {
        let engine = &self.shared.engine;
        let mut report = ScavengeReport::default();
        let mut batch = WriteBatch::new();
        let flush = |batch: &mut WriteBatch| -> Result<()> {
            if !batch.is_empty() {
                fail::fail_point!("scavenge::before_batch", |_| Err(crate::Error::Engine(
                    caskade_engine::Error::Io(std::io::Error::other("fail point"))
                )));
                engine.write(std::mem::take(batch))?;
            }
            Ok(())
        };
        let heads: Vec<Vec<u8>> = engine.keys_with_prefix(&[HEAD_PREFIX]).collect();
        state.streams_total = heads.len() as u64;
        for key in heads {
            state.streams_examined += 1;
            state.events_examined = report.events_examined;
            state.events_removed = report.events_removed;
            progress(state);
            let Some((stream, head)) = stored_head(engine, &key)? else {
                continue;
            };
            let stream = stream.to_owned();
            report.streams += 1;
            let visibility = Visibility::of(&head);
            // Retention hides a prefix of the stream: everything before the first event
            // shown goes.
            let mut first_shown = visibility.end;
            for version in 0..visibility.end {
                report.events_examined += 1;
                let event = event_key(&stream, StreamVersion(version));
                let Some(recorded_at) = engine.get_with(&event, |value| {
                    decode_event(value).map(|stored| stored.recorded_at_micros)
                })?
                else {
                    continue;
                };
                let recorded_at = recorded_at.map_err(|reason| corrupt(&event, reason))?;
                if visibility.shows(version, recorded_at) {
                    first_shown = version;
                    break;
                }
            }
            // Raised before anything is deleted and never lowered, so a deleted event stays
            // hidden whatever the metadata says later; sequential reads rely on it.
            if first_shown > head.deleted_before && head.state != StreamState::Tombstoned {
                self.change_head(&stream, ExpectedVersion::Any, |head| {
                    head.deleted_before = head.deleted_before.max(first_shown);
                    Ok(())
                })?;
            }
            let mut removed_any = false;
            for version in 0..first_shown {
                let event = event_key(&stream, StreamVersion(version));
                let Some(position) =
                    engine.get_with(&event, |value| decode_event(value).map(|s| s.position))?
                else {
                    continue;
                };
                let position = position.map_err(|reason| corrupt(&event, reason))?;
                let entry = all_key(position);
                if engine.contains(&entry)? {
                    batch.delete(entry);
                }
                batch.delete(event);
                report.events_removed += 1;
                removed_any = true;
                if batch.len() >= DELETES_PER_BATCH {
                    flush(&mut batch)?;
                }
            }
            // The first event kept may share an append with deleted ones whose `$all`
            // entries located it: give it its own.
            if removed_any && first_shown < visibility.end {
                let event = event_key(&stream, StreamVersion(first_shown));
                if let Some(position) =
                    engine.get_with(&event, |value| decode_event(value).map(|s| s.position))?
                {
                    let position = position.map_err(|reason| corrupt(&event, reason))?;
                    batch.put(all_key(position), event);
                }
            }
        }
        flush(&mut batch)?;
        state.events_examined = report.events_examined;
        state.events_removed = report.events_removed;
        progress(state);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventData, Options, ReadAll, StreamMetadata};

    fn event(n: u64) -> EventData {
        EventData::json("Tested", &serde_json::json!({ "n": n })).expect("serializable")
    }

    /// Reads in file order step from one record to the next without the keydir; deleted
    /// records stay in the files until a merge, so they must stay hidden by the stream's
    /// `deleted_before`, not by the metadata that hid them, which may be relaxed later.
    #[test]
    fn deleted_events_stay_hidden_before_the_merge_whatever_the_metadata() -> Result<()> {
        let dir = tempfile::tempdir().map_err(caskade_engine::Error::Io)?;
        let store = EventStore::open(dir.path(), Options::default())?;
        store.append("other", ExpectedVersion::NoStream, &[event(0)])?;
        let batch: Vec<EventData> = (0..10).map(event).collect();
        store.append("acct", ExpectedVersion::NoStream, &batch)?;
        store.append("other", ExpectedVersion::Any, &[event(1)])?;
        let truncate = StreamMetadata {
            truncate_before: Some(StreamVersion(5)),
            ..StreamMetadata::default()
        };
        store.set_metadata("acct", ExpectedVersion::Any, truncate)?;
        assert_eq!(
            store
                .delete_hidden_events(&mut ScavengeProgress::default(), &mut |_| {})?
                .events_removed,
            5
        );
        store.set_metadata("acct", ExpectedVersion::Any, StreamMetadata::default())?;

        let read: Vec<(String, u64)> = store
            .read_all(ReadAll::forwards())
            .map(|event| event.map(|e| (e.stream.to_string(), e.version.0)))
            .collect::<Result<_>>()?;
        let mut expected = vec![("other".to_owned(), 0)];
        expected.extend((5..10).map(|v| ("acct".to_owned(), v)));
        expected.push(("other".to_owned(), 1));
        assert_eq!(read, expected);
        let versions: Vec<u64> = store
            .read_stream("acct", crate::ReadStream::forwards())?
            .map(|event| event.map(|e| e.version.0))
            .collect::<Result<_>>()?;
        assert_eq!(versions, [5, 6, 7, 8, 9]);
        Ok(())
    }
}
