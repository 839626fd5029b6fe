//! The read side's bulk loads and rebuilds, on in-memory read stores (what is tested is
//! the read side, not a database). A bulk load pipelines its commits (batch N+1 folded
//! while batch N commits). It must end with exactly the read models that batches
//! committed one at a time give, also when commits fail on the way and when a poison
//! event sits in the middle of a batch. And a rebuild whose commits never succeed gives
//! up instead of running for ever. Empty read models started on a long log are loaded
//! the same way, into a generation that then replaces the empty one, and fall back to
//! catching up batch by batch when that fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use ordo_app::hooks::{Held, Hooked, ReadStoreHooks};
use ordo_app::read_side::{ReadSide, ReadSideOptions, RebuildError};
use ordo_app::{
    CommandContext, InMemoryReadStore, InMemoryReadStores, OrderProjection, OrderService,
};
use ordo_domain::{
    CreateOrder, ListQuery, OrderReadStore, ParkedEvent, ReadGeneration, ReadModelBatch,
    ReadStoreError, ReadStoreProvider, RebuildLock, Status,
};
use ordo_es::{
    Checkpoint, EventStore, ExpectedVersion, InMemoryStore, Metadata, NewEvent, Position,
    Projection, ProjectionError, ProjectionHandle, ProjectionRunner, ProjectionState,
    RecordedEvent, RunnerConfig, StreamId,
};
use ordo_testkit::eventually;

/// Hooks for a read store on a slow disk whose commits number `fail` (1-based) fail
/// once, and whose commits of any batch that touches `always_fail` fail every time,
/// before touching anything.
#[derive(Debug)]
struct FailingCommits {
    commits: AtomicU32,
    fail: Vec<u32>,
    always_fail: Option<Uuid>,
    /// Refuses to enter bulk mode as well.
    refuse_bulk: bool,
    /// Builds its indexes slowly, holding commits off meanwhile, as PostgreSQL's lock
    /// on the tables does.
    slow_indexes: Option<Arc<SlowIndexes>>,
    /// Commits read-lock it, a slow index build write-locks it.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Every commit panics (a bug in the store), before touching anything.
    panic: bool,
}

impl FailingCommits {
    fn new(fail: Vec<u32>, always_fail: Option<Uuid>) -> Self {
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
struct SlowIndexes {
    /// The read side whose live projection is looked at.
    side: std::sync::OnceLock<std::sync::Weak<ReadSide>>,
    /// Told when the index builds start.
    building: tokio::sync::Notify,
    finished: std::sync::atomic::AtomicBool,
    /// The live projection's state at each commit after the index builds.
    live_after: std::sync::Mutex<Vec<ProjectionState>>,
}

impl SlowIndexes {
    const TAKES: Duration = Duration::from_secs(2);

    fn record_commit(&self) {
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

/// Counts the batches the projection failed because an order's events did not follow
/// its stored version: what a pipelined batch would see if it loaded an order from the
/// store while the batch before it, which changed that order, was still committing.
#[derive(Debug)]
struct CountingGaps {
    inner: Arc<OrderProjection>,
    gaps: AtomicU32,
}

#[async_trait]
impl Projection for CountingGaps {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
        self.inner.load_checkpoint().await
    }
    async fn apply_batch(
        &self,
        events: &[RecordedEvent],
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        let result = self.inner.apply_batch(events, from, to).await;
        if let Err(ProjectionError::Failed(e)) = &result
            && e.to_string().contains("(a gap)")
        {
            self.gaps.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn park(
        &self,
        event: &RecordedEvent,
        error: &str,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        self.inner.park(event, error, from, to).await
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
fn hooked(store: InMemoryReadStore, hooks: &Arc<FailingCommits>) -> Arc<dyn OrderReadStore> {
    Arc::new(Hooked::new(Arc::new(store), hooks.clone()))
}

fn create(i: u32) -> CreateOrder {
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
async fn seed(store: &Arc<dyn EventStore>) -> (Vec<Uuid>, Position) {
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
async fn last_position(store: &Arc<dyn EventStore>) -> Position {
    store
        .read_all(&Checkpoint::origin(store.partitions()), usize::MAX)
        .await
        .expect("read")
        .last()
        .expect("events")
        .position
}

fn config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 7,
        catch_up_batch_size: 29,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        ..RunnerConfig::default()
    }
}

fn run(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bulk_commits_give_the_read_models_of_one_by_one_commits() {
    let (events, ids, last) = seeded_log().await;

    let usual: Arc<dyn OrderReadStore> = Arc::new(InMemoryReadStore::default());
    let (usual_handle, stop_usual) = run(&events, Arc::new(OrderProjection::new(usual.clone())));

    // Early commits, far from the last one, so the failures happen mid-load.
    let failing = Arc::new(FailingCommits::new(vec![2, 5, 6], None));
    let bulk = hooked(InMemoryReadStore::default(), &failing);
    let projection = Arc::new(OrderProjection::new(bulk.clone()));
    projection.begin_bulk().await.expect("bulk mode");
    let counting = Arc::new(CountingGaps {
        inner: Arc::clone(&projection),
        gaps: AtomicU32::new(0),
    });
    let (bulk_handle, stop_bulk) = run(&events, counting.clone());

    let patience = Duration::from_secs(60);
    assert!(
        usual_handle.wait_for(&last, patience).await,
        "usual caught up"
    );
    assert!(
        bulk_handle.wait_for(&last, patience).await,
        "bulk caught up"
    );
    projection
        .finish_bulk()
        .await
        .expect("the last pipelined commit succeeded");
    assert!(
        failing.commits.load(Ordering::SeqCst) > 20,
        "many pipelined commits ran"
    );
    assert_eq!(
        counting.gaps.load(Ordering::SeqCst),
        0,
        "a batch was folded over an order state its predecessor had already changed"
    );
    // After the bulk load the projection commits before returning again.
    let more = OrderService::new(Arc::clone(&events))
        .update_status(ids[239], Status::Confirmed, CommandContext::default())
        .await
        .expect("one more command");
    assert!(usual_handle.wait_for(&more.position, patience).await);
    assert!(bulk_handle.wait_for(&more.position, patience).await);
    let _ = stop_usual.send(true);
    let _ = stop_bulk.send(true);

    let parked = bulk.parked(OrderProjection::NAME).await.expect("parked");
    assert_eq!(parked.len(), 1, "the poison event parked once: {parked:?}");
    assert_eq!(
        parked,
        usual
            .parked(OrderProjection::NAME)
            .await
            .expect("parked")
            .into_iter()
            .map(|p| ParkedEvent {
                parked_at: parked[0].parked_at,
                ..p
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        bulk.get(ids[239]).await.expect("get").map(|v| v.status),
        Some(Status::Confirmed),
        "a batch after the bulk load is committed as usual"
    );
    for id in &ids {
        assert_eq!(
            bulk.get(*id).await.expect("get"),
            usual.get(*id).await.expect("get"),
            "order {id}"
        );
    }
    assert_eq!(
        bulk.summary().await.expect("summary"),
        usual.summary().await.expect("summary")
    );
    assert_eq!(
        bulk.top_customers(50).await.expect("top"),
        usual.top_customers(50).await.expect("top")
    );
    let today = time::OffsetDateTime::now_utc().date();
    let (from, to) = (
        today - time::Duration::days(2),
        today + time::Duration::days(1),
    );
    assert_eq!(
        bulk.daily(from, to).await.expect("daily"),
        usual.daily(from, to).await.expect("daily")
    );
    for query in [
        ListQuery::default(),
        ListQuery {
            search: Some("engine".into()),
            limit: 100,
            ..ListQuery::default()
        },
        ListQuery {
            status: Some(Status::Confirmed),
            limit: 100,
            ..ListQuery::default()
        },
        ListQuery {
            customer_email: Some("customer3@example.com".into()),
            limit: 100,
            ..ListQuery::default()
        },
    ] {
        assert_eq!(
            bulk.list(&query).await.expect("list"),
            usual.list(&query).await.expect("list"),
            "{query:?}"
        );
    }
}

/// Waits (up to a minute) until `store` has committed `position` (a pipelined runner
/// publishes earlier).
async fn wait_stored(store: &dyn OrderReadStore, position: &Position) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_keeps_failing_is_parked_event_by_event_and_the_load_goes_on() {
    let (events, ids, last) = seeded_log().await;
    let doomed = ids[50];
    let doomed_events = OrderService::new(Arc::clone(&events))
        .history(doomed)
        .await
        .expect("history")
        .len();
    let failing = Arc::new(FailingCommits::new(Vec::new(), Some(doomed)));
    let bulk = hooked(InMemoryReadStore::default(), &failing);
    let projection = Arc::new(OrderProjection::new(bulk.clone()));
    projection.begin_bulk().await.expect("bulk mode");
    let (handle, stop) = run(&events, projection.clone());

    // Before the fix, a pipelined commit's failure was always "unavailable": the runner
    // reloaded and folded the same batch again, forever, and this never returned.
    assert!(
        handle.wait_for(&last, Duration::from_secs(60)).await,
        "the load went past the failing batch"
    );
    wait_stored(bulk.as_ref(), &last).await;
    projection.finish_bulk().await.expect("finish");
    let _ = stop.send(true);

    let parked = bulk.parked(OrderProjection::NAME).await.expect("parked");
    let parked_of_doomed = parked
        .iter()
        .filter(|p| p.stream_id == doomed.to_string())
        .count();
    assert_eq!(
        parked_of_doomed, doomed_events,
        "each event of the order that cannot be stored is parked: {parked:?}"
    );
    assert_eq!(parked.len(), doomed_events + 1, "and the poison event");
    assert_eq!(bulk.get(doomed).await.expect("get"), None);
    assert!(
        bulk.get(ids[51]).await.expect("get").is_some(),
        "the orders after it are there"
    );
}

/// What the new generations of [`TestGenerations`] do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NewGenerations {
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
struct TestGenerations {
    inner: Arc<InMemoryReadStores>,
    new: NewGenerations,
    created: AtomicU32,
    slow_indexes: Arc<SlowIndexes>,
}

impl TestGenerations {
    fn new(new: NewGenerations) -> Self {
        Self::over(InMemoryReadStores::new(), new)
    }

    /// Over read models that outlive it (a restart).
    fn over(inner: Arc<InMemoryReadStores>, new: NewGenerations) -> Self {
        Self {
            inner,
            new,
            created: AtomicU32::new(0),
            slow_indexes: Arc::default(),
        }
    }

    fn refusing() -> Self {
        Self::new(NewGenerations::RefuseCommits)
    }

    fn counting() -> Self {
        Self::new(NewGenerations::Work)
    }
}

#[async_trait]
impl ReadStoreProvider for TestGenerations {
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        self.inner.open_active().await
    }
    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        let generation = self.inner.create_generation().await?;
        self.created.fetch_add(1, Ordering::SeqCst);
        if self.new == NewGenerations::Work {
            return Ok(generation);
        }
        let mut hooks = FailingCommits::new(Vec::new(), None);
        match self.new {
            NewGenerations::Work => unreachable!("returned above"),
            NewGenerations::RefuseCommits | NewGenerations::RefuseBulk => {
                hooks.fail = (1..=10_000).collect();
                hooks.refuse_bulk = self.new == NewGenerations::RefuseBulk;
            }
            NewGenerations::SlowIndexes => hooks.slow_indexes = Some(self.slow_indexes.clone()),
            NewGenerations::PanicAtCommits => hooks.panic = true,
        }
        Ok(Hooked::generation(generation, Arc::new(hooks)))
    }
    async fn activate(&self, id: &str) -> Result<(), ReadStoreError> {
        self.inner.activate(id).await
    }
    async fn drop_inactive(&self) -> Result<u32, ReadStoreError> {
        self.inner.drop_inactive().await
    }
    async fn active_id(&self) -> Result<String, ReadStoreError> {
        self.inner.active_id().await
    }
    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError> {
        self.inner.try_lock_rebuild().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_makes_no_progress_gives_up_and_leaves_the_live_read_models_alone() {
    let (events, ids, last) = seeded_log().await;
    let provider = Arc::new(TestGenerations::refusing());
    let side = start(
        &events,
        provider.clone(),
        ReadSideOptions {
            // Long enough for a commit to have failed even on a loaded machine (before
            // the first one, the error would say "none reported").
            stall_limit: Duration::from_secs(5),
            ..ReadSideOptions::default()
        },
    )
    .await;
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    let live = side.generation();
    let before = side.store().summary().await.expect("summary");

    let error = side
        .rebuild(&|_, _| {})
        .await
        .expect_err("a rebuild whose commits all fail cannot finish");
    let message = error.to_string();
    assert!(matches!(error, RebuildError::Stalled { .. }), "{message}");
    assert!(
        message.contains("no progress for 5 s") && message.contains("fails (injected)"),
        "the error says why: {message}"
    );
    // Still serving, and still projecting, from the generation it had.
    assert_eq!(side.generation(), live);
    assert_eq!(side.store().summary().await.expect("summary"), before);
    let more = OrderService::new(Arc::clone(&events))
        .update_status(ids[239], Status::Confirmed, CommandContext::default())
        .await
        .expect("one more command");
    assert!(side.wait_for(&more.position, Duration::from_secs(60)).await);
    assert_eq!(
        side.store()
            .get(ids[239])
            .await
            .expect("get")
            .map(|v| v.status),
        Some(Status::Confirmed)
    );
    // The failed rebuild let go of its lock: the next one starts (and gives up too).
    let again = tokio::time::timeout(Duration::from_secs(120), side.rebuild(&|_, _| {}))
        .await
        .expect("a second rebuild was not kept waiting for the first one's lock");
    assert!(
        matches!(again, Err(RebuildError::Stalled { .. })),
        "{again:?}"
    );
    side.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_commits_panic_fails_saying_so_and_leaves_the_live_read_models_alone() {
    let (events, _ids, last) = seeded_log().await;
    let provider = Arc::new(TestGenerations::new(NewGenerations::PanicAtCommits));
    let side = start(
        &events,
        provider,
        ReadSideOptions {
            stall_limit: Duration::from_secs(5),
            ..ReadSideOptions::default()
        },
    )
    .await;
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    let live = side.generation();
    let before = side.store().summary().await.expect("summary");

    let error = tokio::time::timeout(Duration::from_secs(120), side.rebuild(&|_, _| {}))
        .await
        .expect("a rebuild whose runner keeps panicking ends")
        .expect_err("a rebuild whose commits all panic cannot finish");
    let message = error.to_string();
    assert!(matches!(error, RebuildError::Stalled { .. }), "{message}");
    assert!(
        message.contains("panicked") && message.contains("commit panicked (injected)"),
        "the error says why: {message}"
    );
    assert_eq!(side.generation(), live);
    assert_eq!(side.store().summary().await.expect("summary"), before);
    let status = side.status();
    assert_eq!(status.state, ProjectionState::Running, "{status:?}");
    assert_eq!(
        status.restarts, 0,
        "the live runner was not the one panicking"
    );
    side.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_of_a_replaced_writer_is_refused_and_changes_nothing() {
    // A runner aborted while its commit was stuck may see that commit land after the
    // runner that replaced it has committed the same events: the checkpoint's
    // compare-and-set must refuse it.
    let (events, _ids, _last) = seeded_log().await;
    let store: Arc<dyn OrderReadStore> = Arc::new(InMemoryReadStore::default());
    let projection = OrderProjection::new(store.clone());
    let origin = Checkpoint::origin(events.partitions());
    let batch = events.read_all(&origin, 50).await.expect("read");
    let mut to = origin.clone();
    for event in &batch {
        to.advance(&event.position);
    }
    projection
        .apply_batch(&batch, &origin, &to)
        .await
        .expect("the replacing runner commits");
    let after = store.summary().await.expect("summary");
    let late = projection.apply_batch(&batch, &origin, &to).await;
    assert!(
        matches!(late, Err(ProjectionError::CheckpointMoved)),
        "{late:?}"
    );
    assert_eq!(store.summary().await.expect("summary"), after);
    assert_eq!(
        store
            .load_checkpoint(OrderProjection::NAME)
            .await
            .expect("checkpoint"),
        Some(to)
    );
}

/// Read models that were never projected into, on a log long enough to load in bulk.
fn bulk_start(stall_limit: Duration) -> ReadSideOptions {
    ReadSideOptions {
        stall_limit,
        bulk_start_min_events: 100,
        ..ReadSideOptions::default()
    }
}

/// A read side on `events` and `provider`, with the tests' runner settings.
async fn start(
    events: &Arc<dyn EventStore>,
    provider: Arc<dyn ReadStoreProvider>,
    options: ReadSideOptions,
) -> Arc<ReadSide> {
    ReadSide::start_with(Arc::clone(events), provider, config(), options)
        .await
        .expect("start the read side")
}

/// An event log holding [`seed`]'s orders: the log, their ids, its last position.
async fn seeded_log() -> (Arc<dyn EventStore>, Vec<Uuid>, Position) {
    let events: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let (ids, last) = seed(&events).await;
    (events, ids, last)
}

/// Everything the read models answer that the tests compare.
async fn answers(side: &ReadSide, ids: &[Uuid]) -> serde_json::Value {
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
async fn start_batch_by_batch(events: &Arc<dyn EventStore>) -> Arc<ReadSide> {
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
async fn caught_up_batch_by_batch(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_read_models_on_a_long_log_are_loaded_in_bulk_and_answer_what_a_catch_up_does() {
    let (events, ids, last) = seeded_log().await;
    let plain = start_batch_by_batch(&events).await;
    let bulk = start(
        &events,
        InMemoryReadStores::new(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    let (empty, first) = (bulk.generation(), plain.generation());
    assert!(plain.wait_for(&last, Duration::from_secs(60)).await);
    assert!(bulk.wait_for(&last, Duration::from_secs(60)).await);
    assert_eq!(bulk.status().state, ProjectionState::Running);
    assert_eq!(bulk.loading_generation(), None, "the load is over");
    assert_ne!(
        bulk.generation(),
        empty,
        "the generation loaded in bulk replaced the empty one"
    );
    assert_eq!(
        plain.generation(),
        first,
        "no bulk load: the first generation stays"
    );
    assert_eq!(answers(&bulk, &ids).await, answers(&plain, &ids).await);

    // After the load the new generation follows the log like any other.
    let more = OrderService::new(Arc::clone(&events))
        .update_status(ids[238], Status::Confirmed, CommandContext::default())
        .await
        .expect("one more command");
    assert!(bulk.wait_for(&more.position, Duration::from_secs(60)).await);
    assert!(
        plain
            .wait_for(&more.position, Duration::from_secs(60))
            .await
    );
    assert_eq!(answers(&bulk, &ids).await, answers(&plain, &ids).await);
    // And it is the active one for the next start: nothing is loaded again.
    let loaded = bulk.generation();
    bulk.shutdown().await;
    bulk.settled().await;
    drop(bulk);
    let again = start(
        &events,
        InMemoryReadStores::new(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    assert!(
        again
            .wait_for(&more.position, Duration::from_secs(60))
            .await
    );
    assert_eq!(again.generation(), loaded);
    assert_eq!(answers(&again, &ids).await, answers(&plain, &ids).await);
    again.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_at_start_that_makes_no_progress_falls_back_to_catching_up() {
    let (events, ids, last) = seeded_log().await;
    let side = start(
        &events,
        Arc::new(TestGenerations::refusing()),
        bulk_start(Duration::from_secs(2)),
    )
    .await;
    let active = side.generation();
    let loading = side
        .loading_generation()
        .expect("a generation is being loaded");
    assert_ne!(loading, active);
    // The generation being loaded answers no query: no consistency token is taken as
    // covered, and the service does not report caught up, while it stalls.
    assert!(!side.wait_for(&last, Duration::from_millis(500)).await);
    assert_ne!(side.status().state, ProjectionState::Running);
    assert_eq!(
        side.store().summary().await.expect("summary").total_orders,
        0,
        "queries meanwhile are answered from the (empty) active read models"
    );
    // Past the stall limit, the active generation is caught up batch by batch.
    fell_back_to_catching_up(&side, &active, &events, &ids, &last).await;
}

/// `side` gave its bulk load up and caught `active` up batch by batch: it serves it,
/// with what such a catch-up answers. Stops it.
async fn fell_back_to_catching_up(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_during_its_bulk_load_discards_it_and_loads_again_at_the_next_start() {
    let (events, ids, last) = seeded_log().await;
    let stores = InMemoryReadStores::new();
    // A load that cannot finish (its generation refuses every commit) when the service
    // is stopped.
    let stuck = start(
        &events,
        Arc::new(TestGenerations::over(
            Arc::clone(&stores),
            NewGenerations::RefuseCommits,
        )),
        bulk_start(Duration::from_secs(600)),
    )
    .await;
    let empty = stuck.generation();
    tokio::time::timeout(Duration::from_secs(60), stuck.shutdown())
        .await
        .expect("a shutdown during the load is not kept waiting");
    tokio::time::timeout(Duration::from_secs(60), stuck.settled())
        .await
        .expect("the load let go of its locks");
    assert_eq!(stuck.generation(), empty, "nothing was switched");
    drop(stuck);

    let restarted = start(
        &events,
        Arc::clone(&stores) as Arc<dyn ReadStoreProvider>,
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    assert!(restarted.wait_for(&last, Duration::from_secs(60)).await);
    assert_ne!(restarted.generation(), empty, "loaded in bulk again");
    assert_eq!(
        answers(&restarted, &ids).await,
        caught_up_batch_by_batch(&events, &ids, &last).await
    );
    restarted.shutdown().await;
    restarted.settled().await;
    // One generation in use, the one left by the stopped load removed.
    assert_eq!(stores.generation_ids(), [restarted.generation()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_that_cannot_begin_leaves_no_generation_behind_and_catches_up() {
    let (events, ids, last) = seeded_log().await;
    let provider = Arc::new(TestGenerations::new(NewGenerations::RefuseBulk));
    let side = start(
        &events,
        provider.clone(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    assert_eq!(
        provider.created.load(Ordering::SeqCst),
        1,
        "a load was tried"
    );
    let files = provider.inner.generation_ids();
    assert_eq!(
        files.len(),
        1,
        "its generation was dropped at once: {files:?}"
    );
    let active = side.generation();
    fell_back_to_catching_up(&side, &active, &events, &ids, &last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_asked_for_during_the_bulk_start_waits_for_it_instead_of_loading_twice() {
    let (events, ids, last) = seeded_log().await;
    let provider = Arc::new(TestGenerations::counting());
    let side = start(
        &events,
        provider.clone(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    let empty = side.generation();
    let reports = std::sync::Mutex::new(Vec::new());
    side.rebuild(&|done, total| reports.lock().expect("reports").push((done, total)))
        .await
        .expect("the rebuild is the bulk load");
    assert_eq!(
        provider.created.load(Ordering::SeqCst),
        1,
        "one generation loaded"
    );
    assert_ne!(side.generation(), empty);
    let reports = reports.into_inner().expect("reports");
    let (done, total) = *reports.last().expect("progress was reported");
    assert!(done >= 400 && done == total, "{reports:?}");
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);

    let expected = caught_up_batch_by_batch(&events, &ids, &last).await;
    assert_eq!(answers(&side, &ids).await, expected);

    // Once the load is done, a rebuild is a rebuild again.
    side.rebuild(&|_, _| {}).await.expect("a second rebuild");
    assert_eq!(provider.created.load(Ordering::SeqCst), 2);
    assert_eq!(answers(&side, &ids).await, expected);
    side.shutdown().await;
}

/// Given a runtime of their own (the service runs it at a lower CPU priority than its
/// requests), the projections run there: the start-up bulk load, the live runner, a
/// rebuild and the commits they spawn, with nothing left there after a shutdown; and
/// they answer what they answer on the caller's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_run_on_the_runtime_the_read_side_is_given() {
    let (events, ids, last) = seeded_log().await;
    let projections = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("projection runtime");
    let metrics = projections.handle().metrics();
    let side = start(
        &events,
        InMemoryReadStores::new(),
        ReadSideOptions {
            projection_runtime: Some(projections.handle().clone()),
            ..bulk_start(Duration::from_secs(60))
        },
    )
    .await;
    assert!(
        metrics.num_alive_tasks() >= 1,
        "the start-up load runs on the projection runtime"
    );
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    assert!(metrics.num_alive_tasks() >= 1, "so does the live runner");
    let busy = metrics.worker_total_busy_duration(0);

    side.rebuild(&|_, _| {}).await.expect("rebuild");
    assert!(
        metrics.worker_total_busy_duration(0) > busy,
        "the rebuild ran on the projection runtime"
    );
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    let expected = caught_up_batch_by_batch(&events, &ids, &last).await;
    assert_eq!(answers(&side, &ids).await, expected);

    side.shutdown().await;
    // A task's join handle wakes a moment before the runtime lets go of the task.
    eventually(Duration::from_secs(10), || async {
        match metrics.num_alive_tasks() {
            0 => Ok(()),
            left => Err(left),
        }
    })
    .await
    .unwrap_or_else(|left| panic!("a shutdown stops every projection task: {left} left"));
    projections.shutdown_background();
}

/// The new generation's writes wait while its indexes are built (the embedded store's
/// one writer builds them; a plain CREATE INDEX on PostgreSQL held them off too), and
/// commands keep coming: what they wrote meanwhile is applied to the
/// new generation before the live projection is stopped for the switch, not after,
/// when every read with a consistency token newer than the stop waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_applies_what_arrived_during_its_index_builds_before_it_switches() {
    let (events, mut ids, _) = seeded_log().await;
    let provider = Arc::new(TestGenerations::new(NewGenerations::SlowIndexes));
    let slow = Arc::clone(&provider.slow_indexes);
    let side = start(
        &events,
        provider.clone(),
        ReadSideOptions {
            bulk_start_min_events: u64::MAX,
            ..ReadSideOptions::default()
        },
    )
    .await;
    slow.side.set(Arc::downgrade(&side)).expect("set once");
    let rebuild = tokio::spawn({
        let side = Arc::clone(&side);
        async move { side.rebuild(&|_, _| {}).await }
    });

    slow.building.notified().await;
    let service = OrderService::new(Arc::clone(&events));
    for i in 1_000..1_040u32 {
        let created = service
            .create(create(i), None, CommandContext::default())
            .await
            .expect("create");
        ids.push(created.order_id);
    }
    let last = last_position(&events).await;
    assert!(side.wait_for(&last, Duration::from_secs(30)).await);
    assert!(
        !slow.finished.load(Ordering::SeqCst),
        "the orders were created and projected while the indexes were built"
    );

    rebuild.await.expect("rebuild task").expect("rebuild");
    let live = slow.live_after.lock().expect("states").clone();
    assert!(
        !live.is_empty(),
        "the new generation had orders to apply after its index builds"
    );
    assert!(
        live.iter().all(|s| *s != ProjectionState::Stopped),
        "it applied them while the live projection still ran: {live:?}"
    );
    assert!(side.wait_for(&last, Duration::from_secs(30)).await);
    assert_eq!(
        answers(&side, &ids).await,
        caught_up_batch_by_batch(&events, &ids, &last).await
    );
    side.shutdown().await;
}
