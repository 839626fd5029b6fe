//! Projections and the runner that feeds them from the global log.
//!
//! One path for catch-up and live: the runner reads the log after the projection's own
//! checkpoint in batches, hands each batch to [`Projection::apply_batch`] (which stores the
//! read-model change and the new checkpoint in one transaction), and when it has caught up
//! waits for the store's wake-up. A projection added later, or reset, starts at the
//! origin and catches up while new events keep arriving.
//!
//! The runner supervises its own work: the loop runs in a task of its own, and when that
//! task panics, or one call into the projection takes longer than
//! [`RunnerConfig::stuck_after`], the runner reports itself failing, aborts the task and
//! starts a new one from the stored checkpoint, after a backoff that doubles at each
//! restart in a row. Batches are committed with their checkpoint by compare-and-set, so
//! a restart neither applies an event twice nor skips one.
//!
//! The runner also checks that the log has not gone backwards under it (a Redis
//! failover that lost acknowledged writes, an event store restored from an older copy):
//! when the log's [head](crate::EventStore::head) is below the checkpoint in a partition, or the
//! event now at the checkpoint is not the one the projection applied there, the read
//! model holds events the log no longer has, and the positions they had are handed out
//! again. The runner then [halts](ProjectionState::Halted) instead of skipping the
//! reissued positions; only a rebuild of the read models (`ordo replay`) repairs that.
//! See `LogWatch` (`log_watch.rs`) for when it checks and what a check costs.
//!
//! This file holds the types callers use; `worker.rs` the loop one task runs,
//! `supervision.rs` the tasks and their restarts, `log_watch.rs` the check that the log
//! has not gone backwards.

mod log_watch;
mod partition;
mod supervision;
mod worker;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::event::RecordedEvent;
use crate::position::{Checkpoint, Position};
use crate::store::BoxError;

use worker::Worker;

/// A read model fed by the runner.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the key of the checkpoint.
    fn name(&self) -> &str;

    /// The stored checkpoint, or `None` when the projection has never run.
    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError>;

    /// Applies `events` and moves the stored checkpoint from `from` to `to`, atomically.
    /// When the stored checkpoint is no longer `from` (another process moved it), it
    /// changes nothing and returns [`ProjectionError::CheckpointMoved`].
    async fn apply_batch(
        &self,
        events: &[RecordedEvent],
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError>;

    /// Sets `event` aside as poison (recording `error` for operators) and moves the
    /// checkpoint from `from` to `to` past it, atomically, like `apply_batch`.
    async fn park(
        &self,
        event: &RecordedEvent,
        error: &str,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError>;

    /// Waits for writes still running that an earlier call started (a projection that
    /// returns from `apply_batch` before its commit has ended). The runner calls it when
    /// it stops, so that nothing is written after [`ProjectionRunner::run`] returns.
    async fn flush(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Someone else advanced the checkpoint; reload it and go on from there.
    #[error("the projection checkpoint was moved by another writer")]
    CheckpointMoved,
    /// The read store cannot be reached. Retried with backoff.
    #[error("read store unavailable")]
    Unavailable(#[source] BoxError),
    /// An event could not be applied.
    #[error("projection failed: {0}")]
    Failed(#[source] BoxError),
    /// The write was fenced off: the lease this projection writes under (a shard's) was
    /// taken over or released. The runner stops applying (another process owns the work
    /// now) and waits to be stopped.
    #[error("the lease was lost: {0}")]
    LeaseLost(String),
}

/// The runner's health, as operations endpoints show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectionState {
    Starting,
    /// Applying the backlog it found when it started: it has not yet applied a read of
    /// the log that came back short of a full batch.
    CatchingUp,
    /// Caught up with the log once; following it since.
    Running,
    /// Applying keeps failing, or the runner's task panicked or got stuck; the runner
    /// retries (or restarts) with backoff.
    Failing,
    /// The event log went backwards under the projection (it lost events the read model
    /// holds; `last_error` says where). Nothing more is applied: applying on would skip
    /// the events that now get the lost positions. Only rebuilding the read models from
    /// the log (`ordo replay`, which starts a new runner) repairs it.
    Halted,
    /// The lease this runner wrote under was taken over or released: another process
    /// projects this work now, and this runner applies nothing more.
    Fenced,
    Stopped,
}

impl ProjectionState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProjectionState::Starting => "starting",
            ProjectionState::CatchingUp => "catching-up",
            ProjectionState::Running => "running",
            ProjectionState::Failing => "failing",
            ProjectionState::Halted => "halted",
            ProjectionState::Fenced => "fenced",
            ProjectionState::Stopped => "stopped",
        }
    }
}

/// What the runner publishes after every step.
#[derive(Clone, Debug)]
pub struct ProjectionStatus {
    pub name: String,
    pub state: ProjectionState,
    /// The checkpoint the read model has reached, once loaded.
    pub checkpoint: Option<Checkpoint>,
    /// The occurredAt of the last event applied.
    pub last_event_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// Events applied by this process.
    pub events_applied: u64,
    /// Events parked as poison by this process.
    pub events_parked: u64,
    /// Times this runner's task was restarted after it panicked or got stuck.
    pub restarts: u64,
    /// The checkpoint the latest check of the log confirmed: every partition's log
    /// reached it, and held there the events the projection applied.
    pub log_checked: Option<Checkpoint>,
}

impl ProjectionStatus {
    /// The status of projection `name` before anything was loaded or applied.
    pub fn starting(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: ProjectionState::Starting,
            checkpoint: None,
            last_event_at: None,
            last_error: None,
            events_applied: 0,
            events_parked: 0,
            restarts: 0,
            log_checked: None,
        }
    }
}

/// Tuning knobs of the runner.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Events per batch (one read-model transaction each) when following the log.
    pub batch_size: usize,
    /// Events per batch while catching up: while reads come back full (the projection
    /// is behind), batches double up to this size, so that an order with several events in the
    /// backlog is written once instead of once per event, and each transaction's fixed
    /// cost is shared by many more events. Back to `batch_size` once caught up.
    pub catch_up_batch_size: usize,
    /// The longest wait for new events before re-checking (also the poll interval that
    /// picks up checkpoints moved by other processes).
    pub idle_wait: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts at a failing batch (and then at each of its events alone) before the
    /// failing event is parked.
    pub attempts_before_parking: u32,
    /// How long one call into the projection (loading its checkpoint, applying a batch,
    /// parking an event, the final flush) may take before the runner counts as stuck:
    /// its task is then aborted and a new one started from the stored checkpoint.
    pub stuck_after: Duration,
    /// The wait before restarting a task that panicked or got stuck; it doubles at each
    /// restart in a row, up to `max_restart_backoff`.
    pub min_restart_backoff: Duration,
    pub max_restart_backoff: Duration,
    /// A task that ran this long before it panicked or got stuck had been healthy: its
    /// restart waits `min_restart_backoff` again.
    pub healthy_after: Duration,
    /// While reads of the log keep coming back non-empty, the log is checked for having
    /// gone backwards at least this often (it is also checked at every start and every
    /// time the runner has caught up; see `LogWatch` in this module's source).
    pub log_check_every: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            catch_up_batch_size: 10_000,
            idle_wait: Duration::from_secs(1),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(10),
            attempts_before_parking: 4,
            stuck_after: Duration::from_secs(60),
            min_restart_backoff: Duration::from_millis(100),
            max_restart_backoff: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            log_check_every: Duration::from_secs(5),
        }
    }
}

/// Tails the global log into one projection, restarting its work when it panics or
/// gets stuck.
pub struct ProjectionRunner {
    /// The work of the runner; each task it runs in gets a copy with its own `busy`.
    worker: Worker,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.worker.projection.name())
            .field("config", &self.worker.config)
            .finish()
    }
}

/// A cheap, cloneable view of a runner's progress.
#[derive(Clone, Debug)]
pub struct ProjectionHandle {
    status: watch::Receiver<ProjectionStatus>,
}

impl ProjectionHandle {
    /// A handle on statuses published by something other than a runner: a process that
    /// runs no projection itself publishes the checkpoint other processes' runners
    /// stored, so that its readers wait on it as they would on a runner.
    pub fn from_status(status: watch::Receiver<ProjectionStatus>) -> Self {
        Self { status }
    }

    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status changes; false once the runner is gone (its last status
    /// stays readable).
    pub async fn changed(&mut self) -> bool {
        self.status.changed().await.is_ok()
    }

    /// Whether `other` is a handle of the same runner.
    pub fn same_runner(&self, other: &ProjectionHandle) -> bool {
        self.status.same_channel(&other.status)
    }

    /// Waits until the read model covers `position`, at most `timeout`. True when it does.
    pub async fn wait_for(&self, position: &Position, timeout: Duration) -> bool {
        let mut rx = self.status.clone();
        let reached =
            |s: &ProjectionStatus| s.checkpoint.as_ref().is_some_and(|c| c.covers(position));
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(reached)).await,
            Ok(Ok(_))
        )
    }
}

#[cfg(test)]
mod tests;
