//! The projection runners a read side starts, and what a rebuild and a bulk load at
//! start share: a new generation loaded in bulk, its stored checkpoint, the watch for a
//! load that stalled.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use ordo_es::{
    Checkpoint, EventStore, ProjectionHandle, ProjectionRunner, ProjectionStatus, RunnerConfig,
};

use super::RebuildError;
use super::shards::{ShardGauge, ShardOptions, start_shards};
use crate::projection::OrderProjection;
use ordo_domain::read_store::{ReadGeneration, ReadStoreError, ReadStoreProvider};

/// One running projection into one generation: a runner over the whole log, or the
/// shards this process holds (see `shards.rs`), or one of those shards.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) generation: ReadGeneration,
    /// The projection of a runner of its own (`None` for the shards' manager).
    pub(super) projection: Option<Arc<OrderProjection>>,
    pub(super) handle: ProjectionHandle,
    stop: watch::Sender<bool>,
    /// `None` once stopped in place.
    task: Option<JoinHandle<()>>,
}

/// How a read side starts its projection runners.
#[derive(Debug, Clone)]
pub(super) struct Runners {
    pub(super) config: RunnerConfig,
    /// The runtime they run on; `None`: the caller's.
    pub(super) runtime: Option<Handle>,
    /// The events every projection they run has committed.
    pub(super) committed: Arc<AtomicU64>,
    /// When set, the live projection is divided into shards held by lease.
    pub(super) shards: Option<ShardOptions>,
    pub(super) shards_gauge: Arc<ShardGauge>,
}

impl Runners {
    pub(super) fn new(
        config: RunnerConfig,
        runtime: Option<Handle>,
        shards: Option<ShardOptions>,
    ) -> Self {
        Self {
            config,
            runtime,
            committed: Arc::default(),
            shards,
            shards_gauge: Arc::default(),
        }
    }
}

/// The live projection into `generation`: the shards this process holds when the
/// projection is divided into shards, a runner over the whole log otherwise.
pub(super) fn start_runner(
    events: &Arc<dyn EventStore>,
    generation: ReadGeneration,
    runners: &Runners,
) -> Running {
    if let Some(options) = &runners.shards {
        return start_shards(events, generation, runners, options);
    }
    let projection = Arc::new(OrderProjection::new(generation.store.clone()));
    start_projection(events, generation, projection, runners)
}

/// A runner of `projection` over the whole log (a rebuild's, a bulk load's, or the
/// live one of a process that projects alone).
pub(super) fn start_projection(
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
    spawn_runner(runner, generation, Some(projection), runners)
}

/// Runs `runner` until stopped, on the runners' runtime.
pub(super) fn spawn_runner(
    runner: ProjectionRunner,
    generation: ReadGeneration,
    projection: Option<Arc<OrderProjection>>,
    runners: &Runners,
) -> Running {
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
        task: Some(task),
    }
}

impl Running {
    /// A projection run by a task of its own that ends when `stop` is set.
    pub(super) fn managed(
        generation: ReadGeneration,
        handle: ProjectionHandle,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            generation,
            projection: None,
            handle,
            stop,
            task: Some(task),
        }
    }

    /// Stops the projection (it finishes the batch it is writing) and keeps what it was:
    /// nothing is written to its generation after this returns.
    pub(super) async fn stop_in_place(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "projection runner panicked");
        }
    }

    pub(super) async fn stop(mut self) -> (ReadGeneration, ProjectionHandle) {
        self.stop_in_place().await;
        (self.generation, self.handle)
    }
}

/// A new, empty generation, with the projection that loads it in bulk begun: nothing
/// queries it until it becomes the active one.
pub(super) async fn new_bulk_generation(
    provider: &dyn ReadStoreProvider,
) -> Result<(ReadGeneration, Arc<OrderProjection>), ReadStoreError> {
    let generation = provider.create_generation().await?;
    generation.store.reset().await?;
    let projection = Arc::new(OrderProjection::new(generation.store.clone()));
    projection.begin_bulk().await?;
    Ok((generation, projection))
}

/// The projection checkpoint `generation` has committed over the whole log of
/// `origin`'s partitions, every shard's included (`origin` when none); `None` when it
/// cannot be read.
pub(super) async fn stored_checkpoint(
    generation: &ReadGeneration,
    origin: &Checkpoint,
) -> Option<Checkpoint> {
    match crate::projection::stored_checkpoint(generation.store.as_ref(), origin.partitions()).await
    {
        Ok(stored) => Some(stored.unwrap_or_else(|| origin.clone())),
        Err(e) => {
            tracing::debug!(generation = %generation.id, error = %e, "cannot read the generation's checkpoint");
            None
        }
    }
}

/// Watches a loading projection's checkpoint: a load that has not moved for the stall
/// limit has stalled (a read store refusing its writes, say).
pub(super) struct StallWatch {
    limit: Duration,
    checkpoint: Option<Checkpoint>,
    since: tokio::time::Instant,
}

impl StallWatch {
    pub(super) fn new(limit: Duration) -> Self {
        Self {
            limit,
            checkpoint: None,
            since: tokio::time::Instant::now(),
        }
    }

    /// `RebuildError::Stalled` (with the projection's last error) when `status` has not
    /// moved for the limit.
    pub(super) fn check(&mut self, status: &ProjectionStatus) -> Result<(), RebuildError> {
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
