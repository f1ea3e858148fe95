//! `PendingWrite` as a future: awaited writes are durable and visible without a thread
//! blocked per write, and a polled-then-dropped write still lands.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use caskade_engine::{Bitcask, Result, WriteBatch};

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
    batch.put(key.to_vec(), value.to_vec());
    batch
}

#[test]
fn awaited_writes_from_many_threads_are_durable_and_visible() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::builder(dir.path()).open()?;
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
    let reopened = Bitcask::builder(dir.path()).open()?;
    assert_eq!(reopened.len(), 8 * 50);
    Ok(())
}

#[test]
fn a_write_polled_once_then_dropped_still_lands() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Bitcask::builder(dir.path()).open()?;
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut pending = store.begin_write(batch(b"k", b"v"))?;
    // Whether or not the first poll already finds it durable, dropping must not lose it.
    let _ = std::pin::Pin::new(&mut pending).poll(&mut Context::from_waker(&waker));
    drop(pending);
    store.sync()?;
    assert_eq!(store.get(b"k")?, Some(b"v".to_vec()));
    store.close()?;
    assert_eq!(
        Bitcask::builder(dir.path()).open()?.get(b"k")?,
        Some(b"v".to_vec())
    );
    Ok(())
}
