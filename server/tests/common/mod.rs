//! What the server's integration tests share: a real server started in this process on
//! `127.0.0.1:0` with [`caskade_server::run`], a handle that shuts it down and waits for `run`
//! to return, and generated clients connected to it (with an optional bearer token and TLS).
//!
//! Nothing here sleeps: every wait is bounded by [`TIMEOUT`], which only fires on failure.

#![allow(
    dead_code,
    reason = "each test file uses a different part of these helpers"
)]
#![allow(
    clippy::unnecessary_wraps,
    reason = "the expected-version helpers build the `Option` that request fields hold"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{EventStore, Options};
use caskade_proto::v1 as pb;
use caskade_proto::v1::admin_client::AdminClient;
use caskade_proto::v1::kv_client::KvClient;
use caskade_proto::v1::streams_client::StreamsClient;
use caskade_server::ServerConfig;
pub(crate) use caskade_server::client::Authed;
use caskade_server::client::Authorization;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Errors of a test: anything, from any task.
pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long any single wait may take before the test fails. Generous: it only fires when
/// something is wrong.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test (naming `what`) if it takes longer than [`TIMEOUT`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> TestResult<F::Output> {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .map_err(|_| format!("timed out after {TIMEOUT:?} waiting for {what}").into())
}

/// Event-store options for tests where durability is not what is checked: no syncing, no
/// automatic merges.
pub(crate) fn options() -> Options {
    let engine = caskade_engine::Options {
        sync: SyncPolicy::Never,
        auto_merge: None,
        ..caskade_engine::Options::default()
    };
    Options {
        engine,
        ..Options::default()
    }
}

/// [`options`] with limits small enough for a server whose messages are at most
/// `max_message` bytes: events of up to half of it, keys of up to 4 KiB.
pub(crate) fn options_for_messages_of(max_message: usize) -> Options {
    let mut options = Options {
        max_event_size: max_message / 2,
        ..options()
    };
    options.engine.max_key_size = 4096;
    options
}

/// Opens the event store in `dir` with [`options`].
pub(crate) fn open_store(dir: &Path) -> TestResult<EventStore> {
    Ok(EventStore::open(dir, options())?)
}

/// A server running in this process, in a task of the test's runtime.
pub(crate) struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), caskade_server::Error>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves `store` with `config` until shut down.
    pub(crate) async fn start(store: EventStore, config: ServerConfig) -> TestResult<TestServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(caskade_server::run(listener, store, config, async move {
            // A dropped sender shuts the server down too.
            let _ = signal.await;
        }));
        Ok(TestServer {
            addr,
            shutdown: Some(shutdown),
            task,
        })
    }

    /// Opens a store in `dir` with [`options`] and serves it with the default configuration.
    pub(crate) async fn start_in(dir: &Path) -> TestResult<TestServer> {
        TestServer::start(open_store(dir)?, ServerConfig::default()).await
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the graceful shutdown; [`TestServer::join`] waits for it to finish.
    pub(crate) fn trigger_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits for `run` to return (after [`TestServer::trigger_shutdown`]) and fails if it
    /// returned an error or did not return within [`TIMEOUT`].
    pub(crate) async fn join(self) -> TestResult {
        let TestServer { shutdown, task, .. } = self;
        // Keep the sender alive while waiting so that only an explicit trigger stops the server.
        let result = within("the server to shut down", task).await;
        drop(shutdown);
        result???;
        Ok(())
    }

    /// Shuts the server down and waits for `run` to return `Ok`.
    pub(crate) async fn stop(mut self) -> TestResult {
        self.trigger_shutdown();
        self.join().await
    }

    /// A `Streams` client with no token and no TLS.
    pub(crate) async fn streams(&self) -> TestResult<StreamsClient<Authed>> {
        streams_client(self.addr, &Access::default()).await
    }

    /// A `Kv` client with no token and no TLS.
    pub(crate) async fn kv(&self) -> TestResult<KvClient<Authed>> {
        kv_client(self.addr, &Access::default()).await
    }

    /// An `Admin` client with no token and no TLS.
    pub(crate) async fn admin(&self) -> TestResult<AdminClient<Authed>> {
        admin_client(self.addr, &Access::default()).await
    }
}

/// How a client reaches the server.
#[derive(Clone, Default)]
pub(crate) struct Access {
    /// Sent as `authorization: Bearer <token>` when set.
    pub(crate) token: Option<String>,
    /// Connect with TLS (`https://`) when set.
    pub(crate) tls: Option<ClientTlsConfig>,
}

/// A connected channel to `addr`.
pub(crate) async fn channel(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> TestResult<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(within("connecting to the server", endpoint.connect()).await??)
}

/// A connected channel to `addr` that sends `access`'s token.
pub(crate) async fn connect(addr: SocketAddr, access: &Access) -> TestResult<Authed> {
    let channel = channel(addr, access.tls.clone()).await?;
    let token = match &access.token {
        Some(token) => Some(format!("Bearer {token}").parse()?),
        None => None,
    };
    Ok(InterceptedService::new(channel, Authorization::new(token)))
}

/// A connected `Streams` client.
pub(crate) async fn streams_client(
    addr: SocketAddr,
    access: &Access,
) -> TestResult<StreamsClient<Authed>> {
    Ok(StreamsClient::new(connect(addr, access).await?))
}

/// A connected `Kv` client.
pub(crate) async fn kv_client(addr: SocketAddr, access: &Access) -> TestResult<KvClient<Authed>> {
    Ok(KvClient::new(connect(addr, access).await?))
}

/// A connected `Admin` client.
pub(crate) async fn admin_client(
    addr: SocketAddr,
    access: &Access,
) -> TestResult<AdminClient<Authed>> {
    Ok(AdminClient::new(connect(addr, access).await?))
}

// Building requests.

/// A JSON event with a fresh id.
pub(crate) fn json_event(event_type: &str, data: &serde_json::Value) -> pb::EventData {
    pb::EventData {
        id: uuid::Uuid::new_v4().to_string(),
        r#type: event_type.to_owned(),
        content_type: pb::ContentType::Json.into(),
        data: data.to_string().into_bytes(),
        metadata: Vec::new(),
    }
}

/// `count` JSON events of type `type` numbered `{"n": first..}`.
pub(crate) fn numbered(event_type: &str, first: u64, count: u64) -> Vec<pb::EventData> {
    (first..first + count)
        .map(|n| json_event(event_type, &serde_json::json!({ "n": n })))
        .collect()
}

/// Expect the stream at exactly `version`.
pub(crate) fn exact(version: u64) -> Option<pb::ExpectedVersion> {
    Some(pb::ExpectedVersion {
        kind: Some(pb::expected_version::Kind::Exact(version)),
    })
}

/// Expect the stream to have no events.
pub(crate) fn no_stream() -> Option<pb::ExpectedVersion> {
    Some(pb::ExpectedVersion {
        kind: Some(pb::expected_version::Kind::NoStream(pb::Empty {})),
    })
}

/// Expect the stream to exist.
pub(crate) fn stream_exists() -> Option<pb::ExpectedVersion> {
    Some(pb::ExpectedVersion {
        kind: Some(pb::expected_version::Kind::StreamExists(pb::Empty {})),
    })
}

/// An append request.
pub(crate) fn append(
    stream: &str,
    expected_version: Option<pb::ExpectedVersion>,
    events: Vec<pb::EventData>,
) -> pb::AppendRequest {
    pb::AppendRequest {
        stream: stream.to_owned(),
        expected_version,
        events,
    }
}

/// A forwards read of the whole of `stream`.
pub(crate) fn read_stream(stream: &str) -> pb::ReadRequest {
    pb::ReadRequest {
        target: Some(pb::read_request::Target::Stream(stream.to_owned())),
        ..pb::ReadRequest::default()
    }
}

/// A forwards read of the whole of `$all`.
pub(crate) fn read_all() -> pb::ReadRequest {
    pb::ReadRequest {
        target: Some(pb::read_request::Target::All(pb::Empty {})),
        ..pb::ReadRequest::default()
    }
}

/// Runs a read and collects its events.
pub(crate) async fn read(
    client: &mut StreamsClient<Authed>,
    request: pb::ReadRequest,
) -> TestResult<Vec<pb::RecordedEvent>> {
    within("a read", async {
        let mut messages = client.read(request).await?.into_inner();
        let mut events = Vec::new();
        while let Some(message) = messages.message().await? {
            if message.events.is_empty() {
                return Err("a read message without events".into());
            }
            events.extend(message.events);
        }
        Ok(events)
    })
    .await?
}

/// The `n` field of a JSON event made by [`numbered`].
pub(crate) fn n_of(event: &pb::RecordedEvent) -> TestResult<u64> {
    let data: serde_json::Value = serde_json::from_slice(&event.data)?;
    Ok(data["n"].as_u64().ok_or("an event without an `n` field")?)
}

/// Every stream `ListStreams` returns, across all its messages.
pub(crate) async fn list_streams(
    client: &mut StreamsClient<Authed>,
) -> TestResult<Vec<pb::StreamInfo>> {
    within("listing streams", async {
        let mut messages = client
            .list_streams(pb::ListStreamsRequest {})
            .await?
            .into_inner();
        let mut streams = Vec::new();
        while let Some(message) = messages.message().await? {
            streams.extend(message.streams);
        }
        Ok::<_, tonic::Status>(streams)
    })
    .await?
    .map_err(Into::into)
}
