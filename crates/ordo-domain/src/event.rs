//! The order's events: facts, in the past tense, each with a type name and a schema version.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use ordo_es::{DecodeError, DomainEvent, Payload};

use crate::money::Money;
use crate::values::{Currency, CustomerEmail, LineItem, ShippingAddress, Status};

/// `OrderCreated`, schema version 3 (see `upcast` for the history). Totals are decided
/// once, here, and never recomputed by a reader.
///
/// The customer's name, e-mail and address are personal data: the event store holds
/// them sealed under the customer's key (`privacy::sealed`), and this is the opened
/// form. When the key was destroyed (the customer's personal data erased), the three are
/// `None` and `personal_data_erased` is true; an order always has them otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderCreated {
    pub customer_name: Option<String>,
    pub customer_email: Option<CustomerEmail>,
    pub currency: Currency,
    pub items: Vec<LineItem>,
    pub total_amount: Money,
    pub shipping_address: Option<ShippingAddress>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub personal_data_erased: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderStatusChanged {
    pub from: Status,
    pub to: Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderCancelled {
    pub reason: Option<String>,
    pub previous_status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OrderDeleted {}

/// Everything that can happen to an order.
#[allow(
    clippy::large_enum_variant,
    reason = "built once per command and moved a few times; boxing would only add an allocation"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    Created(OrderCreated),
    StatusChanged(OrderStatusChanged),
    Cancelled(OrderCancelled),
    Deleted(OrderDeleted),
}

impl OrderEvent {
    pub const CREATED: &'static str = "OrderCreated";
    pub const STATUS_CHANGED: &'static str = "OrderStatusChanged";
    pub const CANCELLED: &'static str = "OrderCancelled";
    pub const DELETED: &'static str = "OrderDeleted";
    /// OrderCreated's current schema version (see `upcast` for the history).
    pub const CREATED_VERSION: u32 = 3;

    /// The schema version this code writes for `event_type`.
    pub fn current_version(event_type: &str) -> u32 {
        if event_type == Self::CREATED {
            Self::CREATED_VERSION
        } else {
            1
        }
    }
}

fn encode<T: Serialize>(payload: &T) -> Payload {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no
    // custom serialisers that error.
    Payload::encode(payload).unwrap_or_else(|_| Payload::null())
}

fn malformed(event_type: &str) -> impl FnOnce(serde_json::Error) -> DecodeError + '_ {
    move |source| DecodeError::Malformed {
        event_type: event_type.to_string(),
        source,
    }
}

/// A stored payload as the decoder reads it: a payload of the current schema version
/// straight from its text, one of an older version as the upcasters left it.
enum Source<'a> {
    Text(&'a Payload),
    Upcast(Value),
}

impl Source<'_> {
    fn read<T: for<'de> Deserialize<'de>>(&self, event_type: &str) -> Result<T, DecodeError> {
        match self {
            Source::Text(payload) => payload.decode(),
            Source::Upcast(value) => T::deserialize(value),
        }
        .map_err(malformed(event_type))
    }
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Created(_) => Self::CREATED,
            OrderEvent::StatusChanged(_) => Self::STATUS_CHANGED,
            OrderEvent::Cancelled(_) => Self::CANCELLED,
            OrderEvent::Deleted(_) => Self::DELETED,
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            OrderEvent::Created(_) => Self::CREATED_VERSION,
            _ => 1,
        }
    }

    fn encode(&self) -> Payload {
        match self {
            OrderEvent::Created(e) => encode(e),
            OrderEvent::StatusChanged(e) => encode(e),
            OrderEvent::Cancelled(e) => encode(e),
            OrderEvent::Deleted(e) => encode(e),
        }
    }

    fn decode(event_type: &str, schema_version: u32, data: &Payload) -> Result<Self, DecodeError> {
        let current = Self::current_version(event_type);
        let data = if schema_version == current {
            Source::Text(data)
        } else {
            let document = data.to_value().map_err(malformed(event_type))?;
            Source::Upcast(crate::upcast::chain().upcast(
                event_type,
                schema_version,
                current,
                &document,
            )?)
        };
        Ok(match event_type {
            Self::CREATED => OrderEvent::Created(data.read(event_type)?),
            Self::STATUS_CHANGED => OrderEvent::StatusChanged(data.read(event_type)?),
            Self::CANCELLED => OrderEvent::Cancelled(data.read(event_type)?),
            Self::DELETED => OrderEvent::Deleted(data.read(event_type)?),
            other => {
                return Err(DecodeError::UnknownType {
                    event_type: other.to_string(),
                });
            }
        })
    }
}
