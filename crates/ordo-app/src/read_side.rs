//! The live read side: the active read-store generation and the projection runner that
//! feeds it, with a blue-green switch to a rebuilt generation. A process that runs no
//! projection follows the generation and checkpoint other processes store (`following`).

mod following;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use ordo_es::{
    Checkpoint, EventStore, Position, ProjectionHandle, ProjectionRunner, ProjectionState,
    ProjectionStatus, RunnerConfig,
};

use crate::projection::OrderProjection;
use ordo_domain::read_store::{
    OrderReadStore, ReadGeneration, ReadStoreError, ReadStoreProvider, RebuildLock,
};

/// One running projection into one generation.
#[derive(Debug)]
struct Running {
    generation: ReadGeneration,
    projection: Arc<OrderProjection>,
    handle: ProjectionHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// How this read side starts its projection runners.
#[derive(Debug, Clone)]
struct Runners {
    config: RunnerConfig,
    /// The runtime they run on; `None`: the caller's.
    runtime: Option<Handle>,
    /// The events every projection they run has committed.
    committed: Arc<AtomicU64>,
}

fn start_runner(
    events: &Arc<dyn EventStore>,
    generation: ReadGeneration,
    runners: &Runners,
) -> Running {
    let projection = Arc::new(OrderProjection::new(generation.store.clone()));
    start_projection(events, generation, projection, runners)
}

fn start_projection(
    events: &Arc<dyn EventStore>,
    generation: ReadGeneration,
    projection: Arc<OrderProjection>,
    runners: &Runners,
) -> Running {
    projection.count_commits_into(Arc::clone(&runners.committed));
    let runner = ProjectionRunner::new(
        Arc::clone(events),
        Arc::clone(&projection) as Arc<dyn ordo_es::Projection>,
        runners.config.clone(),
    );
    let handle = runner.handle();
    let (stop, stopped) = watch::channel(false);
    let run = runner.run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    });
    // The store calls a runner makes (blocking jobs included) run on that runtime too.
    let task = match &runners.runtime {
        Some(runtime) => runtime.spawn(run),
        None => tokio::spawn(run),
    };
    Running {
        generation,
        projection,
        handle,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) -> (ReadGeneration, ProjectionHandle) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "projection runner panicked");
        }
        (self.generation, self.handle)
    }
}

/// Why a rebuild did not switch over.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Store(#[from] ReadStoreError),
    #[error("the event store failed: {0}")]
    Events(#[from] ordo_es::StoreError),
    #[error("the rebuilt read models did not catch up with the live ones in time")]
    CatchUpTimeout,
    #[error(
        "the rebuild made no progress for {} s (last error: {last_error}); the live read models are unchanged",
        .after.as_secs()
    )]
    Stalled { after: Duration, last_error: String },
    #[error("the read side is shutting down")]
    ShuttingDown,
    #[error("another process is rebuilding these read models")]
    Busy,
    /// The load started from the origin, and the log went backwards under it.
    #[error("{0}")]
    LogWentBackwards(String),
}

/// The projection checkpoint `generation` has committed (`origin` when none); `None`
/// when it cannot be read.
async fn stored_checkpoint(generation: &ReadGeneration, origin: &Checkpoint) -> Option<Checkpoint> {
    match generation
        .store
        .load_checkpoint(OrderProjection::NAME)
        .await
    {
        Ok(stored) => Some(stored.unwrap_or_else(|| origin.clone())),
        Err(e) => {
            tracing::debug!(generation = %generation.id, error = %e, "cannot read the rebuilt generation's checkpoint yet");
            None
        }
    }
}

/// Watches a loading projection's checkpoint: a load that has not moved for the stall
/// limit has stalled (a read store refusing its writes, say).
struct StallWatch {
    limit: Duration,
    checkpoint: Option<Checkpoint>,
    since: tokio::time::Instant,
}

impl StallWatch {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            checkpoint: None,
            since: tokio::time::Instant::now(),
        }
    }

    /// `RebuildError::Stalled` (with the projection's last error) when `status` has not
    /// moved for the limit.
    fn check(&mut self, status: &ProjectionStatus) -> Result<(), RebuildError> {
        if status.checkpoint != self.checkpoint {
            self.checkpoint = status.checkpoint.clone();
            self.since = tokio::time::Instant::now();
            return Ok(());
        }
        if self.since.elapsed() < self.limit {
            return Ok(());
        }
        Err(RebuildError::Stalled {
            after: self.limit,
            last_error: status
                .last_error
                .clone()
                .unwrap_or_else(|| "none reported".to_string()),
        })
    }
}

/// How often a process checks whether another one switched the active generation.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long the previous generation is kept after a switch: longer than [`FOLLOW_EVERY`],
/// so other processes have moved off it, and than any query in flight.
const DROP_AFTER: Duration = Duration::from_secs(10);

/// How long a rebuild may go without its projection moving before it gives up (far more
/// than any one batch takes; a projection that keeps failing gets there).
pub const REBUILD_STALL_LIMIT: Duration = Duration::from_secs(300);

/// How long a shutdown waits for the batch being written to the read store.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// From how many stored events read models that were never projected into are loaded
/// in bulk at start (below it, catching up batch by batch takes well under a second).
pub const BULK_START_MIN_EVENTS: u64 = 10_000;

/// Settings of a [`ReadSide`] beyond its runner's.
#[derive(Clone, Debug)]
pub struct ReadSideOptions {
    /// How long a rebuild may go without progress before it gives up.
    pub stall_limit: Duration,
    /// Read models that were never projected into, started on an event store holding at
    /// least this many events, are loaded in bulk into a new generation (like a rebuild)
    /// that then becomes the active one, instead of caught up batch by batch. `u64::MAX`:
    /// never.
    pub bulk_start_min_events: u64,
    /// The runtime the projection runners (live, rebuilding, loading) run on, with the
    /// store calls they make; `None`: the runtime that starts them. A runtime of their
    /// own lets a service run its projections at a lower CPU priority than its requests.
    pub projection_runtime: Option<Handle>,
}

impl Default for ReadSideOptions {
    fn default() -> Self {
        Self {
            stall_limit: REBUILD_STALL_LIMIT,
            bulk_start_min_events: BULK_START_MIN_EVENTS,
            projection_runtime: None,
        }
    }
}

/// The read side of a running service.
#[derive(Debug)]
pub struct ReadSide {
    events: Arc<dyn EventStore>,
    provider: Arc<dyn ReadStoreProvider>,
    runners: Runners,
    stall_limit: Duration,
    live: RwLock<(ReadGeneration, ProjectionHandle)>,
    running: Mutex<Option<Running>>,
    /// Held for the whole of a rebuild and of any generation clean-up.
    rebuilding: Arc<Mutex<()>>,
    /// Set while the read models are loaded in bulk at start: queries are answered from
    /// the active generation (behind the log), `running` feeds the generation being
    /// loaded, and its progress is the status reported.
    loading: AtomicBool,
    /// The generation that load fills, when there is one.
    bulk_generation: Option<String>,
    /// Stops the task that follows switches made by other processes.
    stop_following: watch::Sender<bool>,
    /// In a process that runs no projection: what publishes the stored checkpoint.
    follower: Option<Arc<following::Follower>>,
}

impl ReadSide {
    /// Opens the active generation (dropping leftovers of interrupted rebuilds) and starts
    /// projecting into it, with the default [`ReadSideOptions`].
    pub async fn start(
        events: Arc<dyn EventStore>,
        provider: Arc<dyn ReadStoreProvider>,
        config: RunnerConfig,
    ) -> Result<Arc<Self>, ReadStoreError> {
        Self::start_with(events, provider, config, ReadSideOptions::default()).await
    }

    /// [`start`](Self::start) with other options. When the active generation was never
    /// projected into and the event store holds at least
    /// [`bulk_start_min_events`](ReadSideOptions::bulk_start_min_events), the read
    /// models are loaded in bulk into a new generation, which replaces the active one once
    /// it has caught up; meanwhile queries are answered from the active generation and
    /// the status reports catching up.
    pub async fn start_with(
        events: Arc<dyn EventStore>,
        provider: Arc<dyn ReadStoreProvider>,
        config: RunnerConfig,
        options: ReadSideOptions,
    ) -> Result<Arc<Self>, ReadStoreError> {
        let runners = Runners {
            config,
            runtime: options.projection_runtime.clone(),
            committed: Arc::default(),
        };
        let lock = provider.try_lock_rebuild().await?;
        match &lock {
            Some(_) => {
                let dropped = provider.drop_inactive().await?;
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "removed read-store generations left by an interrupted rebuild"
                    );
                }
            }
            None => tracing::info!(
                "another process is rebuilding the read models; leaving its generation alone"
            ),
        }
        let generation = provider.open_active().await?;
        tracing::info!(generation = %generation.id, "read models");
        let rebuilding = Arc::new(Mutex::new(()));
        let load = match lock {
            Some(lock) => {
                match Self::prepare_bulk_start(&events, &provider, &generation, &options, &runners)
                    .await
                {
                    Ok(building) => building.map(|building| (building, lock)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prepare a bulk load; catching up batch by batch");
                        // A generation it created is not the active one: drop it now
                        // rather than at the next start (the rebuild lock is held).
                        if let Err(e) = provider.drop_inactive().await {
                            tracing::warn!(error = %e, "cannot drop the generation of the bulk load that failed; the next start drops it");
                        }
                        None
                    }
                }
            }
            None => None,
        };
        let loading = load.is_some();
        let (running, load) = match load {
            Some((building, lock)) => {
                // Nothing else creates or drops generations in this process meanwhile
                // (the lock is new: this does not wait).
                let one_at_a_time = Arc::clone(&rebuilding).lock_owned().await;
                let new = building.generation.clone();
                (building, Some((new, lock, one_at_a_time)))
            }
            None => (start_runner(&events, generation.clone(), &runners), None),
        };
        let bulk_generation = load.as_ref().map(|(new, _, _)| new.id.clone());
        let (stop_following, following) = watch::channel(false);
        let side = Arc::new(Self {
            live: RwLock::new((generation, running.handle.clone())),
            running: Mutex::new(Some(running)),
            events,
            provider,
            runners,
            stall_limit: options.stall_limit,
            rebuilding,
            loading: AtomicBool::new(loading),
            bulk_generation,
            stop_following,
            follower: None,
        });
        if let Some((new, lock, one_at_a_time)) = load {
            tokio::spawn(Arc::clone(&side).finish_bulk_start(new, lock, one_at_a_time));
        }
        tokio::spawn(follow_switches(Arc::downgrade(&side), following));
        Ok(side)
    }

    /// When `active` was never projected into and the log is long enough, creates a new
    /// generation and starts loading it in bulk; `None` otherwise.
    async fn prepare_bulk_start(
        events: &Arc<dyn EventStore>,
        provider: &Arc<dyn ReadStoreProvider>,
        active: &ReadGeneration,
        options: &ReadSideOptions,
        runners: &Runners,
    ) -> Result<Option<Running>, ReadStoreError> {
        if options.bulk_start_min_events == u64::MAX
            || active
                .store
                .load_checkpoint(OrderProjection::NAME)
                .await?
                .is_some()
        {
            return Ok(None);
        }
        let origin = Checkpoint::origin(events.partitions());
        let stored = match events.count_after(&origin).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the stored events; catching up batch by batch");
                return Ok(None);
            }
        };
        if stored < options.bulk_start_min_events {
            return Ok(None);
        }
        let generation = provider.create_generation().await?;
        generation.store.reset().await?;
        let projection = Arc::new(OrderProjection::new(generation.store.clone()));
        projection.begin_bulk().await?;
        tracing::info!(generation = %generation.id, events = stored, "the read models are empty: loading them in bulk");
        Ok(Some(start_projection(
            events, generation, projection, runners,
        )))
    }

    /// Waits for the bulk load started by [`start_with`](Self::start_with) to catch up,
    /// builds what it deferred and makes its generation the active one. On failure, drops
    /// it and catches the active generation up batch by batch instead.
    async fn finish_bulk_start(
        self: Arc<Self>,
        generation: ReadGeneration,
        lock: RebuildLock,
        one_at_a_time: tokio::sync::OwnedMutexGuard<()>,
    ) {
        let started = std::time::Instant::now();
        let switched_or_failed = match self.switch_to_bulk_load(&generation).await {
            Ok(true) => {
                tracing::info!(generation = %generation.id, elapsed_ms = started.elapsed().as_millis() as u64, "loaded the read models in bulk");
                true
            }
            Ok(false) => false, // shut down: the next start discards the load
            Err(e) => {
                tracing::error!(generation = %generation.id, error = %e, "the bulk load failed; catching up batch by batch instead");
                self.fall_back_to_catching_up().await
            }
        };
        if switched_or_failed {
            // The generation replaced (or the one that failed) is dropped; queries may
            // still be reading the replaced one for a moment.
            tokio::time::sleep(DROP_AFTER).await;
            match self.provider.drop_inactive().await {
                Ok(n) => tracing::debug!(dropped = n, "removed the unused read models"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove the unused read models; they are removed at the next start")
                }
            }
        }
        // The read side before the locks: whoever waits for them (`settled`) may open
        // these read models again, which the embedded store allows one owner at a time.
        drop(self);
        drop(lock);
        drop(one_at_a_time);
    }

    /// Replaces the failed bulk load by a runner catching the active generation up;
    /// false when the service is shutting down.
    async fn fall_back_to_catching_up(&self) -> bool {
        let failed = {
            let mut running = self.running.lock().await;
            let Some(failed) = running.take() else {
                return false;
            };
            let active = self.live().0;
            let new = start_runner(&self.events, active.clone(), &self.runners);
            *self.live.write().unwrap_or_else(|e| e.into_inner()) = (active, new.handle.clone());
            *running = Some(new);
            self.loading.store(false, Ordering::Release);
            failed
        };
        // The failed load may be stuck in a write to a store that stopped answering: it
        // writes only to its own generation, which is dropped.
        if tokio::time::timeout(SHUTDOWN_GRACE, failed.stop())
            .await
            .is_err()
        {
            tracing::warn!("the failed bulk load did not stop; leaving it behind");
        }
        true
    }

    /// The steps of [`finish_bulk_start`](Self::finish_bulk_start): `Ok(false)` when
    /// the service shut down meanwhile.
    async fn switch_to_bulk_load(&self, generation: &ReadGeneration) -> Result<bool, RebuildError> {
        let origin = Checkpoint::origin(self.events.partitions());
        let mut stall = StallWatch::new(self.stall_limit);
        // Until the projection has applied a short read of the log: everything stored
        // when the service started is loaded.
        loop {
            let status = self.live().1.status();
            match status.state {
                ProjectionState::Running => break,
                ProjectionState::Stopped => return Ok(false),
                ProjectionState::Halted => {
                    return Err(RebuildError::LogWentBackwards(
                        status.last_error.unwrap_or_default(),
                    ));
                }
                _ => {}
            }
            stall.check(&status)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (projection, handle) = match self.running.lock().await.as_ref() {
            Some(building) => (Arc::clone(&building.projection), building.handle.clone()),
            None => return Ok(false),
        };
        // Without holding `running`: a shutdown meanwhile stops the runner (between two
        // batches) and is not kept waiting for the index builds.
        projection.finish_bulk().await?;
        // Serve it once what the runner published is stored (consistency tokens are
        // answered from the published checkpoint). From the end of the bulk load every
        // batch is stored before it is published, so this is at most one batch away.
        let waiting = tokio::time::Instant::now();
        loop {
            if handle.status().state == ProjectionState::Stopped {
                return Ok(false);
            }
            let published = handle.status().checkpoint;
            if let Some(published) = published
                && stored_checkpoint(generation, &origin)
                    .await
                    .is_some_and(|stored| stored.is_at_or_past(&published))
            {
                break;
            }
            if waiting.elapsed() >= self.stall_limit {
                return Err(RebuildError::CatchUpTimeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let running = self.running.lock().await;
        if !running
            .as_ref()
            .is_some_and(|r| r.handle.same_runner(&handle))
        {
            return Ok(false); // shut down meanwhile
        }
        self.provider.activate(&generation.id).await?;
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = (generation.clone(), handle);
        // After `live`: whoever sees `loading` false sees the new generation.
        self.loading.store(false, Ordering::Release);
        drop(running);
        Ok(true)
    }

    /// When another process made another generation active, serve and project into it.
    async fn follow_active(&self) -> Result<(), ReadStoreError> {
        let Ok(_no_local_rebuild) = self.rebuilding.try_lock() else {
            return Ok(());
        };
        let active = self.provider.active_id().await?;
        if active == self.generation() {
            return Ok(());
        }
        let generation = self.provider.open_active().await?;
        let mut running = self.running.lock().await;
        let Some(old) = running.take() else {
            return Ok(()); // shutting down
        };
        old.stop().await;
        let new = start_runner(&self.events, generation.clone(), &self.runners);
        {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            *live = (generation.clone(), new.handle.clone());
        }
        *running = Some(new);
        tracing::info!(generation = %generation.id, "followed a switch to rebuilt read models made by another process");
        Ok(())
    }

    fn live(&self) -> (ReadGeneration, ProjectionHandle) {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The read store queries are answered from.
    pub fn store(&self) -> Arc<dyn OrderReadStore> {
        self.live().0.store
    }

    /// The id of the active generation.
    pub fn generation(&self) -> String {
        self.live().0.id
    }

    /// While the read models are loaded in bulk at start: the generation being loaded,
    /// whose progress [`status`](Self::status) reports.
    pub fn loading_generation(&self) -> Option<String> {
        if self.loading.load(Ordering::Acquire) {
            self.bulk_generation.clone()
        } else {
            None
        }
    }

    /// The live projection's status; while the read models are loaded in bulk at start,
    /// the load's progress, catching up until the new generation serves queries.
    pub fn status(&self) -> ProjectionStatus {
        let loading = self.loading.load(Ordering::Acquire);
        let mut status = self.live().1.status();
        if loading && status.state == ProjectionState::Running {
            status.state = ProjectionState::CatchingUp;
        }
        status
    }

    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    /// The events whose read-model change this process's projections have committed
    /// since it started, into any generation (a rebuild's included); parked events are
    /// not counted.
    pub fn events_committed(&self) -> u64 {
        self.runners.committed.load(Ordering::Relaxed)
    }

    /// Waits until the live read models cover `position`, across a generation switch.
    pub async fn wait_for(&self, position: &Position, timeout: Duration) -> bool {
        let _waiting = self.follower.as_ref().map(|f| f.waiting(position));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // `loading` first: it is cleared after `live` is set, so a reader that sees it
            // cleared also sees the runner that then feeds the generation queries read.
            let loading = self.loading.load(Ordering::Acquire);
            let handle = self.live().1;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return !loading
                    && handle
                        .status()
                        .checkpoint
                        .is_some_and(|c| c.covers(position));
            }
            let slice = (deadline - now).min(Duration::from_millis(250));
            if loading {
                // The generation being loaded answers no query yet: its checkpoint says
                // nothing about what queries see.
                tokio::time::sleep(slice.min(Duration::from_millis(20))).await;
                continue;
            }
            if handle.wait_for(position, slice).await {
                return true;
            }
        }
    }

    /// A rebuild asked for while the service loads its empty read models in bulk: that
    /// load is a full replay of the event store begun moments ago, so it is waited for
    /// (reporting its progress) instead of being done twice. True when it became the
    /// live read models; false when it failed and the rebuild must go on.
    async fn wait_for_bulk_start(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<bool, RebuildError> {
        let origin = Checkpoint::origin(self.events.partitions());
        let mut total = self.events.count_after(&origin).await.unwrap_or(0);
        while self.loading.load(Ordering::Acquire) {
            let status = self.status();
            if status.state == ProjectionState::Stopped {
                return Err(RebuildError::ShuttingDown);
            }
            let done = status.events_applied + status.events_parked;
            total = total.max(done);
            progress(done, total);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.bulk_generation.as_deref() != Some(self.generation().as_str()) {
            return Ok(false);
        }
        let status = self.status();
        let done = status.events_applied + status.events_parked;
        progress(done, total.max(done));
        tracing::info!(generation = %self.generation(), "the rebuild asked for is the bulk load the service started with; not doing it twice");
        Ok(true)
    }

    /// Waits until no rebuild, and no bulk load started with the service, is running or
    /// cleaning up in this process.
    pub async fn settled(&self) {
        drop(self.rebuilding.lock().await);
    }

    /// Stops the projection between two batches: a batch being written is finished
    /// first, for at most 20 s (a read store that stopped answering must not
    /// keep the process from exiting; what it has not committed is projected again at
    /// the next start).
    pub async fn shutdown(&self) {
        let _ = self.stop_following.send(true);
        if let Some(running) = self.running.lock().await.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, running.stop())
                .await
                .is_err()
        {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "the read store did not finish the batch being written; stopping without it"
            );
        }
        // Durable before the process goes (see `OrderReadStore::close`).
        match tokio::time::timeout(SHUTDOWN_GRACE, self.store().close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "closing the read store failed"),
            Err(_) => tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "the read store did not close in time"
            ),
        }
    }

    /// Polls the projection loading `generation` until it has stored everything the live
    /// projection has published, reporting progress (`total` refreshed every couple of
    /// seconds: counting what remains can be costly on some stores). Catching up is
    /// judged against the live projection's checkpoint. A projection that stops moving
    /// (a read store refusing the new generation's writes, say) fails the rebuild
    /// instead of holding it, and the rebuild lock, for ever.
    async fn catch_up_to_live(
        &self,
        building: &Running,
        generation: &ReadGeneration,
        origin: &Checkpoint,
        total: &mut u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), RebuildError> {
        let mut polls: u64 = 0;
        let mut stall = StallWatch::new(self.stall_limit);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            polls += 1;
            let status = building.handle.status();
            if let Err(stalled) = stall.check(&status) {
                tracing::error!(generation = %generation.id, last_error = ?status.last_error, "the rebuild made no progress; giving up");
                return Err(stalled);
            }
            let Some(checkpoint) = status.checkpoint.clone() else {
                continue;
            };
            let done = status.events_applied + status.events_parked;
            if polls.is_multiple_of(20) {
                *total = (*total).max(done + self.events.count_after(&checkpoint).await?);
            }
            progress(done, (*total).max(done));
            let live = self.rebuild_target(origin).await?;
            // The runner publishes a pipelined batch once its commit has started (and
            // would have published past a commit that then failed): what counts is
            // what the new generation has stored.
            if checkpoint.is_at_or_past(&live)
                && stored_checkpoint(generation, origin)
                    .await
                    .is_some_and(|stored| stored.is_at_or_past(&live))
            {
                return Ok(());
            }
        }
    }

    /// What a rebuild catches up with before it switches: the live projection's
    /// checkpoint; but when the live projection halted because the event log went
    /// backwards under it, that checkpoint is past what the log holds (or covers
    /// positions handed out again), and the rebuild, which is the repair, catches up with
    /// the log's head instead.
    async fn rebuild_target(&self, origin: &Checkpoint) -> Result<Checkpoint, RebuildError> {
        let live = self.live().1.status();
        if live.state == ProjectionState::Halted {
            return Ok(self.events.head().await?);
        }
        Ok(live.checkpoint.unwrap_or_else(|| origin.clone()))
    }

    /// Rebuilds every read model from the event store into a new generation while the
    /// live one keeps serving and projecting, then switches queries over in one step.
    /// `progress(done, total)` is called as events are applied.
    pub async fn rebuild(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), RebuildError> {
        if self.loading.load(Ordering::Acquire) && self.wait_for_bulk_start(progress).await? {
            return Ok(());
        }
        let one_at_a_time = Arc::clone(&self.rebuilding).lock_owned().await;
        let across_processes = self
            .provider
            .try_lock_rebuild()
            .await?
            .ok_or(RebuildError::Busy)?;
        let generation = self.provider.create_generation().await?;
        generation.store.reset().await?;
        // Nothing queries the new generation until the switch: let it load in bulk.
        let projection = Arc::new(OrderProjection::new(generation.store.clone()));
        projection.begin_bulk().await?;
        tracing::info!(generation = %generation.id, "rebuilding read models beside the live ones");
        let origin = Checkpoint::origin(self.events.partitions());
        let mut total = self.events.count_after(&origin).await?;
        let building = start_projection(
            &self.events,
            generation.clone(),
            Arc::clone(&projection),
            &self.runners,
        );
        progress(0, total);

        // Catch up while the live generation keeps serving.
        if let Err(e) = self
            .catch_up_to_live(&building, &generation, &origin, &mut total, progress)
            .await
        {
            let _ = building.stop().await;
            return Err(e);
        }
        // Caught up: build what the bulk load deferred before anything queries it.
        let finishing = std::time::Instant::now();
        if let Err(e) = projection.finish_bulk().await {
            let _ = building.stop().await;
            return Err(e.into());
        }
        tracing::info!(generation = %generation.id, elapsed_ms = finishing.elapsed().as_millis() as u64, "finished the bulk load");
        // The new generation's writes may have waited for the index builds (the embedded
        // store's one writer builds them): apply what arrived meanwhile now, while the live generation still answers, rather than at the
        // switch, where every read with a newer consistency token waits for it.
        if let Err(e) = self
            .catch_up_to_live(&building, &generation, &origin, &mut total, progress)
            .await
        {
            let _ = building.stop().await;
            return Err(e);
        }

        // Switch: stop the live runner, let the new one reach where it stopped (so no
        // consistency token goes backwards), then serve from the new generation.
        let mut running = self.running.lock().await;
        let Some(old) = running.take() else {
            let _ = building.stop().await;
            return Err(RebuildError::ShuttingDown);
        };
        // (Asked before the stop, which leaves every runner `Stopped`.)
        let old_halted = old.handle.status().state == ProjectionState::Halted;
        // A stopped runner has finished the batch it was writing: nothing is written
        // to the old generation from here on, so its stored checkpoint is final.
        let (old_generation, old_handle) = old.stop().await;
        // What the old generation has committed (the authority, should the runner have
        // published less).
        let stored_at = if old_halted {
            // The old checkpoint is not reachable in a log that went backwards: the new
            // generation serves once it has everything the log holds.
            self.events.head().await.map_err(|e| e.to_string())
        } else {
            old_generation
                .store
                .load_checkpoint(OrderProjection::NAME)
                .await
                .map(|stored| stored.unwrap_or_else(|| origin.clone()))
                .map_err(|e| e.to_string())
        };
        let stopped_at = match stored_at {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live checkpoint; using the last published one");
                old_handle
                    .status()
                    .checkpoint
                    .unwrap_or_else(|| origin.clone())
            }
        };
        let mut caught_up = false;
        for _ in 0..600 {
            // Past where the old runner stopped, and no further than what is stored:
            // consistency tokens are answered from the published checkpoint.
            let published = building.handle.status().checkpoint;
            if let Some(published) = published
                && published.is_at_or_past(&stopped_at)
                && stored_checkpoint(&generation, &origin)
                    .await
                    .is_some_and(|stored| stored.is_at_or_past(&published))
            {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !caught_up {
            let _ = building.stop().await;
            *running = Some(start_runner(&self.events, old_generation, &self.runners));
            return Err(RebuildError::CatchUpTimeout);
        }
        if let Err(e) = self.provider.activate(&generation.id).await {
            let _ = building.stop().await;
            *running = Some(start_runner(&self.events, old_generation, &self.runners));
            return Err(e.into());
        }
        {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            *live = (generation.clone(), building.handle.clone());
        }
        let status = building.handle.status();
        progress(
            status.events_applied + status.events_parked,
            total.max(status.events_applied + status.events_parked),
        );
        *running = Some(building);
        drop(running);
        tracing::info!(from = %old_generation.id, to = %generation.id, "switched to the rebuilt read models");
        drop(old_generation);
        // Queries in flight, and other processes until they follow, may still read the
        // old generation for a moment: drop it later, still holding both locks so that no
        // other rebuild starts meanwhile.
        let provider = Arc::clone(&self.provider);
        tokio::spawn(async move {
            tokio::time::sleep(DROP_AFTER).await;
            match provider.drop_inactive().await {
                Ok(n) => tracing::info!(dropped = n, "removed the previous read models"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove the previous read models; they are removed at the next start")
                }
            }
            drop(provider); // before the locks, as in `finish_bulk_start`
            drop(across_processes);
            drop(one_at_a_time);
        });
        Ok(())
    }
}

async fn follow_switches(side: std::sync::Weak<ReadSide>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let Some(side) = side.upgrade() else { return };
        if let Err(e) = side.follow_active().await {
            tracing::warn!(error = %e, "cannot check which read-store generation is active");
        }
    }
}
