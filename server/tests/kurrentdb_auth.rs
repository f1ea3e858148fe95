//! Users' HTTP Basic credentials over TLS, as KurrentDB's official Rust client sends them:
//! accepted on both APIs alongside the bearer token when users are configured, refused when
//! wrong or missing, and ignored by a server that has no credentials configured.

mod common;
mod kurrent_helpers;

use std::path::Path;

use base64::Engine;
use caskade_proto::v1 as pb;
use caskade_server::client::Authorization;
use caskade_server::{ServerConfig, TlsFiles, User};
use common::{TestResult, TestServer, within};
use kurrent_helpers::{downcast, numbered, read_stream};
use kurrentdb::{
    AppendToStreamOptions, Authentication, Client, ClientSettings, Credentials, ReadStreamOptions,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig};

const TOKEN: &str = "t0ken";

/// A TLS server in `dir` for 127.0.0.1 whose CA certificate is written to `ca.pem` in
/// `dir`; it accepts [`TOKEN`] and `users` when `users` is not empty.
async fn tls_server(dir: &Path, users: &[&str]) -> TestResult<TestServer> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    std::fs::write(dir.join("ca.pem"), certified.cert.pem())?;
    let users: Vec<User> = users
        .iter()
        .map(|user| user.parse())
        .collect::<Result<_, _>>()?;
    let config = ServerConfig {
        token: (!users.is_empty()).then(|| TOKEN.to_owned()),
        users,
        tls: Some(TlsFiles {
            cert_pem: certified.cert.pem().into_bytes(),
            key_pem: certified.signing_key.serialize_pem().into_bytes(),
        }),
        ..ServerConfig::default()
    };
    let store = common::open_store(&dir.join("store"))?;
    TestServer::start(store, config).await
}

/// A Rust client over TLS trusting the server's CA, with `credentials` (`NAME:PASSWORD@`
/// or nothing) in its connection string.
fn tls_client(server: &TestServer, dir: &Path, credentials: &str) -> TestResult<Client> {
    let ca = dir.join("ca.pem");
    let settings: ClientSettings = format!(
        "esdb://{credentials}{}?tls=true&tlsCAFile={}",
        server.addr(),
        ca.display()
    )
    .parse()?;
    Ok(Client::new(settings)?)
}

async fn append(client: &Client, options: &AppendToStreamOptions) -> TestResult<u64> {
    let written = within(
        "an append",
        client.append_to_stream("secured", options, numbered(0, 1)),
    )
    .await??;
    Ok(written.next_expected_version)
}

fn access_denied<T>(result: TestResult<T>) -> bool {
    matches!(downcast(result), Some(kurrentdb::Error::AccessDenied))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_users_basic_credentials_are_accepted_over_tls_and_others_refused() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let server = tls_server(dir.path(), &["admin:changeit", "ops:pa:ss"]).await?;

    // Credentials in the connection string, for every call.
    let admin = tls_client(&server, dir.path(), "admin:changeit@")?;
    assert_eq!(append(&admin, &AppendToStreamOptions::default()).await?, 0);
    let read = read_stream(&admin, "secured", &ReadStreamOptions::default()).await?;
    assert_eq!(read.len(), 1);
    // Per-call credentials, here with a colon in the password (which the client sends as
    // it is, where a connection string would need it percent-encoded).
    let anonymous = tls_client(&server, dir.path(), "")?;
    let per_call = |name: &str, password: &str| {
        AppendToStreamOptions::default()
            .authenticated(Credentials::new(name.to_owned(), password.to_owned()))
    };
    assert_eq!(append(&anonymous, &per_call("ops", "pa:ss")).await?, 1);
    assert_eq!(append(&anonymous, &per_call("admin", "changeit")).await?, 2);
    // The bearer token is accepted from KurrentDB's clients too.
    let bearer = AppendToStreamOptions::default().authenticated(Authentication::bearer(TOKEN));
    assert_eq!(append(&anonymous, &bearer).await?, 3);

    // Missing, wrong and unknown credentials write nothing.
    assert!(access_denied(
        append(&anonymous, &AppendToStreamOptions::default()).await
    ));
    let wrong = tls_client(&server, dir.path(), "admin:guess@")?;
    assert!(access_denied(
        append(&wrong, &AppendToStreamOptions::default()).await
    ));
    let unknown = tls_client(&server, dir.path(), "nobody:changeit@")?;
    assert!(access_denied(
        append(&unknown, &AppendToStreamOptions::default()).await
    ));
    assert!(access_denied(
        read_stream(&wrong, "secured", &ReadStreamOptions::default()).await
    ));
    let read = read_stream(&admin, "secured", &ReadStreamOptions::default()).await?;
    assert_eq!(read.len(), 4);
    server.stop().await
}

/// A `caskade.v1` `Admin` client over TLS sending `authorization` as given.
async fn caskade_admin(
    server: &TestServer,
    dir: &Path,
    authorization: &str,
) -> TestResult<pb::admin_client::AdminClient<caskade_server::client::Authed>> {
    let ca = std::fs::read_to_string(dir.join("ca.pem"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = common::channel(server.addr(), Some(tls)).await?;
    let header = Authorization::new(Some(authorization.parse()?));
    Ok(pb::admin_client::AdminClient::new(InterceptedService::new(
        channel, header,
    )))
}

fn basic(credentials: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    format!("Basic {encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caskade_api_takes_the_same_basic_credentials() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = tls_server(dir.path(), &["admin:changeit"]).await?;
    for accepted in [basic("admin:changeit"), format!("Bearer {TOKEN}")] {
        let mut admin = caskade_admin(&server, dir.path(), &accepted).await?;
        admin.stats(pb::StatsRequest {}).await?;
    }
    for refused in [
        basic("admin:guess"),
        basic("admin"),
        "Bearer guess".to_owned(),
    ] {
        let mut admin = caskade_admin(&server, dir.path(), &refused).await?;
        let status = admin.stats(pb::StatsRequest {}).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{refused}");
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_without_users_ignores_credentials() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = tls_server(dir.path(), &[]).await?;
    for credentials in ["", "admin:changeit@"] {
        let client = tls_client(&server, dir.path(), credentials)?;
        append(&client, &AppendToStreamOptions::default()).await?;
    }
    let client = tls_client(&server, dir.path(), "")?;
    let read = read_stream(&client, "secured", &ReadStreamOptions::default()).await?;
    assert_eq!(read.len(), 2);
    server.stop().await
}
