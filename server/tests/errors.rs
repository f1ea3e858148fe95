//! Every error a client can cause comes back as the status the API promises
//! (`server/src/status.rs`): `FAILED_PRECONDITION`, `NOT_FOUND`, `INVALID_ARGUMENT`,
//! `RESOURCE_EXHAUSTED`, `ALREADY_EXISTS` and `UNAUTHENTICATED`; a failed call changes
//! nothing.

mod common;

use caskade_eventstore::{EventStore, Options};
use caskade_proto::v1 as pb;
use caskade_server::ServerConfig;
use common::{
    Access, Authed, TestResult, TestServer, append, exact, json_event, no_stream, numbered, read,
    read_all, read_stream, stream_exists, within,
};
use serde_json::json;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type Streams = pb::streams_client::StreamsClient<Authed>;

/// Fails unless `result` is an error with `code`; returns the status for more checks.
fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    what: &str,
) -> TestResult<Status> {
    match result {
        Ok(value) => Err(format!("{what}: expected {code:?}, got Ok({value:?})").into()),
        Err(status) if status.code() == code => Ok(status),
        Err(status) => Err(format!("{what}: expected {code:?}, got {status:?}").into()),
    }
}

/// Expects an append to fail with `code`.
async fn append_fails(
    client: &mut Streams,
    request: pb::AppendRequest,
    code: Code,
    what: &str,
) -> TestResult<Status> {
    expect_code(client.append(request).await.map(drop), code, what)
}

/// Expects a read to fail with `code`, either at once or as its first message.
async fn read_fails(
    client: &mut Streams,
    request: pb::ReadRequest,
    code: Code,
    what: &str,
) -> TestResult<Status> {
    let result = within("a failing read", async {
        let mut messages = client.read(request).await?.into_inner();
        let mut count = 0_usize;
        while messages.message().await?.is_some() {
            count += 1;
        }
        Ok::<_, Status>(count)
    })
    .await?;
    expect_code(result, code, what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expected_version_is_failed_precondition_naming_both_versions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("acct", None, numbered("E", 0, 3)))
        .await?;

    let status = append_fails(
        &mut client,
        append("acct", exact(7), numbered("E", 3, 1)),
        Code::FailedPrecondition,
        "exact 7 on a stream at 2",
    )
    .await?;
    let message = status.message();
    assert!(
        message.contains("expected 7") && message.contains("actual 2"),
        "{message:?}"
    );
    let status = append_fails(
        &mut client,
        append("acct", no_stream(), numbered("E", 3, 1)),
        Code::FailedPrecondition,
        "no stream on a stream at 2",
    )
    .await?;
    assert!(status.message().contains("actual 2"), "{status:?}");
    let status = append_fails(
        &mut client,
        append("fresh", exact(0), numbered("E", 0, 1)),
        Code::FailedPrecondition,
        "exact 0 on a stream never written",
    )
    .await?;
    assert!(
        status.message().contains("expected 0") && status.message().contains("no stream"),
        "{status:?}"
    );
    append_fails(
        &mut client,
        append("fresh", stream_exists(), numbered("E", 0, 1)),
        Code::FailedPrecondition,
        "stream exists on a stream never written",
    )
    .await?;
    let delete = client
        .delete(pb::DeleteRequest {
            stream: "acct".into(),
            expected_version: exact(1),
        })
        .await;
    expect_code(delete, Code::FailedPrecondition, "delete expecting 1")?;
    let set = client
        .set_metadata(pb::SetMetadataRequest {
            stream: "acct".into(),
            expected_version: no_stream(),
            metadata: None,
        })
        .await;
    expect_code(
        set,
        Code::FailedPrecondition,
        "set metadata expecting no stream",
    )?;

    assert_eq!(
        read(&mut client, read_all()).await?.len(),
        3,
        "nothing written"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstoned_stream_is_not_found_for_every_call() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("dead", None, numbered("E", 0, 1)))
        .await?;
    client
        .tombstone(pb::TombstoneRequest {
            stream: "dead".into(),
            expected_version: exact(0),
        })
        .await?;

    let status = append_fails(
        &mut client,
        append("dead", None, numbered("E", 1, 1)),
        Code::NotFound,
        "append",
    )
    .await?;
    assert!(status.message().contains("dead"), "{status:?}");
    read_fails(&mut client, read_stream("dead"), Code::NotFound, "read").await?;
    let delete = client
        .delete(pb::DeleteRequest {
            stream: "dead".into(),
            expected_version: None,
        })
        .await;
    expect_code(delete, Code::NotFound, "delete")?;
    let set = client
        .set_metadata(pb::SetMetadataRequest {
            stream: "dead".into(),
            expected_version: None,
            metadata: None,
        })
        .await;
    expect_code(set, Code::NotFound, "set metadata")?;
    let subscribe = client
        .subscribe(pb::SubscribeRequest {
            target: Some(pb::subscribe_request::Target::Stream("dead".into())),
            from: None,
            filter: None,
        })
        .await;
    let subscribe = match subscribe {
        // The error may come as the stream's first message rather than at once.
        Ok(response) => {
            within("the subscription's first message", async {
                response.into_inner().message().await.map(|_| ())
            })
            .await?
        }
        Err(status) => Err(status),
    };
    expect_code(subscribe, Code::NotFound, "subscribe")?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_appends_are_invalid_argument_and_write_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    let ok = || numbered("E", 0, 1);
    let cases: Vec<(&str, pb::AppendRequest)> = vec![
        ("empty stream name", append("", None, ok())),
        ("$all as a stream", append("$all", None, ok())),
        ("a reserved $ name", append("$system", None, ok())),
        ("a control character", append("a\nb", None, ok())),
        ("an empty append", append("s", None, Vec::new())),
        ("the nil UUID", {
            let mut events = ok();
            events[0].id = uuid::Uuid::nil().to_string();
            append("s", None, events)
        }),
        ("a bad UUID", {
            let mut events = ok();
            events[0].id = "not-a-uuid".into();
            append("s", None, events)
        }),
        ("non-JSON data declared JSON", {
            let mut events = ok();
            events[0].data = b"{not json".to_vec();
            append("s", None, events)
        }),
        ("non-JSON metadata declared JSON", {
            let mut events = ok();
            events[0].metadata = b"[1, 2".to_vec();
            append("s", None, events)
        }),
        ("an empty event type", {
            let mut events = ok();
            events[0].r#type = String::new();
            append("s", None, events)
        }),
        ("an unknown content type", {
            let mut events = ok();
            events[0].content_type = 7;
            append("s", None, events)
        }),
        ("the same id twice", {
            let mut events = numbered("E", 0, 2);
            let first = events[0].id.clone();
            events[1].id = first;
            append("s", None, events)
        }),
    ];
    for (what, request) in cases {
        let status = append_fails(&mut client, request, Code::InvalidArgument, what).await?;
        assert!(!status.message().is_empty(), "{what}: a message says why");
    }
    let status = append_fails(
        &mut client,
        append("s", None, {
            let mut events = ok();
            events[0].id = "not-a-uuid".into();
            events
        }),
        Code::InvalidArgument,
        "bad UUID message",
    )
    .await?;
    assert!(status.message().contains("not-a-uuid"), "{status:?}");
    // Over a size limit is RESOURCE_EXHAUSTED, with the limit in the message.
    let over_limits = [
        (
            "a name over 1,024 bytes",
            append(&"n".repeat(1025), None, ok()),
        ),
        ("a type over 1,024 bytes", {
            let mut events = ok();
            events[0].r#type = "T".repeat(1025);
            append("s", None, events)
        }),
    ];
    for (what, request) in over_limits {
        let status = append_fails(&mut client, request, Code::ResourceExhausted, what).await?;
        assert!(
            status
                .message()
                .contains("1025 bytes, over the maximum of 1024 bytes"),
            "{what}: {status:?}"
        );
    }

    assert!(
        read(&mut client, read_all()).await?.is_empty(),
        "nothing written"
    );
    assert!(common::list_streams(&mut client).await?.is_empty());
    server.stop().await
}

/// An `AppendRequest` as a sender with a wrong schema might encode it: field 1, the stream
/// name, as arbitrary bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct StreamAsBytes {
    #[prost(bytes = "vec", tag = "1")]
    stream: Vec<u8>,
}

/// The same field sent as a varint, a wire type a string field cannot have.
#[derive(Clone, PartialEq, prost::Message)]
struct StreamAsVarint {
    #[prost(uint64, tag = "1")]
    stream: u64,
}

/// Sends `request` as the body of `caskade.v1.Streams/Append`.
async fn raw_append<M: prost::Message + Default + Send + 'static>(
    server: &TestServer,
    request: M,
) -> TestResult<Result<pb::AppendResponse, Status>> {
    let mut grpc = tonic::client::Grpc::new(common::channel(server.addr(), None).await?);
    grpc.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/caskade.v1.Streams/Append");
    let codec = tonic_prost::ProstCodec::<M, pb::AppendResponse>::default();
    Ok(grpc
        .unary(tonic::Request::new(request), path, codec)
        .await
        .map(tonic::Response::into_inner))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_invalid_argument() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let not_utf8 = StreamAsBytes {
        stream: b"caf\xe9".to_vec(),
    };
    let status = expect_code(
        raw_append(&server, not_utf8).await?,
        Code::InvalidArgument,
        "a stream name that is not UTF-8",
    )?;
    assert!(status.message().contains("malformed message"), "{status:?}");
    expect_code(
        raw_append(&server, StreamAsVarint { stream: 7 }).await?,
        Code::InvalidArgument,
        "a field of the wrong wire type",
    )?;
    let mut client = server.streams().await?;
    assert!(
        read(&mut client, read_all()).await?.is_empty(),
        "nothing written"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reads_and_subscriptions_are_invalid_argument() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("s", None, numbered("E", 0, 1)))
        .await?;

    let missing_target = pb::ReadRequest::default();
    read_fails(
        &mut client,
        missing_target,
        Code::InvalidArgument,
        "no target",
    )
    .await?;
    read_fails(
        &mut client,
        read_stream(""),
        Code::InvalidArgument,
        "empty name",
    )
    .await?;
    read_fails(
        &mut client,
        read_stream("$all"),
        Code::InvalidArgument,
        "$all",
    )
    .await?;
    let bad_regex = pb::ReadRequest {
        filter: Some(pb::Filter {
            event_type_regex: "(unclosed".into(),
            ..pb::Filter::default()
        }),
        ..read_all()
    };
    read_fails(&mut client, bad_regex, Code::InvalidArgument, "bad regex").await?;
    let bad_direction = pb::ReadRequest {
        direction: 9,
        ..read_stream("s")
    };
    read_fails(
        &mut client,
        bad_direction,
        Code::InvalidArgument,
        "bad direction",
    )
    .await?;

    let no_target = client.subscribe(pb::SubscribeRequest::default()).await;
    expect_code(
        no_target.map(drop),
        Code::InvalidArgument,
        "subscribe, no target",
    )?;
    let bad_filter = client
        .subscribe(pb::SubscribeRequest {
            target: Some(pb::subscribe_request::Target::All(pb::Empty {})),
            from: None,
            filter: Some(pb::Filter {
                event_type_regex: "[".into(),
                ..pb::Filter::default()
            }),
        })
        .await;
    expect_code(
        bad_filter.map(drop),
        Code::InvalidArgument,
        "subscribe, bad regex",
    )?;
    let reserved = client
        .subscribe(pb::SubscribeRequest {
            target: Some(pb::subscribe_request::Target::Stream("$all".into())),
            from: None,
            filter: None,
        })
        .await;
    expect_code(
        reserved.map(drop),
        Code::InvalidArgument,
        "subscribe to $all by name",
    )?;
    let unnamed = client
        .subscribe(pb::SubscribeRequest {
            target: Some(pb::subscribe_request::Target::Stream(String::new())),
            from: None,
            filter: None,
        })
        .await;
    expect_code(
        unnamed.map(drop),
        Code::InvalidArgument,
        "subscribe to an empty name",
    )?;

    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_metadata_is_invalid_argument() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut client = server.streams().await?;
    client
        .append(append("s", None, numbered("E", 0, 1)))
        .await?;
    let set = |metadata: pb::StreamMetadata| pb::SetMetadataRequest {
        stream: "s".into(),
        expected_version: None,
        metadata: Some(metadata),
    };
    let bad_json = set(pb::StreamMetadata {
        custom_json: "{oops".into(),
        ..pb::StreamMetadata::default()
    });
    let zero_count = set(pb::StreamMetadata {
        max_count: Some(0),
        ..pb::StreamMetadata::default()
    });
    for (what, request) in [("custom_json", bad_json), ("max_count 0", zero_count)] {
        expect_code(
            client.set_metadata(request).await,
            Code::InvalidArgument,
            what,
        )?;
    }
    let info = client
        .get_metadata(pb::GetMetadataRequest {
            stream: String::new(),
        })
        .await;
    expect_code(info, Code::InvalidArgument, "metadata of an empty name")?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_kv_keys_and_backup_destination_are_invalid_argument() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let mut kv = server.kv().await?;
    let put = kv
        .put(pb::PutRequest {
            key: Vec::new(),
            value: b"v".to_vec(),
        })
        .await;
    expect_code(put, Code::InvalidArgument, "put of an empty key")?;
    let get = kv.get(pb::GetRequest { key: Vec::new() }).await;
    expect_code(get, Code::InvalidArgument, "get of an empty key")?;
    let delete = kv.delete(pb::KvDeleteRequest { key: Vec::new() }).await;
    expect_code(delete, Code::InvalidArgument, "delete of an empty key")?;
    let backup = server
        .admin()
        .await?
        .backup(pb::BackupRequest {
            destination: String::new(),
        })
        .await;
    expect_code(
        backup,
        Code::InvalidArgument,
        "backup without a destination",
    )?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_over_a_size_limit_is_resource_exhausted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut options = common::options();
    options.engine.max_value_size = 16 << 10;
    let options = Options {
        max_event_size: 1 << 10,
        max_append_size: 4 << 10,
        ..options
    };
    let server = TestServer::start(
        EventStore::open(dir.path(), options)?,
        ServerConfig::default(),
    )
    .await?;
    let mut client = server.streams().await?;
    let mut kv = server.kv().await?;

    let big = json_event("Big", &json!({ "blob": "x".repeat(2 << 10) }));
    let status = append_fails(
        &mut client,
        append("s", None, vec![big]),
        Code::ResourceExhausted,
        "an event over max_event_size",
    )
    .await?;
    assert!(
        status.message().contains("1024"),
        "names the maximum: {status:?}"
    );
    let medium = |n: u64| json_event("Medium", &json!({ "n": n, "blob": "y".repeat(700) }));
    append_fails(
        &mut client,
        append("s", None, (0..8).map(medium).collect()),
        Code::ResourceExhausted,
        "an append over max_append_size",
    )
    .await?;
    // Just under the limits is fine.
    client
        .append(append("s", None, (0..2).map(medium).collect()))
        .await?;
    let metadata = client
        .set_metadata(pb::SetMetadataRequest {
            stream: "s".to_owned(),
            expected_version: None,
            metadata: Some(pb::StreamMetadata {
                custom_json: format!("{{\"note\": \"{}\"}}", "z".repeat(2 << 10)),
                ..pb::StreamMetadata::default()
            }),
        })
        .await;
    let status = expect_code(
        metadata,
        Code::ResourceExhausted,
        "custom metadata over max_event_size",
    )?;
    assert!(status.message().contains("1024"), "{status:?}");

    let value = kv
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![7; 20 << 10],
        })
        .await;
    let status = expect_code(
        value,
        Code::ResourceExhausted,
        "a value over max_value_size",
    )?;
    assert!(
        status.message().contains(&(16 << 10).to_string()),
        "{status:?}"
    );
    let key = kv
        .put(pb::PutRequest {
            key: vec![b'k'; usize::from(u16::MAX)],
            value: b"v".to_vec(),
        })
        .await;
    expect_code(key, Code::ResourceExhausted, "a key over max_key_size")?;
    assert_eq!(
        kv.get(pb::GetRequest { key: b"k".to_vec() })
            .await?
            .into_inner()
            .value,
        None
    );
    assert_eq!(read(&mut client, read_stream("s")).await?.len(), 2);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_into_a_non_empty_directory_is_already_exists() -> TestResult {
    let dir = tempfile::tempdir()?;
    let dest = tempfile::tempdir()?;
    std::fs::write(dest.path().join("precious.txt"), b"keep me")?;
    let server = TestServer::start_in(dir.path()).await?;
    server
        .streams()
        .await?
        .append(append("s", None, numbered("E", 0, 1)))
        .await?;
    let backup = server
        .admin()
        .await?
        .backup(pb::BackupRequest {
            destination: dest.path().to_str().ok_or("temp paths are UTF-8")?.into(),
        })
        .await;
    expect_code(
        backup,
        Code::AlreadyExists,
        "backup into a non-empty directory",
    )?;
    assert_eq!(std::fs::read(dest.path().join("precious.txt"))?, b"keep me");
    assert_eq!(std::fs::read_dir(dest.path())?.count(), 1, "nothing copied");
    let onto_a_file = server
        .admin()
        .await?
        .backup(pb::BackupRequest {
            destination: dest
                .path()
                .join("precious.txt")
                .to_str()
                .ok_or("temp paths are UTF-8")?
                .into(),
        })
        .await;
    expect_code(onto_a_file, Code::AlreadyExists, "backup onto a file")?;
    assert_eq!(std::fs::read(dest.path().join("precious.txt"))?, b"keep me");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required_by_every_service_but_health() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        token: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let server = TestServer::start(common::open_store(dir.path())?, config).await?;
    let addr = server.addr();
    let with = |token: Option<&str>| Access {
        token: token.map(str::to_owned),
        tls: None,
    };

    for (what, token) in [("no token", None), ("a wrong token", Some("guess"))] {
        let mut streams = common::streams_client(addr, &with(token)).await?;
        let appended = streams.append(append("s", None, numbered("E", 0, 1))).await;
        let status = expect_code(appended, Code::Unauthenticated, what)?;
        assert!(!status.message().is_empty());
        read_fails(&mut streams, read_all(), Code::Unauthenticated, what).await?;
        let subscribe = streams.subscribe(pb::SubscribeRequest::default()).await;
        expect_code(subscribe.map(drop), Code::Unauthenticated, what)?;
        let mut kv = common::kv_client(addr, &with(token)).await?;
        let get = kv.get(pb::GetRequest { key: b"k".to_vec() }).await;
        expect_code(get, Code::Unauthenticated, what)?;
        let mut admin = common::admin_client(addr, &with(token)).await?;
        let sizes = admin.stats(pb::StatsRequest {}).await;
        expect_code(sizes, Code::Unauthenticated, what)?;
    }
    // A token sent without the `Bearer ` scheme is not accepted either.
    let raw = common::channel(addr, None).await?;
    let mut request = tonic::Request::new(pb::StatsRequest {});
    request
        .metadata_mut()
        .insert("authorization", "s3cret".parse()?);
    let stats = pb::admin_client::AdminClient::new(raw).stats(request).await;
    expect_code(stats, Code::Unauthenticated, "a token without `Bearer `")?;

    let right = with(Some("s3cret"));
    let mut streams = common::streams_client(addr, &right).await?;
    streams
        .append(append("s", None, numbered("E", 0, 1)))
        .await?;
    assert_eq!(read(&mut streams, read_stream("s")).await?.len(), 1);
    let mut kv = common::kv_client(addr, &right).await?;
    kv.put(pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    })
    .await?;
    let mut admin = common::admin_client(addr, &right).await?;
    assert_eq!(
        admin.stats(pb::StatsRequest {}).await?.into_inner().streams,
        1
    );

    // Health is open: load balancers and orchestrators probe without a token.
    let mut health = HealthClient::new(common::channel(addr, None).await?);
    for service in [
        "",
        "caskade.v1.Streams",
        "caskade.v1.Kv",
        "caskade.v1.Admin",
    ] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner();
        assert_eq!(
            response.status,
            i32::from(ServingStatus::Serving),
            "{service:?}"
        );
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_size_is_resource_exhausted() -> TestResult {
    // The API promises RESOURCE_EXHAUSTED "for input over a size limit"; the message-size
    // limit of `ServerConfig` is one.
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        max_message_size: 64 << 10,
        ..ServerConfig::default()
    };
    let store = EventStore::open(dir.path(), common::options_for_messages_of(64 << 10))?;
    let server = TestServer::start(store, config).await?;
    let put = server
        .kv()
        .await?
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![1; 100 << 10],
        })
        .await;
    expect_code(put, Code::ResourceExhausted, "a put message over 64 KiB")?;
    server.stop().await
}

/// A message limit that could not carry the largest event the store accepts would accept
/// such an event and then fail every read of it: the server refuses to start, naming both
/// sizes, and leaves the store closed for the next server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_limit_below_the_largest_event_is_refused_before_serving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = Options {
        max_event_size: 1 << 20,
        ..common::options()
    };
    let needed = caskade_server::min_message_size(&options);
    assert!(needed > 1 << 20, "{needed}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = ServerConfig {
        max_message_size: 1 << 20,
        ..ServerConfig::default()
    };
    let refused = caskade_server::run(
        listener,
        EventStore::open(dir.path(), options.clone())?,
        config,
        std::future::pending(),
    )
    .await;
    match refused {
        Err(error @ caskade_server::Error::MessageSizeTooSmall { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&(1 << 20).to_string()), "{message}");
            assert!(message.contains(&needed.to_string()), "{message}");
        }
        other => panic!("expected MessageSizeTooSmall, got {other:?}"),
    }
    // Exactly the minimum is enough.
    let config = ServerConfig {
        max_message_size: needed,
        ..ServerConfig::default()
    };
    let server = TestServer::start(EventStore::open(dir.path(), options)?, config).await?;
    let big = vec![7; (1 << 20) - 100];
    let mut client = server.streams().await?;
    client
        .append(pb::AppendRequest {
            stream: "s".repeat(1024),
            expected_version: None,
            events: vec![pb::EventData {
                id: String::new(),
                r#type: "Big".to_owned(),
                content_type: pb::ContentType::Binary.into(),
                data: big.clone(),
                metadata: Vec::new(),
            }],
        })
        .await?;
    let mut read = client
        .read(pb::ReadRequest {
            target: Some(pb::read_request::Target::Stream("s".repeat(1024))),
            ..pb::ReadRequest::default()
        })
        .await?
        .into_inner();
    let message = read.message().await?.ok_or("one message")?;
    assert_eq!(message.events.len(), 1);
    assert_eq!(message.events[0].data, big);
    server.stop().await
}
