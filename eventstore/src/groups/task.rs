//! A group's task: reads the group's source, feeds its [`Dispatcher`], and carries out what
//! the dispatcher decides: deliveries to consumers, parked messages and checkpoints written
//! durably, replays of parked messages.
//!
//! Invariants:
//! - The task is the only writer of its group's checkpoint (`c` key) and parked records
//!   (`q` keys), and writes them only while its `live` flag is set (see `runtime.rs`).
//! - A checkpoint is written only after the parks below it are durable: the dispatcher
//!   counts a parked message as finished only when told the park is on disk.
//! - Each consumer's channel holds at most twice its capacity: what it has in flight, and as
//!   much again that a timeout took back while still unread. A consumer whose channel is
//!   full has not read for a whole message timeout: it is disconnected, and what it held goes
//!   to the others.
//! - The task holds no sender of its own command channel, only a weak one for the consumers
//!   it connects: once the store's registry and every consumer let go, the channel closes
//!   and the task ends.
//! - The source is read only while the buffer of undelivered events has room: a group whose
//!   consumers lag holds at most a buffer's worth, and the store's subscription waits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU64;
use std::sync::{Arc, Weak};
use std::time::Instant;

use caskade_engine::WriteBatch;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::event::{Position, RecordedEvent, StreamVersion};
use crate::format::{checkpoint_key, encode_checkpoint, parked_key, parked_key_prefix};
use crate::groups::consumer::{Command, GroupAcks, GroupConsumer};
use crate::groups::definition::target_name;
use crate::groups::dispatcher::{ConsumerId, Dispatcher, Message, Origin, ParkReason};
use crate::groups::runtime::{ConsumerInfo, GroupEvent, GroupInfo, GroupStatus, blocking};
use crate::groups::{GroupDefinition, GroupTarget};
use crate::read::ReadStream;
use crate::store::{EventStore, Shared, corrupt};
use crate::subscription::{Ready, SubscribeFrom, Subscription, SubscriptionMessage};

/// How often an `$all` group's source says how far its filter has looked.
const EXAMINED_EVERY: NonZeroU64 = NonZeroU64::new(256).expect("256 is not zero");

/// A parked message's record (`FORMAT.md`, "Parked message value").
#[derive(Serialize, Deserialize)]
struct ParkedRecord {
    format: u8,
    stream: String,
    version: u64,
    position: u64,
    reason: StoredParkReason,
    parked_at_us: i64,
}

const PARKED_FORMAT: u8 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredParkReason {
    Nacked,
    MaxRetries,
}

/// Why a group's task ended.
enum Stopped {
    /// Deleted, updated or restarted.
    Asked(&'static str),
    /// The store was dropped.
    StoreGone,
    /// Reading the source or writing the group's records failed.
    Failed(Arc<Error>),
}

/// A consumer's channel and when it connected.
struct Connected {
    events: mpsc::Sender<Result<GroupEvent>>,
    since: Instant,
}

pub(crate) struct GroupTask {
    pub(crate) shared: Weak<Shared>,
    pub(crate) commands: mpsc::WeakSender<Command>,
    pub(crate) live: Arc<Mutex<bool>>,
    pub(crate) definition: GroupDefinition,
}

/// What a running group's task keeps besides its dispatcher.
struct GroupState {
    dispatcher: Dispatcher,
    consumers: HashMap<ConsumerId, Connected>,
    next_consumer: u64,
    caught_up: bool,
    /// The checkpoint last written (or read at start).
    checkpointed: u64,
    checkpointed_at: Instant,
    /// Parked records not yet replayed or being replayed, and the next record's number.
    parked: HashSet<u64>,
    next_record: u64,
    /// Parked records queued for replay or being replayed.
    replaying: HashSet<u64>,
    /// Parked records queued for replay and not yet read back, oldest first.
    replay_queue: VecDeque<u64>,
}

impl GroupTask {
    fn store(&self) -> Option<EventStore> {
        self.shared.upgrade().map(|shared| EventStore { shared })
    }

    pub(crate) async fn run(self, mut commands: mpsc::Receiver<Command>) {
        let stopped = self.serve(&mut commands).await;
        if let Some(store) = self.store() {
            store.shared.runtimes.forget(
                &self.definition.target,
                &self.definition.name,
                |running| Arc::ptr_eq(&running.live, &self.live),
            );
        }
        // Whoever is still waiting to connect hears why the group stopped.
        commands.close();
        while let Ok(command) = commands.try_recv() {
            if let Command::Connect { reply, .. } = command {
                let _ = reply.send(Err(self.stop_error(&stopped)));
            }
        }
    }

    /// Runs the group until it stops, then tells its consumers why.
    async fn serve(&self, commands: &mut mpsc::Receiver<Command>) -> Stopped {
        let Some(store) = self.store() else {
            return Stopped::StoreGone;
        };
        let definition = self.definition.clone();
        // Both read the disk (the checkpoint, the parked records, a stream's head).
        let started = blocking(move || {
            let progress = store.group_progress(&definition)?;
            let source = open_source(&store, &definition, progress.checkpoint)?;
            Ok((source, progress))
        })
        .await;
        let (mut source, progress) = match started {
            Ok(started) => started,
            Err(error) => return Stopped::Failed(Arc::new(error)),
        };
        let settings = &self.definition.settings;
        let mut state = GroupState {
            dispatcher: Dispatcher::new(
                settings.consumer_strategy,
                settings.max_retry_count,
                settings.message_timeout,
                progress.checkpoint,
            ),
            consumers: HashMap::new(),
            next_consumer: 0,
            caught_up: false,
            checkpointed: progress.checkpoint,
            checkpointed_at: Instant::now(),
            next_record: progress.parked.last().map_or(0, |last| last + 1),
            parked: progress.parked.into_iter().collect(),
            replaying: HashSet::new(),
            replay_queue: VecDeque::new(),
        };
        let stopped = match self.serve_loop(&mut state, &mut source, commands).await {
            Ok(stopped) => stopped,
            Err(error) => Stopped::Failed(Arc::new(error)),
        };
        if let Stopped::Failed(error) = &stopped {
            tracing::warn!(group = %self.definition.name, %error, "persistent subscription group stopped");
        }
        for connected in state.consumers.values() {
            let _ = connected.events.try_send(Err(self.stop_error(&stopped)));
        }
        stopped
    }

    /// The error a consumer gets when the group stops.
    fn stop_error(&self, stopped: &Stopped) -> Error {
        let reason = match stopped {
            Stopped::Asked(reason) => reason,
            Stopped::StoreGone => "the store has closed",
            Stopped::Failed(cause) => {
                if let Error::StreamDeleted { stream } = &**cause {
                    return Error::StreamDeleted {
                        stream: stream.clone(),
                    };
                }
                return Error::GroupFailed {
                    target: target_name(&self.definition.target),
                    group: self.definition.name.clone(),
                    cause: Arc::clone(cause),
                };
            }
        };
        Error::GroupDropped {
            target: target_name(&self.definition.target),
            group: self.definition.name.clone(),
            reason,
        }
    }

    async fn serve_loop(
        &self,
        state: &mut GroupState,
        source: &mut Subscription,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<Stopped> {
        let settings = &self.definition.settings;
        loop {
            if !*self.live.lock() {
                return Ok(Stopped::Asked("it was stopped"));
            }
            self.settle(state).await?;
            let buffer = if state.caught_up {
                settings.live_buffer_size
            } else {
                settings.history_buffer_size
            } as usize;
            let room = state.dispatcher.fresh_len() < buffer;
            let wake = self.next_wake(state);
            tokio::select! {
                biased;
                command = commands.recv() => {
                    let Some(command) = command else {
                        return Ok(Stopped::StoreGone);
                    };
                    if let Some(reason) = self.handle(state, command).await? {
                        return Ok(Stopped::Asked(reason));
                    }
                }
                message = source.next(), if room => {
                    let Some(message) = message else {
                        return Ok(Stopped::StoreGone);
                    };
                    self.take_source(state, message?);
                    // Take what else the source has ready, up to a read batch.
                    for _ in 1..settings.read_batch_size {
                        if state.dispatcher.fresh_len() >= buffer {
                            break;
                        }
                        match source.try_next() {
                            Ready::Message(message) => self.take_source(state, message?),
                            Ready::Ended => return Ok(Stopped::StoreGone),
                            Ready::Nothing => break,
                        }
                    }
                }
                () = sleep_until(wake), if wake.is_some() => {
                    state.dispatcher.expire(Instant::now());
                }
            }
        }
    }

    fn take_source(&self, state: &mut GroupState, message: SubscriptionMessage) {
        match message {
            SubscriptionMessage::Event(event) => {
                let key = match self.definition.target {
                    GroupTarget::Stream(_) => event.version.0,
                    GroupTarget::All => event.position.0,
                };
                state.dispatcher.push_source(Arc::new(event), key);
            }
            SubscriptionMessage::Checkpoint(position) => {
                state.dispatcher.examined(position.0 + 1);
            }
            SubscriptionMessage::CaughtUp => state.caught_up = true,
        }
    }

    /// When the task must look again without a command or an event: the next message
    /// timeout, or when a checkpoint falls due.
    fn next_wake(&self, state: &GroupState) -> Option<Instant> {
        let checkpoint_due = self
            .checkpoint_may_wait(state)
            .then(|| state.checkpointed_at + self.definition.settings.checkpoint_after);
        match (state.dispatcher.next_deadline(), checkpoint_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a checkpoint is due once `checkpoint_after` has passed since the last: the
    /// group has moved on by `min_checkpoint_count` events, or finished everything it read
    /// (an idle group, or one whose filter skipped what it read, records its place too).
    fn checkpoint_may_wait(&self, state: &GroupState) -> bool {
        state.dispatcher.checkpoint() > state.checkpointed
            && (state.dispatcher.finished_since_checkpoint()
                >= u64::from(self.definition.settings.min_checkpoint_count)
                || state.dispatcher.all_finished())
    }

    /// Whether a checkpoint is due now.
    fn checkpoint_due(&self, state: &GroupState, now: Instant) -> bool {
        let settings = &self.definition.settings;
        let moved = state.dispatcher.checkpoint() > state.checkpointed;
        moved
            && (state.dispatcher.finished_since_checkpoint()
                >= u64::from(settings.max_checkpoint_count)
                || (self.checkpoint_may_wait(state)
                    && now >= state.checkpointed_at + settings.checkpoint_after))
    }

    /// Carries out what the dispatcher decided: parks, deliveries, forgotten replays, a
    /// checkpoint when one is due.
    async fn settle(&self, state: &mut GroupState) -> Result<()> {
        self.replay_some(state).await?;
        let to_park = state.dispatcher.take_to_park();
        if !to_park.is_empty() {
            self.park(state, to_park).await?;
        }
        let now = Instant::now();
        for delivery in state.dispatcher.dispatch(now) {
            let sent = state
                .consumers
                .get(&delivery.consumer)
                .is_some_and(|connected| {
                    connected
                        .events
                        .try_send(Ok(GroupEvent {
                            event: delivery.event,
                            retry_count: delivery.retry_count,
                        }))
                        .is_ok()
                });
            if !sent {
                // Gone without its disconnect taken yet, or not reading for a whole message
                // timeout: it is disconnected (its channel closes), and what it holds goes to
                // the others.
                state.consumers.remove(&delivery.consumer);
                state.dispatcher.remove_consumer(delivery.consumer);
            }
        }
        let finished = state.dispatcher.take_replays_finished();
        if !finished.is_empty() {
            let prefix = parked_key_prefix(&self.definition.target, &self.definition.name);
            let mut batch = WriteBatch::new();
            for record in &finished {
                batch.delete(parked_key(&prefix, *record));
                state.parked.remove(record);
                state.replaying.remove(record);
            }
            self.write(batch).await?;
        }
        if self.checkpoint_due(state, now) {
            self.write_checkpoint(state, now).await?;
        }
        Ok(())
    }

    /// Writes the checkpoint if it has moved since the last one written.
    async fn write_checkpoint(&self, state: &mut GroupState, now: Instant) -> Result<()> {
        let checkpoint = state.dispatcher.checkpoint();
        if checkpoint <= state.checkpointed {
            return Ok(());
        }
        let key = checkpoint_key(&self.definition.target, &self.definition.name);
        let mut batch = WriteBatch::new();
        batch.put(key, encode_checkpoint(checkpoint));
        self.write(batch).await?;
        state.checkpointed = checkpoint;
        state.checkpointed_at = now;
        state.dispatcher.checkpointed();
        Ok(())
    }

    async fn park(
        &self,
        state: &mut GroupState,
        to_park: Vec<(Message, ParkReason)>,
    ) -> Result<()> {
        let prefix = parked_key_prefix(&self.definition.target, &self.definition.name);
        let mut batch = WriteBatch::new();
        let parked_at_us = chrono::Utc::now().timestamp_micros();
        let mut records = Vec::with_capacity(to_park.len());
        for (message, reason) in &to_park {
            let record = state.next_record;
            state.next_record += 1;
            let value = ParkedRecord {
                format: PARKED_FORMAT,
                stream: message.event.stream.to_string(),
                version: message.event.version.0,
                position: message.event.position.0,
                reason: match reason {
                    ParkReason::Nacked => StoredParkReason::Nacked,
                    ParkReason::MaxRetries => StoredParkReason::MaxRetries,
                },
                parked_at_us,
            };
            batch.put(
                parked_key(&prefix, record),
                serde_json::to_vec(&value).expect("a parked record serializes"),
            );
            // A replayed message parked again: its old record goes in the same batch.
            if let Origin::Parked(old) = message.origin {
                batch.delete(parked_key(&prefix, old));
            }
            records.push(record);
        }
        self.write(batch).await?;
        for ((message, _), record) in to_park.into_iter().zip(records) {
            if let Origin::Parked(old) = message.origin {
                state.parked.remove(&old);
                state.replaying.remove(&old);
            }
            state.parked.insert(record);
            state.dispatcher.parked(message.origin);
        }
        Ok(())
    }

    /// Writes `batch` durably, unless the group was stopped (then it is dropped: the group's
    /// keys belong to whoever stopped it).
    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let live = Arc::clone(&self.live);
        blocking(move || {
            let live = live.lock();
            if *live {
                store.shared.engine.write(batch)?;
            }
            Ok(())
        })
        .await
    }

    /// Handles one command; `Some` when the group must stop.
    async fn handle(
        &self,
        state: &mut GroupState,
        command: Command,
    ) -> Result<Option<&'static str>> {
        match command {
            Command::Connect {
                name,
                capacity,
                reply,
            } => {
                let max = self.definition.settings.max_subscriber_count;
                if max > 0 && state.consumers.len() >= max as usize {
                    let _ = reply.send(Err(Error::GroupFull {
                        target: target_name(&self.definition.target),
                        group: self.definition.name.clone(),
                        max,
                    }));
                    return Ok(None);
                }
                // The registry's sender is alive while this command is handled.
                let Some(commands) = self.commands.upgrade() else {
                    return Ok(Some("it was stopped"));
                };
                let id = ConsumerId(state.next_consumer);
                state.next_consumer += 1;
                let (events, receiver) = mpsc::channel(2 * capacity as usize);
                let consumer = GroupConsumer {
                    events: receiver,
                    acks: GroupAcks {
                        consumer: id,
                        commands,
                        target: self.definition.target.clone(),
                        group: self.definition.name.clone(),
                    },
                };
                if reply.send(Ok(consumer)).is_ok() {
                    state.dispatcher.add_consumer(id, name, capacity);
                    state.consumers.insert(
                        id,
                        Connected {
                            events,
                            since: Instant::now(),
                        },
                    );
                }
            }
            Command::Ack { consumer, ids } => state.dispatcher.ack(consumer, &ids),
            Command::Nack {
                consumer,
                ids,
                action,
            } => state.dispatcher.nack(consumer, &ids, action),
            Command::StopReceiving { consumer } => state.dispatcher.stop_receiving(consumer),
            Command::Disconnect { consumer } => {
                state.consumers.remove(&consumer);
                state.dispatcher.remove_consumer(consumer);
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info(state));
            }
            Command::Flush { reply } => {
                let _ = reply.send(self.write_checkpoint(state, Instant::now()).await);
            }
            Command::ReplayParked { limit, reply } => {
                let _ = reply.send(Ok(Self::queue_replay(state, limit)));
            }
            Command::Stop { reason } => return Ok(Some(reason)),
        }
        Ok(None)
    }

    /// Reads parked messages back into the dispatcher, oldest first; those whose event has
    /// since been deleted are forgotten.
    /// Queues parked records for replay, oldest first, leaving out those already queued or
    /// being replayed; returns how many were queued.
    fn queue_replay(state: &mut GroupState, limit: Option<u64>) -> u64 {
        let mut records: Vec<u64> = state
            .parked
            .iter()
            .filter(|record| !state.replaying.contains(record))
            .copied()
            .collect();
        records.sort_unstable();
        if let Some(limit) = limit {
            records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        state.replaying.extend(&records);
        state.replay_queue.extend(&records);
        records.len() as u64
    }

    /// Reads the next queued parked records back into the dispatcher while its retries have
    /// room (a live buffer's worth), so a long replay never holds more than that in memory.
    /// Records whose event has since been deleted are forgotten.
    async fn replay_some(&self, state: &mut GroupState) -> Result<()> {
        let room = (self.definition.settings.live_buffer_size as usize)
            .saturating_sub(state.dispatcher.retry_len());
        if state.replay_queue.is_empty() || room == 0 {
            return Ok(());
        }
        let Some(store) = self.store() else {
            return Ok(());
        };
        let count = room.min(state.replay_queue.len());
        let records: Vec<u64> = state.replay_queue.drain(..count).collect();
        let prefix = parked_key_prefix(&self.definition.target, &self.definition.name);
        let found = blocking(move || {
            let mut found = Vec::with_capacity(records.len());
            for record in records {
                let key = parked_key(&prefix, record);
                let event = match store.shared.engine.get(&key)? {
                    Some(value) => {
                        let parked: ParkedRecord =
                            serde_json::from_slice(&value).map_err(|_| {
                                corrupt(&key, "a parked message record that does not decode")
                            })?;
                        store.parked_event(&parked)?
                    }
                    None => None,
                };
                found.push((record, event));
            }
            Ok(found)
        })
        .await?;
        let mut gone = WriteBatch::new();
        let prefix = parked_key_prefix(&self.definition.target, &self.definition.name);
        for (record, event) in found {
            if let Some(event) = event {
                state.dispatcher.push_replay(Arc::new(event), record);
            } else {
                gone.delete(parked_key(&prefix, record));
                state.parked.remove(&record);
                state.replaying.remove(&record);
            }
        }
        self.write(gone).await
    }

    fn info(&self, state: &GroupState) -> GroupInfo {
        let now = Instant::now();
        let consumers = state
            .dispatcher
            .consumers()
            .iter()
            .map(|consumer| {
                let seconds = state
                    .consumers
                    .get(&consumer.id)
                    .map_or(0.0, |connected| (now - connected.since).as_secs_f64());
                #[expect(clippy::cast_precision_loss, reason = "a rate needs no exact count")]
                let acked_per_second = if seconds > 0.0 {
                    consumer.acked as f64 / seconds
                } else {
                    0.0
                };
                ConsumerInfo {
                    id: consumer.id.0,
                    name: consumer.name.clone(),
                    capacity: consumer.capacity,
                    in_flight: consumer.in_flight,
                    delivered: consumer.delivered,
                    acked: consumer.acked,
                    nacked: consumer.nacked,
                    acked_per_second,
                }
            })
            .collect();
        GroupInfo {
            definition: self.definition.clone(),
            status: if state.caught_up {
                GroupStatus::Live
            } else {
                GroupStatus::CatchingUp
            },
            consumers,
            last_checkpointed: state.checkpointed.checked_sub(1),
            last_known: state.dispatcher.read_through().checked_sub(1),
            parked: state.parked.len() as u64,
            in_flight: state.dispatcher.in_flight_len() as u64,
            buffered: state.dispatcher.fresh_len() as u64,
            retrying: state.dispatcher.retry_len() as u64,
        }
    }
}

impl EventStore {
    /// The event a parked record names, if it can still be read.
    fn parked_event(&self, parked: &ParkedRecord) -> Result<Option<RecordedEvent>> {
        let read = ReadStream::forwards()
            .from(StreamVersion(parked.version))
            .max_count(1);
        let mut events = match self.read_stream(&parked.stream, read) {
            Ok(events) => events,
            Err(Error::StreamDeleted { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        match events.next().transpose()? {
            Some(event)
                if event.version.0 == parked.version && event.position.0 == parked.position =>
            {
                Ok(Some(event))
            }
            _ => Ok(None),
        }
    }
}

/// The group's source: a catch-up subscription from its checkpoint.
fn open_source(
    store: &EventStore,
    definition: &GroupDefinition,
    checkpoint: u64,
) -> Result<Subscription> {
    Ok(match &definition.target {
        GroupTarget::Stream(stream) => {
            let from = match checkpoint.checked_sub(1) {
                None => SubscribeFrom::Start,
                Some(last) => SubscribeFrom::After(StreamVersion(last)),
            };
            store.subscribe_stream(stream, from)?
        }
        GroupTarget::All => {
            let from = match checkpoint.checked_sub(1) {
                None => SubscribeFrom::Start,
                Some(last) => SubscribeFrom::After(Position(last)),
            };
            store.subscribe_all_with_checkpoints(from, definition.filter.clone(), EXAMINED_EVERY)
        }
    })
}

async fn sleep_until(wake: Option<Instant>) {
    if let Some(wake) = wake {
        tokio::time::sleep_until(wake.into()).await;
    }
}
