//! Concurrency: writers, readers and merges sharing one store through cloned handles.
//!
//! Every key has one writer thread, which writes it only with the values [`value`] makes
//! for that key, generation after generation. A reader can therefore tell a valid read
//! (nothing before the first write, then a value of that key whose generation never goes
//! backwards) from garbage, a torn value or another key's value. Every loop is bounded by a
//! count, never by time.

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use caskade_engine::{Bitcask, Options, Result, SyncPolicy, WriteBatch, check};

const WRITERS: u32 = 4;
const READERS: u32 = 3;
const KEYS: u32 = 64;
const GENERATIONS: u32 = 20;
const READS_PER_READER: u32 = 10_000;

fn key(k: u32) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

/// The value of key `k` at generation `generation`: a header naming both, then a body whose
/// length and bytes follow from them, so any other bytes fail [`generation_of`].
fn value(k: u32, generation: u32) -> Vec<u8> {
    let mut value = format!("{k}:{generation}:").into_bytes();
    let len = 8 + (generation as usize * 37 + k as usize * 11) % 300;
    value.extend((0..len).map(|i| (k as usize * 31 + generation as usize * 7 + i) as u8));
    value
}

/// The generation `bytes` is a value of for key `k`; panics if it is not one of them.
fn generation_of(k: u32, bytes: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(bytes);
    let mut fields = text.splitn(3, ':');
    let named_key: Option<u32> = fields.next().and_then(|f| f.parse().ok());
    let generation: Option<u32> = fields.next().and_then(|f| f.parse().ok());
    let (Some(named_key), Some(generation)) = (named_key, generation) else {
        panic!("key-{k:03} holds bytes that are no value: {bytes:?}");
    };
    assert_eq!(
        named_key, k,
        "key-{k:03} holds a value of key-{named_key:03}"
    );
    assert!(
        generation < GENERATIONS,
        "key-{k:03} holds generation {generation}, never written"
    );
    assert!(
        bytes == value(k, generation),
        "key-{k:03} holds a damaged value of generation {generation}: {bytes:?}"
    );
    generation
}

/// A small deterministic generator, so readers pick keys in a spread-out order.
struct XorShift(u64);

impl XorShift {
    fn next_below(&mut self, bound: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(bound)) as u32
    }
}

/// Writes every generation of the keys writer `w` owns (those with `k % WRITERS == w`),
/// some as single puts and some as batches, then reads each back; sends the generation
/// just finished on `progress`, if given.
fn write_generations(store: &Bitcask, w: u32, progress: Option<&mpsc::Sender<u32>>) -> Result<()> {
    let owned: Vec<u32> = (0..KEYS).filter(|k| k % WRITERS == w).collect();
    for generation in 0..GENERATIONS {
        if generation % 3 == 2 {
            for pair in owned.chunks(2) {
                let mut batch = WriteBatch::new();
                for &k in pair {
                    batch.put(key(k), value(k, generation));
                }
                store.write(batch)?;
            }
        } else {
            for &k in &owned {
                store.put(&key(k), &value(k, generation))?;
            }
        }
        // An acknowledged write is visible to the thread that made it.
        for &k in &owned {
            let read = store.get(&key(k))?.expect("a written key is present");
            assert_eq!(generation_of(k, &read), generation, "read-your-writes");
        }
        if let Some(progress) = progress {
            // The receiver may have finished its merges already; that is fine.
            let _ = progress.send(generation);
        }
    }
    Ok(())
}

/// Reads random keys, checking each read is valid and no key's generation goes backwards.
fn read_randomly(store: &Bitcask, seed: u64) -> Result<()> {
    let mut rng = XorShift(seed);
    let mut newest_read: Vec<Option<u32>> = vec![None; KEYS as usize];
    for read in 0..READS_PER_READER {
        let k = rng.next_below(KEYS);
        let last = newest_read[k as usize];
        let current = if read % 2 == 0 {
            store.get(&key(k))?.map(|bytes| generation_of(k, &bytes))
        } else {
            store.get_with(&key(k), |bytes| generation_of(k, bytes))?
        };
        match (last, current) {
            (Some(last), None) => panic!("key-{k:03} vanished after generation {last} was read"),
            (Some(last), Some(now)) => assert!(
                now >= last,
                "key-{k:03} went back from generation {last} to {now}"
            ),
            (None, _) => {}
        }
        newest_read[k as usize] = current;
        if read % 1000 == 0 {
            for listed in store.keys() {
                let name = String::from_utf8(listed).expect("keys are ASCII");
                assert!(
                    name.starts_with("key-"),
                    "keys() lists a key never written: {name}"
                );
            }
        }
    }
    Ok(())
}

fn assert_final_generation(store: &Bitcask) -> Result<()> {
    for k in 0..KEYS {
        let read = store.get(&key(k))?.expect("every key was written");
        assert_eq!(generation_of(k, &read), GENERATIONS - 1, "key-{k:03}");
    }
    assert_eq!(store.len(), KEYS as usize);
    Ok(())
}

/// Runs the writers, the readers and, if `merges` is non-zero, a thread that merges after
/// each of the first `merges` generations writer 0 finishes; then checks the final values,
/// before and after a reopen, and that the closed store passes `check`.
fn writers_readers_and_merges(sync: SyncPolicy, max_file_size: u64, merges: u32) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let open = || {
        Bitcask::open(
            dir.path(),
            Options {
                max_file_size,
                sync,
                auto_merge: None,
                ..Options::default()
            },
        )
    };
    let store = open()?;
    let start = Arc::new(Barrier::new((WRITERS + READERS + 1) as usize));
    let (progress_tx, progress_rx) = mpsc::channel();
    let mut merges_done = 0;
    thread::scope(|scope| -> Result<()> {
        let mut threads = Vec::new();
        for w in 0..WRITERS {
            let (store, start) = (store.clone(), Arc::clone(&start));
            let progress = (w == 0 && merges > 0).then(|| progress_tx.clone());
            threads.push(scope.spawn(move || {
                start.wait();
                write_generations(&store, w, progress.as_ref())
            }));
        }
        drop(progress_tx);
        for r in 0..READERS {
            let (store, start) = (store.clone(), Arc::clone(&start));
            threads.push(scope.spawn(move || {
                start.wait();
                read_randomly(&store, 0x9E37_79B9_7F4A_7C15 ^ u64::from(r + 1))
            }));
        }
        start.wait();
        // Merge while the writers go on: each merge follows a generation of writer 0.
        while merges_done < merges && progress_rx.recv().is_ok() {
            let report = store.merge()?;
            assert!(report.input_files >= 1);
            merges_done += 1;
        }
        for thread in threads {
            thread.join().expect("worker threads do not panic")?;
        }
        Ok(())
    })?;
    assert_eq!(merges_done, merges, "every planned merge ran");
    assert_final_generation(&store)?;
    store.close()?;

    let report = check(dir.path())?;
    assert!(report.is_ok(), "check: {:?}", report.problems);
    let store = open()?;
    assert_final_generation(&store)?;
    store.close()
}

#[test]
fn readers_see_only_valid_values_while_writers_write_under_sync_always() -> Result<()> {
    writers_readers_and_merges(SyncPolicy::Always, 1 << 20, 0)
}

#[test]
fn readers_see_only_valid_values_while_writers_write_buffered_under_sync_never() -> Result<()> {
    // Small files and a small write buffer: readers hit the buffer, flushed and rotated data.
    writers_readers_and_merges(SyncPolicy::Never, 4096, 0)
}

#[test]
fn merges_during_writes_and_reads_lose_nothing_under_sync_always() -> Result<()> {
    writers_readers_and_merges(SyncPolicy::Always, 4096, 6)
}

#[test]
fn merges_during_writes_and_reads_lose_nothing_under_sync_interval() -> Result<()> {
    writers_readers_and_merges(SyncPolicy::Interval(Duration::from_millis(1)), 4096, 6)
}

#[test]
fn merges_during_buffered_writes_and_reads_lose_nothing_under_sync_never() -> Result<()> {
    writers_readers_and_merges(SyncPolicy::Never, 4096, 6)
}

#[test]
fn group_commit_makes_every_acknowledged_write_durable() -> Result<()> {
    const THREADS: u32 = 8;
    const PUTS: u32 = 40;
    const BATCHES: u32 = 10;
    let dir = tempfile::tempdir()?;
    // Small files so rotations happen while batches wait for their group sync.
    let open = || {
        Bitcask::open(
            dir.path(),
            Options {
                max_file_size: 8192,
                sync: SyncPolicy::Always,
                auto_merge: None,
                ..Options::default()
            },
        )
    };
    let store = open()?;
    let start = Barrier::new(THREADS as usize);
    let acknowledged: Vec<Vec<(Vec<u8>, Vec<u8>)>> = thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, start) = (store.clone(), &start);
                scope.spawn(move || -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
                    start.wait();
                    let mut acked = Vec::new();
                    for i in 0..PUTS {
                        let (k, v) = (format!("t{t}-put-{i}"), format!("value {t}/{i}"));
                        store.put(k.as_bytes(), v.as_bytes())?;
                        acked.push((k.into_bytes(), v.into_bytes()));
                    }
                    for i in 0..BATCHES {
                        let mut batch = WriteBatch::new();
                        let mut ops = Vec::new();
                        for j in 0..3 {
                            let (k, v) = (format!("t{t}-batch-{i}-{j}"), format!("b {t}/{i}/{j}"));
                            batch.put(k.clone(), v.clone());
                            ops.push((k.into_bytes(), v.into_bytes()));
                        }
                        store.write(batch)?;
                        acked.extend(ops);
                    }
                    for (k, v) in &acked {
                        assert_eq!(store.get(k)?.as_ref(), Some(v), "read-your-writes");
                    }
                    Ok(acked)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("writer threads do not panic"))
            .collect::<Result<_>>()
    })?;
    assert!(
        store.stats().files.len() > 2,
        "files rotated under concurrent commits"
    );
    store.close()?;

    let store = open()?;
    let mut total = 0;
    for (k, v) in acknowledged.iter().flatten() {
        assert_eq!(
            store.get(k)?.as_ref(),
            Some(v),
            "{}",
            String::from_utf8_lossy(k)
        );
        total += 1;
    }
    assert_eq!(total, (THREADS * (PUTS + BATCHES * 3)) as usize);
    assert_eq!(store.len(), total);
    store.close()?;
    let report = check(dir.path())?;
    assert!(report.is_ok(), "check: {:?}", report.problems);
    Ok(())
}

#[test]
fn begin_write_publishes_batches_in_submission_order() -> Result<()> {
    const THREADS: u32 = 6;
    const PER_THREAD: u32 = 40;
    const READS: u32 = 4_000;
    let dir = tempfile::tempdir()?;
    let open = || {
        Bitcask::open(
            dir.path(),
            Options {
                max_file_size: 8192,
                sync: SyncPolicy::Always,
                auto_merge: None,
                ..Options::default()
            },
        )
    };
    let store = open()?;
    let entry = |n: u32| format!("entry-{n:05}").into_bytes();
    let number = |bytes: &[u8]| u32::from_le_bytes(bytes.try_into().expect("4-byte values"));
    // Submissions are numbered under this lock, as an event store numbers its positions.
    let next = Mutex::new(0u32);
    let start = Barrier::new((THREADS + 1) as usize);
    thread::scope(|scope| -> Result<()> {
        let mut writers = Vec::new();
        for _ in 0..THREADS {
            let (store, next, start) = (store.clone(), &next, &start);
            writers.push(scope.spawn(move || -> Result<()> {
                start.wait();
                for _ in 0..PER_THREAD {
                    let (n, pending) = {
                        let mut next = next.lock().expect("no thread panics holding it");
                        let n = *next;
                        *next += 1;
                        let mut batch = WriteBatch::new();
                        batch
                            .put(entry(n), n.to_le_bytes())
                            .put(b"last", n.to_le_bytes());
                        (n, store.begin_write(batch)?)
                    };
                    if n % 5 == 0 {
                        // Dropping a pending write waits for it all the same.
                        drop(pending);
                    } else {
                        pending.wait()?;
                    }
                    assert!(
                        store.contains(&entry(n))?,
                        "entry {n} is visible once waited for"
                    );
                }
                Ok(())
            }));
        }
        let reader = {
            let (store, start) = (store.clone(), &start);
            scope.spawn(move || -> Result<()> {
                start.wait();
                let mut last_seen = None;
                for _ in 0..READS {
                    let Some(last) = store.get(b"last")? else {
                        assert_eq!(last_seen, None, "\"last\" vanished");
                        continue;
                    };
                    let last = number(&last);
                    assert!(
                        last_seen.is_none_or(|seen| last >= seen),
                        "published out of order"
                    );
                    last_seen = Some(last);
                    // Everything submitted before the batch that wrote `last` is visible.
                    for n in [last, last / 2, last.saturating_sub(1)] {
                        let value = store.get(&entry(n))?;
                        assert_eq!(
                            value.map(|v| number(&v)),
                            Some(n),
                            "entry {n} after last={last}"
                        );
                    }
                }
                Ok(())
            })
        };
        for writer in writers {
            writer.join().expect("writer threads do not panic")?;
        }
        reader.join().expect("the reader does not panic")
    })?;
    store.close()?;

    let store = open()?;
    let total = THREADS * PER_THREAD;
    for n in 0..total {
        assert_eq!(
            store.get(&entry(n))?,
            Some(n.to_le_bytes().to_vec()),
            "entry {n}"
        );
    }
    assert_eq!(
        store.get(b"last")?,
        Some((total - 1).to_le_bytes().to_vec())
    );
    store.close()
}
