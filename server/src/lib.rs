//! Caskade's gRPC server: the `caskade.v1` `Streams`, `PersistentSubscriptions`, `Kv` and
//! `Admin` services over an [`EventStore`], KurrentDB's v1 API over the same store
//! ([`kurrent`]), plus the standard health and reflection services. With a token or users
//! configured ([`ServerConfig`]), every service needs one of them but health (for load
//! balancers' probes) and KurrentDB's gossip and server features (which its clients ask
//! before they authenticate).
//!
//! This crate only translates: each RPC decodes its request, calls the event store (on the
//! blocking pool) and encodes the answer; errors become statuses in one place
//! ([`status`]). [`run`] serves on a listener until a shutdown future completes, then stops
//! accepting, lets in-flight calls finish, ends live subscriptions, syncs and closes the
//! store — nothing acknowledged is lost.
//!
//! For the tools that talk to a server, [`client`] makes the connection (address, token,
//! TLS) that `caskade`'s client commands and `caskade-bench` share.

mod auth;
pub mod client;
mod consumer_call;
mod convert;
mod groups;
pub mod kurrent;
mod limits;
pub mod process;
mod quick_ack;
mod services;
pub mod status;

use std::future::Future;
use std::time::Duration;

use caskade_eventstore::EventStore;
use caskade_proto::kurrentdb::event_store::client::gossip::gossip_server::GossipServer;
use caskade_proto::kurrentdb::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use caskade_proto::kurrentdb::event_store::client::streams::streams_server::StreamsServer as KurrentStreamsServer;
use caskade_proto::v1::admin_server::AdminServer;
use caskade_proto::v1::kv_server::KvServer;
use caskade_proto::v1::persistent_subscriptions_server::PersistentSubscriptionsServer;
use caskade_proto::v1::streams_server::StreamsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use caskade_proto::kurrentdb::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer as KurrentPersistentServer;
use kurrent::{
    GossipService, KurrentPersistentService, KurrentStreamsService, ServerFeaturesService,
};

pub use auth::{CredentialError, User, check_users, parse_users_file};
pub use groups::GroupsService;
pub use limits::min_message_size;
pub use services::{AdminService, KvService, MessageStream, StreamsService};

/// How the server runs. Its `Debug` leaves the token out, as [`User`]'s leaves passwords
/// and [`TlsFiles`]'s the private key: configurations end up in logs.
#[derive(Clone)]
pub struct ServerConfig {
    /// When set, `authorization: Bearer <token>` is accepted on both APIs and reflection
    /// (which describes them). Health stays open, so that load balancers and orchestrators
    /// can probe without credentials, and so do KurrentDB's gossip and server features.
    pub token: Option<String>,
    /// Users whose HTTP Basic credentials (`authorization: Basic base64(NAME:PASSWORD)`, as
    /// KurrentDB's clients send them) are accepted like the token, on the same services. With
    /// a token or users configured, a call needs one of them. Names must be unique.
    pub users: Vec<User>,
    /// When set, serve TLS with this PEM certificate chain and private key.
    pub tls: Option<TlsFiles>,
    /// Largest request or response message, in bytes; at least [`min_message_size`] of the
    /// store's options.
    pub max_message_size: usize,
    /// Most concurrent requests per connection.
    pub concurrency_per_connection: usize,
    /// After the shutdown signal, how long connections may take to finish before the store
    /// is closed regardless (acknowledged writes are durable either way).
    pub drain_timeout: std::time::Duration,
    /// How often the store is scavenged automatically (see
    /// [`EventStore::scavenge`]), the first time one interval after the start; `None`
    /// never. Default: every 24 hours.
    pub scavenge_interval: Option<std::time::Duration>,
    /// The address KurrentDB clients are told to connect to (KurrentDB's `Gossip.Read`);
    /// `None` means the listener's own address.
    pub advertise_addr: Option<std::net::SocketAddr>,
    /// Acknowledge received data at once on every connection (Linux's `TCP_QUICKACK`), so
    /// that clients that leave Nagle's algorithm on, such as KurrentDB's Rust client, do not
    /// wait for the kernel's delayed acknowledgement on every call. Default: on.
    pub quick_ack: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            users: Vec::new(),
            tls: None,
            max_message_size: 64 << 20,
            concurrency_per_connection: 1024,
            drain_timeout: std::time::Duration::from_secs(10),
            scavenge_interval: Some(std::time::Duration::from_secs(24 * 60 * 60)),
            advertise_addr: None,
            quick_ack: true,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("users", &self.users)
            .field("tls", &self.tls)
            .field("max_message_size", &self.max_message_size)
            .field(
                "concurrency_per_connection",
                &self.concurrency_per_connection,
            )
            .field("drain_timeout", &self.drain_timeout)
            .field("scavenge_interval", &self.scavenge_interval)
            .field("advertise_addr", &self.advertise_addr)
            .field("quick_ack", &self.quick_ack)
            .finish()
    }
}

/// A TLS certificate chain and key, PEM-encoded.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_pem", &String::from_utf8_lossy(&self.cert_pem))
            .field("key_pem", &"<hidden>")
            .finish()
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message limit cannot carry the largest item the store accepts.
    #[error(
        "the maximum message size of {max_message_size} bytes cannot carry the largest item \
         the store accepts (an event of its maximum size in a stream of its longest name, or \
         a key of its maximum size): it must be at least {needed} bytes"
    )]
    MessageSizeTooSmall {
        /// The configured [`ServerConfig::max_message_size`].
        max_message_size: usize,
        /// What the store's limits need: [`min_message_size`].
        needed: usize,
    },
    /// The listener's address could not be read.
    #[error("reading the listener's address: {0}")]
    Listener(std::io::Error),
    /// The transport failed (TLS setup, the listener).
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The credentials configured are refused: a name given twice, an empty token.
    #[error("invalid credentials: {0}")]
    Credentials(#[from] CredentialError),
    /// Reflection could not be set up from the descriptor set.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The task closing the store panicked or was cancelled, so the final sync may not have
    /// run.
    #[error("the task closing the store failed: {0}")]
    CloseTask(tokio::task::JoinError),
    /// Closing the store failed.
    #[error(transparent)]
    Store(#[from] caskade_eventstore::Error),
}

/// Makes ring rustls's process-wide crypto provider, unless one is installed already.
///
/// Caskade's TLS is rustls with ring. When another crate in the same build enables rustls's
/// aws-lc-rs backend too (KurrentDB's Rust client, a test dependency, does), rustls cannot
/// pick a default by itself and every TLS handshake fails; so whatever sets up TLS here calls
/// this first.
pub(crate) fn install_tls_provider() {
    // An error means a provider is installed already, which is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Tonic reports a message over the size limit as `OUT_OF_RANGE`; Caskade promises
/// `RESOURCE_EXHAUSTED` for every size limit, as gRPC's own implementations do. The services
/// never return `OUT_OF_RANGE` themselves.
fn size_limit_is_resource_exhausted(
    mut response: tonic::codegen::http::Response<tonic::body::Body>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    let status = response.headers().get("grpc-status");
    if status.is_some_and(|s| s.as_bytes() == b"11") {
        let code = i32::from(tonic::Code::ResourceExhausted).to_string();
        if let Ok(value) = code.parse() {
            response.headers_mut().insert("grpc-status", value);
        }
    }
    response
}

/// Scavenges `store` every `interval` until `stop` turns true. A failed scavenge is logged
/// and tried again at the next interval.
async fn scavenge_every(store: EventStore, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.scavenge()).await {
            Ok(Ok(report)) => tracing::info!(
                events_removed = report.events_removed,
                bytes_reclaimed = report.bytes_reclaimed,
                "automatic scavenge finished"
            ),
            Ok(Err(error)) => tracing::warn!(%error, "automatic scavenge failed"),
            Err(error) => tracing::error!(%error, "automatic scavenge panicked"),
        }
    }
}

/// The check of the configured credentials, warning when they would cross the network in
/// the clear.
fn credential_check(config: &ServerConfig) -> Result<auth::CredentialCheck, Error> {
    let check = auth::CredentialCheck::new(config.token.as_deref(), &config.users)?;
    if config.tls.is_none() && (config.token.is_some() || !config.users.is_empty()) {
        tracing::warn!(
            "credentials are configured without TLS: they cross the network in the clear"
        );
    }
    Ok(check)
}

/// The standard health service, reporting each `caskade.v1` service as serving.
async fn health_service()
-> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (health, service) = tonic_health::server::health_reporter();
    health.set_serving::<StreamsServer<StreamsService>>().await;
    health.set_serving::<KvServer<KvService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    health
        .set_serving::<PersistentSubscriptionsServer<GroupsService>>()
        .await;
    service
}

/// Serves `store` on `listener` until `shutdown` completes, then drains and closes the store.
///
/// # Errors
/// [`Error::MessageSizeTooSmall`] before serving anything if `config.max_message_size` is
/// under [`min_message_size`] of the store's options, [`Error::Credentials`] if a user's name
/// is given twice or the token is empty, [`Error::Transport`] if TLS cannot be
/// set up or serving fails, [`Error::Store`] if the final sync or close fails.
pub async fn run(
    listener: TcpListener,
    store: EventStore,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let needed = min_message_size(store.options());
    if config.max_message_size < needed {
        return Err(Error::MessageSizeTooSmall {
            max_message_size: config.max_message_size,
            needed,
        });
    }
    let (stop, stopped) = watch::channel(false);
    let health_service = health_service().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(caskade_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let check = credential_check(&config)?;
    let size = config.max_message_size;
    let streams = StreamsServer::new(StreamsService::new(store.clone(), size, stopped.clone()))
        .max_decoding_message_size(size)
        .max_encoding_message_size(size);
    let kv = KvServer::new(KvService::new(store.clone()))
        .max_decoding_message_size(size)
        .max_encoding_message_size(size);
    let admin = AdminServer::new(AdminService::new(store.clone()));
    let groups =
        PersistentSubscriptionsServer::new(GroupsService::new(store.clone(), stopped.clone()))
            .max_decoding_message_size(size)
            .max_encoding_message_size(size);
    let kurrent_streams =
        KurrentStreamsServer::new(KurrentStreamsService::new(store.clone(), stopped.clone()))
            .max_decoding_message_size(size)
            .max_encoding_message_size(size);
    let kurrent_persistent =
        KurrentPersistentServer::new(KurrentPersistentService::new(store.clone(), stopped))
            .max_decoding_message_size(size)
            .max_encoding_message_size(size);
    let advertised = match config.advertise_addr {
        Some(addr) => addr,
        None => listener.local_addr().map_err(Error::Listener)?,
    };
    // Clients ask these two before they authenticate, as they do of KurrentDB.
    let gossip = GossipServer::new(GossipService::new(advertised));
    let features = ServerFeaturesServer::new(ServerFeaturesService);

    let mut builder = Server::builder()
        .concurrency_limit_per_connection(config.concurrency_per_connection)
        .trace_fn(|request| tracing::info_span!("rpc", path = %request.uri().path()));
    if let Some(tls) = &config.tls {
        install_tls_provider();
        builder = builder.tls_config(
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
        )?;
    }
    let scavenger = config
        .scavenge_interval
        .map(|interval| tokio::spawn(scavenge_every(store.clone(), interval, stop.subscribe())));
    let mut draining = stop.subscribe();
    let drain_timeout = config.drain_timeout;
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing calls in flight");
        let _ = stop.send(true);
    };
    let quick_ack = config.quick_ack;
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(|stream| quick_ack::QuickAck::new(stream, quick_ack)));
    let serve = builder
        .layer(tower::util::MapResponseLayer::new(
            size_limit_is_resource_exhausted,
        ))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, check.clone()))
        .add_service(InterceptedService::new(streams, check.clone()))
        .add_service(InterceptedService::new(kv, check.clone()))
        .add_service(InterceptedService::new(admin, check.clone()))
        .add_service(InterceptedService::new(groups, check.clone()))
        .add_service(InterceptedService::new(kurrent_streams, check.clone()))
        .add_service(InterceptedService::new(kurrent_persistent, check))
        .add_service(gossip)
        .add_service(features)
        .serve_with_incoming_shutdown(incoming, signal);
    let deadline = async move {
        let _ = draining.wait_for(|stop| *stop).await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        served = serve => served?,
        () = deadline => {
            tracing::warn!(?drain_timeout, "connections still open after the drain timeout; closing the store");
        }
    }
    if let Some(scavenger) = scavenger {
        // A scavenge still running meets the closed store and stops; nothing it did is lost.
        scavenger.abort();
    }
    // Every consumer's call has ended: what they acked is checkpointed before the close.
    if let Err(error) = store.checkpoint_groups().await {
        tracing::warn!(%error, "writing the persistent subscription groups' checkpoints failed");
    }
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(Error::CloseTask)??;
    tracing::info!("store synced and closed");
    Ok(())
}
