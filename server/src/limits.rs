//! The smallest gRPC message limit a store's own limits need.
//!
//! Every response is filled up to the configured message limit and never over it, so a
//! limit below the largest single item the store can hold would accept that item and then
//! fail every read of it. The items are: an event (in an append request, a read response or
//! a subscription message), a stream's info with its custom metadata (in `ListStreams` and
//! `GetMetadata`), and a key (in `Keys`, one key per message). [`min_message_size`] bounds
//! the largest of their messages from above; the server refuses to start below it.

use caskade_eventstore::Options;

/// An upper bound on the bytes a message carrying one item adds beyond the item's own
/// variable-length parts (the stream name, and an event's type, data and metadata, or a
/// stream's custom metadata): field tags, length prefixes of at most five bytes, the id in
/// its longest accepted text form (`urn:uuid:...`, 45 bytes), integers at their longest
/// (ten bytes) and the expected version. The tests below build the largest messages and
/// check it.
const ITEM_MESSAGE_OVERHEAD: usize = 160;

/// Bytes a `Keys` response adds to its key: a tag and a length prefix of at most three
/// bytes (keys are under 64 KiB).
const KEY_MESSAGE_OVERHEAD: usize = 4;

/// The smallest message limit, in bytes, with which every event, stream info and key that
/// a store opened with `options` accepts also fits one gRPC message.
#[must_use]
pub fn min_message_size(options: &Options) -> usize {
    let item = options.max_event_size + options.max_stream_name_len + ITEM_MESSAGE_OVERHEAD;
    let key = options.engine.max_key_size + KEY_MESSAGE_OVERHEAD;
    item.max(key)
}

#[cfg(test)]
mod tests {
    use caskade_proto::v1 as pb;
    use prost::Message;

    use super::*;

    /// Splits `total` bytes between three parts in every proportion the tests try: each
    /// part takes all of it, or it is shared out, so each length prefix is at its longest
    /// somewhere.
    fn splits(total: usize) -> Vec<[usize; 3]> {
        vec![
            [total, 0, 0],
            [0, total, 0],
            [0, 0, total],
            [total / 3, total / 3, total - 2 * (total / 3)],
        ]
    }

    fn text(len: usize) -> String {
        "x".repeat(len)
    }

    #[test]
    fn the_largest_event_messages_fit_the_minimum() {
        let options = Options::default();
        let min = min_message_size(&options);
        let name = text(options.max_stream_name_len);
        for [type_len, data_len, metadata_len] in splits(options.max_event_size) {
            let recorded = pb::RecordedEvent {
                id: text(36),
                stream: name.clone(),
                version: u64::MAX,
                position: u64::MAX,
                r#type: text(type_len),
                content_type: pb::ContentType::Binary.into(),
                data: vec![0; data_len],
                metadata: vec![0; metadata_len],
                recorded_at_micros: i64::MIN,
            };
            let read = pb::ReadResponse {
                events: vec![recorded.clone()],
            };
            let subscribed = pb::SubscribeResponse {
                message: Some(pb::subscribe_response::Message::Event(recorded)),
            };
            let append = pb::AppendRequest {
                stream: name.clone(),
                expected_version: Some(pb::ExpectedVersion {
                    kind: Some(pb::expected_version::Kind::Exact(u64::MAX)),
                }),
                events: vec![pb::EventData {
                    id: format!("urn:uuid:{}", text(36)),
                    r#type: text(type_len),
                    content_type: pb::ContentType::Binary.into(),
                    data: vec![0; data_len],
                    metadata: vec![0; metadata_len],
                }],
            };
            for len in [
                read.encoded_len(),
                subscribed.encoded_len(),
                append.encoded_len(),
            ] {
                assert!(len <= min, "{len} > {min}");
            }
        }
    }

    #[test]
    fn the_largest_stream_info_and_key_messages_fit_the_minimum() {
        let options = Options::default();
        let min = min_message_size(&options);
        let info = pb::StreamInfo {
            name: text(options.max_stream_name_len),
            last_version: Some(u64::MAX),
            state: pb::StreamState::Tombstoned.into(),
            metadata: Some(pb::StreamMetadata {
                max_count: Some(u64::MAX),
                max_age_seconds: Some(u64::MAX),
                truncate_before: Some(u64::MAX),
                custom_json: text(options.max_event_size),
            }),
        };
        let set = pb::SetMetadataRequest {
            stream: info.name.clone(),
            expected_version: Some(pb::ExpectedVersion {
                kind: Some(pb::expected_version::Kind::Exact(u64::MAX)),
            }),
            metadata: info.metadata.clone(),
        };
        let listed = pb::ListStreamsResponse {
            streams: vec![info.clone()],
        };
        let got = pb::GetMetadataResponse { info: Some(info) };
        for len in [set.encoded_len(), listed.encoded_len(), got.encoded_len()] {
            assert!(len <= min, "{len} > {min}");
        }
        let key = pb::KeysResponse {
            key: vec![0; options.engine.max_key_size],
        };
        assert!(key.encoded_len() <= min);
    }

    #[test]
    fn the_minimum_follows_whichever_limit_is_larger() {
        let mut options = Options {
            max_event_size: 1000,
            ..Options::default()
        };
        assert_eq!(
            min_message_size(&options),
            options.engine.max_key_size + KEY_MESSAGE_OVERHEAD
        );
        options.engine.max_key_size = 100;
        options.max_stream_name_len = 80;
        assert_eq!(
            min_message_size(&options),
            1000 + 80 + ITEM_MESSAGE_OVERHEAD
        );
    }
}
