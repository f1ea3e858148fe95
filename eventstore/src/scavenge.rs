//! Scavenging: deleting the events that streams' metadata hides, then merging the engine so
//! their space is reclaimed.

use caskade_engine::{MergeReport, WriteBatch};

use crate::error::Result;
use crate::event::StreamVersion;
use crate::format::{HEAD_PREFIX, Head, all_key, decode_event, event_key};
use crate::read::Visibility;
use crate::store::{EventStore, corrupt};

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
            for version in 0..visibility.end {
                let event = event_key(&stream, StreamVersion(version));
                let Some(stored) = engine.get_with(&event, |value| {
                    decode_event(value).map(|stored| (stored.position, stored.recorded_at_micros))
                })?
                else {
                    continue;
                };
                let (position, recorded_at) = stored.map_err(|reason| corrupt(&event, reason))?;
                if visibility.shows(version, recorded_at) {
                    // Retention hides a prefix of the stream; the first shown event ends it.
                    break;
                }
                batch.delete(all_key(position).to_vec()).delete(event);
                report.events_removed += 1;
                if batch.len() >= DELETES_PER_BATCH {
                    flush(&mut batch)?;
                }
            }
        }
        flush(&mut batch)?;
        report.merge = engine.merge()?;
        Ok(report)
    }
}
