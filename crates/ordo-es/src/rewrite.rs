//! Rewriting stored payloads in place, for one-time migrations that must not leave the old
//! bytes behind (sealing personal data stored before it was encrypted).
//!
//! This is not part of [`EventStore`]: an append-only store's normal path never rewrites,
//! and nothing but such a migration should. The contract, which the `conformance`
//! feature's [`event_rewriter_conformance!`](crate::event_rewriter_conformance) checks:
//!
//! - [`legacy_events`](EventRewriter::legacy_events) pages through the events of one
//!   type stored with a schema version below a bound, partition by partition, in each
//!   partition in the global log's order. A page may hold fewer than `limit` events
//!   (even none) while the returned [`RewriteCursor`] is `Some`: the caller goes on until
//!   it is `None`.
//! - [`rewrite`](EventRewriter::rewrite) replaces the schema version and payload of each
//!   event named, and nothing else: its stream, version, position, type, metadata and
//!   time stay. An event is rewritten only when the store still holds it as it was read
//!   ([`Rewrite::of`]): the same id at the same stream, version and position, with the
//!   schema version it had. One that is not (rewritten already, never there) is left
//!   alone and not counted, so a migration that stopped half-way can simply run again.
//! - [`purge_old_versions`](EventRewriter::purge_old_versions) then removes the old
//!   bytes from the store's own files, as far as the backend can: each backend's docs
//!   say what is left (write-ahead logs, backups, copies outside the store).
//!
//! A migration is meant to run with no concurrent writers (at the start of a lone
//! process): the stores keep concurrent appends safe (none is lost or mangled), but some
//! (Redis) give up rewriting when appends keep coming.

use std::collections::HashSet;

use async_trait::async_trait;
use uuid::Uuid;

use crate::event::{Payload, RecordedEvent, StreamId};
use crate::position::{Checkpoint, Cursor, Position};
use crate::store::{EventStore, StoreError};

/// Where a pass of [`EventRewriter::legacy_events`] has got to: per partition, the
/// cursor of the last event it examined there, or [`Cursor::END`] once it has examined
/// the whole partition. Opaque to callers: they hand back what the last page returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteCursor(Checkpoint);

impl RewriteCursor {
    /// Nothing examined yet, in a log of `partitions` partitions (what `None` means).
    pub fn start(partitions: u32) -> Self {
        Self(Checkpoint::origin(partitions))
    }

    /// For stores: a cursor from its per-partition cursors (see the type's docs).
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Self {
        Self(checkpoint)
    }

    /// For stores: the per-partition cursors.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.0
    }

    /// The cursor of `partition`: where to go on there, or [`Cursor::END`] when it is done.
    pub fn cursor(&self, partition: u32) -> Cursor {
        self.0.cursor(partition)
    }

    /// Moves past `position` (an event examined).
    pub fn advance(&mut self, position: &Position) {
        self.0.advance(position);
    }

    /// Marks `partition` as examined to its end.
    pub fn finish(&mut self, partition: u32) {
        self.0.advance(&Position {
            partition,
            cursor: Cursor::END,
        });
    }

    /// The cursor a page returns: `None` once every one of `partitions` is done.
    pub fn into_next(self, partitions: u32) -> Option<Self> {
        (0..partitions)
            .any(|p| !self.0.is_pinned(p))
            .then_some(self)
    }
}

/// One event's new schema version and payload, and where the store must find it as it
/// was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    pub event_id: Uuid,
    /// The event's stream and version, position and schema version as read: the event
    /// is rewritten only if the store still holds it so. (Redis, which keeps no index by
    /// event id, also finds the entries to rewrite by them.)
    pub stream_id: StreamId,
    pub version: u64,
    pub position: Position,
    pub expected_schema_version: u32,
    /// What the event is to hold from now on.
    pub schema_version: u32,
    pub data: Payload,
}

impl Rewrite {
    /// `event`, as read from the store, to hold `data` at `schema_version` from now on.
    pub fn of(event: &RecordedEvent, schema_version: u32, data: Payload) -> Self {
        Self {
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            version: event.version,
            position: event.position,
            expected_schema_version: event.schema_version,
            schema_version,
            data,
        }
    }

    /// Whether the store holds `event` where and as this rewrite expects it.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        event.event_id == self.event_id
            && event.stream_id == self.stream_id
            && event.version == self.version
            && event.position == self.position
            && event.schema_version == self.expected_schema_version
    }
}

/// Rewriting stored payloads in place: only for one-time migrations that must not leave
/// old bytes behind (sealing personal data stored before encryption). Not part of
/// [`EventStore`]: an append-only store's normal path never rewrites. See the module
/// docs for the contract.
#[async_trait]
pub trait EventRewriter: Send + Sync + std::fmt::Debug + 'static {
    /// Up to `limit` events of `event_type` stored with a schema version below `below`,
    /// partition by partition, in global-log order within each, after `after` (the
    /// cursor the previous page returned; `None` for the start). Returns the events and
    /// the cursor of the next page, `None` when every partition has been examined. A
    /// page may be short, even empty, while the cursor is `Some`. A `limit` of 0 is
    /// taken as 1.
    async fn legacy_events(
        &self,
        event_type: &str,
        below: u32,
        after: Option<RewriteCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError>;

    /// Replaces each event's schema version and payload (everything else stays), as one
    /// atomic step where the backend allows (each backend says). An event the store does
    /// not hold as the [`Rewrite`] expects is left alone. Returns how many were
    /// rewritten. Two rewrites of one event in one call are [`StoreError::Invalid`].
    async fn rewrite(&self, changes: &[Rewrite]) -> Result<u64, StoreError>;

    /// After a migration: makes the old bytes unrecoverable from the store's own files
    /// where the backend can (each backend says how far that goes, and what it costs).
    async fn purge_old_versions(&self) -> Result<(), StoreError>;
}

/// The check every backend makes first: no event named twice.
pub fn check_rewrites(changes: &[Rewrite]) -> Result<(), StoreError> {
    let mut seen = HashSet::with_capacity(changes.len());
    for change in changes {
        if !seen.insert(change.event_id) {
            return Err(StoreError::Invalid(format!(
                "event {} is rewritten twice in one call",
                change.event_id
            )));
        }
    }
    Ok(())
}

/// Events read per [`EventStore::read_all`] call by [`scan_legacy_events`].
const SCAN_CHUNK: usize = 1_000;

/// [`EventRewriter::legacy_events`] for a store that cannot select by type and schema
/// version itself: reads each partition in turn with [`EventStore::read_all`] (the
/// others pinned) and keeps the matching events. A partition is done when a read of it
/// comes back short (the contract of `read_all`: nothing more is stored there) and all
/// of it was examined. Every event of the log is read once over a whole pass.
pub async fn scan_legacy_events(
    store: &dyn EventStore,
    event_type: &str,
    below: u32,
    after: Option<RewriteCursor>,
    limit: usize,
) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError> {
    scan_in_chunks(store, event_type, below, after, limit, SCAN_CHUNK).await
}

async fn scan_in_chunks(
    store: &dyn EventStore,
    event_type: &str,
    below: u32,
    after: Option<RewriteCursor>,
    limit: usize,
    chunk: usize,
) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError> {
    let partitions = store.partitions();
    let limit = limit.max(1);
    let mut cursor = after.unwrap_or_else(|| RewriteCursor::start(partitions));
    let mut found = Vec::new();
    for partition in 0..partitions {
        while found.len() < limit && cursor.cursor(partition) != Cursor::END {
            let reader = Checkpoint::only(partition, cursor.cursor(partition), partitions);
            let events = store.read_all(&reader, chunk).await?;
            let short = events.len() < chunk;
            let mut examined_all = true;
            for event in events {
                if found.len() == limit {
                    // Not examined: the next page starts at it.
                    examined_all = false;
                    break;
                }
                cursor.advance(&event.position);
                if event.event_type == event_type && event.schema_version < below {
                    found.push(event);
                }
            }
            if short && examined_all {
                cursor.finish(partition);
            }
        }
    }
    Ok((found, cursor.into_next(partitions)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{Metadata, NewEvent};
    use crate::memory::InMemoryStore;
    use crate::store::ExpectedVersion;

    fn event(schema_version: u32, n: u64) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            aggregate_type: "Thing".into(),
            event_type: if n.is_multiple_of(5) {
                "Other"
            } else {
                "Legacy"
            }
            .into(),
            schema_version,
            occurred_at: time::OffsetDateTime::now_utc(),
            data: json!({ "n": n }).into(),
            metadata: Metadata::default(),
        }
    }

    /// Pages of every size, over reads of every size: each legacy event once, in log
    /// order per partition, and the same as the in-memory store's own pass finds.
    #[tokio::test]
    async fn a_scan_finds_every_legacy_event_once_whatever_the_page_and_read_sizes() {
        let store = InMemoryStore::with_partitions(3);
        for s in 0..9u64 {
            let events = (0..1 + s % 4)
                .map(|i| event(1 + (i % 3) as u32, s * 10 + i))
                .collect();
            store
                .append(
                    &StreamId::new(format!("s-{s}")),
                    ExpectedVersion::NoStream,
                    events,
                )
                .await
                .expect("append");
        }
        let mut own = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store
                .legacy_events("Legacy", 3, after, 1_000)
                .await
                .expect("pass");
            own.extend(page);
            match next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert!(own.len() > 5, "the fixture has legacy events");
        for limit in [0, 1, 2, 3, 7, 100] {
            for chunk in [1, 2, 3, 5, 1_000] {
                let mut found = Vec::new();
                let mut after = None;
                for _ in 0..1_000 {
                    let (page, next) =
                        scan_in_chunks(&store, "Legacy", 3, after.take(), limit, chunk)
                            .await
                            .expect("scan");
                    assert!(page.len() <= limit.max(1));
                    found.extend(page);
                    match next {
                        Some(c) => after = Some(c),
                        None => break,
                    }
                }
                assert!(after.is_none(), "the scan did not end");
                assert_eq!(found, own, "limit {limit}, chunk {chunk}");
            }
        }
    }
}
