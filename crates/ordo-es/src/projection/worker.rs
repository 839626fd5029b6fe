//! The runner's loop, as one task runs it: read the log after the checkpoint, apply the
//! batch with its checkpoint, park what cannot be applied, wait for the store's wake-up
//! when caught up.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::event::RecordedEvent;
use crate::position::Checkpoint;
use crate::store::EventStore;

use super::log_watch::LogWatch;
use super::supervision::{Busy, BusyGuard};
use super::{Projection, ProjectionError, ProjectionState, ProjectionStatus, RunnerConfig};

/// The loop that reads the log and applies batches, as one task runs it. The tasks a
/// runner starts one after the other share everything but `busy`.
#[derive(Clone)]
pub(super) struct Worker {
    pub(super) store: Arc<dyn EventStore>,
    pub(super) projection: Arc<dyn Projection>,
    pub(super) config: RunnerConfig,
    pub(super) status: watch::Sender<ProjectionStatus>,
    /// Set once a read of the log that came back short of a full batch is applied.
    pub(super) caught_up: Arc<AtomicBool>,
    /// Since when this task's call into the projection has been running, if one is.
    pub(super) busy: Arc<Busy>,
}

impl Worker {
    /// One task's work: the loop until a stop, then waiting for writes still running.
    pub(super) async fn work(self, stop: watch::Receiver<bool>) {
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
                Err(Halt::Failed(ProjectionError::LeaseLost(message))) => {
                    self.fenced(message);
                    // Until the owner of the lease stops it: another process applies
                    // this work now, and any write of this one would be refused.
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

    /// The lease was lost: report it and apply nothing more.
    fn fenced(&self, message: String) {
        tracing::info!(
            projection = self.projection.name(),
            reason = %message,
            "lease lost; this runner stops writing"
        );
        self.status.send_modify(|s| {
            s.state = ProjectionState::Fenced;
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
pub(super) enum Halt {
    /// Asked to stop, at a point where none of its writes was running.
    Stopped,
    Failed(ProjectionError),
    /// The log went backwards under the checkpoint (the message says where and how).
    Regressed(String),
}

/// `work`, unless the runner is asked to stop first. Only reads and waits go through
/// here: a write the runner has started always runs to its end.
pub(super) async fn unless_stopped<T>(
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

pub(super) fn advanced(from: &Checkpoint, events: &[RecordedEvent]) -> Checkpoint {
    let mut next = from.clone();
    for event in events {
        next.advance(&event.position);
    }
    next
}

pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
