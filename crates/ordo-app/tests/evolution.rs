//! Events in their old shapes, stored, load for commands and history like modern ones
//! (the fixtures are the domain crate's: see ordo-domain/tests/evolution.rs).

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo_app::{AsOf, CommandContext, OrderService};
use ordo_es::{
    EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, Position, RecordedEvent,
    StreamId,
};

fn fixture(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/../ordo-domain/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture file");
    serde_json::from_str(&text).expect("fixture json")
}

fn recorded(events: &[Value]) -> Vec<RecordedEvent> {
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

#[tokio::test]
async fn old_events_in_a_store_load_for_commands_and_history() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    for event in recorded(&fixture("orders-v1.json")) {
        store
            .append(
                &event.stream_id,
                ExpectedVersion::Exact(event.version - 1),
                vec![NewEvent {
                    event_id: event.event_id,
                    aggregate_type: event.aggregate_type,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    occurred_at: event.occurred_at,
                    data: event.data,
                    metadata: event.metadata,
                }],
            )
            .await
            .expect("append old event");
    }
    let service = OrderService::new(store);
    let ada = uuid::Uuid::parse_str("0193a0c0-0000-7000-8000-000000000001").expect("id");
    let past = service
        .view_as_of(ada, AsOf::Version(1))
        .await
        .expect("history of an old order");
    assert_eq!(past.total_amount.to_string(), "44.98");
    // Commands decide on state folded from old events.
    let next = service
        .update_status(
            ada,
            ordo_domain::Status::Processing,
            CommandContext::default(),
        )
        .await
        .expect("command on an old order");
    assert_eq!(next.version, 3);
}
