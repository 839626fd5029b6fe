//! Bulk mode: deferred indexes and names, and a finish that can run again.

use super::*;

/// The index definitions of the fixture's schema, sorted.
async fn index_defs(f: &Fixture) -> Vec<String> {
    let client = f.store.pool.get().await.expect("client");
    let mut defs: Vec<String> = client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1",
            &[&f.schema],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    defs.sort();
    defs
}

#[tokio::test]
async fn a_finish_that_stopped_half_way_can_be_run_again() {
    let mut f = Fixture::new().await;
    let before = index_defs(&f).await;
    f.store.begin_bulk().await.expect("bulk mode");
    let at = datetime!(2026-01-02 03:04:05 UTC);
    f.project(vec![(
        Uuid::now_v7(),
        1,
        created("Ada", "ada@example.com", "Analytical Engine", 12_000),
        at,
    )])
    .await;
    // The indexes are built one transaction at a time: a finish that failed after
    // the first left it behind.
    let first = bulk_state(&f.store.bulk)
        .as_ref()
        .and_then(|defs| defs.first().cloned())
        .expect("deferred indexes");
    f.store
        .pool
        .get()
        .await
        .expect("client")
        .batch_execute(&first)
        .await
        .expect("build one index");
    f.store.finish_bulk().await.expect("finish");
    assert_eq!(index_defs(&f).await, before);
    assert_eq!(
        f.store.top_customers(10).await.expect("top")[0].customer_name,
        "Ada"
    );
    f.done().await;
}

#[tokio::test]
async fn a_bulk_load_defers_the_indexes_and_names_and_then_answers_as_usual() {
    let mut f = Fixture::new().await;
    let before = index_defs(&f).await;
    f.store
        .begin_bulk()
        .await
        .expect("bulk mode on an empty store");
    let during = index_defs(&f).await;
    assert!(
        during.len() < before.len(),
        "secondary indexes dropped: {during:?}"
    );
    let on = |table: &str| format!(".{table} USING");
    assert!(
        during
            .iter()
            .filter(|d| d.contains(&on("orders")) || d.contains(&on("top_customers")))
            .all(|d| d.contains("_pkey ON")),
        "only the primary keys of orders and top customers stay: {during:?}"
    );
    let at = datetime!(2026-01-02 03:04:05 UTC);
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    f.project(vec![
        (
            a,
            1,
            created("Ada", "ada@example.com", "Analytical Engine", 12_000),
            at,
        ),
        (
            b,
            1,
            created("Ada L.", "ada@example.com", "Difference Engine", 5_000),
            at + time::Duration::SECOND,
        ),
        (c, 1, created("Bob", "bob@example.com", "Loom", 700), at),
    ])
    .await;
    f.project(vec![(b, 2, cancelled(), at + time::Duration::MINUTE)])
        .await;
    f.store.finish_bulk().await.expect("finish");
    f.store
        .finish_bulk()
        .await
        .expect("finishing twice is harmless");
    assert_eq!(
        index_defs(&f).await,
        before,
        "every index is back as the migrations made it"
    );

    let search = ListQuery {
        search: Some("engine".into()),
        ..query()
    };
    assert_eq!(f.store.list(&search).await.expect("search").total, 2);
    let top = f.store.top_customers(10).await.expect("top");
    assert_eq!(top[0].customer_email, "ada@example.com");
    // Ada's newest order is cancelled: the name comes from the one still counted.
    assert_eq!(top[0].customer_name, "Ada");
    assert_eq!(top[0].order_count, 1);
    assert!(
        f.store.begin_bulk().await.is_err(),
        "only an empty store loads in bulk"
    );
    f.done().await;
}
