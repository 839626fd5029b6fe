//! The live read side and the replay jobs: a rebuild switches queries to a new generation,
//! a refused switch leaves the live one following the log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use ordo_app::{
    CommandContext, InMemoryReadStores, JobState, JobStatus, OrderService, ReadSide,
    ReadSideOptions, RebuildError, ReplayJobs, ReplayRequest, StartError,
};
use ordo_domain::read_store::{ReadGeneration, ReadStoreError, RebuildLock};
use ordo_domain::{CreateOrder, ListQuery, OrderReadStore, ReadStoreProvider, Status};
use ordo_es::{EventStore, InMemoryStore, Position, ProjectionState, RunnerConfig};

/// How long any condition below may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct App {
    service: OrderService,
    provider: Arc<InMemoryReadStores>,
    read_side: Arc<ReadSide>,
}

async fn start() -> App {
    let events: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let provider = InMemoryReadStores::new();
    let read_side = ReadSide::start(
        Arc::clone(&events),
        Arc::clone(&provider) as Arc<dyn ReadStoreProvider>,
        RunnerConfig::default(),
    )
    .await
    .expect("the read side starts on empty in-memory read stores");
    App {
        service: OrderService::new(events),
        provider,
        read_side,
    }
}

impl App {
    /// Creates an order for `email` of `cents` (one item); returns the consistency token.
    async fn create_order(&self, email: &str, cents: u32) -> Position {
        let body = json!({
            "customerName": "Ada",
            "customerEmail": email,
            "items": [{"productId": "p", "productName": "Gear", "quantity": 1,
                       "unitPrice": f64::from(cents) / 100.0}],
        });
        let command = CreateOrder::parse(&body).expect("a valid order");
        self.service
            .create(command, None, CommandContext::default())
            .await
            .expect("created")
            .position
    }

    async fn wait_for(&self, position: &Position) {
        assert!(
            self.read_side.wait_for(position, PATIENCE).await,
            "the read side did not reach {position:?}"
        );
    }

    fn store(&self) -> Arc<dyn OrderReadStore> {
        self.read_side.store()
    }
}

/// Polls `probe` until it gives a value, for at most [`PATIENCE`].
/// Waits for `probe` to give a value (ordo_testkit's bounded wait), for at most
/// [`PATIENCE`]; fails the test naming `what` otherwise.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, probe: impl Fn() -> F) -> T {
    ordo_testkit::eventually(PATIENCE, || async { probe().await.ok_or(()) })
        .await
        .unwrap_or_else(|()| panic!("never: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_the_service_stores_are_read_back_from_the_live_read_side() {
    let app = start().await;
    app.create_order("ada@example.com", 1_000).await;
    app.create_order("ada@example.com", 250).await;
    let last = app.create_order("bob@example.com", 500).await;
    app.wait_for(&last).await;

    let store = app.store();
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 3);
    assert_eq!(summary.orders_by_status.get(Status::Pending), 3);
    assert_eq!(summary.total_revenue.to_string(), "17.50");
    let page = store
        .list(&ListQuery {
            customer_email: Some("ada@example.com".into()),
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(page.total, 2);
    let top = store.top_customers(5).await.expect("top customers");
    assert_eq!(top[0].customer_email, "ada@example.com");
    assert_eq!(top[0].order_count, 2);
    assert_eq!(top[1].customer_email, "bob@example.com");
    app.read_side.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_switches_queries_to_a_rebuilt_generation_with_the_same_read_models() {
    let app = start().await;
    for cents in [100, 200, 300] {
        app.create_order("ada@example.com", cents).await;
    }
    let last = app.create_order("bob@example.com", 50).await;
    app.wait_for(&last).await;
    let before = app.read_side.generation();
    let summary = app.store().summary().await.expect("summary");
    let top = app.store().top_customers(5).await.expect("top customers");

    let jobs = ReplayJobs::new(Arc::clone(&app.read_side), app.service.clone());
    let id = jobs.start(ReplayRequest::Full).expect("the replay starts");
    let status: JobStatus = eventually("the replay finishes", || async {
        jobs.status(id).filter(|s| s.state != JobState::Running)
    })
    .await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    assert_eq!(status.events_done, 4);

    assert_ne!(
        app.read_side.generation(),
        before,
        "queries moved to a new generation"
    );
    assert_eq!(
        app.provider.active_id().await.expect("active id"),
        app.read_side.generation()
    );
    assert_eq!(app.store().summary().await.expect("summary"), summary);
    assert_eq!(app.store().top_customers(5).await.expect("top"), top);

    // The rebuilt generation keeps following the log.
    let after = app.create_order("carol@example.com", 75).await;
    app.wait_for(&after).await;
    assert_eq!(
        app.store().summary().await.expect("summary").total_orders,
        5
    );
    app.read_side.shutdown().await;
}

/// In-memory read stores whose switch to another generation fails.
#[derive(Debug)]
struct RefusingSwitch(Arc<InMemoryReadStores>);

#[async_trait::async_trait]
impl ReadStoreProvider for RefusingSwitch {
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        self.0.open_active().await
    }
    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        self.0.create_generation().await
    }
    async fn activate(&self, _id: &str) -> Result<(), ReadStoreError> {
        Err(ReadStoreError::Unavailable("the switch is refused".into()))
    }
    async fn drop_inactive(&self) -> Result<u32, ReadStoreError> {
        self.0.drop_inactive().await
    }
    async fn active_id(&self) -> Result<String, ReadStoreError> {
        self.0.active_id().await
    }
    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError> {
        self.0.try_lock_rebuild().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_switch_fails_keeps_projecting_into_the_live_generation() {
    let events: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let stores = InMemoryReadStores::new();
    let read_side = ReadSide::start(
        Arc::clone(&events),
        Arc::new(RefusingSwitch(Arc::clone(&stores))) as Arc<dyn ReadStoreProvider>,
        RunnerConfig::default(),
    )
    .await
    .expect("the read side starts");
    let app = App {
        service: OrderService::new(events),
        provider: stores,
        read_side,
    };
    let last = app.create_order("ada@example.com", 100).await;
    app.wait_for(&last).await;
    let before = app.read_side.generation();

    let failed = app.read_side.rebuild(&|_, _| {}).await;
    assert!(matches!(failed, Err(RebuildError::Store(_))), "{failed:?}");
    assert_eq!(app.read_side.generation(), before);
    assert_eq!(app.provider.active_id().await.expect("active id"), before);

    // The live generation's runner was stopped for the switch and runs again, and the
    // read side follows the restarted runner: its status and consistency waits.
    let next = app.create_order("bob@example.com", 200).await;
    app.wait_for(&next).await;
    assert_eq!(
        app.store().summary().await.expect("summary").total_orders,
        2
    );
    assert_eq!(app.read_side.status().state, ProjectionState::Running);
    app.read_side.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_side_that_runs_no_projection_follows_what_another_commits_and_its_switches() {
    let events: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let stores = InMemoryReadStores::new();
    let provider: Arc<dyn ReadStoreProvider> = Arc::clone(&stores) as _;
    let service = OrderService::new(Arc::clone(&events));
    let api = ReadSide::start_following(
        Arc::clone(&events),
        Arc::clone(&provider),
        ReadSideOptions::default(),
    )
    .await
    .expect("the following read side starts");
    assert!(!api.runs_projection());
    // The commands, and what the following side answers.
    let app = App {
        service: service.clone(),
        provider: stores,
        read_side: Arc::clone(&api),
    };
    let first = app.create_order("ada@example.com", 100).await;
    assert!(
        !api.wait_for(&first, Duration::from_millis(100)).await,
        "nothing projects yet"
    );
    let api_jobs = ReplayJobs::new(Arc::clone(&api), service.clone());
    assert!(matches!(
        api_jobs.start(ReplayRequest::Full),
        Err(StartError::NoProjection)
    ));

    // Another read side (another process's) projects; this one answers from what it
    // committed.
    let projector = ReadSide::start(
        Arc::clone(&events),
        Arc::clone(&provider),
        RunnerConfig::default(),
    )
    .await
    .expect("the projecting read side starts");
    assert!(projector.runs_projection());
    app.wait_for(&first).await;
    assert_eq!(
        api.store().summary().await.expect("summary").total_orders,
        1
    );
    assert_eq!(api.status().events_applied, 0);
    assert_eq!(api.events_committed(), 0);
    eventually("the projector counts its commit", || async {
        (projector.events_committed() == 1).then_some(())
    })
    .await;

    // It rebuilds and switches; the following side follows, and answers tokens from the
    // rebuilt generation.
    let jobs = ReplayJobs::new(Arc::clone(&projector), service);
    let id = jobs.start(ReplayRequest::Full).expect("the replay starts");
    let status = eventually("the replay finishes", || async {
        jobs.status(id).filter(|s| s.state != JobState::Running)
    })
    .await;
    assert_eq!(status.state, JobState::Done, "{status:?}");
    eventually("the switch is followed", || async {
        (api.generation() == projector.generation()).then_some(())
    })
    .await;
    let second = app.create_order("bob@example.com", 200).await;
    app.wait_for(&second).await;
    assert_eq!(
        api.store().summary().await.expect("summary").total_orders,
        2
    );
    // The live runner's event, the rebuild's, and the rebuilt generation's runner's.
    eventually("the projector counts every commit", || async {
        (projector.events_committed() == 3).then_some(())
    })
    .await;
    assert_eq!(api.events_committed(), 0);
    api.shutdown().await;
    projector.shutdown().await;
}
