//! The projection divided into shards (the event log's partitions) over every process
//! that projects into the same read models. Each shard is projected by the one process
//! holding its lease: this process heartbeats, computes the same even plan as every other
//! ([`ordo_es::lease::assign`]), gives up the shards the plan moves elsewhere, takes the ones it
//! is given when they are free, and runs one runner per shard it holds, each reading its
//! own partition and committing under its lease's fence. A runner whose lease was taken
//! over stops at its next commit (the read store refuses it) and is dropped here.
//!
//! The status this publishes covers the whole log: the checkpoint of each shard held
//! here as its runner publishes it (so a consistency token waits no longer than the
//! commit), and of every other shard as stored by its holder, read often while a request
//! waits and about once a second otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use ordo_es::{
    Checkpoint, EventStore, Lease, LeaseStore, Position, ProjectionHandle, ProjectionRunner,
    ProjectionState, ProjectionStatus,
};

use super::runner::{Runners, Running};
use crate::projection::{OrderProjection, stored_checkpoint};
use ordo_domain::read_store::ReadGeneration;

/// How often the stored checkpoints are read while a request waits for a consistency
/// token (as often as the PostgreSQL event store looks for other processes' appends).
const READ_WHILE_WAITED_FOR: Duration = Duration::from_millis(25);
/// How often they are read otherwise.
const READ_EVERY: Duration = Duration::from_secs(1);
/// How many of this process's shards read the log or write the read models at once:
/// each such call holds a database connection, and a process may hold every shard.
const SHARDS_AT_ONCE: usize = 4;
/// How long a projector waits after its first heartbeat before it plans.
const SETTLE_AT_START: Duration = Duration::from_millis(500);

/// How a process takes part in the division of the projection into shards.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// Where the leases live (beside the read models they guard).
    pub leases: Arc<dyn LeaseStore>,
    /// This process's projector id: names one process start (a restarted process must
    /// not inherit the leases, and fencing tokens, of the one before it).
    pub owner: String,
    /// A lease not renewed within this is taken over; renewed every third of it.
    pub ttl: Duration,
}

impl ShardOptions {
    /// A projector id for this process start: the host name, the process id and a
    /// random part.
    pub fn owner_id() -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        // The last hex digits of a v7 UUID are random.
        let random = uuid::Uuid::now_v7().simple().to_string();
        format!(
            "{host}-{}-{}",
            std::process::id(),
            &random[random.len() - 8..]
        )
    }
}

/// Requests waiting for a consistency token: while any does, what other processes
/// stored is read often.
#[derive(Debug, Default)]
pub(super) struct Demand {
    waiting: AtomicUsize,
    /// Rung when a request starts waiting for a position not yet published.
    wake: Notify,
}

/// A request waiting for a consistency token.
pub(super) struct Waiting<'a>(&'a Demand);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Demand {
    /// Counts a request waiting; `covered`: whether what is published covers its token
    /// already (when not, the stored checkpoints are read at once).
    pub(super) fn waiting(&self, covered: bool) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if !covered {
            self.wake.notify_one();
        }
        Waiting(self)
    }

    pub(super) fn waited_for(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// What a process's shard managers share with the read side: the shards held now (the
/// metric `ordo_projection_shards_owned`) and the requests waiting.
#[derive(Debug, Default)]
pub struct ShardGauge {
    pub(super) owned: AtomicU64,
    pub(super) demand: Demand,
    /// Set once the read models held what the log held when this process's shards
    /// started (in any generation): a shard taken over later, or the shards started on
    /// a rebuilt generation, catch up their few events without the whole projection
    /// counting as catching up again (which `/ready` would report as not ready at
    /// every move).
    pub(super) caught_up_once: std::sync::atomic::AtomicBool,
}

impl ShardGauge {
    /// The shards this process holds now.
    pub fn owned(&self) -> u64 {
        self.owned.load(Ordering::Relaxed)
    }
}

/// What the runners a manager stopped had applied and parked.
#[derive(Debug, Default)]
struct Ended {
    applied: AtomicU64,
    parked: AtomicU64,
}

/// One shard held here: its lease and its runner.
struct Held {
    lease: Lease,
    running: Running,
    /// Wakes the manager when the runner publishes.
    forward: JoinHandle<()>,
}

/// Runs the shards of `generation` that this process holds, for as long as it runs.
pub(super) fn start_shards(
    events: &Arc<dyn EventStore>,
    generation: ReadGeneration,
    runners: &Runners,
    options: &ShardOptions,
) -> Running {
    let partitions = events.partitions();
    let mut first = ProjectionStatus::starting(OrderProjection::NAME);
    first.state = ProjectionState::Starting;
    let (status, handle) = {
        let (tx, rx) = watch::channel(first);
        (tx, ProjectionHandle::from_status(rx))
    };
    let (stop, stopped) = watch::channel(false);
    let manager = Manager {
        events: Arc::clone(events),
        generation: generation.clone(),
        runners: runners.clone(),
        options: options.clone(),
        partitions,
        status,
        held: BTreeMap::new(),
        stored: None,
        ended: Arc::default(),
        stopping: tokio::task::JoinSet::new(),
        changed: Arc::new(Notify::new()),
        permits: Arc::new(tokio::sync::Semaphore::new(SHARDS_AT_ONCE)),
        start_head: None,
    };
    let task = tokio::spawn(manager.run(stopped));
    Running::managed(generation, handle, stop, task)
}

struct Manager {
    events: Arc<dyn EventStore>,
    generation: ReadGeneration,
    runners: Runners,
    options: ShardOptions,
    partitions: u32,
    /// The status of the whole projection, as this process sees it.
    status: watch::Sender<ProjectionStatus>,
    held: BTreeMap<u32, Held>,
    /// What every shard's holder has stored, last read.
    stored: Option<Checkpoint>,
    /// Events applied and parked by runners of this manager that have ended.
    ended: Arc<Ended>,
    /// Shards given up, stopping in the background.
    stopping: tokio::task::JoinSet<()>,
    /// Rung by every runner here when it publishes.
    changed: Arc<Notify>,
    /// Shared by the shards' reads of the log and writes to the read models.
    permits: Arc<tokio::sync::Semaphore>,
    /// The log's head when this started (`None` until read): the read models have
    /// caught up once they hold it.
    start_head: Option<Checkpoint>,
}

impl Manager {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let round_every = (self.options.ttl / 3).max(Duration::from_millis(100));
        // The first heartbeat alone, then a short pause: projectors started together
        // see each other before planning, instead of the first taking every shard and
        // handing them over one round later.
        self.heartbeat_only().await;
        self.read_start_head().await;
        let mut next_round = tokio::time::Instant::now() + round_every.min(SETTLE_AT_START);
        let mut next_read = tokio::time::Instant::now();
        let gauge = Arc::clone(&self.runners.shards_gauge);
        let changed = Arc::clone(&self.changed);
        loop {
            let read_pause = if gauge.demand.waited_for() {
                READ_WHILE_WAITED_FOR
            } else {
                READ_EVERY
            };
            tokio::select! {
                _ = async { stopped.wait_for(|s| *s).await.is_ok() } => break,
                () = tokio::time::sleep_until(next_round) => {
                    self.round().await;
                    next_round = tokio::time::Instant::now() + round_every;
                }
                () = tokio::time::sleep_until(next_read.min(tokio::time::Instant::now() + read_pause)) => {
                    self.read_stored().await;
                    next_read = tokio::time::Instant::now() + READ_EVERY;
                }
                () = gauge.demand.woken() => self.read_stored().await,
                () = changed.notified() => {}
            }
            while self.stopping.try_join_next().is_some() {}
            if self.start_head.is_none() {
                self.read_start_head().await;
            }
            self.publish();
        }
        self.stop_all().await;
    }

    /// Reads the log's head, retried at every publish until it answers.
    async fn read_start_head(&mut self) {
        if self.start_head.is_some()
            || self
                .runners
                .shards_gauge
                .caught_up_once
                .load(Ordering::Relaxed)
        {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.events.head()).await {
            Ok(Ok(head)) => self.start_head = Some(head),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the head of the event log yet"),
            Err(_) => tracing::debug!("reading the head of the event log took over 5 s"),
        }
    }

    async fn heartbeat_only(&self) {
        let bound = (self.options.ttl / 3).max(Duration::from_millis(100));
        let beat = self.options.leases.heartbeat(
            OrderProjection::NAME,
            &self.options.owner,
            self.options.ttl,
        );
        match tokio::time::timeout(bound, beat).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot send this projector's first heartbeat")
            }
            Err(_) => tracing::warn!(
                "this projector's first heartbeat took longer than a third of the lease time"
            ),
        }
    }

    /// One lease round: heartbeat and renew first (a slow step later in the round must
    /// not let this process's own leases lapse), then plan, give up, take. Every call to
    /// the lease store is bounded by a third of the lease time; a shard given up is
    /// stopped and released in the background.
    async fn round(&mut self) {
        let leases = Arc::clone(&self.options.leases);
        let me = self.options.owner.clone();
        let ttl = self.options.ttl;
        let bound = (ttl / 3).max(Duration::from_millis(100));
        let name = OrderProjection::NAME;
        let bounded = |what: &'static str| {
            move |e: tokio::time::error::Elapsed| -> ordo_es::LeaseError {
                ordo_es::LeaseError::Unavailable(format!("{what} took longer than {e}").into())
            }
        };
        // Runners fenced off since the last round: their lease is gone.
        let fenced: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.running.handle.status().state == ProjectionState::Fenced)
            .map(|(s, _)| *s)
            .collect();
        for shard in fenced {
            tracing::warn!(
                shard,
                "shard lost: a commit was refused because another projector holds its lease now (this process was paused or cut off past the lease time)"
            );
            self.drop_shard(shard, false);
        }
        let members = match tokio::time::timeout(bound, leases.heartbeat(name, &me, ttl))
            .await
            .map_err(bounded("the heartbeat"))
            .and_then(|r| r)
        {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew this projector's heartbeat; keeping the shards held until their leases are taken");
                return;
            }
        };
        let renewing: Vec<u32> = self.held.keys().copied().collect();
        for shard in renewing {
            let Some(lease) = self.held.get(&shard).map(|h| h.lease.clone()) else {
                continue;
            };
            match tokio::time::timeout(bound, leases.renew(&lease, ttl))
                .await
                .map_err(bounded("renewing a lease"))
                .and_then(|r| r)
            {
                Ok(Some(renewed)) => {
                    if let Some(h) = self.held.get_mut(&shard) {
                        h.lease = renewed;
                    }
                }
                Ok(None) => {
                    tracing::warn!(
                        shard,
                        "shard lost: its lease was taken over before it was renewed (this process was paused or cut off past the lease time)"
                    );
                    self.drop_shard(shard, false);
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "cannot renew a shard's lease; its runner goes on until another projector takes it");
                }
            }
        }
        let current = match tokio::time::timeout(bound, leases.leases(name))
            .await
            .map_err(bounded("reading the leases"))
            .and_then(|r| r)
        {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shard leases");
                return;
            }
        };
        let held: Vec<(u32, String)> = current
            .iter()
            .filter(|l| !l.owner.is_empty() && members.contains(&l.owner))
            .map(|l| (l.shard, l.owner.clone()))
            .collect();
        let plan = ordo_es::lease::assign(self.partitions, &members, &held);
        let mine: BTreeSet<u32> = plan
            .iter()
            .find(|(m, _)| *m == me)
            .map(|(_, shards)| shards.iter().copied().collect())
            .unwrap_or_default();
        let moving: Vec<u32> = self
            .held
            .keys()
            .filter(|s| !mine.contains(s))
            .copied()
            .collect();
        for shard in moving {
            let to = plan
                .iter()
                .find(|(_, shards)| shards.contains(&shard))
                .map_or("nobody", |(m, _)| m.as_str());
            tracing::info!(
                shard,
                to,
                projectors = members.len(),
                "giving up a shard: the shards are spread evenly over the live projectors"
            );
            self.drop_shard(shard, true);
        }
        for shard in mine {
            if self.held.contains_key(&shard) {
                continue;
            }
            match tokio::time::timeout(bound, leases.acquire(name, shard, &me, ttl))
                .await
                .map_err(bounded("taking a lease"))
                .and_then(|r| r)
            {
                Ok(Some(lease)) => {
                    // The holder the round began with: a lease it still had then lapsed
                    // since (a released one has no owner).
                    let why = match current
                        .iter()
                        .find(|l| l.shard == shard && !l.owner.is_empty())
                    {
                        None => "free".to_owned(),
                        Some(l) if l.owner == me => "held by this process before".to_owned(),
                        Some(l) => format!("the lease of {} lapsed", l.owner),
                    };
                    tracing::info!(shard, token = lease.token, reason = %why, "took a shard");
                    self.take_shard(shard, lease);
                }
                Ok(None) => {} // its holder gives it up at its next round
                Err(e) => tracing::warn!(shard, error = %e, "cannot take a shard's lease"),
            }
        }
        self.runners
            .shards_gauge
            .owned
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    fn take_shard(&mut self, shard: u32, lease: Lease) {
        let projection = Arc::new(
            OrderProjection::shard(
                self.generation.store.clone(),
                shard,
                self.partitions,
                lease.clone(),
            )
            .sharing(Arc::clone(&self.permits)),
        );
        projection.count_commits_into(Arc::clone(&self.runners.committed));
        // A process may hold every shard: their catch-up batches (each read ahead while
        // the one before commits) share the memory one runner over the whole log has.
        let mut config = self.runners.config.clone();
        config.catch_up_batch_size =
            (config.catch_up_batch_size / SHARDS_AT_ONCE).max(config.batch_size);
        let runner = ProjectionRunner::for_partition(
            Arc::clone(&self.events),
            shard,
            Some(Arc::clone(&self.permits)),
            Arc::clone(&projection) as Arc<dyn ordo_es::Projection>,
            config,
        );
        let running = super::runner::spawn_runner(
            runner,
            self.generation.clone(),
            Some(projection),
            &self.runners,
        );
        let mut watching = running.handle.clone();
        let changed = Arc::clone(&self.changed);
        let forward = tokio::spawn(async move {
            while watching.changed().await {
                changed.notify_one();
            }
        });
        self.held.insert(
            shard,
            Held {
                lease,
                running,
                forward,
            },
        );
    }

    /// Stops the runner of `shard` in the background (it finishes the batch it is
    /// writing) and then, when `release`, gives the lease up so that its next holder can
    /// take it at once. The shard is no longer held here from now on.
    fn drop_shard(&mut self, shard: u32, release: bool) {
        let Some(held) = self.held.remove(&shard) else {
            return;
        };
        held.forward.abort();
        let leases = Arc::clone(&self.options.leases);
        let ended = Arc::clone(&self.ended);
        let changed = Arc::clone(&self.changed);
        self.stopping.spawn(async move {
            let (_, handle) = held.running.stop().await;
            let last = handle.status();
            ended.applied.fetch_add(last.events_applied, Ordering::Relaxed);
            ended.parked.fetch_add(last.events_parked, Ordering::Relaxed);
            if release && let Err(e) = leases.release(&held.lease).await {
                tracing::warn!(shard, error = %e, "cannot release a shard's lease; it is taken once it lapses");
            }
            changed.notify_one();
        });
        self.runners
            .shards_gauge
            .owned
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// What a runner of `shard` reached, kept as stored once it stopped.
    fn note_stored(&mut self, shard: u32, checkpoint: &Checkpoint) {
        let stored = self
            .stored
            .get_or_insert_with(|| Checkpoint::origin(self.partitions));
        stored.advance(&Position {
            partition: shard,
            cursor: checkpoint.cursor(shard),
        });
    }

    async fn read_stored(&mut self) {
        match stored_checkpoint(self.generation.store.as_ref(), self.partitions).await {
            Ok(Some(stored)) => {
                // Never backwards: a runner here may have published past what a read
                // that started before its commit found.
                let merged = self.stored.get_or_insert_with(|| stored.clone());
                for (partition, cursor) in stored.cursors().iter().enumerate() {
                    merged.advance(&Position {
                        partition: partition as u32,
                        cursor: *cursor,
                    });
                }
            }
            Ok(None) => {
                self.stored
                    .get_or_insert_with(|| Checkpoint::origin(self.partitions));
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the shards' stored checkpoints");
            }
        }
    }

    /// The whole projection's status: the shards held here as their runners report them,
    /// the others as stored.
    fn publish(&self) {
        let mut checkpoint = self.stored.clone();
        let mut state = ProjectionState::Running;
        let mut last_error = None;
        let mut last_event_at = None;
        let (mut applied, mut parked, mut restarts) = (
            self.ended.applied.load(Ordering::Relaxed),
            self.ended.parked.load(Ordering::Relaxed),
            0,
        );
        let mut log_checked = true;
        for (shard, held) in &self.held {
            let s = held.running.handle.status();
            applied += s.events_applied;
            parked += s.events_parked;
            restarts += s.restarts;
            last_event_at = last_event_at.max(s.last_event_at);
            log_checked &= s.log_checked.is_some();
            if let Some(c) = &s.checkpoint {
                checkpoint
                    .get_or_insert_with(|| Checkpoint::origin(self.partitions))
                    .advance(&Position {
                        partition: *shard,
                        cursor: c.cursor(*shard),
                    });
            }
            let rank = |st: &ProjectionState| match st {
                ProjectionState::Halted => 5,
                ProjectionState::Failing => 4,
                ProjectionState::Starting => 3,
                ProjectionState::CatchingUp => 2,
                ProjectionState::Fenced | ProjectionState::Running => 1,
                ProjectionState::Stopped => 0,
            };
            if rank(&s.state) > rank(&state) {
                state = s.state.clone();
            }
            if last_error.is_none() {
                last_error = s.last_error.clone();
            }
        }
        if checkpoint.is_none() && state == ProjectionState::Running {
            state = ProjectionState::Starting;
        }
        // Catching up, as one runner over the whole log would be, until the read models
        // (every shard, wherever it is projected) hold what the log held when this
        // started; from then on a shard moving here catches up its few events without
        // the whole projection counting as catching up again (which `/ready` would
        // report as not ready at every move).
        let caught_up_once = &self.runners.shards_gauge.caught_up_once;
        if !caught_up_once.load(Ordering::Relaxed) {
            let reached = match (&checkpoint, &self.start_head) {
                (Some(c), Some(head)) => c.is_at_or_past(head),
                _ => false,
            };
            if reached && state == ProjectionState::Running {
                caught_up_once.store(true, Ordering::Relaxed);
            } else if matches!(state, ProjectionState::Running) && checkpoint.is_some() {
                state = ProjectionState::CatchingUp;
            }
        } else if state == ProjectionState::CatchingUp {
            state = ProjectionState::Running;
        }
        self.status.send_if_modified(|s| {
            let next = ProjectionStatus {
                name: OrderProjection::NAME.to_owned(),
                state: state.clone(),
                log_checked: if log_checked {
                    checkpoint.clone()
                } else {
                    None
                },
                checkpoint: checkpoint.clone(),
                last_event_at: last_event_at.or(s.last_event_at),
                last_error: last_error.clone(),
                events_applied: applied,
                events_parked: parked,
                restarts,
            };
            let changed = next.state != s.state
                || next.checkpoint != s.checkpoint
                || next.events_applied != s.events_applied
                || next.events_parked != s.events_parked
                || next.last_error != s.last_error
                || next.restarts != s.restarts;
            *s = next;
            changed
        });
    }

    /// Stops every runner here (each finishes the batch it is writing) and releases
    /// their leases, so that the other projectors take the shards at once.
    async fn stop_all(mut self) {
        let shards: Vec<u32> = self.held.keys().copied().collect();
        let held: Vec<(u32, Held)> = shards
            .into_iter()
            .filter_map(|s| self.held.remove(&s).map(|h| (s, h)))
            .collect();
        let mut stops = tokio::task::JoinSet::new();
        for (shard, h) in held {
            h.forward.abort();
            stops.spawn(async move {
                let (_, handle) = h.running.stop().await;
                (shard, h.lease, handle.status())
            });
        }
        // Those given up before, first: nothing of this manager writes after it ends.
        while self.stopping.join_next().await.is_some() {}
        let mut stopped = Vec::new();
        while let Some(done) = stops.join_next().await {
            match done {
                Ok(done) => stopped.push(done),
                Err(e) => tracing::error!(error = %e, "stopping a shard's runner failed"),
            }
        }
        for (shard, lease, last) in stopped {
            self.ended
                .applied
                .fetch_add(last.events_applied, Ordering::Relaxed);
            self.ended
                .parked
                .fetch_add(last.events_parked, Ordering::Relaxed);
            if let Some(c) = &last.checkpoint {
                self.note_stored(shard, c);
            }
            if let Err(e) = self.options.leases.release(&lease).await {
                tracing::warn!(shard, error = %e, "cannot release a shard's lease; it is taken once it lapses");
            }
        }
        self.runners.shards_gauge.owned.store(0, Ordering::Relaxed);
        self.publish();
        self.status
            .send_modify(|s| s.state = ProjectionState::Stopped);
    }
}

/// One shard of the projection as `GET /api/v1/admin/projections` and `ordo status`
/// show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardReport {
    /// The shard's number: the event log's partition it projects.
    pub shard: u32,
    /// The projector holding its lease; `None` when it never had one or it was released.
    pub owner: Option<String>,
    /// Whether that projector is this process.
    pub here: bool,
    /// The lease's fencing token.
    pub token: Option<u64>,
    /// When the lease lapses unless renewed (the lease store's clock).
    pub lease_expires_at: Option<time::OffsetDateTime>,
    /// How far the shard's read models have got: the position of the last event applied
    /// in its partition (an opaque token); `None` before the first.
    pub position: Option<String>,
    /// Events of its partition not applied yet; `None` when the event store did not
    /// answer.
    pub events_behind: Option<u64>,
}

/// The report of every shard, from the leases, the checkpoints stored in `store` and the
/// log.
pub(super) async fn report(
    events: &dyn EventStore,
    store: &dyn ordo_domain::ReadModelWriter,
    options: &ShardOptions,
) -> Result<Vec<ShardReport>, ordo_domain::ReadStoreError> {
    let partitions = events.partitions();
    let leases = options
        .leases
        .leases(OrderProjection::NAME)
        .await
        .map_err(|e| ordo_domain::ReadStoreError::Unavailable(Box::new(e)))?;
    let stored = stored_checkpoint(store, partitions).await?;
    Ok(shard_reports(
        Some(events),
        &leases,
        stored.as_ref(),
        partitions,
        Some(&options.owner),
    )
    .await)
}

/// Each shard of a log of `partitions`, from its `leases` and the checkpoint `stored`
/// over every shard; its backlog counted in `events` (`None` where there is no event
/// store or it does not answer). `here`: this process's projector id, if it has one.
/// What the admin report and `ordo status` show.
pub async fn shard_reports(
    events: Option<&dyn EventStore>,
    leases: &[Lease],
    stored: Option<&Checkpoint>,
    partitions: u32,
    here: Option<&str>,
) -> Vec<ShardReport> {
    let mut out = Vec::with_capacity(partitions as usize);
    for shard in 0..partitions {
        let lease = leases
            .iter()
            .find(|l| l.shard == shard && !l.owner.is_empty());
        let cursor = stored.map_or(ordo_es::Cursor::ORIGIN, |c| c.cursor(shard));
        let behind = match events {
            Some(events) => events
                .count_after(&Checkpoint::only(shard, cursor, partitions))
                .await
                .ok(),
            None => None,
        };
        out.push(ShardReport {
            shard,
            owner: lease.map(|l| l.owner.clone()),
            here: lease.is_some_and(|l| Some(l.owner.as_str()) == here),
            token: lease.map(|l| l.token),
            lease_expires_at: lease.map(|l| l.expires_at),
            position: (cursor != ordo_es::Cursor::ORIGIN).then(|| {
                Position {
                    partition: shard,
                    cursor,
                }
                .to_string()
            }),
            events_behind: behind,
        });
    }
    out
}
