//! What only PostgreSQL shows: the query plans it picks, and text it cannot store. What
//! the queries answer is the conformance suite's.

use super::*;

#[tokio::test]
async fn a_search_in_a_table_of_realistic_size_is_served_from_the_trigram_index() {
    let mut f = Fixture::new().await;
    let at = datetime!(2026-04-01 00:00 UTC);
    f.project(vec![(
        Uuid::now_v7(),
        1,
        created("Max", "max@shop.example", "Green Mug", 1000),
        at,
    )])
    .await;
    // The planner serves a search from the trigram index instead of reading every row.
    let client = testdb::raw_client().await;
    let plan = client
        .simple_query(&format!(
            "CREATE TEMP TABLE filler AS SELECT gen_random_uuid() AS id, i FROM generate_series(1, 5000) AS i;
                 INSERT INTO \"{s}\".orders (order_id, version, deleted, doc, status, customer_email, customer_name,
                     total_cents, created_at)
                 SELECT id, 1, false, '{{}}', 'pending', 'filler' || i || '@example.com', 'Filler', i, now()
                 FROM filler;
                 INSERT INTO \"{s}\".order_search (order_id, search_text)
                 SELECT id, 'filler ' || md5(i::text) FROM filler;
                 ANALYZE \"{s}\".orders;
                 ANALYZE \"{s}\".order_search;
                 EXPLAIN SELECT order_id FROM \"{s}\".orders o WHERE NOT o.deleted AND o.order_id IN
                     (SELECT t.order_id FROM \"{s}\".order_search t WHERE t.search_text LIKE '%green mug%')",
            s = f.schema
        ))
        .await
        .expect("explain");
    let plan: String = plan
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        plan.contains("order_search_text"),
        "search does not use the trigram index:\n{plan}"
    );
    f.done().await;
}

/// PostgreSQL's text cannot hold NUL: a parked event's error keeps the rest of its text
/// with U+FFFD in its place (the conformance suite accepts either form).
#[tokio::test]
async fn a_nul_in_a_parked_events_error_is_stored_as_the_replacement_character() {
    let f = Fixture::new().await;
    let origin = Checkpoint::origin(1);
    let mut to = origin.clone();
    to.advance(&ordo_es::Position::new(0, 1, 1));
    let parked = ParkedEvent {
        position: "0.1.1".into(),
        event_id: Uuid::now_v7(),
        stream_id: "stream-1".into(),
        version: 1,
        event_type: "OrderCreated".into(),
        error: "nul \0 inside".into(),
        parked_at: ordo_es::now_micros(),
    };
    f.store.park("p", parked, &origin, &to).await.expect("park");
    let stored = f.store.parked("p").await.expect("parked");
    assert_eq!(stored[0].error, "nul \u{FFFD} inside");
    f.done().await;
}
