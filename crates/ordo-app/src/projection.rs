//! The projection that keeps the order read models current: it folds each batch of
//! events ([`ReadModelBatch::fold`]) and commits it with its checkpoint, pipelining the
//! commits while a generation is bulk-loaded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use uuid::Uuid;

use ordo_domain::read_store::{order_id_of, shard_key};
use ordo_domain::{Order, ParkedEvent, ReadModelBatch, ReadModelWriter, ReadStoreError, ViewState};
use ordo_es::{Checkpoint, Lease, Position, Projection, ProjectionError, RecordedEvent};

/// The projection that keeps every order read model current: order view, summary, top
/// customers and search.
///
/// Each batch is folded over the stored states and committed with its checkpoint before
/// `apply_batch` returns, so a published checkpoint is always readable. Between
/// [`begin_bulk`](Self::begin_bulk) and [`finish_bulk`](Self::finish_bulk) (a generation
/// that serves no queries being rebuilt) the commits are pipelined instead: batch N+1 is
/// loaded and folded while batch N commits, taking the states of orders batch N touched
/// from batch N itself, and `apply_batch` returns once its batch's commit has started.
#[derive(Debug)]
pub struct OrderProjection {
    /// The projection writes through the writer's side of the contract only.
    store: Arc<dyn ReadModelWriter>,
    /// The key of its checkpoint: [`NAME`](Self::NAME), or a shard's key.
    key: String,
    /// For a shard: which one, of how many partitions, and the lease every write is
    /// fenced by.
    shard: Option<Shard>,
    /// Taken for each call into the store, when set: the shards of one process share a
    /// few, so that they hold a few database connections at once, not one each.
    permits: Option<Arc<tokio::sync::Semaphore>>,
    mode: tokio::sync::Mutex<Mode>,
    /// Where the events of every committed batch are counted, if anywhere.
    committed: OnceLock<Arc<AtomicU64>>,
}

#[derive(Debug)]
enum Mode {
    /// Every batch committed before `apply_batch` returns.
    Committed,
    /// Bulk load: the last batch may still be committing.
    Pipelined(Option<InFlight>),
}

impl Mode {
    /// Waits for the commit in flight, if any. The commit stays in place while it is
    /// awaited, so a caller cancelled meanwhile leaves it for the next one to wait for.
    /// After a failed commit the rest of the load is committed batch by batch: the
    /// failure of a batch that keeps failing then reaches the runner as that batch's
    /// own (retried, then its events applied one by one and the bad one parked), and
    /// no checkpoint is published ahead of the stored one again.
    async fn settle(&mut self) -> Result<(), ReadStoreError> {
        let Mode::Pipelined(Some(in_flight)) = self else {
            return Ok(());
        };
        let result = match (&mut in_flight.commit).await {
            Ok(result) => result,
            Err(e) => Err(ReadStoreError::Other(Box::new(e))),
        };
        *self = match result {
            Ok(()) => Mode::Pipelined(None),
            Err(_) => Mode::Committed,
        };
        result
    }
}

/// What a projection of one shard writes under.
#[derive(Debug)]
struct Shard {
    shard: u32,
    partitions: u32,
    lease: Lease,
}

/// A batch whose commit is running.
#[derive(Debug)]
struct InFlight {
    batch: Arc<ReadModelBatch>,
    /// Where each touched order's state is in `batch.views`.
    index: HashMap<Uuid, usize>,
    commit: tokio::task::JoinHandle<Result<(), ReadStoreError>>,
}

impl InFlight {
    fn view(&self, id: &Uuid) -> Option<&ViewState> {
        self.index.get(id).map(|&i| &self.batch.views[i].1)
    }
}

impl OrderProjection {
    pub const NAME: &'static str = "orders";

    pub fn new(store: Arc<dyn ReadModelWriter>) -> Self {
        Self {
            store,
            key: Self::NAME.to_owned(),
            shard: None,
            permits: None,
            mode: tokio::sync::Mutex::new(Mode::Committed),
            committed: OnceLock::new(),
        }
    }

    /// The projection of shard `shard` (the log's partition of that number, of
    /// `partitions`): its checkpoint is stored under [`shard_key`], and every write is
    /// fenced by `lease`. A shard that has no checkpoint of its own yet starts where the
    /// projection's whole-log checkpoint (a rebuild's, or one written before the work was
    /// divided into shards) had got in its partition.
    pub fn shard(
        store: Arc<dyn ReadModelWriter>,
        shard: u32,
        partitions: u32,
        lease: Lease,
    ) -> Self {
        Self {
            key: shard_key(Self::NAME, shard),
            shard: Some(Shard {
                shard,
                partitions,
                lease,
            }),
            ..Self::new(store)
        }
    }

    /// Each call into the store first takes one of `permits`.
    pub fn sharing(mut self, permits: Arc<tokio::sync::Semaphore>) -> Self {
        self.permits = Some(permits);
        self
    }

    async fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.permits {
            Some(permits) => Arc::clone(permits).acquire_owned().await.ok(),
            None => None,
        }
    }

    fn fence(&self) -> Option<&Lease> {
        self.shard.as_ref().map(|s| &s.lease)
    }

    /// A shard without a checkpoint of its own: the cursor the whole-log checkpoint
    /// reached in its partition, stored as the shard's (fenced, by compare-and-set from
    /// nothing), so that the shard goes on from there. `None` when there is nothing to
    /// start from.
    async fn seed(&self, shard: &Shard) -> Result<Option<Checkpoint>, ProjectionError> {
        let whole = self.store.load_checkpoint(Self::NAME).await?;
        let seed = shard_seed(whole.as_ref(), shard.shard, shard.partitions);
        if seed == Checkpoint::origin(shard.partitions) {
            return Ok(None);
        }
        let origin = Checkpoint::origin(shard.partitions);
        match self
            .store
            .commit_fenced(
                &self.key,
                Arc::new(ReadModelBatch::default()),
                &origin,
                &seed,
                self.fence(),
            )
            .await
        {
            Ok(()) => Ok(Some(seed)),
            // Seeded by a holder before us: go on from what it stored.
            Err(ReadStoreError::CheckpointMoved) => {
                Ok(self.store.load_checkpoint(&self.key).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Counts into `counter` the events of every batch this projection commits from now
    /// on (a pipelined batch once its commit has succeeded; parked events are not
    /// counted): the process's `ordo_projection_events_applied_total`. The first counter
    /// given stays.
    pub fn count_commits_into(&self, counter: Arc<AtomicU64>) {
        let _ = self.committed.set(counter);
    }

    fn counted(counter: Option<&Arc<AtomicU64>>, events: usize) {
        if let Some(counter) = counter {
            counter.fetch_add(events as u64, Ordering::Relaxed);
        }
    }

    /// Waits for a pipelined commit still running, if any.
    async fn settle_in_flight(&self) -> Result<(), ProjectionError> {
        self.mode
            .lock()
            .await
            .settle()
            .await
            .map_err(earlier_commit_failed)
    }

    /// Puts the (empty, query-free) store in bulk mode and pipelines the commits: see
    /// the type's docs and [`ReadModelWriter::begin_bulk`].
    pub async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        let mut mode = self.mode.lock().await;
        self.store.begin_bulk().await?;
        *mode = Mode::Pipelined(None);
        Ok(())
    }

    /// Waits for the last pipelined commit, then has the store build what the bulk load
    /// deferred; from then on every batch is committed before `apply_batch` returns.
    /// When the last commit failed, the error is returned: the checkpoint the runner
    /// published past the stored one was never committed, and the generation must not
    /// be used as it is.
    pub async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        let mut mode = self.mode.lock().await;
        mode.settle().await?;
        self.store.finish_bulk().await?;
        *mode = Mode::Committed;
        Ok(())
    }
}

/// A pipelined commit of an earlier batch failed: not the current batch's failure, so
/// the runner must reload the stored checkpoint and go again from there, not retry or
/// park the current batch's events.
fn earlier_commit_failed(e: ReadStoreError) -> ProjectionError {
    match e {
        ReadStoreError::CheckpointMoved => ProjectionError::CheckpointMoved,
        lost @ ReadStoreError::LeaseLost { .. } => ProjectionError::LeaseLost(lost.to_string()),
        other => ProjectionError::Unavailable(Box::new(other)),
    }
}

#[async_trait]
impl Projection for OrderProjection {
    fn name(&self) -> &str {
        &self.key
    }

    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
        self.settle_in_flight().await?;
        let _permit = self.permit().await;
        let stored = self.store.load_checkpoint(&self.key).await?;
        match (&stored, &self.shard) {
            (None, Some(shard)) => self.seed(shard).await,
            _ => Ok(stored),
        }
    }

    async fn apply_batch(
        &self,
        events: &[RecordedEvent],
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        let mut ids: Vec<Uuid> = Vec::new();
        let mut seen = HashSet::new();
        for envelope in events {
            if envelope.aggregate_type == <Order as ordo_es::Aggregate>::TYPE {
                let id = order_id_of(envelope)?;
                if seen.insert(id) {
                    ids.push(id);
                }
            }
        }
        let mut mode = self.mode.lock().await;
        let Mode::Pipelined(previous) = &*mode else {
            let _permit = self.permit().await;
            let states = self.store.load_views(&ids).await?;
            let batch = ReadModelBatch::fold(events, states)?;
            self.store
                .commit_fenced(&self.key, batch.into(), from, to, self.fence())
                .await?;
            Self::counted(self.committed.get(), events.len());
            return Ok(());
        };
        // The orders the previous batch touched are taken from it (its commit may not
        // be visible yet); the others are stored as of the batch before it, which has
        // committed.
        let folded = async {
            let mut states = HashMap::with_capacity(ids.len());
            let mut stored = Vec::with_capacity(ids.len());
            for id in ids {
                match previous.as_ref().and_then(|p| p.view(&id)) {
                    Some(state) => {
                        states.insert(id, state.clone());
                    }
                    None => stored.push(id),
                }
            }
            states.extend(self.store.load_views(&stored).await?);
            ReadModelBatch::fold(events, states)
        }
        .await;
        // This batch's commit moves the checkpoint from where the previous one moved it.
        mode.settle().await.map_err(earlier_commit_failed)?;
        let batch = Arc::new(folded?);
        let index = batch
            .views
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        let store = Arc::clone(&self.store);
        let (key, fence) = (self.key.clone(), self.fence().cloned());
        let (committing, from, to) = (Arc::clone(&batch), from.clone(), to.clone());
        let (counter, count) = (self.committed.get().cloned(), events.len());
        let commit = tokio::spawn(async move {
            store
                .commit_fenced(&key, committing, &from, &to, fence.as_ref())
                .await?;
            Self::counted(counter.as_ref(), count);
            Ok(())
        });
        *mode = Mode::Pipelined(Some(InFlight {
            batch,
            index,
            commit,
        }));
        Ok(())
    }

    async fn park(
        &self,
        event: &RecordedEvent,
        error: &str,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        let parked = ParkedEvent {
            position: event.position.to_string(),
            event_id: event.event_id,
            stream_id: event.stream_id.to_string(),
            version: event.version,
            event_type: event.event_type.clone(),
            error: error.chars().take(2_000).collect(),
            parked_at: ordo_es::now_micros(),
        };
        // Parking moves the checkpoint from `from`, where the last commit moves it.
        self.settle_in_flight().await?;
        let _permit = self.permit().await;
        self.store
            .park_fenced(&self.key, parked, from, to, self.fence())
            .await?;
        Ok(())
    }
    async fn flush(&self) -> Result<(), ProjectionError> {
        self.settle_in_flight().await
    }
}

pub use ordo_domain::read_store::cursor_in;

/// Where shard `shard` (of `partitions`) starts when it has no checkpoint of its own:
/// what the whole-log checkpoint `whole` reached in its partition (the origin without
/// one), as a checkpoint of the whole log moved in that partition only.
pub fn shard_seed(whole: Option<&Checkpoint>, shard: u32, partitions: u32) -> Checkpoint {
    let mut seed = Checkpoint::origin(partitions);
    if let Some(whole) = whole {
        seed.advance(&Position {
            partition: shard,
            cursor: cursor_in(whole, shard, partitions),
        });
    }
    seed
}

/// What the projection has stored in `store` over the whole log of `partitions`, every
/// shard's checkpoint included (see [`ordo_domain::read_store::stored_projection_checkpoint`]).
pub async fn stored_checkpoint(
    store: &dyn ReadModelWriter,
    partitions: u32,
) -> Result<Option<Checkpoint>, ReadStoreError> {
    ordo_domain::read_store::stored_projection_checkpoint(
        store,
        OrderProjection::NAME,
        Some(partitions),
    )
    .await
}
