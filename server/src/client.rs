//! Connecting to a Caskade server as the command-line tools do: an address, optional
//! credentials (the token or a user) and an optional CA to trust for TLS, then a generated client per service over
//! the one channel. `caskade`'s client commands and the `caskade-bench` load generator use it;
//! it only connects, and leaves what to send to them.

use std::path::PathBuf;
use std::time::Duration;

use caskade_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// How long connecting may take before [`Connection::connect`] gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a server is and how to reach it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's address, `HOST:PORT`.
    pub addr: String,
    /// Sent on every call as the `authorization` header, when set.
    pub credentials: Option<Credentials>,
    /// Connect with TLS (`https`) when set; plain HTTP/2 otherwise.
    pub tls: Option<ClientTls>,
}

/// What a client sends to be let in.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The server's token, as `Bearer <token>`.
    Token(String),
    /// A configured user, as HTTP Basic credentials.
    User(crate::User),
}

impl Credentials {
    /// The `authorization` header's value.
    fn header(&self) -> String {
        use base64::Engine;
        match self {
            Credentials::Token(token) => format!("Bearer {token}"),
            Credentials::User(user) => {
                let pair = format!("{}:{}", user.name, user.password);
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                format!("Basic {encoded}")
            }
        }
    }
}

/// How a TLS connection verifies the server.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// A PEM CA certificate file: the server's certificate must chain to it.
    pub ca: PathBuf,
    /// The server name its certificate must carry.
    pub domain: String,
}

/// Why [`Connection::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address does not make a URI.
    #[error("invalid server address {addr:?}")]
    InvalidAddress {
        /// The address given.
        addr: String,
        /// What the URI parser said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The token cannot be sent in a header.
    #[error("the token must be ASCII")]
    InvalidToken(#[source] tonic::metadata::errors::InvalidMetadataValue),
    /// The CA certificate file could not be read.
    #[error("reading {}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(tonic::transport::Error),
    /// No connection could be made (nothing listening, a TLS handshake that failed, the
    /// timeout).
    #[error("cannot connect to a Caskade server at {addr}")]
    Unreachable {
        /// The address given.
        addr: String,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Adds the `authorization` header to every request, when there are credentials.
#[derive(Debug, Clone)]
pub struct Authorization(Option<MetadataValue<Ascii>>);

impl Authorization {
    /// Sends `token` (a whole header value: `Bearer ...`, `Basic ...`) when set; nothing
    /// otherwise.
    #[must_use]
    pub fn new(token: Option<MetadataValue<Ascii>>) -> Self {
        Authorization(token)
    }
}

impl Interceptor for Authorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The channel the generated clients of a [`Connection`] take: every call sends the
/// credentials.
pub type Authed = InterceptedService<Channel, Authorization>;

/// A connected channel to one server; the clients it hands out share it.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    authorization: Authorization,
}

impl Connection {
    /// Connects to the server `config` names, waiting at most five seconds.
    ///
    /// # Errors
    /// [`ConnectError::InvalidAddress`], [`ConnectError::InvalidToken`],
    /// [`ConnectError::ReadCa`] and [`ConnectError::Tls`] before any connection is tried;
    /// [`ConnectError::Unreachable`] if none could be made.
    pub async fn connect(config: &ClientConfig) -> Result<Connection, ConnectError> {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", config.addr))
            .map_err(|source| ConnectError::InvalidAddress {
                addr: config.addr.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        let header = match &config.credentials {
            Some(credentials) => Some(
                credentials
                    .header()
                    .parse()
                    .map_err(ConnectError::InvalidToken)?,
            ),
            None => None,
        };
        if let Some(tls) = &config.tls {
            crate::install_tls_provider();
            let pem = std::fs::read(&tls.ca).map_err(|source| ConnectError::ReadCa {
                path: tls.ca.clone(),
                source,
            })?;
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(pem))
                        .domain_name(&tls.domain),
                )
                .map_err(ConnectError::Tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ConnectError::Unreachable {
                addr: config.addr.clone(),
                source,
            })?;
        Ok(Connection {
            channel,
            authorization: Authorization(header),
        })
    }

    fn authed(&self) -> Authed {
        InterceptedService::new(self.channel.clone(), self.authorization.clone())
    }

    /// A `Streams` client that accepts response messages of any size (the server bounds
    /// them).
    #[must_use]
    pub fn streams(&self) -> pb::streams_client::StreamsClient<Authed> {
        pb::streams_client::StreamsClient::new(self.authed()).max_decoding_message_size(usize::MAX)
    }

    /// A `Kv` client.
    #[must_use]
    pub fn kv(&self) -> pb::kv_client::KvClient<Authed> {
        pb::kv_client::KvClient::new(self.authed())
    }

    /// An `Admin` client.
    #[must_use]
    pub fn admin(&self) -> pb::admin_client::AdminClient<Authed> {
        pb::admin_client::AdminClient::new(self.authed())
    }

    /// A `PersistentSubscriptions` client.
    #[must_use]
    pub fn groups(
        &self,
    ) -> pb::persistent_subscriptions_client::PersistentSubscriptionsClient<Authed> {
        pb::persistent_subscriptions_client::PersistentSubscriptionsClient::new(self.authed())
            .max_decoding_message_size(usize::MAX)
    }

    /// A client of the standard `grpc.health.v1` service.
    #[must_use]
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Authed> {
        tonic_health::pb::health_client::HealthClient::new(self.authed())
    }
}
