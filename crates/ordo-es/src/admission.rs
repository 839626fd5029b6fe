//! Bounded admission: overload is answered, not queued.
//!
//! Every backend queues work it cannot start at once: the SQLite writer's channel, a
//! connection pool's waiters, the multiplexed Redis connection's pipeline, the callers
//! waiting for the read models to reach a position. Left unbounded, a burst past what
//! the backend can serve grows those queues, each waiting caller holds its memory and
//! its connection, and every answer gets slower until the request deadline ends them
//! all. An [`Admission`] is the bound in front of one such queue: at most
//! [`limit`](Admission::limit) callers are inside (served or waiting) at once, and the
//! next one is turned away at once with [`Overloaded`], which the HTTP layer answers
//! with 503 and `Retry-After`.
//!
//! [`GatedEventStore`] and [`GatedSnapshotStore`] put one in front of a whole store, so
//! that the queue inside it (whatever the backend) is bounded by the same number. The
//! counters ([`AdmissionStats`]) are exported as metrics: the number inside now, the
//! most ever inside (which never exceeds the limit), and the callers turned away.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{NewEvent, RecordedEvent, StreamId};
use crate::position::{Checkpoint, Position};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::store::{Appended, EventStore, ExpectedVersion, StoreError};
use uuid::Uuid;

/// A bound on the callers inside one queue (see the module docs).
#[derive(Debug)]
pub struct Admission {
    name: &'static str,
    limit: AtomicUsize,
    inside: AtomicUsize,
    peak: AtomicUsize,
    turned_away: AtomicU64,
}

/// A caller's place inside an [`Admission`], given back when dropped.
#[must_use = "the place is given back when the pass is dropped"]
#[derive(Debug)]
pub struct Pass {
    admission: Arc<Admission>,
}

/// The answer when an [`Admission`] is full. Transient: the caller may retry later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the {queue} queue is full ({limit} operations in flight or waiting)")]
pub struct Overloaded {
    /// The name of the full queue.
    pub queue: &'static str,
    /// Its limit when the caller was turned away.
    pub limit: usize,
}

/// What an [`Admission`] has seen, for the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionStats {
    pub name: &'static str,
    pub limit: usize,
    /// Callers inside now.
    pub inside: usize,
    /// The most callers ever inside at once (at most the largest limit set).
    pub peak: usize,
    /// Callers turned away because the queue was full.
    pub turned_away: u64,
}

impl Admission {
    /// A queue named `name` (a metric label: a fixed, lower-case word) that lets at most
    /// `limit` callers in at once. A limit of 0 is taken as 1: a queue nobody can enter
    /// would refuse all work, which is a misconfiguration rather than a bound.
    pub fn new(name: &'static str, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            limit: AtomicUsize::new(limit.max(1)),
            inside: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            turned_away: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the limit (at start, from the configuration). Callers already inside
    /// stay; a lower limit turns new callers away until enough have left.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    /// Takes a place, or answers [`Overloaded`] at once when the queue is full.
    pub fn enter(self: &Arc<Self>) -> Result<Pass, Overloaded> {
        let limit = self.limit();
        let mut inside = self.inside.load(Ordering::Relaxed);
        loop {
            if inside >= limit {
                self.turned_away.fetch_add(1, Ordering::Relaxed);
                return Err(Overloaded {
                    queue: self.name,
                    limit,
                });
            }
            match self.inside.compare_exchange_weak(
                inside,
                inside + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => inside = now,
            }
        }
        self.peak.fetch_max(inside + 1, Ordering::Relaxed);
        Ok(Pass {
            admission: Arc::clone(self),
        })
    }

    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            name: self.name,
            limit: self.limit(),
            inside: self.inside.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            turned_away: self.turned_away.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.admission.inside.fetch_sub(1, Ordering::AcqRel);
    }
}

impl From<Overloaded> for StoreError {
    fn from(e: Overloaded) -> Self {
        StoreError::Overloaded(e)
    }
}

/// An event store behind an [`Admission`]: appends, stream and log reads, counts and
/// the head each hold a place while they run. `wait_for_events` (a long poll whose
/// callers, the projection runners and the event-stream tail, are few and fixed) and
/// `ping` (readiness must say whether the store is reachable, not whether it is busy)
/// pass straight through.
#[derive(Debug)]
pub struct GatedEventStore {
    inner: Arc<dyn EventStore>,
    admission: Arc<Admission>,
}

impl GatedEventStore {
    pub fn new(inner: Arc<dyn EventStore>, admission: Arc<Admission>) -> Self {
        Self { inner, admission }
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
}

#[async_trait]
impl EventStore for GatedEventStore {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.read_all(after, limit).await
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.count_after(after).await
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.head().await
    }

    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.event_id_at(position).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// A snapshot store behind an [`Admission`] (usually the one of the event store it sits
/// beside: both are the same backend).
pub struct GatedSnapshotStore {
    inner: Arc<dyn SnapshotStore>,
    admission: Arc<Admission>,
}

impl GatedSnapshotStore {
    pub fn new(inner: Arc<dyn SnapshotStore>, admission: Arc<Admission>) -> Self {
        Self { inner, admission }
    }
}

impl fmt::Debug for GatedSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedSnapshotStore")
            .field("admission", &self.admission.name())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SnapshotStore for GatedSnapshotStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.load_snapshot(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.save_snapshot(snapshot).await
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        let _pass = self.admission.enter()?;
        self.inner.delete_snapshots().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryStore;
    use crate::event::Metadata;

    fn event() -> NewEvent {
        NewEvent {
            event_id: uuid::Uuid::now_v7(),
            aggregate_type: "Thing".into(),
            event_type: "Happened".into(),
            schema_version: 1,
            occurred_at: time::OffsetDateTime::now_utc(),
            data: serde_json::json!({}).into(),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn a_full_queue_turns_the_next_caller_away_at_once() {
        let queue = Admission::new("test", 2);
        let first = queue.enter().expect("first");
        let _second = queue.enter().expect("second");
        assert_eq!(
            queue.enter().expect_err("third"),
            Overloaded {
                queue: "test",
                limit: 2
            }
        );
        drop(first);
        let _third = queue.enter().expect("a place was given back");
        let stats = queue.stats();
        assert_eq!(
            (stats.inside, stats.peak, stats.turned_away),
            (2, 2, 1),
            "{stats:?}"
        );
    }

    #[test]
    fn a_lower_limit_applies_to_new_callers_only() {
        let queue = Admission::new("test", 3);
        let passes: Vec<Pass> = (0..3).map(|_| queue.enter().expect("room")).collect();
        queue.set_limit(1);
        assert!(queue.enter().is_err());
        drop(passes);
        let _one = queue.enter().expect("room again");
        assert!(queue.enter().is_err(), "the new limit holds");
        queue.set_limit(0);
        assert_eq!(queue.limit(), 1, "a queue nobody can enter is not a bound");
    }

    #[test]
    fn concurrent_callers_never_exceed_the_limit() {
        let queue = Admission::new("test", 4);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..2_000 {
                        if let Ok(pass) = queue.enter() {
                            assert!(queue.stats().inside <= 4);
                            drop(pass);
                        }
                    }
                });
            }
        });
        let stats = queue.stats();
        assert_eq!(stats.inside, 0);
        assert!(stats.peak <= 4, "{stats:?}");
    }

    #[tokio::test]
    async fn a_gated_store_answers_overloaded_while_its_queue_is_full_and_serves_after() {
        let queue = Admission::new("events", 1);
        let store = GatedEventStore::new(Arc::new(InMemoryStore::new()), Arc::clone(&queue));
        let stream = StreamId::new("order-1");
        let held = queue.enter().expect("the only place");
        let err = store
            .append(&stream, ExpectedVersion::NoStream, vec![event()])
            .await
            .expect_err("full");
        assert!(matches!(err, StoreError::Overloaded(_)), "{err:?}");
        assert!(
            store.read_stream(&stream, 0, 10).await.is_err(),
            "reads wait in the same queue"
        );
        store.ping().await.expect("ping is never turned away");
        drop(held);
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event()])
            .await
            .expect("room again");
        assert_eq!(
            store.read_stream(&stream, 0, 10).await.expect("read").len(),
            1,
            "the turned-away append wrote nothing"
        );
        assert_eq!(queue.stats().inside, 0, "every place was given back");
    }
}
