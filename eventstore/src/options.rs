//! [`Options`] for opening an [`EventStore`](crate::EventStore).

use crate::error::{Error, Result};

/// How an event store is opened: set the fields that differ from the defaults,
/// `Options { max_event_size: 1 << 20, ..Options::default() }`; `open` validates them.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The storage engine's options (sync policy, file size, merge trigger...).
    pub engine: caskade_engine::Options,
    /// Largest event accepted (type, data and metadata together), in bytes; also the
    /// largest custom metadata a stream may carry. Default: 4 MiB.
    pub max_event_size: usize,
    /// Largest append accepted, all events together, in bytes. Default: 64 MiB.
    pub max_append_size: usize,
    /// Longest stream name accepted, in bytes. Default: 1,024.
    pub max_stream_name_len: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engine: caskade_engine::Options::default(),
            max_event_size: 4 << 20,
            max_append_size: 64 << 20,
            max_stream_name_len: 1024,
        }
    }
}

/// Bytes an append adds to the engine beyond its events: head and `$all` keys and values.
const APPEND_OVERHEAD_PER_EVENT: usize = 256;

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason| Err(Error::InvalidOptions { reason });
        if self.max_stream_name_len == 0 || self.max_stream_name_len > 32 * 1024 {
            return invalid("max_stream_name_len must be between 1 and 32768");
        }
        if crate::format::event_key_len_for(self.max_stream_name_len) > self.engine.max_key_size {
            return invalid("max_stream_name_len must leave room under the engine's max_key_size");
        }
        if self.max_event_size + self.max_stream_name_len + APPEND_OVERHEAD_PER_EVENT
            > self.engine.max_value_size
        {
            return invalid("max_event_size must leave room under the engine's max_value_size");
        }
        if self.max_append_size.saturating_mul(2) > self.engine.max_batch_size {
            return invalid("max_append_size must be at most half the engine's max_batch_size");
        }
        Ok(())
    }
}
