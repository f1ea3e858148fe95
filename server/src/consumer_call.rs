//! One persistent-subscription consumer served over a bidirectional call, whichever API the
//! call came in on: events out, acks and nacks in.
//!
//! Each API decodes its own requests into [`ConsumerRequest`]s and encodes delivered events
//! and endings its own way ([`ConsumerProtocol`]); this module owns the loop between them.
//! Invariants: the call ends when the client closes its side or goes away (with no status),
//! when the group drops the consumer or fails, when a request is bad, or when the server
//! shuts down; in every ending but the client's own, the last message is a status, sent
//! through a slot reserved before the first event, so even a client that stopped reading
//! learns why.

use caskade_eventstore::{Error, GroupConsumer, GroupEvent, NackAction};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

/// What a client's message on a consumer call asks for.
pub(crate) enum ConsumerRequest {
    /// The events with these ids are handled.
    Ack(Vec<uuid::Uuid>),
    /// The events with these ids were not handled; `stop` first takes the consumer out of
    /// the group, so a retry goes to another consumer.
    Nack {
        ids: Vec<uuid::Uuid>,
        action: NackAction,
        stop: bool,
    },
    /// Take the consumer out of the group; the call stays open for acks of what it holds.
    StopReceiving,
}

/// An API's side of a consumer call.
pub(crate) trait ConsumerProtocol: Send + 'static {
    /// A request message of the call.
    type Request: Send + 'static;
    /// A response message of the call.
    type Response: Send + 'static;

    /// What `request` asks for, or the status that ends the call if it is not a valid
    /// request at this point of the call.
    fn decode(&self, request: Self::Request) -> Result<ConsumerRequest, Status>;
    /// The message that delivers `event`.
    fn encode(&self, event: &GroupEvent) -> Self::Response;
    /// The status of a store error (the group failed, or an ack could not be taken).
    fn failed(&self, error: Error) -> Status;
    /// The status when the group drops the consumer for not taking its events in time.
    fn dropped(&self) -> Status;
}

/// Serves `consumer` on a call until it ends (see the module docs).
pub(crate) async fn serve_consumer<P: ConsumerProtocol>(
    protocol: P,
    consumer: GroupConsumer,
    requests: Streaming<P::Request>,
    sender: mpsc::Sender<Result<P::Response, Status>>,
    shutdown: watch::Receiver<bool>,
) {
    let Ok(last_word) = sender.clone().reserve_owned().await else {
        return;
    };
    if let Some(status) = consume(&protocol, consumer, requests, &sender, shutdown).await {
        last_word.send(Err(status));
    }
}

/// The loop of [`serve_consumer`]: the status that ends the call, `None` if the client went.
async fn consume<P: ConsumerProtocol>(
    protocol: &P,
    mut consumer: GroupConsumer,
    mut requests: Streaming<P::Request>,
    sender: &mpsc::Sender<Result<P::Response, Status>>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Status> {
    let acks = consumer.acks();
    loop {
        tokio::select! {
            biased;
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                return Some(Status::unavailable(
                    "the server is shutting down; connect again once it is back",
                ));
            }
            () = sender.closed() => return None,
            request = requests.message() => {
                // The client closed its side, or went away.
                let Ok(Some(request)) = request else {
                    return None;
                };
                let handled = match protocol.decode(request) {
                    Ok(ConsumerRequest::Ack(ids)) => {
                        acks.ack(ids).await.map_err(|error| protocol.failed(error))
                    }
                    Ok(ConsumerRequest::Nack { ids, action, stop }) => {
                        let stopped = if stop { acks.stop_receiving().await } else { Ok(()) };
                        match stopped {
                            Ok(()) => acks.nack(ids, action).await,
                            Err(error) => Err(error),
                        }
                        .map_err(|error| protocol.failed(error))
                    }
                    Ok(ConsumerRequest::StopReceiving) => {
                        acks.stop_receiving().await.map_err(|error| protocol.failed(error))
                    }
                    Err(status) => Err(status),
                };
                if let Err(status) = handled {
                    return Some(status);
                }
            }
            delivered = consumer.next() => match delivered {
                Some(Ok(event)) => {
                    if sender.send(Ok(protocol.encode(&event))).await.is_err() {
                        return None;
                    }
                }
                Some(Err(error)) => return Some(protocol.failed(error)),
                None => return Some(protocol.dropped()),
            },
        }
    }
}
