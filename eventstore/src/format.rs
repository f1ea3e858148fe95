//! How streams and events are laid out in the engine: key encoding and value encoding.
//!
//! `eventstore/FORMAT.md` is the specification; every constant here mirrors it. Pure
//! functions over byte slices: no engine calls.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{ContentType, Position, StreamVersion};
use crate::groups::GroupTarget;
use crate::metadata::{StreamMetadata, StreamState};

/// First byte of an event key: `e`, stream length (u16 BE), stream, version (u64 BE).
pub(crate) const EVENT_PREFIX: u8 = b'e';
/// First byte of a stream head key: `h`, stream.
pub(crate) const HEAD_PREFIX: u8 = b'h';
/// First byte of a `$all` entry key: `p`, position (u64 BE). Its value is the event's key.
pub(crate) const ALL_PREFIX: u8 = b'p';
/// First byte of a key of the raw key-value space: `k`, the caller's key.
pub(crate) const KV_PREFIX: u8 = b'k';
/// First byte of a persistent subscription group's key: `g`, the target (`s`, stream length
/// (u16 BE), stream; or `a` for `$all`), the group's name.
pub(crate) const GROUP_PREFIX: u8 = b'g';
/// The target byte of a group on a stream.
const GROUP_ON_STREAM: u8 = b's';
/// The target byte of a group on `$all`.
const GROUP_ON_ALL: u8 = b'a';

/// First byte of a group's checkpoint key: `c`, then the target and name as in its `g` key.
pub(crate) const CHECKPOINT_PREFIX: u8 = b'c';
/// First byte of a group's parked message key: `q`, the target as in its `g` key, the group
/// name's length (u16 BE), the name, the record's number (u64 BE).
pub(crate) const PARKED_PREFIX: u8 = b'q';
/// The checkpoint value's format byte.
const CHECKPOINT_FORMAT: u8 = 1;
/// A checkpoint value: the format byte, then the next key (u64 LE).
const CHECKPOINT_LEN: usize = size_of::<u8>() + size_of::<u64>();

fn push_target(key: &mut Vec<u8>, target: &GroupTarget) {
    match target {
        GroupTarget::Stream(stream) => {
            key.push(GROUP_ON_STREAM);
            key.extend_from_slice(&name_len(stream).to_be_bytes());
            key.extend_from_slice(stream.as_bytes());
        }
        GroupTarget::All => key.push(GROUP_ON_ALL),
    }
}

fn name_len(name: &str) -> u16 {
    u16::try_from(name.len()).expect("stream and group names are validated to fit a u16")
}

/// The start of the keys of every group on `target`.
pub(crate) fn group_key_prefix(target: &GroupTarget) -> Vec<u8> {
    let mut key = vec![GROUP_PREFIX];
    push_target(&mut key, target);
    key
}

/// The key of the group `name` on `target`.
pub(crate) fn group_key(target: &GroupTarget, name: &str) -> Vec<u8> {
    let mut key = group_key_prefix(target);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The key of the checkpoint of the group `name` on `target`.
pub(crate) fn checkpoint_key(target: &GroupTarget, name: &str) -> Vec<u8> {
    let mut key = vec![CHECKPOINT_PREFIX];
    push_target(&mut key, target);
    key.extend_from_slice(name.as_bytes());
    key
}

/// A checkpoint: every key (version or position) below `next` is finished.
pub(crate) fn encode_checkpoint(next: u64) -> [u8; CHECKPOINT_LEN] {
    let mut value = [0; CHECKPOINT_LEN];
    value[0] = CHECKPOINT_FORMAT;
    value[size_of::<u8>()..].copy_from_slice(&next.to_le_bytes());
    value
}

/// Decodes a checkpoint value; the error says what is wrong.
pub(crate) fn decode_checkpoint(value: &[u8]) -> Result<u64, &'static str> {
    let value: [u8; CHECKPOINT_LEN] = value
        .try_into()
        .map_err(|_| "a checkpoint of the wrong length")?;
    if value[0] != CHECKPOINT_FORMAT {
        return Err("a checkpoint in an unknown format");
    }
    let next: [u8; size_of::<u64>()] = value[size_of::<u8>()..]
        .try_into()
        .expect("the checkpoint's length was checked");
    Ok(u64::from_le_bytes(next))
}

/// The start of the parked message keys of the group `name` on `target`.
pub(crate) fn parked_key_prefix(target: &GroupTarget, name: &str) -> Vec<u8> {
    let mut key = vec![PARKED_PREFIX];
    push_target(&mut key, target);
    key.extend_from_slice(&name_len(name).to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// The key of parked message `record` of the group whose parked keys start with `prefix`.
pub(crate) fn parked_key(prefix: &[u8], record: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + size_of::<u64>());
    key.extend_from_slice(prefix);
    key.extend_from_slice(&record.to_be_bytes());
    key
}

/// The record number at the end of a parked message key.
pub(crate) fn parked_record(key: &[u8]) -> Option<u64> {
    let number = key.get(key.len().checked_sub(size_of::<u64>())?..)?;
    Some(u64::from_be_bytes(number.try_into().ok()?))
}

const EVENT_FORMAT: u8 = 1;
/// Heads are written in format 2; format 1 (without the metadata's version) is still read.
const HEAD_FORMAT: u8 = 2;
const HEAD_FORMAT_1: u8 = 1;

pub(crate) fn event_key(stream: &str, version: StreamVersion) -> Vec<u8> {
    let mut key = Vec::with_capacity(event_key_len(stream));
    write_event_key(&mut key, stream, version);
    key
}

/// Replaces `key`'s contents with the event key of `stream` at `version`.
pub(crate) fn write_event_key(key: &mut Vec<u8>, stream: &str, version: StreamVersion) {
    key.clear();
    key.push(EVENT_PREFIX);
    let len = u16::try_from(stream.len()).expect("stream names are validated to fit a u16");
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(stream.as_bytes());
    key.extend_from_slice(&version.0.to_be_bytes());
}

/// Bytes of an event key before the stream name: the prefix and the name's `u16` length.
const EVENT_KEY_NAME_AT: usize = 1 + 2;
/// Bytes of an event key after the stream name: the `u64` version.
const EVENT_KEY_VERSION_LEN: usize = 8;

/// The length of an event key of a stream whose name is `name_len` bytes.
pub(crate) fn event_key_len_for(name_len: usize) -> usize {
    EVENT_KEY_NAME_AT + name_len + EVENT_KEY_VERSION_LEN
}

/// The length of `stream`'s event keys.
pub(crate) fn event_key_len(stream: &str) -> usize {
    event_key_len_for(stream.len())
}

/// The stream name a head key names (the key after its prefix); `None` if it is not UTF-8.
pub(crate) fn head_key_name(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.get(1..)?).ok()
}

/// Whether `key` is the event key of `stream` at `version`, without building that key.
pub(crate) fn is_event_key(key: &[u8], stream: &str, version: StreamVersion) -> bool {
    let name_end = EVENT_KEY_NAME_AT + stream.len();
    key.len() == name_end + EVENT_KEY_VERSION_LEN
        && key[0] == EVENT_PREFIX
        && u16::try_from(stream.len()).is_ok_and(|len| key[1..3] == len.to_be_bytes())
        && &key[EVENT_KEY_NAME_AT..name_end] == stream.as_bytes()
        && key[name_end..] == version.0.to_be_bytes()
}

/// The stream and version an event key names; `None` if it is not an event key.
pub(crate) fn parse_event_key(key: &[u8]) -> Option<(&str, StreamVersion)> {
    let (&prefix, rest) = key.split_first()?;
    if prefix != EVENT_PREFIX || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() != len + EVENT_KEY_VERSION_LEN {
        return None;
    }
    let stream = std::str::from_utf8(&rest[..len]).ok()?;
    let version = u64::from_be_bytes(rest[len..].try_into().ok()?);
    Some((stream, StreamVersion(version)))
}

pub(crate) fn head_key(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + stream.len());
    key.push(HEAD_PREFIX);
    key.extend_from_slice(stream.as_bytes());
    key
}

/// `$all` entries are written for the first event of every append and for every event whose
/// position is a multiple of this, so the entry nearest at or below any position is at most
/// `ALL_ENTRY_SPACING - 1` positions back and belongs to the same append.
pub(crate) const ALL_ENTRY_SPACING: u64 = 64;

/// Whether the event at `position`, the `index`-th of its append, gets a `$all` entry.
pub(crate) fn has_all_entry(index: usize, position: Position) -> bool {
    index == 0 || position.0.is_multiple_of(ALL_ENTRY_SPACING)
}

/// The length of a `$all` entry's key: the prefix and a big-endian `u64` position.
pub(crate) const ALL_KEY_LEN: usize = 9;

pub(crate) fn all_key(position: Position) -> [u8; ALL_KEY_LEN] {
    let mut key = [0u8; ALL_KEY_LEN];
    key[0] = ALL_PREFIX;
    key[1..].copy_from_slice(&position.0.to_be_bytes());
    key
}

pub(crate) fn kv_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(KV_PREFIX);
    out.extend_from_slice(key);
    out
}

/// Length of an event value before its variable parts.
const EVENT_FIXED_LEN: usize = 1 + 16 + 8 + 8 + 1 + 2 + 4 + 4;

/// An event value as stored (the stream and version are in the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEvent<'a> {
    pub(crate) id: Uuid,
    pub(crate) position: Position,
    pub(crate) recorded_at_micros: i64,
    pub(crate) content_type: ContentType,
    pub(crate) event_type: &'a str,
    pub(crate) metadata: &'a [u8],
    pub(crate) data: &'a [u8],
}

pub(crate) fn encoded_event_len(event_type: &str, metadata: &[u8], data: &[u8]) -> usize {
    EVENT_FIXED_LEN + event_type.len() + metadata.len() + data.len()
}

impl StoredEvent<'_> {
    /// Replaces `out`'s contents with the encoded event.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(EVENT_FORMAT);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.position.0.to_le_bytes());
        out.extend_from_slice(&self.recorded_at_micros.to_le_bytes());
        out.push(match self.content_type {
            ContentType::Json => 0,
            ContentType::Binary => 1,
        });
        let type_len = u16::try_from(self.event_type.len()).expect("event types are validated");
        out.extend_from_slice(&type_len.to_le_bytes());
        let metadata_len = u32::try_from(self.metadata.len()).expect("events are validated");
        out.extend_from_slice(&metadata_len.to_le_bytes());
        let data_len = u32::try_from(self.data.len()).expect("events are validated");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend_from_slice(self.event_type.as_bytes());
        out.extend_from_slice(self.metadata);
        out.extend_from_slice(self.data);
    }
}

/// Decodes an event value; the error says what is wrong.
pub(crate) fn decode_event(value: &[u8]) -> Result<StoredEvent<'_>, &'static str> {
    if value.len() < EVENT_FIXED_LEN {
        return Err("event value too short");
    }
    if value[0] != EVENT_FORMAT {
        return Err("unknown event format version");
    }
    let u32_at =
        |at: usize| u32::from_le_bytes(value[at..at + 4].try_into().expect("4 bytes")) as usize;
    let id = Uuid::from_bytes(value[1..17].try_into().expect("16 bytes"));
    let position = Position(u64::from_le_bytes(
        value[17..25].try_into().expect("8 bytes"),
    ));
    let recorded_at_micros = i64::from_le_bytes(value[25..33].try_into().expect("8 bytes"));
    let content_type = match value[33] {
        0 => ContentType::Json,
        1 => ContentType::Binary,
        _ => return Err("unknown content type"),
    };
    let type_len = usize::from(u16::from_le_bytes([value[34], value[35]]));
    let metadata_len = u32_at(36);
    let data_len = u32_at(40);
    if value.len() != EVENT_FIXED_LEN + type_len + metadata_len + data_len {
        return Err("event value length does not match its fields");
    }
    let type_end = EVENT_FIXED_LEN + type_len;
    let metadata_end = type_end + metadata_len;
    let event_type = std::str::from_utf8(&value[EVENT_FIXED_LEN..type_end])
        .map_err(|_| "event type is not UTF-8")?;
    Ok(StoredEvent {
        id,
        position,
        recorded_at_micros,
        content_type,
        event_type,
        metadata: &value[type_end..metadata_end],
        data: &value[metadata_end..],
    })
}

pub(crate) fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// A stream's head: its next version, last position, state and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) state: StreamState,
    /// The version the next event gets; the stream has had events iff this is above 0.
    pub(crate) next_version: u64,
    /// The position of the stream's last event (meaningful once `next_version > 0`).
    pub(crate) last_position: u64,
    /// Versions below this were deleted: by a soft delete, or by a scavenge, which raises it
    /// before deleting. Never lowered, and kept apart from the metadata's `truncate_before`,
    /// so that setting metadata never reveals deleted events.
    pub(crate) deleted_before: u64,
    pub(crate) metadata: StreamMetadata,
    /// How many times the metadata has been set; 0 if never. Only ever raised.
    pub(crate) metadata_changes: u64,
    /// When the metadata was last set (meaningful once `metadata_changes > 0`).
    pub(crate) metadata_recorded_at_micros: i64,
}

pub(crate) const HEAD_FIXED_LEN: usize = 1 + 1 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 8 + 4;
/// Format 1 lacks the two metadata-change fields.
const HEAD_1_FIXED_LEN: usize = HEAD_FIXED_LEN - 16;

impl Head {
    pub(crate) fn new() -> Self {
        Head {
            state: StreamState::Live,
            next_version: 0,
            last_position: 0,
            deleted_before: 0,
            metadata: StreamMetadata::default(),
            metadata_changes: 0,
            metadata_recorded_at_micros: 0,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let custom = self
            .metadata
            .custom
            .as_ref()
            .map(|v| serde_json::to_vec(v).expect("a JSON value serializes"));
        let custom = custom.unwrap_or_default();
        let mut out = Vec::with_capacity(HEAD_FIXED_LEN + custom.len());
        out.push(HEAD_FORMAT);
        out.push(match self.state {
            StreamState::Live => 0,
            StreamState::Deleted => 1,
            StreamState::Tombstoned => 2,
        });
        out.extend_from_slice(&self.next_version.to_le_bytes());
        out.extend_from_slice(&self.last_position.to_le_bytes());
        out.extend_from_slice(&self.deleted_before.to_le_bytes());
        out.extend_from_slice(
            &self
                .metadata
                .truncate_before
                .map_or(0, |v| v.0)
                .to_le_bytes(),
        );
        out.extend_from_slice(&self.metadata.max_count.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(
            &self
                .metadata
                .max_age
                .map_or(0, |d| d.as_secs())
                .to_le_bytes(),
        );
        out.extend_from_slice(&self.metadata_changes.to_le_bytes());
        out.extend_from_slice(&self.metadata_recorded_at_micros.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(custom.len())
                .expect("metadata is validated")
                .to_le_bytes(),
        );
        out.extend_from_slice(&custom);
        out
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Head, &'static str> {
        let fixed_len = match value.first() {
            Some(&HEAD_FORMAT) => HEAD_FIXED_LEN,
            Some(&HEAD_FORMAT_1) => HEAD_1_FIXED_LEN,
            Some(_) => return Err("unknown stream head format version"),
            None => return Err("stream head too short"),
        };
        if value.len() < fixed_len {
            return Err("stream head too short");
        }
        let u64_at = |at: usize| u64::from_le_bytes(value[at..at + 8].try_into().expect("8 bytes"));
        let state = match value[1] {
            0 => StreamState::Live,
            1 => StreamState::Deleted,
            2 => StreamState::Tombstoned,
            _ => return Err("unknown stream state"),
        };
        let custom_len =
            u32::from_le_bytes(value[fixed_len - 4..fixed_len].try_into().expect("4 bytes"))
                as usize;
        if value.len() != fixed_len + custom_len {
            return Err("stream head length does not match its fields");
        }
        let custom = if custom_len == 0 {
            None
        } else {
            Some(
                serde_json::from_slice(&value[fixed_len..])
                    .map_err(|_| "stream metadata is not JSON")?,
            )
        };
        let nonzero = |v: u64| (v != 0).then_some(v);
        let metadata = StreamMetadata {
            truncate_before: nonzero(u64_at(26)).map(StreamVersion),
            max_count: nonzero(u64_at(34)),
            max_age: nonzero(u64_at(42)).map(std::time::Duration::from_secs),
            custom,
        };
        let (metadata_changes, metadata_recorded_at_micros) = if fixed_len == HEAD_FIXED_LEN {
            (u64_at(50), u64_at(58).cast_signed())
        } else {
            // A format-1 head with metadata counts it as set once, at an unknown time.
            (u64::from(metadata != StreamMetadata::default()), 0)
        };
        Ok(Head {
            state,
            next_version: u64_at(2),
            last_position: u64_at(10),
            deleted_before: u64_at(18),
            metadata,
            metadata_changes,
            metadata_recorded_at_micros,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_event_key_matches_exactly_the_key_event_key_builds() {
        let key = event_key("acct-1", StreamVersion(7));
        assert!(is_event_key(&key, "acct-1", StreamVersion(7)));
        assert!(!is_event_key(&key, "acct-1", StreamVersion(8)));
        assert!(!is_event_key(&key, "acct-2", StreamVersion(7)));
        assert!(!is_event_key(&key, "acct-", StreamVersion(7)));
        assert!(!is_event_key(
            &key[..key.len() - 1],
            "acct-1",
            StreamVersion(7)
        ));
        assert!(!is_event_key(
            &head_key("acct-1"),
            "acct-1",
            StreamVersion(7)
        ));
    }

    #[test]
    fn event_keys_are_unambiguous_and_round_trip() {
        let a = event_key("ab", StreamVersion(1));
        let b = event_key("a", StreamVersion(1));
        assert_ne!(a[..a.len() - 8], b[..b.len() - 8]);
        assert_eq!(parse_event_key(&a), Some(("ab", StreamVersion(1))));
        assert_eq!(parse_event_key(&head_key("ab")), None);
        // Versions of one stream sort in order.
        assert!(event_key("s", StreamVersion(9)) < event_key("s", StreamVersion(10)));
    }

    #[test]
    fn events_round_trip() {
        let stored = StoredEvent {
            id: Uuid::new_v4(),
            position: Position(42),
            recorded_at_micros: 1_700_000_000_123_456,
            content_type: ContentType::Json,
            event_type: "Deposited",
            metadata: b"{}",
            data: br#"{"amount":5}"#,
        };
        let mut bytes = vec![7; 3];
        stored.encode_into(&mut bytes);
        assert_eq!(
            bytes.len(),
            encoded_event_len("Deposited", b"{}", br#"{"amount":5}"#)
        );
        assert_eq!(decode_event(&bytes), Ok(stored));
        assert!(decode_event(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn heads_round_trip() {
        let mut head = Head::new();
        head.next_version = 7;
        head.last_position = 99;
        head.deleted_before = 4;
        head.state = StreamState::Deleted;
        head.metadata.max_count = Some(3);
        head.metadata.truncate_before = Some(StreamVersion(2));
        head.metadata.max_age = Some(std::time::Duration::from_secs(60));
        head.metadata.custom = Some(serde_json::json!({"owner": "ops"}));
        head.metadata_changes = 2;
        head.metadata_recorded_at_micros = 1_700_000_000_123_456;
        assert_eq!(Head::decode(&head.encode()), Ok(head));
    }

    #[test]
    fn format_1_heads_still_decode() {
        let mut head = Head::new();
        head.next_version = 3;
        head.metadata.max_count = Some(5);
        head.metadata.custom = Some(serde_json::json!({"k": 1}));
        head.metadata_changes = 1;
        // Format 1 is format 2 without the two metadata-change fields.
        let mut bytes = head.encode();
        bytes[0] = HEAD_FORMAT_1;
        bytes.drain(50..66);
        assert_eq!(Head::decode(&bytes), Ok(head.clone()));
        head.metadata = StreamMetadata::default();
        head.metadata_changes = 0;
        let mut bytes = head.encode();
        bytes[0] = HEAD_FORMAT_1;
        bytes.drain(50..66);
        assert_eq!(Head::decode(&bytes), Ok(head));
    }
}
