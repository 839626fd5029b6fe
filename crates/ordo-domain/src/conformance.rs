//! The conformance suite every read store must pass, written once: the checkpoint's
//! compare-and-set under concurrent writers, parking, every query with its filters,
//! sorting, paging and search, the summary and top customers, the daily figures, a bulk
//! load that answers exactly as batch by batch, and a provider's generations with their
//! blue-green switch.
//!
//! A store crate runs it with one line in a test module:
//!
//! ```text
//! ordo_domain::read_store_conformance!(async { make_a_fresh_isolated_store().await });
//! // or, when something must live as long as the store (a temporary directory):
//! ordo_domain::read_store_conformance!(guarded async { (store, temp_dir) });
//! // and for the store's provider of generations:
//! ordo_domain::read_store_provider_conformance!(guarded async { (provider, temp_dir) });
//! ```
//!
//! The expression is evaluated once per store a case needs and must give a store that
//! shares nothing with the others (a new file or schema). The events are folded with
//! [`ReadModelBatch::fold`], as the projection does, so a store is tested with the
//! batches it will be given. Each case is a public function here, so a store can also
//! call one directly.

use std::sync::Arc;

use time::macros::{date, datetime};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use ordo_es::{Checkpoint, DomainEvent, Metadata, Position, RecordedEvent, StreamId};

use crate::event::{OrderCancelled, OrderCreated, OrderDeleted, OrderStatusChanged};
use crate::read_store::{
    ListQuery, OrderReadStore, ParkedEvent, ReadModelBatch, ReadStoreError, ReadStoreProvider, Sort,
};
use crate::values::{Currency, CustomerEmail, EmailKey, LineItem, Status};
use crate::view::{DailyFigures, OrderPage, OrderView, ViewState, fill_days};
use crate::{Money, OrderEvent};

/// Expands to one `#[tokio::test]` per read-store case. The caller needs tokio with the
/// `macros` and `rt-multi-thread` features among its dev-dependencies.
#[macro_export]
macro_rules! read_store_conformance {
    (guarded $make:expr) => {
        $crate::read_store_conformance!(@all guarded $make);
    };
    ($make:expr) => {
        $crate::read_store_conformance!(@all plain $make);
    };
    (@all $kind:ident $make:expr) => {
        $crate::read_store_conformance!(@one $kind $make;
            a_committed_order_reads_back_with_its_checkpoint,
            of_concurrent_commits_from_one_checkpoint_exactly_one_wins,
            a_commit_from_a_checkpoint_that_moved_changes_nothing,
            parking_moves_the_checkpoint_and_lists_oldest_first,
            of_a_park_and_a_commit_from_one_checkpoint_exactly_one_wins,
            summary_and_top_customers_follow_creates_cancels_and_deletes,
            lists_filter_sort_page_and_search_case_insensitively,
            the_figures_of_each_day_follow_creates_status_changes_cancels_and_deletes,
            views_stored_with_capitals_are_found_and_counted_under_the_lower_cased_e_mail,
        );
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn a_bulk_load_answers_every_query_like_batches_applied_one_by_one() {
            let (usual, _usual_guard) = $crate::read_store_conformance!(@make $kind $make);
            let (bulk, _bulk_guard) = $crate::read_store_conformance!(@make $kind $make);
            $crate::conformance::a_bulk_load_answers_every_query_like_batches_applied_one_by_one(
                ::std::sync::Arc::new(usual),
                ::std::sync::Arc::new(bulk),
            )
            .await;
        }
    };
    (@one $kind:ident $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $crate::read_store_conformance!(@make $kind $make);
                $crate::conformance::$case(::std::sync::Arc::new(store)).await;
            }
        )+
    };
    (@make guarded $make:expr) => { $make.await };
    (@make plain $make:expr) => { ($make.await, ()) };
}

/// Expands to one `#[tokio::test]` per case of a [`ReadStoreProvider`].
#[macro_export]
macro_rules! read_store_provider_conformance {
    (guarded $make:expr) => {
        $crate::read_store_provider_conformance!(@all guarded $make);
    };
    ($make:expr) => {
        $crate::read_store_provider_conformance!(@all plain $make);
    };
    (@all $kind:ident $make:expr) => {
        $crate::read_store_conformance!(@one $kind $make;
            generations_are_apart_until_one_is_made_active,
            one_holder_at_a_time_has_the_rebuild_lock,
        );
    };
}

/// The projection name the cases commit under.
const PROJECTION: &str = "orders";

/// (order, version, event, occurredAt): an order's createdAt is its first event's time.
pub type Step = (Uuid, u64, OrderEvent, OffsetDateTime);

/// What the projection does, without its runner: each batch of steps is folded over
/// the stored states and committed with the checkpoint moved past it.
#[derive(Debug)]
pub struct Projector {
    store: Arc<dyn OrderReadStore>,
    checkpoint: Checkpoint,
    next_position: u64,
}

impl Projector {
    pub fn new(store: Arc<dyn OrderReadStore>) -> Self {
        Self {
            store,
            checkpoint: Checkpoint::origin(1),
            next_position: 1,
        }
    }

    /// Folds and commits `steps` as one batch.
    pub async fn project(&mut self, steps: Vec<Step>) {
        let mut recorded = Vec::new();
        let mut to = self.checkpoint.clone();
        let mut ids = Vec::new();
        for (id, version, event, at) in steps {
            let position = Position::new(0, self.next_position, 0);
            self.next_position += 1;
            to.advance(&position);
            if !ids.contains(&id) {
                ids.push(id);
            }
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
        let states = self.store.load_views(&ids).await.expect("load views");
        let batch = ReadModelBatch::fold(&recorded, states).expect("fold");
        self.store
            .commit(PROJECTION, Arc::new(batch), &self.checkpoint, &to)
            .await
            .expect("commit");
        self.checkpoint = to;
    }

    /// Starts again from the origin (after a reset).
    pub fn restart(&mut self) {
        self.checkpoint = Checkpoint::origin(1);
    }
}

pub fn created(name: &str, email: &str, product: &str, cents: i128) -> OrderEvent {
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

pub fn cancelled() -> OrderEvent {
    OrderEvent::Cancelled(OrderCancelled {
        reason: Some("changed my mind".into()),
        previous_status: Status::Pending,
    })
}

pub fn status(from: Status, to: Status) -> OrderEvent {
    OrderEvent::StatusChanged(OrderStatusChanged { from, to })
}

pub fn deleted() -> OrderEvent {
    OrderEvent::Deleted(OrderDeleted {})
}

fn past(checkpoint: &Checkpoint, n: u64) -> Checkpoint {
    let mut to = checkpoint.clone();
    to.advance(&Position::new(0, n, n));
    to
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

fn ids_of(page: &OrderPage) -> Vec<Uuid> {
    page.orders.iter().map(|o| o.order_id).collect()
}

fn query() -> ListQuery {
    ListQuery::default()
}

fn searching(term: &str) -> ListQuery {
    ListQuery {
        search: Some(term.into()),
        ..query()
    }
}

pub async fn a_committed_order_reads_back_with_its_checkpoint(store: Arc<dyn OrderReadStore>) {
    let mut p = Projector::new(Arc::clone(&store));
    let id = Uuid::now_v7();
    let at = datetime!(2026-01-02 03:04:05.123456 UTC);
    p.project(vec![(
        id,
        1,
        created("Ada", "Ada@Example.com", "Widget", 1990),
        at,
    )])
    .await;
    let view = store
        .get(id)
        .await
        .expect("get")
        .expect("the order is there");
    assert_eq!(view.customer_email, "ada@example.com");
    assert_eq!(view.total_amount, Money::from_cents(1990));
    assert_eq!(
        (view.status, view.version, view.created_at),
        (Status::Pending, 1, at),
        "times keep their microseconds"
    );
    assert_eq!(
        store.load_checkpoint(PROJECTION).await.expect("load"),
        Some(p.checkpoint.clone())
    );
    let states = store
        .load_views(&[id, Uuid::now_v7()])
        .await
        .expect("load views");
    assert_eq!(states.len(), 1, "only the orders the store knows");
    assert_eq!(states[&id].version(), 1);
    assert!(store.load_views(&[]).await.expect("load none").is_empty());

    p.project(vec![(
        id,
        2,
        status(Status::Pending, Status::Confirmed),
        at,
    )])
    .await;
    assert_eq!(
        store
            .get(id)
            .await
            .expect("get")
            .map(|v| (v.status, v.version)),
        Some((Status::Confirmed, 2))
    );
    assert!(store.get(Uuid::now_v7()).await.expect("get").is_none());
    assert_eq!(store.load_checkpoint("other").await.expect("load"), None);
    store.ping().await.expect("ping");
}

pub async fn of_concurrent_commits_from_one_checkpoint_exactly_one_wins(
    store: Arc<dyn OrderReadStore>,
) {
    // First from the origin (nothing stored: the insert path), then from the checkpoint
    // the winner stored (the update path).
    let mut from = Checkpoint::origin(1);
    for round in 0..2u64 {
        let mut tasks = Vec::new();
        for i in 1..=8u64 {
            let store = Arc::clone(&store);
            let from = from.clone();
            tasks.push(tokio::spawn(async move {
                let to = past(&from, 1_000 * (round + 1) + i);
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
        from = store
            .load_checkpoint("race")
            .await
            .expect("load")
            .expect("stored");
    }
}

pub async fn a_commit_from_a_checkpoint_that_moved_changes_nothing(store: Arc<dyn OrderReadStore>) {
    let origin = Checkpoint::origin(1);
    let one = past(&origin, 5);
    let two = past(&one, 6);
    store
        .commit("p", ReadModelBatch::default().into(), &origin, &one)
        .await
        .expect("first commit from the origin");
    let id = Uuid::now_v7();
    let state = ViewState::Live(Box::new(OrderView {
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
    let mut batch = ReadModelBatch::default();
    batch.record_change(&ViewState::Absent, &state);
    batch.views.push((id, state));
    for stale in [&origin, &two] {
        let err = store
            .commit("p", batch.clone().into(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert!(
        store.get(id).await.expect("get").is_none(),
        "a refused commit stored a view"
    );
    let summary = store.summary().await.expect("summary");
    assert_eq!(
        (summary.total_orders, summary.total_revenue),
        (0, Money::ZERO)
    );
    assert!(store.top_customers(10).await.expect("top").is_empty());
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );
    store
        .commit("p", batch.into(), &one, &two)
        .await
        .expect("commit from the stored checkpoint");
    assert_eq!(store.load_checkpoint("p").await.expect("load"), Some(two));
    assert!(store.get(id).await.expect("get").is_some());
    assert_eq!(store.summary().await.expect("summary").total_orders, 1);
}

/// The stored error text of a parked event: as given, or with each NUL replaced by
/// U+FFFD where the database's text cannot hold one (PostgreSQL).
fn stored_as_given(stored: &ParkedEvent, given: &ParkedEvent) -> bool {
    let mut replaced = given.clone();
    replaced.error = given.error.replace('\0', "\u{FFFD}");
    stored == given || *stored == replaced
}

pub async fn parking_moves_the_checkpoint_and_lists_oldest_first(store: Arc<dyn OrderReadStore>) {
    let origin = Checkpoint::origin(1);
    let one = past(&origin, 1);
    let two = past(&one, 2);
    let first = parked_event(1, "cannot decode: bad total ✗");
    store
        .park("p", first.clone(), &origin, &one)
        .await
        .expect("park from the origin");
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );

    // A stale checkpoint parks nothing and moves nothing.
    let refused = parked_event(2, "refused");
    for stale in [&origin, &two] {
        let err = store
            .park("p", refused.clone(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert_eq!(
        store.parked("p").await.expect("parked"),
        vec![first.clone()]
    );

    // The same event parked again (a redelivery) is kept once; the checkpoint moves.
    let second = parked_event(2, "nul \0 inside");
    store
        .park("p", second.clone(), &one, &two)
        .await
        .expect("park the second");
    let three = past(&two, 3);
    store
        .park("p", first.clone(), &two, &three)
        .await
        .expect("park the first again");
    assert_eq!(store.load_checkpoint("p").await.expect("load"), Some(three));
    let parked = store.parked("p").await.expect("parked");
    assert_eq!(parked.len(), 2, "each once: {parked:?}");
    assert_eq!(parked[0], first, "oldest first");
    assert!(stored_as_given(&parked[1], &second), "{:?}", parked[1]);
    assert!(store.parked("other").await.expect("parked").is_empty());

    // Parked events of one projection are apart from another's, and a reset clears all.
    store
        .park("other", first.clone(), &origin, &one)
        .await
        .expect("park in another projection");
    assert_eq!(store.parked("other").await.expect("parked").len(), 1);
    store.reset().await.expect("reset");
    assert!(store.parked("p").await.expect("parked").is_empty());
    assert!(store.parked("other").await.expect("parked").is_empty());
    assert_eq!(store.load_checkpoint("p").await.expect("load"), None);
}

pub async fn of_a_park_and_a_commit_from_one_checkpoint_exactly_one_wins(
    store: Arc<dyn OrderReadStore>,
) {
    let origin = Checkpoint::origin(1);
    for round in 0..5u64 {
        let from = store
            .load_checkpoint("race")
            .await
            .expect("load")
            .unwrap_or_else(|| origin.clone());
        let to = past(&from, 10 + round);
        let (a, b) = (Arc::clone(&store), Arc::clone(&store));
        let (from_a, to_a, from_b, to_b) = (from.clone(), to.clone(), from.clone(), to.clone());
        let parked = parked_event(round, "poison");
        let park = tokio::spawn(async move { a.park("race", parked, &from_a, &to_a).await });
        let commit = tokio::spawn(async move {
            b.commit("race", ReadModelBatch::default().into(), &from_b, &to_b)
                .await
        });
        let results = [park.await.expect("task"), commit.await.expect("task")];
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
        let stored = store.parked("race").await.expect("parked");
        assert_eq!(
            stored.iter().any(|p| p.version == round),
            results[0].is_ok(),
            "round {round}: the event is parked exactly when the park won"
        );
    }
}

pub async fn summary_and_top_customers_follow_creates_cancels_and_deletes(
    store: Arc<dyn OrderReadStore>,
) {
    let mut p = Projector::new(Arc::clone(&store));
    let [a1, a2, b1, c1] = [(); 4].map(|()| Uuid::now_v7());
    let t = |h: u8| datetime!(2026-03-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    p.project(vec![
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
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Pending), 4);
    assert_eq!(summary.total_revenue, Money::from_cents(7500));
    assert_eq!(summary.last_updated, Some(t(4)));
    let rows = |top: &[crate::view::TopCustomer]| -> Vec<(String, String, u64, i128)> {
        top.iter()
            .map(|c| {
                (
                    c.customer_email.clone(),
                    c.customer_name.clone(),
                    c.order_count,
                    c.total_spent.cents(),
                )
            })
            .collect()
    };
    let row = |email: &str, name: &str, orders, cents| (email.into(), name.into(), orders, cents);
    assert_eq!(
        rows(&store.top_customers(10).await.expect("top")),
        [
            row("ann@example.com", "Ann New", 2, 2500),
            row("ben@example.com", "Ben", 1, 2500),
            row("cat@example.com", "Cat", 1, 2500),
        ],
        "highest spend first, ties by e-mail; the name of the most recent order"
    );
    assert_eq!(store.top_customers(1).await.expect("top 1").len(), 1);

    // Cancelling Ann's newest order: out of revenue, and her name comes from the most
    // recent order still counted.
    p.project(vec![(a2, 2, cancelled(), t(5))]).await;
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Cancelled), 1);
    assert_eq!(summary.total_revenue, Money::from_cents(6000));
    assert_eq!(summary.average_order_value, Money::from_cents(2000));
    assert_eq!(
        rows(&store.top_customers(10).await.expect("top")),
        [
            row("ben@example.com", "Ben", 1, 2500),
            row("cat@example.com", "Cat", 1, 2500),
            row("ann@example.com", "Ann Old", 1, 1000),
        ]
    );

    // Deleting Ben's only order removes him everywhere; the tombstone keeps the version.
    p.project(vec![(b1, 2, deleted(), t(6))]).await;
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 3);
    assert_eq!(summary.total_revenue, Money::from_cents(3500));
    let emails: Vec<_> = store
        .top_customers(10)
        .await
        .expect("top")
        .into_iter()
        .map(|c| c.customer_email)
        .collect();
    assert_eq!(emails, ["cat@example.com", "ann@example.com"]);
    assert!(store.get(b1).await.expect("get").is_none());
    assert_eq!(
        store.load_views(&[b1]).await.expect("load")[&b1],
        ViewState::Deleted { version: 2 }
    );
    assert_eq!(store.list(&query()).await.expect("list").total, 3);

    // Redelivering an old event changes nothing.
    let before = store.summary().await.expect("summary");
    p.project(vec![(
        b1,
        1,
        created("Ben", "ben@example.com", "Desk", 2500),
        t(2),
    )])
    .await;
    assert_eq!(store.summary().await.expect("summary"), before);

    store.reset().await.expect("reset");
    let summary = store.summary().await.expect("summary");
    assert_eq!(
        (
            summary.total_orders,
            summary.total_revenue,
            summary.last_updated
        ),
        (0, Money::ZERO, None)
    );
    assert!(store.top_customers(10).await.expect("top").is_empty());
    assert_eq!(store.list(&query()).await.expect("list").total, 0);
    assert_eq!(store.load_checkpoint(PROJECTION).await.expect("load"), None);
}

pub async fn lists_filter_sort_page_and_search_case_insensitively(store: Arc<dyn OrderReadStore>) {
    let mut p = Projector::new(Arc::clone(&store));
    let t = |h: u8| datetime!(2026-04-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    p.project(vec![
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
    let list = async |q: ListQuery| store.list(&q).await.expect("list");

    let all = list(query()).await;
    assert_eq!(
        (all.total, ids_of(&all)),
        (4, vec![ids[3], ids[2], ids[1], ids[0]]),
        "newest first by default"
    );
    let sorted = async |sort| ids_of(&list(ListQuery { sort, ..query() }).await);
    assert_eq!(
        sorted(Sort::CreatedAt).await,
        [ids[0], ids[1], ids[2], ids[3]]
    );
    assert_eq!(
        sorted(Sort::TotalAmount).await,
        [ids[0], ids[2], ids[1], ids[3]]
    );
    assert_eq!(
        sorted(Sort::TotalAmountDesc).await,
        [ids[3], ids[1], ids[2], ids[0]]
    );

    assert_eq!(ids_of(&list(searching("mug")).await), [ids[2], ids[1]]);
    assert_eq!(ids_of(&list(searching("100% wool")).await), [ids[0]]);
    assert_eq!(
        ids_of(&list(searching("0%")).await),
        [ids[0]],
        "% is literal in a search"
    );
    assert!(
        list(searching("_ug")).await.orders.is_empty(),
        "_ is literal"
    );
    assert_eq!(ids_of(&list(searching("zoë q")).await), [ids[0]], "by name");
    assert_eq!(list(searching("shop.ex")).await.total, 2, "by e-mail");
    let tail = ids[3].to_string()[24..].to_string();
    assert_eq!(ids_of(&list(searching(&tail)).await), [ids[3]], "by id");
    assert!(list(searching("jacquard")).await.orders.is_empty());

    let filtered = ListQuery {
        customer_email: Some("max@shop.example".into()),
        min_total: Some(Money::from_cents(1000)),
        max_total: Some(Money::from_cents(1500)),
        created_from: Some(t(2)),
        created_to: Some(t(3)),
        status: Some(Status::Pending),
        ..query()
    };
    let page = list(filtered.clone()).await;
    assert_eq!(
        (page.total, ids_of(&page)),
        (2, vec![ids[2], ids[1]]),
        "filters are inclusive"
    );
    let narrower = ListQuery {
        min_total: Some(Money::from_cents(1001)),
        ..filtered
    };
    assert_eq!(ids_of(&list(narrower).await), [ids[1]]);
    let shipped = ListQuery {
        status: Some(Status::Shipped),
        ..query()
    };
    assert_eq!(list(shipped).await.total, 0);
    let searched_and_filtered = ListQuery {
        search: Some("mug".into()),
        max_total: Some(Money::from_cents(1000)),
        ..query()
    };
    assert_eq!(ids_of(&list(searched_and_filtered).await), [ids[2]]);

    let page2 = list(ListQuery {
        page: 2,
        limit: 3,
        ..query()
    })
    .await;
    assert_eq!(
        (page2.total, ids_of(&page2), page2.page, page2.limit),
        (4, vec![ids[0]], 2, 3)
    );
    let beyond = list(ListQuery {
        page: 9,
        limit: 3,
        ..query()
    })
    .await;
    assert_eq!((beyond.total, beyond.orders.len()), (4, 0));

    // A status change moves an order between status filters; a deletion takes it out of
    // every list and search.
    p.project(vec![(
        ids[1],
        2,
        status(Status::Pending, Status::Confirmed),
        t(5),
    )])
    .await;
    let confirmed = ListQuery {
        status: Some(Status::Confirmed),
        ..query()
    };
    assert_eq!(ids_of(&list(confirmed).await), [ids[1]]);
    p.project(vec![(ids[2], 2, deleted(), t(6))]).await;
    assert_eq!(ids_of(&list(searching("mug")).await), [ids[1]]);
    assert_eq!(list(query()).await.total, 3);
}

pub async fn views_stored_with_capitals_are_found_and_counted_under_the_lower_cased_e_mail(
    store: Arc<dyn OrderReadStore>,
) {
    // Views stored before stored events decoded lower-cased may hold capitals.
    let live = |email: &str, cents: i128| {
        ViewState::Live(Box::new(OrderView {
            order_id: Uuid::now_v7(),
            customer_name: "Ada".into(),
            customer_email: email.into(),
            items: Vec::new(),
            total_amount: Money::from_cents(cents),
            currency: "USD".into(),
            status: Status::Pending,
            cancellation_reason: None,
            shipping_address: None,
            created_at: datetime!(2026-01-01 00:00 UTC),
            updated_at: datetime!(2026-01-01 00:00 UTC),
            version: 1,
        }))
    };
    let mut batch = ReadModelBatch::default();
    for state in [live("Ada@Example.COM", 100), live("ada@example.com", 200)] {
        batch.record_change(&ViewState::Absent, &state);
        let id = state.live().expect("live").order_id;
        batch.views.push((id, state));
    }
    let origin = Checkpoint::origin(1);
    store
        .commit(PROJECTION, batch.into(), &origin, &past(&origin, 2))
        .await
        .expect("commit");
    let page = store
        .list(&ListQuery {
            customer_email: Some(EmailKey::new("ADA@example.com")),
            ..query()
        })
        .await
        .expect("list");
    assert_eq!(page.total, 2);
    let top = store.top_customers(5).await.expect("top customers");
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0].customer_email, "ada@example.com");
    assert_eq!(
        (top[0].customer_name.as_str(), top[0].order_count),
        ("Ada", 2)
    );
}

/// Orders created on four days, then changed, cancelled and deleted later; the figures
/// they leave are [`daily_expected`].
pub fn daily_history() -> Vec<Step> {
    let [a, b, c, d, e, g] = [(); 6].map(|()| Uuid::now_v7());
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
/// midnight; 12-01: one cancelled order (one deleted, one created and deleted); 12-02:
/// one order.
pub fn daily_expected() -> Vec<DailyFigures> {
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

async fn daily_of(store: &dyn OrderReadStore) -> Vec<DailyFigures> {
    store.daily(DAILY_FROM, DAILY_TO).await.expect("daily")
}

pub async fn the_figures_of_each_day_follow_creates_status_changes_cancels_and_deletes(
    store: Arc<dyn OrderReadStore>,
) {
    let mut p = Projector::new(Arc::clone(&store));
    let steps = daily_history();
    p.project(steps[..5].to_vec()).await;
    let day = |date, orders, cents| DailyFigures {
        date,
        orders,
        revenue: Money::from_cents(cents),
    };
    assert_eq!(
        daily_of(store.as_ref()).await,
        [
            day(date!(2026 - 11 - 30), 1, 1_000),
            day(date!(2026 - 12 - 01), 2, 3_000)
        ],
        "the day whose only order was deleted has no row left"
    );
    for step in &steps[5..] {
        p.project(vec![step.clone()]).await;
    }
    let stored = daily_of(store.as_ref()).await;
    assert_eq!(stored, daily_expected());
    assert_eq!(
        store
            .daily(date!(2026 - 12 - 01), date!(2026 - 12 - 01))
            .await
            .expect("daily"),
        [daily_expected()[1]],
        "both ends are included"
    );
    assert!(
        store
            .daily(date!(2026 - 12 - 03), date!(2027 - 01 - 01))
            .await
            .expect("daily")
            .is_empty()
    );
    // Summed over the days: the summary's totals.
    let summary = store.summary().await.expect("summary");
    let filled = fill_days(DAILY_FROM, DAILY_TO, &stored);
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
    p.project(vec![
        (gone, 1, created("Bo", "bo@example.com", "Desk", 800), at),
        (gone, 2, deleted(), at),
        (kept, 1, created("Cy", "cy@example.com", "Pen", 25), at),
    ])
    .await;
    assert_eq!(
        daily_of(store.as_ref()).await[2],
        day(date!(2026 - 12 - 02), 2, 750)
    );
    // A reset empties the model; the log projected again gives the same figures.
    store.reset().await.expect("reset");
    assert!(daily_of(store.as_ref()).await.is_empty());
    p.restart();
    p.project(steps).await;
    assert_eq!(daily_of(store.as_ref()).await, daily_expected());
}

/// Everything the queries answer, for comparing two stores.
async fn answers(store: &dyn OrderReadStore, ids: &[Uuid]) -> String {
    let queries = [
        query(),
        searching("engine"),
        searching("loom"),
        ListQuery {
            customer_email: Some("lovelace@example.com".into()),
            ..query()
        },
        ListQuery {
            customer_email: Some("ada@example.com".into()),
            ..query()
        },
        ListQuery {
            status: Some(Status::Pending),
            sort: Sort::TotalAmount,
            ..query()
        },
        ListQuery {
            page: 2,
            limit: 2,
            sort: Sort::CreatedAt,
            ..query()
        },
    ];
    let mut out = Vec::new();
    for q in &queries {
        out.push(format!("{q:?} -> {:?}", store.list(q).await.expect("list")));
    }
    for id in ids {
        out.push(format!("{id} -> {:?}", store.get(*id).await.expect("get")));
    }
    out.push(format!(
        "{:?}",
        store.load_views(ids).await.map(|v| {
            let mut v: Vec<_> = v.into_iter().collect();
            v.sort_by_key(|(id, _)| *id);
            v
        })
    ));
    out.push(format!("{:?}", store.summary().await.expect("summary")));
    out.push(format!("{:?}", store.top_customers(10).await.expect("top")));
    out.push(format!("{:?}", daily_of(store).await));
    out.push(format!(
        "{:?}",
        store.load_checkpoint(PROJECTION).await.expect("checkpoint")
    ));
    out.join("\n")
}

pub async fn a_bulk_load_answers_every_query_like_batches_applied_one_by_one(
    usual: Arc<dyn OrderReadStore>,
    bulk: Arc<dyn OrderReadStore>,
) {
    let t = |m: i64| datetime!(2026-11-26 10:00 UTC) + time::Duration::minutes(m);
    let [a, b, c, d] = [(); 4].map(|()| Uuid::now_v7());
    let mut steps = vec![
        (
            a,
            1,
            created("Ada", "lovelace@example.com", "Analytical Engine", 12_000),
            t(0),
        ),
        (
            b,
            1,
            created("Ada L.", "lovelace@example.com", "Difference Engine", 5_000),
            t(0),
        ),
        (c, 1, created("Bob", "bob@example.com", "Loom", 700), t(1)),
        (c, 2, deleted(), t(2)),
        (b, 2, status(Status::Pending, Status::Confirmed), t(3)),
        (d, 1, created("Cy", "cy@example.com", "Pen", 300), t(4)),
        (d, 2, cancelled(), t(5)),
    ];
    steps.extend(daily_history());
    let ids: Vec<Uuid> = {
        let mut ids: Vec<Uuid> = steps.iter().map(|s| s.0).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let mut one_by_one = Projector::new(Arc::clone(&usual));
    for step in &steps {
        one_by_one.project(vec![step.clone()]).await;
    }
    let mut loading = Projector::new(Arc::clone(&bulk));
    bulk.begin_bulk()
        .await
        .expect("bulk mode on an empty store");
    for chunk in steps.chunks(4) {
        loading.project(chunk.to_vec()).await;
    }
    // The positions differ (one batch per step against one per four): compare from the
    // same checkpoint.
    bulk.finish_bulk().await.expect("finish");
    bulk.finish_bulk()
        .await
        .expect("finishing twice is harmless");
    let expected = answers(usual.as_ref(), &ids).await;
    let loaded = answers(bulk.as_ref(), &ids).await;
    let strip = |s: &str| s.rsplit_once('\n').map(|(rest, _)| rest.to_owned());
    assert_eq!(
        strip(&loaded),
        strip(&expected),
        "every answer but the checkpoint"
    );
    assert_eq!(
        bulk.list(&searching("engine")).await.expect("search").total,
        2
    );
    let mut expected_days = vec![DailyFigures {
        date: date!(2026 - 11 - 26),
        orders: 3,
        revenue: Money::from_cents(17_000),
    }];
    expected_days.extend(daily_expected());
    assert_eq!(
        daily_of(bulk.as_ref()).await,
        expected_days,
        "the deleted order left its day; a day with no order left has no row"
    );
    assert_eq!(
        bulk.top_customers(1).await.expect("top")[0].customer_name,
        "Ada L.",
        "both of her orders have one createdAt: the later id names her"
    );

    // After the bulk load, batches keep the search index in step as usual.
    let e = Uuid::now_v7();
    loading
        .project(vec![(
            e,
            1,
            created("Eve", "eve@example.com", "Jacquard loom", 900),
            t(6),
        )])
        .await;
    assert_eq!(
        bulk.list(&searching("jacquard"))
            .await
            .expect("search")
            .total,
        1
    );
}

pub async fn generations_are_apart_until_one_is_made_active(provider: Arc<dyn ReadStoreProvider>) {
    let active = provider
        .open_active()
        .await
        .expect("open the active generation");
    assert_eq!(provider.active_id().await.expect("active id"), active.id);
    let mut live = Projector::new(Arc::clone(&active.store));
    let old = Uuid::now_v7();
    live.project(vec![(
        old,
        1,
        created("Ada", "ada@example.com", "Lamp", 100),
        datetime!(2026-01-01 00:00 UTC),
    )])
    .await;

    let next = provider
        .create_generation()
        .await
        .expect("a new generation");
    assert_ne!(next.id, active.id);
    assert_eq!(
        provider.active_id().await.expect("active id"),
        active.id,
        "a new generation is not active"
    );
    assert!(
        next.store.get(old).await.expect("get").is_none(),
        "it starts empty"
    );
    assert_eq!(
        next.store.load_checkpoint(PROJECTION).await.expect("load"),
        None
    );
    let mut rebuilt = Projector::new(Arc::clone(&next.store));
    let new = Uuid::now_v7();
    rebuilt
        .project(vec![(
            new,
            1,
            created("Bo", "bo@example.com", "Desk", 200),
            datetime!(2026-01-02 00:00 UTC),
        )])
        .await;
    assert!(
        active.store.get(new).await.expect("get").is_none(),
        "generations share nothing"
    );
    assert_eq!(
        active.store.summary().await.expect("summary").total_orders,
        1
    );

    provider.activate(&next.id).await.expect("activate");
    assert_eq!(provider.active_id().await.expect("active id"), next.id);
    let reopened = provider
        .open_active()
        .await
        .expect("open the active generation");
    assert_eq!(reopened.id, next.id);
    assert!(reopened.store.get(new).await.expect("get").is_some());
    assert!(reopened.store.get(old).await.expect("get").is_none());

    let lock = provider
        .try_lock_rebuild()
        .await
        .expect("lock")
        .expect("free");
    let spare = provider
        .create_generation()
        .await
        .expect("another generation");
    assert_ne!(spare.id, next.id);
    drop((active, spare));
    let dropped = provider.drop_inactive().await.expect("drop the inactive");
    assert!(dropped >= 2, "the old and the spare generation: {dropped}");
    assert_eq!(provider.drop_inactive().await.expect("again"), 0);
    drop(lock);
    assert_eq!(provider.active_id().await.expect("active id"), next.id);
    let still = provider.open_active().await.expect("open");
    assert!(
        still.store.get(new).await.expect("get").is_some(),
        "the active one is kept"
    );
}

pub async fn one_holder_at_a_time_has_the_rebuild_lock(provider: Arc<dyn ReadStoreProvider>) {
    let _active = provider.open_active().await.expect("open");
    let held = provider
        .try_lock_rebuild()
        .await
        .expect("lock")
        .expect("free at first");
    assert!(
        provider.try_lock_rebuild().await.expect("lock").is_none(),
        "held by the first"
    );
    drop(held);
    let again = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(lock) = provider.try_lock_rebuild().await.expect("lock") {
                return lock;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("free again once dropped");
    drop(again);
}
