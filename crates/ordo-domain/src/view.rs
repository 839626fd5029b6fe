//! The order view and the fold that builds it from events.
//!
//! One fold serves the projection (read models) and history (time travel), so both
//! always agree. It only records what the events say: totals come from `OrderCreated`.

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use ordo_es::RecordedEvent;

use crate::event::OrderEvent;
use crate::money::Money;
use crate::values::{EmailKey, LineItem, ShippingAddress, Status};

/// What queries show of one order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderView {
    pub order_id: Uuid,
    /// Null once the customer's personal data is erased (`personal_data_erased`).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub customer_name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub customer_email: Option<String>,
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
    /// True once the customer's personal data is erased: name, e-mail and address are
    /// null, and the order is found by no customer query, search or top-customers row.
    #[serde(default)]
    pub personal_data_erased: bool,
}

impl OrderView {
    /// Counted in revenue and top customers: neither cancelled nor deleted.
    pub fn counts_as_revenue(&self) -> bool {
        self.status != Status::Cancelled
    }

    /// The key of the order's customer, which the read models index and count it
    /// under. Made from the view's e-mail rather than trusted to be one: a view stored
    /// before stored events decoded lower-cased may hold capitals.
    /// `None` once the personal data is erased: the order belongs to no customer.
    pub fn customer_key(&self) -> Option<EmailKey> {
        self.customer_email.as_deref().map(EmailKey::new)
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
    /// Whether this state shows an order to queries.
    pub fn is_live(&self) -> bool {
        matches!(self, ViewState::Live(_))
    }

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
                customer_email: e.customer_email.as_ref().map(|m| m.as_str().to_string()),
                items: e.items.clone(),
                total_amount: e.total_amount,
                currency: e.currency.as_str().to_string(),
                status: Status::Pending,
                cancellation_reason: None,
                shipping_address: e.shipping_address.clone(),
                created_at: at,
                updated_at: at,
                version,
                personal_data_erased: e.personal_data_erased,
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

/// The UTC calendar day an order counts on in the daily read model: the day of its
/// createdAt.
pub fn order_day(view: &OrderView) -> Date {
    view.created_at.to_offset(UtcOffset::UTC).date()
}

/// One UTC calendar day of the daily read model: the orders created that day that are
/// not deleted (cancelled ones included), and the revenue of those that are neither
/// cancelled nor deleted (the summary's rule). Summed over every day they give the
/// summary's totalOrders and totalRevenue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DailyFigures {
    /// The UTC day, YYYY-MM-DD.
    #[serde(serialize_with = "serialize_date")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date, example = "2026-11-03"))]
    pub date: Date,
    pub orders: u64,
    pub revenue: Money,
}

impl DailyFigures {
    /// A day without orders.
    pub fn zero(date: Date) -> Self {
        DailyFigures {
            date,
            orders: 0,
            revenue: Money::ZERO,
        }
    }
}

/// How one batch moves one day's figures. Stores add it to what they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayDelta {
    pub orders: i64,
    pub revenue: Money,
}

/// Every day from `from` to `to` (inclusive), oldest first: the figures of `stored`
/// where it has the day, zeros where it has none. Stored days outside the range are
/// ignored. Empty when `from` is after `to`.
pub fn fill_days(from: Date, to: Date, stored: &[DailyFigures]) -> Vec<DailyFigures> {
    let by_day: std::collections::HashMap<Date, &DailyFigures> =
        stored.iter().map(|f| (f.date, f)).collect();
    let mut days = Vec::new();
    let mut day = Some(from);
    while let Some(d) = day.filter(|d| *d <= to) {
        days.push(
            by_day
                .get(&d)
                .map_or_else(|| DailyFigures::zero(d), |f| **f),
        );
        day = d.next_day();
    }
    days
}

/// `2026-12-02`: a date as the API writes it (ISO 8601, four-digit year).
pub fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Reads exactly `YYYY-MM-DD` (a real calendar date); `None` for anything else.
pub fn parse_date(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = bytes.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
    let day = u8::try_from(digits(8..10)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

fn serialize_date<S: serde::Serializer>(date: &Date, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_date(*date))
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn missing_days_are_filled_with_zeros_oldest_first() {
        let stored = [
            DailyFigures {
                date: date!(2026 - 02 - 27),
                orders: 2,
                revenue: Money::from_cents(1_999),
            },
            DailyFigures {
                date: date!(2026 - 03 - 01),
                orders: 1,
                revenue: Money::ZERO,
            },
            // Outside the range: left out.
            DailyFigures {
                date: date!(2026 - 03 - 05),
                orders: 9,
                revenue: Money::from_cents(1),
            },
        ];
        let days = fill_days(date!(2026 - 02 - 26), date!(2026 - 03 - 02), &stored);
        assert_eq!(
            days,
            vec![
                DailyFigures::zero(date!(2026 - 02 - 26)),
                stored[0],
                DailyFigures::zero(date!(2026 - 02 - 28)),
                stored[1],
                DailyFigures::zero(date!(2026 - 03 - 02)),
            ]
        );
        assert_eq!(
            fill_days(date!(2026 - 03 - 02), date!(2026 - 03 - 02), &[]).len(),
            1
        );
        assert!(fill_days(date!(2026 - 03 - 03), date!(2026 - 03 - 02), &stored).is_empty());
    }

    #[test]
    fn a_day_is_written_and_read_as_yyyy_mm_dd() {
        let figures = DailyFigures {
            date: date!(2026 - 01 - 05),
            orders: 3,
            revenue: Money::from_cents(4_050),
        };
        assert_eq!(
            serde_json::to_string(&figures).expect("json"),
            r#"{"date":"2026-01-05","orders":3,"revenue":40.50}"#
        );
        assert_eq!(parse_date("2026-01-05"), Some(date!(2026 - 01 - 05)));
        assert_eq!(parse_date("2024-02-29"), Some(date!(2024 - 02 - 29)));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-05",
            "26-01-05",
            "2026/01/05",
            "+026-01-05",
            "2026-01-05T00:00:00Z",
            "",
            "2026-01-0x",
            "２０２６-01-05",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_order_counts_on_the_utc_day_of_its_creation() {
        let mut view: OrderView = serde_json::from_value(serde_json::json!({
            "orderId": Uuid::nil(),
            "customerName": "Ada",
            "customerEmail": "ada@example.com",
            "items": [],
            "totalAmount": 1,
            "currency": "EUR",
            "status": "pending",
            "cancellationReason": null,
            "shippingAddress": null,
            "createdAt": "2026-12-01T23:30:00-02:00",
            "updatedAt": "2026-12-01T23:30:00-02:00",
            "version": 1,
        }))
        .expect("view");
        assert_eq!(order_day(&view), date!(2026 - 12 - 02));
        view.created_at = time::macros::datetime!(2026-12-02 00:00 UTC);
        assert_eq!(order_day(&view), date!(2026 - 12 - 02));
        view.created_at = time::macros::datetime!(2026-12-01 23:59:59.999999 UTC);
        assert_eq!(order_day(&view), date!(2026 - 12 - 01));
    }
}
