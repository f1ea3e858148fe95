//! Model test: random sequences of puts, deletes, batches, merges and reopens, checked after
//! every step against a `BTreeMap` that says what the store must hold.
//!
//! The key space is small so keys are overwritten, deleted and re-put, and batches repeat
//! keys; files are small so they rotate, batches outgrow them, and merges have many inputs.
//! Each sync policy gets its own test. Failures proptest finds are kept below as named
//! regression tests.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::time::Duration;

use caskade_engine::{Bitcask, Options, SyncPolicy, WriteBatch, check};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Keys the operations touch: `key-00` ..= `key-19`.
const KEY_SPACE: u8 = 20;
/// Keys `key-20` ..= `key-23` are never written; reading them must always find nothing.
const PROBE_KEYS: u8 = 4;
/// Cases per sync policy; enough to reach merges of many files, few enough for debug builds.
const CASES: u32 = 64;

/// One operation of a [`WriteBatch`], over an index into the key space.
#[derive(Debug, Clone)]
enum BatchOp {
    Put(u8, Vec<u8>),
    Delete(u8),
}

/// One step the model test takes.
#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Write(Vec<BatchOp>),
    Merge,
    /// `close()`, then open again.
    Reopen,
    /// Drop the only handle without closing it (which closes the store), then open again.
    DropAndReopen,
    Get(u8),
}

/// The options a case runs with, besides its sync policy.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_file_size: u64,
    write_buffer_size: usize,
}

/// Limits for the regression tests: 1 KiB files, the default write buffer.
const SMALL_FILES: Limits = Limits {
    max_file_size: 1024,
    write_buffer_size: 1 << 20,
};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(index: u8) -> Vec<u8> {
    format!("key-{index:02}").into_bytes()
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    // A value is a length and a seed, so shrinking shortens it rather than zeroing bytes.
    // Mostly small values, sometimes ones that fill a good part of a 1 KiB file, and the
    // empty value, which must stay distinct from a delete.
    let len = prop_oneof![4 => 1usize..24, 2 => 100usize..600, 1 => Just(0usize)];
    (len, any::<u8>()).prop_map(|(len, seed)| {
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect()
    })
}

fn key_strategy() -> impl Strategy<Value = u8> {
    0..KEY_SPACE
}

fn batch_op_strategy() -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        3 => (key_strategy(), value_strategy()).prop_map(|(k, v)| BatchOp::Put(k, v)),
        1 => key_strategy().prop_map(BatchOp::Delete),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key_strategy(), value_strategy()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key_strategy().prop_map(Op::Delete),
        // Batches of up to 8 operations over a 20-key space repeat keys often.
        3 => prop::collection::vec(batch_op_strategy(), 1..8).prop_map(Op::Write),
        1 => Just(Op::Merge),
        1 => Just(Op::Reopen),
        1 => Just(Op::DropAndReopen),
        2 => key_strategy().prop_map(Op::Get),
    ]
}

fn case_strategy() -> impl Strategy<Value = (Limits, Vec<Op>)> {
    let limits = (
        prop_oneof![Just(1024u64), Just(4096u64)],
        // A tiny buffer hands every write to the OS at once; the default holds them.
        prop_oneof![Just(64usize), Just(1 << 20)],
    )
        .prop_map(|(max_file_size, write_buffer_size)| Limits {
            max_file_size,
            write_buffer_size,
        });
    (limits, prop::collection::vec(op_strategy(), 1..60))
}

fn open(dir: &Path, limits: Limits, sync: SyncPolicy) -> caskade_engine::Result<Store> {
    Bitcask::open(
        dir,
        Options {
            max_file_size: limits.max_file_size,
            write_buffer_size: limits.write_buffer_size,
            sync,
            auto_merge: None,
            ..Options::default()
        },
    )
    .map(|store| Store(Some(store)))
}

/// The store under test. If the test panics while it is open, the handle is leaked rather
/// than dropped: dropping it flushes again, and a second panic (or a wait on a sync that the
/// first panic abandoned) during unwinding would abort or hang the whole test binary, losing
/// proptest's shrinking and every other test's result.
struct Store(Option<Bitcask>);

impl Store {
    fn close(mut self) -> caskade_engine::Result<()> {
        self.0.take().expect("a store is closed once").close()
    }
}

impl std::ops::Deref for Store {
    type Target = Bitcask;

    fn deref(&self) -> &Bitcask {
        self.0
            .as_ref()
            .expect("a store is used only until it is closed")
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(store) = self.0.take()
        {
            std::mem::forget(store);
        }
    }
}

/// Checks every key of the key space and the probe keys against the model.
fn verify(store: &Bitcask, model: &Model, step: usize, op: &Op) -> caskade_engine::Result<()> {
    for index in 0..KEY_SPACE + PROBE_KEYS {
        let key = key(index);
        let expected = model.get(&key);
        assert_eq!(
            store.get(&key)?.as_ref(),
            expected,
            "get(key-{index:02}) after step {step}: {op:?}"
        );
        assert_eq!(
            store.contains(&key)?,
            expected.is_some(),
            "contains(key-{index:02}) after step {step}: {op:?}"
        );
    }
    Ok(())
}

/// Checks `len()` and `keys()` against the model.
fn verify_listing(store: &Bitcask, model: &Model, step: usize) {
    assert_eq!(store.len(), model.len(), "len() after step {step}");
    let mut keys: Vec<Vec<u8>> = store.keys().collect();
    keys.sort();
    let expected: Vec<Vec<u8>> = model.keys().cloned().collect();
    assert_eq!(keys, expected, "keys() after step {step}");
}

/// Runs `ops` on a fresh store and on the model, comparing them after every step, then once
/// more after a final reopen; the closed store must pass `check`.
fn run_model(sync: SyncPolicy, limits: Limits, ops: &[Op]) -> caskade_engine::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut store = open(dir.path(), limits, sync)?;
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, value) => {
                store.put(&key(*k), value)?;
                model.insert(key(*k), value.clone());
            }
            Op::Delete(k) => {
                store.delete(&key(*k))?;
                model.remove(&key(*k));
            }
            Op::Write(batch_ops) => {
                let mut batch = WriteBatch::new();
                for batch_op in batch_ops {
                    match batch_op {
                        BatchOp::Put(k, value) => {
                            batch.put(key(*k), value.clone());
                            model.insert(key(*k), value.clone());
                        }
                        BatchOp::Delete(k) => {
                            batch.delete(key(*k));
                            model.remove(&key(*k));
                        }
                    }
                }
                store.write(batch)?;
            }
            Op::Merge => {
                store.merge()?;
            }
            Op::Reopen => {
                store.close()?;
                store = open(dir.path(), limits, sync)?;
            }
            Op::DropAndReopen => {
                drop(store);
                store = open(dir.path(), limits, sync)?;
            }
            Op::Get(k) => {
                assert_eq!(store.get(&key(*k))?.as_ref(), model.get(&key(*k)));
            }
        }
        verify(&store, &model, step, op)?;
        verify_listing(&store, &model, step);
    }
    store.close()?;

    let report = check(dir.path())?;
    assert!(report.is_ok(), "check after close: {:?}", report.problems);
    let store = open(dir.path(), limits, sync)?;
    verify(&store, &model, ops.len(), &Op::Reopen)?;
    verify_listing(&store, &model, ops.len());
    store.close()
}

fn check_against_model(sync: SyncPolicy) -> Result<(), Box<dyn Error>> {
    let config = Config {
        cases: CASES,
        // Failures become named regression tests in this file, not files beside it.
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config).run(&case_strategy(), |(limits, ops)| {
        run_model(sync, limits, &ops).map_err(|e| TestCaseError::fail(e.to_string()))
    })?;
    Ok(())
}

#[test]
fn random_operations_match_the_model_under_sync_always() -> Result<(), Box<dyn Error>> {
    check_against_model(SyncPolicy::Always)
}

#[test]
fn random_operations_match_the_model_under_sync_never() -> Result<(), Box<dyn Error>> {
    check_against_model(SyncPolicy::Never)
}

#[test]
fn random_operations_match_the_model_under_sync_interval() -> Result<(), Box<dyn Error>> {
    // A short interval so the background sync interleaves with the operations.
    check_against_model(SyncPolicy::Interval(Duration::from_millis(2)))
}

// Regression tests: failures the model test found, shrunk by hand to their core.

const ALL_POLICIES: [SyncPolicy; 3] = [
    SyncPolicy::Always,
    SyncPolicy::Never,
    SyncPolicy::Interval(Duration::from_millis(2)),
];

/// Found by the model test: a record that does not fit in `max_file_size` after the file
/// header, written while the active file is still empty, must go to a file of its own (as
/// it does when the active file already holds records).
#[test]
fn a_value_larger_than_max_file_size_is_stored_in_a_new_store() -> caskade_engine::Result<()> {
    for sync in ALL_POLICIES {
        run_model(sync, SMALL_FILES, &[Op::Put(0, vec![7; 1100])])?;
    }
    Ok(())
}

/// As above, for the shrunk case proptest reported: a batch of two puts whose records
/// together outgrow a 1 KiB file, as the first write of a new store.
#[test]
fn a_batch_larger_than_max_file_size_is_stored_in_a_new_store() -> caskade_engine::Result<()> {
    for sync in ALL_POLICIES {
        run_model(
            sync,
            SMALL_FILES,
            &[Op::Write(vec![
                BatchOp::Put(0, vec![1; 600]),
                BatchOp::Put(6, vec![2; 600]),
            ])],
        )?;
    }
    Ok(())
}

/// As above, after a merge, which leaves an empty active file behind.
#[test]
fn a_batch_larger_than_max_file_size_is_stored_after_a_merge() -> caskade_engine::Result<()> {
    for sync in ALL_POLICIES {
        run_model(
            sync,
            SMALL_FILES,
            &[
                Op::Put(3, b"small".to_vec()),
                Op::Merge,
                Op::Write(vec![
                    BatchOp::Put(0, vec![1; 600]),
                    BatchOp::Delete(3),
                    BatchOp::Put(0, vec![2; 600]),
                ]),
            ],
        )?;
    }
    Ok(())
}

/// Oversized records in files that already hold records rotate into files of their own;
/// this path works and guards the fix above from breaking it.
#[test]
fn a_value_larger_than_max_file_size_after_other_records_is_stored() -> caskade_engine::Result<()> {
    for sync in ALL_POLICIES {
        run_model(
            sync,
            SMALL_FILES,
            &[
                Op::Put(1, b"first".to_vec()),
                Op::Put(0, vec![7; 1100]),
                Op::Put(2, b"after".to_vec()),
                Op::Reopen,
                Op::Merge,
                Op::DropAndReopen,
            ],
        )?;
    }
    Ok(())
}
