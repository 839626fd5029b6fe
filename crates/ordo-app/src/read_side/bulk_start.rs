//! The bulk load a read side starts with when its read models were never projected
//! into and the log is long: a new generation loaded like a rebuild, which replaces the
//! active one once it has caught up, or is dropped for a catch-up batch by batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ordo_es::{Checkpoint, EventStore, ProjectionState};

use super::runner::{
    Runners, Running, StallWatch, new_bulk_generation, start_projection, start_runner,
    stored_checkpoint,
};
use super::{DROP_AFTER, ReadSide, ReadSideOptions, RebuildError, SHUTDOWN_GRACE};
use ordo_domain::read_store::{ReadGeneration, ReadStoreError, ReadStoreProvider, RebuildLock};

impl ReadSide {
    /// When `active` was never projected into and the log is long enough, creates a new
    /// generation and starts loading it in bulk; `None` otherwise.
    pub(super) async fn prepare_bulk_start(
        events: &Arc<dyn EventStore>,
        provider: &Arc<dyn ReadStoreProvider>,
        active: &ReadGeneration,
        options: &ReadSideOptions,
        runners: &Runners,
    ) -> Result<Option<Running>, ReadStoreError> {
        if options.bulk_start_min_events == u64::MAX
            || crate::projection::stored_checkpoint(active.store.as_ref(), events.partitions())
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
        let (generation, projection) = new_bulk_generation(&**provider).await?;
        tracing::info!(generation = %generation.id, events = stored, "the read models are empty: loading them in bulk");
        Ok(Some(start_projection(
            events, generation, projection, runners,
        )))
    }

    /// Waits for the bulk load started by [`start_with`](Self::start_with) to catch up,
    /// builds what it deferred and makes its generation the active one. On failure, drops
    /// it and catches the active generation up batch by batch instead.
    pub(super) async fn finish_bulk_start(
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
            Some(Running {
                projection: Some(projection),
                handle,
                ..
            }) => (Arc::clone(projection), handle.clone()),
            _ => return Ok(false),
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
        let mut running = self.running.lock().await;
        let Some(building) = running.as_mut().filter(|r| r.handle.same_runner(&handle)) else {
            return Ok(false); // shut down meanwhile
        };
        if self.runners.shards.is_some() {
            // Divided into shards, every process's shards go on from what the load
            // stored: the load stops first, so nothing it writes is applied twice.
            building.stop_in_place().await;
            if let Err(e) = self.provider.activate(&generation.id).await {
                // Catch the active generation up instead (`fall_back_to_catching_up`),
                // with the stopped load left in `running` for it to replace.
                drop(running);
                return Err(e.into());
            }
            let live = start_runner(&self.events, generation.clone(), &self.runners);
            *self.live.write().unwrap_or_else(|e| e.into_inner()) =
                (generation.clone(), live.handle.clone());
            *running = Some(live);
        } else {
            self.provider.activate(&generation.id).await?;
            *self.live.write().unwrap_or_else(|e| e.into_inner()) = (generation.clone(), handle);
        }
        // After `live`: whoever sees `loading` false sees the new generation.
        self.loading.store(false, Ordering::Release);
        drop(running);
        Ok(true)
    }

    /// A rebuild asked for while the service loads its empty read models in bulk: that
    /// load is a full replay of the event store begun moments ago, so it is waited for
    /// (reporting its progress) instead of being done twice. True when it became the
    /// live read models; false when it failed and the rebuild must go on.
    pub(super) async fn wait_for_bulk_start(
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
}
