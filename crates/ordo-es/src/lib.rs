//! # ordo-es: the event-sourcing kernel
//!
//! Everything in ordo that is about event sourcing in general, and nothing that is about
//! orders, HTTP or a particular database. No I/O lives here: stores are traits, and the
//! one implementation in this crate ([`InMemoryStore`]) keeps its events in memory.
//!
//! ## Layout
//!
//! - [`event`]: what is stored. A domain event is encoded into a [`NewEvent`] (type name,
//!   schema version, JSON data, [`Metadata`]); the store gives it back as a
//!   [`RecordedEvent`] with its stream version and global [`Position`].
//! - [`position`]: the global order. A [`Position`] is opaque to callers (rendered as a
//!   string token); a [`Checkpoint`] is how far a reader has got in each partition of the
//!   global log, and says whether it [covers](Checkpoint::covers) a position.
//! - [`store`]: the [`EventStore`] contract: atomic, optimistically concurrent append;
//!   reading one stream; reading the global log after a checkpoint; waiting for new events;
//!   the log's head and the event at one position (to notice a log that went backwards).
//!   Its docs state the error contract every backend must keep, and the
//!   `conformance` feature holds the suite that checks it.
//! - [`aggregate`]: the [`Aggregate`] trait (`handle` decides, `apply` folds) and the
//!   [`CommandExecutor`] that loads, decides, appends and retries on a lost race.
//! - [`snapshot`]: the [`SnapshotStore`] contract; the executor loads the latest
//!   snapshot plus the events after it, and takes one every N events.
//! - [`projection`]: the [`Projection`] trait and the [`ProjectionRunner`] that tails the
//!   global log from the projection's own checkpoint and applies events in batches,
//!   restarting its task from the stored checkpoint when it panics or gets stuck, and
//!   halting when the log goes backwards under it (lost events, reissued positions).
//! - [`lease`]: leases on projection shards with fencing tokens ([`LeaseStore`]), and
//!   the plan that spreads the shards evenly over the live projectors ([`lease::assign`]).
//! - [`admission`]: the bound in front of a queue ([`Admission`]): callers past it are
//!   turned away at once with [`Overloaded`] instead of waiting without bound;
//!   [`GatedEventStore`] puts one in front of a whole store.
//! - [`upcast`]: the [`UpcasterChain`] that reads old event schema versions in the
//!   current shape.
//! - [`rewrite`]: the [`EventRewriter`] of one-time migrations that must rewrite stored
//!   payloads in place (sealing personal data stored before encryption), beside the
//!   append-only [`EventStore`].
//! - [`testkit`]: given / when / then tests for aggregates, with no I/O.
//!
//! ## How data flows
//!
//! ```text
//! command ─▶ CommandExecutor ─load─▶ EventStore::read_stream ─fold─▶ Aggregate
//!                  │ decide (Aggregate::handle)
//!                  └─▶ EventStore::append(stream, expected version, events)
//!                                   │ global log
//! ProjectionRunner ◀─read_all/wait──┘
//!        └─▶ Projection::apply_batch(events, checkpoint)   (one transaction)
//! ```

pub mod admission;
pub mod aggregate;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod event;
pub mod lease;
mod memory;
pub mod position;
pub mod projection;
pub mod rewrite;
pub mod snapshot;
pub mod store;
pub mod testkit;
pub mod upcast;

pub use admission::{
    Admission, AdmissionStats, GatedEventStore, GatedSnapshotStore, Overloaded, Pass,
};
pub use aggregate::{
    Aggregate, CommandExecutor, Committed, ExecuteError, LoadError, Loaded, load_aggregate,
    now_micros,
};
pub use event::{DecodeError, DomainEvent, Metadata, NewEvent, Payload, RecordedEvent, StreamId};
pub use lease::{InMemoryLeases, Lease, LeaseError, LeaseStore};
pub use memory::InMemoryStore;
pub use position::{Checkpoint, Cursor, Position, PositionParseError, partition_of};
pub use projection::{
    Projection, ProjectionError, ProjectionHandle, ProjectionRunner, ProjectionState,
    ProjectionStatus, RunnerConfig,
};
pub use rewrite::{EventRewriter, Rewrite, RewriteCursor};
pub use snapshot::{NoSnapshots, Snapshot, SnapshotStore};
pub use store::{Appended, BoxError, EventStore, ExpectedVersion, StoreError};
pub use upcast::{UpcastFn, UpcasterChain};
