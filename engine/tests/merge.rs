//! Merge: what it drops and keeps, merging under concurrent writers, crashing at every step,
//! automatic merges and progress.
//!
//! The `fail` registry is global to the process, so a fail point configured by one test
//! would fire in any other test's merge. Every test here therefore holds a
//! [`FailScenario`], whose lock runs them one at a time.

use std::fs;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::{Model, contents};

use caskade_engine::{
    Bitcask, Error, MergeProgress, MergeTrigger, Options, Result, Stats, SyncPolicy, WriteBatch,
    check,
};
use fail::FailScenario;

const SMALL_FILE: u64 = 1024;
const RECORD_HEADER_LEN: u64 = 19;
const FILE_HEADER_LEN: u64 = 16;

fn open(dir: &Path) -> Result<Bitcask> {
    Bitcask::open(
        dir,
        Options {
            max_file_size: SMALL_FILE,
            auto_merge: None,
            ..Options::default()
        },
    )
}

/// Asserts the store holds exactly `model`, and that none of `deleted` is readable.
fn assert_holds(store: &Bitcask, model: &Model, deleted: &[Vec<u8>], when: &str) -> Result<()> {
    assert_eq!(contents(store)?, *model, "{when}");
    for key in deleted {
        assert_eq!(
            store.get(key)?,
            None,
            "{when}: deleted key {key:?} came back"
        );
        assert!(
            !store.contains(key)?,
            "{when}: deleted key {key:?} came back"
        );
    }
    Ok(())
}

/// The ids of the data files in `dir`, oldest first.
fn data_ids(dir: &Path) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".data"))
            .and_then(|stem| stem.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Bytes the records of `model` take on disk.
fn live_record_bytes(model: &Model) -> u64 {
    model
        .iter()
        .map(|(k, v)| RECORD_HEADER_LEN + (k.len() + v.len()) as u64)
        .sum()
}

/// Writes overwritten values, tombstones (some of keys deleted for good), batches and keys
/// that live and die inside one file, across many small files. Returns what the store holds
/// and the keys deleted.
fn churn(store: &Bitcask) -> Result<(Model, Vec<Vec<u8>>)> {
    let mut model = Model::new();
    for round in 0..3 {
        for k in 0..20 {
            let key = format!("key-{k:02}").into_bytes();
            let value =
                format!("round-{round}-{k}-{}", "v".repeat(k * 2 + round * 30)).into_bytes();
            store.put(&key, &value)?;
            model.insert(key, value);
        }
        let ephemeral = format!("ephemeral-{round}").into_bytes();
        store.put(&ephemeral, b"short-lived")?;
        store.delete(&ephemeral)?;
    }
    let mut deleted: Vec<Vec<u8>> = (0..4)
        .map(|r| format!("ephemeral-{r}").into_bytes())
        .collect();
    for k in (0..20).step_by(4) {
        let key = format!("key-{k:02}").into_bytes();
        store.delete(&key)?;
        model.remove(&key);
        deleted.push(key);
    }
    let mut batch = WriteBatch::new();
    batch
        .put(b"key-01", b"batched")
        .delete(b"key-02")
        .put(b"batch-only", b"from a batch");
    store.write(batch)?;
    model.insert(b"key-01".to_vec(), b"batched".to_vec());
    model.remove(&b"key-02"[..]);
    model.insert(b"batch-only".to_vec(), b"from a batch".to_vec());
    deleted.push(b"key-02".to_vec());
    Ok((model, deleted))
}

fn sealed_dead_bytes(stats: &Stats) -> u64 {
    stats
        .files
        .iter()
        .filter(|f| !f.active)
        .map(|f| f.dead_bytes)
        .sum()
}

#[test]
fn merge_drops_dead_records_and_keeps_every_live_value() -> Result<()> {
    let _serial = FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let (model, deleted) = churn(&store)?;
    let before = store.stats();
    let inputs = data_ids(dir.path())?;
    assert!(inputs.len() >= 4, "the churn rotates files: {inputs:?}");
    assert!(
        before.dead_bytes() > before.live_bytes(),
        "the churn leaves dead data"
    );

    let report = store.merge()?;
    let after = store.stats();
    assert_eq!(report.input_files, inputs.len());
    assert_eq!(report.records_copied, model.len() as u64);
    assert_eq!(report.bytes_read, before.total_bytes());
    assert!(
        after.total_bytes() < before.total_bytes() / 2,
        "{} bytes before, {} after",
        before.total_bytes(),
        after.total_bytes()
    );
    assert_eq!(after.dead_bytes(), 0, "{after:?}");
    assert_eq!(after.live_bytes(), live_record_bytes(&model), "{after:?}");
    for file in after.files.iter().filter(|f| !f.active) {
        assert!(
            file.has_hint,
            "merge output {} has a hint file",
            file.file_id
        );
        assert_eq!(file.live_bytes + FILE_HEADER_LEN, file.len, "{file:?}");
    }
    let outputs = data_ids(dir.path())?;
    assert!(
        outputs.iter().all(|id| !inputs.contains(id)),
        "inputs {inputs:?} are gone, outputs {outputs:?}"
    );
    assert_holds(&store, &model, &deleted, "after merge")?;
    store.close()?;

    assert!(check(dir.path())?.is_ok());
    let store = open(dir.path())?;
    assert_holds(&store, &model, &deleted, "after merge and reopen")?;
    let recovery = store.recovery_report();
    assert_eq!(recovery.hint_files_used, outputs.len() - 1);
    assert_eq!(recovery.data_files_scanned, 0);
    let reopened = store.stats();
    assert_eq!(reopened.dead_bytes(), 0, "{reopened:?}");
    assert_eq!(reopened.live_bytes(), live_record_bytes(&model));
    assert_eq!(reopened.total_bytes(), after.total_bytes());
    store.close()?;
    Ok(())
}

/// A tiny deterministic random number generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Puts, deletes and gets on keys only this writer touches, checking every get against what
/// it last wrote. Returns the final state of its keys.
fn own_keys_writer(store: &Bitcask, writer: u64, ops: usize) -> Result<Model> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (writer + 1));
    let mut mine = Model::new();
    for op in 0..ops {
        let key = format!("w{writer}-key-{}", rng.below(12)).into_bytes();
        match rng.below(10) {
            0..=5 => {
                let value = format!("w{writer}-op{op}-{}", "x".repeat(op % 40)).into_bytes();
                store.put(&key, &value)?;
                mine.insert(key.clone(), value);
            }
            6 | 7 => {
                store.delete(&key)?;
                mine.remove(&key);
            }
            _ => {
                let mut batch = WriteBatch::new();
                let other = format!("w{writer}-key-{}", rng.below(12)).into_bytes();
                let value = format!("w{writer}-batch{op}").into_bytes();
                batch.put(key.clone(), value.clone()).delete(other.clone());
                store.write(batch)?;
                mine.insert(key.clone(), value);
                mine.remove(&other);
            }
        }
        assert_eq!(
            store.get(&key)?,
            mine.get(&key).cloned(),
            "writer {writer} op {op}"
        );
    }
    Ok(mine)
}

#[test]
fn merge_while_writers_run_keeps_each_writers_last_write() -> Result<()> {
    const WRITERS: u64 = 3;
    const OPS: usize = 300;
    const MAX_MERGES: usize = 100;
    let _serial = FailScenario::setup();
    for sync in [SyncPolicy::Always, SyncPolicy::Never] {
        let dir = tempfile::tempdir()?;
        let store = Bitcask::open(
            dir.path(),
            Options {
                max_file_size: SMALL_FILE,
                auto_merge: None,
                sync,
                write_buffer_size: 256,
                ..Options::default()
            },
        )?;
        let start = Barrier::new(WRITERS as usize + 1);
        let finished = AtomicUsize::new(0);
        let (expected, merges) = std::thread::scope(|scope| -> Result<(Model, usize)> {
            let handles: Vec<_> = (0..WRITERS)
                .map(|writer| {
                    let (store, start, finished) = (&store, &start, &finished);
                    scope.spawn(move || {
                        start.wait();
                        let mine = own_keys_writer(store, writer, OPS);
                        finished.fetch_add(1, Ordering::Release);
                        mine
                    })
                })
                .collect();
            start.wait();
            let mut merges = 0;
            while merges < MAX_MERGES && finished.load(Ordering::Acquire) < WRITERS as usize {
                store.merge()?;
                merges += 1;
            }
            let mut expected = Model::new();
            for handle in handles {
                expected.extend(handle.join().expect("writer threads do not panic")?);
            }
            Ok((expected, merges))
        })?;
        assert!(
            merges > 0,
            "{sync:?}: at least one merge ran alongside the writers"
        );
        assert_holds(
            &store,
            &expected,
            &[],
            &format!("{sync:?}: after the writers"),
        )?;
        store.merge()?;
        assert_holds(
            &store,
            &expected,
            &[],
            &format!("{sync:?}: after a last merge"),
        )?;
        store.close()?;
        assert!(check(dir.path())?.is_ok(), "{sync:?}");
        let store = open(dir.path())?;
        assert_holds(&store, &expected, &[], &format!("{sync:?}: after reopen"))?;
        store.close()?;
    }
    Ok(())
}

const FAIL_POINTS: [&str; 3] = [
    "merge::after_seal",
    "merge::after_output_renamed",
    "merge::after_input_removed",
];

/// Actions that make a fail point fire (return an error) on its `occurrence`-th hit only.
fn fire_on(occurrence: usize) -> String {
    if occurrence == 1 {
        "1*return".to_owned()
    } else {
        format!("{}*off->1*return", occurrence - 1)
    }
}

/// A store of many small files for a merge to crash in; returns its state and deleted keys.
fn store_to_crash(dir: &Path) -> Result<(Bitcask, Model, Vec<Vec<u8>>)> {
    // No sync per write, to keep the many stores cheap: the crash is simulated in-process,
    // and the merge syncs everything it reads before it starts.
    let store = Bitcask::open(
        dir,
        Options {
            max_file_size: SMALL_FILE,
            auto_merge: None,
            sync: SyncPolicy::Never,
            ..Options::default()
        },
    )?;
    let (model, deleted) = churn(&store)?;
    Ok((store, model, deleted))
}

/// After a simulated crash: the directory checks clean, reopens with every key at its latest
/// value and nothing deleted, and a second merge completes.
fn recover_from_crash(dir: &Path, model: &Model, deleted: &[Vec<u8>], when: &str) -> Result<()> {
    let report = check(dir)?;
    assert!(report.is_ok(), "{when}: {:?}", report.problems);
    let store = open(dir)?;
    assert_holds(&store, model, deleted, &format!("{when}: reopened"))?;
    store.merge()?;
    assert_holds(&store, model, deleted, &format!("{when}: merged again"))?;
    store.close()?;
    let report = check(dir)?;
    assert!(report.is_ok(), "{when}: {:?}", report.problems);
    let store = open(dir)?;
    assert_holds(&store, model, deleted, &format!("{when}: reopened again"))?;
    store.close()?;
    Ok(())
}

#[test]
fn a_crash_at_any_step_of_a_merge_loses_and_resurrects_nothing() -> Result<()> {
    let _serial = FailScenario::setup();
    for point in FAIL_POINTS {
        let mut crashes = 0;
        for occurrence in 1..=64 {
            let dir = tempfile::tempdir()?;
            let (store, model, deleted) = store_to_crash(dir.path())?;
            let inputs = data_ids(dir.path())?.len();
            fail::cfg(point, &fire_on(occurrence)).expect("valid fail point actions");
            let merged = store.merge();
            fail::remove(point);
            let when = format!("crash at {point} #{occurrence}");
            match merged {
                Err(Error::Io(_)) => crashes += 1,
                Err(other) => panic!("{when}: merge failed with {other:?}"),
                Ok(report) => {
                    // Fewer hits than `occurrence`: every step has been crashed at.
                    let steps = match point {
                        "merge::after_seal" => 1,
                        "merge::after_output_renamed" => report.output_files,
                        _ => report.input_files,
                    };
                    assert_eq!(crashes, steps, "{when}: one crash per step");
                    assert_eq!(report.input_files, inputs);
                    break;
                }
            }
            assert_holds(
                &store,
                &model,
                &deleted,
                &format!("{when}: before the drop"),
            )?;
            // The crash: no close, no hint files written, nothing cleaned up.
            drop(store);
            recover_from_crash(dir.path(), &model, &deleted, &when)?;
        }
        assert!(
            crashes >= 2 || point == FAIL_POINTS[0],
            "{point}: {crashes} crashes"
        );
    }
    Ok(())
}

/// A merge that failed part-way, then a retry on the same open handle (as the automatic merge
/// does on its next tick) after the keys were deleted: the retry must not leave behind files
/// that bring them back at the next open.
#[test]
fn a_merge_retried_after_a_failure_does_not_resurrect_deleted_keys() -> Result<()> {
    let _serial = FailScenario::setup();
    let mut resurrected = Vec::new();
    for point in &FAIL_POINTS[1..] {
        let dir = tempfile::tempdir()?;
        let store = open(dir.path())?;
        // Two values too big to share a file: two inputs, two outputs.
        store.put(b"a", &[b'a'; 600])?;
        store.put(b"b", &[b'b'; 600])?;
        fail::cfg(*point, "1*return").expect("valid fail point actions");
        let failed = store.merge();
        fail::remove(point);
        assert!(failed.is_err(), "{point}: the fail point fires");

        store.delete(b"a")?;
        store.delete(b"b")?;
        store.merge()?;
        assert!(store.is_empty(), "{point}: retried");
        store.close()?;

        let store = open(dir.path())?;
        let back: Vec<Vec<u8>> = store.keys().collect();
        if !back.is_empty() {
            resurrected.push(format!(
                "{point}: {:?} back, files left {:?}",
                back.iter()
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>(),
                data_ids(dir.path())?
            ));
        }
        store.close()?;
    }
    assert!(
        resurrected.is_empty(),
        "deleted keys back after reopen: {resurrected:?}"
    );
    Ok(())
}

/// Overwrites a few keys many times over; returns what they hold at the end.
fn overwrite(store: &Bitcask, rounds: usize) -> Result<Model> {
    let mut model = Model::new();
    for round in 0..rounds {
        for k in 0..8 {
            let key = format!("key-{k}").into_bytes();
            let value = format!("round-{round}-{}", "o".repeat(40)).into_bytes();
            store.put(&key, &value)?;
            model.insert(key, value);
        }
    }
    Ok(model)
}

#[test]
fn auto_merge_reclaims_dead_data_by_itself() -> Result<()> {
    let _serial = FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let open_auto = || {
        Bitcask::open(
            dir.path(),
            Options {
                max_file_size: SMALL_FILE,
                auto_merge: Some(MergeTrigger {
                    min_dead_ratio: 0.3,
                    min_dead_bytes: 1,
                }),
                maintenance_interval: Duration::from_millis(10),
                ..Options::default()
            },
        )
    };
    let store = open_auto()?;
    let model = overwrite(&store, 40)?;
    let written: u64 = 40 * 8 * 68;
    // Bounded by count, not by a deadline: how soon the merge runs does not matter.
    let mut merged = None;
    for _ in 0..2_000 {
        let stats = store.stats();
        let sealed_total: u64 = stats
            .files
            .iter()
            .filter(|f| !f.active)
            .map(|f| f.len)
            .sum();
        let first_gone = stats.files.iter().all(|f| f.file_id.0 != 1);
        if first_gone && sealed_dead_bytes(&stats) * 10 < sealed_total * 3 {
            merged = Some(stats);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = merged.expect("an automatic merge ran and left less than 30% dead data");
    assert!(stats.total_bytes() < written / 2, "{stats:?}");
    assert_holds(&store, &model, &[], "after an automatic merge")?;
    store.close()?;
    assert!(check(dir.path())?.is_ok());
    let store = open_auto()?;
    assert_holds(&store, &model, &[], "after reopen")?;
    store.close()?;
    Ok(())
}

#[test]
fn without_auto_merge_files_are_never_merged() -> Result<()> {
    let _serial = FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(
        dir.path(),
        Options {
            max_file_size: SMALL_FILE,
            auto_merge: None,
            maintenance_interval: Duration::from_millis(1),
            ..Options::default()
        },
    )?;
    let model = overwrite(&store, 40)?;
    let ids: Vec<u32> = store.stats().files.iter().map(|f| f.file_id.0).collect();
    assert!(ids.len() > 10, "the overwrites rotate files: {ids:?}");
    assert_eq!(ids, (1..=ids.len() as u32).collect::<Vec<_>>());
    // Give the maintenance thread its chances: every rotation and tick wakes it.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        store.put(b"tick", b"tock")?;
    }
    store.close()?;
    assert_eq!(data_ids(dir.path())?, ids, "no file was merged away");
    let store = open(dir.path())?;
    let mut model = model;
    model.insert(b"tick".to_vec(), b"tock".to_vec());
    assert_holds(&store, &model, &[], "after reopen")?;
    assert!(store.stats().dead_bytes() > store.stats().live_bytes());
    store.close()?;
    Ok(())
}

#[test]
fn merge_progress_rises_to_the_total() -> Result<()> {
    let _serial = FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let (model, deleted) = churn(&store)?;
    let total = store.stats().total_bytes();
    let mut seen: Vec<MergeProgress> = Vec::new();
    let report = store.merge_with_progress(|progress| seen.push(progress))?;
    assert_eq!(seen.len(), report.input_files, "one report per input file");
    assert!(seen.len() > 1);
    for pair in seen.windows(2) {
        assert!(pair[0].bytes_read < pair[1].bytes_read, "{seen:?}");
    }
    assert!(seen.iter().all(|p| p.bytes_total == total), "{seen:?}");
    let last = seen.last().expect("progress was reported");
    assert_eq!(last.bytes_read, last.bytes_total);
    assert_eq!(report.bytes_read, total);
    assert_holds(&store, &model, &deleted, "after merge")?;
    store.close()?;
    Ok(())
}
