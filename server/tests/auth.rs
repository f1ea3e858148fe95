//! The bearer token over gRPC reflection, which describes the whole API: with a token
//! configured it requires it like the Caskade services do. (That health stays open is checked
//! with the Caskade services in `errors.rs`.)

mod common;

use caskade_server::ServerConfig;
use common::{Access, TestResult, TestServer};
use tonic::Code;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const TOKEN: &str = "t0ken";

/// Starts a server in `dir` that requires [`TOKEN`].
async fn server_with_token(dir: &std::path::Path) -> TestResult<TestServer> {
    let config = ServerConfig {
        token: Some(TOKEN.to_owned()),
        ..ServerConfig::default()
    };
    TestServer::start(common::open_store(dir)?, config).await
}

/// Asks reflection to list the services with `access`; the names, or the status it failed with.
async fn list_services(
    server: &TestServer,
    access: &Access,
) -> TestResult<Result<Vec<String>, tonic::Status>> {
    let mut client = ServerReflectionClient::new(common::connect(server.addr(), access).await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    common::within("a reflection request", async {
        let mut responses = match client
            .server_reflection_info(tokio_stream::once(request))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return Ok(Err(status)),
        };
        let response = match responses.message().await {
            Ok(response) => response.ok_or("reflection ended without an answer")?,
            Err(status) => return Ok(Err(status)),
        };
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                Ok(Ok(list.service.into_iter().map(|s| s.name).collect()))
            }
            other => Err(format!("not a list of services: {other:?}").into()),
        }
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_requires_the_token_when_one_is_configured() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = server_with_token(dir.path()).await?;

    for (what, token) in [("no token", None), ("a wrong token", Some("x"))] {
        let access = Access {
            token: token.map(str::to_owned),
            tls: None,
        };
        match list_services(&server, &access).await? {
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status}"),
            Ok(services) => return Err(format!("reflection answered {what}: {services:?}").into()),
        }
    }

    let right = Access {
        token: Some(TOKEN.to_owned()),
        tls: None,
    };
    let services = list_services(&server, &right).await??;
    for service in ["caskade.v1.Streams", "caskade.v1.Kv", "caskade.v1.Admin"] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} not in {services:?}"
        );
    }
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_is_open_without_a_configured_token() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path()).await?;
    let services = list_services(&server, &Access::default()).await??;
    assert!(
        services.iter().any(|s| s == "caskade.v1.Streams"),
        "{services:?}"
    );
    server.stop().await
}
