//! The read-store contract: what every read-model backend implements, the query shapes,
//! and the batches of changes folded from events ([`ReadModelBatch::fold`]) that a store
//! applies with its checkpoint. The projection that drives it lives in `ordo-app`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use ordo_es::{BoxError, Checkpoint, DomainEvent, Lease, ProjectionError, RecordedEvent};

use crate::event::OrderEvent;
use crate::money::Money;
use crate::order::Order;
use crate::values::{EmailKey, Status};
use crate::view::{
    DailyFigures, DayDelta, OrderPage, OrderView, Summary, TopCustomer, ViewState, order_day,
    summary_contribution,
};

/// Sort orders of lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    CreatedAtDesc,
    CreatedAt,
    TotalAmount,
    TotalAmountDesc,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "createdAt" => Some(Sort::CreatedAt),
            "-createdAt" => Some(Sort::CreatedAtDesc),
            "totalAmount" => Some(Sort::TotalAmount),
            "-totalAmount" => Some(Sort::TotalAmountDesc),
            _ => None,
        }
    }
}

/// A list query. Every filter is optional and inclusive; results are paged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub status: Option<Status>,
    /// Orders of the customer with this key (e-mails compare case-insensitively).
    pub customer_email: Option<EmailKey>,
    pub min_total: Option<Money>,
    pub max_total: Option<Money>,
    pub created_from: Option<OffsetDateTime>,
    pub created_to: Option<OffsetDateTime>,
    /// Case-insensitive substring of id, customer name, e-mail or a product name;
    /// lower-cased.
    pub search: Option<String>,
    pub sort: Sort,
    /// 1-based.
    pub page: u32,
    /// 1..=100.
    pub limit: u32,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            status: None,
            customer_email: None,
            min_total: None,
            max_total: None,
            created_from: None,
            created_to: None,
            search: None,
            sort: Sort::default(),
            page: 1,
            limit: 20,
        }
    }
}

impl ListQuery {
    /// True when nothing but (optionally) the status narrows the list: its total is then
    /// a summary counter.
    pub fn only_status_filter(&self) -> bool {
        self.customer_email.is_none()
            && self.min_total.is_none()
            && self.max_total.is_none()
            && self.created_from.is_none()
            && self.created_to.is_none()
            && self.search.is_none()
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page.saturating_sub(1)) * u64::from(self.limit)
    }
}

/// The text searched for an order: id, name, e-mail and product names, lower-cased and
/// separated by newlines (which no searched term can contain). An order whose personal
/// data is erased is found by its id and products only.
pub fn search_text(view: &OrderView) -> String {
    let mut text = format!(
        "{}\n{}\n{}",
        view.order_id,
        view.customer_name.as_deref().unwrap_or(""),
        view.customer_email.as_deref().unwrap_or("")
    );
    for item in &view.items {
        text.push('\n');
        text.push_str(&item.product_name);
    }
    text.to_lowercase()
}

/// Everything one projection batch changes, applied by the read store in one
/// transaction with the checkpoint.
#[derive(Clone, Debug, Default)]
pub struct ReadModelBatch {
    /// The final state of each order the batch touched.
    pub views: Vec<(Uuid, ViewState)>,
    /// Change in the number of live orders per status.
    pub status_delta: [i64; 6],
    /// Change in revenue (live, not cancelled).
    pub revenue_delta: Money,
    /// Customers whose top-customer row changes.
    pub customers: BTreeSet<EmailKey>,
    /// Per customer: the change in counted orders (neither cancelled nor deleted) and in
    /// their spend. The name (of the most recent counted order) is looked up by the store.
    pub customer_deltas: std::collections::BTreeMap<EmailKey, (i64, Money)>,
    /// The latest occurredAt among the batch's events (the summary keeps the maximum).
    pub last_event_at: Option<OffsetDateTime>,
    /// Per UTC day of createdAt: the change in the day's orders and revenue (see
    /// [`DailyFigures`]). Days whose changes cancel out within the batch are left out.
    pub daily_deltas: BTreeMap<Date, DayDelta>,
}

impl ReadModelBatch {
    /// Accounts for one order going from `before` to `after`: summary counters, the
    /// top-customer deltas and the daily deltas.
    pub fn record_change(&mut self, before: &ViewState, after: &ViewState) {
        for (state, sign) in [(before, -1i64), (after, 1i64)] {
            if let Some(view) = state.live() {
                let day = order_day(view);
                let delta = self.daily_deltas.entry(day).or_default();
                delta.orders += sign;
                if view.counts_as_revenue() {
                    delta.revenue = if sign > 0 {
                        delta.revenue + view.total_amount
                    } else {
                        delta.revenue - view.total_amount
                    };
                }
                if *delta == DayDelta::default() {
                    self.daily_deltas.remove(&day);
                }
            }
            if let Some((status, revenue)) = summary_contribution(state) {
                self.status_delta[status.index()] += sign;
                self.revenue_delta = if sign > 0 {
                    self.revenue_delta + revenue
                } else {
                    self.revenue_delta - revenue
                };
            }
            // An order whose personal data is erased belongs to no customer.
            if let Some((view, email)) = state.live().and_then(|v| Some((v, v.customer_key()?))) {
                let email = &email;
                if !self.customers.contains(email) {
                    self.customers.insert(email.clone());
                }
                if view.counts_as_revenue() {
                    if !self.customer_deltas.contains_key(email) {
                        self.customer_deltas.insert(email.clone(), (0, Money::ZERO));
                    }
                    let Some(entry) = self.customer_deltas.get_mut(email) else {
                        continue;
                    };
                    entry.0 += sign;
                    entry.1 = if sign > 0 {
                        entry.1 + view.total_amount
                    } else {
                        entry.1 - view.total_amount
                    };
                }
            }
        }
    }
}

/// Read-store failures.
#[derive(Debug, thiserror::Error)]
pub enum ReadStoreError {
    #[error("read store unavailable")]
    Unavailable(#[source] BoxError),
    /// The read store's query queue is full (the application's bounded queue in front of
    /// the read stores turned the query away): transient.
    #[error(transparent)]
    Overloaded(ordo_es::Overloaded),
    #[error("the projection checkpoint was moved by another writer")]
    CheckpointMoved,
    /// A fenced write's lease is not its shard's current lease any more (taken over or
    /// released): the writer lost the shard and must stop writing it.
    #[error("the lease of shard {shard} of {projection} was taken over or released")]
    LeaseLost { projection: String, shard: u32 },
    #[error("corrupt read model: {0}")]
    Corrupt(String),
    #[error("read store failure")]
    Other(#[source] BoxError),
}

/// What a projection writes through: its checkpoint, the stored state of the orders it
/// folds, its commits and parked events, and bulk mode. Every write moves the
/// projection's checkpoint by compare-and-set, so that of two writers from one
/// checkpoint exactly one wins.
#[async_trait]
pub trait ReadModelWriter: Send + Sync + fmt::Debug + 'static {
    async fn load_checkpoint(&self, projection: &str)
    -> Result<Option<Checkpoint>, ReadStoreError>;

    /// The checkpoints stored under each of `keys`, in their order (see [`shard_key`]).
    /// Stores that can read them in one round trip do.
    async fn load_checkpoints(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Checkpoint>>, ReadStoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.load_checkpoint(key).await?);
        }
        Ok(out)
    }

    /// The stored state of each order in `ids` that the read store knows.
    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError>;

    /// Applies `batch` and moves the checkpoint of `projection` from `from` to `to` in
    /// one transaction; [`ReadStoreError::CheckpointMoved`] (and no change) when the
    /// stored checkpoint is not `from` (`None` stored counts as the origin).
    async fn commit(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        self.commit_fenced(projection, batch, from, to, None).await
    }

    /// [`commit`](ReadModelWriter::commit), fenced by `fence` when given: in the same
    /// transaction, and before anything is written, the store checks that the lease is
    /// still its shard's current one ([`ordo_es::LeaseStore::is_current`]); otherwise
    /// [`ReadStoreError::LeaseLost`] and no change. A takeover committed while this write
    /// runs need not wait for it: the successor's first write moves the shard's
    /// checkpoint from where this one does, and the compare-and-set lets one of them
    /// commit. A store that keeps no leases refuses every fence.
    async fn commit_fenced(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError>;

    /// Records `parked` (an event the projection cannot apply) and moves the checkpoint
    /// of `projection` from `from` to `to` past it, in one transaction, with the same
    /// compare-and-set as [`commit`](ReadModelWriter::commit). The event is recorded under
    /// [`projection_of`] the key, so a shard's parked events are listed with the
    /// projection's.
    async fn park(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        self.park_fenced(projection, parked, from, to, None).await
    }

    /// [`park`](ReadModelWriter::park), fenced as
    /// [`commit_fenced`](ReadModelWriter::commit_fenced) is.
    async fn park_fenced(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError>;

    /// Prepares an empty store that serves no queries (a generation being rebuilt) to be
    /// filled by its projection in large batches: the store may defer what only queries
    /// need (the search index) and per-commit durability until
    /// [`finish_bulk`](ReadModelWriter::finish_bulk). Stores without such shortcuts do
    /// nothing.
    async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        Ok(())
    }

    /// Builds what [`begin_bulk`](ReadModelWriter::begin_bulk) deferred and makes every
    /// committed batch durable, in one step between two batches; afterwards the store
    /// takes batches as usual and can serve queries. Does nothing when not in bulk mode.
    async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        Ok(())
    }
}

/// What the API reads: orders, lists, the summary, top customers, the daily figures and
/// the parked events. Nothing here writes.
#[async_trait]
pub trait OrderQueries: Send + Sync + fmt::Debug + 'static {
    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError>;
    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError>;
    async fn summary(&self) -> Result<Summary, ReadStoreError>;
    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError>;

    /// The stored figures of the UTC days from `from` to `to` (both included), oldest
    /// first. Days without orders may be missing: [`fill_days`](crate::view::fill_days)
    /// puts them in as zeros.
    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError>;

    /// The events parked by `projection`, oldest first.
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError>;
}

/// What the read side does with a store as a whole: empty it before a rebuild, make it
/// durable before a stop, and check that it answers.
#[async_trait]
pub trait ReadStoreLifecycle: Send + Sync + fmt::Debug + 'static {
    /// Drops every read model, parked event and checkpoint (before a full rebuild).
    async fn reset(&self) -> Result<(), ReadStoreError>;

    /// Makes everything committed durable before the process stops (called once the
    /// projections writing to the store have stopped; the store stays usable). Stores
    /// that sync at every commit do nothing.
    async fn close(&self) -> Result<(), ReadStoreError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), ReadStoreError>;

    /// After an erasure rewrote read models: removes what the store keeps of the old
    /// rows where it can (SQLite: merges the full-text indexes, so the erased text's
    /// entries go, and empties the log; PostgreSQL: VACUUM). Stores that keep nothing
    /// behind do nothing.
    async fn purge_deleted(&self) -> Result<(), ReadStoreError> {
        Ok(())
    }
}

/// Where the order read models live (SQLite, PostgreSQL, memory): the three sides of the
/// contract together, which is what a backend implements and a
/// [`ReadGeneration`] holds. Storage only: what to store is decided by the fold
/// ([`ReadModelBatch::fold`]). Code that needs one side takes that trait
/// (`Arc<dyn OrderReadStore>` converts to each).
pub trait OrderReadStore: ReadModelWriter + OrderQueries + ReadStoreLifecycle {}

impl<T: ReadModelWriter + OrderQueries + ReadStoreLifecycle + ?Sized> OrderReadStore for T {}

/// The checkpoint key of shard `shard` of `projection`: a projection divided into
/// shards keeps one checkpoint per shard (`orders/3`), each moved by its own
/// compare-and-set, so that the shards' commits never contend for one row.
pub fn shard_key(projection: &str, shard: u32) -> String {
    format!("{projection}/{shard}")
}

/// The projection a checkpoint key belongs to: `orders` for `orders` and `orders/3`.
/// Parked events are recorded under it, so that the events every shard parked are listed
/// together.
pub fn projection_of(key: &str) -> &str {
    key.split_once('/')
        .map_or(key, |(projection, _)| projection)
}

/// The cursor `whole` (a checkpoint of the whole log) reached in `partition`, of a log
/// of `partitions`. A checkpoint of one partition in a log of several was written before
/// the PostgreSQL log was divided into partitions; its cursor is a point in the global
/// (transaction id, position) order that every partition's order follows, so it covers in
/// each partition what it covered in the one.
pub fn cursor_in(whole: &Checkpoint, partition: u32, partitions: u32) -> ordo_es::Cursor {
    if whole.partitions() == 1 && partitions > 1 {
        whole.cursor(0)
    } else {
        whole.cursor(partition)
    }
}

/// The most partitions any event store has (Redis allows 1024): the shards a checkpoint
/// key can name.
pub const MAX_SHARDS: u32 = 1024;

/// What `projection` has stored in `store` over the whole log of `partitions` (when
/// `None`: as many as its checkpoints say): per partition, the cursor of that shard's
/// checkpoint ([`shard_key`]), or where there is none, what the whole-log checkpoint
/// reached there (see [`cursor_in`]). `None` when nothing was ever stored. One read.
pub async fn stored_projection_checkpoint(
    store: &dyn ReadModelWriter,
    projection: &str,
    partitions: Option<u32>,
) -> Result<Option<Checkpoint>, ReadStoreError> {
    // Without the count, every key a shard can have (a shard with no event yet has no
    // row) is read, and the count is the one the checkpoints found span.
    let wanted = partitions.unwrap_or(MAX_SHARDS);
    let mut keys = vec![projection.to_owned()];
    keys.extend((0..wanted).map(|p| shard_key(projection, p)));
    let stored = store.load_checkpoints(&keys).await?;
    let (whole, shards) = stored
        .split_first()
        .map_or((None, &[][..]), |(w, s)| (w.as_ref(), s));
    if whole.is_none() && shards.iter().all(Option::is_none) {
        return Ok(None);
    }
    let partitions = partitions.unwrap_or_else(|| {
        shards
            .iter()
            .flatten()
            .chain(whole)
            .map(Checkpoint::partitions)
            .max()
            .unwrap_or(1)
    });
    let mut combined = Checkpoint::origin(partitions);
    for partition in 0..partitions {
        let cursor = match shards.get(partition as usize).and_then(Option::as_ref) {
            Some(shard) => shard.cursor(partition),
            None => whole.map_or(ordo_es::Cursor::ORIGIN, |w| {
                cursor_in(w, partition, partitions)
            }),
        };
        combined.advance(&ordo_es::Position { partition, cursor });
    }
    Ok(Some(combined))
}

/// The error of a store that keeps no leases, asked for a fenced write.
pub fn fencing_unsupported(store: &str) -> ReadStoreError {
    ReadStoreError::Other(
        format!("the {store} read store keeps no leases and cannot fence a write").into(),
    )
}

/// For a store that keeps no leases: `Ok` for an unfenced write, the refusal for a fenced
/// one.
pub fn refuse_fence(fence: Option<&Lease>, store: &str) -> Result<(), ReadStoreError> {
    match fence {
        Some(_) => Err(fencing_unsupported(store)),
        None => Ok(()),
    }
}

/// An event a projection could not apply, kept aside and reported instead of stalling
/// every event behind it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ParkedEvent {
    pub position: String,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub error: String,
    #[serde(with = "time::serde::rfc3339")]
    pub parked_at: OffsetDateTime,
}

/// A read-store generation: a complete, separate set of read models.
#[derive(Clone, Debug)]
pub struct ReadGeneration {
    /// Stable name (a file name, a schema name).
    pub id: String,
    pub store: Arc<dyn OrderReadStore>,
}

/// Opens read stores, and makes new generations of them for blue-green rebuilds: a new
/// generation is built beside the active one, then made active in one step.
#[async_trait]
pub trait ReadStoreProvider: Send + Sync + fmt::Debug + 'static {
    /// The generation queries are served from (persisted across restarts).
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError>;
    /// A new, empty generation that is not active.
    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError>;
    /// Makes generation `id` the active one, durably.
    async fn activate(&self, id: &str) -> Result<(), ReadStoreError>;
    /// Removes every generation except the active one; returns how many. Call it only
    /// while holding the [`RebuildLock`].
    async fn drop_inactive(&self) -> Result<u32, ReadStoreError>;
    /// The id of the active generation as stored now: another process may have switched.
    async fn active_id(&self) -> Result<String, ReadStoreError>;
    /// The right, across every process on these read models, to create and drop
    /// generations, held while the returned lock lives; `None` when another holds it.
    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError>;
}

/// A read-only look at a read store's generations, for `ordo status`: nothing it does
/// creates, migrates or locks anything, so it runs safely beside a running service (or
/// on a store that does not exist, which it reports instead of creating).
#[async_trait]
pub trait ReadStoreInspector: Send + Sync + fmt::Debug + 'static {
    /// The id of the active generation as stored now.
    async fn active_generation(&self) -> Result<String, ReadStoreError>;
    /// Every generation that exists, the active one included (a generation that is not
    /// active is a rebuild being loaded, or one an interrupted rebuild left behind).
    async fn generation_ids(&self) -> Result<Vec<String>, ReadStoreError>;
    /// True while a rebuild (or the bulk load a service starts with) runs on these read
    /// models, in any process.
    async fn rebuild_running(&self) -> Result<bool, ReadStoreError>;
    /// The checkpoint `projection` has committed in `generation`, over the whole log (every
    /// shard's, where the projection is divided into shards: see
    /// [`stored_projection_checkpoint`]); `None` when it never committed one (or the
    /// generation holds no read models yet).
    async fn checkpoint(
        &self,
        generation: &str,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError>;
    /// The events `projection` parked in `generation`, oldest first.
    async fn parked(
        &self,
        generation: &str,
        projection: &str,
    ) -> Result<Vec<ParkedEvent>, ReadStoreError>;
}

/// Held by whoever may create and drop read-store generations; released when dropped.
pub struct RebuildLock(
    #[allow(dead_code, reason = "held for its Drop")] Box<dyn std::any::Any + Send + Sync>,
);

impl RebuildLock {
    /// Wraps whatever releases the lock when dropped.
    pub fn new(guard: impl std::any::Any + Send + Sync) -> Self {
        Self(Box::new(guard))
    }

    /// The lock of one holder at a time in this process: takes `flag` when it is clear,
    /// and clears it when the lock is dropped; `None` while another holds it.
    pub fn take_flag(flag: &Arc<std::sync::atomic::AtomicBool>) -> Option<RebuildLock> {
        use std::sync::atomic::Ordering;
        /// Clears the flag when dropped.
        struct Clear(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Clear {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then(|| RebuildLock::new(Clear(Arc::clone(flag))))
    }
}

impl fmt::Debug for RebuildLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RebuildLock")
    }
}

/// Folding events into batches: the read side's rules, with no I/O.
impl ReadModelBatch {
    /// Folds `events` over the stored states into one batch. Events already folded
    /// (version at or below the stored one) are skipped: redelivery is harmless.
    pub fn fold(
        events: &[RecordedEvent],
        mut states: HashMap<Uuid, ViewState>,
    ) -> Result<ReadModelBatch, ProjectionError> {
        let mut batch = ReadModelBatch::default();
        let mut touched = Vec::new();
        let mut seen = HashSet::new();
        for envelope in events {
            if envelope.aggregate_type != <Order as ordo_es::Aggregate>::TYPE {
                continue;
            }
            let order_id = order_id_of(envelope)?;
            // The latest time seen, not the last applied: partitions are read in no fixed
            // order, and a replay must give the same answer as the live projection. An
            // event already folded counts too: a repair may have folded it without it.
            batch.last_event_at = batch.last_event_at.max(Some(envelope.occurred_at));
            let state = states.remove(&order_id).unwrap_or(ViewState::Absent);
            if envelope.version <= state.version() {
                states.insert(order_id, state);
                continue;
            }
            if envelope.version != state.version() + 1 {
                return Err(ProjectionError::Failed(
                    format!(
                        "order {order_id}: event version {} follows version {} (a gap)",
                        envelope.version,
                        state.version()
                    )
                    .into(),
                ));
            }
            let event = OrderEvent::decode(
                &envelope.event_type,
                envelope.schema_version,
                &envelope.data,
            )
            .map_err(|e| ProjectionError::Failed(Box::new(e)))?;
            let state_before_customer = state.clone();
            let after_state = state.evolve(envelope, order_id, &event);
            batch.record_change(&state_before_customer, &after_state);
            if seen.insert(order_id) {
                touched.push(order_id);
            }
            states.insert(order_id, after_state);
        }
        batch.views = touched
            .into_iter()
            .filter_map(|id| states.remove(&id).map(|s| (id, s)))
            .collect();
        Ok(batch)
    }

    /// The batch that turns the `stored` states into the `target` states (a repair:
    /// `target` was folded from the event store). Orders whose stored version is ahead
    /// of the target (the live projection moved on) are left alone.
    pub fn repair(
        stored: &HashMap<Uuid, ViewState>,
        targets: Vec<(Uuid, ViewState)>,
    ) -> ReadModelBatch {
        let mut batch = ReadModelBatch::default();
        for (id, target) in targets {
            let before = stored.get(&id).cloned().unwrap_or(ViewState::Absent);
            if before.version() > target.version() || before == target {
                continue;
            }
            batch.record_change(&before, &target);
            batch.views.push((id, target));
        }
        batch
    }
}

/// The order id an order event's stream id names.
pub fn order_id_of(envelope: &RecordedEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(envelope.stream_id.as_str()).map_err(|e| {
        ProjectionError::Failed(
            format!(
                "order stream id {:?} is not a UUID: {e}",
                envelope.stream_id.as_str()
            )
            .into(),
        )
    })
}

impl From<ReadStoreError> for ProjectionError {
    fn from(e: ReadStoreError) -> Self {
        match e {
            // Another writer holds the shard now: reload, as after a lost compare-and-set.
            ReadStoreError::CheckpointMoved => ProjectionError::CheckpointMoved,
            // Another process owns the shard now: this runner stops writing it.
            lost @ ReadStoreError::LeaseLost { .. } => ProjectionError::LeaseLost(lost.to_string()),
            ReadStoreError::Unavailable(source) => ProjectionError::Unavailable(source),
            ReadStoreError::Overloaded(full) => ProjectionError::Unavailable(Box::new(full)),
            other => ProjectionError::Failed(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    fn live(created_at: OffsetDateTime, cents: i128, status: Status) -> ViewState {
        let mut view: OrderView = serde_json::from_value(serde_json::json!({
            "orderId": Uuid::nil(),
            "customerName": "Ada",
            "customerEmail": "ada@example.com",
            "items": [],
            "totalAmount": 0,
            "currency": "EUR",
            "status": "pending",
            "cancellationReason": null,
            "shippingAddress": null,
            "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-01T00:00:00Z",
            "version": 1,
        }))
        .expect("view");
        view.created_at = created_at;
        view.total_amount = Money::from_cents(cents);
        view.status = status;
        ViewState::Live(Box::new(view))
    }

    fn delta(orders: i64, cents: i128) -> DayDelta {
        DayDelta {
            orders,
            revenue: Money::from_cents(cents),
        }
    }

    #[test]
    fn daily_deltas_follow_creates_status_changes_cancels_and_deletes() {
        let late = datetime!(2026-03-01 23:59:59.999 UTC);
        let early = datetime!(2026-03-02 00:00 UTC);
        let mut batch = ReadModelBatch::default();
        batch.record_change(&ViewState::Absent, &live(late, 1_000, Status::Pending));
        batch.record_change(&ViewState::Absent, &live(early, 250, Status::Pending));
        assert_eq!(
            batch.daily_deltas,
            BTreeMap::from([
                (date!(2026 - 03 - 01), delta(1, 1_000)),
                (date!(2026 - 03 - 02), delta(1, 250))
            ])
        );

        // A status change moves nothing: the day is left out.
        let mut batch = ReadModelBatch::default();
        batch.record_change(
            &live(late, 1_000, Status::Pending),
            &live(late, 1_000, Status::Shipped),
        );
        assert!(batch.daily_deltas.is_empty());

        // A cancelled order still counts as an order, not as revenue; deleted, as neither.
        let mut batch = ReadModelBatch::default();
        batch.record_change(
            &live(late, 1_000, Status::Shipped),
            &live(late, 1_000, Status::Cancelled),
        );
        assert_eq!(batch.daily_deltas[&date!(2026 - 03 - 01)], delta(0, -1_000));
        batch.record_change(
            &live(late, 1_000, Status::Cancelled),
            &ViewState::Deleted { version: 4 },
        );
        batch.record_change(
            &live(early, 250, Status::Confirmed),
            &ViewState::Deleted { version: 3 },
        );
        assert_eq!(
            batch.daily_deltas,
            BTreeMap::from([
                (date!(2026 - 03 - 01), delta(-1, -1_000)),
                (date!(2026 - 03 - 02), delta(-1, -250))
            ])
        );

        // Created and deleted within one batch: nothing to write.
        let mut batch = ReadModelBatch::default();
        let created = live(early, 700, Status::Pending);
        batch.record_change(&ViewState::Absent, &created);
        batch.record_change(&created, &ViewState::Deleted { version: 2 });
        assert!(batch.daily_deltas.is_empty());
        assert_eq!(batch.revenue_delta, Money::ZERO);
    }
}
