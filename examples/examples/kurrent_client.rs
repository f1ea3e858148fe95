//! An application written for KurrentDB, run against Caskade unmodified: it talks to the
//! server only through KurrentDB's official Rust client (`kurrentdb` on crates.io), with a
//! connection string, as it would talk to KurrentDB.
//!
//! The program starts a Caskade server on `127.0.0.1:0` over a store in `DATA_DIR` (a
//! temporary directory if none is given), then, as the application: places and ships orders
//! with optimistic concurrency, rebuilds an order from its stream, keeps a live count of
//! shipped orders from a filtered `$all` subscription, and caps a stream's length with
//! stream metadata.
//!
//! Run: `cargo run -p caskade-examples --example kurrent_client [DATA_DIR]`.

use caskade_examples::orders::{Order, OrderEvent};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, ReadStreamOptions, StreamMetadata,
    StreamState, SubscribeToAllOptions, SubscriptionEvent, SubscriptionFilter,
};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const ORDERS: u64 = 5;

#[tokio::main]
async fn main() -> Result {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);

    // The server, as `caskade serve` runs it.
    let store = caskade_eventstore::EventStore::open(&dir, caskade_eventstore::Options::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(caskade_server::run(
        listener,
        store,
        caskade_server::ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    // The application: nothing below knows it is not talking to KurrentDB.
    let settings: ClientSettings = format!("kurrentdb://{addr}?tls=false").parse()?;
    let client = Client::new(settings)?;
    run_application(&client).await?;

    let _ = stop.send(());
    server.await??;
    println!("ok");
    Ok(())
}

async fn run_application(client: &Client) -> Result {
    // A live projection: shipped orders, counted from the `order-` streams of `$all`.
    let filter = SubscriptionFilter::on_stream_name().add_prefix("order-");
    let mut subscription = client
        .subscribe_to_all(&SubscribeToAllOptions::default().filter(filter))
        .await;

    for n in 0..ORDERS {
        let stream = format!("order-{n}");
        let placed = OrderEvent::Placed {
            items: n + 1,
            total_cents: 1_250 * (n + 1),
        };
        // A new order: the stream must not exist yet.
        append(client, &stream, StreamState::NoStream, &placed).await?;
        if n % 2 == 0 {
            let order = load(client, &stream).await?;
            // Shipping expects the order exactly as it was read.
            append(
                client,
                &stream,
                StreamState::StreamRevision(order.revision),
                &OrderEvent::Shipped,
            )
            .await?;
        }
    }

    // A second shipment of order-0, written against a stale revision, is refused.
    let stale = append(
        client,
        "order-0",
        StreamState::StreamRevision(0),
        &OrderEvent::Shipped,
    )
    .await;
    match stale {
        Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
            println!("order-0: a stale shipment was refused (the order is at {current})");
        }
        other => return Err(format!("a stale write should be refused: {other:?}").into()),
    }

    let order = load(client, "order-4").await?;
    println!(
        "order-4: {} items, {} cents, shipped: {}, revision {}",
        order.items, order.total_cents, order.shipped, order.revision
    );

    // The projection sees every shipment, the catch-up and then the live ones.
    let expected_shipped = ORDERS.div_ceil(2);
    let counting = async {
        let mut shipped = 0;
        while shipped < expected_shipped {
            if let SubscriptionEvent::EventAppeared(event) =
                subscription.next_subscription_event().await?
                && event.get_original_event().event_type == "OrderShipped"
            {
                shipped += 1;
            }
        }
        Ok::<_, kurrentdb::Error>(shipped)
    };
    // Bounded, so that a projection that misses an event fails rather than hangs.
    let shipped = tokio::time::timeout(std::time::Duration::from_secs(30), counting).await??;
    println!("projection: {shipped} of {ORDERS} orders shipped");

    // An audit stream capped at its last three entries by stream metadata.
    let capped = StreamMetadata::builder().max_count(3).build();
    client
        .set_stream_metadata("audit", &AppendToStreamOptions::default(), &capped)
        .await?;
    for n in 0..5u64 {
        let entry = EventData::json("AuditEntry", &serde_json::json!({ "n": n }))?;
        client
            .append_to_stream("audit", &AppendToStreamOptions::default(), entry)
            .await?;
    }
    let mut read = client
        .read_stream("audit", &ReadStreamOptions::default())
        .await?;
    let mut kept = Vec::new();
    while let Some(event) = read.next().await? {
        kept.push(event.get_original_event().revision);
    }
    println!("audit: revisions kept {kept:?}");
    if kept != [2, 3, 4] {
        return Err(format!("max count 3 should keep revisions 2, 3 and 4, not {kept:?}").into());
    }
    Ok(())
}

async fn append(
    client: &Client,
    stream: &str,
    expected: StreamState,
    event: &OrderEvent,
) -> Result<u64, kurrentdb::Error> {
    let data = EventData::json(event.event_type(), event)
        .map_err(|error| kurrentdb::Error::InternalParsingError(error.to_string()))?;
    let options = AppendToStreamOptions::default().stream_state(expected);
    let written = client.append_to_stream(stream, &options, data).await?;
    Ok(written.next_expected_version)
}

/// Rebuilds an order by replaying its stream.
async fn load(client: &Client, stream: &str) -> Result<Order> {
    let mut read = client
        .read_stream(stream, &ReadStreamOptions::default())
        .await?;
    let mut order = Order::default();
    while let Some(event) = read.next().await? {
        let recorded = event.get_original_event();
        order.apply(&recorded.as_json::<OrderEvent>()?, recorded.revision);
    }
    Ok(order)
}
