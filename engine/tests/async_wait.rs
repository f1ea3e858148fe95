//! `PendingWrite` as a future: awaited writes are durable and visible without a thread
//! blocked per write, and a polled-then-dropped write still lands; a write's ticket tells
//! whether it is published and lets a second caller wait for the same batch.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use caskade_engine::{Bitcask, Options, Result, SyncPolicy, TryWrite, WriteBatch};

/// Wakes a parked thread: the smallest executor there is.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}

fn batch(key: &[u8], value: &[u8]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(key, value);
    batch
}

#[test]
fn awaited_writes_from_many_threads_are_durable_and_visible() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), Options::default())?;
    thread::scope(|scope| {
        for t in 0..8u32 {
            let store = store.clone();
            scope.spawn(move || -> Result<()> {
                for i in 0..50u32 {
                    let key = format!("t{t}-{i}");
                    block_on(store.begin_write(batch(key.as_bytes(), &i.to_le_bytes()))?)?;
                    assert_eq!(store.get(key.as_bytes())?, Some(i.to_le_bytes().to_vec()));
                }
                Ok(())
            });
        }
    });
    store.close()?;
    let reopened = Bitcask::open(dir.path(), Options::default())?;
    assert_eq!(reopened.len(), 8 * 50);
    Ok(())
}

#[test]
fn a_write_polled_once_then_dropped_still_lands() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(dir.path(), Options::default())?;
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut pending = store.begin_write(batch(b"k", b"v"))?;
    // Whether or not the first poll already finds it durable, dropping must not lose it.
    let _ = std::pin::Pin::new(&mut pending).poll(&mut Context::from_waker(&waker));
    drop(pending);
    store.sync()?;
    assert_eq!(store.get(b"k")?, Some(b"v".to_vec()));
    store.close()?;
    assert_eq!(
        Bitcask::open(dir.path(), Options::default())?.get(b"k")?,
        Some(b"v".to_vec())
    );
    Ok(())
}

#[test]
fn try_begin_write_hands_back_a_batch_that_needs_a_new_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(
        dir.path(),
        Options {
            max_file_size: caskade_engine::MIN_FILE_SIZE,
            ..Options::default()
        },
    )?;
    let value = vec![b'v'; 300];
    let mut written = 0;
    let handed_back = loop {
        let key = format!("key-{written}");
        match store.try_begin_write(batch(key.as_bytes(), &value))? {
            TryWrite::Submitted(pending) => {
                block_on(pending)?;
                written += 1;
            }
            TryWrite::WouldBlock(handed_back) => break handed_back,
        }
        assert!(
            written < 10,
            "a 1 KiB file holds at most three such records"
        );
    };
    assert!(written > 0, "the first write fits the empty file");
    let key = format!("key-{written}");
    assert_eq!(
        handed_back,
        batch(key.as_bytes(), &value),
        "handed back untouched"
    );
    assert_eq!(store.get(key.as_bytes())?, None, "nothing was written");
    assert_eq!(store.stats().files.len(), 1, "no file was started");

    store.begin_write(handed_back)?.wait()?;
    assert_eq!(store.get(key.as_bytes())?, Some(value));
    assert_eq!(store.stats().files.len(), 2);
    Ok(())
}

#[test]
fn try_begin_write_hands_back_a_batch_that_would_flush_the_buffer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(
        dir.path(),
        Options {
            sync: SyncPolicy::Never,
            write_buffer_size: 1000,
            ..Options::default()
        },
    )?;
    let TryWrite::Submitted(small) = store.try_begin_write(batch(b"small", b"fits"))? else {
        panic!("a small write fits the buffer");
    };
    small.wait()?;
    let big = batch(b"big", &[b'x'; 2000]);
    let TryWrite::WouldBlock(handed_back) = store.try_begin_write(big.clone())? else {
        panic!("a write past the buffer's size would hand it to the OS");
    };
    assert_eq!(handed_back, big);
    assert_eq!(store.get(b"big")?, None);
    store.begin_write(handed_back)?.wait()?;
    assert_eq!(store.get(b"big")?, Some(vec![b'x'; 2000]));
    Ok(())
}

#[test]
fn a_ticket_tells_when_its_batch_is_published_and_a_second_wait_shares_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::open(
        dir.path(),
        Options {
            sync: SyncPolicy::Always,
            ..Options::default()
        },
    )?;
    let first = store.begin_write(batch(b"k", b"v1"))?;
    let ticket = first.ticket();
    // Nobody has waited, so no sync has run: the batch is neither durable nor visible.
    assert!(!store.is_published(ticket));
    assert_eq!(store.get(b"k")?, None);
    let second = store.pending_write(ticket);
    let second_thread = thread::spawn(move || block_on(second));
    first.wait()?;
    assert!(store.is_published(ticket));
    second_thread.join().expect("waiter thread panicked")?;
    assert_eq!(store.get(b"k")?, Some(b"v1".to_vec()));
    // Waiting on a published batch's ticket returns at once.
    store.pending_write(ticket).wait()?;

    let never = tempfile::tempdir()?;
    let never = Bitcask::open(
        never.path(),
        Options {
            sync: SyncPolicy::Never,
            ..Options::default()
        },
    )?;
    let pending = never.begin_write(batch(b"k", b"v"))?;
    assert!(
        never.is_published(pending.ticket()),
        "without syncs, a batch is published as it is written"
    );
    pending.wait()?;
    Ok(())
}
