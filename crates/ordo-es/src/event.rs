//! Events as they are stored: the envelope around a domain event.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// An event about to be appended.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: OffsetDateTime,
    pub data: Value,
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
    pub data: Value,
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
    fn encode(&self) -> Value;
    /// Reads a stored payload of any supported schema version.
    fn decode(event_type: &str, schema_version: u32, data: &Value) -> Result<Self, DecodeError>;
}
