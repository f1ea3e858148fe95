//! Running groups: the registry of the tasks of the groups in use, and the store's calls that
//! reach them (connect, info, replay parked, restart).
//!
//! A group's task (`task.rs`) starts when a call first needs it and runs until the group is
//! deleted, updated or restarted, its source fails, or the store goes away. Invariants:
//! - At most one live task runs per group (a stopped one may still be finishing): tasks
//!   start under the lock that orders creates, updates and deletes, after reading the
//!   definition, so a task never starts on a definition already replaced or deleted.
//! - Each task writes its group's checkpoint and parked records only while its `live` flag
//!   is set. Deleting, updating or restarting a group clears the flag under the flag's lock,
//!   so once that call returns no write of the stopped task can land after it (a deleted
//!   group is never brought back by a checkpoint).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::event::{Position, RecordedEvent, StreamVersion};
use crate::format::{checkpoint_key, decode_checkpoint, parked_key_prefix, parked_record};
use crate::groups::consumer::{Command, GroupConsumer};
use crate::groups::definition::target_name;
use crate::groups::task::GroupTask;
use crate::groups::{GroupDefinition, GroupStart, GroupTarget};
use crate::store::{EventStore, corrupt};

/// Commands a consumer may send before the group's task takes them.
const COMMAND_CAPACITY: usize = 1024;

/// An event delivered to a consumer of a group.
#[derive(Debug, Clone)]
pub struct GroupEvent {
    /// The event.
    pub event: Arc<RecordedEvent>,
    /// How many times it was delivered before (to any consumer of the group).
    pub retry_count: u32,
}

/// What a group's task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    /// No consumer has connected since the store opened (or since the group restarted).
    Idle,
    /// Reading what was appended before its consumers connected.
    CatchingUp,
    /// Delivering events as they are appended.
    Live,
}

/// A connected consumer, as [`GroupInfo`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerInfo {
    /// The group's number for it, in the order consumers connected.
    pub id: u64,
    /// The name it gave.
    pub name: String,
    /// The most events it may have in flight.
    pub capacity: u32,
    /// Events delivered to it and not yet acked or nacked.
    pub in_flight: u32,
    /// Events delivered to it.
    pub delivered: u64,
    /// Events it acked.
    pub acked: u64,
    /// Events it nacked.
    pub nacked: u64,
    /// Events it acked per second since it connected.
    pub acked_per_second: f64,
}

/// A group's state.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// Its definition.
    pub definition: GroupDefinition,
    /// What its task is doing.
    pub status: GroupStatus,
    /// Its consumers, in the order they connected.
    pub consumers: Vec<ConsumerInfo>,
    /// The last version (or position) of the durable checkpoint: everything up to it is
    /// finished. `None` if nothing is yet.
    pub last_checkpointed: Option<u64>,
    /// The last version (or position) read from the group's source, `None` before any.
    pub last_known: Option<u64>,
    /// Parked messages whose replay has not finished.
    pub parked: u64,
    /// Events in flight to consumers.
    pub in_flight: u64,
    /// Events read and waiting for a consumer with room.
    pub buffered: u64,
    /// Events due to be delivered again, replayed parked ones included.
    pub retrying: u64,
}

/// A running group, as the registry keeps it.
pub(crate) struct RunningGroup {
    pub(crate) commands: mpsc::Sender<Command>,
    /// Set while the task may write; cleared, under the lock, to stop its writes.
    pub(crate) live: Arc<Mutex<bool>>,
}

/// The running groups of a store, by target and name.
#[derive(Default)]
pub(crate) struct Runtimes {
    pub(crate) running: Mutex<HashMap<(GroupTarget, String), RunningGroup>>,
}

impl Runtimes {
    /// Stops the group's task, if it runs: once this returns, the task writes nothing more.
    pub(crate) fn stop(&self, target: &GroupTarget, name: &str, reason: &'static str) {
        let removed = self
            .running
            .lock()
            .remove(&(target.clone(), name.to_owned()));
        if let Some(group) = removed {
            Self::stop_running(&group, reason);
        }
    }

    /// Removes the group's entry if `stale` holds of it.
    pub(crate) fn forget(
        &self,
        target: &GroupTarget,
        name: &str,
        stale: impl FnOnce(&RunningGroup) -> bool,
    ) {
        let mut running = self.running.lock();
        let key = (target.clone(), name.to_owned());
        if running.get(&key).is_some_and(stale) {
            running.remove(&key);
        }
    }

    /// Stops every running group.
    pub(crate) fn stop_all(&self, reason: &'static str) {
        let running = std::mem::take(&mut *self.running.lock());
        for group in running.values() {
            Self::stop_running(group, reason);
        }
    }

    fn stop_running(group: &RunningGroup, reason: &'static str) {
        *group.live.lock() = false;
        // A full queue is a task that will see its flag cleared at its next write, and its
        // consumers' channels closed when it ends.
        let _ = group.commands.try_send(Command::Stop { reason });
    }
}

impl EventStore {
    /// Connects a consumer named `consumer` to the group `name` on `target`, with room for
    /// `capacity` events in flight at once.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], [`Error::GroupFull`] if the group has its maximum of
    /// consumers, [`Error::InvalidGroupSettings`] for a zero capacity, the stream-name
    /// errors, [`Error::Engine`].
    pub async fn connect_group(
        &self,
        target: &GroupTarget,
        name: &str,
        consumer: &str,
        capacity: u32,
    ) -> Result<GroupConsumer> {
        if capacity == 0 {
            return Err(Error::InvalidGroupSettings {
                setting: "buffer_size",
                reason: "must be at least 1",
            });
        }
        // A connect queued behind an update, a delete or a restart is refused by the task
        // that stopped: it is tried once more, against the group as it is now.
        let mut retried = false;
        loop {
            let (reply, connected) = oneshot::channel();
            let connect = Command::Connect {
                name: consumer.to_owned(),
                capacity,
                reply,
            };
            self.send_to_group(target, name, connect).await?;
            match connected.await.map_err(|_| dropped(target, name))? {
                Err(Error::GroupDropped { .. }) if !retried => retried = true,
                connected => return connected,
            }
        }
    }

    /// The state of the group `name` on `target`.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], the stream-name errors, [`Error::Engine`],
    /// [`Error::Corrupt`].
    pub async fn group_info(&self, target: &GroupTarget, name: &str) -> Result<GroupInfo> {
        let running = self.running_group(target, name);
        if let Some(commands) = running {
            let (reply, info) = oneshot::channel();
            if commands.send(Command::Info { reply }).await.is_ok()
                && let Ok(info) = info.await
            {
                return Ok(info);
            }
        }
        let store = self.clone();
        let (target, name) = (target.clone(), name.to_owned());
        blocking(move || store.idle_info(&target, &name)).await
    }

    /// Delivers the group's parked messages again (at most `limit` of them, oldest first),
    /// returning how many were queued; those already being replayed are not queued twice.
    /// They are read back a live buffer's worth at a time as the consumers make room, and
    /// delivered before new events. A replayed message's parked record goes once it is acked,
    /// skipped or parked again, so a crash before then replays it again later; one whose
    /// event has since been deleted is dropped.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`], the stream-name errors, [`Error::Engine`],
    /// [`Error::Corrupt`].
    pub async fn replay_parked(
        &self,
        target: &GroupTarget,
        name: &str,
        limit: Option<u64>,
    ) -> Result<u64> {
        let (reply, replayed) = oneshot::channel();
        self.send_to_group(target, name, Command::ReplayParked { limit, reply })
            .await?;
        replayed.await.map_err(|_| dropped(target, name))?
    }

    /// Writes the checkpoint of every running group that has moved since its last, so that a
    /// store closed after this call resumes each group where its consumers are: what they
    /// acked before it is not delivered again. The groups keep running. A server calls this
    /// once its consumers' calls have ended, just before it closes the store.
    ///
    /// # Errors
    /// [`Error::Engine`] if a write fails (the first failure; every group is tried).
    pub async fn checkpoint_groups(&self) -> Result<()> {
        let running: Vec<mpsc::Sender<Command>> = self
            .shared
            .runtimes
            .running
            .lock()
            .values()
            .map(|group| group.commands.clone())
            .collect();
        let mut first_failure = Ok(());
        for commands in running {
            let (reply, written) = oneshot::channel();
            // A group that stopped meanwhile has nothing to write.
            if commands.send(Command::Flush { reply }).await.is_ok()
                && let Ok(Err(error)) = written.await
                && first_failure.is_ok()
            {
                first_failure = Err(error);
            }
        }
        first_failure
    }

    /// Restarts every running group: their consumers are disconnected (with
    /// [`Error::GroupDropped`]) and what they had not acked since the last checkpoint will
    /// be delivered again when consumers reconnect. Blocks while a group's checkpoint or park
    /// is being written (one sync at most per group): call it off the async workers.
    pub fn restart_groups(&self) {
        let _ordered = self.shared.groups.lock();
        self.shared.runtimes.stop_all("the groups were restarted");
    }

    fn running_group(&self, target: &GroupTarget, name: &str) -> Option<mpsc::Sender<Command>> {
        let running = self.shared.runtimes.running.lock();
        running
            .get(&(target.clone(), name.to_owned()))
            .map(|group| group.commands.clone())
    }

    /// Sends `command` to the group's task, starting the task if it is not running.
    async fn send_to_group(
        &self,
        target: &GroupTarget,
        name: &str,
        command: Command,
    ) -> Result<()> {
        let commands = if let Some(commands) = self.running_group(target, name) {
            commands
        } else {
            self.start_group_blocking(target, name).await?
        };
        match commands.send(command).await {
            Ok(()) => Ok(()),
            // The task ended without leaving the registry (it panicked): its entry goes, and
            // a new task takes the command.
            Err(mpsc::error::SendError(command)) => {
                self.shared.runtimes.forget(target, name, |running| {
                    running.commands.same_channel(&commands)
                });
                self.start_group_blocking(target, name)
                    .await?
                    .send(command)
                    .await
                    .map_err(|_| dropped(target, name))
            }
        }
    }

    async fn start_group_blocking(
        &self,
        target: &GroupTarget,
        name: &str,
    ) -> Result<mpsc::Sender<Command>> {
        let store = self.clone();
        let (target, name) = (target.clone(), name.to_owned());
        let runtime = tokio::runtime::Handle::current();
        blocking(move || store.start_group(&target, &name, &runtime)).await
    }

    /// Starts the group's task, unless another call started it first. Reads the definition
    /// under the lock that orders updates and deletes, so a task never starts on a
    /// definition already replaced or deleted.
    fn start_group(
        &self,
        target: &GroupTarget,
        name: &str,
        runtime: &tokio::runtime::Handle,
    ) -> Result<mpsc::Sender<Command>> {
        let _ordered = self.shared.groups.lock();
        let key = (target.clone(), name.to_owned());
        if let Some(group) = self.shared.runtimes.running.lock().get(&key) {
            return Ok(group.commands.clone());
        }
        let definition = self.existing_group(target, name)?;
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let live = Arc::new(Mutex::new(true));
        self.shared.runtimes.running.lock().insert(
            key,
            RunningGroup {
                commands: commands.clone(),
                live: Arc::clone(&live),
            },
        );
        let task = GroupTask {
            shared: Arc::downgrade(&self.shared),
            commands: commands.downgrade(),
            live,
            definition,
        };
        runtime.spawn(task.run(receiver));
        Ok(commands)
    }

    fn idle_info(&self, target: &GroupTarget, name: &str) -> Result<GroupInfo> {
        let definition = self.existing_group(target, name)?;
        let progress = self.group_progress(&definition)?;
        Ok(GroupInfo {
            status: GroupStatus::Idle,
            consumers: Vec::new(),
            last_checkpointed: progress.checkpoint.checked_sub(1),
            last_known: None,
            parked: progress.parked.len() as u64,
            in_flight: 0,
            buffered: 0,
            retrying: 0,
            definition,
        })
    }

    /// The group's checkpoint (its start if none is stored) and parked record numbers.
    pub(crate) fn group_progress(&self, definition: &GroupDefinition) -> Result<Progress> {
        let (target, name) = (&definition.target, definition.name.as_str());
        let key = checkpoint_key(target, name);
        let checkpoint = match self.shared.engine.get(&key)? {
            Some(value) => decode_checkpoint(&value).map_err(|reason| corrupt(&key, reason))?,
            None => self.start_key(definition)?,
        };
        let prefix = parked_key_prefix(target, name);
        let mut parked: Vec<u64> = self
            .shared
            .engine
            .keys_with_prefix(&prefix)
            .filter_map(|key| parked_record(&key))
            .collect();
        parked.sort_unstable();
        Ok(Progress { checkpoint, parked })
    }

    /// The first key a group reads when it has no checkpoint.
    pub(crate) fn start_key(&self, definition: &GroupDefinition) -> Result<u64> {
        Ok(match definition.settings.start {
            GroupStart::Start => 0,
            GroupStart::Version(StreamVersion(key)) | GroupStart::Position(Position(key)) => key,
            GroupStart::End => match &definition.target {
                GroupTarget::All => self.committed_position().0,
                GroupTarget::Stream(stream) => self
                    .durable_head(stream)?
                    .map_or(0, |head| head.next_version),
            },
        })
    }
}

pub(crate) struct Progress {
    /// Every key below it is finished.
    pub(crate) checkpoint: u64,
    /// The parked records' numbers, in order.
    pub(crate) parked: Vec<u64>,
}

pub(crate) fn dropped(target: &GroupTarget, name: &str) -> Error {
    Error::GroupDropped {
        target: target_name(target),
        group: name.to_owned(),
        reason: "it has stopped",
    }
}

/// Runs `work` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}
