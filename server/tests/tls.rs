//! TLS: the server with a certificate generated at test time (`rcgen`, for "localhost")
//! serves clients that trust it over `https://`, and nothing else: a plaintext client and a
//! client that does not trust the certificate (or expects another name) get no answer.

mod common;

use std::net::SocketAddr;

use caskade_proto::v1 as pb;
use caskade_server::{ServerConfig, TlsFiles};
use common::{Access, TestResult, TestServer, append, numbered, read, read_stream, within};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// A self-signed certificate for "localhost": (certificate PEM, private key PEM).
fn localhost_certificate() -> TestResult<(String, String)> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

async fn tls_server(
    dir: &std::path::Path,
    cert_pem: &str,
    key_pem: &str,
) -> TestResult<TestServer> {
    let config = ServerConfig {
        tls: Some(TlsFiles {
            cert_pem: cert_pem.as_bytes().to_vec(),
            key_pem: key_pem.as_bytes().to_vec(),
        }),
        ..ServerConfig::default()
    };
    TestServer::start(common::open_store(dir)?, config).await
}

fn trusting(cert_pem: &str, domain: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert_pem))
        .domain_name(domain)
}

/// Connects with `endpoint` and makes one call; Ok only if the call succeeded.
async fn one_call(endpoint: Endpoint) -> TestResult {
    within("a call that should fail", async {
        let channel = endpoint.connect().await?;
        pb::admin_client::AdminClient::new(channel)
            .stats(pb::StatsRequest {})
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .await?
}

fn endpoint(scheme: &str, addr: SocketAddr) -> TestResult<Endpoint> {
    Ok(Endpoint::from_shared(format!("{scheme}://{addr}"))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trusts_the_certificate_appends_and_reads_over_tls() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (cert, key) = localhost_certificate()?;
    let server = tls_server(dir.path(), &cert, &key).await?;
    let access = Access {
        token: None,
        tls: Some(trusting(&cert, "localhost")),
    };
    // `https://127.0.0.1:PORT`, verified against the name "localhost".
    let mut streams = common::streams_client(server.addr(), &access).await?;
    let sent = numbered("Secured", 0, 3);
    let response = streams
        .append(append("tls-stream", None, sent.clone()))
        .await?
        .into_inner();
    assert_eq!(response.next_expected_version, 2);
    let events = read(&mut streams, read_stream("tls-stream")).await?;
    let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, sent.iter().map(|e| e.id.clone()).collect::<Vec<_>>());

    let mut kv = common::kv_client(server.addr(), &access).await?;
    kv.put(pb::PutRequest {
        key: b"k".to_vec(),
        value: b"over tls".to_vec(),
    })
    .await?;
    let value = kv.get(pb::GetRequest { key: b"k".to_vec() }).await?;
    assert_eq!(value.into_inner().value.as_deref(), Some(&b"over tls"[..]));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusting_clients_cannot_talk_to_a_tls_server() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (cert, key) = localhost_certificate()?;
    let server = tls_server(dir.path(), &cert, &key).await?;
    let addr = server.addr();

    let plaintext = one_call(endpoint("http", addr)?).await;
    assert!(plaintext.is_err(), "a plaintext client gets no answer");

    let (other_cert, _) = localhost_certificate()?;
    let untrusted =
        one_call(endpoint("https", addr)?.tls_config(trusting(&other_cert, "localhost"))?).await;
    assert!(
        untrusted.is_err(),
        "a client trusting another certificate fails"
    );

    let wrong_name =
        one_call(endpoint("https", addr)?.tls_config(trusting(&cert, "example.com"))?).await;
    assert!(
        wrong_name.is_err(),
        "a certificate for localhost is not one for example.com"
    );

    // The server is unharmed by those attempts.
    let good = one_call(endpoint("https", addr)?.tls_config(trusting(&cert, "localhost"))?).await;
    assert!(good.is_ok(), "{good:?}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_an_invalid_key_fails_to_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (cert, _) = localhost_certificate()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = ServerConfig {
        tls: Some(TlsFiles {
            cert_pem: cert.into_bytes(),
            key_pem: b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
                .to_vec(),
        }),
        ..ServerConfig::default()
    };
    let result = within(
        "run to give up",
        caskade_server::run(
            listener,
            common::open_store(dir.path())?,
            config,
            std::future::pending(),
        ),
    )
    .await?;
    assert!(
        matches!(result, Err(caskade_server::Error::Transport(_))),
        "{result:?}"
    );
    Ok(())
}
