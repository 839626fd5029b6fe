use ordo_domain::read_store::Sort;
use rusqlite::{params, params_from_iter};
use time::OffsetDateTime;

use super::query::{page_sql, trigram_query};
use super::schema::SEARCH_INDEXES;
use super::write::{apply_customer, apply_view};
use super::*;

/// Every list query's plan, as SQLite reports it.
fn plan(conn: &Connection, query: &ListQuery) -> String {
    let (sql, params) = page_sql(query);
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| r.get::<_, String>(3))
        .expect("plan rows")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("plan");
    rows.join("\n")
}

#[test]
fn list_queries_are_served_from_indexes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("read.db");
    let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
    migrate(&mut conn, SCHEMA).expect("schema");
    // No ANALYZE, as in service (the store never runs it): statistics of empty tables
    // would have SQLite walk a whole index for every search candidate.
    let status = Some(ordo_domain::Status::Confirmed);
    let cases = [
        ListQuery::default(),
        ListQuery {
            sort: Sort::CreatedAt,
            ..ListQuery::default()
        },
        ListQuery {
            sort: Sort::TotalAmount,
            ..ListQuery::default()
        },
        ListQuery {
            sort: Sort::TotalAmountDesc,
            ..ListQuery::default()
        },
        ListQuery {
            status,
            ..ListQuery::default()
        },
        ListQuery {
            customer_email: Some("ada@example.com".into()),
            ..ListQuery::default()
        },
        ListQuery {
            min_total: Some(Money::from_cents(100)),
            sort: Sort::TotalAmount,
            ..ListQuery::default()
        },
        ListQuery {
            search: Some("engine".into()),
            ..ListQuery::default()
        },
    ];
    for query in cases {
        let plan = plan(&conn, &query);
        let first = plan.lines().next().unwrap_or("");
        // A full scan of orders is "SCAN o" with no index; an index walked in sort
        // order stops after one page.
        assert!(
            !plan
                .lines()
                .any(|l| l == "SCAN o" || (l.starts_with("SCAN o ") && !l.contains("USING"))),
            "{query:?} scans every order:\n{plan}"
        );
        if query.search.is_some() {
            // The candidates of both indexes first, then one order by rowid for each.
            let lines: Vec<&str> = plan.lines().collect();
            assert!(
                first == "CO-ROUTINE s"
                    && SEARCH_INDEXES.iter().all(|index| {
                        lines
                            .iter()
                            .any(|l| l.starts_with(&format!("SCAN {index} VIRTUAL TABLE INDEX")))
                    })
                    && lines.contains(&"SEARCH o USING INTEGER PRIMARY KEY (rowid=?)"),
                "search must start from the trigram indexes:\n{plan}"
            );
        }
    }
}

#[test]
fn search_terms_become_their_distinct_trigrams() {
    assert_eq!(trigram_query("ab"), None);
    assert_eq!(trigram_query(""), None);
    assert_eq!(trigram_query("abc").as_deref(), Some(r#""abc""#));
    assert_eq!(
        trigram_query("aaaa b").as_deref(),
        Some(r#""aaa" "aa " "a b""#)
    );
    assert_eq!(
        trigram_query(r#"a"b"c"#).as_deref(),
        Some(r#""a""b" """b""" "b""c""#)
    );
    assert_eq!(trigram_query("éüß").as_deref(), Some(r#""éüß""#));
}

#[tokio::test]
async fn a_store_from_before_the_positionless_search_index_still_finds_its_orders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("read.db");
    let ada = view(
        Uuid::now_v7(),
        "ada@example.com",
        "Ada",
        "Analytical \"Engine\"",
        100,
    );
    let bob = view(
        Uuid::now_v7(),
        "bob@example.com",
        "Bob",
        "Loom abcd xbcy",
        200,
    );
    {
        // The schema as the previous release left it, with two orders in it.
        let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
        migrate(&mut conn, &SCHEMA[..2]).expect("old schema");
        let tx = conn.transaction().expect("tx");
        for v in [&ada, &bob] {
            // Stored, and indexed as that release did (it had one search index).
            apply_view(&tx, v.order_id, &ViewState::Live(Box::new(v.clone())), None)
                .unwrap_or_else(|_| panic!("store an order"));
            tx.execute(
                "INSERT INTO orders_search (rowid, search_text)
                     SELECT rowid, search_text FROM orders WHERE order_id = ?1",
                [v.order_id.to_string()],
            )
            .expect("index an order");
        }
        tx.commit().expect("commit");
    }
    let store = SqliteReadStore::open(&path).expect("open and migrate");
    let search = |term: &str| ListQuery {
        search: Some(term.into()),
        ..ListQuery::default()
    };
    let found = |page: OrderPage| page.orders.iter().map(|v| v.order_id).collect::<Vec<_>>();
    assert_eq!(
        found(store.list(&search("engine")).await.expect("search")),
        vec![ada.order_id]
    );
    assert_eq!(
        found(store.list(&search("l \"e")).await.expect("search")),
        vec![ada.order_id],
        "spaces and quotes in a term"
    );
    assert_eq!(
        found(store.list(&search("loom")).await.expect("search")),
        vec![bob.order_id]
    );
    // Both trigrams of "abcy" are in Bob's text, but not the term itself.
    assert!(found(store.list(&search("abcy")).await.expect("search")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_the_daily_model_fills_it_from_its_orders() {
    use time::macros::{date, datetime};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("read.db");
    let at = |v: &mut OrderView, t: OffsetDateTime, status: ordo_domain::Status| {
        v.created_at = t;
        v.updated_at = t;
        v.status = status;
    };
    let mut live = Vec::new();
    for (t, status, cents) in [
        // A microsecond before midnight, and half a second before the epoch: the
        // day is the floor, never rounded.
        (datetime!(2026-11-30 23:59:59.999999 UTC), "pending", 1_000),
        (datetime!(1969-12-31 23:59:59.5 UTC), "shipped", 100),
        (datetime!(2026-12-01 00:00 UTC), "cancelled", 2_550),
        (datetime!(2026-12-01 13:00 UTC), "confirmed", 300),
    ] {
        let mut v = view(Uuid::now_v7(), "ada@example.com", "Ada", "Lamp", cents);
        at(
            &mut v,
            t,
            ordo_domain::Status::parse(status).expect("status"),
        );
        live.push(v);
    }
    let deleted = Uuid::now_v7();
    {
        // The schema as the previous release left it, with those orders in it.
        let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
        migrate(&mut conn, &SCHEMA[..4]).expect("old schema");
        let tx = conn.transaction().expect("tx");
        for v in &live {
            apply_view(&tx, v.order_id, &ViewState::Live(Box::new(v.clone())), None)
                .unwrap_or_else(|_| panic!("store an order"));
        }
        apply_view(&tx, deleted, &ViewState::Deleted { version: 2 }, None)
            .unwrap_or_else(|_| panic!("store a tombstone"));
        tx.commit().expect("commit");
    }
    let (from, to) = (date!(1969 - 12 - 01), date!(2026 - 12 - 31));
    let upgraded = SqliteReadStore::open(&path).expect("open and migrate");
    let figures = upgraded.daily(from, to).await.expect("daily");
    let day = |date, orders, cents| DailyFigures {
        date,
        orders,
        revenue: Money::from_cents(cents),
    };
    assert_eq!(
        figures,
        vec![
            day(date!(1969 - 12 - 31), 1, 100),
            day(date!(2026 - 11 - 30), 1, 1_000),
            day(date!(2026 - 12 - 01), 2, 300),
        ]
    );
    // The same as the projection's batches give.
    let fresh = SqliteReadStore::open(dir.path().join("fresh.db")).expect("open");
    Projected::new().commit(&fresh, batch(&live, &[])).await;
    assert_eq!(fresh.daily(from, to).await.expect("daily"), figures);
}

#[test]
fn no_statement_is_recompiled_per_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("read.db");
    let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
    migrate(&mut conn, SCHEMA).expect("schema");
    let by_status = page_sql(&ListQuery {
        status: Some(ordo_domain::Status::Confirmed),
        ..ListQuery::default()
    });
    let by_customer = page_sql(&ListQuery {
        customer_email: Some("ada@example.com".into()),
        ..ListQuery::default()
    });
    let reader = crate::pool::ReadPool::new(&path);
    for round in 0..3i64 {
        let tx = conn.transaction().expect("tx");
        tx.execute(
            "INSERT INTO orders (order_id, version, status, customer_email, customer_name, created_at)
                 VALUES (?1, 1, 'confirmed', ?2, 'Ada', ?3)",
            params![format!("o{round}"), format!("c{round}@example.com"), round],
        )
        .expect("insert");
        apply_customer(
            &tx,
            &format!("c{round}@example.com"),
            Some(&(1, Money::from_cents(5))),
            true,
        )
        .unwrap_or_else(|_| panic!("apply customer"));
        tx.commit().expect("commit");
        reader
            .with(|r| {
                for (sql, params) in [&by_status, &by_customer] {
                    let mut stmt = r.prepare_cached(sql)?;
                    stmt.query(params_from_iter(params.iter()))?.next()?;
                    assert_eq!(
                        stmt.get_status(rusqlite::StatementStatus::RePrepare),
                        0,
                        "{sql}"
                    );
                }
                Ok(())
            })
            .expect("read");
    }
    let name_lookup = conn
        .prepare_cached(
            "UPDATE customers SET customer_name =
           (SELECT customer_name FROM orders
             WHERE customer_email = ?1 AND deleted = 0 AND status <> 'cancelled'
             ORDER BY created_at DESC, order_id DESC LIMIT 1)
         WHERE customer_email = ?1",
        )
        .expect("cached");
    assert_eq!(name_lookup.get_status(rusqlite::StatementStatus::Run), 3);
    assert_eq!(
        name_lookup.get_status(rusqlite::StatementStatus::RePrepare),
        0
    );
}

fn view(id: Uuid, email: &str, name: &str, product: &str, cents: i64) -> OrderView {
    serde_json::from_value(serde_json::json!({
        "orderId": id,
        "customerName": name,
        "customerEmail": email,
        "items": [{
            "productId": "p-1",
            "productName": product,
            "quantity": 1,
            "unitPrice": cents as f64 / 100.0,
            "lineTotal": cents as f64 / 100.0,
        }],
        "totalAmount": cents as f64 / 100.0,
        "currency": "EUR",
        "status": "pending",
        "cancellationReason": null,
        "shippingAddress": null,
        "createdAt": "2026-11-26T10:00:00Z",
        "updatedAt": "2026-11-26T10:00:00Z",
        "version": 1,
    }))
    .expect("a valid view")
}

/// A test projection's checkpoint, moved past one event per order of each batch.
struct Projected {
    at: Checkpoint,
    events: u64,
}

impl Projected {
    fn new() -> Self {
        Self {
            at: Checkpoint::origin(1),
            events: 0,
        }
    }

    /// Commits `batch` as the projection's next one.
    async fn commit(&mut self, store: &SqliteReadStore, batch: ReadModelBatch) {
        let from = self.at.clone();
        self.events += batch.views.len().max(1) as u64;
        self.at.advance(&ordo_es::Position::new(0, self.events, 0));
        store
            .commit("orders", batch.into(), &from, &self.at)
            .await
            .expect("commit");
    }
}

/// One batch as the projection would commit it: live orders created, and deletions.
fn batch(live: &[OrderView], deleted: &[Uuid]) -> ReadModelBatch {
    let mut batch = ReadModelBatch::default();
    for v in live {
        let after = ViewState::Live(Box::new(v.clone()));
        batch.record_change(&ViewState::Absent, &after);
        batch.views.push((v.order_id, after));
    }
    for id in deleted {
        batch.views.push((*id, ViewState::Deleted { version: 2 }));
    }
    batch
}

/// The ids a search finds, in the list's order.
async fn search(store: &SqliteReadStore, term: &str) -> Vec<Uuid> {
    let query = ListQuery {
        search: Some(term.into()),
        ..ListQuery::default()
    };
    let page = store.list(&query).await.expect("search");
    let ids: Vec<Uuid> = page.orders.iter().map(|v| v.order_id).collect();
    assert_eq!(page.total, ids.len() as u64, "{term}: total and page agree");
    ids
}

/// The search indexes' entries holding `trigram`.
fn indexed(store: &SqliteReadStore, trigram: &str) -> i64 {
    let conn = Connection::open(store.path()).expect("open");
    SEARCH_INDEXES
        .iter()
        .map(|index| {
            conn.query_row(
                &format!("SELECT count(*) FROM {index} WHERE {index} MATCH ?1"),
                [format!("\"{trigram}\"")],
                |r| r.get::<_, i64>(0),
            )
            .expect("indexed")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_index_follows_orders_stored_deleted_and_stored_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
    let mut projected = Projected::new();
    let mut commit = async |batch: ReadModelBatch| projected.commit(&store, batch).await;
    let ada = view(
        Uuid::now_v7(),
        "ada@example.com",
        "Ada",
        "Analytical Engine",
        100,
    );
    let bob = view(
        Uuid::now_v7(),
        "bob@example.com",
        "Bob",
        "Difference Engine",
        200,
    );
    let eve = view(Uuid::now_v7(), "eve@example.com", "Eve", "Loom", 300);
    commit(batch(&[ada.clone(), bob.clone(), eve.clone()], &[])).await;
    assert_eq!(indexed(&store, "eng"), 2);
    assert_eq!(
        search(&store, "engine").await,
        vec![bob.order_id, ada.order_id]
    );
    assert_eq!(search(&store, "loom").await, vec![eve.order_id]);
    assert!(search(&store, "jacquard").await.is_empty());

    // Stored again (a new version): indexed once still.
    let mut ada2 = ada.clone();
    ada2.version = 2;
    commit(batch(&[ada2], &[])).await;
    assert_eq!(indexed(&store, "eng"), 2);

    // Deleted: out of the index and of every search.
    commit(batch(&[], &[bob.order_id])).await;
    assert_eq!(indexed(&store, "eng"), 1);
    assert_eq!(search(&store, "engine").await, vec![ada.order_id]);

    // Stored again after its deletion (a replayed history): searchable again.
    commit(batch(std::slice::from_ref(&bob), &[])).await;
    assert_eq!(indexed(&store, "eng"), 2);
    assert_eq!(
        search(&store, "engine").await,
        vec![bob.order_id, ada.order_id]
    );

    store.reset().await.expect("reset");
    assert_eq!(indexed(&store, "eng"), 0);
    assert!(search(&store, "engine").await.is_empty());
}

/// The segments a search index (`orders_search` or `orders_search_live`) is made of.
fn search_segments(store: &SqliteReadStore, index: &str) -> Vec<i64> {
    Connection::open(store.path())
        .expect("open")
        .prepare(&format!(
            "SELECT DISTINCT segid FROM {index}_idx ORDER BY segid"
        ))
        .expect("segments")
        .query_map([], |r| r.get(0))
        .expect("segments")
        .collect::<rusqlite::Result<_>>()
        .expect("segments")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_new_orders_is_one_segment_of_the_search_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
    // No merges, so that every segment written stays to be counted.
    Connection::open(store.path())
        .expect("open")
        .execute_batch(
            "INSERT INTO orders_search_live (orders_search_live, rank) VALUES ('automerge', 0);
                 INSERT INTO orders_search_live (orders_search_live, rank) VALUES ('crisismerge', 1000);",
        )
        .expect("merges off");
    let orders = |names: std::ops::Range<u32>| -> Vec<OrderView> {
        names
            .map(|n| {
                view(
                    Uuid::now_v7(),
                    &format!("c{n}@example.com"),
                    &format!("Customer {n}"),
                    "Analytical Engine",
                    100 + i64::from(n),
                )
            })
            .collect()
    };
    let mut projected = Projected::new();
    for (done, names) in [0..20, 20..40].into_iter().enumerate() {
        projected.commit(&store, batch(&orders(names), &[])).await;
        assert_eq!(
            search_segments(&store, "orders_search_live").len(),
            done + 1,
            "one segment per batch"
        );
    }
    assert_eq!(indexed(&store, "eng"), 40);
    assert_eq!(search(&store, "customer 3").await.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_batches_never_merge_the_search_index_built_in_bulk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
    let order = |n: u32| {
        view(
            Uuid::now_v7(),
            &format!("c{n}@example.com"),
            &format!("Customer {n}"),
            if n.is_multiple_of(2) {
                "Analytical Engine"
            } else {
                "Loom"
            },
            100 + i64::from(n),
        )
    };
    let mut projected = Projected::new();
    let mut commit = async |batch: ReadModelBatch| projected.commit(&store, batch).await;
    store.begin_bulk().await.expect("bulk");
    for first in (0..2_000).step_by(500) {
        commit(batch(
            &(first..first + 500).map(order).collect::<Vec<_>>(),
            &[],
        ))
        .await;
    }
    store.finish_bulk().await.expect("finish");
    let bulk = search_segments(&store, "orders_search");
    assert!(!bulk.is_empty());
    assert!(search_segments(&store, "orders_search_live").is_empty());
    // More live batches than FTS5's `crisismerge` (16): in one index, the 16th segment
    // on the lowest level merged all of them, the bulk load's among them.
    let mut live = Vec::new();
    for n in 2_000..2_040 {
        let o = order(n);
        live.push(o.order_id);
        commit(batch(&[o], &[])).await;
    }
    assert_eq!(search_segments(&store, "orders_search"), bulk);
    assert_eq!(indexed(&store, "eng"), 1_020);
    // Deleted from either index, and searchable again once stored again.
    let (from_bulk, from_live) = (search(&store, "c10@").await, vec![live[1]]);
    assert_eq!(from_bulk.len(), 1);
    commit(batch(&[], &[from_bulk[0], from_live[0]])).await;
    assert!(search(&store, "c10@").await.is_empty());
    assert!(search(&store, "c2001@").await.is_empty());
    assert_eq!(indexed(&store, "eng"), 1_019);
    assert_eq!(indexed(&store, "loo"), 1_019);
    let again = |id: Uuid, n: u32| {
        let mut v = order(n);
        v.order_id = id;
        v
    };
    commit(batch(
        &[again(from_bulk[0], 10), again(from_live[0], 2_001)],
        &[],
    ))
    .await;
    assert_eq!(search(&store, "c10@").await, from_bulk);
    assert_eq!(search(&store, "c2001@").await, from_live);
    assert_eq!(indexed(&store, "eng"), 1_020);
    assert_eq!(indexed(&store, "loo"), 1_020);
    // A search finds orders of both indexes, each once.
    let query = ListQuery {
        search: Some("analytical".into()),
        limit: 100,
        ..ListQuery::default()
    };
    let page = store.list(&query).await.expect("search");
    assert_eq!(page.total, 1_020);
    let ids: std::collections::HashSet<Uuid> = page.orders.iter().map(|v| v.order_id).collect();
    assert_eq!(ids.len(), 100);
}

fn index_sql(conn: &Connection) -> Vec<String> {
    let mut sql: Vec<String> = conn
        .prepare(
            "SELECT sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
        .expect("schema")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("sql");
    sql.sort();
    sql
}

/// What bulk mode does on SQLite; that a bulk load answers as batch by batch is the
/// conformance suite's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_builds_the_secondary_indexes_at_the_end_as_the_schema_defines_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bulk = SqliteReadStore::open(dir.path().join("bulk.db")).expect("open");
    let usual = SqliteReadStore::open(dir.path().join("usual.db")).expect("open");
    let schema_indexes = index_sql(&Connection::open(usual.path()).expect("open"));

    bulk.begin_bulk()
        .await
        .expect("bulk mode on an empty store");
    assert!(
        index_sql(&Connection::open(bulk.path()).expect("open")).is_empty(),
        "secondary indexes are built at the end"
    );
    let a = view(Uuid::now_v7(), "ada@example.com", "Ada", "Engine", 12_000);
    Projected::new()
        .commit(&bulk, batch(std::slice::from_ref(&a), &[]))
        .await;
    bulk.finish_bulk().await.expect("finish");
    assert_eq!(
        index_sql(&Connection::open(bulk.path()).expect("open")),
        schema_indexes,
        "every index of the schema is back, as the schema defines it"
    );
    assert_eq!(search(&bulk, "engine").await, vec![a.order_id]);

    // Only an empty store loads in bulk.
    Projected::new()
        .commit(&usual, batch(std::slice::from_ref(&a), &[]))
        .await;
    assert!(usual.begin_bulk().await.is_err());
}

async fn has_order(store: &SqliteReadStore, id: Uuid) -> bool {
    store
        .load_views(&[id])
        .await
        .expect("load")
        .get(&id)
        .is_some_and(|v| matches!(v, ViewState::Live(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_read_models_are_discarded_after_a_reboot_unless_closed_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("read.db");
    let marker = unsynced_marker_of(&path);
    let first = view(Uuid::now_v7(), "a@example.com", "Ann", "Lamp", 1_000);
    {
        // Written under boot A and never closed: the process crashed.
        let store = SqliteReadStore::open_under_boot(&path, Some("boot-a")).expect("open");
        Projected::new()
            .commit(&store, batch(std::slice::from_ref(&first), &[]))
            .await;
        assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "boot-a");
    }
    {
        // The process starts again on the same boot: the system kept every write.
        let store = SqliteReadStore::open_under_boot(&path, Some("boot-a")).expect("open");
        assert!(has_order(&store, first.order_id).await);
    }
    let second = view(Uuid::now_v7(), "b@example.com", "Bo", "Desk", 2_000);
    {
        // The machine started again: what was not synced may be torn; discarded.
        let store = SqliteReadStore::open_under_boot(&path, Some("boot-b")).expect("open");
        assert!(!has_order(&store, first.order_id).await);
        assert_eq!(store.load_checkpoint("orders").await.expect("load"), None);
        assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "boot-b");
        let mut projected = Projected::new();
        projected
            .commit(&store, batch(std::slice::from_ref(&second), &[]))
            .await;
        // A clean stop syncs everything and drops the marker; the store stays usable.
        store.close().await.expect("close");
        assert!(!marker.exists(), "the marker outlived a clean close");
        let third = view(Uuid::now_v7(), "c@example.com", "Cy", "Pen", 300);
        projected
            .commit(&store, batch(std::slice::from_ref(&third), &[]))
            .await;
        assert!(has_order(&store, third.order_id).await);
    }
    {
        // A reboot after a clean stop keeps the read models.
        let store = SqliteReadStore::open_under_boot(&path, Some("boot-c")).expect("open");
        assert!(has_order(&store, second.order_id).await);
    }
    {
        // Without a boot id the store syncs at its checkpoints and keeps no marker.
        std::fs::remove_file(&marker).expect("the marker of boot C");
        let store = SqliteReadStore::open_under_boot(&path, None).expect("open");
        assert!(has_order(&store, second.order_id).await);
        store.close().await.expect("close");
        assert!(!marker.exists());
    }
}

fn writer_synchronous(store: &SqliteReadStore) -> i64 {
    lock(&store.writer)
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .expect("synchronous")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_writes_without_syncs_afterwards_only_while_the_marker_guards_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let guarded =
        SqliteReadStore::open_under_boot(&dir.path().join("a.db"), Some("boot-a")).expect("open");
    guarded.begin_bulk().await.expect("begin");
    guarded.finish_bulk().await.expect("finish");
    assert_eq!(writer_synchronous(&guarded), 0, "OFF under the marker");
    let closed =
        SqliteReadStore::open_under_boot(&dir.path().join("b.db"), Some("boot-a")).expect("open");
    closed.close().await.expect("close");
    closed.begin_bulk().await.expect("begin");
    closed.finish_bulk().await.expect("finish");
    assert_eq!(
        writer_synchronous(&closed),
        1,
        "NORMAL once the marker is gone"
    );
}

/// The embedded store runs one process and keeps no leases: a fenced write is refused,
/// saying so, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_write_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
    let lease = ordo_es::Lease {
        projection: "orders".into(),
        shard: 0,
        owner: "p".into(),
        token: 1,
        expires_at: OffsetDateTime::now_utc(),
    };
    let origin = Checkpoint::origin(1);
    let mut to = origin.clone();
    to.advance(&ordo_es::Position::new(0, 1, 0));
    let a = view(Uuid::now_v7(), "ada@example.com", "Ada", "Loom", 100);
    let err = store
        .commit_fenced(
            "orders",
            batch(std::slice::from_ref(&a), &[]).into(),
            &origin,
            &to,
            Some(&lease),
        )
        .await
        .expect_err("refused");
    let chain = ordo_testkit::error_chain(&err);
    assert!(chain.contains("cannot fence"), "{chain}");
    assert_eq!(store.load_checkpoint("orders").await.expect("load"), None);
    assert!(!has_order(&store, a.order_id).await);
}

/// The read-store contract's suite, each case on a store in a directory of its own.
mod conformance {
    ordo_domain::read_store_conformance!(guarded async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::SqliteReadStore::open(dir.path().join("read.db")).expect("open");
        (store, dir)
    });
}
