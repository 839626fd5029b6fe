//! Events as they are stored: the envelope around a domain event.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::position::Position;

/// The id of one event stream: one aggregate instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who and what caused an event. Stored in the envelope, never in the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request body that carried the idempotency key, so that a
    /// replay with another body can be told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// An event's payload: JSON text, checked to be one well-formed JSON value whenever a
/// `Payload` is made. Domain events are serialised straight to text, stored as text and
/// decoded straight from it into their types: no `serde_json::Value` tree on the way in
/// or out (building and freeing one cost about a third of a replay's time). Equality is
/// JSON equality (key order and spacing do not count), as stores may re-format the text.
#[derive(Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Serialises `value` as a payload.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Payload)
    }

    /// A payload from stored text; an error when the text is not one JSON value.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Payload)
    }

    /// `null`.
    pub fn null() -> Self {
        Payload(RawValue::NULL.to_owned())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Decodes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The payload as a JSON value (for upcasters and tools that work on the document).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        self.decode()
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        // A `Value` always serialises (its map keys are strings), and the text it
        // serialises to is the payload: nothing to check.
        Payload::encode(&value).unwrap_or_else(|_| Payload::null())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
            || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value().is_ok_and(|v| &v == other)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Written as the JSON it holds (not as a string).
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Payload)
    }
}

/// An event about to be appended.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: OffsetDateTime,
    pub data: Payload,
    pub metadata: Metadata,
}

/// An event as the store gives it back.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    pub aggregate_type: String,
    /// 1-based, per stream, contiguous.
    pub version: u64,
    pub position: Position,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: OffsetDateTime,
    pub data: Payload,
    pub metadata: Metadata,
}

/// An event that could not be turned back into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type:?}")]
    UnknownType { event_type: String },
    #[error("unsupported schema version {schema_version} of {event_type}")]
    UnsupportedVersion {
        event_type: String,
        schema_version: u32,
    },
    #[error("cannot upcast {event_type} from schema version {from_version}: {reason}")]
    Upcast {
        event_type: String,
        from_version: u32,
        reason: String,
    },
    #[error("malformed {event_type} payload: {source}")]
    Malformed {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A domain event: a fact, named in the past tense, with a stable type name and a schema
/// version from day one. `decode` receives the stored schema version so that old shapes
/// can be upcast to the current one.
pub trait DomainEvent: Sized + Send + Sync + fmt::Debug + Clone + 'static {
    /// The stored type name, e.g. `OrderCreated`. Never change it once events exist.
    fn event_type(&self) -> &'static str;
    /// The schema version this code writes.
    fn schema_version(&self) -> u32;
    /// The payload, without type or version.
    fn encode(&self) -> Payload;
    /// Reads a stored payload of any supported schema version.
    fn decode(event_type: &str, schema_version: u32, data: &Payload) -> Result<Self, DecodeError>;
}
