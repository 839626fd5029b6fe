//! The order read models: order views with indexed columns, the summary counters, top
//! customers, orders per day and projection checkpoints. Each projection batch commits in one
//! transaction together with its checkpoint (compare-and-set).
//!
//! - `schema.rs`: the migrations and the statements, with the schema spliced in.
//! - `write.rs`: projection commits with the checkpoint compare-and-set, parking, reset.
//! - `query.rs`: the reads behind the API.
//! - `bulk.rs`: bulk mode for a load from the whole log.
//!
//! The read-store contract ([`ReadModelWriter`], [`OrderQueries`], [`ReadStoreLifecycle`]) is implemented in this file, each method handing over to the file of
//! its concern.

mod bulk;
mod query;
mod schema;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use time::Date;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use ordo_domain::{
    DailyFigures, ListQuery, Money, OrderPage, OrderQueries, OrderView, ParkedEvent,
    ReadModelBatch, ReadModelWriter, ReadStoreError, ReadStoreLifecycle, Summary, TopCustomer,
    ViewState,
};
use ordo_es::{Checkpoint, Cursor, Lease};

use crate::db::{ConnectOptions, DbError, migrate, missing_migrations};

use schema::Statements;
pub(crate) use schema::{MIGRATIONS, reset_sql};

/// The PostgreSQL read store for orders.
#[derive(Debug)]
pub struct PgReadStore {
    pool: Pool,
    schema: String,
    sql: Statements,
    /// `Some` in bulk mode (see [`ReadModelWriter::begin_bulk`]): the definitions of the
    /// secondary indexes dropped for the load. Commits then skip the top-customer names
    /// and do not wait for their WAL flush; `finish_bulk` recreates the indexes, names
    /// every customer and commits synchronously.
    bulk: Arc<std::sync::Mutex<Option<Vec<String>>>>,
}

impl PgReadStore {
    /// Connects to the database at `url` (same URL and `schema=` convention as
    /// [`PgEventStore::connect`](crate::PgEventStore::connect)), creating or migrating
    /// the read-model tables as needed. Needs the pg_trgm extension (created if missing).
    pub async fn connect(url: &str) -> Result<PgReadStore, ReadStoreError> {
        let options = ConnectOptions::parse(url).map_err(|e| ReadStoreError::Other(e.into()))?;
        Self::open(options).await
    }

    /// [`connect`](PgReadStore::connect) with the URL already parsed. Fenced writes are
    /// checked against the leases of the store's own schema.
    pub(crate) async fn open(options: ConnectOptions) -> Result<PgReadStore, ReadStoreError> {
        let leases = options.qualified();
        Self::open_fenced_by(options, &leases).await
    }

    /// [`open`](PgReadStore::open), with fenced writes checked against the leases in
    /// schema `leases` (quoted): a generation's are in the configured schema.
    pub(crate) async fn open_fenced_by(
        options: ConnectOptions,
        leases: &str,
    ) -> Result<PgReadStore, ReadStoreError> {
        let pool = options
            .pool()
            .map_err(|e| ReadStoreError::Other(e.into()))?;
        migrate(&pool, &options, "read_models", MIGRATIONS).await?;
        Ok(PgReadStore {
            pool,
            sql: Statements::new(&options.qualified(), leases),
            schema: options.schema,
            bulk: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// The read store in the schema of `options` if it holds one with every migration
    /// applied, creating and migrating nothing; `None` when the schema holds no read
    /// models (for tools that look, such as `ordo status`).
    pub(crate) async fn open_existing(
        options: ConnectOptions,
    ) -> Result<Option<PgReadStore>, ReadStoreError> {
        let mut options = options;
        // A look needs one connection, not a service's pool.
        options.pool_size = 1;
        let pool = options
            .pool()
            .map_err(|e| ReadStoreError::Other(e.into()))?;
        if missing_migrations(&pool, &options, "read_models", "read models", MIGRATIONS)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        Ok(Some(PgReadStore {
            pool,
            sql: Statements::new(&options.qualified(), &options.qualified()),
            schema: options.schema,
            bulk: Arc::new(std::sync::Mutex::new(None)),
        }))
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ReadStoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        Ok(query_cached(&client, sql, params).await?)
    }
}

/// Runs a cached prepared statement on a pooled client or a transaction.
async fn query_cached<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, DbError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> ReadStoreError {
    ReadStoreError::Corrupt(format!("{what}: {detail}"))
}

fn parse_view(doc: &str) -> Result<OrderView, ReadStoreError> {
    serde_json::from_str(doc).map_err(|e| corrupt("order view document", e))
}

fn parse_cents(text: &str) -> Result<Money, ReadStoreError> {
    text.parse::<i128>()
        .map(Money::from_cents)
        .map_err(|e| corrupt("amount in cents", format!("{text:?}: {e}")))
}

fn is_origin(checkpoint: &Checkpoint) -> bool {
    checkpoint.cursors().iter().all(|c| *c == Cursor::ORIGIN)
}

fn get_err(e: tokio_postgres::Error) -> ReadStoreError {
    corrupt("unreadable row", e)
}

#[async_trait]
impl ReadModelWriter for PgReadStore {
    async fn load_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        write::load_checkpoint(self, projection).await
    }

    async fn load_checkpoints(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Checkpoint>>, ReadStoreError> {
        write::load_checkpoints(self, keys).await
    }

    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
        write::load_views(self, ids).await
    }

    async fn commit_fenced(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError> {
        write::commit(self, projection, batch, from, to, fence).await
    }

    async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        bulk::begin_bulk(self).await
    }

    async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        bulk::finish_bulk(self).await
    }

    async fn park_fenced(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError> {
        write::park(self, projection, parked, from, to, fence).await
    }
}

#[async_trait]
impl OrderQueries for PgReadStore {
    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError> {
        query::get(self, id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError> {
        query::list(self, query).await
    }

    async fn summary(&self) -> Result<Summary, ReadStoreError> {
        query::summary(self).await
    }

    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError> {
        query::top_customers(self, limit).await
    }

    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError> {
        query::daily(self, from, to).await
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        write::parked(self, projection).await
    }
}

#[async_trait]
impl ReadStoreLifecycle for PgReadStore {
    async fn reset(&self) -> Result<(), ReadStoreError> {
        write::reset(self).await
    }

    /// VACUUM of the tables an erasure rewrote: the old row versions' space becomes
    /// reusable (PostgreSQL does not zero it: docs/privacy.md says what that means).
    async fn purge_deleted(&self) -> Result<(), ReadStoreError> {
        write::vacuum(self).await
    }

    async fn ping(&self) -> Result<(), ReadStoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(DbError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
