//! Batches waiting to be published, and the helper thread that inserts most of a large
//! group's new keys, hidden, while its group commit's `fdatasync` runs (the leader then
//! publishes the group with [`Index::publish`](crate::index::Index::publish)).
//!
//! Under [`SyncPolicy::Always`](crate::SyncPolicy::Always) a batch may become visible only
//! once it is durable, so its keydir updates wait for the sync. For a large group, most of
//! that work is inserting keys the keydir has never seen (an event store's events): each
//! insert is a cache miss into a large table, and done after the sync, they add to every
//! append's latency. So the group's leader hands the group to the `caskade-publish` thread
//! before it syncs. That thread inserts every put of an absent key as a *hidden* entry
//! ([`KeyDir::insert_new`]), on the other core, while the leader waits for the disk.
//!
//! Hidden entries stay out of every read. An entry's record must lie below its file's
//! published mark ([`DataFile::is_published`]) to be seen, and the leader raises that mark
//! only after the sync, batch by batch, as it always has. Then it applies, in order, what the
//! helper left: overwrites, deletes of present keys, each batch's last op (which a reader
//! must see only after the rest of its batch, see [`WriteBatch`]), and every later update of
//! a key one of those touched.
//!
//! Why this is the same as publishing everything after the sync. While a group is in flight
//! nothing else adds keys to the keydir: the next group's leader starts once this one is
//! done, and merge only re-points keys present. (Merge may re-point a hidden entry whose file
//! a rotation sealed, and synced, meanwhile; the record is durable by then.) So a key absent
//! when the helper looks was absent before the group, and inserting it hidden changes nothing
//! a reader can see. An update left to the leader makes every later update of its key wait
//! too, so the updates of one key are applied in their order: first the hidden insert, if
//! any, then the rest after the sync.
//!
//! [`DataFile::is_published`]: crate::data_file::DataFile::is_published

use parking_lot::{Condvar, Mutex};

use crate::batch::WriteBatch;
use crate::data_file::FileId;
use crate::file_set::Change;
use crate::keydir::{KeyDir, ValueLocation};

/// A group holding fewer updates than this is published by its leader alone after the sync:
/// handing it over would cost more than it saves.
pub(crate) const EARLY_PUBLISH_MIN_OPS: usize = 64;

/// A batch written to the log and waiting to be published.
pub(crate) struct PendingBatch {
    pub(crate) file_id: FileId,
    /// Where the batch ends in its file.
    pub(crate) end: u64,
    /// Bytes of batch framing, dead from the start.
    pub(crate) framing_len: u64,
    pub(crate) timestamp_micros: u64,
    pub(crate) batch: WriteBatch,
    /// Where each operation's record starts in the file.
    pub(crate) offsets: Vec<u32>,
}

impl PendingBatch {
    pub(crate) fn op_count(&self) -> usize {
        self.offsets.len()
    }

    /// The batch's operations as changes, in order.
    pub(crate) fn changes(&self) -> impl Iterator<Item = Change<'_>> {
        self.batch
            .ops()
            .zip(&self.offsets)
            .map(|((kind, key, value), &offset)| Change {
                kind,
                key,
                file_id: self.file_id,
                offset,
                value_len: value.len() as u32,
                timestamp_micros: self.timestamp_micros,
            })
    }
}

/// A group handed to the helper, and what it did: `handled[i]` for the `i`th op of the
/// group, counting through its batches in order.
pub(crate) struct EarlyGroup {
    pub(crate) units: Vec<PendingBatch>,
    pub(crate) handled: Vec<bool>,
}

/// The hand-over between a group's leader and the `caskade-publish` thread. At most one group
/// is in flight: only the leader of a sync hands one over, and it takes it back before its
/// sync ends.
#[derive(Default)]
pub(crate) struct EarlyPublisher {
    state: Mutex<EarlyState>,
    /// The helper waits here for a group.
    wake: Condvar,
    /// The leader waits here for the helper to finish.
    done: Condvar,
}

#[derive(Default)]
struct EarlyState {
    stop: bool,
    running: bool,
    /// Handed over, not yet taken by the helper.
    todo: Option<Vec<PendingBatch>>,
    /// Finished by the helper, not yet taken back.
    finished: Option<EarlyGroup>,
}

impl EarlyPublisher {
    /// Hands `units` to the helper, or gives them back if it has stopped (the store is
    /// closing, and its last syncs publish alone).
    pub(crate) fn hand_over(&self, units: Vec<PendingBatch>) -> Option<Vec<PendingBatch>> {
        let mut state = self.state.lock();
        if state.stop || !state.running {
            return Some(units);
        }
        debug_assert!(state.todo.is_none() && state.finished.is_none());
        state.todo = Some(units);
        self.wake.notify_one();
        None
    }

    /// Waits for the helper to finish the group handed over.
    pub(crate) fn take_back(&self) -> EarlyGroup {
        let mut state = self.state.lock();
        loop {
            if let Some(group) = state.finished.take() {
                return group;
            }
            self.done.wait(&mut state);
        }
    }

    /// Marks the helper as running; hand-overs are refused before this and after
    /// [`EarlyPublisher::stop`].
    pub(crate) fn start(&self) {
        self.state.lock().running = true;
    }

    /// Makes the helper exit once it has finished the group it holds.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    fn next(&self) -> Option<Vec<PendingBatch>> {
        let mut state = self.state.lock();
        loop {
            if let Some(units) = state.todo.take() {
                return Some(units);
            }
            if state.stop {
                return None;
            }
            self.wake.wait(&mut state);
        }
    }

    /// Hands the group back to its leader. With `retire`, the helper is exiting: later
    /// hand-overs are refused, and their leaders publish alone.
    fn finish(&self, group: EarlyGroup, retire: bool) {
        let mut state = self.state.lock();
        state.finished = Some(group);
        if retire {
            state.running = false;
        }
        self.done.notify_one();
    }
}

/// The `caskade-publish` thread: inserts the new keys of each group handed over, until the
/// store closes. A group handed over before the stop is still finished, so its leader never
/// waits in vain; so is a group whose inserts panicked, after which the thread exits and
/// leaders publish alone (a panic here would be a bug: the only other way out of an insert
/// is an allocation failure, which aborts).
pub(crate) fn early_publish(publisher: &EarlyPublisher, keydir: &KeyDir) {
    while let Some(units) = publisher.next() {
        let op_count = units.iter().map(PendingBatch::op_count).sum();
        let mut handled = vec![false; op_count];
        // `handled` marks each insert once it is done, so after a panic it still says what
        // the leader must apply itself.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            insert_new_keys(keydir, &units, &mut handled);
        }))
        .is_err();
        if panicked {
            tracing::error!("the publish helper panicked; sync leaders now publish alone");
        }
        publisher.finish(EarlyGroup { units, handled }, panicked);
        if panicked {
            return;
        }
    }
}

/// Inserts the new keys of `units` as hidden entries, marking each in `handled`.
fn insert_new_keys(keydir: &KeyDir, units: &[PendingBatch], handled: &mut [bool]) {
    fail::fail_point!("publish::insert_new_keys");
    let updates: Vec<(&[u8], Option<ValueLocation>)> = units
        .iter()
        .flat_map(|unit| unit.changes().map(|change| change.keydir_update()))
        .collect();
    // Each batch's last op stays with the leader, which applies it after every other op
    // of its batch (see `WriteBatch`).
    let mut leave = vec![false; updates.len()];
    let mut end = 0;
    for unit in units {
        end += unit.op_count();
        leave[end - 1] = true;
    }
    // On an error `handled` marks what was done, and the leader meets the same error when it
    // applies the rest.
    let _ = keydir.insert_new(&updates, &leave, handled);
}
