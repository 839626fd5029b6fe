//! Migrations: stores written by earlier versions answer as new ones, and processes
//! starting together migrate once.

use ordo_domain::conformance::{daily_expected, daily_history, deleted};
use time::OffsetDateTime;
use time::macros::date;

use super::*;

async fn daily_of(store: &PgReadStore) -> Vec<DailyFigures> {
    store
        .daily(date!(2026 - 11 - 01), date!(2026 - 12 - 31))
        .await
        .expect("daily")
}

#[tokio::test]
async fn orders_stored_before_the_search_table_are_still_found() {
    // Two orders as the current schema stores them ...
    let mut f = Fixture::new().await;
    let (ada, gone) = (Uuid::now_v7(), Uuid::now_v7());
    let at = OffsetDateTime::now_utc();
    f.project(vec![
        (
            ada,
            1,
            created("Ada", "ada@example.com", "Analytical Engine", 100),
            at,
        ),
        (
            gone,
            1,
            created("Bob", "bob@example.com", "Steam Engine", 200),
            at,
        ),
        (gone, 2, deleted(), at),
    ])
    .await;
    // ... copied into a schema at migration 2, where the text was a column of orders.
    let (url, old) = testdb::fresh_url().await;
    let options = ConnectOptions::parse(&url).expect("url");
    let pool = options.pool().expect("pool");
    migrate(&pool, &options, "read_models", &MIGRATIONS[..2])
        .await
        .expect("schema 2");
    let client = testdb::raw_client().await;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{old}\".orders
                 SELECT o.order_id, o.version, o.deleted, o.doc, o.status, o.customer_email,
                        o.customer_name, o.total_cents, o.created_at, t.search_text
                 FROM \"{new}\".orders o LEFT JOIN \"{new}\".order_search t USING (order_id)",
            new = f.schema
        ))
        .await
        .expect("copy the orders");
    drop(pool);
    let store = PgReadStore::connect(&url).await.expect("migrate to 3");
    let found = |page: OrderPage| page.orders.iter().map(|v| v.order_id).collect::<Vec<_>>();
    let search = |term: &str| ListQuery {
        search: Some(term.into()),
        ..query()
    };
    assert_eq!(
        found(store.list(&search("engine")).await.expect("search")),
        vec![ada]
    );
    assert_eq!(
        found(store.list(&search("analytical")).await.expect("search")),
        vec![ada]
    );
    assert!(found(store.list(&search("steam")).await.expect("search")).is_empty());
    drop(store);
    testdb::drop_schema(&old).await;
    f.done().await;
}

#[tokio::test]
async fn orders_stored_before_the_daily_table_are_counted_by_its_migration() {
    let mut f = Fixture::new().await;
    f.project(daily_history()).await;
    // The orders copied into a schema at migration 3, before the daily table.
    let (url, old) = testdb::fresh_url().await;
    let options = ConnectOptions::parse(&url).expect("url");
    let pool = options.pool().expect("pool");
    migrate(&pool, &options, "read_models", &MIGRATIONS[..3])
        .await
        .expect("schema 3");
    drop(pool);
    let client = testdb::raw_client().await;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{old}\".orders SELECT * FROM \"{new}\".orders",
            new = f.schema
        ))
        .await
        .expect("copy the orders");
    let upgraded = PgReadStore::connect(&url).await.expect("migrate to 4");
    assert_eq!(daily_of(&upgraded).await, daily_expected());
    drop(upgraded);
    testdb::drop_schema(&old).await;
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_together_migrate_once() {
    let (url, schema) = testdb::fresh_url().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let events = crate::PgEventStore::connect(&url)
                .await
                .map(drop)
                .map_err(|e| e.to_string());
            let reads = PgReadStore::connect(&url)
                .await
                .map(drop)
                .map_err(|e| e.to_string());
            (events, reads)
        }));
    }
    for task in tasks {
        let (events, reads) = task.await.expect("task");
        events.expect("event store connect");
        reads.expect("read store connect");
    }
    let client = testdb::raw_client().await;
    let rows = client
        .query(
            &format!("SELECT component, version FROM \"{schema}\".schema_migrations ORDER BY 1, 2"),
            &[],
        )
        .await
        .expect("migrations");
    let applied: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        applied,
        [
            ("event_store".to_string(), 1),
            ("event_store".to_string(), 2),
            ("event_store".to_string(), 3),
            ("event_store".to_string(), 4),
            ("read_models".to_string(), 1),
            ("read_models".to_string(), 2),
            ("read_models".to_string(), 3),
            ("read_models".to_string(), 4),
            ("read_models".to_string(), 5),
        ]
    );
    testdb::drop_schema(&schema).await;
}
