//! Events in their old shapes, stored, load for commands and history like modern ones
//! (the fixtures are the domain crate's: see ordo-domain/tests/evolution.rs).

use std::sync::Arc;

use ordo_app::{AsOf, CommandContext, OrderService};
use ordo_es::{EventStore, ExpectedVersion, InMemoryStore, NewEvent};
use ordo_testkit::recorded_fixture;

#[tokio::test]
async fn old_events_in_a_store_load_for_commands_and_history() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    for event in recorded_fixture("orders-v1.json") {
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
