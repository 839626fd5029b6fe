//! Events as an older ordo stored them, read from the JSON fixture files the evolution
//! tests share (crates/ordo-domain/tests/fixtures).

use std::path::Path;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo_es::{Metadata, Position, RecordedEvent, StreamId};

/// The events of the fixture file `name` (a JSON array of stored events with
/// `streamId`, `version`, `eventType`, `schemaVersion`, `occurredAt` and `data`), as the
/// event store would give them back: one partition, positions in file order.
pub fn recorded_fixture(name: &str) -> Vec<RecordedEvent> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ordo-domain/tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    let events: Vec<Value> = serde_json::from_str(&text).expect("fixture json");
    events
        .iter()
        .enumerate()
        .map(|(i, e)| RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id: StreamId::new(e["streamId"].as_str().expect("streamId")),
            aggregate_type: "Order".into(),
            version: e["version"].as_u64().expect("version"),
            position: Position::new(0, i as u64 + 1, 0),
            event_type: e["eventType"].as_str().expect("type").into(),
            schema_version: e["schemaVersion"].as_u64().expect("schema") as u32,
            occurred_at: OffsetDateTime::parse(e["occurredAt"].as_str().expect("time"), &Rfc3339)
                .expect("rfc3339"),
            data: e["data"].clone().into(),
            metadata: Metadata::default(),
        })
        .collect()
}
