//! The log as a projection shard sees it: one partition. Every read, wait and count goes
//! to the store with the other partitions pinned at [`Cursor::END`], so the store reads
//! nothing of them; the runner is otherwise the one every projection uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::event::{NewEvent, RecordedEvent, StreamId};
use crate::position::{Checkpoint, Position};
use crate::store::{Appended, EventStore, ExpectedVersion, StoreError};

/// One partition of `inner`'s log. With `permits`, each read of the log (and each
/// count, head and point read) first takes one of them: the shards of one process share
/// a few, so that they hold a few database connections at once, not one each (waits
/// take none: a store shares one poll among its waiters).
#[derive(Debug)]
pub(super) struct PartitionView {
    pub(super) inner: Arc<dyn EventStore>,
    pub(super) partition: u32,
    pub(super) permits: Option<Arc<tokio::sync::Semaphore>>,
}

impl PartitionView {
    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.permits {
            Some(permits) => permits.acquire().await.ok(),
            None => None,
        }
    }

    fn pin(&self, after: &Checkpoint) -> Checkpoint {
        let partitions = after.partitions().max(self.inner.partitions());
        Checkpoint::only(self.partition, after.cursor(self.partition), partitions)
    }
}

#[async_trait]
impl EventStore for PartitionView {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let _permit = self.permit().await;
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = {
            let _permit = self.permit().await;
            self.inner.read_all(&self.pin(after), limit).await?
        };
        // A store that ignored the pins would hand this shard another's events.
        if let Some(stray) = events
            .iter()
            .find(|e| e.position.partition != self.partition)
        {
            return Err(StoreError::Corrupt(format!(
                "a read of partition {} returned an event of partition {}",
                self.partition, stray.position.partition
            )));
        }
        Ok(events)
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.inner.wait_for_events(&self.pin(after), timeout).await
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        let _permit = self.permit().await;
        self.inner.count_after(&self.pin(after)).await
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        let _permit = self.permit().await;
        self.inner.head().await
    }

    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        let _permit = self.permit().await;
        self.inner.event_id_at(position).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
