//! The read side of a process that runs no projection (`ordo serve --role api`): queries
//! are answered from the active generation, and consistency tokens from the checkpoint
//! the projections of other processes have stored there, which is what those queries
//! read. The stored checkpoint is read often while a request waits for a token and about
//! once a second otherwise; the active generation is checked once a second, so that a
//! switch made by another process (a rebuild) is followed as the projecting processes
//! follow it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, watch};

use ordo_es::{
    EventStore, Position, ProjectionHandle, ProjectionState, ProjectionStatus, RunnerConfig,
};

use super::{FOLLOW_EVERY, ReadSide, ReadSideOptions, Runners};
use crate::projection::{OrderProjection, stored_checkpoint};
use ordo_domain::read_store::{OrderReadStore, ReadStoreError, ReadStoreProvider};

/// How often the stored checkpoint is read while a request waits for a consistency
/// token (as often as the PostgreSQL event store looks for other processes' appends).
const READ_WHILE_WAITED_FOR: Duration = Duration::from_millis(25);

/// Publishes the checkpoint stored in the active generation as a projection status.
#[derive(Debug)]
pub(super) struct Follower {
    status: watch::Sender<ProjectionStatus>,
    /// Requests waiting for a consistency token now.
    waiting: AtomicUsize,
    /// Rung when a request starts waiting for a position not yet published.
    wake: Notify,
}

/// A request waiting for a consistency token; the checkpoint is read often while any is.
pub(super) struct Waiting<'a>(&'a Follower);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Follower {
    fn new() -> Self {
        Self {
            status: watch::channel(ProjectionStatus::starting(OrderProjection::NAME)).0,
            waiting: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    /// Counts a request waiting for `position`; the checkpoint is read at once when the
    /// one published does not cover it.
    pub(super) fn waiting(&self, position: &Position) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let covered = self
            .status
            .borrow()
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.covers(position));
        if !covered {
            self.wake.notify_one();
        }
        Waiting(self)
    }

    /// Reads the checkpoint stored in `store` and publishes it.
    async fn read(&self, store: &dyn OrderReadStore, partitions: u32) {
        match stored_checkpoint(store, partitions).await {
            Ok(checkpoint) => self.publish(checkpoint),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the stored projection checkpoint");
                self.status
                    .send_modify(|s| s.last_error = Some(e.to_string()));
            }
        }
    }

    fn publish(&self, checkpoint: Option<ordo_es::Checkpoint>) {
        self.status.send_if_modified(|s| {
            let changed = s.checkpoint != checkpoint
                || s.state != ProjectionState::Running
                || s.last_error.is_some();
            s.state = ProjectionState::Running;
            s.checkpoint = checkpoint;
            s.last_error = None;
            changed
        });
    }
}

impl ReadSide {
    /// Opens the active generation and follows what other processes project into it,
    /// running no projection here: [`wait_for`](Self::wait_for) waits for the checkpoint
    /// they store, [`status`](Self::status) reports it (state `Running` once read, no
    /// events applied), a switch to another generation is followed within about a
    /// second. Leftover generations and empty read models are left to the processes that
    /// project. Not for [`rebuild`](Self::rebuild): that runs where a projection runs
    /// (`ReplayJobs` refuses it here).
    pub async fn start_following(
        events: Arc<dyn EventStore>,
        provider: Arc<dyn ReadStoreProvider>,
        options: ReadSideOptions,
    ) -> Result<Arc<Self>, ReadStoreError> {
        let generation = provider.open_active().await?;
        tracing::info!(generation = %generation.id, "read models, projected by other processes");
        let follower = Arc::new(Follower::new());
        follower
            .read(generation.store.as_ref(), events.partitions())
            .await;
        let handle = ProjectionHandle::from_status(follower.status.subscribe());
        let (stop_following, following) = watch::channel(false);
        let side = Arc::new(Self {
            live: std::sync::RwLock::new((generation, handle)),
            running: Mutex::new(None),
            events,
            provider,
            // The shard options only for reporting the shards: nothing is projected here.
            runners: Runners::new(RunnerConfig::default(), None, options.shards.clone()),
            stall_limit: options.stall_limit,
            rebuilding: Arc::new(Mutex::new(())),
            loading: std::sync::atomic::AtomicBool::new(false),
            bulk_generation: None,
            stop_following,
            follower: Some(Arc::clone(&follower)),
        });
        tokio::spawn(follow_stored(Arc::downgrade(&side), follower, following));
        Ok(side)
    }

    /// False for a read side that follows the projections of other processes
    /// ([`start_following`](Self::start_following)).
    pub fn runs_projection(&self) -> bool {
        self.follower.is_none()
    }

    /// When another process made another generation active, answer from it, and from
    /// its stored checkpoint (published before queries move over, so that no token is
    /// taken as covered by a checkpoint of the generation left behind).
    async fn follow_active_generation(&self, follower: &Follower) -> Result<(), ReadStoreError> {
        let active = self.provider.active_id().await?;
        if active == self.generation() {
            return Ok(());
        }
        let generation = self.provider.open_active().await?;
        let checkpoint =
            stored_checkpoint(generation.store.as_ref(), self.events.partitions()).await?;
        {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            follower.publish(checkpoint);
            live.0 = generation.clone();
        }
        tracing::info!(generation = %generation.id, "followed a switch to rebuilt read models made by another process");
        Ok(())
    }
}

/// Reads the stored checkpoint (often while requests wait for one, about once a second
/// otherwise) and follows switches of the active generation, until the read side stops
/// or is dropped.
async fn follow_stored(
    side: Weak<ReadSide>,
    follower: Arc<Follower>,
    mut stop: watch::Receiver<bool>,
) {
    let mut generation_checked = tokio::time::Instant::now();
    loop {
        let waited_for = follower.waiting.load(Ordering::Relaxed) > 0;
        let pause = if waited_for {
            READ_WHILE_WAITED_FOR
        } else {
            FOLLOW_EVERY
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(pause) => {}
            () = follower.wake.notified(), if !waited_for => {}
        }
        let Some(side) = side.upgrade() else { return };
        if generation_checked.elapsed() >= FOLLOW_EVERY {
            generation_checked = tokio::time::Instant::now();
            if let Err(e) = side.follow_active_generation(&follower).await {
                tracing::warn!(error = %e, "cannot check which read-store generation is active");
            }
        }
        follower
            .read(side.store().as_ref(), side.events.partitions())
            .await;
    }
}
