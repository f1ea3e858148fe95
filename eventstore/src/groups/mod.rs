//! Persistent subscription groups: competing consumers sharing one stream's (or `$all`'s)
//! events, each event handled by one of them, with acks, retries, parking and durable
//! checkpoints.
//!
//! - `definition`: what a group is and its settings, stored under the `g` keyspace.
//! - `dispatcher`: pure state: who gets which event, what is in flight, retries, parks, and
//!   how far the group may checkpoint.
//! - `runtime`: the registry of running groups and the store's calls that reach them.
//! - `task`: one task per group in use, which reads the source, feeds the dispatcher and
//!   writes checkpoints (`c` keys) and parked messages (`q` keys) durably.
//! - `consumer`: a consumer's stream of events and its ack and nack handle.
//!
//! Delivery is at least once: a checkpoint covers only finished events (acked, skipped or
//! durably parked), so a restart redelivers what was in flight or acked after the last
//! checkpoint, and nothing before it.

mod consumer;
mod definition;
mod dispatcher;
mod runtime;
mod task;

pub use consumer::{GroupAcks, GroupConsumer};
pub use definition::{ConsumerStrategy, GroupDefinition, GroupSettings, GroupStart, GroupTarget};
pub use dispatcher::NackAction;
pub(crate) use runtime::Runtimes;
pub use runtime::{ConsumerInfo, GroupEvent, GroupInfo, GroupStatus};
