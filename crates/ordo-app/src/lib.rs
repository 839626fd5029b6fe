//! # ordo-app: the application
//!
//! What runs the order domain (`ordo-domain`) against the stores: commands in, read
//! models kept current, replays for operators. The domain decides; this crate loads,
//! appends, retries, spawns and switches. Storage backends and HTTP sit outside it, behind
//! the `ordo-es` and read-store traits.
//!
//! ## Layout
//!
//! - [`service`]: [`OrderService`] runs commands (If-Match, idempotency keys, retries on
//!   lost races) and folds past states for history and time travel.
//! - [`projection`]: [`OrderProjection`], the projection that folds each batch of events
//!   and commits it with its checkpoint, pipelining the commits during a bulk load.
//! - [`read_side`]: the live read side ([`ReadSide`]): the active read-store generation
//!   and its projection runner, with a blue-green switch to a rebuilt generation; in a
//!   process that runs no projection, the checkpoint other processes store there.
//! - [`replay`]: the replay jobs operators start ([`ReplayJobs`]: full rebuild, from a
//!   timestamp, one order), each followed as a [`JobStatus`].
//! - [`gated`]: [`gate_queries`] puts the queries of every generation behind one
//!   bounded queue.
//! - [`hooks`]: [`Hooked`] read stores, with hooks before their calls (the gate, the
//!   tests' fault injections).
//! - [`privacy`]: [`Erasures`]: erasing a customer's personal data (destroying their
//!   keys, then folding their orders' read models again).
//! - [`memory`]: [`InMemoryReadStores`], read stores kept in memory, for tests of the
//!   read side that are not about a database.
//!
//! ## How a command flows
//!
//! ```text
//! JSON ─parse─▶ CreateOrder ─▶ OrderService ─▶ CommandExecutor<Order>
//!                                  Order::handle ─▶ [OrderEvent] ─▶ EventStore::append
//! EventStore log ─▶ ProjectionRunner ─▶ OrderProjection ─▶ ReadModelBatch::fold
//!                                                        ─▶ ReadModelWriter::commit
//! ```

pub mod gated;
pub mod hooks;
pub mod memory;
pub mod privacy;
pub mod projection;
pub mod read_side;
pub mod replay;
pub mod service;

pub use gated::gate_queries;
pub use hooks::{Handed, Held, Hooked, HookedStores, Query, ReadStoreHooks};
pub use memory::{InMemoryReadStore, InMemoryReadStores};
pub use privacy::{EraseError, ErasureReport, Erasures};
pub use projection::OrderProjection;
pub use read_side::{ReadSide, ReadSideOptions, RebuildError};
pub use replay::{JobState, JobStatus, ReplayJobs, ReplayRequest, StartError};
pub use service::{
    AsOf, CommandContext, CommandError, CommandOutcome, HistoryError, IdempotencyKey, OrderService,
};
