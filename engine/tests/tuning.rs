//! Each tuning mechanism switched off ([`Tuning`]) changes speed only: concurrent durable
//! writers in groups large enough for every mechanism to act leave every write visible,
//! with its last value, before and after a reopen.

use std::sync::Arc;

use caskade_engine::{Bitcask, Options, SyncPolicy, Tuning, WriteBatch};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WRITERS: u64 = 4;
const BATCHES: u64 = 30;
/// Above the publish helper's threshold of 64 operations per group.
const KEYS_PER_BATCH: u64 = 100;

fn key(writer: u64, key: u64) -> Vec<u8> {
    format!("w{writer}-k{key:04}").into_bytes()
}

fn value(writer: u64, batch: u64) -> Vec<u8> {
    format!("w{writer}-b{batch}").into_bytes()
}

fn open(dir: &std::path::Path, tuning: Tuning) -> caskade_engine::Result<Bitcask> {
    Bitcask::open(
        dir,
        Options {
            sync: SyncPolicy::Always,
            max_file_size: 256 << 10,
            auto_merge: None,
            tuning,
            ..Options::default()
        },
    )
}

/// Every key of every writer holds the value of that writer's last batch.
fn check(store: &Bitcask, what: &str) -> TestResult {
    for writer in 0..WRITERS {
        for k in 0..KEYS_PER_BATCH {
            let got = store.get(&key(writer, k))?;
            assert_eq!(
                got,
                Some(value(writer, BATCHES - 1)),
                "{what}: writer {writer} key {k}"
            );
        }
    }
    assert_eq!(store.len() as u64, WRITERS * KEYS_PER_BATCH, "{what}");
    Ok(())
}

#[test]
fn every_tuning_mechanism_off_keeps_every_acknowledged_write() -> TestResult {
    let configurations = [
        ("all on", ""),
        ("no gather", "no-gather"),
        ("no runway", "no-runway"),
        ("no publish helper", "no-publish-helper"),
        ("all off", "no-runway,no-gather,no-publish-helper"),
    ];
    for (what, switches) in configurations {
        let tuning = Tuning::parse(switches)?;
        let dir = tempfile::tempdir()?;
        let store = Arc::new(open(dir.path(), tuning)?);
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || -> caskade_engine::Result<()> {
                    for batch in 0..BATCHES {
                        let mut write = WriteBatch::new();
                        for k in 0..KEYS_PER_BATCH {
                            write.put(key(writer, k), value(writer, batch));
                        }
                        store.write(write)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for writer in writers {
            writer.join().map_err(|_| "a writer panicked")??;
        }
        check(&store, what)?;
        Arc::into_inner(store).ok_or("one handle left")?.close()?;
        let reopened = open(dir.path(), tuning)?;
        check(&reopened, &format!("{what}, reopened"))?;
        reopened.close()?;
    }
    Ok(())
}
