//! An order aggregate, written the way a KurrentDB application writes its domain: events
//! as JSON with a type name each, state rebuilt by applying them in revision order. The
//! `kurrent_client` example stores these through KurrentDB's official client; nothing here
//! depends on the store.

use serde::{Deserialize, Serialize};

/// What happens to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum OrderEvent {
    /// The order was placed.
    Placed {
        /// How many items.
        items: u64,
        /// What it costs, in cents.
        total_cents: u64,
    },
    /// The order left the warehouse.
    Shipped,
}

impl OrderEvent {
    /// The event type the store records, which subscriptions and filters see.
    #[must_use]
    pub fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "OrderPlaced",
            OrderEvent::Shipped => "OrderShipped",
        }
    }
}

/// An order as its events leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    /// How many items.
    pub items: u64,
    /// What it costs, in cents.
    pub total_cents: u64,
    /// Whether it has shipped.
    pub shipped: bool,
    /// The revision of the last event applied: what a write expects to build on.
    pub revision: u64,
}

impl Order {
    /// Applies `event`, recorded at `revision`.
    pub fn apply(&mut self, event: &OrderEvent, revision: u64) {
        match event {
            OrderEvent::Placed { items, total_cents } => {
                self.items = *items;
                self.total_cents = *total_cents;
            }
            OrderEvent::Shipped => self.shipped = true,
        }
        self.revision = revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_its_events_applied_in_order() {
        let mut order = Order::default();
        order.apply(
            &OrderEvent::Placed {
                items: 2,
                total_cents: 2_500,
            },
            0,
        );
        assert!(!order.shipped);
        order.apply(&OrderEvent::Shipped, 1);
        assert_eq!(
            order,
            Order {
                items: 2,
                total_cents: 2_500,
                shipped: true,
                revision: 1
            }
        );
    }

    #[test]
    fn events_are_json_tagged_with_their_kind() {
        let json = serde_json::to_value(OrderEvent::Shipped).expect("serializes");
        assert_eq!(json, serde_json::json!({ "kind": "Shipped" }));
        let placed: OrderEvent = serde_json::from_value(
            serde_json::json!({ "kind": "Placed", "items": 1, "total_cents": 5 }),
        )
        .expect("deserializes");
        assert_eq!(placed.event_type(), "OrderPlaced");
    }
}
