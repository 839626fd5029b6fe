//! The read models behind a bounded queue (see [`ordo_es::admission`]).
//!
//! Queries are what a burst of clients multiplies: each one waits for a connection of
//! the read store's pool (SQLite's readers, PostgreSQL's pool). [`GatedReadStores`]
//! hands out every generation's store behind one shared [`Admission`], so that the
//! queries in flight or waiting, over every generation, never exceed its limit; the
//! next is answered [`ReadStoreError::Overloaded`] at once. The projection's own calls
//! (checkpoint, views, commits, parking, resets, bulk mode) pass straight through: one
//! writer per projection is not a queue, and turning it away would only add lag.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use time::Date;
use uuid::Uuid;

use ordo_es::{Admission, Checkpoint};

use ordo_domain::read_store::{
    ListQuery, OrderReadStore, ParkedEvent, ReadGeneration, ReadModelBatch, ReadStoreError,
    ReadStoreProvider, RebuildLock,
};
use ordo_domain::view::{DailyFigures, OrderPage, OrderView, Summary, TopCustomer, ViewState};

/// A provider whose generations answer queries behind `admission`.
#[derive(Debug)]
pub struct GatedReadStores {
    inner: Arc<dyn ReadStoreProvider>,
    admission: Arc<Admission>,
}

impl GatedReadStores {
    pub fn new(inner: Arc<dyn ReadStoreProvider>, admission: Arc<Admission>) -> Self {
        Self { inner, admission }
    }

    fn gate(&self, generation: ReadGeneration) -> ReadGeneration {
        ReadGeneration {
            id: generation.id,
            store: Arc::new(GatedReadStore {
                inner: generation.store,
                admission: Arc::clone(&self.admission),
            }),
        }
    }
}

#[async_trait]
impl ReadStoreProvider for GatedReadStores {
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        Ok(self.gate(self.inner.open_active().await?))
    }

    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        Ok(self.gate(self.inner.create_generation().await?))
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

/// One generation's store with its queries behind the shared admission.
#[derive(Debug)]
struct GatedReadStore {
    inner: Arc<dyn OrderReadStore>,
    admission: Arc<Admission>,
}

impl GatedReadStore {
    fn enter(&self) -> Result<ordo_es::Pass, ReadStoreError> {
        self.admission.enter().map_err(ReadStoreError::Overloaded)
    }
}

#[async_trait]
impl OrderReadStore for GatedReadStore {
    async fn load_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        self.inner.load_checkpoint(projection).await
    }

    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
        self.inner.load_views(ids).await
    }

    async fn commit(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        self.inner.commit(projection, batch, from, to).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError> {
        let _pass = self.enter()?;
        self.inner.get(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError> {
        let _pass = self.enter()?;
        self.inner.list(query).await
    }

    async fn summary(&self) -> Result<Summary, ReadStoreError> {
        let _pass = self.enter()?;
        self.inner.summary().await
    }

    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError> {
        let _pass = self.enter()?;
        self.inner.top_customers(limit).await
    }

    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError> {
        let _pass = self.enter()?;
        self.inner.daily(from, to).await
    }

    async fn reset(&self) -> Result<(), ReadStoreError> {
        self.inner.reset().await
    }

    async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        self.inner.begin_bulk().await
    }

    async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        self.inner.finish_bulk().await
    }

    async fn close(&self) -> Result<(), ReadStoreError> {
        self.inner.close().await
    }

    async fn park(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        self.inner.park(projection, parked, from, to).await
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        let _pass = self.enter()?;
        self.inner.parked(projection).await
    }

    async fn ping(&self) -> Result<(), ReadStoreError> {
        self.inner.ping().await
    }
}
