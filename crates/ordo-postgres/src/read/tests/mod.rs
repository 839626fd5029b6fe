use std::sync::Arc;

use ordo_app::OrderProjection;
use ordo_domain::event::{OrderCancelled, OrderCreated, OrderDeleted, OrderStatusChanged};
use ordo_domain::values::LineItem;
use ordo_domain::{Currency, CustomerEmail, EmailKey, OrderEvent, Sort, Status};
use ordo_es::{DomainEvent, Metadata, Position, Projection, RecordedEvent, StreamId};
use time::OffsetDateTime;
use time::macros::{date, datetime};

use super::bulk::bulk_state;
use super::*;
use crate::testdb;

/// A read store in a fresh schema, the projection over it, and the schema name.
struct Fixture {
    store: Arc<PgReadStore>,
    projection: OrderProjection,
    checkpoint: Checkpoint,
    next_position: u64,
    schema: String,
}

impl Fixture {
    async fn new() -> Self {
        let (url, schema) = testdb::fresh_url().await;
        let store = Arc::new(
            PgReadStore::connect(&url)
                .await
                .expect("connect to the test server"),
        );
        Fixture {
            projection: OrderProjection::new(store.clone()),
            store,
            checkpoint: Checkpoint::origin(1),
            next_position: 1,
            schema,
        }
    }

    /// Projects `events` (order id, version, event, time) as one batch.
    async fn project(&mut self, events: Vec<(Uuid, u64, OrderEvent, OffsetDateTime)>) {
        let mut recorded = Vec::new();
        let mut to = self.checkpoint.clone();
        for (id, version, event, at) in events {
            let position = Position::new(0, self.next_position, 0);
            self.next_position += 1;
            to.advance(&position);
            recorded.push(RecordedEvent {
                event_id: Uuid::now_v7(),
                stream_id: StreamId::new(id.to_string()),
                aggregate_type: "Order".into(),
                version,
                position,
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                occurred_at: at,
                data: event.encode(),
                metadata: Metadata::default(),
            });
        }
        self.projection
            .apply_batch(&recorded, &self.checkpoint, &to)
            .await
            .expect("apply batch");
        self.checkpoint = to;
    }

    async fn done(self) {
        drop(self.projection);
        drop(self.store);
        testdb::drop_schema(&self.schema).await;
    }
}

fn created(name: &str, email: &str, product: &str, cents: i128) -> OrderEvent {
    let price = Money::from_cents(cents);
    OrderEvent::Created(OrderCreated {
        customer_name: name.into(),
        customer_email: CustomerEmail::parse(email).expect("email"),
        currency: Currency::usd(),
        items: vec![LineItem {
            product_id: "p-1".into(),
            product_name: product.into(),
            quantity: 1,
            unit_price: price,
            line_total: price,
        }],
        total_amount: price,
        shipping_address: None,
    })
}

fn cancelled() -> OrderEvent {
    OrderEvent::Cancelled(OrderCancelled {
        reason: Some("changed my mind".into()),
        previous_status: Status::Pending,
    })
}

fn query() -> ListQuery {
    ListQuery::default()
}

fn status(from: Status, to: Status) -> OrderEvent {
    OrderEvent::StatusChanged(OrderStatusChanged { from, to })
}

fn deleted() -> OrderEvent {
    OrderEvent::Deleted(OrderDeleted {})
}

type Step = (Uuid, u64, OrderEvent, OffsetDateTime);

mod bulk;
mod daily;
mod migrations;
mod queries;
mod writes;
