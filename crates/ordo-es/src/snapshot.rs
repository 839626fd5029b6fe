//! Snapshots: a cache of an aggregate's state at a version, so that loading reads the
//! snapshot and only the events after it.
//!
//! A snapshot is only ever a cache. It records the aggregate's snapshot schema version;
//! one written by other code ([`Aggregate::SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION) differs) is ignored, never
//! misread, and deleting every snapshot changes no answer, only the time loading takes.

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::event::StreamId;
use crate::store::StoreError;

/// An aggregate's state after `version`.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub stream_id: StreamId,
    pub aggregate_type: String,
    /// The stream version the state reflects.
    pub version: u64,
    /// The aggregate's snapshot schema version when it was written.
    pub schema_version: u32,
    pub state: Value,
    pub taken_at: OffsetDateTime,
}

/// Where snapshots live (usually beside the events).
///
/// `save` keeps the snapshot with the highest version per stream: saving an older one
/// than what is stored changes nothing.
#[async_trait]
pub trait SnapshotStore: Send + Sync + std::fmt::Debug + 'static {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError>;
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;
    /// Deletes every snapshot; returns how many there were.
    async fn delete_snapshots(&self) -> Result<u64, StoreError>;
}

/// Keeps no snapshot: every load folds the whole stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSnapshots;

#[async_trait]
impl SnapshotStore for NoSnapshots {
    async fn load_snapshot(&self, _: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Ok(None)
    }
    async fn save_snapshot(&self, _: Snapshot) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
