//! A consumer's side of a group: the stream of events it is handed, and the handle it acks
//! and nacks them through. Events arrive over a channel of the consumer's own, bounded at
//! twice its capacity; acks, nacks and the rest go to the group's task (`task.rs`) over the
//! task's command channel, also bounded: a consumer sending acks faster than the task takes
//! them waits.
//!
//! Invariant: dropping a [`GroupConsumer`] tells the task (within a Tokio runtime, even when
//! the command channel is full), so what it had in flight goes to the group's other
//! consumers at once rather than at its message timeout; the task also notices a consumer
//! whose channel has closed when it next delivers to it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::groups::GroupTarget;
use crate::groups::definition::target_name;
use crate::groups::dispatcher::{ConsumerId, NackAction};
use crate::groups::runtime::{GroupEvent, GroupInfo};

/// A consumer's handle for acknowledging the events it received; cheap to clone, so one
/// task can read events while another sends acks.
#[derive(Debug, Clone)]
pub struct GroupAcks {
    pub(crate) consumer: ConsumerId,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) target: GroupTarget,
    pub(crate) group: String,
}

impl GroupAcks {
    /// Acknowledges the events with these ids: they are finished for the group. Ids not in
    /// flight are ignored.
    ///
    /// # Errors
    /// [`Error::GroupDropped`] if the group has stopped.
    pub async fn ack(&self, ids: Vec<Uuid>) -> Result<()> {
        let consumer = self.consumer;
        self.send(Command::Ack { consumer, ids }).await
    }

    /// Says the events with these ids were not handled, and what to do with them.
    ///
    /// # Errors
    /// [`Error::GroupDropped`] if the group has stopped.
    pub async fn nack(&self, ids: Vec<Uuid>, action: NackAction) -> Result<()> {
        let consumer = self.consumer;
        self.send(Command::Nack {
            consumer,
            ids,
            action,
        })
        .await
    }

    /// Takes this consumer out of the group's dispatching: it gets no more events, and may
    /// still ack and nack the ones it holds.
    ///
    /// # Errors
    /// [`Error::GroupDropped`] if the group has stopped.
    pub async fn stop_receiving(&self) -> Result<()> {
        let consumer = self.consumer;
        self.send(Command::StopReceiving { consumer }).await
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::GroupDropped {
                target: target_name(&self.target),
                group: self.group.clone(),
                reason: "it has stopped",
            })
    }
}

/// A consumer connected to a group: an async [`Stream`](futures_core::Stream) of the
/// [`GroupEvent`]s the group hands it. Dropping it disconnects it, and what it had in flight
/// goes to the group's other consumers.
#[derive(Debug)]
pub struct GroupConsumer {
    pub(crate) events: mpsc::Receiver<Result<GroupEvent>>,
    pub(crate) acks: GroupAcks,
}

impl GroupConsumer {
    /// The next event; `None` once the group has stopped or the store has gone. A stop for
    /// a reason the consumer should hear (the group deleted, its stream tombstoned) comes
    /// as an error first.
    pub async fn next(&mut self) -> Option<Result<GroupEvent>> {
        self.events.recv().await
    }

    /// A handle for sending acks and nacks from elsewhere.
    #[must_use]
    pub fn acks(&self) -> GroupAcks {
        self.acks.clone()
    }

    /// As [`GroupAcks::ack`].
    ///
    /// # Errors
    /// As [`GroupAcks::ack`].
    pub async fn ack(&self, ids: Vec<Uuid>) -> Result<()> {
        self.acks.ack(ids).await
    }

    /// As [`GroupAcks::nack`].
    ///
    /// # Errors
    /// As [`GroupAcks::nack`].
    pub async fn nack(&self, ids: Vec<Uuid>, action: NackAction) -> Result<()> {
        self.acks.nack(ids, action).await
    }
}

impl futures_core::Stream for GroupConsumer {
    type Item = Result<GroupEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        let disconnect = Command::Disconnect {
            consumer: self.acks.consumer,
        };
        if let Err(mpsc::error::TrySendError::Full(disconnect)) =
            self.acks.commands.try_send(disconnect)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let commands = self.acks.commands.clone();
            runtime.spawn(async move { commands.send(disconnect).await });
        }
    }
}

/// What consumers and the store's calls ask of a group's task.
pub(crate) enum Command {
    Connect {
        name: String,
        capacity: u32,
        reply: oneshot::Sender<Result<GroupConsumer>>,
    },
    Ack {
        consumer: ConsumerId,
        ids: Vec<Uuid>,
    },
    Nack {
        consumer: ConsumerId,
        ids: Vec<Uuid>,
        action: NackAction,
    },
    StopReceiving {
        consumer: ConsumerId,
    },
    Disconnect {
        consumer: ConsumerId,
    },
    Info {
        reply: oneshot::Sender<GroupInfo>,
    },
    Flush {
        reply: oneshot::Sender<Result<()>>,
    },
    ReplayParked {
        limit: Option<u64>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Stop {
        reason: &'static str,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}
