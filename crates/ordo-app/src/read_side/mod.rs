//! The live read side: the active read-store generation and the projection runner that
//! feeds it, with a blue-green switch to a rebuilt generation. A process that runs no
//! projection follows the generation and checkpoint other processes store (`following`).
//!
//! This file holds the read side and what queries use; `rebuild.rs` the rebuild and its
//! switch, `bulk_start.rs` the bulk load of read models that were never projected into,
//! `runner.rs` the projection runners and what the two loads share, `following.rs` what a
//! process that runs no projection (role `api`) publishes instead of a runner: the
//! checkpoint stored in the active generation.

mod bulk_start;
mod following;
mod rebuild;
mod runner;
mod shards;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Mutex, watch};

use ordo_es::{
    EventStore, Position, ProjectionHandle, ProjectionState, ProjectionStatus, RunnerConfig,
};

use ordo_domain::read_store::{OrderReadStore, ReadGeneration, ReadStoreError, ReadStoreProvider};
use runner::{Runners, Running, start_runner};

pub use rebuild::RebuildError;
pub use shards::{ShardGauge, ShardOptions, ShardReport, shard_reports};

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
    /// When set, the live projection is divided into shards (the event log's partitions)
    /// held by lease, shared with every other process projecting into these read models.
    pub shards: Option<ShardOptions>,
}

impl Default for ReadSideOptions {
    fn default() -> Self {
        Self {
            stall_limit: REBUILD_STALL_LIMIT,
            bulk_start_min_events: BULK_START_MIN_EVENTS,
            projection_runtime: None,
            shards: None,
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
        let runners = Runners::new(
            config,
            options.projection_runtime.clone(),
            options.shards.clone(),
        );
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

    /// The events whose read-model change this process's projections have committed
    /// since it started, into any generation (a rebuild's included); parked events are
    /// not counted.
    pub fn events_committed(&self) -> u64 {
        self.runners.committed.load(Ordering::Relaxed)
    }

    /// How many shards of the projection this process holds now; `None` when the
    /// projection is not divided into shards here.
    pub fn shards_owned(&self) -> Option<u64> {
        self.runners
            .shards
            .as_ref()
            .map(|_| self.runners.shards_gauge.owned())
    }

    /// Each shard's holder, position and backlog, where the projection is divided into
    /// shards (in a process of role `api` too: the leases are read from the store);
    /// `None` otherwise.
    pub async fn shard_reports(&self) -> Result<Option<Vec<ShardReport>>, ReadStoreError> {
        let Some(options) = &self.runners.shards else {
            return Ok(None);
        };
        shards::report(self.events.as_ref(), self.store().as_ref(), options)
            .await
            .map(Some)
    }

    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    /// Waits until the live read models cover `position`, across a generation switch.
    pub async fn wait_for(&self, position: &Position, timeout: Duration) -> bool {
        let _waiting = self.follower.as_ref().map(|f| f.waiting(position));
        // Divided into shards, those held elsewhere are read from the store, often while
        // a request waits.
        let _demand = self.runners.shards.is_some().then(|| {
            let covered = self
                .live()
                .1
                .status()
                .checkpoint
                .is_some_and(|c| c.covers(position));
            self.runners.shards_gauge.demand.waiting(covered)
        });
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
        // Durable before the process goes (see `ReadStoreLifecycle::close`).
        match tokio::time::timeout(SHUTDOWN_GRACE, self.store().close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "closing the read store failed"),
            Err(_) => tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "the read store did not close in time"
            ),
        }
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
