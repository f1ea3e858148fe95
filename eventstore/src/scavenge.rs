//! Scavenging: deleting the events that streams' metadata hides, then merging the engine so
//! their space is reclaimed.

use caskade_engine::{MergeReport, WriteBatch};

use crate::error::Result;
use crate::event::StreamVersion;
use crate::format::{HEAD_PREFIX, Head, all_key, decode_event, event_key};
use crate::metadata::StreamState;
use crate::read::Visibility;
use crate::store::{EventStore, ExpectedVersion, corrupt};

/// What [`EventStore::scavenge`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ScavengeReport {
    /// Streams looked at.
    pub streams: usize,
    /// Events deleted (with their `$all` entries).
    pub events_removed: u64,
    /// The engine merge that reclaimed their space.
    pub merge: MergeReport,
}

/// Deletes written per engine batch.
const DELETES_PER_BATCH: usize = 1024;

impl EventStore {
    /// Deletes every event hidden by its stream's metadata (truncation, `max_count`,
    /// `max_age`, soft deletion, tombstones) with its `$all` entry, then merges the engine
    /// to reclaim the space. Reads already hide those events, so nothing a reader sees
    /// changes. Appends and reads go on meanwhile.
    ///
    /// # Errors
    /// [`Error::Engine`](crate::Error::Engine), [`Error::Corrupt`](crate::Error::Corrupt).
    pub fn scavenge(&self) -> Result<ScavengeReport> {
        let mut report = self.delete_hidden_events()?;
        report.merge = self.shared.engine.merge()?;
        Ok(report)
    }

    /// The first half of a scavenge: deletes the hidden events, leaving their records (and
    /// the tombstones) in the data files until a merge.
    fn delete_hidden_events(&self) -> Result<ScavengeReport> {
        let engine = &self.shared.engine;
        let mut report = ScavengeReport::default();
        let mut batch = WriteBatch::new();
        let flush = |batch: &mut WriteBatch| -> Result<()> {
            if !batch.is_empty() {
                engine.write(std::mem::take(batch))?;
            }
            Ok(())
        };
        for key in engine.keys_with_prefix(&[HEAD_PREFIX]) {
            let Some(value) = engine.get(&key)? else {
                continue;
            };
            let head = Head::decode(&value).map_err(|reason| corrupt(&key, reason))?;
            let stream = String::from_utf8_lossy(&key[1..]).into_owned();
            report.streams += 1;
            let visibility = Visibility::of(&head);
            // Retention hides a prefix of the stream: everything before the first event
            // shown goes.
            let mut first_shown = visibility.end;
            for version in 0..visibility.end {
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
        assert_eq!(store.delete_hidden_events()?.events_removed, 5);
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
