//! Catch-up and live subscriptions, as async streams.
//!
//! A subscription is a task that reads from the store, never from a feed of appended events:
//! it reads everything from its start up to the committed watermark, says it has caught up,
//! then waits for the watermark to move and reads again from where it stopped. Because the
//! live part is read the same way as the catch-up part, from the same cursor, the switch can
//! have no gap and no duplicate however appends race with it. The task hands events over
//! through a bounded channel: a slow subscriber makes the task wait, and it resumes reading
//! from the store when there is room, so memory stays bounded whatever the lag.
//!
//! Why no wake-up is lost, under every sync policy. Two facts from the store: an append's
//! events and its stream head are visible to reads before the append moves the watermark
//! (the engine publishes a batch before its writer's wait returns, and the watermark moves
//! after that wait), and anything else a stream subscriber must re-read for (a tombstone)
//! also notifies the watermark's channel after it is visible. The task marks the watermark
//! seen (`borrow_and_update`) *before* each pass reads. So an append either became visible
//! before the mark, and the pass reads it, or it moves the watermark after the mark, and
//! `changed` returns at once and another pass reads it. Nothing waits in between: the
//! watermark can only move forwards, and a pass ends only having read up to what it saw.
//!
//! A subscription that starts late, after the writers are done, delivers everything while
//! catching up, so the events a caller waits for may all come before `CaughtUp`.

use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::event::{Position, RecordedEvent, StreamVersion};
use crate::filter::EventFilter;
use crate::read::ReadStream;
use crate::store::{EventStore, Shared};

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscribeFrom<T> {
    /// From the first event.
    Start,
    /// From the event after this version or position: pass the last one processed to resume.
    After(T),
    /// From the next event appended.
    Now,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionMessage {
    /// An event, in order.
    Event(RecordedEvent),
    /// Everything committed when the subscription started has been delivered; what follows
    /// is live. Sent once.
    CaughtUp,
    /// Every position up to and including this one has been examined, and the events among
    /// them that match the filter delivered before this message: resuming `After` it loses
    /// nothing. Only from [`EventStore::subscribe_all_with_checkpoints`].
    Checkpoint(Position),
}

/// Events read per step: the most a subscription holds in memory besides its channel.
const CHUNK: u64 = 256;
/// Messages a subscription buffers for a subscriber that has not taken them yet.
const CHANNEL_CAPACITY: usize = 512;
/// Reads this short (the live tail, written a moment ago and in the page cache) run on the
/// async worker; longer ones go to the blocking pool.
const INLINE_READ: u64 = 16;

/// A subscription: an async [`Stream`](futures_core::Stream) of
/// [`SubscriptionMessage`]s. Dropping it stops the task behind it.
pub struct Subscription {
    receiver: mpsc::Receiver<Result<SubscriptionMessage>>,
    task: tokio::task::JoinHandle<()>,
}

/// What [`Subscription::try_next`] found.
pub(crate) enum Ready {
    Message(Result<SubscriptionMessage>),
    /// The subscription has ended.
    Ended,
    /// Nothing yet.
    Nothing,
}

impl futures_core::Stream for Subscription {
    type Item = Result<SubscriptionMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl Subscription {
    /// The next message; `None` once the subscription has ended (the store closed, or an
    /// error was delivered).
    pub async fn next(&mut self) -> Option<Result<SubscriptionMessage>> {
        self.receiver.recv().await
    }

    /// The next message if one is ready, without waiting.
    pub(crate) fn try_next(&mut self) -> Ready {
        match self.receiver.try_recv() {
            Ok(message) => Ready::Message(message),
            Err(mpsc::error::TryRecvError::Empty) => Ready::Nothing,
            Err(mpsc::error::TryRecvError::Disconnected) => Ready::Ended,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `read` on the blocking pool unless it is a short read of the live tail.
async fn run_read<T: Send + 'static>(
    len: u64,
    read: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if len <= INLINE_READ {
        return read();
    }
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or_else(|join| {
            std::panic::resume_unwind(join.into_panic());
        })
}

/// Ends a pass that read everything committed: says `CaughtUp` after the first one, then
/// waits for the committed watermark to move. `false` when the subscription should end (the
/// subscriber or the store is gone).
async fn wait_for_more(
    caught_up: &mut bool,
    sender: &mpsc::Sender<Result<SubscriptionMessage>>,
    committed: &mut watch::Receiver<u64>,
) -> bool {
    if !*caught_up {
        *caught_up = true;
        if sender
            .send(Ok(SubscriptionMessage::CaughtUp))
            .await
            .is_err()
        {
            return false;
        }
    }
    committed.changed().await.is_ok()
}

/// Says every position below `next` was examined.
async fn send_checkpoint(
    sender: &mpsc::Sender<Result<SubscriptionMessage>>,
    next: u64,
) -> std::result::Result<(), mpsc::error::SendError<Result<SubscriptionMessage>>> {
    let last = Position(next - 1);
    sender.send(Ok(SubscriptionMessage::Checkpoint(last))).await
}

/// Sends the checkpoints due once every position below `examined` has been examined: one
/// each time another `every` positions are behind the last. `false` if the subscriber is
/// gone.
async fn send_checkpoints_due(
    sender: &mpsc::Sender<Result<SubscriptionMessage>>,
    checkpointed: &mut u64,
    every: NonZeroU64,
    examined: u64,
) -> bool {
    while examined - *checkpointed >= every.get() {
        *checkpointed += every.get();
        if send_checkpoint(sender, *checkpointed).await.is_err() {
            return false;
        }
    }
    true
}

fn upgrade(shared: &Weak<Shared>) -> Option<EventStore> {
    shared.upgrade().map(|shared| EventStore { shared })
}

impl EventStore {
    /// Subscribes to `$all`: every committed event matching `filter`, in position order,
    /// first from the store, then live.
    ///
    /// Must be called within a Tokio runtime.
    #[must_use]
    pub fn subscribe_all(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
    ) -> Subscription {
        self.subscribe_all_inner(from, filter, None)
    }

    /// Like [`EventStore::subscribe_all`], also saying how far it has looked: a
    /// [`SubscriptionMessage::Checkpoint`] each time another `every` positions have been
    /// examined, and one just before `CaughtUp`. With a filter that matches little, the
    /// checkpoints are what lets a subscriber record progress through the events it skips.
    ///
    /// Must be called within a Tokio runtime.
    #[must_use]
    pub fn subscribe_all_with_checkpoints(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
        every: NonZeroU64,
    ) -> Subscription {
        self.subscribe_all_inner(from, filter, Some(every))
    }

    fn subscribe_all_inner(
        &self,
        from: SubscribeFrom<Position>,
        filter: EventFilter,
        checkpoint_every: Option<NonZeroU64>,
    ) -> Subscription {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = Arc::downgrade(&self.shared);
        let mut committed = self.shared.committed.subscribe();
        let mut next = match from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(position) => position.0.saturating_add(1),
            SubscribeFrom::Now => *committed.borrow(),
        };
        let task = tokio::spawn(async move {
            let mut caught_up = false;
            // Every position below this was examined when the last checkpoint was sent.
            let mut checkpointed = next;
            loop {
                let end = *committed.borrow_and_update();
                while next < end {
                    let Some(store) = upgrade(&shared) else {
                        return;
                    };
                    let chunk_end = end.min(next.saturating_add(CHUNK));
                    let (from, filter) = (next, filter.clone());
                    let events = run_read(chunk_end - from, move || {
                        store
                            .read_all_range(from, chunk_end, filter)
                            .collect::<Result<Vec<_>>>()
                    })
                    .await;
                    match events {
                        Ok(events) => {
                            for event in events {
                                // Every position below this event's was examined: the
                                // checkpoints due below it go first.
                                if let Some(every) = checkpoint_every
                                    && !send_checkpoints_due(
                                        &sender,
                                        &mut checkpointed,
                                        every,
                                        event.position.0,
                                    )
                                    .await
                                {
                                    return;
                                }
                                if sender
                                    .send(Ok(SubscriptionMessage::Event(event)))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    }
                    next = chunk_end;
                    if let Some(every) = checkpoint_every
                        && !send_checkpoints_due(&sender, &mut checkpointed, every, next).await
                    {
                        return;
                    }
                }
                // The last checkpoint of the catch-up goes just before `CaughtUp`.
                if checkpoint_every.is_some() && !caught_up && next > checkpointed {
                    checkpointed = next;
                    if send_checkpoint(&sender, next).await.is_err() {
                        return;
                    }
                }
                if !wait_for_more(&mut caught_up, &sender, &mut committed).await {
                    return;
                }
            }
        });
        Subscription { receiver, task }
    }

    /// Subscribes to one stream: its events in version order, first from the store, then
    /// live. Events hidden by the stream's metadata are skipped.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// The stream-name errors, [`Error::StreamDeleted`] if it is tombstoned (also delivered
    /// through the subscription if it is tombstoned later), [`Error::Engine`].
    pub fn subscribe_stream(
        &self,
        stream: &str,
        from: SubscribeFrom<StreamVersion>,
    ) -> Result<Subscription> {
        self.validate_stream(stream)?;
        let head_end = match self.durable_head(stream)? {
            Some(head) if head.state == crate::StreamState::Tombstoned => {
                return Err(Error::StreamDeleted {
                    stream: stream.to_owned(),
                });
            }
            Some(head) => head.next_version,
            None => 0,
        };
        let mut next = match from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(version) => version.0.saturating_add(1),
            SubscribeFrom::Now => head_end,
        };
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = Arc::downgrade(&self.shared);
        let mut committed = self.shared.committed.subscribe();
        let stream: Arc<str> = Arc::from(stream);
        let task = tokio::spawn(async move {
            let mut caught_up = false;
            loop {
                committed.borrow_and_update();
                loop {
                    let Some(store) = upgrade(&shared) else {
                        return;
                    };
                    let (from, name) = (next, Arc::clone(&stream));
                    // Catching up may read a whole chunk: the blocking pool. Once live, the reads
                    // are of the tail just written: inline.
                    let expected_len = if caught_up { INLINE_READ } else { CHUNK };
                    let chunk = run_read(expected_len, move || {
                        let read = ReadStream::forwards()
                            .from(StreamVersion(from))
                            .max_count(CHUNK);
                        let events = store.read_stream(&name, read)?;
                        // The end the read was bounded by, not a fresh head: a fresh one
                        // could count events appended after this read.
                        let end = events.end();
                        Ok((events.collect::<Result<Vec<RecordedEvent>>>()?, end))
                    })
                    .await;
                    let (events, end) = match chunk {
                        Ok(chunk) => chunk,
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    };
                    let full = events.len() as u64 == CHUNK;
                    for event in events {
                        next = event.version.0 + 1;
                        if sender
                            .send(Ok(SubscriptionMessage::Event(event)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if !full {
                        // Everything up to the head was read; hidden versions are skipped.
                        next = next.max(end);
                        break;
                    }
                }
                if !wait_for_more(&mut caught_up, &sender, &mut committed).await {
                    return;
                }
            }
        });
        Ok(Subscription { receiver, task })
    }
}
