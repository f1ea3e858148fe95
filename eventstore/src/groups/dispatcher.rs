//! A group's dispatcher: which consumer gets which event, what is in flight, when an event is
//! retried or parked, and how far the group may checkpoint.
//!
//! Pure state: no I/O, no clock (callers pass `now`), no async. The group's task
//! (`runtime.rs`) feeds it events read from the store and consumers' acks and nacks, and
//! carries out what it asks: sending deliveries, parking messages durably, writing
//! checkpoints.
//!
//! Invariants:
//! - Every event read from the source is *outstanding* until it is acked, skipped, or parked
//!   durably (the task reports a park done only once it is on disk). The checkpoint is the
//!   lowest outstanding source key, or the end of what was read when none is: every key below
//!   it is finished, so resuming there redelivers nothing finished and loses nothing.
//! - A consumer never has more events in flight than its capacity.
//! - A message is delivered with the number of times it was delivered before; once that
//!   would pass the group's `max_retry_count` it is parked instead.
//! - Replayed parked messages are outside the checkpoint (their keys are below it): they
//!   are finished by an ack, a skip, or a new park, and the task then forgets their old
//!   parked record.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::event::RecordedEvent;
use crate::groups::ConsumerStrategy;

/// Buckets of the pinned strategies: a stream (or correlation id) hashes to a bucket, and a
/// bucket belongs to one consumer while that consumer is connected.
const PIN_BUCKETS: u64 = 1024;

/// A consumer of a group, numbered by the group in the order they connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConsumerId(pub(crate) u64);

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Read from the group's stream or `$all`: its version or position.
    Source(u64),
    /// Replayed from the parked messages: its parked record's sequence number.
    Parked(u64),
}

/// An event on its way through the group.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) event: Arc<RecordedEvent>,
    /// Deliveries before the next one.
    pub(crate) retry_count: u32,
    pub(crate) origin: Origin,
    /// The consumer it last timed out at: offered to the others first.
    pub(crate) timed_out_at: Option<ConsumerId>,
    /// Its pin bucket, once a pinned strategy has worked it out (parsing the metadata for a
    /// correlation id costs too much to repeat each time a full consumer makes it wait).
    pub(crate) bucket: Option<u64>,
}

/// What a consumer sent back about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver it again, counting a retry (also what KurrentDB's `Unknown` means).
    Retry,
    /// Park it now, whatever its retry count.
    Park,
    /// Drop it: neither delivered again nor parked.
    Skip,
}

/// Why a message is being parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParkReason {
    /// A consumer asked for it.
    Nacked,
    /// It was retried `max_retry_count` times.
    MaxRetries,
}

/// One delivery the task must send.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) consumer: ConsumerId,
    pub(crate) event: Arc<RecordedEvent>,
    pub(crate) retry_count: u32,
}

/// A consumer as the dispatcher sees it.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerState {
    pub(crate) id: ConsumerId,
    pub(crate) name: String,
    pub(crate) capacity: u32,
    pub(crate) in_flight: u32,
    pub(crate) delivered: u64,
    pub(crate) acked: u64,
    pub(crate) nacked: u64,
}

#[derive(Debug)]
struct InFlight {
    /// Distinguishes two events with one id (possible in `$all`).
    delivery: u64,
    consumer: ConsumerId,
    deadline: Instant,
    message: Message,
}

/// Where a message goes.
enum Choice {
    /// To the consumer at this index.
    To(usize),
    /// Nobody can take anything now: stop dispatching.
    NoRoom,
    /// Only this message's consumer is full: leave it queued and look further.
    Later,
}

/// The dispatcher of one group.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    strategy: ConsumerStrategy,
    max_retry_count: u32,
    message_timeout: Duration,
    /// In the order they connected.
    consumers: Vec<ConsumerState>,
    /// Where round robin looks first.
    next_turn: usize,
    pins: HashMap<u64, ConsumerId>,
    /// Delivered before and due again, first.
    retries: VecDeque<Message>,
    /// Read from the source, not yet delivered.
    fresh: VecDeque<Message>,
    in_flight: HashMap<Uuid, Vec<InFlight>>,
    deadlines: BTreeSet<(Instant, u64, Uuid)>,
    next_delivery: u64,
    /// Source keys read and not finished.
    outstanding: BTreeSet<u64>,
    /// Every source key below this was read (or examined and skipped by the filter).
    read_through: u64,
    /// Messages the task must park, then report with [`Dispatcher::parked`].
    to_park: Vec<(Message, ParkReason)>,
    /// Replayed parked records finished since the task last asked.
    replays_finished: Vec<u64>,
    /// Messages finished (acked, skipped, parked) since the last checkpoint was written.
    finished_since_checkpoint: u64,
}

impl Dispatcher {
    /// A dispatcher whose source starts at `checkpoint`: every key below it is finished.
    pub(crate) fn new(
        strategy: ConsumerStrategy,
        max_retry_count: u32,
        message_timeout: Duration,
        checkpoint: u64,
    ) -> Self {
        Dispatcher {
            strategy,
            max_retry_count,
            message_timeout,
            consumers: Vec::new(),
            next_turn: 0,
            pins: HashMap::new(),
            retries: VecDeque::new(),
            fresh: VecDeque::new(),
            in_flight: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_delivery: 0,
            outstanding: BTreeSet::new(),
            read_through: checkpoint,
            to_park: Vec::new(),
            replays_finished: Vec::new(),
            finished_since_checkpoint: 0,
        }
    }

    pub(crate) fn add_consumer(&mut self, id: ConsumerId, name: String, capacity: u32) {
        self.consumers.push(ConsumerState {
            id,
            name,
            capacity: capacity.max(1),
            in_flight: 0,
            delivered: 0,
            acked: 0,
            nacked: 0,
        });
    }

    /// Removes a consumer; what it had in flight is due again, counting a retry.
    pub(crate) fn remove_consumer(&mut self, id: ConsumerId) {
        let Some(index) = self.consumers.iter().position(|c| c.id == id) else {
            return;
        };
        self.consumers.remove(index);
        self.pins.retain(|_, owner| *owner != id);
        let ids: Vec<Uuid> = self
            .in_flight
            .iter()
            .filter(|(_, entries)| entries.iter().any(|entry| entry.consumer == id))
            .map(|(event_id, _)| *event_id)
            .collect();
        let mut returned = Vec::new();
        for event_id in ids {
            while let Some(entry) = self.take_in_flight(id, event_id) {
                returned.push(entry);
            }
        }
        // Back in the order they were delivered, ahead of other retries; those out of
        // retries parked in that order too.
        returned.sort_unstable_by_key(|entry| entry.delivery);
        let again: Vec<Message> = returned
            .into_iter()
            .filter_map(|entry| self.retried(entry.message))
            .collect();
        for message in again.into_iter().rev() {
            self.retries.push_front(message);
        }
    }

    /// The consumer gets nothing more, keeping what it has in flight; the streams pinned to
    /// it go to the others.
    pub(crate) fn stop_receiving(&mut self, id: ConsumerId) {
        if let Some(consumer) = self.consumers.iter_mut().find(|c| c.id == id) {
            consumer.capacity = 0;
        }
        self.pins.retain(|_, owner| *owner != id);
    }

    pub(crate) fn consumers(&self) -> &[ConsumerState] {
        &self.consumers
    }

    /// An event read from the source under `key` (its version or position).
    pub(crate) fn push_source(&mut self, event: Arc<RecordedEvent>, key: u64) {
        self.outstanding.insert(key);
        self.read_through = self.read_through.max(key + 1);
        self.fresh.push_back(Message {
            event,
            retry_count: 0,
            origin: Origin::Source(key),
            timed_out_at: None,
            bucket: None,
        });
    }

    /// Every source key below `end` was examined (the filter skipped those not pushed).
    pub(crate) fn examined(&mut self, end: u64) {
        self.read_through = self.read_through.max(end);
    }

    /// A parked message replayed: delivered again, its retries counted afresh.
    pub(crate) fn push_replay(&mut self, event: Arc<RecordedEvent>, parked: u64) {
        self.retries.push_back(Message {
            event,
            retry_count: 0,
            origin: Origin::Parked(parked),
            timed_out_at: None,
            bucket: None,
        });
    }

    /// Events read from the source and not yet delivered.
    pub(crate) fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    /// Events due for a retry, replayed ones included.
    pub(crate) fn retry_len(&self) -> usize {
        self.retries.len()
    }

    /// Events in flight to all consumers.
    pub(crate) fn in_flight_len(&self) -> usize {
        self.in_flight.values().map(Vec::len).sum()
    }

    /// Hands out what the consumers have room for, retries first.
    pub(crate) fn dispatch(&mut self, now: Instant) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        for from_retries in [true, false] {
            let mut waiting = VecDeque::new();
            loop {
                let queue = if from_retries {
                    &mut self.retries
                } else {
                    &mut self.fresh
                };
                let Some(mut message) = queue.pop_front() else {
                    break;
                };
                match self.choose(&mut message) {
                    Choice::To(index) => deliveries.push(self.deliver(index, message, now)),
                    Choice::Later => waiting.push_back(message),
                    Choice::NoRoom => {
                        waiting.push_back(message);
                        break;
                    }
                }
            }
            let queue = if from_retries {
                &mut self.retries
            } else {
                &mut self.fresh
            };
            // What waited goes back in front, in its order.
            while let Some(message) = waiting.pop_back() {
                queue.push_front(message);
            }
        }
        deliveries
    }

    fn deliver(&mut self, index: usize, message: Message, now: Instant) -> Delivery {
        let consumer = &mut self.consumers[index];
        consumer.in_flight += 1;
        consumer.delivered += 1;
        let id = consumer.id;
        let delivery = self.next_delivery;
        self.next_delivery += 1;
        let deadline = now + self.message_timeout;
        let event_id = message.event.id;
        self.deadlines.insert((deadline, delivery, event_id));
        let out = Delivery {
            consumer: id,
            event: Arc::clone(&message.event),
            retry_count: message.retry_count,
        };
        self.in_flight.entry(event_id).or_default().push(InFlight {
            delivery,
            consumer: id,
            deadline,
            message,
        });
        out
    }

    fn has_room(consumer: &ConsumerState) -> bool {
        consumer.in_flight < consumer.capacity
    }

    fn choose(&mut self, message: &mut Message) -> Choice {
        let count = self.consumers.len();
        if count == 0 {
            return Choice::NoRoom;
        }
        match self.strategy {
            ConsumerStrategy::RoundRobin => {
                // A consumer that let this message time out gets it back only if no other
                // has room: it may be stuck.
                for avoid in [message.timed_out_at, None] {
                    for step in 0..count {
                        let index = (self.next_turn + step) % count;
                        let consumer = &self.consumers[index];
                        if Self::has_room(consumer) && Some(consumer.id) != avoid {
                            self.next_turn = (index + 1) % count;
                            return Choice::To(index);
                        }
                    }
                }
                Choice::NoRoom
            }
            ConsumerStrategy::DispatchToSingle => [message.timed_out_at, None]
                .into_iter()
                .find_map(|avoid| {
                    self.consumers
                        .iter()
                        .position(|consumer| Self::has_room(consumer) && Some(consumer.id) != avoid)
                })
                .map_or(Choice::NoRoom, Choice::To),
            ConsumerStrategy::Pinned | ConsumerStrategy::PinnedByCorrelation => {
                if !self.consumers.iter().any(Self::has_room) {
                    return Choice::NoRoom;
                }
                let bucket = *message
                    .bucket
                    .get_or_insert_with(|| self.bucket(&message.event));
                let owner = self.owner(bucket);
                let index = self
                    .consumers
                    .iter()
                    .position(|consumer| consumer.id == owner)
                    .expect("a bucket's owner is a connected consumer");
                if Self::has_room(&self.consumers[index]) {
                    Choice::To(index)
                } else {
                    Choice::Later
                }
            }
        }
    }

    fn bucket(&self, event: &RecordedEvent) -> u64 {
        let mut hasher = DefaultHasher::new();
        match self.strategy {
            ConsumerStrategy::PinnedByCorrelation => match correlation_id(event) {
                Some(correlation) => correlation.hash(&mut hasher),
                None => event.stream.hash(&mut hasher),
            },
            _ => event.stream.hash(&mut hasher),
        }
        hasher.finish() % PIN_BUCKETS
    }

    /// The bucket's consumer, given to the one owning the fewest buckets if it has none.
    fn owner(&mut self, bucket: u64) -> ConsumerId {
        if let Some(owner) = self.pins.get(&bucket) {
            return *owner;
        }
        let mut buckets_of: HashMap<ConsumerId, usize> = HashMap::new();
        for owner in self.pins.values() {
            *buckets_of.entry(*owner).or_default() += 1;
        }
        let owner = self
            .consumers
            .iter()
            .min_by_key(|consumer| buckets_of.get(&consumer.id).copied().unwrap_or(0))
            .expect("owner is asked only with consumers connected")
            .id;
        self.pins.insert(bucket, owner);
        owner
    }

    /// Takes `consumer`'s in-flight entry of `event_id`, the first delivered if it holds
    /// two (possible in `$all`).
    fn take_in_flight(&mut self, consumer: ConsumerId, event_id: Uuid) -> Option<InFlight> {
        let index = self
            .in_flight
            .get(&event_id)?
            .iter()
            .position(|entry| entry.consumer == consumer)?;
        Some(self.take_entry(event_id, index))
    }

    /// Takes the in-flight entry of `event_id` made by delivery number `delivery`.
    fn take_delivery(&mut self, event_id: Uuid, delivery: u64) -> Option<InFlight> {
        let index = self
            .in_flight
            .get(&event_id)?
            .iter()
            .position(|entry| entry.delivery == delivery)?;
        Some(self.take_entry(event_id, index))
    }

    fn take_entry(&mut self, event_id: Uuid, index: usize) -> InFlight {
        let entries = self
            .in_flight
            .get_mut(&event_id)
            .expect("the entry was just found");
        let entry = entries.remove(index);
        if entries.is_empty() {
            self.in_flight.remove(&event_id);
        }
        self.deadlines
            .remove(&(entry.deadline, entry.delivery, event_id));
        if let Some(owner) = self.consumers.iter_mut().find(|c| c.id == entry.consumer) {
            owner.in_flight -= 1;
        }
        entry
    }

    /// The consumer acknowledges these events: they are finished. Ids not in flight to this
    /// consumer are ignored: an ack that comes after a timeout took the event to another
    /// consumer must not finish that delivery, which may even be of another event with the
    /// same id.
    pub(crate) fn ack(&mut self, consumer: ConsumerId, ids: &[Uuid]) {
        for id in ids {
            if let Some(entry) = self.take_in_flight(consumer, *id) {
                if let Some(state) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                    state.acked += 1;
                }
                self.finish(entry.message.origin);
            }
        }
    }

    /// The consumer could not handle these events.
    pub(crate) fn nack(&mut self, consumer: ConsumerId, ids: &[Uuid], action: NackAction) {
        for id in ids {
            let Some(entry) = self.take_in_flight(consumer, *id) else {
                continue;
            };
            if let Some(state) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                state.nacked += 1;
            }
            match action {
                NackAction::Retry => self.retry_or_park(entry.message),
                NackAction::Park => self.to_park.push((entry.message, ParkReason::Nacked)),
                NackAction::Skip => self.finish(entry.message.origin),
            }
        }
    }

    /// Takes back what has been in flight past the message timeout, to retry or park.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, delivery, event_id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let mut entry = self
                .take_delivery(event_id, delivery)
                .expect("every deadline is of an entry in flight");
            entry.message.timed_out_at = Some(entry.consumer);
            self.retry_or_park(entry.message);
        }
    }

    /// Queues a message again, last of the retries, or parks it.
    fn retry_or_park(&mut self, message: Message) {
        if let Some(message) = self.retried(message) {
            self.retries.push_back(message);
        }
    }

    /// The message with one more retry counted, or `None` when it has been retried as often
    /// as allowed and is parked instead.
    fn retried(&mut self, mut message: Message) -> Option<Message> {
        if message.retry_count >= self.max_retry_count {
            self.to_park.push((message, ParkReason::MaxRetries));
            return None;
        }
        message.retry_count += 1;
        Some(message)
    }

    /// The messages to park; each must be reported with [`Dispatcher::parked`] once durable.
    pub(crate) fn take_to_park(&mut self) -> Vec<(Message, ParkReason)> {
        std::mem::take(&mut self.to_park)
    }

    /// A message taken from [`Dispatcher::take_to_park`] is parked durably.
    pub(crate) fn parked(&mut self, origin: Origin) {
        self.finish(origin);
    }

    /// Replayed parked records finished since the last call: their old records can go.
    pub(crate) fn take_replays_finished(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.replays_finished)
    }

    fn finish(&mut self, origin: Origin) {
        match origin {
            Origin::Source(key) => {
                self.outstanding.remove(&key);
            }
            Origin::Parked(record) => self.replays_finished.push(record),
        }
        self.finished_since_checkpoint += 1;
    }

    /// When the next message times out, if any is in flight.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _, _)| *deadline)
    }

    /// Whether every source event read is finished.
    pub(crate) fn all_finished(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Every source key below this is finished.
    pub(crate) fn checkpoint(&self) -> u64 {
        self.outstanding
            .first()
            .copied()
            .unwrap_or(self.read_through)
    }

    /// Every source key below this was read.
    pub(crate) fn read_through(&self) -> u64 {
        self.read_through
    }

    /// Messages finished since the last [`Dispatcher::checkpointed`].
    pub(crate) fn finished_since_checkpoint(&self) -> u64 {
        self.finished_since_checkpoint
    }

    /// A checkpoint was written.
    pub(crate) fn checkpointed(&mut self) {
        self.finished_since_checkpoint = 0;
    }
}

/// The `$correlationId` of an event's JSON metadata, as KurrentDB's clients write it.
fn correlation_id(event: &RecordedEvent) -> Option<String> {
    let metadata: serde_json::Value = serde_json::from_slice(&event.metadata).ok()?;
    metadata.get("$correlationId")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests;
