//! # ordo-domain: the order domain
//!
//! The business rules of ordo (docs/domain.md), with no I/O and no async runtime of its
//! own: everything here is a pure function of its inputs, or a trait a backend implements.
//! The application that runs these rules against stores (`ordo-app`) sits on top.
//!
//! ## Layout
//!
//! - [`command`]: parsing untrusted JSON into commands ([`CreateOrder`]), with every
//!   problem reported under its field path ([`FieldError`]).
//! - [`values`] and [`money`]: types that cannot hold an invalid value ([`Status`],
//!   [`CustomerEmail`] (lower-cased; customers are looked up by its [`EmailKey`]),
//!   [`Currency`], exact [`Money`]).
//! - [`event`]: the facts ([`OrderEvent`]: OrderCreated, OrderStatusChanged,
//!   OrderCancelled, OrderDeleted), each with a type name and schema version; [`upcast`]
//!   reads old schema versions in the current shape.
//! - [`order`]: the [`Order`] aggregate: `handle` decides, `apply` folds.
//! - [`view`]: the read models' shapes ([`OrderView`], [`Summary`], [`TopCustomer`],
//!   [`DailyFigures`]: orders and revenue per UTC day) and the fold of one order's events
//!   into its [`ViewState`].
//! - [`read_store`]: the read-store contract storage backends implement, split by who
//!   uses it ([`ReadModelWriter`] for the projection, [`OrderQueries`] for the API,
//!   [`ReadStoreLifecycle`] for the read side; [`OrderReadStore`] is the three together),
//!   [`ReadStoreProvider`] for blue-green generations, [`ReadStoreInspector`] for
//!   `ordo status`, its query shapes ([`ListQuery`]), and [`ReadModelBatch`]: one batch
//!   of events folded into read-model changes.
//! - `conformance` (feature `conformance`): the suite every read store and provider
//!   passes, run by each backend's tests with one macro line.
//!
//! ## How events become read models
//!
//! ```text
//! JSON ─parse─▶ CreateOrder ─▶ Order::handle ─▶ [OrderEvent]
//! [RecordedEvent] + stored ViewStates ─▶ ReadModelBatch::fold ─▶ ReadModelWriter::commit
//! ```

pub mod command;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod event;
pub mod money;
#[cfg(feature = "openapi")]
mod openapi;
pub mod order;
pub mod privacy;
pub mod read_store;
pub mod upcast;
pub mod values;
pub mod view;

pub use command::{CancelRequest, CreateOrder, FieldError, ValidationErrors};
pub use event::OrderEvent;
pub use money::Money;
pub use order::{Order, OrderCommand, OrderError};
pub use read_store::{
    ListQuery, OrderQueries, OrderReadStore, ParkedEvent, ReadGeneration, ReadModelBatch,
    ReadModelWriter, ReadStoreError, ReadStoreInspector, ReadStoreLifecycle, ReadStoreProvider,
    RebuildLock, Sort,
};
pub use values::{Currency, CustomerEmail, EmailKey, Status};
pub use view::{
    DailyFigures, DayDelta, OrderPage, OrderView, StatusCounts, Summary, TopCustomer, ViewState,
    fill_days,
};
