//! The event store as everything above it sees it: personal data sealed on the way in,
//! opened on the way out.
//!
//! `OrderCreated` from schema version 3 is stored as
//!
//! ```json
//! {"currency": "EUR", "items": [...], "totalAmount": 12.50,
//!  "personalData": {"key": "<data key id>", "sealed": "<base64url: nonce, ciphertext, tag>"}}
//! ```
//!
//! where the sealed text is `{"customerName", "customerEmail", "shippingAddress"}` under
//! the customer's data key, bound to the event's id and the key's id. Read back, the
//! payload is the opened form the domain decodes: the three fields in clear, or, when
//! the key was destroyed, `null` with `"personalDataErased": true`. A payload of an
//! older schema version (stored before encryption, not yet migrated) passes through as
//! it is stored, for the upcasters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use serde_json::{Map, Value};
use uuid::Uuid;

use ordo_es::{
    Appended, Checkpoint, EventStore, ExpectedVersion, NewEvent, Payload, Position, RecordedEvent,
    StoreError, StreamId,
};

use super::crypto::{open, seal};
use super::ring::{KeyRing, KeyRingError};
use crate::event::OrderEvent;

/// The personal fields of an `OrderCreated`, in the order they are sealed.
pub const PERSONAL_FIELDS: [&str; 3] = ["customerName", "customerEmail", "shippingAddress"];
/// The field that holds them sealed in a stored `OrderCreated`.
pub const SEALED_FIELD: &str = "personalData";
/// The field an opened `OrderCreated` carries when its key is gone.
pub const ERASED_FIELD: &str = "personalDataErased";
/// The first schema version of `OrderCreated` stored sealed.
pub const SEALED_SINCE: u32 = 3;

fn failure(error: KeyRingError) -> StoreError {
    match error {
        KeyRingError::Store(e) => StoreError::Unavailable(Box::new(e)),
        other => StoreError::Other(Box::new(other)),
    }
}

fn corrupt(event_id: Uuid, what: &str) -> StoreError {
    StoreError::Corrupt(format!("event {event_id}: {what}"))
}

/// Whether this stored event carries personal data sealed.
fn is_sealed_type(event_type: &str, schema_version: u32) -> bool {
    event_type == OrderEvent::CREATED && schema_version >= SEALED_SINCE
}

/// An [`EventStore`] that seals personal data before `inner` stores it and opens it
/// after `inner` reads it.
#[derive(Debug)]
pub struct SealedEventStore {
    inner: Arc<dyn EventStore>,
    ring: Arc<KeyRing>,
}

impl SealedEventStore {
    pub fn new(inner: Arc<dyn EventStore>, ring: Arc<KeyRing>) -> Self {
        Self { inner, ring }
    }

    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// The stored form of one opened `OrderCreated` payload: its personal fields sealed
    /// under the customer's key. Also what the one-time migration writes for events
    /// stored before encryption (after upcasting them to the current version).
    pub async fn seal_payload(
        &self,
        event_id: Uuid,
        data: &Payload,
    ) -> Result<Payload, StoreError> {
        let mut document = data
            .to_value()
            .map_err(|e| StoreError::Invalid(format!("OrderCreated payload: {e}")))?;
        let Some(object) = document.as_object_mut() else {
            return Err(StoreError::Invalid(
                "OrderCreated payload is not an object".into(),
            ));
        };
        if object.contains_key(SEALED_FIELD) {
            return Ok(data.clone());
        }
        let mut personal = Map::new();
        for field in PERSONAL_FIELDS {
            personal.insert(
                field.to_owned(),
                object.remove(field).unwrap_or(Value::Null),
            );
        }
        let erased = object
            .remove(ERASED_FIELD)
            .is_some_and(|v| v == Value::Bool(true));
        let email = personal["customerEmail"].as_str().map(str::to_owned);
        let Some(email) = email.filter(|_| !erased) else {
            // Nothing to seal: the erased shape (a migration of an event whose customer
            // was already erased) is stored as it is.
            for field in PERSONAL_FIELDS {
                object.insert(field.to_owned(), Value::Null);
            }
            object.insert(ERASED_FIELD.to_owned(), Value::Bool(true));
            return Ok(Payload::from(document));
        };
        let subject = self.ring.subject(&email);
        let (key_id, key) = self.ring.sealing_key(&subject).await.map_err(failure)?;
        let plaintext = zeroize::Zeroizing::new(
            serde_json::to_vec(&Value::Object(personal))
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
        );
        let sealed = seal(&key, key_id, event_id, &plaintext).map_err(|e| failure(e.into()))?;
        object.insert(
            SEALED_FIELD.to_owned(),
            serde_json::json!({"key": key_id.to_string(), "sealed": BASE64.encode(sealed)}),
        );
        Ok(Payload::from(document))
    }

    /// Opens every sealed event of `events`, with one key-store call for the keys the
    /// cache does not hold.
    async fn open_all(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut documents: Vec<(usize, Value, Uuid)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if !is_sealed_type(&event.event_type, event.schema_version) {
                continue;
            }
            let document = event
                .data
                .to_value()
                .map_err(|e| corrupt(event.event_id, &format!("payload: {e}")))?;
            let Some(sealed) = document.get(SEALED_FIELD) else {
                // Stored already in the erased shape.
                continue;
            };
            let key_id = sealed
                .get("key")
                .and_then(Value::as_str)
                .and_then(|k| Uuid::parse_str(k).ok())
                .ok_or_else(|| corrupt(event.event_id, "personalData.key is not a key id"))?;
            documents.push((i, document, key_id));
        }
        if documents.is_empty() {
            return Ok(events);
        }
        let mut ids: Vec<Uuid> = documents.iter().map(|d| d.2).collect();
        ids.sort_unstable();
        ids.dedup();
        let keys = self.ring.opening_keys(&ids).await.map_err(failure)?;
        for (i, mut document, key_id) in documents {
            let event = &mut events[i];
            let object = document
                .as_object_mut()
                .ok_or_else(|| corrupt(event.event_id, "payload is not an object"))?;
            let sealed = object.remove(SEALED_FIELD).unwrap_or(Value::Null);
            match keys.get(&key_id) {
                Some(key) => {
                    let bytes = sealed
                        .get("sealed")
                        .and_then(Value::as_str)
                        .and_then(|s| BASE64.decode(s).ok())
                        .ok_or_else(|| {
                            corrupt(event.event_id, "personalData.sealed is not base64")
                        })?;
                    let plain = open(key, key_id, event.event_id, &bytes).map_err(|_| {
                        corrupt(event.event_id, "personal data does not open with its key")
                    })?;
                    let Ok(Value::Object(personal)) = serde_json::from_slice::<Value>(&plain)
                    else {
                        return Err(corrupt(
                            event.event_id,
                            "opened personal data is not an object",
                        ));
                    };
                    object.extend(personal);
                }
                None => {
                    for field in PERSONAL_FIELDS {
                        object.insert(field.to_owned(), Value::Null);
                    }
                    object.insert(ERASED_FIELD.to_owned(), Value::Bool(true));
                }
            }
            event.data = Payload::from(document);
        }
        Ok(events)
    }
}

#[async_trait::async_trait]
impl EventStore for SealedEventStore {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        for event in &mut events {
            if is_sealed_type(&event.event_type, event.schema_version) {
                event.data = self.seal_payload(event.event_id, &event.data).await?;
            }
        }
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stream(stream, from_version, limit).await?;
        self.open_all(events).await
    }

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_all(after, limit).await?;
        self.open_all(events).await
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        self.inner.count_after(after).await
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        self.inner.head().await
    }

    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        self.inner.event_id_at(position).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// The key ids a batch of stored events was sealed under (for tests and tools).
pub fn key_ids(events: &[RecordedEvent]) -> HashMap<Uuid, Uuid> {
    events
        .iter()
        .filter(|e| is_sealed_type(&e.event_type, e.schema_version))
        .filter_map(|e| {
            let document = e.data.to_value().ok()?;
            let key = document.get(SEALED_FIELD)?.get("key")?.as_str()?;
            Some((e.event_id, Uuid::parse_str(key).ok()?))
        })
        .collect()
}
