//! Stream metadata through KurrentDB's official Rust client, unmodified: `set_stream_metadata`
//! and `get_stream_metadata` against a real server on `127.0.0.1:0`, the retention they set
//! enforced by the event store, and metadata set through one API read back through the other.

mod common;
mod kurrent_helpers;

use std::time::Duration;

use caskade_proto::v1 as native_pb;
use common::{TestResult, TestServer};
use kurrent_helpers::{client, ns, numbered, read_stream};
use kurrentdb::{
    Acl, AppendToStreamOptions, CurrentRevision, ReadStreamOptions, StreamAclBuilder,
    StreamMetadata, StreamMetadataResult, StreamPosition, StreamState, TombstoneStreamOptions,
};

fn expecting(state: StreamState) -> AppendToStreamOptions {
    AppendToStreamOptions::default().stream_state(state)
}

/// The metadata of `stream` as the client reads it, with its version.
async fn metadata_of(
    client: &kurrentdb::Client,
    stream: &str,
) -> TestResult<Option<(u64, StreamMetadata)>> {
    let read = ReadStreamOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(1);
    Ok(match client.get_stream_metadata(stream, &read).await? {
        StreamMetadataResult::Success(versioned) => {
            Some((versioned.version(), versioned.metadata().clone()))
        }
        StreamMetadataResult::NotFound => None,
        StreamMetadataResult::Deleted => return Err("the stream is deleted".into()),
    })
}

#[tokio::test]
async fn metadata_set_through_the_client_is_read_back_and_enforced() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let client = client(&server, "kurrentdb")?;
    client
        .append_to_stream("orders", &expecting(StreamState::NoStream), numbered(0, 5))
        .await?;
    assert_eq!(metadata_of(&client, "orders").await?, None);

    let acl = StreamAclBuilder::new()
        .add_read_roles("ops")
        .add_write_roles("$admins")
        .build();
    let metadata = StreamMetadata::builder()
        .max_count(3)
        .truncate_before(1)
        .acl(Acl::Stream(acl))
        .insert_custom_property("owner", "ops")
        .build();
    let written = client
        .set_stream_metadata("orders", &expecting(StreamState::NoStream), &metadata)
        .await?;
    assert_eq!(written.next_expected_version, 0);
    assert_eq!(
        metadata_of(&client, "orders").await?,
        Some((0, metadata.clone()))
    );
    // The store enforces it: the newest three, all at or above 1.
    let events = read_stream(&client, "orders", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [2, 3, 4]);

    // The expected revision is the metadata's: 0 now, whatever the stream's is.
    let tighter = StreamMetadata::builder().max_count(1).build();
    match client
        .set_stream_metadata(
            "orders",
            &expecting(StreamState::StreamRevision(4)),
            &tighter,
        )
        .await
    {
        Err(kurrentdb::Error::WrongExpectedVersion { current, expected }) => {
            assert_eq!(current, CurrentRevision::Current(0));
            assert_eq!(expected, StreamState::StreamRevision(4));
        }
        other => panic!("the metadata is at 0, got {other:?}"),
    }
    let written = client
        .set_stream_metadata(
            "orders",
            &expecting(StreamState::StreamRevision(0)),
            &tighter,
        )
        .await?;
    assert_eq!(written.next_expected_version, 1);
    let events = read_stream(&client, "orders", &ReadStreamOptions::default()).await?;
    assert_eq!(ns(&events)?, [4]);
    assert_eq!(metadata_of(&client, "orders").await?, Some((1, tighter)));

    // A stream with no events may have metadata.
    client
        .set_stream_metadata("future", &expecting(StreamState::Any), &metadata)
        .await?;
    assert_eq!(metadata_of(&client, "future").await?, Some((0, metadata)));
    server.stop().await
}

#[tokio::test]
async fn metadata_set_through_one_api_reads_back_through_the_other() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let kurrent = client(&server, "esdb")?;
    let mut native = server.streams().await?;
    kurrent
        .append_to_stream("cart", &expecting(StreamState::NoStream), numbered(0, 4))
        .await?;

    // Natively set, read through the metadata stream.
    native
        .set_metadata(native_pb::SetMetadataRequest {
            stream: "cart".into(),
            expected_version: None,
            metadata: Some(native_pb::StreamMetadata {
                max_count: Some(2),
                max_age_seconds: Some(3_600),
                truncate_before: None,
                custom_json: r#"{"team":"checkout"}"#.into(),
            }),
        })
        .await?;
    let (version, metadata) = metadata_of(&kurrent, "cart").await?.ok_or("no metadata")?;
    assert_eq!(version, 0);
    assert_eq!(metadata.max_count, Some(2));
    assert_eq!(
        metadata.custom_properties.get("team"),
        Some(&serde_json::json!("checkout"))
    );
    let events = read_stream(&kurrent, "$$cart", &ReadStreamOptions::default()).await?;
    let [event] = &events[..] else {
        panic!("one metadata event, got {}", events.len());
    };
    let event = event.get_original_event();
    assert_eq!(event.event_type, "$metadata");
    assert_eq!(event.stream_id(), "$$cart");
    assert!(event.is_json);
    // `$maxAge` is whole seconds on the wire, as KurrentDB's server reads it.
    let json: serde_json::Value = serde_json::from_slice(&event.data)?;
    assert_eq!(json["$maxAge"], 3_600);

    // Set through the client, read natively: every key the store does not enforce is kept.
    let acl = StreamAclBuilder::new().add_read_roles("ops").build();
    let metadata = StreamMetadata::builder()
        .max_count(3)
        .acl(Acl::Stream(acl))
        .build();
    kurrent
        .set_stream_metadata(
            "cart",
            &expecting(StreamState::StreamRevision(0)),
            &metadata,
        )
        .await?;
    let info = native
        .get_metadata(native_pb::GetMetadataRequest {
            stream: "cart".into(),
        })
        .await?
        .into_inner()
        .info
        .ok_or("no info")?;
    let stored = info.metadata.ok_or("no metadata")?;
    assert_eq!(stored.max_count, Some(3));
    assert_eq!(stored.max_age_seconds, None);
    let custom: serde_json::Value = serde_json::from_str(&stored.custom_json)?;
    assert_eq!(custom, serde_json::json!({"$acl": {"$r": "ops"}}));

    // A tombstoned stream's metadata reads as deleted: the read fails before any message,
    // so the client reports it as an error rather than as `Deleted`.
    kurrent
        .tombstone_stream("cart", &TombstoneStreamOptions::default())
        .await?;
    let read = ReadStreamOptions::default();
    let deleted = kurrent.get_stream_metadata("cart", &read).await;
    assert!(
        matches!(deleted, Err(kurrentdb::Error::ResourceDeleted)),
        "{deleted:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn the_rust_clients_max_age_in_milliseconds_is_stored_as_seconds() -> TestResult {
    // The Rust client writes `$maxAge` in milliseconds where KurrentDB's server (and
    // Caskade) read seconds: it round-trips through the client, and is enforced as seconds.
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let kurrent = client(&server, "esdb")?;
    let mut native = server.streams().await?;
    let metadata = StreamMetadata::builder()
        .max_age(Duration::from_secs(2))
        .build();
    kurrent
        .set_stream_metadata("aged", &expecting(StreamState::Any), &metadata)
        .await?;
    assert_eq!(metadata_of(&kurrent, "aged").await?, Some((0, metadata)));
    let info = native
        .get_metadata(native_pb::GetMetadataRequest {
            stream: "aged".into(),
        })
        .await?
        .into_inner()
        .info
        .ok_or("no info")?;
    assert_eq!(info.metadata.and_then(|m| m.max_age_seconds), Some(2_000));
    server.stop().await
}
