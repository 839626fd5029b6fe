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
//! when the log's [head](EventStore::head) is below the checkpoint in a partition, or the
//! event now at the checkpoint is not the one the projection applied there, the read
//! model holds events the log no longer has, and the positions they had are handed out
//! again. The runner then [halts](ProjectionState::Halted) instead of skipping the
//! reissued positions; only a rebuild of the read models (`ordo replay`) repairs that.
//! See `LogWatch` (in this module's source) for when it checks and what a check costs.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::event::RecordedEvent;
use crate::position::{Checkpoint, Cursor, Position};
use crate::store::{BoxError, EventStore};

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

/// The loop that reads the log and applies batches, as one task runs it. The tasks a
/// runner starts one after the other share everything but `busy`.
#[derive(Clone)]
struct Worker {
    store: Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
    status: watch::Sender<ProjectionStatus>,
    /// Set once a read of the log that came back short of a full batch is applied.
    caught_up: Arc<AtomicBool>,
    /// Since when this task's call into the projection has been running, if one is.
    busy: Arc<Busy>,
}

/// When the call into the projection in progress started. Each task has its own, so
/// that a task aborted late cannot clear the mark of the one that replaced it.
#[derive(Debug, Default)]
struct Busy(std::sync::Mutex<Option<Instant>>);

impl Busy {
    fn since(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, since: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }
}

/// Clears the [`Busy`] mark when the call ends, also when it is cancelled.
struct BusyGuard<'a>(&'a Busy);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// How a runner's task ended.
enum Ended {
    /// It stopped when asked to.
    Stopped,
    /// The runtime is shutting down.
    Cancelled,
    Panicked(String),
    /// A call into the projection took longer than the limit; the task was aborted.
    Stuck,
}

/// A cheap, cloneable view of a runner's progress.
#[derive(Clone, Debug)]
pub struct ProjectionHandle {
    status: watch::Receiver<ProjectionStatus>,
}

impl ProjectionHandle {
    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
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

impl ProjectionRunner {
    pub fn new(
        store: Arc<dyn EventStore>,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> Self {
        let status = ProjectionStatus {
            name: projection.name().to_string(),
            state: ProjectionState::Starting,
            checkpoint: None,
            last_event_at: None,
            last_error: None,
            events_applied: 0,
            events_parked: 0,
            restarts: 0,
            log_checked: None,
        };
        Self {
            worker: Worker {
                store,
                projection,
                config,
                status: watch::channel(status).0,
                caught_up: Arc::default(),
                busy: Arc::default(),
            },
        }
    }

    pub fn handle(&self) -> ProjectionHandle {
        ProjectionHandle {
            status: self.worker.status.subscribe(),
        }
    }

    /// Runs until `shutdown` completes. Every batch is committed with its checkpoint
    /// before the next is read, so stopping at any point loses nothing. A stop waits for
    /// the write in progress, if any, instead of abandoning it: when `run` returns,
    /// nothing more is written, and the stored checkpoint is where the projection
    /// stopped (a switch to another read-store generation relies on that). The one
    /// exception is a write stuck for longer than [`RunnerConfig::stuck_after`]: its task
    /// is aborted, and a commit the store finishes later is refused by the checkpoint's
    /// compare-and-set once anything else has moved the checkpoint.
    ///
    /// The work runs in a task of its own (spawned on the caller's runtime), which this
    /// supervises: see the module docs.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop, stopping) = watch::channel(false);
        let asked = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tokio::join!(asked, self.supervise(stopping));
        self.worker
            .status
            .send_modify(|s| s.state = ProjectionState::Stopped);
    }

    /// Runs the work in a task, and a new one each time a task panics or gets stuck,
    /// until a task stops because it was asked to.
    async fn supervise(&self, mut stop: watch::Receiver<bool>) {
        let config = &self.worker.config;
        let name = self.worker.projection.name();
        let mut backoff = config.min_restart_backoff;
        loop {
            let worker = Worker {
                busy: Arc::default(),
                ..self.worker.clone()
            };
            let started = Instant::now();
            let busy = Arc::clone(&worker.busy);
            let task = tokio::spawn(worker.work(stop.clone()));
            let message = match watch_task(task, &busy, config.stuck_after).await {
                Ended::Stopped | Ended::Cancelled => return,
                Ended::Panicked(panic) => format!("the projection runner panicked: {panic}"),
                Ended::Stuck => {
                    format!("projection batch stuck for {}", seconds(config.stuck_after))
                }
            };
            let stopping = *stop.borrow();
            if started.elapsed() >= config.healthy_after {
                backoff = config.min_restart_backoff;
            }
            if stopping {
                tracing::error!(projection = name, error = %message, "projection runner failed while stopping");
            } else {
                tracing::error!(projection = name, error = %message, ?backoff, "projection runner failed; restarting it");
            }
            self.worker.status.send_modify(|s| {
                s.state = ProjectionState::Failing;
                s.last_error = Some(message);
                if !stopping {
                    s.restarts += 1;
                }
            });
            if stopping
                || unless_stopped(&mut stop, tokio::time::sleep(backoff))
                    .await
                    .is_err()
            {
                return;
            }
            backoff = (backoff * 2).min(config.max_restart_backoff);
        }
    }
}

/// Waits for `task` to end; aborts it when a call into the projection has been running
/// for `limit` (`busy` says since when).
async fn watch_task(mut task: JoinHandle<()>, busy: &Busy, limit: Duration) -> Ended {
    // Idle, the mark is looked at this often: a call that starts meanwhile is then
    // watched until its own deadline.
    let idle_check = (limit / 4).max(Duration::from_millis(1));
    loop {
        let check_at = match busy.since() {
            Some(since) if since.elapsed() >= limit => {
                task.abort();
                return Ended::Stuck;
            }
            Some(since) => since + limit,
            None => Instant::now() + idle_check,
        };
        tokio::select! {
            joined = &mut task => {
                return match joined {
                    Ok(()) => Ended::Stopped,
                    Err(e) if e.is_panic() => Ended::Panicked(panic_message(e.into_panic().as_ref())),
                    Err(_) => Ended::Cancelled,
                };
            }
            () = tokio::time::sleep_until(check_at) => {}
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// `60 s`, or `250 ms` below a second.
fn seconds(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

impl Worker {
    /// One task's work: the loop until a stop, then waiting for writes still running.
    async fn work(self, stop: watch::Receiver<bool>) {
        self.run_forever(stop).await;
        if let Err(error) = self.timed(self.projection.flush()).await {
            tracing::warn!(projection = self.projection.name(), error = %error_chain(&error), "a write of the stopped projection failed");
        }
    }

    /// `call` (a call into the projection), marked as running for the stuck watch.
    async fn timed<T>(&self, call: impl Future<Output = T>) -> T {
        self.busy.set(Some(Instant::now()));
        let _guard = BusyGuard(&self.busy);
        call.await
    }

    async fn run_forever(&self, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.config.min_backoff;
        loop {
            let error = match self.catch_up_and_follow(&mut stop).await {
                Err(Halt::Stopped) => return,
                Err(Halt::Regressed(message)) => {
                    self.halt(message);
                    // Until the runner is stopped (a rebuild replaces it): retrying would
                    // find the same log, and applying on would skip events.
                    let _ = stop.wait_for(|stopped| *stopped).await;
                    return;
                }
                Err(Halt::Failed(error)) => error,
            };
            if let ProjectionError::CheckpointMoved = error {
                tracing::debug!(
                    projection = self.projection.name(),
                    "checkpoint moved elsewhere; reloading"
                );
                backoff = self.config.min_backoff;
                continue;
            }
            let message = error_chain(&error);
            tracing::warn!(projection = self.projection.name(), error = %message, ?backoff, "projection failing; retrying");
            self.status.send_modify(|s| {
                s.state = ProjectionState::Failing;
                s.last_error = Some(message);
            });
            if unless_stopped(&mut stop, tokio::time::sleep(backoff))
                .await
                .is_err()
            {
                return;
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Loads the checkpoint, then applies batches until an error or a stop. Reads and
    /// waits end at a stop; writes (applying, parking) always run to their end.
    async fn catch_up_and_follow(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Infallible, Halt> {
        let partitions = self.store.partitions();
        let mut checkpoint = unless_stopped(stop, self.timed(self.projection.load_checkpoint()))
            .await??
            .unwrap_or_else(|| Checkpoint::origin(partitions));
        self.publish_loaded(&checkpoint);
        let mut watch = LogWatch::new(partitions, self.config.log_check_every);
        self.check_log(&mut watch, &checkpoint, stop).await?;
        let mut size = self.config.batch_size;
        // The next batch, read while the current one was being applied.
        let mut read_ahead: Option<Vec<RecordedEvent>> = None;
        loop {
            if *stop.borrow() {
                return Err(Halt::Stopped);
            }
            if watch.is_due() {
                self.check_log(&mut watch, &checkpoint, stop).await?;
            }
            let batch = match read_ahead.take() {
                Some(batch) => batch,
                None => unless_stopped(stop, self.read(&checkpoint, size)).await??,
            };
            // A full batch means the projection is behind: catch up in larger batches
            // (doubling while reads keep coming back full, so that a short burst does not
            // make one long commit that every waiting reader sits behind), reading the
            // next one while this one is applied (the read and the write run on
            // different threads and, for servers, different machines).
            let behind = batch.len() >= size;
            size = if behind {
                size.saturating_mul(2)
                    .min(self.config.catch_up_batch_size.max(self.config.batch_size))
            } else {
                self.config.batch_size
            };
            if behind {
                let to = advanced(&checkpoint, &batch);
                let (applied, next) = tokio::join!(
                    self.apply_or_park(&batch, checkpoint, stop),
                    self.read(&to, size)
                );
                checkpoint = applied?;
                watch.applied(&batch);
                // Applying always ends past the whole batch (events that fail are parked);
                // the read-ahead is used only when it starts exactly there.
                if checkpoint == to {
                    read_ahead = Some(next?);
                }
                continue;
            }
            if batch.is_empty() {
                // Nothing else to do: a good moment to check the log (mostly one call
                // asking for its head).
                self.check_log(&mut watch, &checkpoint, stop).await?;
                self.mark_caught_up();
                self.recovered();
                unless_stopped(
                    stop,
                    self.store
                        .wait_for_events(&checkpoint, self.config.idle_wait),
                )
                .await?
                .map_err(|e| ProjectionError::Unavailable(Box::new(e)))?;
                // Another process may have moved the stored checkpoint (several
                // `ordo serve` on one read store); follow it when it is ahead.
                if let Some(stored) =
                    unless_stopped(stop, self.timed(self.projection.load_checkpoint())).await??
                    && stored != checkpoint
                    && stored.is_at_or_past(&checkpoint)
                {
                    checkpoint = stored;
                    self.publish(&checkpoint, None, 0);
                }
                continue;
            }
            checkpoint = self.apply_or_park(&batch, checkpoint, stop).await?;
            watch.applied(&batch);
            // A short read, applied: everything stored when it was made is projected.
            self.mark_caught_up();
        }
    }

    /// Checks that the log has not gone backwards under `checkpoint` (see [`LogWatch`]),
    /// and publishes what the check confirmed.
    async fn check_log(
        &self,
        watch: &mut LogWatch,
        checkpoint: &Checkpoint,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Halt> {
        unless_stopped(stop, watch.check(self.store.as_ref(), checkpoint)).await??;
        self.status.send_if_modified(|s| {
            if s.log_checked.as_ref() == Some(checkpoint) {
                return false;
            }
            s.log_checked = Some(checkpoint.clone());
            true
        });
        Ok(())
    }

    /// The log went backwards: report it and apply nothing more.
    fn halt(&self, message: String) {
        tracing::error!(
            projection = self.projection.name(),
            problem = %message,
            "the event log went backwards under the projection; halted until the read models are rebuilt (ordo replay)"
        );
        self.status.send_modify(|s| {
            s.state = ProjectionState::Halted;
            s.last_error = Some(message);
        });
    }

    fn mark_caught_up(&self) {
        if self.caught_up.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::info!(
            projection = self.projection.name(),
            "caught up with the event store"
        );
        self.status.send_modify(|s| {
            if s.state == ProjectionState::CatchingUp {
                s.state = ProjectionState::Running;
            }
        });
    }

    async fn read(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, ProjectionError> {
        self.store
            .read_all(after, limit)
            .await
            .map_err(|e| ProjectionError::Unavailable(Box::new(e)))
    }

    /// Applies `batch`, retrying failures with backoff. When it keeps failing, applies its
    /// events one at a time and parks the ones that still fail, so one poison event does
    /// not stall the events behind it. Returns the checkpoint past the batch.
    /// A stop ends it only between two of its writes, when a failing write is retried:
    /// the checkpoint returned with [`Halt::Stopped`] is never needed, the stored one is.
    async fn apply_or_park(
        &self,
        batch: &[RecordedEvent],
        from: Checkpoint,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Checkpoint, Halt> {
        let to = advanced(&from, batch);
        match self.apply_with_retries(batch, &from, &to, stop).await? {
            None => {
                self.publish(&to, batch.last().map(|e| e.occurred_at), batch.len() as u64);
                return Ok(to);
            }
            Some(_) if batch.len() > 1 => {
                tracing::warn!(
                    projection = self.projection.name(),
                    events = batch.len(),
                    "a batch keeps failing; applying its events one by one"
                );
            }
            Some(_) => {}
        }
        let mut checkpoint = from;
        for event in batch {
            let next = advanced(&checkpoint, std::slice::from_ref(event));
            if let Some(error) = self
                .apply_with_retries(std::slice::from_ref(event), &checkpoint, &next, stop)
                .await?
            {
                tracing::error!(
                    projection = self.projection.name(), event_id = %event.event_id, stream = %event.stream_id,
                    version = event.version, position = %event.position, error = %error,
                    "parking a poison event"
                );
                self.timed(self.projection.park(event, &error, &checkpoint, &next))
                    .await?;
                self.status.send_modify(|s| {
                    s.events_parked += 1;
                    s.last_error = Some(format!(
                        "parked event {} at {}: {error}",
                        event.event_id, event.position
                    ));
                });
                self.publish_checkpoint(&next);
            } else {
                self.publish(&next, Some(event.occurred_at), 1);
            }
            checkpoint = next;
        }
        Ok(checkpoint)
    }

    /// `Ok(None)` when applied; `Ok(Some(error))` when it failed every attempt with
    /// [`ProjectionError::Failed`]; other errors are returned at once. A stop ends the
    /// wait before a retry.
    async fn apply_with_retries(
        &self,
        events: &[RecordedEvent],
        from: &Checkpoint,
        to: &Checkpoint,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<String>, Halt> {
        let mut backoff = self.config.min_backoff;
        let mut attempt = 0;
        loop {
            match self
                .timed(self.projection.apply_batch(events, from, to))
                .await
            {
                Ok(()) => return Ok(None),
                Err(ProjectionError::Failed(e)) => {
                    attempt += 1;
                    let message = error_chain(e.as_ref());
                    if attempt >= self.config.attempts_before_parking {
                        return Ok(Some(message));
                    }
                    tracing::warn!(projection = self.projection.name(), attempt, error = %message, ?backoff, "projection batch failed; retrying");
                    self.status.send_modify(|s| {
                        s.state = ProjectionState::Failing;
                        s.last_error = Some(message);
                    });
                    unless_stopped(stop, tokio::time::sleep(backoff)).await?;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// The state of a runner that is not failing.
    fn healthy_state(&self) -> ProjectionState {
        if self.caught_up.load(Ordering::Relaxed) {
            ProjectionState::Running
        } else {
            ProjectionState::CatchingUp
        }
    }

    /// The checkpoint loaded when the runner (re)starts. A runner restarting after a
    /// failure is still failing, with its error, until it applies a batch or finds
    /// nothing left to apply: its status does not flap to healthy at every retry.
    fn publish_loaded(&self, checkpoint: &Checkpoint) {
        self.status.send_modify(|s| {
            if s.state == ProjectionState::Starting {
                s.state = self.healthy_state();
            }
            s.checkpoint = Some(checkpoint.clone());
        });
    }

    /// Nothing left to apply: a failure that came before is over.
    fn recovered(&self) {
        self.status.send_if_modified(|s| {
            if s.state != ProjectionState::Failing {
                return false;
            }
            s.state = self.healthy_state();
            if s.events_parked == 0 {
                s.last_error = None;
            }
            true
        });
    }

    fn publish_checkpoint(&self, checkpoint: &Checkpoint) {
        self.status.send_modify(|s| {
            s.state = self.healthy_state();
            s.checkpoint = Some(checkpoint.clone());
        });
    }

    fn publish(&self, checkpoint: &Checkpoint, last_at: Option<OffsetDateTime>, applied: u64) {
        self.status.send_modify(|s| {
            s.state = self.healthy_state();
            s.checkpoint = Some(checkpoint.clone());
            if s.events_parked == 0 {
                s.last_error = None;
            }
            if last_at.is_some() {
                s.last_event_at = last_at;
            }
            s.events_applied += applied;
        });
    }
}

/// Why the runner's loop ended.
enum Halt {
    /// Asked to stop, at a point where none of its writes was running.
    Stopped,
    Failed(ProjectionError),
    /// The log went backwards under the checkpoint (the message says where and how).
    Regressed(String),
}

/// What the runner remembers of the log it has read, to notice the log going backwards.
///
/// A check asks the store for its [head](EventStore::head) (one call; on Redis one
/// XREVRANGE per partition, all in flight at once) and compares it with the checkpoint.
/// Then, in each partition whose checkpoint cursor or head moved since the previous check,
/// it reads the id of the one event at the checkpoint cursor, which must be the event
/// applied there, and of the one at the cursor the previous check confirmed, which must
/// not have changed either ([`EventStore::event_id_at`], point reads). Checks run when the
/// runner (re)loads its checkpoint, every time a read of the log comes back empty (the
/// runner has nothing else to do), and at least every [`RunnerConfig::log_check_every`]
/// while reads keep finding events. A quiet log costs one head call per idle wait; a busy
/// one a head call and at most two point reads per partition every few seconds. Batches
/// pay only for remembering the last event id of each partition they touch.
///
/// What it catches: a log whose head is below the checkpoint (it lost events the read
/// model holds, and nothing was written since, or not enough to get past the checkpoint
/// again), and a log that handed the position at the checkpoint, or at the cursor the
/// previous check confirmed, to another event.
///
/// What it cannot: the ids live in this runner's memory (the read stores keep only the
/// checkpoint text). A runner that starts on a log that went backwards and was then
/// written past the checkpoint again takes the events it finds at its checkpoint for the
/// ones it applied. And a log that, between two checks, lost only events applied since the
/// first and got enough new ones to pass the old checkpoint, looks consistent at the
/// second. A failover usually also breaks the store connection, and any failed read makes
/// the runner reload its checkpoint and check at once.
struct LogWatch {
    /// Per partition: the cursor and id of the last event applied or parked there, or of
    /// the event a check found at the checkpoint.
    last: Vec<Option<(Cursor, Uuid)>>,
    /// Per partition: the cursor and event id the previous check confirmed.
    confirmed: Vec<Option<(Cursor, Uuid)>>,
    /// The head the previous check saw.
    head: Option<Checkpoint>,
    every: Duration,
    next_due: Instant,
}

impl LogWatch {
    fn new(partitions: u32, every: Duration) -> Self {
        let partitions = partitions.max(1) as usize;
        Self {
            last: vec![None; partitions],
            confirmed: vec![None; partitions],
            head: None,
            every,
            next_due: Instant::now(),
        }
    }

    fn is_due(&self) -> bool {
        Instant::now() >= self.next_due
    }

    /// Remembers the last event of each partition in `batch` (applied or parked).
    fn applied(&mut self, batch: &[RecordedEvent]) {
        for event in batch {
            let index = event.position.partition as usize;
            if index >= self.last.len() {
                self.last.resize(index + 1, None);
                self.confirmed.resize(index + 1, None);
            }
            self.last[index] = Some((event.position.cursor, event.event_id));
        }
    }

    async fn check(&mut self, store: &dyn EventStore, checkpoint: &Checkpoint) -> Result<(), Halt> {
        let unavailable =
            |e: crate::store::StoreError| Halt::Failed(ProjectionError::Unavailable(Box::new(e)));
        let head = store.head().await.map_err(unavailable)?;
        for partition in 0..checkpoint.partitions() {
            let cursor = checkpoint.cursor(partition);
            if cursor == Cursor::ORIGIN {
                continue; // nothing applied there: nothing to lose
            }
            let index = partition as usize;
            if index >= self.last.len() {
                self.last.resize(index + 1, None);
                self.confirmed.resize(index + 1, None);
            }
            let at = Position { partition, cursor };
            let end = head.cursor(partition);
            if end < cursor {
                return Err(Halt::Regressed(format!(
                    "the event log of partition {partition} went backwards: it ends at {}, \
                     but the read models already hold events up to {at} (events acknowledged \
                     earlier were lost, by a failover or a restore to an older copy); the \
                     projection stopped applying rather than skip the events that get those \
                     positions again; run `ordo replay` to rebuild the read models from the log",
                    Position {
                        partition,
                        cursor: end
                    }
                )));
            }
            let unchanged = self.confirmed[index].is_some_and(|(c, _)| c == cursor)
                && self
                    .head
                    .as_ref()
                    .is_some_and(|h| h.cursor(partition) == end);
            if unchanged {
                continue;
            }
            let applied = self.last[index]
                .filter(|(c, _)| *c == cursor)
                .map(|(_, id)| id);
            let found = store.event_id_at(&at).await.map_err(unavailable)?;
            let found = match (applied, found) {
                (Some(applied), Some(found)) if applied != found => {
                    return Err(reissued(at, applied, Some(found)));
                }
                (Some(applied), None) => return Err(reissued(at, applied, None)),
                (None, None) => {
                    return Err(Halt::Regressed(format!(
                        "the event log of partition {partition} went backwards: it holds no \
                         event at {at}, where the read models' checkpoint is; run `ordo replay` \
                         to rebuild the read models from the log"
                    )));
                }
                (_, Some(found)) => found,
            };
            if let Some((earlier, id)) = self.confirmed[index]
                && earlier != cursor
            {
                let earlier = Position {
                    partition,
                    cursor: earlier,
                };
                let now = store.event_id_at(&earlier).await.map_err(unavailable)?;
                if now != Some(id) {
                    return Err(reissued(earlier, id, now));
                }
            }
            self.last[index] = Some((cursor, found));
            self.confirmed[index] = Some((cursor, found));
        }
        self.head = Some(head);
        self.next_due = Instant::now() + self.every;
        Ok(())
    }
}

/// The log holds another event (or none) at `at`, where the projection applied `applied`.
fn reissued(at: Position, applied: Uuid, found: Option<Uuid>) -> Halt {
    let now = match found {
        Some(found) => format!("event {found}"),
        None => "no event".to_string(),
    };
    Halt::Regressed(format!(
        "the event log of partition {} went backwards: position {at} now holds {now}, not \
         event {applied}, which the read models applied there (events acknowledged earlier \
         were lost, by a failover or a restore to an older copy, and their positions handed \
         out again); the projection stopped applying rather than skip events; run `ordo \
         replay` to rebuild the read models from the log",
        at.partition
    ))
}

impl From<ProjectionError> for Halt {
    fn from(error: ProjectionError) -> Self {
        Halt::Failed(error)
    }
}

/// `work`, unless the runner is asked to stop first. Only reads and waits go through
/// here: a write the runner has started always runs to its end.
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Result<T, Halt> {
    tokio::select! {
        biased;
        // An error means the sender is gone: the runner is stopping anyway.
        _ = stop.wait_for(|stopped| *stopped) => Err(Halt::Stopped),
        out = work => Ok(out),
    }
}

fn advanced(from: &Checkpoint, events: &[RecordedEvent]) -> Checkpoint {
    let mut next = from.clone();
    for event in events {
        next.advance(&event.position);
    }
    next
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::event::{Metadata, NewEvent, StreamId};
    use crate::memory::InMemoryStore;
    use crate::store::ExpectedVersion;

    /// Records what it is given; fails the first `fail_first` batches, and always fails
    /// batches holding an event of type `Poison`. With `unavailable_first`, the store
    /// behind it is down for that many batches first (the runner restarts after each),
    /// and what the runner's status said at each of them is kept in `seen_status`.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(String, u64)>>,
        checkpoint: Mutex<Option<Checkpoint>>,
        fail_first: Mutex<u32>,
        parked: Mutex<Vec<(String, u64, String)>>,
        unavailable_first: Mutex<u32>,
        /// Loading the checkpoint fails this many times first.
        checkpoint_down: Mutex<u32>,
        runner: std::sync::OnceLock<ProjectionHandle>,
        seen_status: Mutex<Vec<ProjectionStatus>>,
        /// A batch holding this event (stream, version) panics, `panics_left` times.
        panic_on: Option<(String, u64)>,
        panics_left: Mutex<u32>,
        /// A batch holding this event (stream, version) never ends, `stuck_left` times.
        stuck_on: Option<(String, u64)>,
        stuck_left: Mutex<u32>,
    }

    /// Whether `events` hold the event `target` names.
    fn holds(events: &[RecordedEvent], target: &Option<(String, u64)>) -> bool {
        target.as_ref().is_some_and(|(stream, version)| {
            events
                .iter()
                .any(|e| e.stream_id.as_str() == stream && e.version == *version)
        })
    }

    /// Takes one from `left` when it is not zero yet: whether an injected failure is due.
    fn count_down(left: &Mutex<u32>) -> bool {
        let mut left = left.lock().unwrap_or_else(|e| e.into_inner());
        let due = *left > 0;
        if due {
            *left -= 1;
        }
        due
    }

    #[async_trait]
    impl Projection for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
            if count_down(&self.checkpoint_down) {
                return Err(ProjectionError::Unavailable("store down (injected)".into()));
            }
            Ok(self
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone())
        }
        async fn apply_batch(
            &self,
            events: &[RecordedEvent],
            from: &Checkpoint,
            to: &Checkpoint,
        ) -> Result<(), ProjectionError> {
            if let Some(runner) = self.runner.get() {
                self.seen_status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(runner.status());
            }
            if count_down(&self.unavailable_first) {
                return Err(ProjectionError::Unavailable("store down (injected)".into()));
            }
            if holds(events, &self.panic_on) && count_down(&self.panics_left) {
                panic!("injected panic");
            }
            if holds(events, &self.stuck_on) && count_down(&self.stuck_left) {
                std::future::pending::<()>().await;
            }
            {
                let mut fail = self.fail_first.lock().unwrap_or_else(|e| e.into_inner());
                if *fail > 0 {
                    *fail -= 1;
                    return Err(ProjectionError::Failed("injected".into()));
                }
            }
            if events.iter().any(|e| e.event_type == "Poison") {
                return Err(ProjectionError::Failed("cannot apply poison".into()));
            }
            let mut stored = self.checkpoint.lock().unwrap_or_else(|e| e.into_inner());
            if stored.as_ref().is_some_and(|s| s != from) {
                return Err(ProjectionError::CheckpointMoved);
            }
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.extend(events.iter().map(|e| (e.stream_id.to_string(), e.version)));
            *stored = Some(to.clone());
            Ok(())
        }
        async fn park(
            &self,
            event: &RecordedEvent,
            error: &str,
            from: &Checkpoint,
            to: &Checkpoint,
        ) -> Result<(), ProjectionError> {
            let mut stored = self.checkpoint.lock().unwrap_or_else(|e| e.into_inner());
            if stored.as_ref().is_some_and(|s| s != from) {
                return Err(ProjectionError::CheckpointMoved);
            }
            self.parked.lock().unwrap_or_else(|e| e.into_inner()).push((
                event.stream_id.to_string(),
                event.version,
                error.to_string(),
            ));
            *stored = Some(to.clone());
            Ok(())
        }
    }

    fn event() -> NewEvent {
        NewEvent {
            event_id: uuid::Uuid::now_v7(),
            aggregate_type: "Test".into(),
            event_type: "Happened".into(),
            schema_version: 1,
            occurred_at: OffsetDateTime::now_utc(),
            data: serde_json::json!({}).into(),
            metadata: Metadata::default(),
        }
    }

    async fn append_many(store: &InMemoryStore, streams: usize, per_stream: u64) -> Position {
        let mut last = None;
        for v in 0..per_stream {
            for s in 0..streams {
                let appended = store
                    .append(
                        &StreamId::new(format!("s-{s}")),
                        ExpectedVersion::Exact(v),
                        vec![event()],
                    )
                    .await
                    .expect("append");
                last = Some(appended.last_position());
            }
        }
        last.expect("appended something")
    }

    fn config() -> RunnerConfig {
        RunnerConfig {
            batch_size: 7,
            // Catch-up batches (with read-ahead) of another size than live ones.
            catch_up_batch_size: 11,
            idle_wait: Duration::from_millis(20),
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            attempts_before_parking: 3,
            stuck_after: Duration::from_secs(30),
            min_restart_backoff: Duration::from_millis(1),
            max_restart_backoff: Duration::from_millis(5),
            healthy_after: Duration::from_secs(60),
            log_check_every: Duration::from_millis(50),
        }
    }

    /// A runner on `projection`, spawned; it stops when the returned sender is used.
    fn spawn_runner(
        store: Arc<InMemoryStore>,
        projection: Arc<dyn Projection>,
    ) -> (
        ProjectionHandle,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let runner = ProjectionRunner::new(store, projection, config());
        let handle = runner.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        (handle, stop, task)
    }

    async fn run_until_caught_up(
        store: Arc<InMemoryStore>,
        projection: Arc<Recorder>,
        until: Position,
    ) {
        let (handle, stop, task) = spawn_runner(store, projection);
        assert!(
            handle.wait_for(&until, Duration::from_secs(30)).await,
            "the projection should catch up"
        );
        let _ = stop.send(());
        task.await.expect("runner task");
    }

    #[tokio::test]
    async fn every_event_is_applied_once_in_stream_order_across_partitions() {
        let store = Arc::new(InMemoryStore::with_partitions(3));
        let last = append_many(&store, 5, 6).await;
        let projection = Arc::new(Recorder::default());
        run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), last).await;
        let seen = projection.seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 30);
        for s in 0..5 {
            let versions: Vec<u64> = seen
                .iter()
                .filter(|(id, _)| *id == format!("s-{s}"))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(versions, (1..=6).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn a_restarted_runner_resumes_from_the_stored_checkpoint() {
        let store = Arc::new(InMemoryStore::new());
        let first = append_many(&store, 2, 3).await;
        let projection = Arc::new(Recorder::default());
        run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), first).await;
        let second = append_many_more(&store).await;
        run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), second).await;
        let seen = projection.seen.lock().expect("lock").clone();
        assert_eq!(
            seen.len(),
            7,
            "nothing applied twice, nothing skipped: {seen:?}"
        );
    }

    async fn append_many_more(store: &InMemoryStore) -> Position {
        store
            .append(
                &StreamId::new("s-0"),
                ExpectedVersion::Exact(3),
                vec![event()],
            )
            .await
            .expect("append")
            .last_position()
    }

    #[tokio::test]
    async fn a_poison_event_is_parked_and_the_events_behind_it_keep_flowing() {
        let store = Arc::new(InMemoryStore::new());
        append_many(&store, 2, 3).await;
        let mut poison = event();
        poison.event_type = "Poison".into();
        store
            .append(
                &StreamId::new("bad"),
                ExpectedVersion::NoStream,
                vec![poison],
            )
            .await
            .expect("append poison");
        let last = append_many_more(&store).await;
        let projection = Arc::new(Recorder::default());
        let (handle, stop, task) = spawn_runner(store.clone(), projection.clone());
        assert!(
            handle.wait_for(&last, Duration::from_secs(30)).await,
            "events behind the poison must flow"
        );
        let status = handle.status();
        let _ = stop.send(());
        task.await.expect("runner");
        assert_eq!(
            projection.seen.lock().expect("lock").len(),
            7,
            "every good event applied once"
        );
        let parked = projection.parked.lock().expect("lock").clone();
        assert_eq!(parked.len(), 1);
        assert_eq!((parked[0].0.as_str(), parked[0].1), ("bad", 1));
        assert!(parked[0].2.contains("cannot apply poison"));
        assert_eq!(status.events_parked, 1);
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("parked"))
        );
    }

    /// Commits on a task of its own (as stores that write on another thread do), each
    /// once the test releases it: a runner that stopped awaiting it would leave the
    /// commit to land after `run` returned.
    struct ReleasedCommits {
        started: tokio::sync::Notify,
        writes: std::sync::atomic::AtomicUsize,
        release: Arc<tokio::sync::Semaphore>,
        committed: Arc<Mutex<Option<Checkpoint>>>,
    }

    impl Default for ReleasedCommits {
        fn default() -> Self {
            Self {
                started: tokio::sync::Notify::new(),
                writes: Default::default(),
                release: Arc::new(tokio::sync::Semaphore::new(0)),
                committed: Arc::default(),
            }
        }
    }

    impl ReleasedCommits {
        fn committed(&self) -> Option<Checkpoint> {
            self.committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }
    }

    #[async_trait]
    impl Projection for ReleasedCommits {
        fn name(&self) -> &str {
            "released"
        }
        async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
            Ok(self.committed())
        }
        async fn apply_batch(
            &self,
            _events: &[RecordedEvent],
            _from: &Checkpoint,
            to: &Checkpoint,
        ) -> Result<(), ProjectionError> {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.started.notify_one();
            let (release, committed, to) = (
                Arc::clone(&self.release),
                Arc::clone(&self.committed),
                to.clone(),
            );
            tokio::spawn(async move {
                release.acquire().await.expect("semaphore open").forget();
                *committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
            })
            .await
            .map_err(|e| ProjectionError::Failed(Box::new(e)))
        }
        async fn park(
            &self,
            _event: &RecordedEvent,
            error: &str,
            _from: &Checkpoint,
            _to: &Checkpoint,
        ) -> Result<(), ProjectionError> {
            panic!("nothing should be parked: {error}")
        }
    }

    #[tokio::test]
    async fn a_stop_waits_for_the_write_in_progress_and_nothing_is_written_after_it() {
        let store = Arc::new(InMemoryStore::new());
        let last = append_many(&store, 1, 3).await;
        let projection = Arc::new(ReleasedCommits::default());
        let (handle, stop, task) = spawn_runner(store, Arc::clone(&projection) as _);
        projection.started.notified().await;
        let _ = stop.send(());
        // This test runs on one thread: each yield lets the runner act on the stop.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !task.is_finished(),
            "the runner returned while its write was still running"
        );
        assert_eq!(projection.committed(), None);
        projection.release.add_permits(1);
        task.await.expect("runner");
        let committed = projection.committed().expect("the batch was committed");
        assert!(committed.covers(&last), "{committed:?}");
        let status = handle.status();
        assert_eq!(status.state, ProjectionState::Stopped);
        assert_eq!(
            status.checkpoint.as_ref(),
            Some(&committed),
            "the runner stops where its store stopped"
        );
        // Stopped between writes: no further write was started.
        assert_eq!(
            projection.writes.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[tokio::test]
    async fn a_runner_is_catching_up_until_a_read_of_the_log_comes_back_short() {
        let store = Arc::new(InMemoryStore::new());
        // 30 events: reads of 7, then 11 (catch-up size), 11, and a short one.
        let last = append_many(&store, 3, 10).await;
        let projection = Arc::new(ReleasedCommits::default());
        let (handle, stop, task) = spawn_runner(store, Arc::clone(&projection) as _);
        projection.started.notified().await;
        assert_eq!(handle.status().state, ProjectionState::CatchingUp);
        projection.release.add_permits(1_000);
        assert!(handle.wait_for(&last, Duration::from_secs(30)).await);
        assert_eq!(handle.status().state, ProjectionState::Running);
        let _ = stop.send(());
        task.await.expect("runner");
    }

    #[tokio::test]
    async fn a_runner_restarting_after_failures_reports_failing_until_it_applies_again() {
        let store = Arc::new(InMemoryStore::new());
        let last = append_many(&store, 1, 3).await;
        let projection = Arc::new(Recorder {
            unavailable_first: Mutex::new(4),
            ..Recorder::default()
        });
        let runner = ProjectionRunner::new(
            Arc::clone(&store) as Arc<dyn EventStore>,
            Arc::clone(&projection) as Arc<dyn Projection>,
            config(),
        );
        let handle = runner.handle();
        projection.runner.set(runner.handle()).expect("set once");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        assert!(handle.wait_for(&last, Duration::from_secs(30)).await);
        let seen = projection.seen_status.lock().expect("lock").clone();
        assert_eq!(seen.len(), 5, "four failed attempts, then the one applied");
        // The first attempt: nothing failed yet. Every retry after a restart: still
        // failing, with the error, not healthy again before anything was applied.
        assert_eq!(seen[0].last_error, None);
        for status in &seen[1..] {
            assert_eq!(status.state, ProjectionState::Failing, "{status:?}");
            assert!(
                status
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("store down (injected)")),
                "{status:?}"
            );
        }
        let status = handle.status();
        assert_eq!(
            status.last_error, None,
            "applied again: the failure is over"
        );
        assert_ne!(status.state, ProjectionState::Failing);
        let _ = stop.send(());
        task.await.expect("runner");
    }

    #[tokio::test]
    async fn a_runner_that_failed_is_healthy_again_once_nothing_is_left_to_apply() {
        // Nothing to apply after the failures: no batch clears them, reaching the end of
        // the log does.
        let store = Arc::new(InMemoryStore::new());
        let projection = Arc::new(Recorder {
            checkpoint_down: Mutex::new(2),
            ..Recorder::default()
        });
        let (handle, stop, task) = spawn_runner(store, projection);
        let mut status = handle.status.clone();
        // (The guard `wait_for` returns is dropped at once: it blocks the runner's writes.)
        let healthy = tokio::time::timeout(Duration::from_secs(30), async {
            status
                .wait_for(|s| s.state == ProjectionState::Running)
                .await
                .is_ok()
        })
        .await;
        assert_eq!(healthy, Ok(true), "still {:?}", handle.status());
        assert_eq!(handle.status().last_error, None);
        let _ = stop.send(());
        task.await.expect("runner");
    }

    #[tokio::test]
    async fn a_failing_batch_is_retried_and_then_applied() {
        let store = Arc::new(InMemoryStore::new());
        let last = append_many(&store, 1, 3).await;
        let projection = Arc::new(Recorder {
            fail_first: Mutex::new(2),
            ..Recorder::default()
        });
        run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), last).await;
        assert_eq!(projection.seen.lock().expect("lock").len(), 3);
    }

    /// A runner on `projection` with `config`, spawned, whose status `projection` records
    /// at every batch; it stops when the returned sender is used.
    fn spawn_watched(
        store: Arc<InMemoryStore>,
        projection: Arc<Recorder>,
        config: RunnerConfig,
    ) -> (
        ProjectionHandle,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let runner = ProjectionRunner::new(store, Arc::clone(&projection) as _, config);
        projection.runner.set(runner.handle()).expect("set once");
        let handle = runner.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        (handle, stop, task)
    }

    /// Each of `streams` streams was applied once, versions 1 to `per_stream` in order.
    fn assert_applied_once(projection: &Recorder, streams: usize, per_stream: u64) {
        let seen = projection.seen.lock().expect("lock").clone();
        assert_eq!(
            seen.len(),
            streams * per_stream as usize,
            "nothing applied twice, nothing skipped: {seen:?}"
        );
        for s in 0..streams {
            let versions: Vec<u64> = seen
                .iter()
                .filter(|(id, _)| *id == format!("s-{s}"))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(versions, (1..=per_stream).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn a_batch_that_panics_restarts_the_runner_which_then_applies_every_event_once() {
        let store = Arc::new(InMemoryStore::with_partitions(3));
        let last = append_many(&store, 5, 6).await;
        let projection = Arc::new(Recorder {
            panic_on: Some(("s-2".into(), 4)),
            panics_left: Mutex::new(3),
            ..Recorder::default()
        });
        let (handle, stop, task) = spawn_watched(store, Arc::clone(&projection), config());
        assert!(handle.wait_for(&last, Duration::from_secs(30)).await);
        assert_applied_once(&projection, 5, 6);
        let status = handle.status();
        assert_eq!(status.restarts, 3, "{status:?}");
        assert_eq!(status.state, ProjectionState::Running);
        assert_eq!(
            status.last_error, None,
            "applied again: the failure is over"
        );
        assert_eq!(status.events_parked, 0, "a panic is not a poison event");
        // What the restarted runner said before it got past the panicking batch.
        let seen = projection.seen_status.lock().expect("lock").clone();
        assert!(
            seen.iter().any(|s| s.state == ProjectionState::Failing
                && s.restarts >= 1
                && s.last_error.as_deref()
                    == Some("the projection runner panicked: injected panic")),
            "{seen:?}"
        );
        let _ = stop.send(());
        task.await.expect("the runner itself does not panic");
        assert_eq!(handle.status().state, ProjectionState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_batch_is_reported_and_applied_by_the_runner_that_replaces_it() {
        let store = Arc::new(InMemoryStore::new());
        let last = append_many(&store, 2, 3).await;
        let projection = Arc::new(Recorder {
            stuck_on: Some(("s-1".into(), 2)),
            stuck_left: Mutex::new(1),
            ..Recorder::default()
        });
        let config = RunnerConfig {
            stuck_after: Duration::from_secs(5),
            ..config()
        };
        let (handle, stop, task) = spawn_watched(store, Arc::clone(&projection), config);
        assert!(handle.wait_for(&last, Duration::from_secs(600)).await);
        assert_applied_once(&projection, 2, 3);
        let status = handle.status();
        assert_eq!(status.restarts, 1, "{status:?}");
        assert_eq!(status.state, ProjectionState::Running);
        assert_eq!(status.last_error, None);
        let seen = projection.seen_status.lock().expect("lock").clone();
        assert!(
            seen.iter().any(|s| s.state == ProjectionState::Failing
                && s.restarts == 1
                && s.last_error.as_deref() == Some("projection batch stuck for 5 s")),
            "{seen:?}"
        );
        let _ = stop.send(());
        task.await.expect("runner");
    }

    #[tokio::test(start_paused = true)]
    async fn a_runner_asked_to_stop_during_a_stuck_batch_stops_once_it_counts_as_stuck() {
        let store = Arc::new(InMemoryStore::new());
        append_many(&store, 1, 3).await;
        let projection = Arc::new(Recorder {
            stuck_on: Some(("s-0".into(), 1)),
            stuck_left: Mutex::new(u32::MAX),
            ..Recorder::default()
        });
        let config = RunnerConfig {
            stuck_after: Duration::from_secs(5),
            ..config()
        };
        let (handle, stop, task) = spawn_watched(store, Arc::clone(&projection), config);
        // The first batch has started (and will never end).
        for _ in 0..1_000 {
            if !projection.seen_status.lock().expect("lock").is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!projection.seen_status.lock().expect("lock").is_empty());
        let _ = stop.send(());
        task.await.expect("runner");
        let status = handle.status();
        assert_eq!(status.state, ProjectionState::Stopped);
        assert_eq!(status.restarts, 0, "stopping: not restarted");
        assert_eq!(
            status.last_error.as_deref(),
            Some("projection batch stuck for 5 s")
        );
        assert!(projection.seen.lock().expect("lock").is_empty());
    }

    /// Waits (bounded) until the runner's status satisfies `condition`.
    async fn wait_for_status(
        handle: &ProjectionHandle,
        condition: impl Fn(&ProjectionStatus) -> bool,
    ) -> ProjectionStatus {
        let mut status = handle.status.clone();
        let reached = tokio::time::timeout(Duration::from_secs(30), async {
            status.wait_for(|s| condition(s)).await.is_ok()
        })
        .await;
        assert_eq!(reached, Ok(true), "still {:?}", handle.status());
        handle.status()
    }

    /// The runner has applied everything up to `last`, and a check of the log confirmed it.
    async fn wait_until_checked(handle: &ProjectionHandle, last: &Position) {
        wait_for_status(handle, |s| {
            s.log_checked.as_ref().is_some_and(|c| c.covers(last))
        })
        .await;
    }

    #[tokio::test]
    async fn a_log_whose_head_fell_below_the_checkpoint_halts_the_runner() {
        let store = Arc::new(InMemoryStore::with_partitions(3));
        let last = append_many(&store, 4, 3).await;
        let projection = Arc::new(Recorder::default());
        let (handle, stop, task) = spawn_runner(Arc::clone(&store), Arc::clone(&projection) as _);
        wait_until_checked(&handle, &last).await;
        let applied = projection.seen.lock().expect("lock").len();
        assert_eq!(applied, 12);
        // A failover to a copy that missed the newest two events of this partition.
        store.lose_newest(last.partition, 2);
        let status = wait_for_status(&handle, |s| s.state == ProjectionState::Halted).await;
        let message = status.last_error.expect("the problem is stated");
        assert!(
            message.contains(&format!(
                "the event log of partition {} went backwards",
                last.partition
            )) && message.contains("ordo replay"),
            "{message}"
        );
        // Halted means halted: a new event elsewhere is not applied, and the runner does
        // not restart itself into applying it.
        let other = (0..3)
            .find(|p| *p != last.partition)
            .expect("another partition");
        let stream = (0..)
            .map(|n| StreamId::new(format!("elsewhere-{n}")))
            .find(|s| crate::partition_of(s.as_str(), 3) == other)
            .expect("a stream in the other partition");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event()])
            .await
            .expect("append");
        for _ in 0..20 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(projection.seen.lock().expect("lock").len(), applied);
        let status = handle.status();
        assert_eq!(status.state, ProjectionState::Halted);
        assert_eq!(status.restarts, 0);
        let _ = stop.send(());
        task.await.expect("runner");
        assert_eq!(handle.status().state, ProjectionState::Stopped);
    }

    #[tokio::test]
    async fn a_runner_that_starts_on_a_log_below_its_checkpoint_halts_at_once() {
        let store = Arc::new(InMemoryStore::new());
        let last = append_many(&store, 2, 3).await;
        let projection = Arc::new(Recorder::default());
        run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), last).await;
        store.lose_newest(0, 1);
        let (handle, stop, task) = spawn_runner(store, Arc::clone(&projection) as _);
        let status = wait_for_status(&handle, |s| s.state == ProjectionState::Halted).await;
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("partition 0 went backwards: it ends at 0.5.0")),
            "{status:?}"
        );
        let _ = stop.send(());
        task.await.expect("runner");
    }

    #[tokio::test]
    async fn positions_handed_out_again_after_a_rollback_halt_the_runner() {
        let store = Arc::new(InMemoryStore::new());
        let last = append_many(&store, 3, 2).await;
        let projection = Arc::new(Recorder::default());
        let (handle, stop, task) = spawn_runner(Arc::clone(&store), Arc::clone(&projection) as _);
        wait_until_checked(&handle, &last).await;
        // Lost the newest three, then new appends get their positions and more: the head
        // is past the checkpoint again, so only the event ids tell.
        store.lose_newest(0, 3);
        for _ in 0..5 {
            store
                .append(&StreamId::new("after"), ExpectedVersion::Any, vec![event()])
                .await
                .expect("append");
        }
        let status = wait_for_status(&handle, |s| s.state == ProjectionState::Halted).await;
        let message = status.last_error.expect("the problem is stated");
        assert!(
            message.contains("the event log of partition 0 went backwards: position 0.")
                && message.contains("now holds event")
                && message.contains("ordo replay"),
            "{message}"
        );
        let _ = stop.send(());
        task.await.expect("runner");
    }

    #[tokio::test]
    async fn a_log_that_only_grows_is_never_taken_for_one_that_went_backwards() {
        let store = Arc::new(InMemoryStore::with_partitions(2));
        let projection = Arc::new(Recorder::default());
        let (handle, stop, task) = spawn_runner(Arc::clone(&store), Arc::clone(&projection) as _);
        for round in 0..5 {
            let mut last = None;
            for s in 0..3 {
                let appended = store
                    .append(
                        &StreamId::new(format!("grow-{s}")),
                        ExpectedVersion::Any,
                        vec![event(), event()],
                    )
                    .await
                    .expect("append");
                last = Some(appended.last_position());
            }
            wait_until_checked(&handle, &last.expect("appended")).await;
            let status = handle.status();
            assert_eq!(
                status.state,
                ProjectionState::Running,
                "round {round}: {status:?}"
            );
        }
        assert_eq!(projection.seen.lock().expect("lock").len(), 30);
        let _ = stop.send(());
        task.await.expect("runner");
    }
}
