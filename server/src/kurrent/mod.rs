//! KurrentDB's v1 gRPC API over the same [`EventStore`](caskade_eventstore::EventStore) as
//! `caskade.v1`, on the same listener, so that KurrentDB's and EventStoreDB's official
//! clients work against Caskade unmodified.
//!
//! - [`streams`]: `event_store.client.streams.Streams` (appends, deletes), with its `Read`
//!   (reads, subscriptions, filters) in `read` and its `BatchAppend` in `batch_append`.
//! - [`persistent`]: KurrentDB's persistent subscriptions (consumer groups).
//! - [`features`]: `ServerFeatures` and `Gossip`, which clients call on connecting.
//! - `metastream`: stream metadata as the `$$stream` metadata streams.
//! - `convert`: the wire conventions (positions, ids, event metadata, times).
//! - `errors`: statuses and trailers as the clients parse them.
//!
//! Like the rest of the crate this only translates: every rule of streams, versions and
//! retention is the event store's, so what one API writes the other reads back the same.

pub(crate) mod batch_append;
pub(crate) mod convert;
pub(crate) mod errors;
pub mod features;
pub(crate) mod metastream;
pub mod persistent;
pub(crate) mod read;
pub mod streams;

pub use batch_append::MAX_GATHERING;
pub use features::{GossipService, ServerFeaturesService};
pub use persistent::KurrentPersistentService;
pub use streams::KurrentStreamsService;
