use std::sync::Arc;

use ordo_domain::event::{OrderCancelled, OrderCreated, OrderDeleted, OrderStatusChanged};
use ordo_domain::values::LineItem;
use ordo_domain::{Currency, CustomerEmail, OrderEvent, OrderProjection, Sort, Status};
use ordo_es::{DomainEvent, Metadata, Position, Projection, RecordedEvent, StreamId};
use time::OffsetDateTime;
use time::macros::{date, datetime};

use super::bulk::bulk_state;
use super::*;
use crate::testdb;

/// A read store in a fresh schema, the projection over it, and the schema name.
struct Fixture {
    store: Arc<PgReadStore>,
    projection: OrderProjection,
    checkpoint: Checkpoint,
    next_position: u64,
    schema: String,
}

impl Fixture {
    async fn new() -> Self {
        let (url, schema) = testdb::fresh_url().await;
        let store = Arc::new(
            PgReadStore::connect(&url)
                .await
                .expect("connect to the test server"),
        );
        Fixture {
            projection: OrderProjection::new(store.clone()),
            store,
            checkpoint: Checkpoint::origin(1),
            next_position: 1,
            schema,
        }
    }

    /// Projects `events` (order id, version, event, time) as one batch.
    async fn project(&mut self, events: Vec<(Uuid, u64, OrderEvent, OffsetDateTime)>) {
        let mut recorded = Vec::new();
        let mut to = self.checkpoint.clone();
        for (id, version, event, at) in events {
            let position = Position::new(0, self.next_position, 0);
            self.next_position += 1;
            to.advance(&position);
            recorded.push(RecordedEvent {
                event_id: Uuid::now_v7(),
                stream_id: StreamId::new(id.to_string()),
                aggregate_type: "Order".into(),
                version,
                position,
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                occurred_at: at,
                data: event.encode(),
                metadata: Metadata::default(),
            });
        }
        self.projection
            .apply_batch(&recorded, &self.checkpoint, &to)
            .await
            .expect("apply batch");
        self.checkpoint = to;
    }

    async fn done(self) {
        drop(self.projection);
        drop(self.store);
        testdb::drop_schema(&self.schema).await;
    }
}

fn created(name: &str, email: &str, product: &str, cents: i128) -> OrderEvent {
    let price = Money::from_cents(cents);
    OrderEvent::Created(OrderCreated {
        customer_name: name.into(),
        customer_email: CustomerEmail::parse(email).expect("email"),
        currency: Currency::usd(),
        items: vec![LineItem {
            product_id: "p-1".into(),
            product_name: product.into(),
            quantity: 1,
            unit_price: price,
            line_total: price,
        }],
        total_amount: price,
        shipping_address: None,
    })
}

fn cancelled() -> OrderEvent {
    OrderEvent::Cancelled(OrderCancelled {
        reason: Some("changed my mind".into()),
        previous_status: Status::Pending,
    })
}

fn query() -> ListQuery {
    ListQuery::default()
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
        (gone, 2, OrderEvent::Deleted(OrderDeleted {}), at),
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

fn status(from: Status, to: Status) -> OrderEvent {
    OrderEvent::StatusChanged(OrderStatusChanged { from, to })
}

fn deleted() -> OrderEvent {
    OrderEvent::Deleted(OrderDeleted {})
}

type Step = (Uuid, u64, OrderEvent, OffsetDateTime);

/// Orders created on four days, then changed, cancelled and deleted later; the
/// figures they leave are [`daily_expected`].
fn daily_history() -> Vec<Step> {
    let [a, b, c, d, e, g] = [(); 6].map(|_| Uuid::now_v7());
    let order = |cents| created("Ada", "ada@example.com", "Lamp", cents);
    vec![
        (g, 1, order(900), datetime!(2026-11-29 08:00 UTC)),
        (
            a,
            1,
            order(1_000),
            datetime!(2026-11-30 23:59:59.999999 UTC),
        ),
        (b, 1, order(2_550), datetime!(2026-12-01 00:00 UTC)),
        (c, 1, order(450), datetime!(2026-12-01 12:00 UTC)),
        (g, 2, deleted(), datetime!(2026-12-01 14:00 UTC)),
        (
            a,
            2,
            status(Status::Pending, Status::Confirmed),
            datetime!(2026-12-02 09:00 UTC),
        ),
        (b, 2, cancelled(), datetime!(2026-12-02 09:01 UTC)),
        (c, 2, deleted(), datetime!(2026-12-02 09:02 UTC)),
        (d, 1, order(10_000), datetime!(2026-12-01 18:00 UTC)),
        (d, 2, deleted(), datetime!(2026-12-02 09:03 UTC)),
        (e, 1, order(725), datetime!(2026-12-02 10:00 UTC)),
        (
            e,
            2,
            status(Status::Pending, Status::Confirmed),
            datetime!(2026-12-02 11:00 UTC),
        ),
    ]
}

/// 11-29: its only order deleted, no row; 11-30: the order of a microsecond before
/// midnight; 12-01: one cancelled order (one deleted, one created and deleted);
/// 12-02: one order.
fn daily_expected() -> Vec<DailyFigures> {
    let day = |date, orders, cents| DailyFigures {
        date,
        orders,
        revenue: Money::from_cents(cents),
    };
    vec![
        day(date!(2026 - 11 - 30), 1, 1_000),
        day(date!(2026 - 12 - 01), 1, 0),
        day(date!(2026 - 12 - 02), 1, 725),
    ]
}

const DAILY_FROM: Date = date!(2026 - 11 - 01);
const DAILY_TO: Date = date!(2026 - 12 - 31);

async fn daily_of(store: &PgReadStore) -> Vec<DailyFigures> {
    store.daily(DAILY_FROM, DAILY_TO).await.expect("daily")
}

#[tokio::test]
async fn the_figures_of_each_day_follow_creates_status_changes_cancels_and_deletes() {
    let mut f = Fixture::new().await;
    let steps = daily_history();
    f.project(steps[..5].to_vec()).await;
    assert_eq!(
        daily_of(&f.store).await,
        vec![
            DailyFigures {
                date: date!(2026 - 11 - 30),
                orders: 1,
                revenue: Money::from_cents(1_000)
            },
            DailyFigures {
                date: date!(2026 - 12 - 01),
                orders: 2,
                revenue: Money::from_cents(3_000)
            },
        ],
        "the day whose only order was deleted has no row left"
    );
    for step in &steps[5..] {
        f.project(vec![step.clone()]).await;
    }
    let stored = daily_of(&f.store).await;
    assert_eq!(stored, daily_expected());
    assert_eq!(
        f.store
            .daily(date!(2026 - 12 - 01), date!(2026 - 12 - 01))
            .await
            .expect("daily"),
        vec![daily_expected()[1]],
        "both ends are included"
    );
    // Summed over the days: the summary's totals.
    let summary = f.store.summary().await.expect("summary");
    let filled = ordo_domain::fill_days(DAILY_FROM, DAILY_TO, &stored);
    assert_eq!(filled.len(), 61);
    assert_eq!(
        filled.iter().map(|d| d.orders).sum::<u64>(),
        summary.total_orders
    );
    assert_eq!(
        filled.iter().map(|d| d.revenue).sum::<Money>(),
        summary.total_revenue
    );
    // Changes that cancel out within a batch write nothing.
    let (kept, gone) = (Uuid::now_v7(), Uuid::now_v7());
    let at = datetime!(2026-12-02 15:00 UTC);
    f.project(vec![
        (gone, 1, created("Bo", "bo@example.com", "Desk", 800), at),
        (gone, 2, deleted(), at),
        (kept, 1, created("Cy", "cy@example.com", "Pen", 25), at),
    ])
    .await;
    assert_eq!(daily_of(&f.store).await[2].revenue, Money::from_cents(750));
    // A reset empties the model; the log projected again gives the same figures.
    f.store.reset().await.expect("reset");
    assert!(daily_of(&f.store).await.is_empty());
    f.checkpoint = Checkpoint::origin(1);
    f.project(steps).await;
    assert_eq!(daily_of(&f.store).await, daily_expected());
    f.done().await;
}

#[tokio::test]
async fn a_bulk_load_gives_the_daily_figures_of_batches_applied_one_by_one() {
    let steps = daily_history();
    let mut usual = Fixture::new().await;
    for step in &steps {
        usual.project(vec![step.clone()]).await;
    }
    let mut bulk = Fixture::new().await;
    bulk.projection.begin_bulk().await.expect("bulk mode");
    for chunk in steps.chunks(5) {
        bulk.project(chunk.to_vec()).await;
    }
    bulk.projection.finish_bulk().await.expect("finish");
    assert_eq!(daily_of(&usual.store).await, daily_expected());
    assert_eq!(daily_of(&bulk.store).await, daily_expected());
    usual.done().await;
    bulk.done().await;
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

#[tokio::test]
async fn a_committed_order_can_be_read_back_with_its_checkpoint() {
    let mut f = Fixture::new().await;
    let id = Uuid::now_v7();
    let at = datetime!(2026-01-02 03:04:05.123456 UTC);
    f.project(vec![(
        id,
        1,
        created("Ada", "Ada@Example.com", "Widget", 1990),
        at,
    )])
    .await;
    let view = f
        .store
        .get(id)
        .await
        .expect("get")
        .expect("the order is there");
    assert_eq!(view.customer_email, "ada@example.com");
    assert_eq!(view.total_amount, Money::from_cents(1990));
    assert_eq!(
        (view.status, view.version, view.created_at),
        (Status::Pending, 1, at)
    );
    assert_eq!(
        f.store
            .load_checkpoint(OrderProjection::NAME)
            .await
            .expect("load"),
        Some(f.checkpoint.clone())
    );
    let states = f
        .store
        .load_views(&[id, Uuid::now_v7()])
        .await
        .expect("load views");
    assert_eq!(states.len(), 1);
    assert_eq!(states[&id].version(), 1);

    f.project(vec![(
        id,
        2,
        OrderEvent::StatusChanged(OrderStatusChanged {
            from: Status::Pending,
            to: Status::Confirmed,
        }),
        at,
    )])
    .await;
    assert_eq!(
        f.store
            .get(id)
            .await
            .expect("get")
            .map(|v| (v.status, v.version)),
        Some((Status::Confirmed, 2))
    );
    assert!(
        f.store
            .get(Uuid::now_v7())
            .await
            .expect("get unknown")
            .is_none()
    );
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_commits_from_one_checkpoint_exactly_one_wins() {
    let f = Fixture::new().await;
    // First from the origin (nothing stored: the insert path), then from the
    // checkpoint the winner stored (the update path).
    let mut from = Checkpoint::origin(1);
    for round in 0..2u64 {
        let mut tasks = Vec::new();
        for i in 1..=8u64 {
            let store = f.store.clone();
            let from = from.clone();
            tasks.push(tokio::spawn(async move {
                let mut to = from.clone();
                to.advance(&Position::new(0, 1_000 * (round + 1) + i, i));
                store
                    .commit("race", ReadModelBatch::default().into(), &from, &to)
                    .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(()) => won += 1,
                Err(ReadStoreError::CheckpointMoved) => {}
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert_eq!(won, 1, "round {round}");
        from = f
            .store
            .load_checkpoint("race")
            .await
            .expect("load")
            .expect("stored");
    }
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
            ("read_models".to_string(), 1),
            ("read_models".to_string(), 2),
            ("read_models".to_string(), 3),
            ("read_models".to_string(), 4),
        ]
    );
    testdb::drop_schema(&schema).await;
}

fn parked_event(n: u64, error: &str) -> ParkedEvent {
    ParkedEvent {
        position: format!("0.{n}.{n}"),
        event_id: Uuid::now_v7(),
        stream_id: format!("stream-{n}"),
        version: n,
        event_type: "OrderCreated".into(),
        error: error.into(),
        parked_at: ordo_es::now_micros(),
    }
}

fn past(checkpoint: &Checkpoint, n: u64) -> Checkpoint {
    let mut to = checkpoint.clone();
    to.advance(&Position::new(0, n, n));
    to
}

#[tokio::test]
async fn parking_moves_the_checkpoint_and_lists_oldest_first() {
    let f = Fixture::new().await;
    let origin = Checkpoint::origin(1);
    let (one, two) = (past(&origin, 1), past(&past(&origin, 1), 2));
    let first = parked_event(1, "cannot decode: bad total ✗");
    f.store
        .park("p", first.clone(), &origin, &one)
        .await
        .expect("park from the origin");
    assert_eq!(
        f.store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );

    // A stale checkpoint parks nothing and moves nothing.
    let refused = parked_event(2, "refused");
    for stale in [&origin, &two] {
        let err = f
            .store
            .park("p", refused.clone(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert_eq!(
        f.store.parked("p").await.expect("parked"),
        vec![first.clone()]
    );

    // The same event parked again (a redelivery) is kept once; the checkpoint moves.
    let mut second = parked_event(2, "nul \0 inside");
    f.store
        .park("p", second.clone(), &one, &two)
        .await
        .expect("park the second");
    let three = past(&two, 3);
    f.store
        .park("p", first.clone(), &two, &three)
        .await
        .expect("park the first again");
    assert_eq!(
        f.store.load_checkpoint("p").await.expect("load"),
        Some(three)
    );
    second.error = "nul \u{FFFD} inside".into();
    assert_eq!(
        f.store.parked("p").await.expect("parked"),
        [first.clone(), second],
        "oldest first, each once; a NUL in the message is replaced"
    );
    assert!(f.store.parked("other").await.expect("parked").is_empty());

    // Parked events of one projection are apart from another's, and reset clears all.
    f.store
        .park("other", first.clone(), &origin, &one)
        .await
        .expect("park in another projection");
    assert_eq!(f.store.parked("other").await.expect("parked").len(), 1);
    f.store.reset().await.expect("reset");
    assert!(f.store.parked("p").await.expect("parked").is_empty());
    assert!(f.store.parked("other").await.expect("parked").is_empty());
    assert_eq!(f.store.load_checkpoint("p").await.expect("load"), None);
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_a_park_and_a_commit_from_one_checkpoint_exactly_one_wins() {
    let f = Fixture::new().await;
    let origin = Checkpoint::origin(1);
    for round in 0..5u64 {
        let from = f
            .store
            .load_checkpoint("race")
            .await
            .expect("load")
            .unwrap_or_else(|| origin.clone());
        let to = past(&from, 10 + round);
        let (a, b) = (f.store.clone(), f.store.clone());
        let (from_a, to_a, from_b, to_b) = (from.clone(), to.clone(), from.clone(), to.clone());
        let parked = parked_event(round, "poison");
        let park = tokio::spawn(async move { a.park("race", parked, &from_a, &to_a).await });
        let commit = tokio::spawn(async move {
            b.commit("race", ReadModelBatch::default().into(), &from_b, &to_b)
                .await
        });
        let results = [park.await.expect("task"), commit.await.expect("task")];
        let parked_won = results[0].is_ok();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, ReadStoreError::CheckpointMoved), "{e:?}");
            }
        }
        let stored = f.store.parked("race").await.expect("parked");
        assert_eq!(
            stored.iter().any(|p| p.version == round),
            parked_won,
            "round {round}: the event is parked exactly when the park won"
        );
    }
    f.done().await;
}

#[tokio::test]
async fn a_commit_from_a_checkpoint_that_moved_changes_nothing() {
    let f = Fixture::new().await;
    let origin = Checkpoint::origin(1);
    let mut one = origin.clone();
    one.advance(&Position::new(0, 5, 1));
    let mut two = one.clone();
    two.advance(&Position::new(0, 6, 2));
    f.store
        .commit("p", ReadModelBatch::default().into(), &origin, &one)
        .await
        .expect("first commit from the origin");
    let id = Uuid::now_v7();
    assert!(
        f.store
            .load_views(&[])
            .await
            .expect("load nothing")
            .is_empty()
    );
    let view = ViewState::Live(Box::new(OrderView {
        order_id: id,
        customer_name: "Bo".into(),
        customer_email: "bo@example.com".into(),
        items: Vec::new(),
        total_amount: Money::from_cents(100),
        currency: "USD".into(),
        status: Status::Pending,
        cancellation_reason: None,
        shipping_address: None,
        created_at: datetime!(2026-01-01 00:00 UTC),
        updated_at: datetime!(2026-01-01 00:00 UTC),
        version: 1,
    }));
    let batch = ReadModelBatch {
        views: vec![(id, view)],
        status_delta: [1, 0, 0, 0, 0, 0],
        revenue_delta: Money::from_cents(100),
        ..ReadModelBatch::default()
    };
    for stale in [&origin, &two] {
        let err = f
            .store
            .commit("p", batch.clone().into(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert!(
        f.store.get(id).await.expect("get").is_none(),
        "a refused commit stored a view"
    );
    assert_eq!(f.store.summary().await.expect("summary").total_orders, 0);
    assert_eq!(
        f.store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );
    f.store
        .commit("p", batch.into(), &one, &two)
        .await
        .expect("commit from the stored checkpoint");
    assert_eq!(f.store.load_checkpoint("p").await.expect("load"), Some(two));
    assert!(f.store.get(id).await.expect("get").is_some());
    assert_eq!(f.store.load_checkpoint("other").await.expect("load"), None);
    f.done().await;
}

#[tokio::test]
async fn summary_and_top_customers_follow_creates_cancels_and_deletes() {
    let mut f = Fixture::new().await;
    let (a1, a2, b1, c1) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let t = |h: u8| datetime!(2026-03-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    f.project(vec![
        (
            a1,
            1,
            created("Ann Old", "ann@example.com", "Lamp", 1000),
            t(1),
        ),
        (b1, 1, created("Ben", "ben@example.com", "Desk", 2500), t(2)),
        (
            a2,
            1,
            created("Ann New", "ann@example.com", "Chair", 1500),
            t(3),
        ),
        (c1, 1, created("Cat", "cat@example.com", "Rug", 2500), t(4)),
    ])
    .await;
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Pending), 4);
    assert_eq!(summary.total_revenue, Money::from_cents(7500));
    assert_eq!(summary.last_updated, Some(t(4)));
    let top = f.store.top_customers(10).await.expect("top");
    let rows: Vec<_> = top
        .iter()
        .map(|c| {
            (
                c.customer_email.as_str(),
                c.customer_name.as_str(),
                c.order_count,
                c.total_spent.cents(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("ann@example.com", "Ann New", 2, 2500),
            ("ben@example.com", "Ben", 1, 2500),
            ("cat@example.com", "Cat", 1, 2500),
        ]
    );
    assert_eq!(f.store.top_customers(1).await.expect("top 1").len(), 1);

    // Cancelling Ann's newest order: out of revenue, and her name comes from the
    // most recent order still counted.
    f.project(vec![(a2, 2, cancelled(), t(5))]).await;
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Cancelled), 1);
    assert_eq!(summary.total_revenue, Money::from_cents(6000));
    assert_eq!(summary.average_order_value, Money::from_cents(2000));
    let top = f.store.top_customers(10).await.expect("top");
    assert_eq!(top[2].customer_email, "ann@example.com");
    assert_eq!(
        (top[2].customer_name.as_str(), top[2].order_count),
        ("Ann Old", 1)
    );

    // Deleting Ben's only order removes him everywhere; the tombstone keeps the version.
    f.project(vec![(b1, 2, OrderEvent::Deleted(OrderDeleted {}), t(6))])
        .await;
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 3);
    assert_eq!(summary.total_revenue, Money::from_cents(3500));
    let emails: Vec<_> = f
        .store
        .top_customers(10)
        .await
        .expect("top")
        .into_iter()
        .map(|c| c.customer_email)
        .collect();
    assert_eq!(emails, ["cat@example.com", "ann@example.com"]);
    assert!(f.store.get(b1).await.expect("get").is_none());
    assert_eq!(
        f.store.load_views(&[b1]).await.expect("load")[&b1],
        ViewState::Deleted { version: 2 }
    );
    assert_eq!(f.store.list(&query()).await.expect("list").total, 3);

    // Redelivering an old event changes nothing.
    let before = f.store.summary().await.expect("summary");
    f.project(vec![(
        b1,
        1,
        created("Ben", "ben@example.com", "Desk", 2500),
        t(2),
    )])
    .await;
    assert_eq!(
        f.store.summary().await.expect("summary").total_revenue,
        before.total_revenue
    );

    f.store.reset().await.expect("reset");
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(
        (
            summary.total_orders,
            summary.total_revenue,
            summary.last_updated
        ),
        (0, Money::ZERO, None)
    );
    assert!(f.store.top_customers(10).await.expect("top").is_empty());
    assert_eq!(
        f.store
            .load_checkpoint(OrderProjection::NAME)
            .await
            .expect("load"),
        None
    );
    f.done().await;
}

#[tokio::test]
async fn lists_filter_sort_page_and_search_case_insensitively() {
    let mut f = Fixture::new().await;
    let t = |h: u8| datetime!(2026-04-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    f.project(vec![
        (
            ids[0],
            1,
            created("Zoë Quinn", "zoe@example.com", "Blue 100% Wool Scarf", 500),
            t(1),
        ),
        (
            ids[1],
            1,
            created("Max", "max@shop.example", "Red Mug", 1500),
            t(2),
        ),
        (
            ids[2],
            1,
            created("Max", "max@shop.example", "Green Mug", 1000),
            t(3),
        ),
        (
            ids[3],
            1,
            created("Ivy", "ivy@example.com", "Tea", 2000),
            t(4),
        ),
    ])
    .await;
    let found = |page: &OrderPage| page.orders.iter().map(|o| o.order_id).collect::<Vec<_>>();

    let all = f.store.list(&query()).await.expect("list");
    assert_eq!(
        (all.total, found(&all)),
        (4, vec![ids[3], ids[2], ids[1], ids[0]])
    );
    let oldest_first = f
        .store
        .list(&ListQuery {
            sort: Sort::CreatedAt,
            ..query()
        })
        .await
        .expect("list");
    assert_eq!(found(&oldest_first), [ids[0], ids[1], ids[2], ids[3]]);
    let cheap_first = f
        .store
        .list(&ListQuery {
            sort: Sort::TotalAmount,
            ..query()
        })
        .await
        .expect("list");
    assert_eq!(found(&cheap_first), [ids[0], ids[2], ids[1], ids[3]]);

    let mugs = f
        .store
        .list(&ListQuery {
            search: Some("mug".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&mugs), [ids[2], ids[1]]);
    let wool = f
        .store
        .list(&ListQuery {
            search: Some("100% wool".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&wool), [ids[0]]);
    let literal = f
        .store
        .list(&ListQuery {
            search: Some("0%".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&literal), [ids[0]], "% is literal in a search");
    let by_name = f
        .store
        .list(&ListQuery {
            search: Some("zoë q".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&by_name), [ids[0]]);
    let by_email = f
        .store
        .list(&ListQuery {
            search: Some("shop.ex".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(by_email.total, 2);
    let by_id = f
        .store
        .list(&ListQuery {
            search: Some(ids[3].to_string()[24..].to_string()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&by_id), [ids[3]]);

    let filtered = ListQuery {
        customer_email: Some("max@shop.example".into()),
        min_total: Some(Money::from_cents(1000)),
        max_total: Some(Money::from_cents(1500)),
        created_from: Some(t(2)),
        created_to: Some(t(3)),
        status: Some(Status::Pending),
        ..query()
    };
    assert_eq!(
        found(&f.store.list(&filtered).await.expect("list")),
        [ids[2], ids[1]],
        "filters are inclusive"
    );
    let none = ListQuery {
        status: Some(Status::Shipped),
        ..query()
    };
    assert_eq!(f.store.list(&none).await.expect("list").total, 0);

    let page2 = f
        .store
        .list(&ListQuery {
            page: 2,
            limit: 3,
            ..query()
        })
        .await
        .expect("page 2");
    assert_eq!(
        (page2.total, found(&page2), page2.page, page2.limit),
        (4, vec![ids[0]], 2, 3)
    );
    let past = f
        .store
        .list(&ListQuery {
            page: 9,
            limit: 3,
            ..query()
        })
        .await
        .expect("past the end");
    assert_eq!((past.total, past.orders.len()), (4, 0));

    // With a table of realistic size the planner serves a search from the trigram
    // index instead of reading every row.
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
