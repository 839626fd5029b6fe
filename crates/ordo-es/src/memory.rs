//! An event store in memory: the reference implementation of the contract, for tests and
//! for trying things out. Nothing survives the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use crate::event::{NewEvent, RecordedEvent, StreamId};
use crate::position::{Checkpoint, Cursor, Position, partition_of};
use crate::rewrite::{EventRewriter, Rewrite, RewriteCursor, check_rewrites};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::store::{Appended, EventStore, ExpectedVersion, StoreError};

/// The in-memory store. Partitioned like the Redis store when asked, so that code built
/// on the kernel meets a multi-partition log in its unit tests too.
#[derive(Debug)]
pub struct InMemoryStore {
    partitions: u32,
    inner: Mutex<Inner>,
    /// Bumped on every append; waiters watch it.
    appended: watch::Sender<u64>,
    snapshots: Mutex<HashMap<StreamId, Snapshot>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// One log per partition; an event's cursor major is its index + 1.
    logs: Vec<Vec<RecordedEvent>>,
    /// Per stream: (partition, index in that partition's log) of each version.
    streams: HashMap<StreamId, Vec<usize>>,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::with_partitions(1)
    }

    pub fn with_partitions(partitions: u32) -> Self {
        let partitions = partitions.max(1);
        Self {
            partitions,
            inner: Mutex::new(Inner {
                logs: vec![Vec::new(); partitions as usize],
                streams: HashMap::new(),
            }),
            appended: watch::channel(0).0,
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written append (all checks
        // come before the first push), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the newest `n` events of `partition`, as a store restored from an older
    /// copy would (a failover that lost acknowledged writes): the positions they had are
    /// handed out again to the next appends. For tests of readers that must notice.
    #[cfg(test)]
    pub(crate) fn lose_newest(&self, partition: u32, n: usize) {
        let mut inner = self.lock();
        let log = &mut inner.logs[partition as usize];
        let keep = log.len().saturating_sub(n);
        let lost: Vec<RecordedEvent> = log.drain(keep..).collect();
        for event in lost {
            if let Some(indexes) = inner.streams.get_mut(&event.stream_id) {
                indexes.pop();
                if indexes.is_empty() {
                    inner.streams.remove(&event.stream_id);
                }
            }
        }
    }

    fn has_after(&self, after: &Checkpoint) -> bool {
        let inner = self.lock();
        inner
            .logs
            .iter()
            .enumerate()
            .filter(|(p, _)| !after.is_pinned(*p as u32))
            .any(|(p, log)| (log.len() as u64) > after.cursor(p as u32).major)
    }
}

#[async_trait]
impl EventStore for InMemoryStore {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Err(StoreError::empty_append());
        }
        let partition = partition_of(stream.as_str(), self.partitions);
        let mut inner = self.lock();
        let current = inner.streams.get(stream).map_or(0, |v| v.len() as u64);
        if let Some(expected_number) = expected.as_number()
            && expected_number != current
        {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual: Some(current),
            });
        }
        let mut positions = Vec::with_capacity(events.len());
        let mut indexes = Vec::with_capacity(events.len());
        let log = &mut inner.logs[partition as usize];
        for (i, event) in events.into_iter().enumerate() {
            let index = log.len();
            let position = Position::new(partition, index as u64 + 1, 0);
            log.push(RecordedEvent {
                event_id: event.event_id,
                stream_id: stream.clone(),
                aggregate_type: event.aggregate_type,
                version: current + 1 + i as u64,
                position,
                event_type: event.event_type,
                schema_version: event.schema_version,
                occurred_at: event.occurred_at,
                data: event.data,
                metadata: event.metadata,
            });
            positions.push(position);
            indexes.push(index);
        }
        let last_version = current + positions.len() as u64;
        inner
            .streams
            .entry(stream.clone())
            .or_default()
            .extend(indexes);
        drop(inner);
        self.appended.send_modify(|n| *n += 1);
        Ok(Appended {
            first_version: current + 1,
            last_version,
            positions,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let partition = partition_of(stream.as_str(), self.partitions) as usize;
        let inner = self.lock();
        let Some(indexes) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| inner.logs[partition][i].clone())
            .collect())
    }

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (p, log) in inner.logs.iter().enumerate() {
            if after.is_pinned(p as u32) {
                continue;
            }
            let start = after.cursor(p as u32).major as usize;
            for event in log.iter().skip(start) {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(event.clone());
            }
        }
        Ok(out)
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        // Woken by every append, so it looks again, and returns only for one in a
        // partition `after` reads (or at the timeout).
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.appended.subscribe();
        loop {
            if self.has_after(after) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
        }
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        let inner = self.lock();
        Ok(inner
            .logs
            .iter()
            .enumerate()
            .filter(|(p, _)| !after.is_pinned(*p as u32))
            .map(|(p, log)| (log.len() as u64).saturating_sub(after.cursor(p as u32).major))
            .sum())
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        let inner = self.lock();
        let mut head = Checkpoint::origin(self.partitions);
        for (p, log) in inner.logs.iter().enumerate() {
            if let Some(last) = log.last() {
                debug_assert_eq!(last.position.partition as usize, p);
                head.advance(&last.position);
            }
        }
        Ok(head)
    }

    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        let inner = self.lock();
        let index = match position.cursor.major.checked_sub(1) {
            Some(index) if position.cursor.minor == 0 => index,
            _ => return Ok(None),
        };
        Ok(inner
            .logs
            .get(position.partition as usize)
            .and_then(|log| log.get(usize::try_from(index).ok()?))
            .map(|event| event.event_id))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The reference rewriter: [`rewrite`](EventRewriter::rewrite) replaces the events under
/// the store's lock, all of them in one step. Nothing is ever written to a file, so
/// [`purge_old_versions`](EventRewriter::purge_old_versions) has nothing to do (the old
/// payloads are freed, not zeroed, like any memory the process frees).
#[async_trait]
impl EventRewriter for InMemoryStore {
    async fn legacy_events(
        &self,
        event_type: &str,
        below: u32,
        after: Option<RewriteCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError> {
        let limit = limit.max(1);
        let mut cursor = after.unwrap_or_else(|| RewriteCursor::start(self.partitions));
        let mut found = Vec::new();
        let inner = self.lock();
        for (p, log) in inner.logs.iter().enumerate() {
            let partition = p as u32;
            let from = cursor.cursor(partition);
            if from == Cursor::END {
                continue;
            }
            // An event's cursor major is its index + 1: the next one to look at is at
            // index `from.major`.
            let start = usize::try_from(from.major).unwrap_or(usize::MAX);
            for event in log.iter().skip(start) {
                if found.len() == limit {
                    return Ok((found, cursor.into_next(self.partitions)));
                }
                cursor.advance(&event.position);
                if event.event_type == event_type && event.schema_version < below {
                    found.push(event.clone());
                }
            }
            cursor.finish(partition);
        }
        Ok((found, cursor.into_next(self.partitions)))
    }

    async fn rewrite(&self, changes: &[Rewrite]) -> Result<u64, StoreError> {
        check_rewrites(changes)?;
        let mut inner = self.lock();
        let mut rewritten = 0;
        for change in changes {
            let position = change.position;
            let index = match position.cursor.major.checked_sub(1) {
                Some(index) if position.cursor.minor == 0 => usize::try_from(index).ok(),
                _ => None,
            };
            let event = index.and_then(|i| {
                inner
                    .logs
                    .get_mut(position.partition as usize)
                    .and_then(|log| log.get_mut(i))
            });
            if let Some(event) = event
                && change.matches(event)
            {
                event.schema_version = change.schema_version;
                event.data = change.data.clone();
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }

    async fn purge_old_versions(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl SnapshotStore for InMemoryStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(snapshots.get(stream).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let newer = snapshots
            .get(&snapshot.stream_id)
            .is_none_or(|s| s.version < snapshot.version);
        if newer {
            snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let n = snapshots.len() as u64;
        snapshots.clear();
        Ok(n)
    }
}

#[cfg(all(test, feature = "conformance"))]
mod snapshot_conformance {
    crate::snapshot_store_conformance!(async { crate::InMemoryStore::new() });
}

#[cfg(all(test, feature = "conformance"))]
mod conformance_single {
    crate::event_store_conformance!(async { crate::InMemoryStore::new() });
}

#[cfg(all(test, feature = "conformance"))]
mod conformance_partitioned {
    crate::event_store_conformance!(async { crate::InMemoryStore::with_partitions(4) });
}

#[cfg(all(test, feature = "conformance"))]
mod rewriter_conformance_single {
    crate::event_rewriter_conformance!(async { crate::InMemoryStore::new() });
}

#[cfg(all(test, feature = "conformance"))]
mod rewriter_conformance_partitioned {
    crate::event_rewriter_conformance!(async { crate::InMemoryStore::with_partitions(4) });
}
