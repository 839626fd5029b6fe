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

mod daily;
mod fencing;
mod generations;
mod keys;
mod queries;
mod writes;

pub use daily::*;
pub use fencing::*;
pub use generations::*;
pub use keys::*;
pub use queries::*;
pub use writes::*;

use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use ordo_es::{Checkpoint, DomainEvent, Metadata, Position, RecordedEvent, StreamId};

use crate::event::{OrderCancelled, OrderCreated, OrderDeleted, OrderStatusChanged};
use crate::read_store::{ListQuery, OrderReadStore, ParkedEvent, ReadModelBatch};
use crate::values::{Currency, CustomerEmail, LineItem, Status};
use crate::view::{OrderPage, OrderView, ViewState};
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
            shards_committing_at_once_keep_the_shared_figures_exact,
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

/// Expands to one `#[tokio::test]` per case of a [`ReadStoreProvider`](crate::read_store::ReadStoreProvider).
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
pub(crate) const PROJECTION: &str = "orders";

/// (order, version, event, occurredAt): an order's createdAt is its first event's time.
pub type Step = (Uuid, u64, OrderEvent, OffsetDateTime);

/// What the projection does, without its runner: each batch of steps is folded over
/// the stored states and committed with the checkpoint moved past it.
#[derive(Debug)]
pub struct Projector {
    store: Arc<dyn OrderReadStore>,
    /// The projection (checkpoint) it commits under.
    name: String,
    checkpoint: Checkpoint,
    next_position: u64,
}

impl Projector {
    pub fn new(store: Arc<dyn OrderReadStore>) -> Self {
        Self::named(store, PROJECTION)
    }

    /// A projector committing under a checkpoint of its own, `name` (a shard's).
    pub fn named(store: Arc<dyn OrderReadStore>, name: &str) -> Self {
        Self {
            store,
            name: name.to_owned(),
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
            .commit(&self.name, Arc::new(batch), &self.checkpoint, &to)
            .await
            .expect("commit");
        self.checkpoint = to;
    }

    /// Starts again from the origin (after a reset).
    pub fn restart(&mut self) {
        self.checkpoint = Checkpoint::origin(1);
    }
}

/// A live pending view of `email`'s order of `cents`, stored as given (no fold).
pub(crate) fn live_view(email: &str, cents: i128) -> ViewState {
    ViewState::Live(Box::new(OrderView {
        order_id: Uuid::now_v7(),
        customer_name: Some("Ada".into()),
        customer_email: Some(email.into()),
        items: Vec::new(),
        total_amount: Money::from_cents(cents),
        currency: "USD".into(),
        status: Status::Pending,
        cancellation_reason: None,
        shipping_address: None,
        created_at: datetime!(2026-01-01 00:00 UTC),
        updated_at: datetime!(2026-01-01 00:00 UTC),
        version: 1,
        personal_data_erased: false,
    }))
}

/// The batch that stores `states` as new orders.
pub(crate) fn storing(states: Vec<ViewState>) -> ReadModelBatch {
    let mut batch = ReadModelBatch::default();
    for state in states {
        batch.record_change(&ViewState::Absent, &state);
        let id = state.live().expect("live").order_id;
        batch.views.push((id, state));
    }
    batch
}

pub fn created(name: &str, email: &str, product: &str, cents: i128) -> OrderEvent {
    let price = Money::from_cents(cents);
    OrderEvent::Created(OrderCreated {
        customer_name: Some(name.into()),
        customer_email: Some(CustomerEmail::parse(email).expect("email")),
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
        personal_data_erased: false,
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

pub(crate) fn past(checkpoint: &Checkpoint, n: u64) -> Checkpoint {
    let mut to = checkpoint.clone();
    to.advance(&Position::new(0, n, n));
    to
}

pub(crate) fn parked_event(n: u64, error: &str) -> ParkedEvent {
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

pub(crate) fn ids_of(page: &OrderPage) -> Vec<Uuid> {
    page.orders.iter().map(|o| o.order_id).collect()
}

pub(crate) fn query() -> ListQuery {
    ListQuery::default()
}

pub(crate) fn searching(term: &str) -> ListQuery {
    ListQuery {
        search: Some(term.into()),
        ..query()
    }
}
