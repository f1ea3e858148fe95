//! [`WriteBatch`]: puts and deletes applied atomically.

use crate::error::{Error, Result};
use crate::format::{BATCH_BEGIN_VALUE_LEN, RecordKind, record_len};
use crate::options::Options;

/// One operation of a [`WriteBatch`]: its key, then its value, lie back to back in the
/// batch's bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchOp {
    kind: RecordKind,
    start: usize,
    key_len: usize,
    value_len: usize,
}

/// Puts and deletes that [`Bitcask::write`](crate::Bitcask::write) applies atomically: after
/// a crash either every operation of the batch is visible or none is. Operations apply in
/// the order they were added, so a later operation on the same key wins.
///
/// While a batch is being published, readers may see some of its operations before others,
/// with one guarantee: a reader that sees the **last** operation sees every other one. So a
/// batch can end with a marker of what it holds (the event store writes a stream's head
/// last).
///
/// Keys and values are copied into one buffer, so building a batch allocates only as that
/// buffer grows, however many operations it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    bytes: Vec<u8>,
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// An empty batch with room for `ops` operations whose keys and values total `bytes`.
    #[must_use]
    pub fn with_capacity(ops: usize, bytes: usize) -> Self {
        WriteBatch {
            bytes: Vec::with_capacity(bytes),
            ops: Vec::with_capacity(ops),
        }
    }

    /// Adds a put of `value` under `key`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.push(RecordKind::Put, key.as_ref(), value.as_ref())
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(RecordKind::Tombstone, key.as_ref(), &[])
    }

    fn push(&mut self, kind: RecordKind, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(BatchOp {
            kind,
            start: self.bytes.len(),
            key_len: key.len(),
            value_len: value.len(),
        });
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self
    }

    /// Number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Removes every operation, keeping the allocations.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes.clear();
    }

    /// The `index`th operation: a put ([`RecordKind::Put`]) or a delete
    /// ([`RecordKind::Tombstone`], with an empty value), its key and its value.
    pub(crate) fn op(&self, index: usize) -> (RecordKind, &[u8], &[u8]) {
        let op = self.ops[index];
        let key_end = op.start + op.key_len;
        (
            op.kind,
            &self.bytes[op.start..key_end],
            &self.bytes[key_end..key_end + op.value_len],
        )
    }

    /// The operations in order, as [`WriteBatch::op`] gives them.
    pub(crate) fn ops(&self) -> impl Iterator<Item = (RecordKind, &[u8], &[u8])> {
        (0..self.ops.len()).map(|index| self.op(index))
    }

    /// Checks the batch against the limits of `options` and returns the bytes it encodes to
    /// (its records, and its framing if it holds more than one).
    pub(crate) fn encoded_len(&self, options: &Options) -> Result<usize> {
        let mut encoded = if self.len() > 1 {
            record_len(0, BATCH_BEGIN_VALUE_LEN)
        } else {
            0
        };
        for (_, key, value) in self.ops() {
            if key.is_empty() {
                return Err(Error::EmptyKey);
            }
            if key.len() > options.max_key_size {
                return Err(Error::KeyTooLarge {
                    len: key.len(),
                    max: options.max_key_size,
                });
            }
            if value.len() > options.max_value_size {
                return Err(Error::ValueTooLarge {
                    len: value.len(),
                    max: options.max_value_size,
                });
            }
            encoded += record_len(key.len(), value.len());
        }
        if encoded > options.max_batch_size {
            return Err(Error::BatchTooLarge {
                len: encoded,
                max: options.max_batch_size,
            });
        }
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_keep_their_order_keys_and_values() {
        let mut batch = WriteBatch::with_capacity(3, 16);
        batch.put(b"k1", b"v1").delete(b"k2").put(b"k1", b"");
        let ops: Vec<_> = batch.ops().collect();
        assert_eq!(
            ops,
            [
                (RecordKind::Put, &b"k1"[..], &b"v1"[..]),
                (RecordKind::Tombstone, &b"k2"[..], &b""[..]),
                (RecordKind::Put, &b"k1"[..], &b""[..]),
            ]
        );
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.ops().count(), 0);
    }
}
