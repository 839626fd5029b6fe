//! Old event shapes load, fold and project exactly like their modern equivalents.

use std::collections::HashMap;

use ordo_domain::{OrderEvent, ReadModelBatch, ViewState};
use ordo_es::DomainEvent;
use ordo_testkit::recorded_fixture;

#[test]
fn every_old_event_decodes_to_its_modern_equivalent() {
    let old = recorded_fixture("orders-v1.json");
    let new = recorded_fixture("orders-v2.json");
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
        3,
        "new events are written in the current version (sealed: see privacy::sealed)"
    );
}

#[test]
fn old_and_new_events_project_into_the_same_read_models() {
    let old = ReadModelBatch::fold(&recorded_fixture("orders-v1.json"), HashMap::new())
        .expect("old folds");
    let new = ReadModelBatch::fold(&recorded_fixture("orders-v2.json"), HashMap::new())
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

#[test]
fn an_e_mail_stored_with_capitals_reads_and_projects_lower_cased() {
    for fixture in ["orders-v1.json", "orders-v2.json"] {
        let stored = recorded_fixture(fixture);
        let mut capitals = stored.clone();
        for event in &mut capitals {
            let mut data = event.data.to_value().expect("json");
            if let Some(email) = data.get_mut("customerEmail") {
                let upper = email.as_str().expect("text").to_uppercase();
                *email = upper.into();
            }
            event.data = data.into();
        }
        assert_ne!(capitals[0].data, stored[0].data, "{fixture}");
        let lower = ReadModelBatch::fold(&stored, HashMap::new()).expect("folds");
        let upper = ReadModelBatch::fold(&capitals, HashMap::new()).expect("folds");
        assert_eq!(upper.views, lower.views, "{fixture}");
        assert_eq!(upper.customers, lower.customers, "{fixture}");
        assert_eq!(upper.customer_deltas, lower.customer_deltas, "{fixture}");
        let ada = upper.views[0].1.live().expect("live");
        assert_eq!(ada.customer_email.as_deref(), Some("ada@example.com"));
    }
}
