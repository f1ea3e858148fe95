//! Waiting for a submitted write: [`PendingWrite`] (blocking or as a future), its
//! [`WriteTicket`], and the `caskade-syncer` thread that drives the futures.
//!
//! An async caller must not block its executor on a sync, so a polled [`PendingWrite`]
//! registers its waker with [`AsyncSync`] instead, and the syncer thread leads (or joins) the
//! group commit on its behalf, then wakes every future whose batch is durable. Invariants: a
//! future registered before a sync finishes is woken by it (the future checks the durable
//! mark again after registering, so no wake-up falls between the two), and after a failure
//! every registered future is woken to find the log poisoned.

use std::fmt;
use std::mem;
use std::sync::{Arc, Weak};
use std::task::Waker;

use parking_lot::{Condvar, Mutex};

use crate::commit::Committer;
use crate::error::{Error, Result};

/// Requests for the syncer thread, which syncs on behalf of async waiters (and of pending
/// writes dropped without waiting) so that none of them blocks a thread.
#[derive(Default)]
pub(crate) struct AsyncSync {
    state: Mutex<AsyncSyncState>,
    wake: Condvar,
}

#[derive(Default)]
struct AsyncSyncState {
    /// Futures to wake once their sequence number is durable.
    wakers: Vec<(u64, Waker)>,
    /// The highest sequence number anyone wants durable.
    wanted: u64,
    /// Every sequence number up to this one has been made durable (or failed).
    served: u64,
    stop: bool,
}

impl AsyncSync {
    /// Asks the syncer to make `seq` durable, waking `waker` when it is.
    fn request(&self, seq: u64, waker: Option<Waker>) {
        let mut state = self.state.lock();
        if let Some(waker) = waker {
            state.wakers.push((seq, waker));
        }
        state.wanted = state.wanted.max(seq);
        self.wake.notify_one();
    }

    /// Makes the syncer thread exit.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    /// Wakes every registered future, whatever its sequence number: they poll again and
    /// find their batch durable or the store poisoned.
    pub(crate) fn wake_all(&self) {
        let wakers = mem::take(&mut self.state.lock().wakers);
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// The syncer thread's body: leads (or joins) group commits for what async waiters and
    /// dropped pending writes want durable, then wakes the futures whose batches are.
    pub(crate) fn run(&self, committer: &Weak<Committer>) {
        loop {
            let wanted = {
                let mut state = self.state.lock();
                while !state.stop && state.wanted <= state.served {
                    self.wake.wait(&mut state);
                }
                if state.stop {
                    return;
                }
                state.wanted
            };
            let Some(committer) = committer.upgrade() else {
                return;
            };
            let synced = committer.wait_durable(wanted);
            let durable = committer.durable_seq();
            drop(committer);
            let ready: Vec<Waker> = {
                let mut state = self.state.lock();
                // After a failure the log is poisoned: every waiter learns it when it polls.
                let upto = if synced.is_ok() { durable } else { u64::MAX };
                state.served = state.served.max(upto);
                let (ready, waiting) = mem::take(&mut state.wakers)
                    .into_iter()
                    .partition::<Vec<_>, _>(|(seq, _)| *seq <= upto);
                state.wakers = waiting;
                ready.into_iter().map(|(_, waker)| waker).collect()
            };
            for waker in ready {
                waker.wake();
            }
        }
    }
}

/// A batch submitted by [`Bitcask::begin_write`](crate::Bitcask::begin_write) that may not be
/// durable yet.
///
/// Wait for it with [`PendingWrite::wait`] (blocking) or by awaiting it: it is a
/// [`Future`](std::future::Future), driven by the engine's syncer thread, so async callers
/// need no thread per write in flight. Dropping it without waiting waits all the same
/// (blocking), unless it was already polled as a future: then the syncer thread finishes the
/// job, so cancelling an async caller never blocks its executor.
#[must_use = "a pending write is durable only once `wait` returns or the future completes"]
pub struct PendingWrite {
    committer: Arc<Committer>,
    async_sync: Arc<AsyncSync>,
    seq: Option<u64>,
    polled: bool,
}

impl fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingWrite")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Names a batch submitted by [`Bitcask::begin_write`](crate::Bitcask::begin_write), so it
/// can be asked about ([`Bitcask::is_published`](crate::Bitcask::is_published)) or waited for
/// again ([`Bitcask::pending_write`](crate::Bitcask::pending_write)) without holding its
/// [`PendingWrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTicket(pub(crate) u64);

impl PendingWrite {
    pub(crate) fn new(
        committer: Arc<Committer>,
        async_sync: Arc<AsyncSync>,
        seq: u64,
    ) -> PendingWrite {
        PendingWrite {
            committer,
            async_sync,
            seq: Some(seq),
            polled: false,
        }
    }

    /// The ticket naming this write's batch.
    #[must_use]
    pub fn ticket(&self) -> WriteTicket {
        // A completed write's batch is published, which sequence 0 always is.
        WriteTicket(self.seq.unwrap_or(0))
    }

    /// Waits until the batch is durable (under [`SyncPolicy::Always`](crate::SyncPolicy))
    /// and visible to readers.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`] if the sync covering the batch failed.
    pub fn wait(mut self) -> Result<()> {
        match self.seq.take() {
            Some(seq) => self.committer.wait_published(seq),
            None => Ok(()),
        }
    }
}

impl std::future::Future for PendingWrite {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        let Some(seq) = self.seq else {
            return std::task::Poll::Ready(Ok(()));
        };
        if self.committer.is_published(seq) {
            self.seq = None;
            return std::task::Poll::Ready(Ok(()));
        }
        if self.committer.log().is_poisoned() {
            self.seq = None;
            return std::task::Poll::Ready(Err(Error::Poisoned));
        }
        self.async_sync.request(seq, Some(cx.waker().clone()));
        let published = self.committer.is_published(seq);
        self.polled = true;
        // Checked again after registering: the syncer may have finished in between.
        if published {
            self.seq = None;
            return std::task::Poll::Ready(Ok(()));
        }
        std::task::Poll::Pending
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        let Some(seq) = self.seq.take() else { return };
        if self.polled {
            // Polled as a future: the syncer thread makes it durable and published.
            self.async_sync.request(seq, None);
        } else if let Err(error) = self.committer.wait_published(seq) {
            tracing::error!(%error, "a write dropped without waiting failed to sync");
        }
    }
}
