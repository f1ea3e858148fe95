//! What the tests of KurrentDB's official Rust client share: a client connected to a test
//! server, numbered JSON events, and reads collected into vectors.

#![allow(
    dead_code,
    reason = "each test file uses a different part of these helpers"
)]

use kurrentdb::{
    Client, ClientSettings, EventData, ReadAllOptions, ReadStreamOptions, ResolvedEvent,
};

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
