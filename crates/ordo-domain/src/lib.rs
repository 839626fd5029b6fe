//! # ordo-domain: the order domain
//!
//! The business rules of ordo (docs/domain.md), with no I/O of its own.
//!
//! ## Layout
//!
//! - [`command`]: parsing untrusted JSON into commands ([`CreateOrder`]), with every
//!   problem reported under its field path ([`FieldError`]).
//! - [`values`] and [`money`]: types that cannot hold an invalid value ([`Status`],
//!   [`CustomerEmail`], [`Currency`], exact [`Money`]).
//! - [`event`]: the facts ([`OrderEvent`]: OrderCreated, OrderStatusChanged,
//!   OrderCancelled, OrderDeleted), each with a type name and schema version; [`upcast`]
//!   reads old schema versions in the current shape.
//! - [`order`]: the [`Order`] aggregate: `handle` decides, `apply` folds.
//! - [`service`]: [`OrderService`] runs commands (If-Match, idempotency keys, retries on
//!   lost races) and folds past states for history and time travel.
//! - [`view`] and [`read`]: the read side: [`OrderView`], [`Summary`], [`TopCustomer`],
//!   [`DailyFigures`] (orders and revenue per UTC day),
//!   the [`OrderReadStore`] contract that storage backends implement, and the
//!   [`OrderProjection`] that turns event batches into read-model changes;
//!   [`gated`] puts the queries of every generation behind one bounded queue.
//! - [`readside`] and [`replay`]: the live read side ([`ReadSide`]: the active read-store
//!   generation and its projection runner, with a blue-green switch) and the replay
//!   jobs operators run ([`ReplayJobs`]: full rebuild, from a timestamp, one order).
//!
//! ## How a command flows
//!
//! ```text
//! JSON ─parse─▶ CreateOrder ─▶ OrderService ─▶ CommandExecutor<Order>
//!                                  Order::handle ─▶ [OrderEvent] ─▶ EventStore::append
//! EventStore log ─▶ ProjectionRunner ─▶ OrderProjection::fold_batch ─▶ OrderReadStore::commit
//! ```

pub mod command;
pub mod event;
pub mod gated;
pub mod money;
#[cfg(feature = "openapi")]
mod openapi;
pub mod order;
pub mod read;
pub mod readside;
pub mod replay;
pub mod service;
pub mod upcast;
pub mod values;
pub mod view;

pub use command::{CancelRequest, CreateOrder, FieldError, ValidationErrors};
pub use event::OrderEvent;
pub use gated::GatedReadStores;
pub use money::Money;
pub use order::{Order, OrderCommand, OrderError};
pub use read::{
    ListQuery, OrderProjection, OrderReadStore, ParkedEvent, ReadGeneration, ReadModelBatch,
    ReadStoreError, ReadStoreInspector, ReadStoreProvider, RebuildLock, Sort,
};
pub use readside::{ReadSide, ReadSideOptions, RebuildError};
pub use replay::{JobState, JobStatus, ReplayJobs, ReplayRequest, StartError};
pub use service::{
    AsOf, CommandContext, CommandError, CommandOutcome, HistoryError, IdempotencyKey, OrderService,
};
pub use values::{Currency, CustomerEmail, Status};
pub use view::{
    DailyFigures, DayDelta, OrderPage, OrderView, StatusCounts, Summary, TopCustomer, ViewState,
    fill_days,
};
