//! What the read side's tests share: logs to project, read stores that fail on purpose,
//! and read sides started with the tests' settings.
#![allow(
    unused_imports,
    reason = "the imports are shared with the test modules"
)]

pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{AtomicU32, Ordering};
pub(crate) use std::time::Duration;

pub(crate) use async_trait::async_trait;
pub(crate) use serde_json::json;
pub(crate) use tokio::sync::watch;
pub(crate) use uuid::Uuid;

pub(crate) use ordo_app::hooks::{Handed, Held, Hooked, HookedStores, ReadStoreHooks};
pub(crate) use ordo_app::read_side::{ReadSide, ReadSideOptions, RebuildError};
pub(crate) use ordo_app::{
    CommandContext, InMemoryReadStore, InMemoryReadStores, OrderProjection, OrderService,
};
pub(crate) use ordo_domain::{
    CreateOrder, ListQuery, OrderReadStore, ParkedEvent, ReadGeneration, ReadModelBatch,
    ReadStoreError, ReadStoreProvider, RebuildLock, Status,
};
pub(crate) use ordo_es::{
    Checkpoint, EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, Position,
    Projection, ProjectionError, ProjectionHandle, ProjectionRunner, ProjectionState,
    RecordedEvent, RunnerConfig, StreamId,
};
pub(crate) use ordo_testkit::eventually;

/// Hooks for a read store on a slow disk whose commits number `fail` (1-based) fail
/// once, and whose commits of any batch that touches `always_fail` fail every time,
/// before touching anything.
#[derive(Debug)]
pub(crate) struct FailingCommits {
    pub(crate) commits: AtomicU32,
    pub(crate) fail: Vec<u32>,
    pub(crate) always_fail: Option<Uuid>,
    /// Refuses to enter bulk mode as well.
    pub(crate) refuse_bulk: bool,
    /// Builds its indexes slowly, holding commits off meanwhile, as PostgreSQL's lock
    /// on the tables does.
    pub(crate) slow_indexes: Option<Arc<SlowIndexes>>,
    /// Commits read-lock it, a slow index build write-locks it.
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
    /// Every commit panics (a bug in the store), before touching anything.
    pub(crate) panic: bool,
}

impl FailingCommits {
    pub(crate) fn new(fail: Vec<u32>, always_fail: Option<Uuid>) -> Self {
        Self {
            commits: AtomicU32::new(0),
            fail,
            always_fail,
            refuse_bulk: false,
            slow_indexes: None,
            gate: Arc::default(),
            panic: false,
        }
    }
}

/// What a generation whose index builds take [`SlowIndexes::TAKES`] saw.
#[derive(Debug, Default)]
pub(crate) struct SlowIndexes {
    /// The read side whose live projection is looked at.
    pub(crate) side: std::sync::OnceLock<std::sync::Weak<ReadSide>>,
    /// Told when the index builds start.
    pub(crate) building: tokio::sync::Notify,
    pub(crate) finished: std::sync::atomic::AtomicBool,
    /// The live projection's state at each commit after the index builds.
    pub(crate) live_after: std::sync::Mutex<Vec<ProjectionState>>,
}

impl SlowIndexes {
    pub(crate) const TAKES: Duration = Duration::from_secs(2);

    pub(crate) fn record_commit(&self) {
        if !self.finished.load(Ordering::SeqCst) {
            return;
        }
        if let Some(side) = self.side.get().and_then(std::sync::Weak::upgrade) {
            self.live_after
                .lock()
                .expect("states")
                .push(side.status().state);
        }
    }
}

#[async_trait]
impl ReadStoreHooks for FailingCommits {
    async fn before_commit(&self, batch: &ReadModelBatch) -> Result<Held, ReadStoreError> {
        assert!(!self.panic, "commit panicked (injected)");
        let gate = Arc::clone(&self.gate).read_owned().await;
        if let Some(slow) = &self.slow_indexes {
            slow.record_commit();
        }
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(doomed) = self.always_fail
            && batch.views.iter().any(|(id, _)| *id == doomed)
        {
            return Err(ReadStoreError::Corrupt(format!(
                "order {doomed} cannot be stored (injected)"
            )));
        }
        if self.fail.contains(&n) {
            return Err(ReadStoreError::Unavailable(
                format!("commit {n} fails (injected)").into(),
            ));
        }
        // A slow disk: the next batch is loaded and folded meanwhile.
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok(Held::new(gate))
    }

    async fn begin_bulk(&self, store: &dyn OrderReadStore) -> Result<(), ReadStoreError> {
        if self.refuse_bulk {
            return Err(ReadStoreError::Unavailable(
                "cannot drop the indexes (injected)".into(),
            ));
        }
        store.begin_bulk().await
    }

    async fn finish_bulk(&self, store: &dyn OrderReadStore) -> Result<(), ReadStoreError> {
        let Some(slow) = &self.slow_indexes else {
            return store.finish_bulk().await;
        };
        let _gate = self.gate.write().await;
        slow.building.notify_one();
        tokio::time::sleep(SlowIndexes::TAKES).await;
        store.finish_bulk().await?;
        slow.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// `store` behind `hooks`.
pub(crate) fn hooked(
    store: InMemoryReadStore,
    hooks: &Arc<FailingCommits>,
) -> Arc<dyn OrderReadStore> {
    Arc::new(Hooked::new(Arc::new(store), hooks.clone()))
}

pub(crate) fn create(i: u32) -> CreateOrder {
    let customer = i % 17;
    CreateOrder::parse(&json!({
        "customerName": format!("Customer {customer} ({i})"),
        "customerEmail": format!("customer{customer}@example.com"),
        "currency": "EUR",
        "items": [{
            "productId": format!("p-{}", i % 13),
            "productName": format!("Product {} engine", i % 13),
            "quantity": 1 + i % 4,
            "unitPrice": serde_json::from_str::<serde_json::Value>(
                &format!("{}.{:02}", 1 + i % 90, i % 100)
            ).expect("a number"),
        }],
    }))
    .unwrap_or_else(|e| panic!("a valid create body: {e:?}"))
}

/// Orders with lives of different lengths, interleaved in the log, and one poison event
/// (a payload the projection cannot decode) in the middle. Returns the last position.
pub(crate) async fn seed(store: &Arc<dyn EventStore>) -> (Vec<Uuid>, Position) {
    let service = OrderService::new(Arc::clone(store));
    let ctx = CommandContext::default;
    let mut ids = Vec::new();
    for i in 0..240u32 {
        let id = service
            .create(create(i), None, ctx())
            .await
            .expect("create")
            .order_id;
        ids.push(id);
        if i == 120 {
            let poison = ids[3];
            let version = service.history(poison).await.expect("history").len() as u64;
            store
                .append(
                    &StreamId::new(poison.to_string()),
                    ExpectedVersion::Exact(version),
                    vec![NewEvent {
                        event_id: Uuid::now_v7(),
                        aggregate_type: "Order".into(),
                        event_type: "OrderStatusChanged".into(),
                        schema_version: 1,
                        occurred_at: ordo_es::now_micros(),
                        data: json!({ "not": "a status change" }).into(),
                        metadata: Metadata::default(),
                    }],
                )
                .await
                .expect("append the poison event");
        }
        // Later commands on earlier orders, so that an order's events span batches.
        if i >= 10 {
            let earlier = ids[(i - 10) as usize];
            if i % 5 == 0 {
                service
                    .cancel(earlier, Some("changed mind".into()), ctx())
                    .await
                    .ok();
            } else if i % 7 == 0 {
                service.delete(earlier, ctx()).await.expect("delete");
            } else {
                service
                    .update_status(earlier, Status::Confirmed, ctx())
                    .await
                    .ok();
            }
        }
    }
    (ids, last_position(store).await)
}

/// The position of the last event in the log of `store`.
pub(crate) async fn last_position(store: &Arc<dyn EventStore>) -> Position {
    store
        .read_all(&Checkpoint::origin(store.partitions()), usize::MAX)
        .await
        .expect("read")
        .last()
        .expect("events")
        .position
}

pub(crate) fn config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 7,
        catch_up_batch_size: 29,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        ..RunnerConfig::default()
    }
}

pub(crate) fn run(
    events: &Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
) -> (ProjectionHandle, watch::Sender<bool>) {
    let runner = ProjectionRunner::new(Arc::clone(events), projection, config());
    let handle = runner.handle();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(runner.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    (handle, stop)
}

/// Waits (up to a minute) until `store` has committed `position` (a pipelined runner
/// publishes earlier).
pub(crate) async fn wait_stored(store: &dyn OrderReadStore, position: &Position) {
    eventually(Duration::from_secs(60), || async {
        match store
            .load_checkpoint(OrderProjection::NAME)
            .await
            .expect("checkpoint")
        {
            Some(stored) if stored.covers(position) => Ok(()),
            stored => Err(stored),
        }
    })
    .await
    .unwrap_or_else(|stored| panic!("the store never committed {position}; it holds {stored:?}"));
}

/// What the new generations of [`TestGenerations`] do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NewGenerations {
    Work,
    /// Refuse every commit (a disk that fills up while a rebuild runs, say).
    RefuseCommits,
    /// Refuse every commit and to enter bulk mode.
    RefuseBulk,
    /// Work, with slow index builds ([`SlowIndexes`]).
    SlowIndexes,
    /// Panic at every commit.
    PanicAtCommits,
}

/// Read models that count the generations created, whose new generations behave as
/// `new` says; the active generation works.
#[derive(Debug)]
pub(crate) struct TestGenerations {
    pub(crate) inner: Arc<InMemoryReadStores>,
    pub(crate) created: Arc<AtomicU32>,
    pub(crate) slow_indexes: Arc<SlowIndexes>,
    hooked: Arc<HookedStores>,
}

impl TestGenerations {
    pub(crate) fn new(new: NewGenerations) -> Self {
        Self::over(InMemoryReadStores::new(), new)
    }

    /// Over read models that outlive it (a restart).
    pub(crate) fn over(inner: Arc<InMemoryReadStores>, new: NewGenerations) -> Self {
        let created = Arc::new(AtomicU32::new(0));
        let slow_indexes = Arc::<SlowIndexes>::default();
        let (counted, slow) = (Arc::clone(&created), Arc::clone(&slow_indexes));
        let pick = move |handed: Handed| -> Option<Arc<dyn ReadStoreHooks>> {
            if handed != Handed::Created {
                return None;
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let mut hooks = FailingCommits::new(Vec::new(), None);
            match new {
                NewGenerations::Work => return None,
                NewGenerations::RefuseCommits | NewGenerations::RefuseBulk => {
                    hooks.fail = (1..=10_000).collect();
                    hooks.refuse_bulk = new == NewGenerations::RefuseBulk;
                }
                NewGenerations::SlowIndexes => hooks.slow_indexes = Some(Arc::clone(&slow)),
                NewGenerations::PanicAtCommits => hooks.panic = true,
            }
            Some(Arc::new(hooks))
        };
        Self {
            hooked: Arc::new(HookedStores::new(
                Arc::clone(&inner) as Arc<dyn ReadStoreProvider>,
                pick,
            )),
            inner,
            created,
            slow_indexes,
        }
    }

    pub(crate) fn refusing() -> Self {
        Self::new(NewGenerations::RefuseCommits)
    }

    pub(crate) fn counting() -> Self {
        Self::new(NewGenerations::Work)
    }

    /// The read models to start a read side on.
    pub(crate) fn provider(&self) -> Arc<dyn ReadStoreProvider> {
        self.hooked.clone()
    }
}

/// Read models that were never projected into, on a log long enough to load in bulk.
pub(crate) fn bulk_start(stall_limit: Duration) -> ReadSideOptions {
    ReadSideOptions {
        stall_limit,
        bulk_start_min_events: 100,
        ..ReadSideOptions::default()
    }
}

/// A read side on `events` and `provider`, with the tests' runner settings.
pub(crate) async fn start(
    events: &Arc<dyn EventStore>,
    provider: Arc<dyn ReadStoreProvider>,
    options: ReadSideOptions,
) -> Arc<ReadSide> {
    ReadSide::start_with(Arc::clone(events), provider, config(), options)
        .await
        .expect("start the read side")
}

/// An event log holding [`seed`]'s orders: the log, their ids, its last position.
pub(crate) async fn seeded_log() -> (Arc<dyn EventStore>, Vec<Uuid>, Position) {
    let events: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let (ids, last) = seed(&events).await;
    (events, ids, last)
}

/// Everything the read models answer that the tests compare.
pub(crate) async fn answers(side: &ReadSide, ids: &[Uuid]) -> serde_json::Value {
    let store = side.store();
    let mut views = Vec::new();
    for id in ids {
        views.push(store.get(*id).await.expect("get"));
    }
    let search = ListQuery {
        search: Some("engine".into()),
        limit: 100,
        ..ListQuery::default()
    };
    json!({
        "views": views,
        "summary": store.summary().await.expect("summary"),
        "top": store.top_customers(20).await.expect("top customers"),
        "list": store.list(&ListQuery { limit: 100, ..ListQuery::default() }).await.expect("list"),
        "search": store.list(&search).await.expect("search"),
        "parked": store.parked(OrderProjection::NAME).await.expect("parked").len(),
    })
}

/// Read models that are caught up batch by batch, never loaded in bulk.
pub(crate) async fn start_batch_by_batch(events: &Arc<dyn EventStore>) -> Arc<ReadSide> {
    start(
        events,
        InMemoryReadStores::new(),
        ReadSideOptions {
            bulk_start_min_events: u64::MAX,
            ..ReadSideOptions::default()
        },
    )
    .await
}

/// What read models caught up batch by batch from `events` answer once they hold `last`.
pub(crate) async fn caught_up_batch_by_batch(
    events: &Arc<dyn EventStore>,
    ids: &[Uuid],
    last: &Position,
) -> serde_json::Value {
    let plain = start_batch_by_batch(events).await;
    assert!(plain.wait_for(last, Duration::from_secs(60)).await);
    let answers = answers(&plain, ids).await;
    plain.shutdown().await;
    answers
}

/// `side` gave its bulk load up and caught `active` up batch by batch: it serves it,
/// with what such a catch-up answers. Stops it.
pub(crate) async fn fell_back_to_catching_up(
    side: &ReadSide,
    active: &str,
    events: &Arc<dyn EventStore>,
    ids: &[Uuid],
    last: &Position,
) {
    assert!(side.wait_for(last, Duration::from_secs(60)).await);
    assert_eq!(side.generation(), active, "the active generation serves");
    assert_eq!(side.loading_generation(), None, "the load was given up");
    assert_eq!(
        answers(side, ids).await,
        caught_up_batch_by_batch(events, ids, last).await
    );
    side.shutdown().await;
}
