//! The order view and the fold that builds it from events.
//!
//! One fold serves the projection (read models) and history (time travel), so both
//! always agree. It only records what the events say: totals come from `OrderCreated`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use ordo_es::RecordedEvent;

use crate::event::OrderEvent;
use crate::money::Money;
use crate::values::{LineItem, ShippingAddress, Status};

/// What queries show of one order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_name: String,
    pub customer_email: String,
    pub items: Vec<LineItem>,
    pub total_amount: Money,
    pub currency: String,
    pub status: Status,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub cancellation_reason: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub shipping_address: Option<ShippingAddress>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

impl OrderView {
    /// Counted in revenue and top customers: neither cancelled nor deleted.
    pub fn counts_as_revenue(&self) -> bool {
        self.status != Status::Cancelled
    }
}

/// An order as the read side knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewState {
    /// No event seen.
    Absent,
    Live(Box<OrderView>),
    /// Deleted at `version`: gone from every query, kept as a tombstone so that a
    /// redelivered older event is recognised.
    Deleted {
        version: u64,
    },
}

impl ViewState {
    /// The version of the last event folded in.
    pub fn version(&self) -> u64 {
        match self {
            ViewState::Absent => 0,
            ViewState::Live(view) => view.version,
            ViewState::Deleted { version } => *version,
        }
    }

    pub fn live(&self) -> Option<&OrderView> {
        match self {
            ViewState::Live(view) => Some(view),
            _ => None,
        }
    }

    /// Folds one event in. `envelope` gives the order id, version and time.
    pub fn evolve(self, envelope: &RecordedEvent, order_id: Uuid, event: &OrderEvent) -> ViewState {
        let at = envelope.occurred_at;
        let version = envelope.version;
        match (self, event) {
            (_, OrderEvent::Created(e)) => ViewState::Live(Box::new(OrderView {
                order_id,
                customer_name: e.customer_name.clone(),
                customer_email: e.customer_email.as_str().to_string(),
                items: e.items.clone(),
                total_amount: e.total_amount,
                currency: e.currency.as_str().to_string(),
                status: Status::Pending,
                cancellation_reason: None,
                shipping_address: e.shipping_address.clone(),
                created_at: at,
                updated_at: at,
                version,
            })),
            (ViewState::Live(mut view), OrderEvent::StatusChanged(e)) => {
                view.status = e.to;
                view.updated_at = at;
                view.version = version;
                ViewState::Live(view)
            }
            (ViewState::Live(mut view), OrderEvent::Cancelled(e)) => {
                view.status = Status::Cancelled;
                view.cancellation_reason = e.reason.clone();
                view.updated_at = at;
                view.version = version;
                ViewState::Live(view)
            }
            (_, OrderEvent::Deleted(_)) => ViewState::Deleted { version },
            // An event after a deletion, or before creation, cannot be produced by the
            // aggregate; keep the state and only move the version on.
            (ViewState::Deleted { .. }, _) => ViewState::Deleted { version },
            (ViewState::Absent, _) => ViewState::Absent,
        }
    }
}

/// A page of orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub orders: Vec<OrderView>,
    pub total: u64,
    pub page: u32,
    pub limit: u32,
}

/// The summary read model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total_orders: u64,
    pub orders_by_status: StatusCounts,
    pub total_revenue: Money,
    pub average_order_value: Money,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_updated: Option<OffsetDateTime>,
}

/// Orders per status, all six always present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts(pub [i64; 6]);

impl StatusCounts {
    pub fn get(&self, status: Status) -> i64 {
        self.0[status.index()]
    }

    pub fn total(&self) -> i64 {
        self.0.iter().sum()
    }
}

impl Serialize for StatusCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(6))?;
        for status in Status::ALL {
            map.serialize_entry(status.as_str(), &self.get(status))?;
        }
        map.end()
    }
}

impl Summary {
    /// Builds the answer from stored counters.
    pub fn from_counters(
        counts: StatusCounts,
        revenue: Money,
        last_updated: Option<OffsetDateTime>,
    ) -> Self {
        let counted = counts.total() - counts.get(Status::Cancelled);
        Summary {
            total_orders: counts.total().max(0) as u64,
            orders_by_status: counts,
            total_revenue: revenue,
            average_order_value: revenue.average(counted.max(0) as u64),
            last_updated,
        }
    }
}

/// One row of the top-customers read model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TopCustomer {
    pub customer_email: String,
    pub customer_name: String,
    pub order_count: u64,
    pub total_spent: Money,
}

/// How a state counts in the summary: its status, and its revenue.
pub(crate) fn summary_contribution(state: &ViewState) -> Option<(Status, Money)> {
    state.live().map(|v| {
        let revenue = if v.counts_as_revenue() {
            v.total_amount
        } else {
            Money::ZERO
        };
        (v.status, revenue)
    })
}
