//! Old event shapes load, fold and project exactly like their modern equivalents.

use std::collections::HashMap;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo_domain::{OrderEvent, ReadModelBatch, ViewState};
use ordo_es::{DomainEvent, Metadata, Position, RecordedEvent, StreamId};

fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
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

#[test]
fn every_old_event_decodes_to_its_modern_equivalent() {
    let old = recorded(&fixture("orders-v1.json"));
    let new = recorded(&fixture("orders-v2.json"));
    assert_eq!(old.len(), new.len());
    for (o, n) in old.iter().zip(&new) {
        let from_old =
            OrderEvent::decode(&o.event_type, o.schema_version, &o.data).expect("old decodes");
        let from_new =
            OrderEvent::decode(&n.event_type, n.schema_version, &n.data).expect("new decodes");
        assert_eq!(from_old, from_new, "{} v{}", o.event_type, o.schema_version);
    }
    let created = OrderEvent::decode("OrderCreated", 2, &new[0].data).expect("decode");
    assert_eq!(
        created.schema_version(),
        2,
        "new events are written in the current version"
    );
}

#[test]
fn old_and_new_events_project_into_the_same_read_models() {
    let old = ReadModelBatch::fold(&recorded(&fixture("orders-v1.json")), HashMap::new())
        .expect("old folds");
    let new = ReadModelBatch::fold(&recorded(&fixture("orders-v2.json")), HashMap::new())
        .expect("new folds");
    assert_eq!(old.views, new.views);
    assert_eq!(old.status_delta, new.status_delta);
    assert_eq!(old.revenue_delta, new.revenue_delta);
    assert_eq!(old.customers, new.customers);
    let live: Vec<&ViewState> = old.views.iter().map(|(_, s)| s).collect();
    assert!(matches!(live[2], ViewState::Deleted { version: 2 }));
    let ada = live[0].live().expect("live");
    assert_eq!(ada.total_amount.to_string(), "44.98");
    assert_eq!(
        ada.shipping_address.as_ref().expect("address").city,
        "London"
    );
}
