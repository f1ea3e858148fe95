//! The dispatcher's unit tests: strategies, acks and nacks, retries and parking, timeouts,
//! consumers leaving, checkpoints and replays, and a model test of its invariants.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::*;
use crate::event::{ContentType, Position, StreamVersion};

const TIMEOUT: Duration = Duration::from_secs(30);

fn recorded(stream: &str, id: Uuid, key: u64, metadata: &[u8]) -> Arc<RecordedEvent> {
    Arc::new(RecordedEvent {
        id,
        stream: Arc::from(stream),
        version: StreamVersion(key),
        position: Position(key),
        event_type: "Tested".to_owned(),
        content_type: ContentType::Json,
        data: b"{}".to_vec(),
        metadata: metadata.to_vec(),
        recorded_at: DateTime::<Utc>::UNIX_EPOCH,
    })
}

fn event(stream: &str) -> Arc<RecordedEvent> {
    recorded(stream, Uuid::new_v4(), 0, b"")
}

fn correlated(stream: &str, correlation: &str) -> Arc<RecordedEvent> {
    let metadata = serde_json::json!({ "$correlationId": correlation }).to_string();
    recorded(stream, Uuid::new_v4(), 0, metadata.as_bytes())
}

fn c(id: u64) -> ConsumerId {
    ConsumerId(id)
}

/// A dispatcher starting at checkpoint 0 with consumers 0, 1, ... of these capacities.
fn dispatcher(strategy: ConsumerStrategy, max_retry_count: u32, capacities: &[u32]) -> Dispatcher {
    let mut dispatcher = Dispatcher::new(strategy, max_retry_count, TIMEOUT, 0);
    for (id, capacity) in (0..).zip(capacities) {
        dispatcher.add_consumer(c(id), format!("c{id}"), *capacity);
    }
    dispatcher
}

/// Pushes a new event of `stream` read under `key`, returning its id.
fn push(dispatcher: &mut Dispatcher, stream: &str, key: u64) -> Uuid {
    let event = recorded(stream, Uuid::new_v4(), key, b"");
    let id = event.id;
    dispatcher.push_source(event, key);
    id
}

fn push_many(dispatcher: &mut Dispatcher, keys: std::ops::Range<u64>) -> Vec<Uuid> {
    keys.map(|key| push(dispatcher, "s", key)).collect()
}

fn pairs(deliveries: &[Delivery]) -> Vec<(ConsumerId, Uuid)> {
    deliveries
        .iter()
        .map(|d| (d.consumer, d.event.id))
        .collect()
}

fn ids(deliveries: &[Delivery]) -> Vec<Uuid> {
    deliveries.iter().map(|d| d.event.id).collect()
}

fn to(deliveries: &[Delivery], consumer: ConsumerId) -> Vec<Uuid> {
    deliveries
        .iter()
        .filter(|d| d.consumer == consumer)
        .map(|d| d.event.id)
        .collect()
}

fn consumers_of(deliveries: &[Delivery], stream: &str) -> BTreeSet<ConsumerId> {
    deliveries
        .iter()
        .filter(|d| &*d.event.stream == stream)
        .map(|d| d.consumer)
        .collect()
}

fn in_flight_of(dispatcher: &Dispatcher, consumer: ConsumerId) -> u32 {
    dispatcher
        .consumers()
        .iter()
        .find(|state| state.id == consumer)
        .expect("the consumer is connected")
        .in_flight
}

fn parked_reasons(dispatcher: &mut Dispatcher) -> Vec<(Uuid, u32, ParkReason)> {
    dispatcher
        .take_to_park()
        .into_iter()
        .map(|(message, reason)| (message.event.id, message.retry_count, reason))
        .collect()
}

// Round robin.

#[test]
fn round_robin_gives_each_consumer_its_turn_and_every_event_once() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[2, 2, 2]);
    let pushed = push_many(&mut d, 0..6);
    let deliveries = d.dispatch(Instant::now());
    let turns: Vec<ConsumerId> = deliveries.iter().map(|d| d.consumer).collect();
    assert_eq!(turns, [c(0), c(1), c(2), c(0), c(1), c(2)]);
    assert_eq!(
        ids(&deliveries),
        pushed,
        "every event exactly once, in order"
    );
    for consumer in 0..3 {
        assert_eq!(in_flight_of(&d, c(consumer)), 2);
    }
    assert!(deliveries.iter().all(|d| d.retry_count == 0));
    assert_eq!(d.fresh_len(), 0);
}

#[test]
fn round_robin_with_no_room_delivers_nothing_until_an_ack_frees_a_slot() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[2, 2, 2]);
    let pushed = push_many(&mut d, 0..7);
    let now = Instant::now();
    assert_eq!(d.dispatch(now).len(), 6);
    assert!(d.dispatch(now).is_empty());
    assert_eq!(d.fresh_len(), 1);
    d.ack(c(1), &[pushed[1]]);
    assert_eq!(pairs(&d.dispatch(now)), [(c(1), pushed[6])]);
    assert!(d.dispatch(now).is_empty());
}

// Dispatch to single.

#[test]
fn dispatch_to_single_fills_the_first_consumer_before_the_second() {
    let mut d = dispatcher(ConsumerStrategy::DispatchToSingle, 10, &[2, 2]);
    let pushed = push_many(&mut d, 0..3);
    let deliveries = d.dispatch(Instant::now());
    assert_eq!(
        pairs(&deliveries),
        [(c(0), pushed[0]), (c(0), pushed[1]), (c(1), pushed[2])]
    );
}

// Pinned.

/// Asserts two streams fall in different buckets, so that they may be owned by two consumers.
fn assert_apart(d: &Dispatcher, a: &RecordedEvent, b: &RecordedEvent) {
    assert_ne!(
        d.bucket(a),
        d.bucket(b),
        "the test needs streams in two buckets"
    );
}

#[test]
fn pinned_sends_every_event_of_a_stream_to_one_consumer() {
    let mut d = dispatcher(ConsumerStrategy::Pinned, 10, &[10, 10]);
    assert_apart(&d, &event("orders"), &event("invoices"));
    for key in 0..8 {
        let stream = if key % 2 == 0 { "orders" } else { "invoices" };
        push(&mut d, stream, key);
    }
    let deliveries = d.dispatch(Instant::now());
    assert_eq!(deliveries.len(), 8);
    let orders = consumers_of(&deliveries, "orders");
    let invoices = consumers_of(&deliveries, "invoices");
    assert_eq!(orders.len(), 1);
    assert_eq!(invoices.len(), 1);
    assert_ne!(
        orders, invoices,
        "two streams are spread over two consumers"
    );
}

#[test]
fn pinned_events_wait_for_their_full_owner_while_other_streams_flow() {
    let mut d = dispatcher(ConsumerStrategy::Pinned, 10, &[1, 5]);
    assert_apart(&d, &event("orders"), &event("invoices"));
    let first = push(&mut d, "orders", 0);
    let second = push(&mut d, "orders", 1);
    let invoices = [push(&mut d, "invoices", 2), push(&mut d, "invoices", 3)];
    let now = Instant::now();
    let deliveries = d.dispatch(now);
    assert_eq!(to(&deliveries, c(0)), [first]);
    assert_eq!(
        to(&deliveries, c(1)),
        invoices,
        "the other stream still flows"
    );
    assert_eq!(d.fresh_len(), 1, "the owner's second event waits");
    let later = push(&mut d, "invoices", 4);
    assert_eq!(pairs(&d.dispatch(now)), [(c(1), later)]);
    d.ack(c(0), &[first]);
    assert_eq!(pairs(&d.dispatch(now)), [(c(0), second)]);
}

#[test]
fn pinned_streams_move_to_a_remaining_consumer_after_their_owner_leaves() {
    let mut d = dispatcher(ConsumerStrategy::Pinned, 10, &[10, 10]);
    assert_apart(&d, &event("orders"), &event("invoices"));
    let order = push(&mut d, "orders", 0);
    let invoice = push(&mut d, "invoices", 1);
    let now = Instant::now();
    assert_eq!(pairs(&d.dispatch(now)), [(c(0), order), (c(1), invoice)]);
    d.remove_consumer(c(0));
    let later = push(&mut d, "orders", 2);
    let deliveries = d.dispatch(now);
    assert_eq!(pairs(&deliveries), [(c(1), order), (c(1), later)]);
    assert_eq!(deliveries[0].retry_count, 1);
    // A newcomer does not take the stream back from its new owner.
    d.add_consumer(c(2), "c2".to_owned(), 10);
    let again = push(&mut d, "orders", 3);
    assert_eq!(pairs(&d.dispatch(now)), [(c(1), again)]);
}

// Pinned by correlation.

#[test]
fn pinned_by_correlation_keeps_a_correlation_on_one_consumer_across_streams() {
    let mut d = dispatcher(ConsumerStrategy::PinnedByCorrelation, 10, &[10, 10, 10]);
    let streams = ["orders", "invoices", "shipments"];
    for (key, stream) in (0..).zip(streams) {
        d.push_source(correlated(stream, "saga-1"), 2 * key);
        d.push_source(correlated(stream, "saga-2"), 2 * key + 1);
    }
    let by_stream = dispatcher(ConsumerStrategy::Pinned, 10, &[1]);
    let buckets: BTreeSet<u64> = streams
        .iter()
        .map(|s| by_stream.bucket(&event(s)))
        .collect();
    assert_eq!(buckets.len(), 3, "pinned by stream, they would spread");
    assert_apart(&d, &correlated("x", "saga-1"), &correlated("x", "saga-2"));
    let deliveries = d.dispatch(Instant::now());
    assert_eq!(deliveries.len(), 6);
    let of = |correlation: &str| -> BTreeSet<ConsumerId> {
        deliveries
            .iter()
            .filter(|d| correlation_id(&d.event).as_deref() == Some(correlation))
            .map(|d| d.consumer)
            .collect()
    };
    assert_eq!(of("saga-1").len(), 1);
    assert_eq!(of("saga-2").len(), 1);
    assert_ne!(of("saga-1"), of("saga-2"));
}

#[test]
fn pinned_by_correlation_pins_by_stream_without_a_correlation_id() {
    let mut d = dispatcher(ConsumerStrategy::PinnedByCorrelation, 10, &[10, 10]);
    assert_apart(&d, &event("orders"), &event("invoices"));
    // No metadata, metadata without the id, and metadata that is not JSON.
    let metadata: [&[u8]; 3] = [b"", br#"{"other":"x"}"#, b"not json"];
    for (key, bytes) in (0..).zip(metadata) {
        d.push_source(recorded("orders", Uuid::new_v4(), 2 * key, bytes), 2 * key);
        d.push_source(
            recorded("invoices", Uuid::new_v4(), 2 * key + 1, bytes),
            2 * key + 1,
        );
    }
    let deliveries = d.dispatch(Instant::now());
    assert_eq!(deliveries.len(), 6);
    let orders = consumers_of(&deliveries, "orders");
    assert_eq!(orders.len(), 1);
    assert_eq!(consumers_of(&deliveries, "invoices").len(), 1);
    assert_ne!(orders, consumers_of(&deliveries, "invoices"));
}

// Nacks, retries and parking.

#[test]
fn nack_retry_redelivers_with_the_retry_count_raised() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[1]);
    let id = push(&mut d, "s", 0);
    let now = Instant::now();
    for expected in 0..3 {
        let deliveries = d.dispatch(now);
        assert_eq!(pairs(&deliveries), [(c(0), id)]);
        assert_eq!(deliveries[0].retry_count, expected);
        d.nack(c(0), &[id], NackAction::Retry);
        assert_eq!(d.retry_len(), 1);
        assert_eq!(d.in_flight_len(), 0);
    }
    assert_eq!(d.consumers()[0].nacked, 3);
    assert!(d.take_to_park().is_empty());
    assert_eq!(d.checkpoint(), 0);
}

#[test]
fn a_failure_after_max_retry_count_retries_parks_the_event() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 2, &[1]);
    let id = push(&mut d, "s", 0);
    let now = Instant::now();
    for expected in 0..=2 {
        let deliveries = d.dispatch(now);
        assert_eq!(deliveries[0].retry_count, expected);
        assert!(d.take_to_park().is_empty());
        d.nack(c(0), &[id], NackAction::Retry);
    }
    assert!(d.dispatch(now).is_empty(), "not delivered a fourth time");
    assert_eq!(d.retry_len(), 0);
    assert_eq!(parked_reasons(&mut d), [(id, 2, ParkReason::MaxRetries)]);
}

#[test]
fn max_retry_count_zero_parks_on_the_first_failure() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 0, &[1]);
    let id = push(&mut d, "s", 0);
    let now = Instant::now();
    assert_eq!(d.dispatch(now).len(), 1);
    d.nack(c(0), &[id], NackAction::Retry);
    assert!(d.dispatch(now).is_empty());
    assert_eq!(parked_reasons(&mut d), [(id, 0, ParkReason::MaxRetries)]);
}

#[test]
fn nack_park_parks_at_once_whatever_the_retry_count() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[1]);
    let id = push(&mut d, "s", 0);
    let now = Instant::now();
    d.dispatch(now);
    d.nack(c(0), &[id], NackAction::Park);
    assert!(d.dispatch(now).is_empty());
    assert_eq!(d.retry_len() + d.in_flight_len(), 0);
    let to_park = d.take_to_park();
    assert_eq!(to_park.len(), 1);
    assert_eq!(to_park[0].0.origin, Origin::Source(0));
    assert_eq!(to_park[0].1, ParkReason::Nacked);
    assert!(d.take_to_park().is_empty(), "taken once");
}

#[test]
fn nack_skip_finishes_the_event() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[1]);
    let id = push(&mut d, "s", 0);
    let now = Instant::now();
    d.dispatch(now);
    d.nack(c(0), &[id], NackAction::Skip);
    assert!(d.dispatch(now).is_empty());
    assert!(d.take_to_park().is_empty());
    assert_eq!(d.retry_len() + d.in_flight_len(), 0);
    assert_eq!(d.checkpoint(), 1);
    assert_eq!(d.finished_since_checkpoint(), 1);
    assert_eq!(d.consumers()[0].nacked, 1);
    assert_eq!(d.consumers()[0].acked, 0);
}

// Timeouts.

#[test]
fn expire_before_the_deadline_does_nothing() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[1]);
    push(&mut d, "s", 0);
    let t0 = Instant::now();
    assert_eq!(d.next_deadline(), None);
    d.dispatch(t0);
    assert_eq!(d.next_deadline(), Some(t0 + TIMEOUT));
    d.expire(t0 + TIMEOUT.saturating_sub(Duration::from_millis(1)));
    assert_eq!(d.in_flight_len(), 1);
    assert_eq!(d.retry_len(), 0);
    assert_eq!(in_flight_of(&d, c(0)), 1);
    assert_eq!(d.next_deadline(), Some(t0 + TIMEOUT));
}

#[test]
fn an_expired_event_is_taken_back_and_redelivered_with_retry_count_one() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[1, 1]);
    let id = push(&mut d, "s", 0);
    let t0 = Instant::now();
    assert_eq!(pairs(&d.dispatch(t0)), [(c(0), id)]);
    let expired = t0 + TIMEOUT;
    d.expire(expired);
    assert_eq!(d.in_flight_len(), 0);
    assert_eq!(in_flight_of(&d, c(0)), 0);
    assert_eq!(d.retry_len(), 1);
    assert_eq!(d.next_deadline(), None);
    let deliveries = d.dispatch(expired);
    assert_eq!(
        pairs(&deliveries),
        [(c(1), id)],
        "to the next consumer in turn"
    );
    assert_eq!(deliveries[0].retry_count, 1);
    assert_eq!(d.next_deadline(), Some(expired + TIMEOUT));
}

#[test]
fn an_expired_event_goes_to_the_next_consumer_with_room_when_the_first_is_full() {
    let mut d = dispatcher(ConsumerStrategy::DispatchToSingle, 10, &[1, 1, 1]);
    let t0 = Instant::now();
    let pushed = push_many(&mut d, 0..3);
    let deliveries = d.dispatch(t0);
    assert_eq!(to(&deliveries, c(2)), [pushed[2]]);
    // Later, the first consumer is full again and the second has room.
    let t1 = t0 + Duration::from_secs(10);
    d.ack(c(0), &pushed[..1]);
    d.ack(c(1), &pushed[1..2]);
    let fourth = push(&mut d, "s", 3);
    assert_eq!(pairs(&d.dispatch(t1)), [(c(0), fourth)]);
    d.expire(t0 + TIMEOUT);
    assert_eq!(in_flight_of(&d, c(2)), 0);
    let deliveries = d.dispatch(t0 + TIMEOUT);
    assert_eq!(pairs(&deliveries), [(c(1), pushed[2])]);
    assert_eq!(deliveries[0].retry_count, 1);
}

#[test]
fn next_deadline_is_the_earliest_and_expire_takes_only_what_is_due() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[5]);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(5);
    let early = push(&mut d, "s", 0);
    d.dispatch(t0);
    let later = push(&mut d, "s", 1);
    d.dispatch(t1);
    assert_eq!(d.next_deadline(), Some(t0 + TIMEOUT));
    d.expire(t0 + TIMEOUT);
    assert_eq!(d.in_flight_len(), 1);
    assert_eq!(d.next_deadline(), Some(t1 + TIMEOUT));
    d.ack(c(0), &[later]);
    assert_eq!(d.next_deadline(), None);
    let deliveries = d.dispatch(t1 + TIMEOUT);
    assert_eq!(ids(&deliveries), [early]);
}

#[test]
fn an_event_timing_out_past_max_retry_count_is_parked() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 0, &[1]);
    let id = push(&mut d, "s", 0);
    let t0 = Instant::now();
    d.dispatch(t0);
    d.expire(t0 + TIMEOUT);
    assert_eq!(d.retry_len(), 0);
    assert_eq!(parked_reasons(&mut d), [(id, 0, ParkReason::MaxRetries)]);
    assert_eq!(d.checkpoint(), 0, "held until parked durably");
}

// Consumers leaving.

#[test]
fn a_removed_consumers_events_go_to_another_in_order_with_retries_raised() {
    let mut d = dispatcher(ConsumerStrategy::DispatchToSingle, 10, &[8, 1]);
    let pushed = push_many(&mut d, 0..9);
    let now = Instant::now();
    let deliveries = d.dispatch(now);
    assert_eq!(to(&deliveries, c(0)), pushed[..8]);
    // The second consumer's event is due again before the first consumer leaves.
    d.nack(c(1), &[pushed[8]], NackAction::Retry);
    d.remove_consumer(c(0));
    assert_eq!(d.consumers().len(), 1);
    assert_eq!(d.in_flight_len(), 0);
    assert_eq!(d.retry_len(), 9);
    d.add_consumer(c(2), "c2".to_owned(), 20);
    let deliveries = d.dispatch(now);
    assert_eq!(
        ids(&deliveries),
        pushed,
        "the removed consumer's first, in their order"
    );
    assert!(deliveries.iter().all(|d| d.retry_count == 1));
    assert_eq!(in_flight_of(&d, c(1)) + in_flight_of(&d, c(2)), 9);
}

#[test]
fn removing_an_unknown_consumer_changes_nothing() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[1]);
    push(&mut d, "s", 0);
    d.dispatch(Instant::now());
    d.remove_consumer(c(7));
    assert_eq!(d.consumers().len(), 1);
    assert_eq!(d.in_flight_len(), 1);
    assert_eq!(d.retry_len(), 0);
}

// Checkpoints.

#[test]
fn the_checkpoint_starts_at_the_one_given() {
    let d = Dispatcher::new(ConsumerStrategy::RoundRobin, 10, TIMEOUT, 42);
    assert_eq!(d.checkpoint(), 42);
    assert_eq!(d.read_through(), 42);
    assert_eq!(d.finished_since_checkpoint(), 0);
}

#[test]
fn the_checkpoint_does_not_pass_an_unacked_event() {
    let mut d = Dispatcher::new(ConsumerStrategy::RoundRobin, 10, TIMEOUT, 10);
    d.add_consumer(c(0), "c0".to_owned(), 10);
    let pushed = push_many(&mut d, 10..13);
    d.dispatch(Instant::now());
    assert_eq!(d.checkpoint(), 10);
    assert_eq!(d.read_through(), 13);
    d.ack(c(0), &pushed[1..]);
    assert_eq!(d.checkpoint(), 10, "10 is still outstanding");
    d.ack(c(0), &pushed[..1]);
    assert_eq!(d.checkpoint(), 13, "everything read is finished");
}

#[test]
fn examined_keys_move_the_checkpoint_only_when_nothing_is_outstanding() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[10]);
    d.examined(3);
    assert_eq!(d.checkpoint(), 3, "keys 0..3 were filtered out");
    let id = push(&mut d, "s", 5);
    d.examined(9);
    assert_eq!(d.checkpoint(), 5);
    assert_eq!(d.read_through(), 9);
    d.examined(4);
    assert_eq!(d.read_through(), 9, "never moves back");
    d.dispatch(Instant::now());
    d.ack(c(0), &[id]);
    assert_eq!(d.checkpoint(), 9);
}

#[test]
fn a_message_being_parked_holds_the_checkpoint_until_it_is_parked() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[10]);
    let pushed = push_many(&mut d, 0..2);
    d.dispatch(Instant::now());
    d.nack(c(0), &pushed[..1], NackAction::Park);
    d.ack(c(0), &pushed[1..]);
    assert_eq!(d.checkpoint(), 0);
    let to_park = d.take_to_park();
    assert_eq!(d.checkpoint(), 0, "taken is not yet durable");
    assert_eq!(d.finished_since_checkpoint(), 1);
    d.parked(to_park[0].0.origin);
    assert_eq!(d.checkpoint(), 2);
    assert_eq!(d.finished_since_checkpoint(), 2);
}

#[test]
fn finished_since_checkpoint_counts_acks_skips_and_parks_until_checkpointed() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[10]);
    let pushed = push_many(&mut d, 0..5);
    d.dispatch(Instant::now());
    d.ack(c(0), &pushed[..2]);
    d.nack(c(0), &pushed[2..3], NackAction::Skip);
    d.nack(c(0), &pushed[3..4], NackAction::Retry);
    assert_eq!(d.finished_since_checkpoint(), 3, "a retry is not finished");
    d.nack(c(0), &pushed[4..], NackAction::Park);
    for (message, _) in d.take_to_park() {
        d.parked(message.origin);
    }
    assert_eq!(d.finished_since_checkpoint(), 4);
    d.checkpointed();
    assert_eq!(d.finished_since_checkpoint(), 0);
    assert_eq!(d.checkpoint(), 3, "the retried event holds it");
}

// Replays of parked messages.

#[test]
fn replays_are_delivered_before_fresh_events() {
    let mut d = dispatcher(ConsumerStrategy::DispatchToSingle, 10, &[10]);
    let fresh = push(&mut d, "s", 0);
    let replay = event("parked");
    d.push_replay(Arc::clone(&replay), 7);
    assert_eq!(d.retry_len(), 1);
    let deliveries = d.dispatch(Instant::now());
    assert_eq!(ids(&deliveries), [replay.id, fresh]);
    assert_eq!(
        deliveries[0].retry_count, 0,
        "its retries are counted afresh"
    );
}

#[test]
fn replays_do_not_hold_the_checkpoint_and_are_reported_once_acked() {
    let mut d = Dispatcher::new(ConsumerStrategy::RoundRobin, 10, TIMEOUT, 5);
    d.add_consumer(c(0), "c0".to_owned(), 10);
    let replay = event("parked");
    d.push_replay(Arc::clone(&replay), 7);
    let now = Instant::now();
    d.dispatch(now);
    assert_eq!(d.checkpoint(), 5);
    assert_eq!(d.read_through(), 5);
    assert!(
        d.take_replays_finished().is_empty(),
        "not finished while in flight"
    );
    d.ack(c(0), &[replay.id]);
    assert_eq!(d.take_replays_finished(), [7]);
    assert!(d.take_replays_finished().is_empty(), "taken once");
    assert_eq!(d.checkpoint(), 5);
    assert_eq!(d.finished_since_checkpoint(), 1);
}

#[test]
fn a_replay_parked_again_is_reported_once_parked() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[10]);
    let replay = event("parked");
    d.push_replay(Arc::clone(&replay), 7);
    d.dispatch(Instant::now());
    d.nack(c(0), &[replay.id], NackAction::Park);
    let to_park = d.take_to_park();
    assert_eq!(to_park[0].0.origin, Origin::Parked(7));
    assert!(d.take_replays_finished().is_empty());
    d.parked(to_park[0].0.origin);
    assert_eq!(d.take_replays_finished(), [7]);
    assert_eq!(d.checkpoint(), 0);
}

// Acks.

#[test]
fn acks_of_unknown_ids_are_ignored() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[10]);
    push(&mut d, "s", 0);
    d.dispatch(Instant::now());
    d.ack(c(0), &[Uuid::new_v4()]);
    d.nack(c(0), &[Uuid::new_v4()], NackAction::Skip);
    assert_eq!(d.in_flight_len(), 1);
    assert_eq!(d.checkpoint(), 0);
    assert_eq!(d.finished_since_checkpoint(), 0);
    assert_eq!(d.consumers()[0].acked, 0);
    assert_eq!(d.consumers()[0].nacked, 0);
}

#[test]
fn an_ack_from_another_consumer_finishes_nothing() {
    let mut d = dispatcher(ConsumerStrategy::DispatchToSingle, 10, &[10, 10]);
    let id = push(&mut d, "s", 0);
    assert_eq!(pairs(&d.dispatch(Instant::now())), [(c(0), id)]);
    d.ack(c(1), &[id]);
    assert_eq!(d.in_flight_len(), 1);
    assert_eq!(in_flight_of(&d, c(0)), 1, "the holder keeps it");
    assert_eq!(d.checkpoint(), 0);
    d.ack(c(0), &[id]);
    assert_eq!(d.checkpoint(), 1);
}

#[test]
fn two_in_flight_events_with_one_id_are_acked_one_at_a_time() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[10]);
    let id = Uuid::new_v4();
    d.push_source(recorded("a", id, 0, b""), 0);
    d.push_source(recorded("b", id, 1, b""), 1);
    let now = Instant::now();
    assert_eq!(d.dispatch(now).len(), 2);
    assert_eq!(d.in_flight_len(), 2);
    d.ack(c(0), &[id]);
    assert_eq!(d.in_flight_len(), 1);
    assert_eq!(in_flight_of(&d, c(0)), 1);
    assert_eq!(d.checkpoint(), 1, "the first delivered is finished first");
    d.ack(c(0), &[id]);
    assert_eq!(d.in_flight_len(), 0);
    assert_eq!(d.checkpoint(), 2);
    assert_eq!(d.consumers()[0].acked, 2);
}

#[test]
fn two_in_flight_events_with_one_id_time_out_separately() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[10, 10]);
    let id = Uuid::new_v4();
    let t0 = Instant::now();
    d.push_source(recorded("a", id, 0, b""), 0);
    d.dispatch(t0);
    d.push_source(recorded("b", id, 1, b""), 1);
    d.dispatch(t0 + Duration::from_secs(1));
    d.expire(t0 + TIMEOUT);
    assert_eq!(d.in_flight_len(), 1);
    assert_eq!(d.retry_len(), 1);
    d.expire(t0 + TIMEOUT + Duration::from_secs(1));
    assert_eq!(d.in_flight_len(), 0);
    assert_eq!(d.retry_len(), 2);
    assert_eq!(d.next_deadline(), None);
}

// Capacities.

#[test]
fn a_capacity_of_zero_counts_as_one() {
    let mut d = dispatcher(ConsumerStrategy::RoundRobin, 10, &[0]);
    push_many(&mut d, 0..2);
    assert_eq!(d.dispatch(Instant::now()).len(), 1);
    assert_eq!(d.consumers()[0].capacity, 1);
}

#[test]
fn without_consumers_nothing_is_delivered() {
    let mut d = dispatcher(ConsumerStrategy::Pinned, 10, &[]);
    push_many(&mut d, 0..2);
    d.push_replay(event("parked"), 1);
    assert!(d.dispatch(Instant::now()).is_empty());
    assert_eq!((d.fresh_len(), d.retry_len()), (2, 1));
}

// The model test.

#[derive(Debug, Clone)]
enum Op {
    Connect(u32),
    Disconnect(usize),
    Push(usize),
    Replay,
    Dispatch,
    Ack(usize, usize),
    Nack(usize, usize, NackAction),
    Advance(u64),
    Parked,
}

fn op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        Just(NackAction::Retry),
        Just(NackAction::Park),
        Just(NackAction::Skip)
    ];
    prop_oneof![
        2 => (1..4_u32).prop_map(Op::Connect),
        1 => (0..4_usize).prop_map(Op::Disconnect),
        3 => (0..3_usize).prop_map(Op::Push),
        1 => Just(Op::Replay),
        3 => Just(Op::Dispatch),
        3 => (0..8_usize, 0..4_usize).prop_map(|(event, from)| Op::Ack(event, from)),
        1 => (0..8_usize, 0..4_usize, action).prop_map(|(e, from, a)| Op::Nack(e, from, a)),
        1 => (1..40_u64).prop_map(Op::Advance),
        1 => Just(Op::Parked),
    ]
}

fn strategy() -> impl Strategy<Value = ConsumerStrategy> {
    prop_oneof![
        Just(ConsumerStrategy::RoundRobin),
        Just(ConsumerStrategy::DispatchToSingle),
        Just(ConsumerStrategy::Pinned),
        Just(ConsumerStrategy::PinnedByCorrelation),
    ]
}

fn origin_key(origin: Origin) -> (bool, u64) {
    match origin {
        Origin::Source(key) => (false, key),
        Origin::Parked(record) => (true, record),
    }
}

/// What the model test keeps besides the dispatcher.
struct Model {
    d: Dispatcher,
    now: Instant,
    next_consumer: u64,
    next_key: u64,
    next_replay: u64,
    /// Messages taken to park and not yet reported parked.
    parking: Vec<Message>,
    replays_finished: BTreeSet<u64>,
    max_retry_count: u32,
    /// Deliveries so far of each message, by (replayed, key or parked record).
    deliveries: HashMap<(bool, u64), u32>,
}

impl Model {
    fn consumer(&self, index: usize) -> Option<ConsumerId> {
        let consumers = self.d.consumers();
        (!consumers.is_empty()).then(|| consumers[index % consumers.len()].id)
    }

    /// An event in flight, chosen by `index` among them in the order they were delivered.
    fn in_flight(&self, index: usize) -> Option<Uuid> {
        let mut entries: Vec<(u64, Uuid)> = (self.d.in_flight.values().flatten())
            .map(|entry| (entry.delivery, entry.message.event.id))
            .collect();
        entries.sort_unstable();
        (!entries.is_empty()).then(|| entries[index % entries.len()].1)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let streams = ["orders", "invoices", "shipments"];
        match *op {
            Op::Connect(capacity) => {
                let id = c(self.next_consumer);
                self.next_consumer += 1;
                self.d.add_consumer(id, format!("{id:?}"), capacity);
            }
            Op::Disconnect(index) => {
                if let Some(id) = self.consumer(index) {
                    self.d.remove_consumer(id);
                }
            }
            Op::Push(stream) => {
                let key = self.next_key;
                self.next_key += 1 + key % 2;
                // Every third key shares its id with another, as events in `$all` may.
                let id = Uuid::from_u128(u128::from(key / 3));
                let metadata = format!(r#"{{"$correlationId":"{}"}}"#, streams[key as usize % 3]);
                let event = recorded(streams[stream], id, key, metadata.as_bytes());
                self.d.push_source(event, key);
            }
            Op::Replay => {
                self.next_replay += 1;
                let id = Uuid::from_u128(u128::from(self.next_replay) << 64);
                let event = recorded("parked", id, 0, b"");
                self.d.push_replay(event, self.next_replay);
            }
            Op::Dispatch => self.dispatch()?,
            Op::Ack(event, from) => {
                if let (Some(id), Some(from)) = (self.in_flight(event), self.consumer(from)) {
                    self.d.ack(from, &[id]);
                }
            }
            Op::Nack(event, from, action) => {
                if let (Some(id), Some(from)) = (self.in_flight(event), self.consumer(from)) {
                    self.d.nack(from, &[id], action);
                }
            }
            Op::Advance(seconds) => {
                self.now += Duration::from_secs(seconds);
                self.d.expire(self.now);
            }
            Op::Parked => {
                for message in std::mem::take(&mut self.parking) {
                    self.d.parked(message.origin);
                }
            }
        }
        for (message, reason) in self.d.take_to_park() {
            if reason == ParkReason::MaxRetries {
                let delivered = self.deliveries.get(&origin_key(message.origin));
                prop_assert_eq!(message.retry_count, self.max_retry_count);
                prop_assert_eq!(delivered, Some(&(self.max_retry_count + 1)));
            }
            self.parking.push(message);
        }
        for record in self.d.take_replays_finished() {
            let first = self.replays_finished.insert(record);
            prop_assert!(first, "replay {} finished twice", record);
        }
        Ok(())
    }

    /// Dispatches, checking each message comes with the number of its deliveries before.
    fn dispatch(&mut self) -> Result<(), TestCaseError> {
        for delivery in self.d.dispatch(self.now) {
            let key = if &*delivery.event.stream == "parked" {
                (true, (delivery.event.id.as_u128() >> 64) as u64)
            } else {
                (false, delivery.event.version.0)
            };
            let before = self.deliveries.entry(key).or_default();
            prop_assert_eq!(delivery.retry_count, *before, "{:?}", key);
            *before += 1;
        }
        Ok(())
    }

    /// The origins of every message held somewhere: queued, in flight, or being parked.
    fn held(&self) -> (Vec<u64>, Vec<u64>) {
        let in_flight = self
            .d
            .in_flight
            .values()
            .flatten()
            .map(|entry| &entry.message);
        let queued = self.d.fresh.iter().chain(&self.d.retries);
        let (mut keys, mut records) = (Vec::new(), Vec::new());
        for message in queued.chain(in_flight).chain(&self.parking) {
            match message.origin {
                Origin::Source(key) => keys.push(key),
                Origin::Parked(record) => records.push(record),
            }
        }
        keys.sort_unstable();
        records.sort_unstable();
        (keys, records)
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for consumer in self.d.consumers() {
            let held = self.d.in_flight.values().flatten();
            let count = held.filter(|entry| entry.consumer == consumer.id).count();
            prop_assert!(consumer.in_flight <= consumer.capacity, "{consumer:?}");
            prop_assert_eq!(consumer.in_flight as usize, count, "{:?}", consumer);
        }
        for entry in self.d.in_flight.values().flatten() {
            let connected = self.d.consumers().iter().any(|c| c.id == entry.consumer);
            prop_assert!(connected, "in flight to a consumer gone: {:?}", entry);
        }
        prop_assert_eq!(self.d.in_flight_len(), self.d.deadlines.len());
        let (keys, records) = self.held();
        let unique: BTreeSet<u64> = keys.iter().copied().collect();
        prop_assert_eq!(
            keys.len(),
            unique.len(),
            "a message is in one place at a time"
        );
        prop_assert_eq!(&unique, &self.d.outstanding, "nothing outstanding is lost");
        let lowest = unique.first().copied().unwrap_or(self.d.read_through());
        prop_assert_eq!(self.d.checkpoint(), lowest);
        // Every replay is held exactly once or finished exactly once.
        let mut replays: Vec<u64> = records
            .into_iter()
            .chain(self.replays_finished.iter().copied())
            .collect();
        replays.sort_unstable();
        let all: Vec<u64> = (1..=self.next_replay).collect();
        prop_assert_eq!(replays, all, "no replay is lost or doubled");
        Ok(())
    }
}

fn run_model(
    strategy: ConsumerStrategy,
    max_retry_count: u32,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut model = Model {
        d: Dispatcher::new(strategy, max_retry_count, TIMEOUT, 0),
        now: Instant::now(),
        next_consumer: 0,
        next_key: 0,
        next_replay: 0,
        parking: Vec::new(),
        replays_finished: BTreeSet::new(),
        max_retry_count,
        deliveries: HashMap::new(),
    };
    for op in ops {
        model.apply(op)?;
        model.check()?;
    }
    Ok(())
}

#[test]
fn consumers_never_hold_more_than_their_capacity_and_nothing_is_lost() {
    let config = Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    };
    let cases = (strategy(), 0..3_u32, vec(op(), 1..60));
    TestRunner::new(config)
        .run(&cases, |(strategy, max_retry_count, ops)| {
            run_model(strategy, max_retry_count, &ops)
        })
        .expect("the dispatcher keeps its invariants");
}
