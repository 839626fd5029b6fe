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
use crate::projection::OrderProjection;
use ordo_domain::read_store::{ReadGeneration, ReadStoreError, ReadStoreProvider};

/// One running projection into one generation.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) generation: ReadGeneration,
    pub(super) projection: Arc<OrderProjection>,
    pub(super) handle: ProjectionHandle,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// How a read side starts its projection runners.
#[derive(Debug, Clone)]
pub(super) struct Runners {
    pub(super) config: RunnerConfig,
    /// The runtime they run on; `None`: the caller's.
    pub(super) runtime: Option<Handle>,
    /// The events every projection they run has committed.
    pub(super) committed: Arc<AtomicU64>,
}

pub(super) fn start_runner(
    events: &Arc<dyn EventStore>,
    generation: ReadGeneration,
    runners: &Runners,
) -> Running {
    let projection = Arc::new(OrderProjection::new(generation.store.clone()));
    start_projection(events, generation, projection, runners)
}

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
    pub(super) async fn stop(self) -> (ReadGeneration, ProjectionHandle) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "projection runner panicked");
        }
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

/// The projection checkpoint `generation` has committed (`origin` when none); `None`
/// when it cannot be read.
pub(super) async fn stored_checkpoint(
    generation: &ReadGeneration,
    origin: &Checkpoint,
) -> Option<Checkpoint> {
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
