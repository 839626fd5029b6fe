//! Read stores with hooks in front of them, written once: the admission gate in front of
//! the queries ([`crate::gated`]) and the tests' fault injections (commits that fail,
//! stall or panic; queries held back) each say only what they change.
//!
//! [`Hooked`] forwards every call of the read-store contract to the store it wraps,
//! after asking its [`ReadStoreHooks`]; [`HookedStores`] hands out every generation of a
//! provider wrapped so, with the hooks a function picks for it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use time::Date;
use uuid::Uuid;

use ordo_domain::read_store::{
    ListQuery, OrderQueries, OrderReadStore, ParkedEvent, ReadGeneration, ReadModelBatch,
    ReadModelWriter, ReadStoreError, ReadStoreLifecycle, ReadStoreProvider, RebuildLock,
};
use ordo_domain::view::{DailyFigures, OrderPage, OrderView, Summary, TopCustomer, ViewState};
use ordo_es::{Checkpoint, Lease};

/// The query a hook is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Get,
    List,
    Summary,
    TopCustomers,
    Daily,
    Parked,
}

/// Whatever a hook wants held while the call it let through runs (an admission pass, a
/// lock guard); dropped when the call returns.
pub struct Held(#[allow(dead_code, reason = "held for its Drop")] Option<Box<dyn Any + Send>>);

impl Held {
    /// Holds nothing.
    pub const NOTHING: Held = Held(None);

    pub fn new(guard: impl Any + Send) -> Self {
        Self(Some(Box::new(guard)))
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Held"
        } else {
            "Held(nothing)"
        })
    }
}

/// What runs before the calls of a [`Hooked`] store. Each hook's default lets the call
/// through untouched; an error answers the call instead of the store.
#[async_trait]
pub trait ReadStoreHooks: Send + Sync + fmt::Debug + 'static {
    /// Before each query.
    async fn before_query(&self, _query: Query) -> Result<Held, ReadStoreError> {
        Ok(Held::NOTHING)
    }

    /// Before each commit of a batch.
    async fn before_commit(&self, _batch: &ReadModelBatch) -> Result<Held, ReadStoreError> {
        Ok(Held::NOTHING)
    }

    /// Instead of [`ReadModelWriter::begin_bulk`]; the default calls the store's.
    async fn begin_bulk(&self, store: &dyn OrderReadStore) -> Result<(), ReadStoreError> {
        store.begin_bulk().await
    }

    /// Instead of [`ReadModelWriter::finish_bulk`]; the default calls the store's.
    async fn finish_bulk(&self, store: &dyn OrderReadStore) -> Result<(), ReadStoreError> {
        store.finish_bulk().await
    }
}

/// A read store behind `hooks`.
#[derive(Debug)]
pub struct Hooked {
    inner: Arc<dyn OrderReadStore>,
    hooks: Arc<dyn ReadStoreHooks>,
}

impl Hooked {
    pub fn new(inner: Arc<dyn OrderReadStore>, hooks: Arc<dyn ReadStoreHooks>) -> Self {
        Self { inner, hooks }
    }

    /// `generation` with its store behind `hooks`.
    pub fn generation(
        generation: ReadGeneration,
        hooks: Arc<dyn ReadStoreHooks>,
    ) -> ReadGeneration {
        ReadGeneration {
            store: Arc::new(Self::new(generation.store, hooks)),
            ..generation
        }
    }
}

#[async_trait]
impl ReadModelWriter for Hooked {
    async fn load_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        self.inner.load_checkpoint(projection).await
    }

    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
        self.inner.load_views(ids).await
    }

    async fn commit_fenced(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError> {
        let _held = self.hooks.before_commit(&batch).await?;
        self.inner
            .commit_fenced(projection, batch, from, to, fence)
            .await
    }

    async fn park_fenced(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError> {
        self.inner
            .park_fenced(projection, parked, from, to, fence)
            .await
    }

    async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        self.hooks.begin_bulk(self.inner.as_ref()).await
    }

    async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        self.hooks.finish_bulk(self.inner.as_ref()).await
    }
}

#[async_trait]
impl OrderQueries for Hooked {
    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError> {
        let _held = self.hooks.before_query(Query::Get).await?;
        self.inner.get(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError> {
        let _held = self.hooks.before_query(Query::List).await?;
        self.inner.list(query).await
    }

    async fn summary(&self) -> Result<Summary, ReadStoreError> {
        let _held = self.hooks.before_query(Query::Summary).await?;
        self.inner.summary().await
    }

    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError> {
        let _held = self.hooks.before_query(Query::TopCustomers).await?;
        self.inner.top_customers(limit).await
    }

    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError> {
        let _held = self.hooks.before_query(Query::Daily).await?;
        self.inner.daily(from, to).await
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        let _held = self.hooks.before_query(Query::Parked).await?;
        self.inner.parked(projection).await
    }
}

#[async_trait]
impl ReadStoreLifecycle for Hooked {
    async fn reset(&self) -> Result<(), ReadStoreError> {
        self.inner.reset().await
    }

    async fn close(&self) -> Result<(), ReadStoreError> {
        self.inner.close().await
    }

    async fn ping(&self) -> Result<(), ReadStoreError> {
        self.inner.ping().await
    }

    async fn purge_deleted(&self) -> Result<(), ReadStoreError> {
        self.inner.purge_deleted().await
    }
}

/// How a generation was handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// By [`ReadStoreProvider::open_active`].
    Active,
    /// By [`ReadStoreProvider::create_generation`].
    Created,
}

/// Picks the hooks of each generation a [`HookedStores`] hands out; `None` leaves the
/// generation as the provider gave it.
pub type PickHooks = dyn Fn(Handed) -> Option<Arc<dyn ReadStoreHooks>> + Send + Sync;

/// A provider whose generations are [`Hooked`] as `pick` says.
pub struct HookedStores {
    inner: Arc<dyn ReadStoreProvider>,
    pick: Box<PickHooks>,
}

impl HookedStores {
    pub fn new(
        inner: Arc<dyn ReadStoreProvider>,
        pick: impl Fn(Handed) -> Option<Arc<dyn ReadStoreHooks>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            pick: Box::new(pick),
        }
    }

    /// Every generation behind the same `hooks`.
    pub fn all(inner: Arc<dyn ReadStoreProvider>, hooks: Arc<dyn ReadStoreHooks>) -> Self {
        Self::new(inner, move |_| Some(Arc::clone(&hooks)))
    }

    fn hook(&self, generation: ReadGeneration, handed: Handed) -> ReadGeneration {
        match (self.pick)(handed) {
            Some(hooks) => Hooked::generation(generation, hooks),
            None => generation,
        }
    }
}

impl fmt::Debug for HookedStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookedStores")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ReadStoreProvider for HookedStores {
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        Ok(self.hook(self.inner.open_active().await?, Handed::Active))
    }

    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        Ok(self.hook(self.inner.create_generation().await?, Handed::Created))
    }

    async fn activate(&self, id: &str) -> Result<(), ReadStoreError> {
        self.inner.activate(id).await
    }

    async fn drop_inactive(&self) -> Result<u32, ReadStoreError> {
        self.inner.drop_inactive().await
    }

    async fn active_id(&self) -> Result<String, ReadStoreError> {
        self.inner.active_id().await
    }

    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError> {
        self.inner.try_lock_rebuild().await
    }
}
