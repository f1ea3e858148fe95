//! What the tests of KurrentDB's official Rust client share: a client connected to a test
//! server, numbered JSON events, reads collected into vectors, and the parts of the
//! protocol-level proposed messages.

#![allow(
    dead_code,
    reason = "each test file uses a different part of these helpers"
)]

use kurrentdb::{
    Client, ClientSettings, EventData, ReadAllOptions, ReadStreamOptions, ResolvedEvent,
};

use caskade_proto::kurrentdb::event_store::client as shared;

use crate::common::{TestResult, TestServer, within};

/// A client of `server`, connected the way an application would be, without TLS.
pub(crate) fn client(server: &TestServer, scheme: &str) -> TestResult<Client> {
    let settings: ClientSettings = format!("{scheme}://{}?tls=false", server.addr()).parse()?;
    Ok(Client::new(settings)?)
}

/// `count` JSON events numbered `{"n": first..}`.
pub(crate) fn numbered(first: u64, count: u64) -> Vec<EventData> {
    (first..first + count)
        .map(|n| EventData::json("Numbered", &serde_json::json!({ "n": n })).expect("JSON"))
        .collect()
}

/// The `n` of a [`numbered`] event.
pub(crate) fn n_of(event: &ResolvedEvent) -> TestResult<u64> {
    let data: serde_json::Value = event.get_original_event().as_json()?;
    Ok(data["n"].as_u64().ok_or("no n")?)
}

/// Every event a read returns, in order.
pub(crate) async fn read_stream(
    client: &Client,
    stream: &str,
    options: &ReadStreamOptions,
) -> TestResult<Vec<ResolvedEvent>> {
    within("a stream read", async {
        let mut read = client.read_stream(stream, options).await?;
        let mut events = Vec::new();
        while let Some(event) = read.next().await? {
            events.push(event);
        }
        Ok(events)
    })
    .await?
}

pub(crate) async fn read_all(
    client: &Client,
    options: &ReadAllOptions,
) -> TestResult<Vec<ResolvedEvent>> {
    within("a read of $all", async {
        let mut read = client.read_all(options).await?;
        let mut events = Vec::new();
        while let Some(event) = read.next().await? {
            events.push(event);
        }
        Ok(events)
    })
    .await?
}

pub(crate) fn ns(events: &[ResolvedEvent]) -> TestResult<Vec<u64>> {
    events.iter().map(n_of).collect()
}

/// The client error inside a test error, if it is one.
pub(crate) fn downcast<T>(result: TestResult<T>) -> Option<kurrentdb::Error> {
    let error = result.err()?;
    error.downcast::<kurrentdb::Error>().ok().map(|e| *e)
}

/// A new random id in the string form of KurrentDB's UUID message.
pub(crate) fn random_id() -> shared::Uuid {
    shared::Uuid {
        value: Some(shared::uuid::Value::String(
            uuid::Uuid::new_v4().to_string(),
        )),
    }
}

/// The system metadata of a proposed binary event of type `Blob`.
pub(crate) fn blob_metadata() -> std::collections::BTreeMap<String, String> {
    [
        ("type".to_owned(), "Blob".to_owned()),
        (
            "content-type".to_owned(),
            "application/octet-stream".to_owned(),
        ),
    ]
    .into_iter()
    .collect()
}
