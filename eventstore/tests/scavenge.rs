//! Scavenging gives the disk back: after most of a store's events are deleted (soft delete,
//! tombstone, retention), a scavenge leaves the data directory about as large as a store
//! holding only the live events, with every live event intact; and a scavenge interrupted at
//! any step, then reopened, leaves a correct store that the next scavenge finishes.
//!
//! The fail points are process-wide, so the tests that set them hold [`FailScenario`], whose
//! lock runs them one at a time.

use std::path::Path;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    EventData, EventStore, ExpectedVersion, Options, ReadAll, RecordedEvent, ScavengeProgress,
    StreamMetadata, StreamVersion,
};
use fail::FailScenario;
use serde_json::json;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const STREAMS: usize = 130;
const EVENTS_PER_STREAM: u64 = 20;

/// No preallocated runway, so file lengths are data; no automatic merges, so each test
/// decides when space is reclaimed.
fn options() -> Options {
    let mut engine = caskade_engine::Options {
        sync: SyncPolicy::Never,
        ..caskade_engine::Options::default()
    };
    engine.tuning.runway = false;
    engine.auto_merge = None;
    engine.max_file_size = 1 << 20;
    Options {
        engine,
        ..Options::default()
    }
}

fn event(stream: usize, n: u64) -> EventData {
    let body = json!({ "stream": stream, "n": n, "blob": "x".repeat(400) });
    EventData::json("Written", &body).expect("a json! value serializes")
}

fn name(stream: usize) -> String {
    format!("stream-{stream:03}")
}

/// Which streams stay live: every thirteenth (ten of 130).
fn is_live(stream: usize) -> bool {
    stream.is_multiple_of(13)
}

fn append_all(store: &EventStore, streams: impl Iterator<Item = usize>) -> TestResult {
    for stream in streams {
        for n in 0..EVENTS_PER_STREAM {
            store.append(&name(stream), ExpectedVersion::Any, &[event(stream, n)])?;
        }
    }
    Ok(())
}

/// Writes 130 streams, then deletes all but ten: soft deletes, tombstones, and retention
/// that hides every event but the last of a few. Returns what the store shows.
fn mostly_deleted(store: &EventStore) -> TestResult<Vec<RecordedEvent>> {
    append_all(store, 0..STREAMS)?;
    for stream in (0..STREAMS).filter(|s| !is_live(*s)) {
        match stream % 3 {
            0 => store.delete_stream(&name(stream), ExpectedVersion::Any)?,
            1 => store.tombstone_stream(&name(stream), ExpectedVersion::Any)?,
            _ => store.set_metadata(
                &name(stream),
                ExpectedVersion::Any,
                StreamMetadata {
                    max_count: Some(1),
                    ..StreamMetadata::default()
                },
            )?,
        }
    }
    Ok(read_all(store)?)
}

fn read_all(store: &EventStore) -> Result<Vec<RecordedEvent>, caskade_eventstore::Error> {
    store.read_all(ReadAll::forwards()).collect()
}

fn dir_size(dir: &Path) -> TestResult<u64> {
    let mut size = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            size += entry.metadata()?.len();
        }
    }
    Ok(size)
}

/// The size of a merged store holding the events `shown` holds, written the same way.
fn reference_size(shown: &[RecordedEvent]) -> TestResult<u64> {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    for event in shown {
        let data = EventData::json(&event.event_type, &event.json::<serde_json::Value>()?)?;
        store.append(&event.stream, ExpectedVersion::Any, &[data])?;
    }
    store.merge()?;
    store.close()?;
    dir_size(dir.path())
}

/// The data directory is at most this much over what the live events alone need: the heads
/// of the deleted streams, and the files' headers and hint files.
fn assert_shrunk_to_live(dir: &Path, shown: &[RecordedEvent]) -> TestResult {
    let size = dir_size(dir)?;
    let reference = reference_size(shown)?;
    let margin = reference / 10 + 32 * 1024;
    assert!(
        size <= reference + margin,
        "the data directory holds {size} bytes; the live events need {reference}"
    );
    Ok(())
}

#[test]
fn a_scavenge_gives_back_the_space_of_deleted_events() -> TestResult {
    let _serial = FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let shown = mostly_deleted(&store)?;
    let live_events = 10 * EVENTS_PER_STREAM as usize + (STREAMS - 10) / 3;
    assert!(shown.len() <= live_events + 1, "{}", shown.len());
    let before = dir_size(dir.path())?;
    // A merge alone keeps the deleted events: they are still the newest values of their
    // keys.
    store.merge()?;
    assert!(
        dir_size(dir.path())? * 10 > before * 9,
        "a merge alone reclaims little"
    );

    let mut updates: Vec<ScavengeProgress> = Vec::new();
    let report = store.scavenge_with_progress(|progress| updates.push(*progress))?;
    let deleted = STREAMS as u64 * EVENTS_PER_STREAM - shown.len() as u64;
    assert_eq!(report.events_removed, deleted);
    assert!(report.events_examined >= report.events_removed);
    assert!(
        report.bytes_reclaimed > before / 2,
        "{report:?}, {before} bytes before"
    );
    assert_eq!(read_all(&store)?, shown, "every live event intact");
    assert_shrunk_to_live(dir.path(), &shown)?;

    let last = updates.last().ok_or("progress was reported")?;
    assert_eq!(last.streams_examined, STREAMS as u64);
    assert_eq!(last.streams_total, STREAMS as u64);
    assert_eq!(last.events_removed, deleted);
    assert!(last.merge.is_some(), "the merge reports progress too");

    // Reopened, the store still shows the same, and a second scavenge finds nothing.
    store.close()?;
    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(read_all(&store)?, shown);
    assert_eq!(store.scavenge()?.events_removed, 0);
    for stream in (0..STREAMS).filter(|s| is_live(*s)) {
        let events = store.read_stream_to_vec(&name(stream))?;
        let versions: Vec<u64> = events.iter().map(|e| e.version.0).collect();
        assert_eq!(versions, (0..EVENTS_PER_STREAM).collect::<Vec<_>>());
    }
    Ok(())
}

/// Interrupts a scavenge before each of its delete batches in turn, and at each step of its
/// merge; reopens the store as a restart would and checks it shows exactly what it showed,
/// then lets a scavenge finish and checks the disk is given back.
#[test]
fn a_scavenge_interrupted_at_any_step_leaves_a_correct_store() -> TestResult {
    let _serial = FailScenario::setup();
    let mut batches = 0;
    while interrupt_and_recover("scavenge::before_batch", &format!("{batches}*off->return"))? {
        batches += 1;
    }
    assert!(batches >= 3, "the deletes take several batches: {batches}");
    for point in [
        "merge::after_seal",
        "merge::after_output_renamed",
        "merge::after_input_removed",
    ] {
        assert!(
            interrupt_and_recover(point, "return")?,
            "{point} is reached"
        );
    }
    Ok(())
}

/// Scavenges a mostly deleted store with `point` set to `action`; if that interrupted the
/// scavenge (returning `true`), reopens the store, checks it, and finishes the scavenge.
fn interrupt_and_recover(point: &str, action: &str) -> TestResult<bool> {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let shown = mostly_deleted(&store)?;
    fail::cfg(point, action)?;
    let interrupted = store.scavenge().is_err();
    fail::remove(point);
    if !interrupted {
        return Ok(false);
    }
    drop(store);

    let store = EventStore::open(dir.path(), options())?;
    assert_eq!(
        read_all(&store)?,
        shown,
        "{point} {action}: reads unchanged"
    );
    for stream in (0..STREAMS).filter(|s| !is_live(*s) && s % 3 == 1) {
        assert!(
            store.read_stream_to_vec(&name(stream)).is_err(),
            "{point} {action}: a tombstoned stream stays tombstoned"
        );
    }
    store.scavenge()?;
    assert_eq!(
        read_all(&store)?,
        shown,
        "{point} {action}: after finishing"
    );
    assert_shrunk_to_live(dir.path(), &shown)?;
    // Appends go on where the streams left off.
    let next = store.append(&name(0), ExpectedVersion::Any, &[event(0, 99)])?;
    assert_eq!(next.next_expected_version, StreamVersion(EVENTS_PER_STREAM));
    Ok(true)
}
