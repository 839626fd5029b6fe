//! Overload is answered, not queued: each bounded queue (`--max-pending`) lets in its
//! limit and answers the next request 503 with Retry-After at once; the service serves
//! fully again once the load drops.
//!
//! The first three tests fill one queue deterministically, with stores that hold their
//! callers until the test lets them go ([`Hold`]); the last drives the real stores of the
//! combination under test with a flood far past a small limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Response, StatusCode};
use tokio::sync::watch;
use uuid::Uuid;

use ordo::{Limits, Settings, Stores};
use ordo_app::hooks::{self, HookedStores, Query, ReadStoreHooks};
use ordo_domain::{ReadModelBatch, ReadStoreError};
use ordo_es::{
    Appended, Checkpoint, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StoreError, StreamId,
};

use ordo_testkit::eventually;

use crate::helpers::{
    ADMIN_TOKEN, CommandAnswer, TestApp, ada, expect_problem, store_args, wait_until_ready,
};

const LIMIT: usize = 4;

/// A switch that holds every caller that passes while it is on, and counts them.
#[derive(Debug)]
struct Hold {
    on: watch::Sender<bool>,
    arrived: AtomicUsize,
}

impl Hold {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            on: watch::Sender::new(false),
            arrived: AtomicUsize::new(0),
        })
    }

    fn hold(&self) {
        self.arrived.store(0, Ordering::SeqCst);
        self.on.send_replace(true);
    }

    fn release(&self) {
        self.on.send_replace(false);
    }

    async fn pass(&self) {
        let mut on = self.on.subscribe();
        if *on.borrow_and_update() {
            self.arrived.fetch_add(1, Ordering::SeqCst);
            let _ = on.wait_for(|held| !*held).await;
        }
    }

    /// Waits until `n` callers are held (bounded: a test that never gets there fails).
    async fn until_holding(&self, n: usize) {
        eventually(Duration::from_secs(10), || async {
            let arrived = self.arrived.load(Ordering::SeqCst);
            if arrived >= n { Ok(()) } else { Err(arrived) }
        })
        .await
        .unwrap_or_else(|arrived| panic!("only {arrived} callers arrived, not {n}"));
    }
}

/// The event store with its appends held while `appends` is on.
#[derive(Debug)]
struct HeldAppends {
    inner: Arc<dyn EventStore>,
    appends: Arc<Hold>,
}

#[async_trait]
impl EventStore for HeldAppends {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.appends.pass().await;
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from_version, limit).await
    }
    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }
    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        self.inner.count_after(after).await
    }
    async fn head(&self) -> Result<Checkpoint, StoreError> {
        self.inner.head().await
    }
    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        self.inner.event_id_at(position).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Read models whose list queries are held while `lists` is on, and whose projection
/// commits are held while `commits` is on.
#[derive(Debug)]
struct HeldReads {
    lists: Arc<Hold>,
    commits: Arc<Hold>,
}

#[async_trait]
impl ReadStoreHooks for HeldReads {
    async fn before_query(&self, query: Query) -> Result<hooks::Held, ReadStoreError> {
        if query == Query::List {
            self.lists.pass().await;
        }
        Ok(hooks::Held::NOTHING)
    }
    async fn before_commit(&self, _: &ReadModelBatch) -> Result<hooks::Held, ReadStoreError> {
        self.commits.pass().await;
        Ok(hooks::Held::NOTHING)
    }
}

struct Held {
    app: TestApp,
    appends: Arc<Hold>,
    lists: Arc<Hold>,
    commits: Arc<Hold>,
}

fn settings(max_pending: usize) -> Settings {
    Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        limits: Limits {
            max_pending,
            ..Limits::default()
        },
        ..Settings::default()
    }
}

/// The service on the stores of the combination under test, wrapped so that the test
/// can hold appends, list queries and projection commits; every queue lets in [`LIMIT`].
async fn held_app(dir: &tempfile::TempDir) -> Held {
    let args = store_args(dir.path());
    let mut stores = Stores::open(&args).await.expect("open stores");
    let (appends, lists, commits) = (Hold::new(), Hold::new(), Hold::new());
    stores.events = Arc::new(HeldAppends {
        inner: Arc::clone(&stores.events),
        appends: Arc::clone(&appends),
    });
    stores.reads = Arc::new(HookedStores::all(
        Arc::clone(&stores.reads),
        Arc::new(HeldReads {
            lists: Arc::clone(&lists),
            commits: Arc::clone(&commits),
        }),
    ));
    let app = TestApp::spawn_on(args, stores, settings(LIMIT)).await;
    // Ready before anything is held: the checks below tell the queues' effect on
    // readiness from a projection still starting.
    assert!(
        wait_until_ready(&app, Duration::from_secs(30)).await,
        "the service never became ready"
    );
    Held {
        app,
        appends,
        lists,
        commits,
    }
}

/// A sample of `/metrics` (the first line of `series`), as a number.
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .expect("a whole number")
}

/// A 503 problem with Retry-After whose detail names `what`.
async fn expect_overloaded(response: Response, what: &str) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s >= 1), "Retry-After seconds");
    let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains(what), "{detail:?} should name {what:?}");
}

#[tokio::test]
async fn commands_past_the_event_store_queue_are_answered_503_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held = held_app(&dir).await;
    let app = Arc::new(held.app);
    held.appends.hold();
    let waiting: Vec<_> = (0..LIMIT)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.post_order(&ada()).await.status() })
        })
        .collect();
    held.appends.until_holding(LIMIT).await;
    // The queue is full: the next commands are answered while the first still wait.
    for _ in 0..3 {
        expect_overloaded(app.post_order(&ada()).await, "event store is busy").await;
    }
    assert_eq!(
        metric(&app, "ordo_queue_inside{queue=\"events\"}").await,
        LIMIT as u64
    );
    assert_eq!(
        metric(&app, "ordo_queue_rejected_total{queue=\"events\"}").await,
        3
    );
    // Health, readiness and the read models are not behind the event store's queue.
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    assert_eq!(app.get("/api/v1/orders").await.status(), StatusCode::OK);
    held.appends.release();
    for task in waiting {
        assert_eq!(task.await.expect("task"), StatusCode::CREATED);
    }
    for _ in 0..LIMIT * 2 {
        assert_eq!(app.post_order(&ada()).await.status(), StatusCode::CREATED);
    }
    assert_eq!(
        metric(&app, "ordo_queue_peak{queue=\"events\"}").await,
        LIMIT as u64,
        "never more inside than the limit"
    );
    assert_eq!(metric(&app, "ordo_queue_inside{queue=\"events\"}").await, 0);
}

#[tokio::test]
async fn queries_past_the_read_queue_are_answered_503_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held = held_app(&dir).await;
    let app = Arc::new(held.app);
    let order = CommandAnswer::from(app.post_order(&ada()).await).await;
    held.lists.hold();
    let waiting: Vec<_> = (0..LIMIT)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.get("/api/v1/orders").await.status() })
        })
        .collect();
    held.lists.until_holding(LIMIT).await;
    expect_overloaded(app.get("/api/v1/orders").await, "read store is busy").await;
    // Every query shares the read models' queue, and commands do not wait in it.
    let one = format!("/api/v1/orders/order/{}", order.order_id);
    expect_overloaded(app.get(&one).await, "read store is busy").await;
    expect_overloaded(
        app.get("/api/v1/orders/summary").await,
        "read store is busy",
    )
    .await;
    assert_eq!(app.post_order(&ada()).await.status(), StatusCode::CREATED);
    assert_eq!(
        metric(&app, "ordo_queue_rejected_total{queue=\"reads\"}").await,
        3
    );
    held.lists.release();
    for task in waiting {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
    assert_eq!(
        app.get_after(&one, &order.token).await.status(),
        StatusCode::OK
    );
    assert_eq!(metric(&app, "ordo_queue_inside{queue=\"reads\"}").await, 0);
}

#[tokio::test]
async fn consistency_waits_past_their_queue_are_answered_503_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held = held_app(&dir).await;
    let app = Arc::new(held.app);
    held.commits.hold();
    let order = CommandAnswer::from(app.post_order(&ada()).await).await;
    let path = format!("/api/v1/orders/order/{}", order.order_id);
    let waiting: Vec<_> = (0..LIMIT)
        .map(|_| {
            let (app, path, token) = (Arc::clone(&app), path.clone(), order.token.clone());
            tokio::spawn(async move { app.get_after(&path, &token).await.status() })
        })
        .collect();
    // The waiters are inside the queue once the gauge says so (bounded polling).
    let (Ok(inside) | Err(inside)) = eventually(Duration::from_secs(10), || async {
        let inside = metric(&app, "ordo_queue_inside{queue=\"consistency_waits\"}").await;
        if inside == LIMIT as u64 {
            Ok(inside)
        } else {
            Err(inside)
        }
    })
    .await;
    assert_eq!(inside, LIMIT as u64, "every waiter inside the queue");
    expect_overloaded(app.get_after(&path, &order.token).await, "too busy to wait").await;
    // Without a token nothing waits, so nothing is turned away.
    assert_eq!(app.get("/api/v1/orders").await.status(), StatusCode::OK);
    held.commits.release();
    for task in waiting {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
    assert_eq!(
        metric(
            &app,
            "ordo_queue_rejected_total{queue=\"consistency_waits\"}"
        )
        .await,
        1
    );
}

/// Far past capacity on the real stores: every answer is a success or a 503 with
/// Retry-After, no queue ever holds more than its limit, and once the flood is over every
/// request succeeds and every acknowledged order is in the read models.
#[tokio::test]
async fn a_flood_past_capacity_gets_answers_or_503s_and_full_service_after() {
    const CLIENTS: usize = 48;
    const ROUNDS: usize = 4;
    const SMALL: usize = 2;
    let app = Arc::new(TestApp::spawn_configured(settings(SMALL)).await);
    let flood: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..ROUNDS {
                    let response = if client % 2 == 0 {
                        app.post_order(&ada()).await
                    } else {
                        app.get("/api/v1/orders?limit=5").await
                    };
                    let status = response.status();
                    let created = if status == StatusCode::CREATED {
                        Some(CommandAnswer::from(response).await)
                    } else {
                        if status == StatusCode::SERVICE_UNAVAILABLE {
                            assert!(response.headers().contains_key("retry-after"));
                        }
                        None
                    };
                    answers.push((status, created));
                }
                answers
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut turned_away = 0u64;
    for task in flood {
        for (status, answer) in task.await.expect("client") {
            match status {
                StatusCode::CREATED | StatusCode::OK => created.extend(answer),
                StatusCode::SERVICE_UNAVAILABLE => turned_away += 1,
                other => panic!("a flood is answered with success or 503, not {other}"),
            }
        }
    }
    let mut rejected = 0;
    for queue in ["events", "reads", "consistency_waits"] {
        let peak = metric(&app, &format!("ordo_queue_peak{{queue=\"{queue}\"}}")).await;
        assert!(peak <= SMALL as u64, "{queue}: {peak} inside at once");
        rejected += metric(
            &app,
            &format!("ordo_queue_rejected_total{{queue=\"{queue}\"}}"),
        )
        .await;
    }
    assert_eq!(
        rejected, turned_away,
        "each 503 is one operation turned away"
    );
    assert!(
        turned_away > 0,
        "{} clients against queues of {SMALL} were all served: the flood was no flood",
        CLIENTS
    );
    // The load is gone: full service.
    for _ in 0..10 {
        created.push(CommandAnswer::from(app.post_order(&ada()).await).await);
    }
    // Each order waited for with its own token: where the projection is divided into
    // shards, a token covers the shard its write went to, not the others.
    for order in &created {
        let path = format!("/api/v1/orders/order/{}", order.order_id);
        assert_eq!(
            app.get_after(&path, &order.token).await.status(),
            StatusCode::OK,
            "acknowledged order {} is in the read models",
            order.order_id
        );
    }
}
