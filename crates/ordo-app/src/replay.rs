//! Replay jobs: rebuilding read models from the event store, as operators run them.
//!
//! - **Full** (no parameters): a blue-green rebuild of every read model
//!   ([`ReadSide::rebuild`]); queries never see a half-built model.
//! - **From a timestamp**: every order with an event at or after that instant is folded
//!   again from its whole stream (a partial fold would be wrong) and its read-model rows,
//!   summary and top-customer contributions are rewritten in place. For repairing what a
//!   bug fix touched, without a full rebuild.
//! - **One order**: the same repair for one order.
//!
//! Repairs commit with the projection checkpoint's compare-and-set, from the checkpoint
//! they read to the same cursors at the next revision (divided into shards, each
//! shard's orders with that shard's checkpoint), so they never interleave with a live
//! batch: if the live projection moved, the repair reads again and retries; a live batch
//! folded before the repair fails its own compare-and-set and is folded again.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use ordo_es::{Aggregate, Checkpoint};

use crate::projection::OrderProjection;
use crate::read_side::ReadSide;
use crate::service::{HistoryError, OrderService};
use ordo_domain::order::Order;
use ordo_domain::read_store::ReadStoreError;

/// What to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayRequest {
    Full,
    From(OffsetDateTime),
    Order(Uuid),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// A job's progress, as the admin endpoint shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub job_id: Uuid,
    pub state: JobState,
    pub events_done: u64,
    pub events_total: u64,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
}

#[derive(Debug)]
struct Job {
    status: Mutex<JobStatus>,
}

impl Job {
    fn progress(&self, done: u64, total: u64) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.events_done = done;
        status.events_total = total.max(done);
    }

    fn finish(&self, result: Result<(), String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                status.state = JobState::Done;
                status.events_total = status.events_total.max(status.events_done);
            }
            Err(e) => {
                status.state = JobState::Failed;
                status.error = Some(e);
            }
        }
    }
}

/// Why a job could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a full rebuild is already running (job {0})")]
    AlreadyRunning(Uuid),
    /// A full rebuild runs where a projection runs: it ends by stopping the live runner
    /// and starting the rebuilt generation's, and this process has neither.
    #[error(
        "this process runs no projection (ordo serve --role api), so it does not rebuild the read models: run `ordo replay` on the same stores (running services follow its switch), or ask an ordo serve of role all; repairs (fromTimestamp, aggregateId) run here"
    )]
    NoProjection,
}

/// The replay jobs of one process.
#[derive(Debug)]
pub struct ReplayJobs {
    read_side: Arc<ReadSide>,
    service: OrderService,
    jobs: Mutex<HashMap<Uuid, Arc<Job>>>,
    full_rebuild: Mutex<Option<Uuid>>,
    /// Events applied by replays since start (the `ordo_replay_events_total` metric).
    applied: Arc<AtomicU64>,
}

/// Jobs kept for inspection after they end.
const KEEP_FINISHED: usize = 100;

impl ReplayJobs {
    pub fn new(read_side: Arc<ReadSide>, service: OrderService) -> Arc<Self> {
        Arc::new(Self {
            read_side,
            service,
            jobs: Mutex::new(HashMap::new()),
            full_rebuild: Mutex::new(None),
            applied: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn events_applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn status(&self, id: Uuid) -> Option<JobStatus> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(&id)
            .map(|j| j.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Starts a job in the background; returns its id.
    pub fn start(self: &Arc<Self>, request: ReplayRequest) -> Result<Uuid, StartError> {
        let id = Uuid::now_v7();
        if request == ReplayRequest::Full {
            if !self.read_side.runs_projection() {
                return Err(StartError::NoProjection);
            }
            let mut running = self.full_rebuild.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = *running {
                return Err(StartError::AlreadyRunning(other));
            }
            *running = Some(id);
        }
        let job = Arc::new(Job {
            status: Mutex::new(JobStatus {
                job_id: id,
                state: JobState::Running,
                events_done: 0,
                events_total: 0,
                error: None,
            }),
        });
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if jobs.len() >= KEEP_FINISHED {
                let finished: Vec<Uuid> = jobs
                    .iter()
                    .filter(|(_, j)| {
                        j.status.lock().unwrap_or_else(|e| e.into_inner()).state
                            != JobState::Running
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for old in finished.into_iter().take(jobs.len() + 1 - KEEP_FINISHED) {
                    jobs.remove(&old);
                }
            }
            jobs.insert(id, Arc::clone(&job));
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tracing::info!(job = %id, ?request, "replay started");
            let result = this.execute(&job, request).await;
            match &result {
                Ok(()) => tracing::info!(job = %id, "replay done"),
                Err(e) => tracing::error!(job = %id, error = %e, "replay failed"),
            }
            job.finish(result);
            if request == ReplayRequest::Full {
                *this.full_rebuild.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        });
        Ok(id)
    }

    async fn execute(&self, job: &Arc<Job>, request: ReplayRequest) -> Result<(), String> {
        match request {
            ReplayRequest::Full => {
                let applied = Arc::clone(&self.applied);
                let last = AtomicU64::new(0);
                let report = |done: u64, total: u64| {
                    let before = last.swap(done, Ordering::Relaxed);
                    applied.fetch_add(done.saturating_sub(before), Ordering::Relaxed);
                    job.progress(done, total);
                };
                self.read_side
                    .rebuild(&report)
                    .await
                    .map_err(|e| e.to_string())
            }
            ReplayRequest::Order(id) => {
                let events = self.service.history(id).await.map_err(|e| e.to_string())?;
                if events.is_empty() {
                    return Err(format!("no order {id} in the event store"));
                }
                job.progress(0, events.len() as u64);
                self.repair(&[id]).await?;
                self.applied
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                job.progress(events.len() as u64, events.len() as u64);
                Ok(())
            }
            ReplayRequest::From(from) => {
                let events = self.read_side.events();
                let mut checkpoint = Checkpoint::origin(events.partitions());
                let total = events
                    .count_after(&checkpoint)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut done = 0;
                let mut touched = BTreeSet::new();
                loop {
                    let batch = events
                        .read_all(&checkpoint, 1_000)
                        .await
                        .map_err(|e| e.to_string())?;
                    if batch.is_empty() {
                        break;
                    }
                    for event in &batch {
                        checkpoint.advance(&event.position);
                        if event.aggregate_type == Order::TYPE
                            && event.occurred_at >= from
                            && let Ok(id) = Uuid::parse_str(event.stream_id.as_str())
                        {
                            touched.insert(id);
                        }
                    }
                    done += batch.len() as u64;
                    job.progress(done, total.max(done));
                }
                let ids: Vec<Uuid> = touched.into_iter().collect();
                for chunk in ids.chunks(200) {
                    self.repair(chunk).await?;
                }
                self.applied.fetch_add(done, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Folds these orders again from their events and rewrites their read models, now
    /// (not as a job): an erasure's last step.
    pub async fn repair_orders(&self, ids: &[Uuid]) -> Result<(), String> {
        self.repair(ids).await
    }

    /// Folds each order again from its whole stream and rewrites its read models.
    /// Divided into shards, the orders of each shard are repaired in a commit of their
    /// own, compare-and-set on that shard's checkpoint, so that each is ordered with the
    /// shard's batches.
    async fn repair(&self, ids: &[Uuid]) -> Result<(), String> {
        let partitions = self.read_side.events().partitions();
        let mut by_shard: std::collections::BTreeMap<u32, Vec<Uuid>> = Default::default();
        for id in ids {
            by_shard
                .entry(ordo_es::partition_of(&id.to_string(), partitions))
                .or_default()
                .push(*id);
        }
        for (shard, ids) in by_shard {
            self.repair_shard(shard, partitions, &ids).await?;
        }
        Ok(())
    }

    /// Repairs `ids` (all of partition `shard`) in one commit that moves no checkpoint.
    async fn repair_shard(&self, shard: u32, partitions: u32, ids: &[Uuid]) -> Result<(), String> {
        let shard_key = ordo_domain::read_store::shard_key(OrderProjection::NAME, shard);
        for _attempt in 0..100 {
            let store = self.read_side.store();
            // The key whose compare-and-set orders this repair with the live batches:
            // the shard's checkpoint; the whole-log one where the work is not divided
            // into shards (no shard has a checkpoint). A shard that has not started
            // yet (its holder stopped before, or none runs) gets its row first, where
            // its runner would start it, so that its first batch is ordered with this.
            let mut keys = vec![OrderProjection::NAME.to_owned()];
            keys.extend(
                (0..partitions)
                    .map(|p| ordo_domain::read_store::shard_key(OrderProjection::NAME, p)),
            );
            let stored = store
                .load_checkpoints(&keys)
                .await
                .map_err(|e| e.to_string())?;
            let sharded = stored[1..].iter().any(Option::is_some);
            let (key, checkpoint) = match &stored[1 + shard as usize] {
                Some(checkpoint) => (shard_key.as_str(), checkpoint.clone()),
                None if !sharded => (
                    OrderProjection::NAME,
                    stored[0]
                        .clone()
                        .unwrap_or_else(|| Checkpoint::origin(partitions)),
                ),
                None => {
                    let seed = crate::projection::shard_seed(stored[0].as_ref(), shard, partitions);
                    match store
                        .commit(
                            &shard_key,
                            Arc::new(ordo_domain::ReadModelBatch::default()),
                            &Checkpoint::origin(partitions),
                            &seed,
                        )
                        .await
                    {
                        // Seeded here, or by the shard's runner meanwhile: read again.
                        Ok(()) | Err(ReadStoreError::CheckpointMoved) => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            };
            let views = store.load_views(ids).await.map_err(|e| e.to_string())?;
            let mut targets = Vec::with_capacity(ids.len());
            for id in ids {
                let state = self
                    .service
                    .current_view_state(*id)
                    .await
                    .map_err(|e: HistoryError| e.to_string())?;
                targets.push((*id, state));
            }
            let batch = ordo_domain::ReadModelBatch::repair(&views, targets);
            // The revision moves, the cursors do not: a live batch folded from the
            // views before this repair fails its compare-and-set and is folded again
            // from the repaired views, instead of counting the same change twice.
            match store
                .commit(key, batch.into(), &checkpoint, &checkpoint.revised())
                .await
            {
                Ok(()) => return Ok(()),
                Err(ReadStoreError::CheckpointMoved) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the live projection kept moving; the repair could not commit".into())
    }
}
