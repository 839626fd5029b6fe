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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use serde_json::value::RawValue;
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
        let fields = top_fields(data.as_str())
            .map_err(|e| StoreError::Invalid(format!("OrderCreated payload: {e}")))?;
        if fields.contains_key(SEALED_FIELD) {
            return Ok(data.clone());
        }
        let erased = fields.get(ERASED_FIELD).is_some_and(|v| v.get() == "true");
        let email = fields
            .get("customerEmail")
            .and_then(|raw| serde_json::from_str::<Option<String>>(raw.get()).ok())
            .flatten();
        let mut out = JsonObject::with_capacity(data.as_str().len() + 160);
        for (name, value) in &fields {
            if !PERSONAL_FIELDS.contains(name) && *name != ERASED_FIELD {
                out.field(name, value.get());
            }
        }
        let Some(email) = email.filter(|_| !erased) else {
            // Nothing to seal: the erased shape (a migration of an event whose customer
            // was already erased) is stored as it is.
            return out.erased().finish();
        };
        let mut personal = JsonObject::with_capacity(256);
        for name in PERSONAL_FIELDS {
            personal.field(name, fields.get(name).map_or("null", |v| v.get()));
        }
        let plaintext = zeroize::Zeroizing::new(personal.text());
        let subject = self.ring.subject(&email);
        let (key_id, key) = self.ring.sealing_key(&subject).await.map_err(failure)?;
        let sealed =
            seal(&key, key_id, event_id, plaintext.as_bytes()).map_err(|e| failure(e.into()))?;
        let reference = format!(
            "{{\"key\":\"{key_id}\",\"sealed\":\"{}\"}}",
            BASE64.encode(sealed)
        );
        out.field(SEALED_FIELD, &reference);
        out.finish()
    }

    /// Opens every sealed event of `events`, with one key-store call for the keys the
    /// cache does not hold.
    async fn open_all(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Each sealed event: where it is, its key, the ciphertext, and the opened
        // payload but its personal fields (one parse of each payload).
        let mut sealed: Vec<(usize, Uuid, Vec<u8>, JsonObject)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if !is_sealed_type(&event.event_type, event.schema_version) {
                continue;
            }
            let fields = top_fields(event.data.as_str())
                .map_err(|e| corrupt(event.event_id, &format!("payload: {e}")))?;
            let Some(reference) = fields.get(SEALED_FIELD) else {
                // Stored already in the erased shape.
                continue;
            };
            let reference: SealedRef<'_> = serde_json::from_str(reference.get())
                .map_err(|_| corrupt(event.event_id, "personalData is not {key, sealed}"))?;
            let key_id = Uuid::parse_str(reference.key)
                .map_err(|_| corrupt(event.event_id, "personalData.key is not a key id"))?;
            let bytes = BASE64
                .decode(reference.sealed)
                .map_err(|_| corrupt(event.event_id, "personalData.sealed is not base64"))?;
            let mut rest = JsonObject::with_capacity(event.data.as_str().len());
            for (name, value) in &fields {
                if *name != SEALED_FIELD {
                    rest.field(name, value.get());
                }
            }
            sealed.push((i, key_id, bytes, rest));
        }
        if sealed.is_empty() {
            return Ok(events);
        }
        let mut ids: Vec<Uuid> = sealed.iter().map(|s| s.1).collect();
        ids.sort_unstable();
        ids.dedup();
        let keys = self.ring.opening_keys(&ids).await.map_err(failure)?;
        for (i, key_id, bytes, rest) in sealed {
            let event = &mut events[i];
            let plain = match keys.get(&key_id) {
                Some(key) => Some(open(key, key_id, event.event_id, &bytes).map_err(|_| {
                    corrupt(event.event_id, "personal data does not open with its key")
                })?),
                None => None,
            };
            event.data = opened_payload(rest, plain.as_deref().map(Vec::as_slice))
                .map_err(|e| corrupt(event.event_id, &e))?;
        }
        Ok(events)
    }
}

/// `personalData` as stored.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedRef<'a> {
    #[serde(borrow)]
    key: &'a str,
    #[serde(borrow)]
    sealed: &'a str,
}

/// A payload's top-level fields, their values as raw JSON text: no tree is built, and
/// the values are copied back as they were. Field names are borrowed, so a name written
/// with escapes is refused (none of ordo's is).
fn top_fields(text: &str) -> Result<BTreeMap<&str, &RawValue>, serde_json::Error> {
    serde_json::from_str(text)
}

/// The opened payload: `rest` (the stored fields but `personalData`) with the fields of
/// `plain` (the opened personal data), or the erased shape without it.
fn opened_payload(mut rest: JsonObject, plain: Option<&[u8]>) -> Result<Payload, String> {
    match plain {
        Some(plain) => {
            let text =
                std::str::from_utf8(plain).map_err(|_| "opened personal data is not text")?;
            let personal = top_fields(text).map_err(|_| "opened personal data is not an object")?;
            for name in PERSONAL_FIELDS {
                rest.field(name, personal.get(name).map_or("null", |v| v.get()));
            }
            rest.finish().map_err(|e| e.to_string())
        }
        None => rest.erased().finish().map_err(|e| e.to_string()),
    }
}

/// A JSON object written field by field from raw values. Names are ordo's own field
/// names (or borrowed unescaped from a parsed payload), so they need no escaping.
struct JsonObject(String);

impl JsonObject {
    fn with_capacity(capacity: usize) -> Self {
        let mut text = String::with_capacity(capacity);
        text.push('{');
        JsonObject(text)
    }

    fn field(&mut self, name: &str, raw_value: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(name);
        self.0.push_str("\":");
        self.0.push_str(raw_value);
    }

    /// The personal fields null, and the erased mark.
    fn erased(mut self) -> Self {
        for name in PERSONAL_FIELDS {
            self.field(name, "null");
        }
        self.field(ERASED_FIELD, "true");
        self
    }

    fn text(mut self) -> String {
        self.0.push('}');
        self.0
    }

    /// The payload (checked to be one JSON value, as every payload is).
    fn finish(self) -> Result<Payload, StoreError> {
        Payload::from_json(self.text()).map_err(|e| StoreError::Invalid(e.to_string()))
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
