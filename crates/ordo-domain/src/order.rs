//! The Order aggregate: the only place that decides.

use ordo_es::Aggregate;
use serde::Deserialize;

use crate::command::CreateOrder;
use crate::event::{OrderCancelled, OrderCreated, OrderDeleted, OrderEvent, OrderStatusChanged};
use crate::values::Status;

/// What the rules need to know about an order. Nothing more: views are built elsewhere.
/// Its serde form is the snapshot payload (see `Aggregate::SNAPSHOT_VERSION`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Order {
    /// None until created.
    status: Option<Status>,
    deleted: bool,
}

impl Order {
    pub fn exists(&self) -> bool {
        self.status.is_some()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn status(&self) -> Option<Status> {
        self.status
    }

    /// The checks that come before any other answer: the order must exist (404) and not
    /// be deleted (410).
    pub fn ensure_live(&self) -> Result<Status, OrderError> {
        match self.status {
            None => Err(OrderError::NotFound),
            Some(_) if self.deleted => Err(OrderError::Deleted),
            Some(status) => Ok(status),
        }
    }
}

/// Commands on one order.
#[allow(
    clippy::large_enum_variant,
    reason = "one command per request, never stored in bulk"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    Create(CreateOrder),
    UpdateStatus { status: Status },
    Cancel { reason: Option<String> },
    Delete,
}

/// A rule said no.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("the order already exists")]
    AlreadyExists,
    #[error("the order does not exist")]
    NotFound,
    #[error("the order has been deleted")]
    Deleted,
    #[error("cannot change status from {from} to {to}; the next status from {from} is {}", next_of(*from))]
    InvalidTransition { from: Status, to: Status },
    #[error("the order is already {0}")]
    SameStatus(Status),
    #[error("an order is cancelled only through the cancel endpoint")]
    CancelThroughStatus,
    #[error("a {0} order cannot be cancelled")]
    NotCancellable(Status),
}

fn next_of(status: Status) -> &'static str {
    status.next().map_or("none (final status)", Status::as_str)
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    const SNAPSHOT_VERSION: u32 = 1;

    fn to_snapshot(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }

    fn from_snapshot(state: &serde_json::Value) -> Option<Self> {
        Order::deserialize(state).ok()
    }

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Create(create) => {
                if self.exists() {
                    return Err(OrderError::AlreadyExists);
                }
                let items: Vec<_> = create.items.iter().map(|i| i.priced()).collect();
                let total_amount = items.iter().map(|i| i.line_total).sum();
                Ok(vec![OrderEvent::Created(OrderCreated {
                    customer_name: Some(create.customer_name),
                    customer_email: Some(create.customer_email),
                    currency: create.currency,
                    items,
                    total_amount,
                    shipping_address: create.shipping_address,
                    personal_data_erased: false,
                })])
            }
            OrderCommand::UpdateStatus { status: to } => {
                let from = self.ensure_live()?;
                if to == Status::Cancelled {
                    return Err(OrderError::CancelThroughStatus);
                }
                if to == from {
                    return Err(OrderError::SameStatus(from));
                }
                if from.next() != Some(to) {
                    return Err(OrderError::InvalidTransition { from, to });
                }
                Ok(vec![OrderEvent::StatusChanged(OrderStatusChanged {
                    from,
                    to,
                })])
            }
            OrderCommand::Cancel { reason } => {
                let from = self.ensure_live()?;
                if !from.is_cancellable() {
                    return Err(OrderError::NotCancellable(from));
                }
                Ok(vec![OrderEvent::Cancelled(OrderCancelled {
                    reason,
                    previous_status: from,
                })])
            }
            OrderCommand::Delete => {
                self.ensure_live()?;
                Ok(vec![OrderEvent::Deleted(OrderDeleted {})])
            }
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Created(_) => self.status = Some(Status::Pending),
            OrderEvent::StatusChanged(e) => self.status = Some(e.to),
            OrderEvent::Cancelled(_) => self.status = Some(Status::Cancelled),
            OrderEvent::Deleted(_) => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use ordo_es::testkit::AggregateTest;
    use serde_json::json;

    use super::*;
    use crate::money::Money;
    use crate::values::{Currency, CustomerEmail, LineItem};

    type OrderTest = AggregateTest<Order>;

    fn create_command() -> CreateOrder {
        CreateOrder::parse(&json!({
            "customerName": "Ada", "customerEmail": "ada@example.com", "currency": "EUR",
            "items": [{"productId": "p-1", "productName": "Engine", "quantity": 2, "unitPrice": 19.99},
                      {"productId": "p-2", "productName": "Gear", "quantity": 3, "unitPrice": 0.5}]
        }))
        .expect("valid command")
    }

    fn created() -> OrderEvent {
        OrderEvent::Created(OrderCreated {
            customer_name: Some("Ada".into()),
            customer_email: Some(CustomerEmail::parse("ada@example.com").expect("email")),
            currency: Currency::parse("EUR").expect("currency"),
            items: vec![
                LineItem {
                    product_id: "p-1".into(),
                    product_name: "Engine".into(),
                    quantity: 2,
                    unit_price: Money::from_cents(1999),
                    line_total: Money::from_cents(3998),
                },
                LineItem {
                    product_id: "p-2".into(),
                    product_name: "Gear".into(),
                    quantity: 3,
                    unit_price: Money::from_cents(50),
                    line_total: Money::from_cents(150),
                },
            ],
            total_amount: Money::from_cents(4148),
            shipping_address: None,
            personal_data_erased: false,
        })
    }

    fn moved(from: Status, to: Status) -> OrderEvent {
        OrderEvent::StatusChanged(OrderStatusChanged { from, to })
    }

    fn history_to(status: Status) -> Vec<OrderEvent> {
        let mut events = vec![created()];
        let mut current = Status::Pending;
        while current != status {
            let next = current.next().expect("reachable forward");
            events.push(moved(current, next));
            current = next;
        }
        events
    }

    #[test]
    fn creating_an_order_records_exact_line_and_order_totals() {
        OrderTest::given_no_previous_events()
            .when(OrderCommand::Create(create_command()))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_an_existing_order_is_rejected() {
        OrderTest::given(vec![created()])
            .when(OrderCommand::Create(create_command()))
            .then_expect_error(OrderError::AlreadyExists);
    }

    #[test]
    fn every_forward_step_is_allowed_one_at_a_time() {
        for from in [
            Status::Pending,
            Status::Confirmed,
            Status::Processing,
            Status::Shipped,
        ] {
            let to = from.next().expect("forward");
            OrderTest::given(history_to(from))
                .when(OrderCommand::UpdateStatus { status: to })
                .then_expect_events(vec![moved(from, to)]);
        }
    }

    #[test]
    fn skipping_or_going_back_is_an_invalid_transition() {
        OrderTest::given(history_to(Status::Pending))
            .when(OrderCommand::UpdateStatus {
                status: Status::Shipped,
            })
            .then_expect_error(OrderError::InvalidTransition {
                from: Status::Pending,
                to: Status::Shipped,
            });
        OrderTest::given(history_to(Status::Shipped))
            .when(OrderCommand::UpdateStatus {
                status: Status::Confirmed,
            })
            .then_expect_error(OrderError::InvalidTransition {
                from: Status::Shipped,
                to: Status::Confirmed,
            });
    }

    #[test]
    fn setting_the_current_status_again_is_a_conflict_not_a_no_op() {
        OrderTest::given(history_to(Status::Confirmed))
            .when(OrderCommand::UpdateStatus {
                status: Status::Confirmed,
            })
            .then_expect_error(OrderError::SameStatus(Status::Confirmed));
    }

    #[test]
    fn cancelled_is_reached_only_through_cancel() {
        OrderTest::given(history_to(Status::Pending))
            .when(OrderCommand::UpdateStatus {
                status: Status::Cancelled,
            })
            .then_expect_error(OrderError::CancelThroughStatus);
    }

    #[test]
    fn pending_confirmed_and_processing_orders_can_be_cancelled() {
        for status in [Status::Pending, Status::Confirmed, Status::Processing] {
            OrderTest::given(history_to(status))
                .when(OrderCommand::Cancel {
                    reason: Some("changed mind".into()),
                })
                .then_expect_events(vec![OrderEvent::Cancelled(OrderCancelled {
                    reason: Some("changed mind".into()),
                    previous_status: status,
                })]);
        }
    }

    #[test]
    fn cancelling_a_shipped_or_delivered_order_is_a_conflict() {
        for status in [Status::Shipped, Status::Delivered] {
            OrderTest::given(history_to(status))
                .when(OrderCommand::Cancel { reason: None })
                .then_expect_error(OrderError::NotCancellable(status));
        }
    }

    #[test]
    fn nothing_leaves_delivered_or_cancelled() {
        OrderTest::given(history_to(Status::Delivered))
            .when(OrderCommand::UpdateStatus {
                status: Status::Shipped,
            })
            .then_expect_error(OrderError::InvalidTransition {
                from: Status::Delivered,
                to: Status::Shipped,
            });
        let mut cancelled = history_to(Status::Confirmed);
        cancelled.push(OrderEvent::Cancelled(OrderCancelled {
            reason: None,
            previous_status: Status::Confirmed,
        }));
        OrderTest::given(cancelled.clone())
            .when(OrderCommand::UpdateStatus {
                status: Status::Processing,
            })
            .then_expect_error(OrderError::InvalidTransition {
                from: Status::Cancelled,
                to: Status::Processing,
            });
        OrderTest::given(cancelled)
            .when(OrderCommand::Cancel { reason: None })
            .then_expect_error(OrderError::NotCancellable(Status::Cancelled));
    }

    #[test]
    fn commands_on_an_unknown_order_are_not_found() {
        for command in [
            OrderCommand::UpdateStatus {
                status: Status::Confirmed,
            },
            OrderCommand::Cancel { reason: None },
            OrderCommand::Delete,
        ] {
            OrderTest::given_no_previous_events()
                .when(command)
                .then_expect_error(OrderError::NotFound);
        }
    }

    #[test]
    fn a_deleted_order_accepts_no_command() {
        let mut deleted = history_to(Status::Confirmed);
        deleted.push(OrderEvent::Deleted(OrderDeleted {}));
        for command in [
            OrderCommand::UpdateStatus {
                status: Status::Processing,
            },
            OrderCommand::UpdateStatus {
                status: Status::Cancelled,
            },
            OrderCommand::Cancel { reason: None },
            OrderCommand::Delete,
        ] {
            OrderTest::given(deleted.clone())
                .when(command)
                .then_expect_error(OrderError::Deleted);
        }
        OrderTest::given(deleted)
            .when(OrderCommand::Create(create_command()))
            .then_expect_error(OrderError::AlreadyExists);
    }

    #[test]
    fn any_live_order_can_be_deleted() {
        for status in [Status::Pending, Status::Delivered] {
            OrderTest::given(history_to(status))
                .when(OrderCommand::Delete)
                .then_expect_events(vec![OrderEvent::Deleted(OrderDeleted {})]);
        }
    }
}
