//! Publication under `SyncPolicy::Always`: a batch becomes visible only once durable, even
//! when the `caskade-publish` helper inserts its new keys while the sync runs, and a reader
//! that sees a batch's last operation sees the rest of the batch.
//!
//! The first test pauses the leader of a sync at the fail point `publish::before_reveal`
//! (the helper has inserted the batch's new keys, hidden; nothing is published yet) and reads
//! the store from there. Fail points are global to the process, so each test here holds a
//! [`FailScenario`], whose lock runs them one at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use caskade_engine::{Bitcask, Result, WriteBatch};
use fail::FailScenario;

/// Comfortably above the group size from which the leader hands a group to the helper.
const NEW_KEYS: usize = 100;

fn new_key(i: usize) -> Vec<u8> {
    format!("new-{i:03}").into_bytes()
}

/// What a reader sees of the store; compared as a whole.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    new_keys_found: usize,
    new_keys_contained: usize,
    new_keys_listed: usize,
    len: usize,
    existing: Option<Vec<u8>>,
}

fn look(store: &Bitcask) -> Result<Seen> {
    let mut seen = Seen {
        new_keys_found: 0,
        new_keys_contained: 0,
        new_keys_listed: store.keys_with_prefix(b"new-").count(),
        len: store.len(),
        existing: store.get(b"existing")?,
    };
    for i in 0..NEW_KEYS {
        seen.new_keys_found += usize::from(store.get(&new_key(i))?.is_some());
        seen.new_keys_contained += usize::from(store.contains(&new_key(i))?);
    }
    Ok(seen)
}

#[test]
fn new_keys_inserted_during_the_sync_stay_hidden_until_it_ends() -> Result<()> {
    let _serial = FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), caskade_engine::Options::default())?;
    store.put(b"existing", b"old")?;

    // Runs on the leader, paused between the helper's inserts and publication.
    let during: Arc<Mutex<Option<Seen>>> = Arc::default();
    let reader = Mutex::new(Some(store.clone()));
    let during_sink = Arc::clone(&during);
    fail::cfg_callback("publish::before_reveal", move || {
        // Take the handle, so the registry keeps no store open after the first call.
        if let Some(store) = reader.lock().unwrap().take() {
            *during_sink.lock().unwrap() = Some(look(&store).expect("reads succeed"));
        }
    })
    .expect("a valid fail point");

    let mut batch = WriteBatch::new();
    for i in 0..NEW_KEYS {
        batch.put(new_key(i), format!("value-{i}"));
    }
    batch.put(b"existing", b"new");
    store.write(batch)?;
    fail::remove("publish::before_reveal");

    let during = during.lock().unwrap().take();
    assert_eq!(
        during,
        Some(Seen {
            new_keys_found: 0,
            new_keys_contained: 0,
            new_keys_listed: 0,
            len: 1,
            existing: Some(b"old".to_vec()),
        }),
        "the helper took the batch, and nothing of it showed before the sync ended"
    );
    let after = look(&store)?;
    assert_eq!(
        after,
        Seen {
            new_keys_found: NEW_KEYS,
            new_keys_contained: NEW_KEYS,
            new_keys_listed: NEW_KEYS,
            len: NEW_KEYS + 1,
            existing: Some(b"new".to_vec()),
        }
    );
    store.close()?;

    let reopened = Bitcask::open(dir.path(), caskade_engine::Options::default())?;
    assert_eq!(look(&reopened)?, after);
    reopened.close()
}

/// Writers append batches of new keys ending with their marker key; readers check that once
/// a marker names a batch, every key of that batch and of the ones before it is there, and
/// that nothing seen ever disappears.
#[test]
fn a_reader_that_sees_a_batch_marker_sees_the_whole_batch() -> Result<()> {
    const WRITERS: usize = 4;
    const BATCHES: usize = 30;
    const READERS: usize = 2;
    const LOOKS: usize = 3_000;
    let _serial = FailScenario::setup();
    let key = |w: usize, b: usize, i: usize| format!("w{w}-b{b:03}-{i:03}").into_bytes();
    let marker = |w: usize| format!("marker-{w}").into_bytes();

    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), caskade_engine::Options::default())?;
    let start = Barrier::new(WRITERS + READERS);
    let writing = AtomicBool::new(true);
    thread::scope(|scope| -> Result<()> {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, start) = (store.clone(), &start);
                scope.spawn(move || -> Result<()> {
                    start.wait();
                    for b in 0..BATCHES {
                        let mut batch = WriteBatch::new();
                        for i in 0..NEW_KEYS {
                            batch.put(key(w, b, i), b"v");
                        }
                        batch.put(marker(w), b.to_le_bytes());
                        store.write(batch)?;
                        // Acknowledged means readable.
                        assert!(store.contains(&key(w, b, NEW_KEYS - 1))?);
                    }
                    Ok(())
                })
            })
            .collect();
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (store, start, writing) = (store.clone(), &start, &writing);
                scope.spawn(move || -> Result<()> {
                    start.wait();
                    let mut newest = [None::<usize>; WRITERS];
                    for look in 0..LOOKS {
                        if !writing.load(Ordering::Relaxed) && look > LOOKS / 2 {
                            break;
                        }
                        let w = (look * 7 + r) % WRITERS;
                        let Some(bytes) = store.get(&marker(w))? else {
                            assert_eq!(newest[w], None, "writer {w}'s marker disappeared");
                            continue;
                        };
                        let b = usize::from_le_bytes(bytes.try_into().expect("a marker"));
                        assert!(newest[w].is_none_or(|seen| seen <= b), "marker went back");
                        newest[w] = Some(b);
                        for i in [0, look % NEW_KEYS, NEW_KEYS - 1] {
                            assert!(
                                store.contains(&key(w, b, i))?,
                                "marker of writer {w} names batch {b}, whose key {i} is missing"
                            );
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writers do not panic")?;
        }
        writing.store(false, Ordering::Relaxed);
        for reader in readers {
            reader.join().expect("readers do not panic")?;
        }
        Ok(())
    })?;
    assert_eq!(store.len(), WRITERS * (BATCHES * NEW_KEYS + 1));
    assert_eq!(store.keys().count(), store.len());
    store.close()
}

/// A panic in the helper must not leave the sync's leader waiting for it: the group is
/// handed back with nothing inserted, the leader publishes it alone, and so do the leaders
/// after it.
#[test]
fn a_panicking_helper_leaves_publication_to_the_leaders() -> Result<()> {
    let _serial = FailScenario::setup();
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), caskade_engine::Options::default())?;
    fail::cfg("publish::insert_new_keys", "1*panic").expect("a valid fail point");
    let batch = |prefix: &str| {
        let mut batch = WriteBatch::new();
        for i in 0..NEW_KEYS {
            batch.put(format!("{prefix}-{i:03}"), b"v");
        }
        batch
    };
    // A leader waiting for the dead helper would never return: the wait is bounded, so that
    // fails the test instead of hanging the run. The bound assumes nothing about timing; the
    // writes take milliseconds.
    let writer = {
        let store = store.clone();
        let (done, finished) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let outcome = store
                .write(batch("first"))
                .and_then(|()| store.write(batch("second")));
            let _ = done.send(outcome);
        });
        finished
    };
    let outcome = writer
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the writes return after the helper panicked");
    fail::remove("publish::insert_new_keys");
    outcome?;
    assert_eq!(store.keys_with_prefix(b"first-").count(), NEW_KEYS);
    assert_eq!(store.keys_with_prefix(b"second-").count(), NEW_KEYS);
    assert_eq!(store.len(), 2 * NEW_KEYS);
    assert_eq!(store.get(b"first-042")?, Some(b"v".to_vec()));
    store.close()
}
