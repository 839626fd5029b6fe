//! A rebuild: every read model loaded again from the event store into a new generation
//! while the live one keeps serving and projecting, then queries switched over in one
//! step.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::MutexGuard;

use ordo_es::{Checkpoint, ProjectionHandle, ProjectionState};

use super::runner::{
    Running, StallWatch, new_bulk_generation, start_projection, start_runner, stored_checkpoint,
};
use super::{DROP_AFTER, ReadSide};
use crate::projection::OrderProjection;
use ordo_domain::read_store::{ReadGeneration, ReadStoreError};

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

/// How far a rebuild that failed once its runner started had got, which says what
/// undoing it takes (see [`ReadSide::undo_rebuild`]).
enum RebuildFailure<'a> {
    /// While loading beside the live generation, which is left as it was.
    Loading(RebuildError),
    /// At the switch, holding `running`. `stopped`: the live generation, when its
    /// runner had already been stopped.
    Switching {
        error: RebuildError,
        running: MutexGuard<'a, Option<Running>>,
        stopped: Option<ReadGeneration>,
    },
}

/// A rebuild past its switch: the new generation is the active one, and `running` waits
/// for its runner.
struct Switched<'a> {
    running: MutexGuard<'a, Option<Running>>,
    old_generation: ReadGeneration,
}

impl ReadSide {
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
        // Nothing queries the new generation until the switch: let it load in bulk.
        let (generation, projection) = new_bulk_generation(&*self.provider).await?;
        tracing::info!(generation = %generation.id, "rebuilding read models beside the live ones");
        let origin = Checkpoint::origin(self.events.partitions());
        let mut total = self.events.count_after(&origin).await?;
        let mut building = start_projection(
            &self.events,
            generation.clone(),
            Arc::clone(&projection),
            &self.runners,
        );
        progress(0, total);

        let switched = self
            .load_and_switch(&mut building, &projection, &origin, &mut total, progress)
            .await;
        let Switched {
            mut running,
            old_generation,
        } = match switched {
            Ok(switched) => switched,
            Err(failure) => return Err(self.undo_rebuild(building, failure).await),
        };
        let status = building.handle.status();
        // Divided into shards, the rebuild's runner (over the whole log) stopped before
        // the switch; the shards this process holds go on from its checkpoint.
        let live_runner = if self.runners.shards.is_some() {
            start_runner(&self.events, generation.clone(), &self.runners)
        } else {
            building
        };
        {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            *live = (generation.clone(), live_runner.handle.clone());
        }
        progress(
            status.events_applied + status.events_parked,
            total.max(status.events_applied + status.events_parked),
        );
        *running = Some(live_runner);
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

    /// The steps of [`rebuild`](Self::rebuild) from the start of `building` to the new
    /// generation made active; a failure says how far it got, for
    /// [`undo_rebuild`](Self::undo_rebuild).
    async fn load_and_switch(
        &self,
        building: &mut Running,
        projection: &OrderProjection,
        origin: &Checkpoint,
        total: &mut u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<Switched<'_>, RebuildFailure<'_>> {
        let generation = &building.generation.clone();
        // Catch up while the live generation keeps serving.
        self.catch_up_to_live(building, generation, origin, total, progress)
            .await
            .map_err(RebuildFailure::Loading)?;
        // Caught up: build what the bulk load deferred before anything queries it.
        let finishing = std::time::Instant::now();
        projection
            .finish_bulk()
            .await
            .map_err(|e| RebuildFailure::Loading(e.into()))?;
        tracing::info!(generation = %generation.id, elapsed_ms = finishing.elapsed().as_millis() as u64, "finished the bulk load");
        // The new generation's writes may have waited for the index builds (the embedded
        // store's one writer builds them): apply what arrived meanwhile now, while the live generation still answers, rather than at the
        // switch, where every read with a newer consistency token waits for it.
        self.catch_up_to_live(building, generation, origin, total, progress)
            .await
            .map_err(RebuildFailure::Loading)?;

        // Switch: stop the live runner, let the new one reach where it stopped (so no
        // consistency token goes backwards), then serve from the new generation.
        let mut running = self.running.lock().await;
        let Some(old) = running.take() else {
            return Err(RebuildFailure::Switching {
                error: RebuildError::ShuttingDown,
                running,
                stopped: None,
            });
        };
        // (Asked before the stop, which leaves every runner `Stopped`.)
        let old_halted = old.handle.status().state == ProjectionState::Halted;
        // A stopped runner has finished the batch it was writing: nothing is written
        // to the old generation from here on, so its stored checkpoint is final.
        let (old_generation, old_handle) = old.stop().await;
        let stopped_at = self
            .stopped_at(&old_generation, &old_handle, old_halted, origin)
            .await;
        let switched = if reaches(building, &stopped_at, origin).await {
            if self.runners.shards.is_some() {
                // The shards of every process go on from what the rebuild stored, so it
                // stops first: nothing it writes after the switch could be applied twice.
                building.stop_in_place().await;
            }
            self.provider
                .activate(&generation.id)
                .await
                .map_err(RebuildError::from)
        } else {
            Err(RebuildError::CatchUpTimeout)
        };
        match switched {
            Ok(()) => Ok(Switched {
                running,
                old_generation,
            }),
            Err(error) => Err(RebuildFailure::Switching {
                error,
                running,
                stopped: Some(old_generation),
            }),
        }
    }

    /// Where the live runner, just stopped, left `old_generation`: what that generation
    /// has committed (the authority, should the runner have published less), or the
    /// log's head when the runner had halted; the last checkpoint it published when
    /// that cannot be read.
    async fn stopped_at(
        &self,
        old_generation: &ReadGeneration,
        old_handle: &ProjectionHandle,
        old_halted: bool,
        origin: &Checkpoint,
    ) -> Checkpoint {
        let stored_at = if old_halted {
            // The old checkpoint is not reachable in a log that went backwards: the new
            // generation serves once it has everything the log holds.
            self.events.head().await.map_err(|e| e.to_string())
        } else {
            crate::projection::stored_checkpoint(old_generation.store.as_ref(), origin.partitions())
                .await
                .map(|stored| stored.unwrap_or_else(|| origin.clone()))
                .map_err(|e| e.to_string())
        };
        match stored_at {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live checkpoint; using the last published one");
                old_handle
                    .status()
                    .checkpoint
                    .unwrap_or_else(|| origin.clone())
            }
        }
    }

    /// Undoes a rebuild that failed once `building` had started: stops it and, when the
    /// live runner had been stopped for the switch, starts that again on its generation.
    /// Returns the failure's error; the rebuild's locks are released after this.
    async fn undo_rebuild(&self, building: Running, failure: RebuildFailure<'_>) -> RebuildError {
        let _ = building.stop().await;
        match failure {
            RebuildFailure::Loading(error) => error,
            RebuildFailure::Switching {
                error,
                mut running,
                stopped,
            } => {
                if let Some(old_generation) = stopped {
                    let restarted =
                        start_runner(&self.events, old_generation.clone(), &self.runners);
                    // Status and consistency waits follow the restarted runner, not the
                    // stopped one.
                    *self.live.write().unwrap_or_else(|e| e.into_inner()) =
                        (old_generation, restarted.handle.clone());
                    *running = Some(restarted);
                }
                error
            }
        }
    }
}

/// Whether `building`, within about 30 s, publishes a checkpoint past `stopped_at` and
/// stores what it published: consistency tokens are answered from the published
/// checkpoint, so the new generation serves no further than what it has stored.
async fn reaches(building: &Running, stopped_at: &Checkpoint, origin: &Checkpoint) -> bool {
    for _ in 0..600 {
        let published = building.handle.status().checkpoint;
        if let Some(published) = published
            && published.is_at_or_past(stopped_at)
            && stored_checkpoint(&building.generation, origin)
                .await
                .is_some_and(|stored| stored.is_at_or_past(&published))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
