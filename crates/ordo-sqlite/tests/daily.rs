//! The daily read model (orders and revenue per UTC day of createdAt) on the embedded
//! store: it follows every kind of change across days, agrees with the summary, and comes
//! out the same whether loaded batch by batch, in bulk, into a new generation or again
//! after a reset.

use std::sync::Arc;

use time::macros::{date, datetime};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use ordo_app::OrderProjection;
use ordo_domain::event::{OrderCancelled, OrderCreated, OrderDeleted, OrderStatusChanged};
use ordo_domain::values::LineItem;
use ordo_domain::{
    Currency, CustomerEmail, DailyFigures, Money, OrderEvent, OrderReadStore, ReadStoreProvider,
    Status, fill_days,
};
use ordo_es::{Checkpoint, DomainEvent, Metadata, Position, Projection, RecordedEvent, StreamId};
use ordo_sqlite::{SqliteReadStore, SqliteReadStores};

fn created(cents: i128) -> OrderEvent {
    let price = Money::from_cents(cents);
    OrderEvent::Created(OrderCreated {
        customer_name: "Ada".into(),
        customer_email: CustomerEmail::parse("ada@example.com").expect("email"),
        currency: Currency::usd(),
        items: vec![LineItem {
            product_id: "p-1".into(),
            product_name: "Lamp".into(),
            quantity: 1,
            unit_price: price,
            line_total: price,
        }],
        total_amount: price,
        shipping_address: None,
    })
}

fn status(from: Status, to: Status) -> OrderEvent {
    OrderEvent::StatusChanged(OrderStatusChanged { from, to })
}

fn cancelled(previous_status: Status) -> OrderEvent {
    OrderEvent::Cancelled(OrderCancelled {
        reason: None,
        previous_status,
    })
}

/// (order, version, event, occurredAt): the order's createdAt is its first event's time.
type Step = (Uuid, u64, OrderEvent, OffsetDateTime);

/// Orders created on four days, then changed, cancelled and deleted later. Expected
/// figures: 11-29 none (its only order was deleted); 11-30 one order, 10.00 (created a
/// microsecond before midnight); 12-01 two orders, 3.00 (one cancelled, one deleted, one
/// created and deleted); 12-02 one order, 7.25.
fn history() -> Vec<Step> {
    let [a, b, c, d, e, f, g] = [(); 7].map(|_| Uuid::now_v7());
    vec![
        (g, 1, created(900), datetime!(2026-11-29 08:00 UTC)),
        (
            a,
            1,
            created(1_000),
            datetime!(2026-11-30 23:59:59.999999 UTC),
        ),
        (b, 1, created(2_550), datetime!(2026-12-01 00:00 UTC)),
        (c, 1, created(450), datetime!(2026-12-01 12:00 UTC)),
        (f, 1, created(300), datetime!(2026-12-01 13:00 UTC)),
        (
            g,
            2,
            OrderEvent::Deleted(OrderDeleted {}),
            datetime!(2026-12-01 14:00 UTC),
        ),
        (
            a,
            2,
            status(Status::Pending, Status::Confirmed),
            datetime!(2026-12-02 09:00 UTC),
        ),
        (
            b,
            2,
            cancelled(Status::Pending),
            datetime!(2026-12-02 09:01 UTC),
        ),
        (
            c,
            2,
            OrderEvent::Deleted(OrderDeleted {}),
            datetime!(2026-12-02 09:02 UTC),
        ),
        (d, 1, created(10_000), datetime!(2026-12-01 18:00 UTC)),
        (
            d,
            2,
            OrderEvent::Deleted(OrderDeleted {}),
            datetime!(2026-12-02 09:03 UTC),
        ),
        (e, 1, created(725), datetime!(2026-12-02 10:00 UTC)),
        (
            a,
            3,
            status(Status::Confirmed, Status::Processing),
            datetime!(2026-12-02 11:00 UTC),
        ),
        (
            f,
            2,
            status(Status::Pending, Status::Confirmed),
            datetime!(2026-12-02 11:30 UTC),
        ),
        (
            f,
            3,
            cancelled(Status::Confirmed),
            datetime!(2026-12-02 12:00 UTC),
        ),
    ]
}

/// The figures [`history`] leaves, as the store should hold them.
fn expected() -> Vec<DailyFigures> {
    let day = |date: Date, orders: u64, cents: i128| DailyFigures {
        date,
        orders,
        revenue: Money::from_cents(cents),
    };
    vec![
        day(date!(2026 - 11 - 30), 1, 1_000),
        day(date!(2026 - 12 - 01), 2, 0),
        day(date!(2026 - 12 - 02), 1, 725),
    ]
}

/// A projection over `store` with its checkpoint.
struct Projecting {
    projection: OrderProjection,
    checkpoint: Checkpoint,
    next: u64,
}

impl Projecting {
    fn new(store: Arc<dyn OrderReadStore>) -> Self {
        Self {
            projection: OrderProjection::new(store),
            checkpoint: Checkpoint::origin(1),
            next: 1,
        }
    }

    /// Projects `steps` as one batch.
    async fn batch(&mut self, steps: &[Step]) {
        let mut to = self.checkpoint.clone();
        let mut recorded = Vec::new();
        for (id, version, event, at) in steps {
            let position = Position::new(0, self.next, 0);
            self.next += 1;
            to.advance(&position);
            recorded.push(RecordedEvent {
                event_id: Uuid::now_v7(),
                stream_id: StreamId::new(id.to_string()),
                aggregate_type: "Order".into(),
                version: *version,
                position,
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                occurred_at: *at,
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

    /// Projects `steps` in batches of `size`.
    async fn batches(&mut self, steps: &[Step], size: usize) {
        for chunk in steps.chunks(size) {
            self.batch(chunk).await;
        }
    }
}

const FROM: Date = date!(2026 - 11 - 01);
const TO: Date = date!(2026 - 12 - 31);

async fn figures(store: &dyn OrderReadStore) -> Vec<DailyFigures> {
    store.daily(FROM, TO).await.expect("daily")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_of_each_day_follow_creates_status_changes_cancels_and_deletes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteReadStore::open(dir.path().join("read.db")).expect("open"));
    let mut projecting = Projecting::new(store.clone());
    let steps = history();
    projecting.batches(&steps[..6], 6).await;
    assert_eq!(
        figures(store.as_ref()).await,
        vec![
            DailyFigures {
                date: date!(2026 - 11 - 30),
                orders: 1,
                revenue: Money::from_cents(1_000)
            },
            DailyFigures {
                date: date!(2026 - 12 - 01),
                orders: 3,
                revenue: Money::from_cents(3_300)
            },
        ],
        "the day whose only order was deleted has no row left"
    );
    projecting.batches(&steps[6..], 1).await;
    let stored = figures(store.as_ref()).await;
    assert_eq!(stored, expected());

    // The range is inclusive, and narrows what is read.
    let one = store
        .daily(date!(2026 - 12 - 01), date!(2026 - 12 - 01))
        .await
        .expect("daily");
    assert_eq!(one, vec![expected()[1]]);
    assert!(
        store
            .daily(date!(2026 - 12 - 03), date!(2027 - 01 - 01))
            .await
            .expect("daily")
            .is_empty()
    );

    // Summed over the days: the summary's totals.
    let summary = store.summary().await.expect("summary");
    let filled = fill_days(FROM, TO, &stored);
    assert_eq!(filled.len(), 61);
    assert_eq!(
        filled.iter().map(|d| d.orders).sum::<u64>(),
        summary.total_orders
    );
    assert_eq!(
        filled.iter().map(|d| d.revenue).sum::<Money>(),
        summary.total_revenue
    );

    // A reset empties the model; replaying the log gives the same figures.
    store.reset().await.expect("reset");
    assert!(figures(store.as_ref()).await.is_empty());
    let mut again = Projecting::new(store.clone());
    again.batches(&steps, 4).await;
    assert_eq!(figures(store.as_ref()).await, expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_cancel_out_within_a_batch_leave_the_figures_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteReadStore::open(dir.path().join("read.db")).expect("open"));
    let mut projecting = Projecting::new(store.clone());
    let (kept, gone) = (Uuid::now_v7(), Uuid::now_v7());
    let at = datetime!(2026-12-01 10:00 UTC);
    projecting.batch(&[(kept, 1, created(500), at)]).await;
    projecting
        .batch(&[
            (gone, 1, created(800), at),
            (kept, 2, status(Status::Pending, Status::Confirmed), at),
            (gone, 2, OrderEvent::Deleted(OrderDeleted {}), at),
        ])
        .await;
    assert_eq!(
        figures(store.as_ref()).await,
        vec![DailyFigures {
            date: date!(2026 - 12 - 01),
            orders: 1,
            revenue: Money::from_cents(500)
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_and_a_new_generation_give_the_figures_of_batches_applied_one_by_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let steps = history();

    let usual = Arc::new(SqliteReadStore::open(dir.path().join("usual.db")).expect("open"));
    Projecting::new(usual.clone()).batches(&steps, 1).await;

    let bulk = Arc::new(SqliteReadStore::open(dir.path().join("bulk.db")).expect("open"));
    let mut loading = Projecting::new(bulk.clone());
    loading.projection.begin_bulk().await.expect("bulk mode");
    loading.batches(&steps, 5).await;
    loading.projection.finish_bulk().await.expect("finish");

    // A rebuild fills a new generation beside the active one and switches to it.
    let provider = SqliteReadStores::new(dir.path().join("read.db"));
    let active = provider.open_active().await.expect("open");
    Projecting::new(active.store.clone())
        .batches(&steps[..3], 3)
        .await;
    let generation = provider.create_generation().await.expect("create");
    let mut rebuilding = Projecting::new(generation.store.clone());
    rebuilding.projection.begin_bulk().await.expect("bulk mode");
    rebuilding.batches(&steps, 100).await;
    rebuilding.projection.finish_bulk().await.expect("finish");
    provider.activate(&generation.id).await.expect("activate");
    drop((active, generation, rebuilding, provider));
    let reopened = SqliteReadStores::new(dir.path().join("read.db"))
        .open_active()
        .await
        .expect("reopen");

    assert_eq!(figures(usual.as_ref()).await, expected());
    assert_eq!(figures(bulk.as_ref()).await, expected());
    assert_eq!(figures(reopened.store.as_ref()).await, expected());
    assert_eq!(
        bulk.summary().await.expect("summary"),
        usual.summary().await.expect("summary")
    );
}
