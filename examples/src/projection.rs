//! A read model built from `$all`: the balance of every account.
//!
//! The projection subscribes to `$all` (filtered to account streams), applies each event to
//! its in-memory balances, and now and then saves the balances together with the position of
//! the last event applied, as one value in the store's key-value space, so the two can never
//! disagree. After a restart it loads that checkpoint and subscribes from just after the saved
//! position: no event is applied twice and none is missed.

use std::collections::BTreeMap;

use caskade_eventstore::{EventFilter, EventStore, Position, SubscribeFrom, SubscriptionMessage};
use serde::{Deserialize, Serialize};

use crate::bank::{AccountEvent, BankError};

/// Where the checkpoint lives in the key-value space.
pub const CHECKPOINT_KEY: &[u8] = b"projections/balances";

/// The read model and how far it has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// Balance per account stream, in cents.
    pub balances: BTreeMap<String, u64>,
    /// The last event applied.
    pub position: Option<Position>,
    /// Events applied over the projection's life, across restarts.
    pub events_applied: u64,
}

impl Balances {
    /// Loads the saved checkpoint, or starts empty.
    ///
    /// # Errors
    /// [`BankError::Store`], [`BankError::BadEvent`] for an unreadable checkpoint.
    pub fn load(store: &EventStore) -> Result<Balances, BankError> {
        match store.kv().get(CHECKPOINT_KEY)? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| BankError::BadEvent(e.to_string()))
            }
            None => Ok(Balances::default()),
        }
    }

    /// Saves balances and position as one value: atomically.
    ///
    /// # Errors
    /// [`BankError::Store`].
    pub fn save(&self, store: &EventStore) -> Result<(), BankError> {
        let bytes = serde_json::to_vec(self).map_err(|e| BankError::BadEvent(e.to_string()))?;
        store.kv().put(CHECKPOINT_KEY, &bytes)?;
        Ok(())
    }

    fn apply(&mut self, stream: &str, event: &AccountEvent) {
        let balance = self.balances.entry(stream.to_owned()).or_default();
        match event {
            AccountEvent::Opened { .. } => {}
            AccountEvent::Deposited { amount } => *balance += amount,
            AccountEvent::Withdrawn { amount } => *balance -= amount,
        }
    }
}

/// Resumes the projection from its checkpoint and runs it until it has caught up with
/// everything committed, checkpointing every `checkpoint_every` events and at the end.
///
/// # Errors
/// [`BankError::Store`], [`BankError::BadEvent`].
pub async fn catch_up(store: &EventStore, checkpoint_every: u64) -> Result<Balances, BankError> {
    let mut model = Balances::load(store)?;
    let from = model
        .position
        .map_or(SubscribeFrom::Start, SubscribeFrom::After);
    let mut subscription = store.subscribe_all(from, EventFilter::all().stream_prefix("account-"));
    let mut since_checkpoint = 0;
    while let Some(message) = subscription.next().await {
        match message? {
            SubscriptionMessage::Event(event) => {
                model.apply(&event.stream, &AccountEvent::from_recorded(&event)?);
                model.position = Some(event.position);
                model.events_applied += 1;
                since_checkpoint += 1;
                if since_checkpoint >= checkpoint_every {
                    model.save(store)?;
                    since_checkpoint = 0;
                }
            }
            SubscriptionMessage::CaughtUp => break,
            // `subscribe_all` sends none; `subscribe_all_with_checkpoints` would.
            SubscriptionMessage::Checkpoint(_) => {}
        }
    }
    model.save(store)?;
    Ok(model)
}
