//! Hot backup: the copy holds every acknowledged write, is a consistent cut, passes `check`,
//! opens as a store of its own, and leaves the original alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

mod common;
use common::contents;

use caskade_engine::{Bitcask, Options, Result, SyncPolicy, WriteBatch, check};

/// Every file in `dir`, by name, with its bytes.
fn files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        files.insert(
            entry.file_name().to_string_lossy().into_owned(),
            fs::read(entry.path())?,
        );
    }
    Ok(files)
}

fn assert_checks_clean(dir: &Path) -> Result<caskade_engine::CheckReport> {
    let report = check(dir)?;
    assert!(
        report.is_ok(),
        "check {}: {:?}",
        dir.display(),
        report.problems
    );
    Ok(report)
}

const OPS: usize = 600;
const KEYS: usize = 150;
/// Writer 0 announces this many acknowledged writes, and the backup starts then.
const BACKUP_AFTER: usize = 200;

/// The `op`-th write of the writer thread: mostly overwrites of a small key space, every
/// seventh a delete.
fn apply_op(op: usize, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = format!("key-{:03}", op % KEYS).into_bytes();
    let value = (op % 7 != 6).then(|| format!("written by op {op:04} {}", "-".repeat(op % 50)));
    match &value {
        Some(value) => model.insert(key.clone(), value.clone().into_bytes()),
        None => model.remove(&key),
    };
    (key, value.map(String::into_bytes))
}

/// What the store holds after the first `ops` writes.
fn model_after(ops: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for op in 0..ops {
        apply_op(op, &mut model);
    }
    model
}

fn backup_while_writing(sync: SyncPolicy) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = tempfile::tempdir()?;
    let copy_dir = dest.path().join("copy");
    let open = |dir: &Path| {
        Bitcask::open(
            dir,
            Options {
                max_file_size: 4096,
                sync,
                auto_merge: None,
                ..Options::default()
            },
        )
    };
    let store = open(dir.path())?;
    let acknowledged = AtomicUsize::new(0);
    let (reached_tx, reached_rx) = mpsc::channel();

    let acknowledged_before_backup = thread::scope(|scope| -> Result<usize> {
        let writer = scope.spawn(|| -> Result<()> {
            let mut model = BTreeMap::new();
            for op in 0..OPS {
                match apply_op(op, &mut model) {
                    (key, Some(value)) if op % 11 == 10 => {
                        // Some writes go through a one-op batch.
                        let mut batch = WriteBatch::new();
                        batch.put(key, value);
                        store.write(batch)?;
                    }
                    (key, Some(value)) => store.put(&key, &value)?,
                    (key, None) => store.delete(&key)?,
                }
                acknowledged.store(op + 1, Ordering::Release);
                if op + 1 == BACKUP_AFTER {
                    reached_tx.send(()).expect("the main thread waits for this");
                }
            }
            Ok(())
        });
        reached_rx
            .recv()
            .expect("the writer reaches the backup point");
        let acknowledged_before_backup = acknowledged.load(Ordering::Acquire);
        let report = store.backup(&copy_dir)?;
        assert!(report.data_files >= 1);
        writer.join().expect("the writer does not panic")?;
        Ok(acknowledged_before_backup)
    })?;
    assert!(acknowledged_before_backup >= BACKUP_AFTER);

    // The copy is a consistent cut: exactly the first `n` writes, for an `n` no smaller than
    // the count acknowledged when backup() was called.
    assert!(
        !copy_dir.join("LOCK").exists(),
        "the lock file is not copied"
    );
    let report = assert_checks_clean(&copy_dir)?;
    assert!(report.records >= acknowledged_before_backup as u64);
    let copy = Bitcask::open(&copy_dir, Options::default())?;
    assert_eq!(copy.recovery_report().torn_tail, None);
    let copied = contents(&copy)?;
    let cut = (acknowledged_before_backup..=OPS).find(|&ops| model_after(ops) == copied);
    assert!(
        cut.is_some(),
        "the copy is no prefix of the writes from {acknowledged_before_backup} on: {copied:?}"
    );
    copy.close()?;

    // The original has every write and is healthy.
    assert_eq!(contents(&store)?, model_after(OPS));
    store.close()?;
    assert_checks_clean(dir.path())?;
    let store = open(dir.path())?;
    assert_eq!(contents(&store)?, model_after(OPS));
    store.close()
}

#[test]
fn backup_during_writes_holds_every_write_acknowledged_before_it_under_sync_always() -> Result<()> {
    backup_while_writing(SyncPolicy::Always)
}

#[test]
fn backup_during_buffered_writes_holds_every_write_acknowledged_before_it_under_sync_never()
-> Result<()> {
    backup_while_writing(SyncPolicy::Never)
}

#[test]
fn backup_copies_every_rotated_data_file_and_hint_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = tempfile::tempdir()?;
    let copy_dir = dest.path().join("copy");
    let open = || {
        Bitcask::open(
            dir.path(),
            Options {
                max_file_size: 1024,
                auto_merge: None,
                ..Options::default()
            },
        )
    };
    let store = open()?;
    for i in 0..300u32 {
        store.put(
            format!("key-{i:03}").as_bytes(),
            format!("value {i} {}", "=".repeat(30)).as_bytes(),
        )?;
    }
    for i in (0..300u32).step_by(4) {
        store.delete(format!("key-{i:03}").as_bytes())?;
    }
    store.close()?;
    // Closing wrote a hint file for every sealed file; the reopened store loads them.
    let store = open()?;
    let sealed = store.stats().files.len() - 1;
    assert!(sealed >= 10, "many rotated files: {sealed}");
    assert_eq!(store.recovery_report().hint_files_used, sealed);
    let stats = store.stats();
    let before = files(dir.path())?;

    let report = store.backup(&copy_dir)?;
    assert_eq!(report.data_files, stats.files.len());
    assert_eq!(report.hint_files, sealed);
    let copied = files(&copy_dir)?;
    let copied_bytes: usize = copied.values().map(Vec::len).sum();
    assert_eq!(report.bytes, copied_bytes as u64);
    // Byte for byte the same files, less the lock file and nothing more.
    let mut expected = before.clone();
    expected.remove("LOCK");
    assert_eq!(copied, expected);
    assert_eq!(files(dir.path())?, before, "the original is untouched");
    let after = store.stats();
    assert_eq!(after.files, stats.files);
    assert_eq!(after.live_keys, stats.live_keys);

    let report = assert_checks_clean(&copy_dir)?;
    assert_eq!(report.data_files, stats.files.len());
    assert_eq!(report.hint_files, sealed);
    let copy = Bitcask::open(
        &copy_dir,
        Options {
            max_file_size: 1024,
            ..Options::default()
        },
    )?;
    assert_eq!(copy.recovery_report().hint_files_used, sealed);
    assert_eq!(copy.recovery_report().data_files_scanned, 0);
    assert_eq!(contents(&copy)?, contents(&store)?);
    assert_eq!(copy.len(), 225);
    copy.close()?;
    store.close()
}

#[test]
fn backup_right_after_a_merge_holds_the_merged_store() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dest = tempfile::tempdir()?;
    let copy_dir = dest.path().join("copy");
    let store = Bitcask::open(
        dir.path(),
        Options {
            max_file_size: 2048,
            auto_merge: None,
            ..Options::default()
        },
    )?;
    for round in 0..4u32 {
        for i in 0..100u32 {
            let value = format!("round {round} value {i} {}", "+".repeat(20));
            store.put(format!("key-{i:03}").as_bytes(), value.as_bytes())?;
        }
    }
    let mut batch = WriteBatch::new();
    for i in 0..10u32 {
        batch.delete(format!("key-{i:03}"));
    }
    store.write(batch)?;
    let merge = store.merge()?;
    assert!(merge.output_files >= 1);
    let expected = contents(&store)?;
    assert_eq!(expected.len(), 90);

    let report = store.backup(&copy_dir)?;
    assert_eq!(
        report.hint_files, merge.output_files,
        "merge outputs have hint files"
    );
    assert_eq!(report.data_files, store.stats().files.len());
    // Writes after the backup stay out of the copy.
    store.put(b"key-000", b"after the backup")?;

    let check_report = assert_checks_clean(&copy_dir)?;
    assert_eq!(
        check_report.records, 90,
        "only live records survive the merge"
    );
    let copy = Bitcask::open(
        &copy_dir,
        Options {
            max_file_size: 2048,
            ..Options::default()
        },
    )?;
    assert_eq!(copy.recovery_report().hint_files_used, merge.output_files);
    assert_eq!(contents(&copy)?, expected);
    assert_eq!(
        copy.stats().dead_bytes(),
        0,
        "a merged store has no dead bytes"
    );
    copy.close()?;

    assert_eq!(store.get(b"key-000")?, Some(b"after the backup".to_vec()));
    store.close()?;
    assert_checks_clean(dir.path())?;
    Ok(())
}
