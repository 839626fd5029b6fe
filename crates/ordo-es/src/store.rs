//! The event store contract.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::event::{NewEvent, RecordedEvent, StreamId};
use crate::position::{Checkpoint, Position};

/// Any error a backend wants to carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the appender believes the stream's current version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be exactly at this version (0 means "does not exist yet").
    Exact(u64),
    /// No check. For tools and tests only: commands always state what they saw.
    Any,
}

impl ExpectedVersion {
    /// `Exact(0)` and `NoStream` mean the same thing; this is the number to compare.
    pub fn as_number(self) -> Option<u64> {
        match self {
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
            ExpectedVersion::Any => None,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_number() {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("any"),
        }
    }
}

/// The result of a successful append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The version of the first event appended.
    pub first_version: u64,
    /// The stream's version after the append (the last event's version).
    pub last_version: u64,
    /// The global position of each appended event, in order.
    pub positions: Vec<Position>,
}

impl Appended {
    /// The position of the last event: a reader that covers it has seen the whole append.
    pub fn last_position(&self) -> Position {
        *self
            .positions
            .last()
            .expect("an append stores at least one event")
    }
}

/// The error contract. Every backend classifies its failures into these variants, and
/// the conformance suite checks the ones that can be provoked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the expected version. Nothing was written. `actual` is the
    /// stream's version when the backend knows it.
    #[error("version conflict on stream {stream}: expected {expected}, found {}", actual.map_or_else(|| "another".to_string(), |v| v.to_string()))]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    /// The request itself is invalid (for example an empty append). Nothing was written.
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend cannot be reached or did not answer in time. Transient: the caller may
    /// retry later. Whether an append that failed this way was stored is unknown.
    #[error("event store unavailable")]
    Unavailable(#[source] BoxError),
    /// The store's queue is full (see [`crate::admission`]): nothing was done. Transient:
    /// the caller may retry later.
    #[error(transparent)]
    Overloaded(crate::admission::Overloaded),
    /// Data in the store cannot be read back (a bug or tampering, never transient).
    #[error("corrupt data in the event store: {0}")]
    Corrupt(String),
    /// Anything else.
    #[error("event store failure")]
    Other(#[source] BoxError),
}

impl StoreError {
    /// The contract's answer to an append of no events.
    pub fn empty_append() -> Self {
        StoreError::Invalid("an append needs at least one event".into())
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

/// An append-only store of event streams with a global log.
///
/// # Contract
///
/// - [`append`](EventStore::append) is atomic: all of `events` are stored, with versions
///   `expected + 1 ..= expected + n`, or none is. When the stream is not at `expected`
///   it returns [`StoreError::Conflict`] and stores nothing; two concurrent appends at
///   the same expected version never both succeed. An empty `events` is
///   [`StoreError::Invalid`]. When it returns `Ok`, the events are durable to the degree
///   the backend's configuration promises (documented per backend).
/// - [`read_stream`](EventStore::read_stream) returns a stream's events with
///   `version >= from_version`, in version order, at most `limit` of them.
/// - [`read_all`](EventStore::read_all) returns global-log events not covered by
///   `after`, at most `limit`, such that a reader that processes them in the order given
///   and [advances](Checkpoint::advance) its checkpoint past each one never skips an
///   event and never sees one twice, even when appends commit out of position order. Within
///   one partition the order is the cursor order; each stream's events are in version order.
/// - A `read_all` answer shorter than `limit` means every event stored and settled
///   when it was read was handed out (readers take a short read as caught up): a store
///   that spreads `limit` over its partitions reads again in the partitions that filled
///   their share before it answers short.
/// - A partition whose cursor in `after` is [`Cursor::END`](crate::Cursor::END) is not
///   read: `read_all` returns nothing of it, `wait_for_events` does not wake for it and
///   `count_after` counts nothing in it, without a round trip for it where the backend
///   can avoid one. A projection shard reads its own partition this way
///   ([`Checkpoint::only`]).
/// - [`wait_for_events`](EventStore::wait_for_events) returns when events not covered
///   by `after` may exist, or when `timeout` has passed. It may return early without new
///   events; callers re-check with `read_all`.
/// - [`head`](EventStore::head) returns a checkpoint that covers every event whose append
///   returned before the call: a position an append handed out is never past it. It may
///   cover events still in flight (it is at least as far as any committed event, and may
///   be further), so a position past it was never handed out by this store. An empty
///   store's head is [`Checkpoint::origin`].
/// - [`event_id_at`](EventStore::event_id_at) returns the id of the event stored at
///   exactly `position`, or `None` when no event is stored there.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// How many partitions the global log has. Fixed for the life of a store.
    fn partitions(&self) -> u32;

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError>;

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError>;

    /// How many events the global log holds after `after` (for progress reports). May
    /// be an estimate on backends where counting is expensive.
    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError>;

    /// A checkpoint covering every event stored now (see the contract above). Used to
    /// tell a position this store never handed out from one not yet projected.
    async fn head(&self) -> Result<Checkpoint, StoreError>;

    /// The id of the event at exactly `position`; `None` when none is stored there.
    ///
    /// Readers use it to check that the event at their checkpoint is still the one they
    /// processed: a log restored from an older copy (a Redis failover that lost
    /// acknowledged writes, an old backup) hands the same positions out again to other
    /// events. One indexed point read.
    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError>;

    /// Answers when the backend is reachable.
    async fn ping(&self) -> Result<(), StoreError>;
}
