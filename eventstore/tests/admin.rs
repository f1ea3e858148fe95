//! The maintenance calls the server's `Admin` service makes: stats, merge (with its progress)
//! and backup, on real stores in temporary directories, checked against what reads show.

use caskade_engine::SyncPolicy;
use caskade_eventstore::{
    Error, EventData, EventStore, ExpectedVersion, MergeProgress, Position, ReadAll, RecordedEvent,
    StreamInfo, StreamVersion,
};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// No syncing, no automatic merges (each test merges when it means to), and small data
/// files, so that most records sit in sealed files a merge rewrites.
fn options() -> caskade_eventstore::Options {
    let engine = caskade_engine::Options {
        sync: SyncPolicy::Never,
        auto_merge: None,
        max_file_size: 16 << 10,
        ..caskade_engine::Options::default()
    };
    caskade_eventstore::Options {
        engine,
        ..caskade_eventstore::Options::default()
    }
}

fn event(n: u64) -> EventData {
    EventData::json("Tested", &json!({ "n": n, "pad": "x".repeat(100) }))
        .expect("a json! value serializes")
}

/// Appends `count` events to `stream`, one append each, so that each rewrites its head.
fn append_n(store: &EventStore, stream: &str, count: u64) -> Result<(), Error> {
    for n in 0..count {
        store.append(stream, ExpectedVersion::Any, &[event(n)])?;
    }
    Ok(())
}

/// What a reader sees: every stream and all of `$all`.
fn visible(store: &EventStore) -> Result<(Vec<StreamInfo>, Vec<RecordedEvent>), Error> {
    let all = store
        .read_all(ReadAll::forwards())
        .collect::<Result<_, _>>()?;
    Ok((store.list_streams()?, all))
}

#[test]
fn stats_count_every_stream_with_a_head_and_the_committed_position() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    let empty = store.stats()?;
    assert_eq!(empty.streams, 0);
    assert_eq!(empty.committed_position, Position(0));
    assert_eq!(empty.engine.live_keys, 0);

    append_n(&store, "live", 3)?;
    append_n(&store, "deleted", 2)?;
    append_n(&store, "tombstoned", 1)?;
    store.delete_stream("deleted", ExpectedVersion::Exact(StreamVersion(1)))?;
    store.tombstone_stream("tombstoned", ExpectedVersion::Any)?;
    // A key of the key-value space is no stream.
    store.kv().put(b"k", b"v")?;

    let stats = store.stats()?;
    assert_eq!(stats.streams, 3);
    assert_eq!(stats.committed_position, Position(6));
    assert_eq!(stats.committed_position, store.committed_position());
    assert!(stats.engine.live_keys > 6, "{stats:?}");
    assert!(!stats.engine.files.is_empty(), "{stats:?}");
    store.close()?;

    // Hint files and the keydir's tables may differ after a reopen; the counts may not.
    let reopened = EventStore::open(dir.path(), options())?;
    let again = reopened.stats()?;
    assert_eq!(again.streams, stats.streams);
    assert_eq!(again.committed_position, stats.committed_position);
    assert_eq!(again.engine.live_keys, stats.engine.live_keys);
    reopened.close()?;
    Ok(())
}

#[test]
fn merge_reclaims_overwritten_heads_and_keeps_what_readers_see() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "a", 200)?;
    append_n(&store, "b", 100)?;
    let seen = visible(&store)?;
    let before = store.stats()?.engine;
    assert!(before.dead_bytes() > 0, "each append overwrote its head");

    let mut progress: Vec<MergeProgress> = Vec::new();
    let report = store.merge_with_progress(|p| progress.push(p))?;
    assert!(report.input_files > 1, "{report:?}");
    assert!(report.bytes_written < report.bytes_read, "{report:?}");
    let last = progress
        .last()
        .ok_or("a merge of sealed files reports progress")?;
    assert_eq!(last.bytes_read, report.bytes_read);
    assert_eq!(last.bytes_total, report.bytes_read);
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].bytes_read <= w[1].bytes_read),
        "{progress:?}"
    );
    let after = store.stats()?.engine;
    assert!(
        after.dead_bytes() < before.dead_bytes(),
        "dead bytes {} -> {}",
        before.dead_bytes(),
        after.dead_bytes()
    );
    assert_eq!(after.live_keys, before.live_keys);
    assert_eq!(visible(&store)?, seen);

    // A second merge has only what the first one wrote to rewrite; nothing is lost.
    store.merge()?;
    assert_eq!(visible(&store)?, seen);
    store.close()?;
    let reopened = EventStore::open(dir.path(), options())?;
    assert_eq!(visible(&reopened)?, seen);
    reopened.close()?;
    Ok(())
}

#[test]
fn backup_copies_every_acknowledged_append_and_refuses_a_destination_in_use() -> TestResult {
    let dir = tempfile::tempdir()?;
    let backups = tempfile::tempdir()?;
    let dest = backups.path().join("copy");
    let store = EventStore::open(dir.path(), options())?;
    append_n(&store, "a", 150)?;
    store.append("b", ExpectedVersion::NoStream, &[event(0), event(1)])?;
    store.delete_stream("b", ExpectedVersion::Any)?;
    store.kv().put(b"k", b"v")?;
    let seen = visible(&store)?;

    let report = store.backup(&dest)?;
    assert!(report.data_files > 1, "{report:?}");
    assert!(report.bytes > 0, "{report:?}");
    let again = store.backup(&dest);
    assert!(
        matches!(again, Err(Error::BackupDestinationNotEmpty { .. })),
        "{again:?}"
    );
    // The store goes on after its backups, and the copy does not see what came later.
    append_n(&store, "c", 1)?;
    store.close()?;

    let copy = EventStore::open(&dest, options())?;
    assert_eq!(visible(&copy)?, seen);
    assert_eq!(copy.kv().get(b"k")?, Some(b"v".to_vec()));
    assert_eq!(copy.committed_position(), Position(152));
    copy.close()?;
    Ok(())
}
