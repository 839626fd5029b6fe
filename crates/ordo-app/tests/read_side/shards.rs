//! The projection divided into shards over several read sides (as several processes
//! would run them) on one event store, one set of read models and one lease store:
//! the shards spread evenly, every event is applied exactly once, a read side that
//! leaves hands its shards over, and one cut off from the leases past their time commits
//! nothing more. At the end the read models equal a replay by one runner.

use std::sync::atomic::AtomicBool;

use ordo_app::read_side::ShardOptions;
use ordo_es::{InMemoryLeases, Lease, LeaseError, LeaseStore};

use super::support::*;

/// Waits up to 30 s for `probe` to give `Some`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    probe: impl Fn() -> F,
) -> T {
    eventually(Duration::from_secs(30), || {
        let f = probe();
        async move { f.await.ok_or("not yet") }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within 30 s"))
}

const PARTITIONS: u32 = 8;
const TTL: Duration = Duration::from_millis(600);

/// A lease store one process reaches through a link that can be cut: while cut, every
/// call fails as an unreachable database does.
#[derive(Debug)]
struct Link {
    leases: Arc<InMemoryLeases>,
    cut: AtomicBool,
}

impl Link {
    fn check(&self) -> Result<(), LeaseError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(LeaseError::Unavailable("the link is cut (test)".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for Link {
    async fn heartbeat(
        &self,
        projection: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, LeaseError> {
        self.check()?;
        self.leases.heartbeat(projection, owner, ttl).await
    }
    async fn acquire(
        &self,
        projection: &str,
        shard: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        self.check()?;
        self.leases.acquire(projection, shard, owner, ttl).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LeaseError> {
        self.check()?;
        self.leases.renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.check()?;
        self.leases.release(lease).await
    }
    async fn leases(&self, projection: &str) -> Result<Vec<Lease>, LeaseError> {
        self.check()?;
        self.leases.leases(projection).await
    }
    async fn is_current(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.check()?;
        self.leases.is_current(lease).await
    }
}

struct Cluster {
    events: Arc<dyn EventStore>,
    provider: Arc<InMemoryReadStores>,
    leases: Arc<InMemoryLeases>,
}

impl Cluster {
    fn new() -> Self {
        let leases = Arc::new(InMemoryLeases::new());
        Self {
            events: Arc::new(InMemoryStore::with_partitions(PARTITIONS)),
            provider: InMemoryReadStores::fenced_by(Arc::clone(&leases)),
            leases,
        }
    }

    /// A read side of a process named `owner`, and the link to its leases.
    async fn process(&self, owner: &str) -> (Arc<ReadSide>, Arc<Link>) {
        self.process_loading_from(owner, u64::MAX).await
    }

    /// [`process`](Self::process), loading never-projected read models in bulk from
    /// `bulk_from` stored events.
    async fn process_loading_from(
        &self,
        owner: &str,
        bulk_from: u64,
    ) -> (Arc<ReadSide>, Arc<Link>) {
        let link = Arc::new(Link {
            leases: Arc::clone(&self.leases),
            cut: AtomicBool::new(false),
        });
        let options = ReadSideOptions {
            bulk_start_min_events: bulk_from,
            shards: Some(ShardOptions {
                leases: Arc::clone(&link) as Arc<dyn LeaseStore>,
                owner: owner.to_owned(),
                ttl: TTL,
            }),
            ..ReadSideOptions::default()
        };
        let config = RunnerConfig {
            batch_size: 16,
            catch_up_batch_size: 64,
            idle_wait: Duration::from_millis(20),
            ..RunnerConfig::default()
        };
        let side = ReadSide::start_with(
            Arc::clone(&self.events),
            Arc::clone(&self.provider) as Arc<dyn ReadStoreProvider>,
            config,
            options,
        )
        .await
        .expect("a read side");
        (side, link)
    }

    async fn create(&self, from: u32, to: u32) {
        let service = OrderService::new(Arc::clone(&self.events));
        for i in from..to {
            let id = service
                .create(create(i), None, CommandContext::default())
                .await
                .expect("create")
                .order_id;
            if i % 3 == 0 {
                service
                    .update_status(id, Status::Confirmed, CommandContext::default())
                    .await
                    .expect("confirm");
            }
            if i % 5 == 0 {
                service
                    .cancel(id, None, CommandContext::default())
                    .await
                    .expect("cancel");
            }
        }
    }

    async fn head(&self) -> Checkpoint {
        self.events.head().await.expect("head")
    }

    async fn total_events(&self) -> u64 {
        self.events
            .count_after(&Checkpoint::origin(PARTITIONS))
            .await
            .expect("count")
    }

    /// What one runner over the whole log makes of the events: the read models every
    /// division into shards must come to.
    async fn replayed(&self) -> Arc<InMemoryReadStore> {
        let store = InMemoryReadStore::new();
        let projection = Arc::new(OrderProjection::new(
            Arc::clone(&store) as Arc<dyn ordo_domain::ReadModelWriter>
        ));
        let runner = ProjectionRunner::new(
            Arc::clone(&self.events),
            projection as Arc<dyn Projection>,
            RunnerConfig::default(),
        );
        let handle = runner.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        let head = self.head().await;
        until("the replay catches up", || {
            let status = handle.status();
            let head = head.clone();
            async move { status.checkpoint.filter(|c| c.is_at_or_past(&head)) }
        })
        .await;
        let _ = stop.send(());
        task.await.expect("replay runner");
        store
    }
}

/// Waits until `side` publishes a checkpoint at or past the log's head.
async fn caught_up(side: &ReadSide, head: &Checkpoint) {
    until("the read side covers the log", || {
        let status = side.status();
        let head = head.clone();
        async move { status.checkpoint.filter(|c| c.is_at_or_past(&head)) }
    })
    .await;
}

/// Waits until every one of `sides` covers the log's head now.
async fn all_caught_up(cluster: &Cluster, sides: &[&ReadSide]) {
    let head = cluster.head().await;
    for side in sides {
        caught_up(side, &head).await;
    }
}

/// Two processes, `a` and `b`, holding half the shards each.
async fn two_processes(
    cluster: &Cluster,
) -> ((Arc<ReadSide>, Arc<Link>), (Arc<ReadSide>, Arc<Link>)) {
    let a = cluster.process("a").await;
    let b = cluster.process("b").await;
    owning(&a.0, 4).await;
    owning(&b.0, 4).await;
    (a, b)
}

/// That the events committed by `sides` together are exactly the log's.
async fn assert_exactly_once(cluster: &Cluster, sides: &[&ReadSide], what: &str) {
    let committed: u64 = sides.iter().map(|s| s.events_committed()).sum();
    assert_eq!(committed, cluster.total_events().await, "{what}");
}

async fn owning(side: &ReadSide, shards: u64) {
    until(&format!("the read side holds {shards} shards"), || {
        let owned = side.shards_owned();
        async move { (owned == Some(shards)).then_some(()) }
    })
    .await;
}

/// The answers that must not depend on how the work was divided.
async fn answers(store: &dyn OrderReadStore) -> serde_json::Value {
    let summary = store.summary().await.expect("summary");
    let top = store.top_customers(100).await.expect("top customers");
    let all = store
        .list(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    let mut orders = Vec::new();
    for page in 1..=all.total.div_ceil(100) {
        let page = store
            .list(&ListQuery {
                limit: 100,
                page: u32::try_from(page).expect("page"),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        orders.extend(page.orders);
    }
    orders.sort_by_key(|o| o.order_id);
    json!({
        "summary": serde_json::to_value(summary).expect("json"),
        "top": serde_json::to_value(top).expect("json"),
        "orders": serde_json::to_value(orders).expect("json"),
    })
}

async fn assert_equals_replay(cluster: &Cluster, side: &ReadSide) {
    let replayed = cluster.replayed().await;
    let got = answers(side.store().as_ref()).await;
    let want = answers(replayed.as_ref()).await;
    if got != want {
        let differing: Vec<_> = ["summary", "top", "orders"]
            .into_iter()
            .filter(|k| got[k] != want[k])
            .collect();
        let orders = |v: &serde_json::Value| v["orders"].as_array().cloned().unwrap_or_default();
        let (g, w) = (orders(&got), orders(&want));
        let wrong: Vec<_> = g.iter().filter(|o| !w.contains(o)).collect();
        let missing: Vec<_> = w.iter().filter(|o| !g.contains(o)).collect();
        panic!(
            "the read models differ from a replay of the log in {differing:?}: summary {} vs {}; orders not in the replay {wrong:?}; replayed orders missing {missing:?}",
            got["summary"], want["summary"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_split_the_shards_and_apply_every_event_once() {
    let cluster = Cluster::new();
    let ((a, _), (b, _)) = two_processes(&cluster).await;
    cluster.create(0, 120).await;
    all_caught_up(&cluster, &[&a, &b]).await;
    assert_exactly_once(
        &cluster,
        &[&a, &b],
        "every event applied exactly once, by one of the two",
    )
    .await;
    assert!(a.events_committed() > 0 && b.events_committed() > 0);
    assert_equals_replay(&cluster, &a).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_that_leaves_hands_its_shards_over_and_one_that_joins_takes_its_share() {
    let cluster = Cluster::new();
    let (a, _) = cluster.process("a").await;
    owning(&a, 8).await;
    cluster.create(0, 40).await;
    let (b, _) = cluster.process("b").await;
    owning(&b, 4).await;
    owning(&a, 4).await;
    cluster.create(40, 80).await;
    all_caught_up(&cluster, &[&a, &b]).await;
    b.shutdown().await;
    owning(&a, 8).await;
    cluster.create(80, 120).await;
    caught_up(&a, &cluster.head().await).await;
    assert_exactly_once(
        &cluster,
        &[&a, &b],
        "nothing applied twice or skipped across the moves",
    )
    .await;
    assert_equals_replay(&cluster, &a).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_cut_off_past_its_leases_commits_nothing_more() {
    let cluster = Cluster::new();
    let ((a, _), (b, b_link)) = two_processes(&cluster).await;
    cluster.create(0, 40).await;
    all_caught_up(&cluster, &[&a, &b]).await;
    let b_before = b.events_committed();
    // b loses the lease store; its runners go on, their leases lapse, a takes them.
    b_link.cut.store(true, Ordering::SeqCst);
    owning(&a, 8).await;
    let b_at_takeover = b.events_committed();
    // b's runners still run, and try to apply these in their shards: refused.
    cluster.create(40, 100).await;
    let head = cluster.head().await;
    caught_up(&a, &head).await;
    let b_cut_off = b.events_committed();
    assert_eq!(
        b_cut_off, b_at_takeover,
        "b committed after its leases were taken over"
    );
    assert_eq!(
        a.events_committed() + b_cut_off,
        cluster.total_events().await,
        "an event was applied twice or skipped"
    );
    // b comes back, and gets its share again.
    b_link.cut.store(false, Ordering::SeqCst);
    owning(&b, 4).await;
    owning(&a, 4).await;
    cluster.create(100, 140).await;
    all_caught_up(&cluster, &[&a, &b]).await;
    assert!(b.events_committed() > b_cut_off, "b projects again");
    assert!(b_cut_off >= b_before);
    assert_exactly_once(&cluster, &[&a, &b], "every event applied exactly once").await;
    assert_equals_replay(&cluster, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_with_shards_switches_every_process_over() {
    let cluster = Cluster::new();
    let ((a, _), (b, _)) = two_processes(&cluster).await;
    cluster.create(0, 60).await;
    a.rebuild(&|_, _| {}).await.expect("the rebuild");
    until("b follows the switch", || {
        let (ga, gb) = (a.generation(), b.generation());
        async move { (ga == gb).then_some(()) }
    })
    .await;
    cluster.create(60, 90).await;
    all_caught_up(&cluster, &[&a, &b]).await;
    owning(&a, 4).await;
    owning(&b, 4).await;
    assert_equals_replay(&cluster, &a).await;
    assert_equals_replay(&cluster, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repairs_are_ordered_with_each_shards_batches() {
    use ordo_app::{JobState, ReplayJobs, ReplayRequest};
    let cluster = Cluster::new();
    let ((a, _), (b, _)) = two_processes(&cluster).await;
    cluster.create(0, 60).await;
    let service = OrderService::new(Arc::clone(&cluster.events));
    let jobs = ReplayJobs::new(Arc::clone(&a), service.clone());
    // Repairs while both keep projecting new orders.
    let writes = {
        let events = Arc::clone(&cluster.events);
        tokio::spawn(async move {
            let service = OrderService::new(events);
            for i in 60..120 {
                service
                    .create(create(i), None, CommandContext::default())
                    .await
                    .expect("create");
            }
        })
    };
    let since = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let job = jobs
        .start(ReplayRequest::From(since))
        .expect("a repair from a timestamp");
    until("the repair finishes", || {
        let status = jobs.status(job);
        async move {
            status
                .filter(|s| s.state != JobState::Running)
                .map(|s| (s.state, s.error))
        }
    })
    .await;
    assert_eq!(jobs.status(job).map(|s| s.state), Some(JobState::Done));
    writes.await.expect("writes");
    all_caught_up(&cluster, &[&a, &b]).await;
    assert_equals_replay(&cluster, &a).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_load_at_start_hands_over_to_every_processs_shards() {
    let cluster = Cluster::new();
    cluster.create(0, 120).await;
    // a loads the never-projected read models in bulk; b, starting meanwhile, projects
    // its shards into the active generation until a switches, then follows.
    let (a, _) = cluster.process_loading_from("a", 50).await;
    let (b, _) = cluster.process_loading_from("b", 50).await;
    // (It may be done already: the log is short.)
    until("a's bulk load becomes the live read models", || {
        let loading = a.loading_generation();
        async move { loading.is_none().then_some(()) }
    })
    .await;
    assert_ne!(
        a.generation(),
        "g0",
        "a loaded the read models in bulk into a generation of their own"
    );
    until("b follows the switch", || {
        let (ga, gb) = (a.generation(), b.generation());
        async move { (ga == gb).then_some(()) }
    })
    .await;
    owning(&a, 4).await;
    owning(&b, 4).await;
    cluster.create(120, 160).await;
    all_caught_up(&cluster, &[&a, &b]).await;
    assert_equals_replay(&cluster, &a).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_stored_checkpoint_over_every_shard_is_found_without_the_partition_count() {
    use ordo_domain::read_store::{shard_key, stored_projection_checkpoint};
    let store = InMemoryReadStore::new();
    let writer = Arc::clone(&store) as Arc<dyn ordo_domain::ReadModelWriter>;
    assert_eq!(
        stored_projection_checkpoint(writer.as_ref(), "orders", None)
            .await
            .expect("read"),
        None,
        "nothing stored"
    );
    // Only shard 2 of 4 has a row (the others never had an event); the whole-log
    // checkpoint a rebuild left covers partitions 0 and 3.
    let mut whole = Checkpoint::origin(4);
    whole.advance(&Position::new(0, 5, 0));
    whole.advance(&Position::new(3, 2, 0));
    let mut shard = Checkpoint::origin(4);
    shard.advance(&Position::new(2, 9, 0));
    for (key, to) in [
        ("orders".to_owned(), &whole),
        (shard_key("orders", 2), &shard),
    ] {
        writer
            .commit(
                &key,
                Arc::new(ReadModelBatch::default()),
                &Checkpoint::origin(4),
                to,
            )
            .await
            .expect("commit");
    }
    let combined = stored_projection_checkpoint(writer.as_ref(), "orders", None)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(combined.partitions(), 4);
    let cursors: Vec<u64> = combined.cursors().iter().map(|c| c.major).collect();
    assert_eq!(cursors, vec![5, 0, 9, 2]);
    assert_eq!(
        stored_projection_checkpoint(writer.as_ref(), "orders", Some(4))
            .await
            .expect("read"),
        Some(combined)
    );
}
