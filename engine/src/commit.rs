//! The committer: sequencing batches into the log and group commit.
//!
//! A writer encodes its batch into the log under the writer lock, which gives it the next
//! sequence number. Under [`SyncPolicy::Always`] it then waits for a sync: the first waiter
//! becomes the leader, takes every pending batch, calls `fdatasync` with no lock held, then
//! publishes every batch it covered to the index in sequence order and wakes the others.
//! Batches that arrive during a sync are covered by the next one. Under the other policies a
//! batch is published as soon as it is encoded.
//!
//! Invariants:
//! - Under `Always` a batch becomes visible to readers only after it is durable, so nothing a
//!   reader saw can be lost by a crash.
//! - Batches are published in sequence order; `durable_seq` only grows, and every batch up to
//!   it is durable and published.
//! - After a failed sync the log is poisoned and every waiter gets [`Error::Poisoned`] or
//!   the sync's error: no one is told a batch is durable that might not be.

use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::log::Log;
use crate::options::{Options, SyncPolicy};
use crate::publish::{EARLY_PUBLISH_MIN_OPS, EarlyPublisher, PendingBatch};
use crate::runway::Runway;

/// The longest a leader waits for more batches to join its group.
const MAX_GATHER: Duration = Duration::from_micros(500);

/// What the last group commit looked like, so the next leader can wait for stragglers.
#[derive(Default)]
struct GroupStats {
    /// Batches the last sync covered.
    last_size: AtomicUsize,
    /// How long the last `fdatasync` took.
    last_sync_nanos: AtomicU64,
    /// Batches submitted and not yet taken by a leader.
    pending: AtomicUsize,
}

#[derive(Default)]
struct CommitState {
    /// Every batch with a sequence number up to this one is durable and published.
    durable_seq: u64,
    /// Whether a leader is running a sync.
    syncing: bool,
    /// The number of the sync running, or of the last one.
    generation: u64,
    /// The last sequence number the running sync covers; `None` until it has taken the
    /// pending batches (every batch submitted before then is covered).
    covered_upto: Option<u64>,
}

/// Whether a submission may make blocking system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submit {
    MayBlock,
    NonBlocking,
}

/// What a submission did.
pub(crate) enum Submitted {
    /// Submitted as this sequence number.
    Seq(u64),
    /// Not submitted: it would have blocked.
    WouldBlock(WriteBatch),
}

/// Sequences batches into the log and makes them durable and visible.
pub(crate) struct Committer {
    options: Options,
    log: Arc<Log>,
    index: Arc<Index>,
    runway: Arc<Runway>,
    early_publisher: Arc<EarlyPublisher>,
    commit: Mutex<CommitState>,
    /// Waiters of even and odd sync generations; see `wait_durable`.
    committed: [Condvar; 2],
    group: GroupStats,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Committer {
    pub(crate) fn new(
        options: &Options,
        log: Arc<Log>,
        index: Arc<Index>,
        runway: Arc<Runway>,
        early_publisher: Arc<EarlyPublisher>,
    ) -> Committer {
        Committer {
            options: options.clone(),
            log,
            index,
            runway,
            early_publisher,
            commit: Mutex::new(CommitState::default()),
            committed: [Condvar::new(), Condvar::new()],
            group: GroupStats::default(),
        }
    }

    /// The log batches are written to.
    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    /// Encodes `batch` into the log and returns its sequence number (0 for an empty batch,
    /// which is always durable). Batches are ordered by the calls to this function.
    pub(crate) fn submit(&self, batch: WriteBatch, mode: Submit) -> Result<Submitted> {
        let encoded_len = batch.encoded_len(&self.options)?;
        self.log.check_writable()?;
        if batch.is_empty() {
            return Ok(Submitted::Seq(0));
        }
        let timestamp_micros = now_micros();
        let mut writer = self.log.writer();
        // Checked again under the lock: a sync may have failed since.
        self.log.check_writable()?;
        let always = self.options.sync == SyncPolicy::Always;
        if mode == Submit::NonBlocking
            && (self.log.must_rotate(&writer, encoded_len as u64)
                || (!always && self.log.buffer_full(&writer, encoded_len)))
        {
            return Ok(Submitted::WouldBlock(batch));
        }
        self.log.rotate_if_full(&mut writer, encoded_len as u64)?;
        let seq = writer.next_seq;
        writer.next_seq += 1;
        let unit = Log::encode(&mut writer, batch, timestamp_micros, encoded_len);
        if always {
            writer.pending.push(unit);
            self.group.pending.fetch_add(1, Ordering::Relaxed);
        } else {
            self.index.publish(&unit, None)?;
            if self.log.buffer_full(&writer, 0) {
                self.log.flush(&mut writer)?;
            }
        }
        Ok(Submitted::Seq(seq))
    }

    /// Waits until batch `seq` is durable and published, syncing on behalf of every waiter
    /// if no one else is.
    ///
    /// Syncs are numbered in generations. A waiter whose batch the sync in progress will
    /// cover (it was submitted before that sync took the pending batches) sleeps on that
    /// generation's condition variable; any other waiter is covered by the next sync and
    /// sleeps on the other one. A finished sync wakes all of its own waiters and exactly one
    /// of the next generation's, which leads that sync; the rest sleep on until it ends.
    /// So no writer is woken just to find its batch still pending.
    pub(crate) fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut commit = self.commit.lock();
        loop {
            if commit.durable_seq >= seq {
                return Ok(());
            }
            if self.log.is_poisoned() {
                return Err(Error::Poisoned);
            }
            if commit.syncing {
                let covered = commit.covered_upto.is_none_or(|upto| seq <= upto);
                let generation = commit.generation + u64::from(!covered);
                self.committed[generation as usize % 2].wait(&mut commit);
                continue;
            }
            commit.syncing = true;
            commit.generation += 1;
            commit.covered_upto = None;
            let generation = commit.generation;
            let synced = self.lead_sync(&mut commit);
            commit.syncing = false;
            match synced {
                Ok(upto) => {
                    commit.durable_seq = commit.durable_seq.max(upto);
                    self.committed[generation as usize % 2].notify_all();
                    self.committed[(generation as usize + 1) % 2].notify_one();
                }
                Err(error) => {
                    for condvar in &self.committed {
                        condvar.notify_all();
                    }
                    return Err(error);
                }
            }
        }
    }

    /// When the last group held several batches, gives the writers it woke a moment to submit
    /// again before this sync takes the pending batches: without it the first writer back
    /// syncs alone and groups alternate between one batch and many. A lone writer never
    /// waits.
    fn gather(&self) {
        let wanted = self.group.last_size.load(Ordering::Relaxed);
        if wanted <= 1 || !self.options.tuning.gather {
            return;
        }
        let window = Duration::from_nanos(self.group.last_sync_nanos.load(Ordering::Relaxed) / 4);
        let deadline = Instant::now() + window.min(MAX_GATHER);
        while self.group.pending.load(Ordering::Relaxed) < wanted && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// The leader's part of a group commit: gathers stragglers, takes every pending batch
    /// (recording what it covers while holding the commit lock, so waiters can tell whether
    /// this sync is theirs), syncs and publishes with the commit lock released. Returns the
    /// last sequence number now durable.
    fn lead_sync(&self, commit: &mut MutexGuard<'_, CommitState>) -> Result<u64> {
        MutexGuard::unlocked(commit, || self.gather());
        let (file, pending, upto) = {
            let mut writer = self.log.writer();
            self.log.flush(&mut writer)?;
            self.group.pending.store(0, Ordering::Relaxed);
            (
                Arc::clone(&writer.active),
                mem::take(&mut writer.pending),
                writer.last_seq(),
            )
        };
        commit.covered_upto = Some(upto);
        MutexGuard::unlocked(commit, || {
            let op_count: usize = pending.iter().map(PendingBatch::op_count).sum();
            let early = self.options.tuning.publish_helper && op_count >= EARLY_PUBLISH_MIN_OPS;
            let (pending, handed_over) = if early {
                match self.early_publisher.hand_over(pending) {
                    Some(refused) => (refused, false),
                    None => (Vec::new(), true),
                }
            } else {
                (pending, false)
            };
            let started = Instant::now();
            let synced = file.sync();
            let ended = Instant::now();
            let took = u64::try_from((ended - started).as_nanos()).unwrap_or(u64::MAX);
            // Taken back even if the sync failed: the helper must be idle for the next group.
            let (pending, handled) = if handed_over {
                let group = self.early_publisher.take_back();
                fail::fail_point!("publish::before_reveal");
                (group.units, Some(group.handled))
            } else {
                (pending, None)
            };
            synced.map_err(|e| self.log.poison(Error::Io(e)))?;
            // Asked for now, while the writers prepare the next group, the zeros usually
            // reach the disk before that group's sync starts (see `DataFile::extend_runway`),
            // unless the syncs run back to back.
            if self.options.tuning.runway && file.wants_runway() {
                self.runway.request(Arc::clone(&file));
            }
            self.group.last_sync_nanos.store(took, Ordering::Relaxed);
            self.group.last_size.store(pending.len(), Ordering::Relaxed);
            let mut first_op = 0;
            for unit in &pending {
                let next_op = first_op + unit.op_count();
                self.index
                    .publish(unit, handled.as_ref().map(|h| &h[first_op..next_op]))?;
                first_op = next_op;
            }
            Ok(upto)
        })
    }

    /// Every batch up to this sequence number is durable and published.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.commit.lock().durable_seq
    }

    /// Whether batch `seq` is published (under `Interval` and `Never` every submitted batch
    /// is).
    pub(crate) fn is_published(&self, seq: u64) -> bool {
        self.options.sync != SyncPolicy::Always || self.durable_seq() >= seq
    }

    /// Waits until every batch up to `seq` is in the keydir (under `Interval` and `Never`
    /// batches are published as they are written).
    pub(crate) fn wait_published(&self, seq: u64) -> Result<()> {
        if self.options.sync == SyncPolicy::Always {
            self.wait_durable(seq)
        } else {
            Ok(())
        }
    }

    /// Flushes and syncs everything written so far, under any policy.
    pub(crate) fn sync_all(&self) -> Result<()> {
        if self.options.sync == SyncPolicy::Always {
            let seq = self.log.writer().last_seq();
            return self.wait_durable(seq);
        }
        self.log.flush_and_sync()
    }
}
