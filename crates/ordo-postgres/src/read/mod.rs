//! The order read models: order views with indexed columns, the summary counters, top
//! customers, orders per day and projection checkpoints. Each projection batch commits in one
//! transaction together with its checkpoint (compare-and-set).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use time::{Date, OffsetDateTime};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use ordo_domain::read::search_text;
use ordo_domain::view::StatusCounts;
use ordo_domain::{
    DailyFigures, ListQuery, Money, OrderPage, OrderReadStore, OrderView, ParkedEvent,
    ReadModelBatch, ReadStoreError, Sort, Summary, TopCustomer, ViewState,
};
use ordo_es::{Checkpoint, Cursor};

use crate::db::{ConnectOptions, DbError, Migration, migrate, missing_migrations};

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "order read models",
        sql: r#"
        -- One row per order ever seen. A deleted order keeps its row as a tombstone
        -- (deleted = true, version kept, everything else NULL) so that a redelivered
        -- older event is recognised. Every query filters NOT deleted, which the partial
        -- indexes below match.
        CREATE TABLE {s}.orders (
            order_id uuid PRIMARY KEY,
            version bigint NOT NULL,
            deleted boolean NOT NULL,
            doc json,
            status text,
            customer_email text COLLATE "C",
            customer_name text,
            total_cents numeric,
            created_at timestamptz,
            search_text text,
            CHECK (deleted OR (doc IS NOT NULL AND status IS NOT NULL AND customer_email IS NOT NULL
                AND customer_name IS NOT NULL AND total_cents IS NOT NULL AND created_at IS NOT NULL
                AND search_text IS NOT NULL))
        );
        CREATE INDEX orders_created ON {s}.orders (created_at, order_id) WHERE NOT deleted;
        CREATE INDEX orders_total ON {s}.orders (total_cents, order_id) WHERE NOT deleted;
        CREATE INDEX orders_status ON {s}.orders (status, created_at, order_id) WHERE NOT deleted;
        CREATE INDEX orders_customer ON {s}.orders (customer_email, created_at, order_id) WHERE NOT deleted;
        -- fastupdate off: a pending list of unmerged entries makes the planner cost the
        -- index high (and scans slow) until a vacuum merges it; searches should not
        -- depend on autovacuum's timing.
        CREATE INDEX orders_search ON {s}.orders USING gin (search_text {trgm}.gin_trgm_ops)
            WITH (fastupdate = off) WHERE NOT deleted;

        -- The summary: one row of counters, moved by each batch's deltas.
        CREATE TABLE {s}.order_summary (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            pending bigint NOT NULL DEFAULT 0,
            confirmed bigint NOT NULL DEFAULT 0,
            processing bigint NOT NULL DEFAULT 0,
            shipped bigint NOT NULL DEFAULT 0,
            delivered bigint NOT NULL DEFAULT 0,
            cancelled bigint NOT NULL DEFAULT 0,
            revenue_cents numeric NOT NULL DEFAULT 0,
            last_updated timestamptz
        );
        INSERT INTO {s}.order_summary (id) VALUES (true);

        -- Recomputed per affected customer inside each commit.
        CREATE TABLE {s}.top_customers (
            customer_email text COLLATE "C" PRIMARY KEY,
            customer_name text NOT NULL,
            order_count bigint NOT NULL,
            total_spent_cents numeric NOT NULL
        );
        CREATE INDEX top_customers_rank ON {s}.top_customers (total_spent_cents DESC, customer_email);

        CREATE TABLE {s}.checkpoints (
            projection text PRIMARY KEY,
            checkpoint text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
    "#,
    },
    Migration {
        version: 2,
        description: "parked events",
        sql: r#"
        -- Events a projection could not apply, set aside (the checkpoint moved past them).
        -- seq breaks ties between events parked in the same microsecond.
        CREATE TABLE {s}.parked_events (
            projection text NOT NULL,
            event_id uuid NOT NULL,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            position text NOT NULL,
            stream_id text NOT NULL,
            version bigint NOT NULL,
            event_type text NOT NULL,
            error text NOT NULL,
            parked_at timestamptz NOT NULL,
            PRIMARY KEY (projection, event_id)
        );
        CREATE INDEX parked_events_order ON {s}.parked_events (projection, parked_at, seq);
    "#,
    },
    Migration {
        version: 3,
        description: "search text in a table of its own",
        sql: r#"
        -- An order's search text never changes, but as a column of orders it was indexed
        -- again (about a hundred trigram entries) by every status change, which cannot
        -- be a HOT update since status is indexed. In a table of its own it is written
        -- when the order is created and removed when it is deleted.
        CREATE TABLE {s}.order_search (
            order_id uuid PRIMARY KEY,
            search_text text NOT NULL
        );
        INSERT INTO {s}.order_search (order_id, search_text)
            SELECT order_id, search_text FROM {s}.orders WHERE NOT deleted;
        CREATE INDEX order_search_text ON {s}.order_search USING gin (search_text {trgm}.gin_trgm_ops)
            WITH (fastupdate = off);
        -- Dropping the column drops its index and the row check that named it.
        ALTER TABLE {s}.orders DROP COLUMN search_text;
        ALTER TABLE {s}.orders ADD CHECK (deleted OR (doc IS NOT NULL AND status IS NOT NULL
            AND customer_email IS NOT NULL AND customer_name IS NOT NULL
            AND total_cents IS NOT NULL AND created_at IS NOT NULL));
    "#,
    },
    Migration {
        version: 4,
        description: "orders and revenue per day",
        sql: r#"
        -- Per UTC day of createdAt: the orders not deleted, and the revenue of those
        -- neither cancelled nor deleted. Moved by each batch's deltas; a day left with no
        -- order has no row. Filled here from the orders already stored, so an upgraded
        -- store answers without a replay.
        CREATE TABLE {s}.daily_orders (
            day date PRIMARY KEY,
            orders bigint NOT NULL,
            revenue_cents numeric NOT NULL
        );
        INSERT INTO {s}.daily_orders (day, orders, revenue_cents)
            SELECT (created_at AT TIME ZONE 'UTC')::date, count(*),
                   coalesce(sum(total_cents) FILTER (WHERE status <> 'cancelled'), 0)
            FROM {s}.orders WHERE NOT deleted
            GROUP BY 1;
    "#,
    },
];

/// Statements with the schema spliced in once.
#[derive(Debug)]
struct Statements {
    s: String,
    load_checkpoint: String,
    cas_checkpoint: String,
    insert_checkpoint: String,
    load_views: String,
    upsert_orders: String,
    upsert_search: String,
    update_summary: String,
    move_customers: String,
    drop_customers: String,
    name_customers: String,
    move_days: String,
    drop_days: String,
    daily: String,
    get: String,
    summary: String,
    top_customers: String,
    reset: String,
    park: String,
    parked: String,
}

impl Statements {
    fn new(s: &str) -> Self {
        Self {
            s: s.to_string(),
            load_checkpoint: format!("SELECT checkpoint FROM {s}.checkpoints WHERE projection = $1"),
            cas_checkpoint: format!(
                "UPDATE {s}.checkpoints SET checkpoint = $3, updated_at = now() \
                 WHERE projection = $1 AND checkpoint = $2 RETURNING 1"
            ),
            insert_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (projection, checkpoint) VALUES ($1, $2) \
                 ON CONFLICT (projection) DO NOTHING RETURNING 1"
            ),
            load_views: format!("SELECT order_id, version, deleted, doc::text FROM {s}.orders WHERE order_id = ANY($1)"),
            upsert_orders: format!(
                "INSERT INTO {s}.orders (order_id, version, deleted, doc, status, customer_email, customer_name,
                     total_cents, created_at)
                 SELECT u.order_id, u.version, u.deleted, u.doc::json, u.status, u.customer_email, u.customer_name,
                        u.total::numeric, u.created_at
                 FROM unnest($1::uuid[], $2::int8[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::timestamptz[])
                     AS u(order_id, version, deleted, doc, status, customer_email, customer_name, total, created_at)
                 ON CONFLICT (order_id) DO UPDATE SET
                     version = excluded.version, deleted = excluded.deleted, doc = excluded.doc,
                     status = excluded.status, customer_email = excluded.customer_email,
                     customer_name = excluded.customer_name, total_cents = excluded.total_cents,
                     created_at = excluded.created_at"
            ),
            // A live order's text is written once (rewritten only if it differs); a
            // deleted order's is removed.
            upsert_search: format!(
                "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS u(order_id, search_text)),
                 gone AS (DELETE FROM {s}.order_search t USING u
                          WHERE t.order_id = u.order_id AND u.search_text IS NULL)
                 INSERT INTO {s}.order_search (order_id, search_text)
                 SELECT order_id, search_text FROM u WHERE search_text IS NOT NULL
                 ON CONFLICT (order_id) DO UPDATE SET search_text = excluded.search_text
                 WHERE order_search.search_text IS DISTINCT FROM excluded.search_text"
            ),
            update_summary: format!(
                "UPDATE {s}.order_summary SET pending = pending + $1, confirmed = confirmed + $2,
                     processing = processing + $3, shipped = shipped + $4, delivered = delivered + $5,
                     cancelled = cancelled + $6, revenue_cents = revenue_cents + $7::text::numeric,
                     last_updated = greatest($8::timestamptz, last_updated)"
            ),
            // Each batch moves a customer's count and spend by its deltas (O(1), whatever
            // their number of orders), drops customers left with none, and refreshes the
            // name from their most recent counted order (an index seek).
            move_customers: format!(
                "INSERT INTO {s}.top_customers AS t (customer_email, customer_name, order_count, total_spent_cents)
                 SELECT d.email, '', d.n, d.spent::numeric
                 FROM unnest($1::text[], $2::int8[], $3::text[]) AS d(email, n, spent)
                 WHERE d.n <> 0 OR d.spent::numeric <> 0
                 ON CONFLICT (customer_email) DO UPDATE SET order_count = t.order_count + excluded.order_count,
                     total_spent_cents = t.total_spent_cents + excluded.total_spent_cents"
            ),
            drop_customers: format!(
                "DELETE FROM {s}.top_customers WHERE customer_email = ANY($1::text[]) AND order_count <= 0"
            ),
            name_customers: format!(
                "UPDATE {s}.top_customers t SET customer_name = (
                     SELECT o.customer_name FROM {s}.orders o
                     WHERE o.customer_email = t.customer_email AND NOT o.deleted AND o.status <> 'cancelled'
                     ORDER BY o.created_at DESC, o.order_id DESC LIMIT 1)
                 WHERE t.customer_email = ANY($1::text[])"
            ),
            move_days: format!(
                "INSERT INTO {s}.daily_orders AS t (day, orders, revenue_cents)
                 SELECT d.day, d.n, d.revenue::numeric
                 FROM unnest($1::date[], $2::int8[], $3::text[]) AS d(day, n, revenue)
                 ON CONFLICT (day) DO UPDATE SET orders = t.orders + excluded.orders,
                     revenue_cents = t.revenue_cents + excluded.revenue_cents"
            ),
            drop_days: format!(
                "DELETE FROM {s}.daily_orders
                 WHERE day = ANY($1::date[]) AND orders = 0 AND revenue_cents = 0"
            ),
            daily: format!(
                "SELECT day, orders, revenue_cents::text FROM {s}.daily_orders
                 WHERE day BETWEEN $1 AND $2 ORDER BY day"
            ),
            get: format!("SELECT doc::text FROM {s}.orders WHERE order_id = $1 AND NOT deleted"),
            summary: format!(
                "SELECT pending, confirmed, processing, shipped, delivered, cancelled, revenue_cents::text, last_updated
                 FROM {s}.order_summary"
            ),
            top_customers: format!(
                "SELECT customer_email, customer_name, order_count, total_spent_cents::text AS spent FROM {s}.top_customers
                 ORDER BY total_spent_cents DESC, customer_email LIMIT $1"
            ),
            reset: reset_sql(s),
            park: format!(
                "INSERT INTO {s}.parked_events
                     (projection, event_id, position, stream_id, version, event_type, error, parked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (projection, event_id) DO NOTHING"
            ),
            parked: format!(
                "SELECT position, event_id, stream_id, version, event_type, error, parked_at
                 FROM {s}.parked_events WHERE projection = $1 ORDER BY parked_at, seq"
            ),
        }
    }
}

/// Empties every read model of the (quoted) schema `s`: orders, summary, top customers,
/// orders per day, checkpoints and parked events.
pub(crate) fn reset_sql(s: &str) -> String {
    format!(
        "TRUNCATE {s}.orders, {s}.order_search, {s}.top_customers, {s}.daily_orders, {s}.checkpoints,
             {s}.parked_events;
         UPDATE {s}.order_summary SET pending = 0, confirmed = 0, processing = 0, shipped = 0,
             delivered = 0, cancelled = 0, revenue_cents = 0, last_updated = NULL;"
    )
}

/// The PostgreSQL read store for orders.
#[derive(Debug)]
pub struct PgReadStore {
    pool: Pool,
    schema: String,
    sql: Statements,
    /// `Some` in bulk mode (see [`OrderReadStore::begin_bulk`]): the definitions of the
    /// secondary indexes dropped for the load. Commits then skip the top-customer names
    /// and do not wait for their WAL flush; `finish_bulk` recreates the indexes, names
    /// every customer and commits synchronously.
    bulk: Arc<std::sync::Mutex<Option<Vec<String>>>>,
}

fn bulk_state(
    m: &std::sync::Mutex<Option<Vec<String>>>,
) -> std::sync::MutexGuard<'_, Option<Vec<String>>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgReadStore {
    /// Connects to the database at `url` (same URL and `schema=` convention as
    /// [`PgEventStore::connect`](crate::PgEventStore::connect)), creating or migrating
    /// the read-model tables as needed. Needs the pg_trgm extension (created if missing).
    pub async fn connect(url: &str) -> Result<PgReadStore, ReadStoreError> {
        let options = ConnectOptions::parse(url).map_err(|e| ReadStoreError::Other(e.into()))?;
        Self::open(options).await
    }

    /// [`connect`](PgReadStore::connect) with the URL already parsed.
    pub(crate) async fn open(options: ConnectOptions) -> Result<PgReadStore, ReadStoreError> {
        let pool = options
            .pool()
            .map_err(|e| ReadStoreError::Other(e.into()))?;
        migrate(&pool, &options, "read_models", MIGRATIONS).await?;
        Ok(PgReadStore {
            pool,
            sql: Statements::new(&options.qualified()),
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
            sql: Statements::new(&options.qualified()),
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
        Ok(run(&client, sql, params).await?)
    }
}

impl PgReadStore {
    /// Moves the checkpoint of `projection` from `from` to `to` by compare-and-set, inside
    /// the caller's transaction. Done first: it takes the checkpoint row's lock, so a
    /// second writer of the same projection waits here and then finds the checkpoint
    /// moved. [`ReadStoreError::CheckpointMoved`] when the stored one is not `from`
    /// (nothing stored counts as the origin).
    async fn move_checkpoint(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        projection: &str,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        let (from_text, to_text) = (from.encode(), to.encode());
        let mut moved = run(
            tx,
            &self.sql.cas_checkpoint,
            &[&projection, &from_text, &to_text],
        )
        .await?
        .is_empty();
        if moved && is_origin(from) {
            moved = run(tx, &self.sql.insert_checkpoint, &[&projection, &to_text])
                .await?
                .is_empty();
        }
        if moved {
            return Err(ReadStoreError::CheckpointMoved);
        }
        Ok(())
    }
}

/// Runs a cached prepared statement on a pooled client or a transaction.
async fn run<C: GenericClient>(
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

/// The columns of an orders upsert, one array per column.
#[derive(Debug, Default)]
struct OrderRows {
    ids: Vec<Uuid>,
    versions: Vec<i64>,
    deleted: Vec<bool>,
    docs: Vec<Option<String>>,
    statuses: Vec<Option<String>>,
    emails: Vec<Option<String>>,
    names: Vec<Option<String>>,
    totals: Vec<Option<String>>,
    created_at: Vec<Option<OffsetDateTime>>,
    search: Vec<Option<String>>,
}

impl OrderRows {
    fn push(&mut self, id: Uuid, state: &ViewState) -> Result<(), ReadStoreError> {
        let version =
            i64::try_from(state.version()).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
        self.ids.push(id);
        self.versions.push(version);
        match state.live() {
            Some(view) => {
                let doc =
                    serde_json::to_string(view).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
                self.deleted.push(false);
                self.docs.push(Some(doc));
                self.statuses.push(Some(view.status.as_str().to_string()));
                self.emails.push(Some(view.customer_email.to_lowercase()));
                self.names.push(Some(view.customer_name.clone()));
                self.totals
                    .push(Some(view.total_amount.cents().to_string()));
                self.created_at.push(Some(view.created_at));
                self.search.push(Some(search_text(view)));
            }
            None => {
                self.deleted.push(true);
                self.docs.push(None);
                self.statuses.push(None);
                self.emails.push(None);
                self.names.push(None);
                self.totals.push(None);
                self.created_at.push(None);
                self.search.push(None);
            }
        }
        Ok(())
    }
}

/// `%` and `_` and the escape character itself are literal in a search term.
fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// ORDER BY for a sort, the order id breaking ties in the same direction.
fn order_by(sort: Sort, table: &str) -> String {
    let (column, direction) = match sort {
        Sort::CreatedAt => ("created_at", "ASC"),
        Sort::CreatedAtDesc => ("created_at", "DESC"),
        Sort::TotalAmount => ("total_cents", "ASC"),
        Sort::TotalAmountDesc => ("total_cents", "DESC"),
    };
    format!("{table}.{column} {direction}, {table}.order_id {direction}")
}

#[async_trait]
impl OrderReadStore for PgReadStore {
    async fn load_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        let rows = self
            .query(&self.sql.load_checkpoint, &[&projection])
            .await?;
        match rows.first() {
            None => Ok(None),
            Some(row) => {
                let text: String = row.try_get(0).map_err(get_err)?;
                Checkpoint::decode(&text)
                    .map(Some)
                    .map_err(|e| corrupt("stored checkpoint", format!("{text:?}: {e}")))
            }
        }
    }

    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.query(&self.sql.load_views, &[&ids]).await?;
        let mut views = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get(0).map_err(get_err)?;
            let version: i64 = row.try_get(1).map_err(get_err)?;
            let deleted: bool = row.try_get(2).map_err(get_err)?;
            let state = if deleted {
                ViewState::Deleted {
                    version: u64::try_from(version).map_err(|e| corrupt("negative version", e))?,
                }
            } else {
                let doc: Option<String> = row.try_get(3).map_err(get_err)?;
                let doc =
                    doc.ok_or_else(|| corrupt("order view", format!("{id} has no document")))?;
                ViewState::Live(Box::new(parse_view(&doc)?))
            };
            views.insert(id, state);
        }
        Ok(views)
    }

    #[tracing::instrument(skip(self, batch, from, to), fields(views = batch.views.len()))]
    async fn commit(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        let mut rows = OrderRows::default();
        for (id, state) in &batch.views {
            // Absent: no event of the order was folded in; nothing to store.
            if !matches!(state, ViewState::Absent) {
                rows.push(*id, state)?;
            }
        }
        let customers: Vec<&str> = batch.customers.iter().map(String::as_str).collect();
        let (counts, spent): (Vec<i64>, Vec<String>) = batch
            .customers
            .iter()
            .map(|email| match batch.customer_deltas.get(email) {
                Some((n, money)) => (*n, money.cents().to_string()),
                None => (0, "0".to_string()),
            })
            .unzip();

        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let sql = &self.sql;
        self.move_checkpoint(&tx, projection, from, to).await?;

        if !rows.ids.is_empty() {
            run(
                &tx,
                &sql.upsert_orders,
                &[
                    &rows.ids,
                    &rows.versions,
                    &rows.deleted,
                    &rows.docs,
                    &rows.statuses,
                    &rows.emails,
                    &rows.names,
                    &rows.totals,
                    &rows.created_at,
                ],
            )
            .await?;
            run(&tx, &sql.upsert_search, &[&rows.ids, &rows.search]).await?;
        }
        let d = &batch.status_delta;
        if d.iter().any(|n| *n != 0)
            || batch.revenue_delta != Money::ZERO
            || batch.last_event_at.is_some()
        {
            let revenue = batch.revenue_delta.cents().to_string();
            run(
                &tx,
                &sql.update_summary,
                &[
                    &d[0],
                    &d[1],
                    &d[2],
                    &d[3],
                    &d[4],
                    &d[5],
                    &revenue,
                    &batch.last_event_at,
                ],
            )
            .await?;
        }
        if !batch.daily_deltas.is_empty() {
            let mut days = Vec::with_capacity(batch.daily_deltas.len());
            let mut counts = Vec::with_capacity(days.capacity());
            let mut revenues = Vec::with_capacity(days.capacity());
            for (day, delta) in &batch.daily_deltas {
                days.push(*day);
                counts.push(delta.orders);
                revenues.push(delta.revenue.cents().to_string());
            }
            run(&tx, &sql.move_days, &[&days, &counts, &revenues]).await?;
            run(&tx, &sql.drop_days, &[&days]).await?;
        }
        // Read only now, after this transaction wrote orders: finish_bulk locks the
        // tables before it starts and clears the flag before it commits, so a batch sees
        // bulk mode only if finish_bulk's name refresh comes after it.
        let in_bulk = bulk_state(&self.bulk).is_some();
        if in_bulk {
            // Nothing depends on a generation being loaded until finish_bulk, whose own
            // commit waits for the WAL to be flushed past every batch before it.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(DbError::from)?;
        }
        if !customers.is_empty() {
            run(&tx, &sql.move_customers, &[&customers, &counts, &spent]).await?;
            run(&tx, &sql.drop_customers, &[&customers]).await?;
            if !in_bulk {
                run(&tx, &sql.name_customers, &[&customers]).await?;
            }
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError> {
        let rows = self.query(&self.sql.get, &[&id]).await?;
        match rows.first() {
            None => Ok(None),
            Some(row) => Ok(Some(parse_view(
                row.try_get::<_, &str>(0).map_err(get_err)?,
            )?)),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError> {
        let status = query.status.map(|s| s.as_str().to_string());
        let email = query.customer_email.as_ref().map(|e| e.to_lowercase());
        let min_total = query.min_total.map(|m| m.cents().to_string());
        let max_total = query.max_total.map(|m| m.cents().to_string());
        let pattern = query.search.as_deref().map(like_pattern);
        let limit = i64::from(query.limit);
        let offset = i64::try_from(query.offset()).unwrap_or(i64::MAX);

        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut conditions = vec!["NOT o.deleted".to_string()];
        if let Some(v) = &status {
            params.push(v);
            conditions.push(format!("o.status = ${}", params.len()));
        }
        if let Some(v) = &email {
            params.push(v);
            conditions.push(format!("o.customer_email = ${}", params.len()));
        }
        if let Some(v) = &min_total {
            params.push(v);
            conditions.push(format!("o.total_cents >= ${}::text::numeric", params.len()));
        }
        if let Some(v) = &max_total {
            params.push(v);
            conditions.push(format!("o.total_cents <= ${}::text::numeric", params.len()));
        }
        if let Some(v) = &query.created_from {
            params.push(v);
            conditions.push(format!("o.created_at >= ${}::timestamptz", params.len()));
        }
        if let Some(v) = &query.created_to {
            params.push(v);
            conditions.push(format!("o.created_at <= ${}::timestamptz", params.len()));
        }
        if let Some(v) = &pattern {
            params.push(v);
            conditions.push(format!(
                "o.order_id IN (SELECT t.order_id FROM {}.order_search t WHERE t.search_text LIKE ${})",
                self.sql.s,
                params.len()
            ));
        }
        params.push(&limit);
        let limit_n = params.len();
        params.push(&offset);
        let offset_n = params.len();
        let s = &self.sql.s;
        let conditions = conditions.join(" AND ");
        // With no filter but status, the summary's counters already hold the total: no
        // query counts every order.
        let total = if query.only_status_filter() {
            match query.status {
                Some(status) => format!("(SELECT {} FROM {s}.order_summary)", status.as_str()),
                None => format!(
                    "(SELECT pending + confirmed + processing + shipped + delivered + cancelled FROM {s}.order_summary)"
                ),
            }
        } else {
            format!("(SELECT count(*) FROM {s}.orders o WHERE {conditions})")
        };
        let sql = format!(
            "SELECT {total} AS total, p.doc
             FROM (SELECT 1) AS one
             LEFT JOIN LATERAL (
                 SELECT o.doc::text AS doc, o.created_at, o.total_cents, o.order_id FROM {s}.orders o
                 WHERE {conditions} ORDER BY {inner} LIMIT ${limit_n} OFFSET ${offset_n}
             ) p ON true
             ORDER BY {outer}",
            inner = order_by(query.sort, "o"),
            outer = order_by(query.sort, "p"),
        );
        let rows = self.query(&sql, &params).await?;
        let mut total = 0i64;
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            total = row.try_get(0).map_err(get_err)?;
            if let Some(doc) = row.try_get::<_, Option<&str>>(1).map_err(get_err)? {
                orders.push(parse_view(doc)?);
            }
        }
        Ok(OrderPage {
            orders,
            total: u64::try_from(total).unwrap_or(0),
            page: query.page,
            limit: query.limit,
        })
    }

    async fn summary(&self) -> Result<Summary, ReadStoreError> {
        let rows = self.query(&self.sql.summary, &[]).await?;
        let row = rows
            .first()
            .ok_or_else(|| corrupt("summary", "the counter row is missing"))?;
        let mut counts = [0i64; 6];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = row.try_get(i).map_err(get_err)?;
        }
        let revenue = parse_cents(row.try_get::<_, &str>(6).map_err(get_err)?)?;
        let last_updated: Option<OffsetDateTime> = row.try_get(7).map_err(get_err)?;
        Ok(Summary::from_counters(
            StatusCounts(counts),
            revenue,
            last_updated,
        ))
    }

    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError> {
        let rows = self
            .query(&self.sql.top_customers, &[&i64::from(limit)])
            .await?;
        rows.iter()
            .map(|row| {
                let count: i64 = row.try_get(2).map_err(get_err)?;
                Ok(TopCustomer {
                    customer_email: row.try_get(0).map_err(get_err)?,
                    customer_name: row.try_get(1).map_err(get_err)?,
                    order_count: u64::try_from(count).map_err(|e| corrupt("order count", e))?,
                    total_spent: parse_cents(row.try_get::<_, &str>(3).map_err(get_err)?)?,
                })
            })
            .collect()
    }

    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError> {
        let rows = self.query(&self.sql.daily, &[&from, &to]).await?;
        rows.iter()
            .map(|row| {
                let orders: i64 = row.try_get(1).map_err(get_err)?;
                Ok(DailyFigures {
                    date: row.try_get(0).map_err(get_err)?,
                    orders: u64::try_from(orders).map_err(|e| corrupt("orders of a day", e))?,
                    revenue: parse_cents(row.try_get::<_, &str>(2).map_err(get_err)?)?,
                })
            })
            .collect()
    }

    async fn reset(&self) -> Result<(), ReadStoreError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        tx.batch_execute(&self.sql.reset)
            .await
            .map_err(DbError::from)?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(())
    }

    async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        if bulk_state(&self.bulk).is_some() {
            return Ok(());
        }
        let s = &self.sql.s;
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let empty: bool = tx
            .query_one(
                &format!(
                    "SELECT NOT EXISTS (SELECT 1 FROM {s}.orders) AND NOT EXISTS (SELECT 1 FROM {s}.checkpoints)"
                ),
                &[],
            )
            .await
            .map_err(DbError::from)?
            .get(0);
        if !empty {
            return Err(ReadStoreError::Other(
                "bulk mode is for an empty read store".into(),
            ));
        }
        // The secondary indexes as the migrations made them (not those behind a primary
        // key or unique constraint): rebuilt once at the end instead of row by row.
        let indexes: Vec<(String, String)> = tx
            .query(
                "SELECT i.indexname::text, i.indexdef FROM pg_indexes i
                 WHERE i.schemaname = $1 AND i.tablename IN ('orders', 'order_search', 'top_customers')
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                   WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)",
                &[&self.schema],
            )
            .await
            .map_err(DbError::from)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (name, _) in &indexes {
            tx.batch_execute(&format!("DROP INDEX {s}.\"{}\"", name.replace('"', "\"\"")))
                .await
                .map_err(DbError::from)?;
        }
        tx.commit().await.map_err(DbError::from)?;
        *bulk_state(&self.bulk) = Some(indexes.into_iter().map(|(_, def)| def).collect());
        Ok(())
    }

    async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        let Some(indexes) = bulk_state(&self.bulk).clone() else {
            return Ok(());
        };
        let s = &self.sql.s;
        // Index builds on a large read store take longer than the statement timeout of
        // pooled connections: this one goes without, and is taken out of the pool (closed
        // when done), so that its setting never reaches another caller, even when this
        // future is dropped half-way.
        let mut client =
            deadpool_postgres::Object::take(self.pool.get().await.map_err(DbError::from)?);
        client
            .batch_execute("SET statement_timeout = 0")
            .await
            .map_err(DbError::from)?;
        // Built CONCURRENTLY: a plain CREATE INDEX is a writing transaction for as long as
        // it builds (2.4 s for the trigram index of 100,000 orders on 2 busy cores), and a
        // writing transaction holds back the server's xmin, and with it every projection
        // that reads events from this server (see the crate README): the live read models
        // stood still that long. A concurrent build holds no transaction id while it
        // scans, and lets the batches still arriving write meanwhile (they then keep the
        // index up to date). An index such a build left invalid when it failed is
        // dropped first (IF NOT EXISTS would keep it); valid ones a finish that stopped
        // half-way built are kept.
        let invalid: Vec<String> = client
            .query(
                "SELECT c.relname::text FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indexrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND NOT i.indisvalid",
                &[&self.schema],
            )
            .await
            .map_err(DbError::from)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for name in &invalid {
            client
                .batch_execute(&format!("DROP INDEX {s}.\"{}\"", name.replace('"', "\"\"")))
                .await
                .map_err(DbError::from)?;
        }
        for def in &indexes {
            let started = std::time::Instant::now();
            client
                .batch_execute(&def.replacen(" INDEX ", " INDEX CONCURRENTLY IF NOT EXISTS ", 1))
                .await
                .map_err(DbError::from)?;
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, index = %def, "built a deferred index");
        }
        client
            .batch_execute(&format!(
                "ANALYZE {s}.orders; ANALYZE {s}.order_search; ANALYZE {s}.top_customers;"
            ))
            .await
            .map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        // Batches still arrive: wait for those that wrote, hold off the next ones.
        tx.batch_execute(&format!(
            "LOCK TABLE {s}.orders, {s}.order_search, {s}.top_customers IN SHARE MODE"
        ))
        .await
        .map_err(DbError::from)?;
        tx.batch_execute(&format!(
            "UPDATE {s}.top_customers t SET customer_name = (
                 SELECT o.customer_name FROM {s}.orders o
                 WHERE o.customer_email = t.customer_email AND NOT o.deleted AND o.status <> 'cancelled'
                 ORDER BY o.created_at DESC, o.order_id DESC LIMIT 1)"
        ))
        .await
        .map_err(DbError::from)?;
        // Cleared before the commit: a batch waiting on the lock above must then see it.
        *bulk_state(&self.bulk) = None;
        if let Err(e) = tx.commit().await {
            *bulk_state(&self.bulk) = Some(indexes);
            return Err(DbError::from(e).into());
        }
        Ok(())
    }

    #[tracing::instrument(skip(self, parked, from, to), fields(event_id = %parked.event_id))]
    async fn park(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        let version =
            i64::try_from(parked.version).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
        // text cannot hold NUL; the message is for people, so a NUL becomes U+FFFD rather
        // than failing the park (which would stall the projection on this event).
        let error = parked.error.replace('\0', "\u{FFFD}");
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        self.move_checkpoint(&tx, projection, from, to).await?;
        let statement = tx
            .prepare_cached(&self.sql.park)
            .await
            .map_err(DbError::from)?;
        tx.execute(
            &statement,
            &[
                &projection,
                &parked.event_id,
                &parked.position,
                &parked.stream_id,
                &version,
                &parked.event_type,
                &error,
                &parked.parked_at,
            ],
        )
        .await
        .map_err(DbError::from)?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(())
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        let rows = self.query(&self.sql.parked, &[&projection]).await?;
        rows.iter()
            .map(|row| {
                let version: i64 = row.try_get(3).map_err(get_err)?;
                Ok(ParkedEvent {
                    position: row.try_get(0).map_err(get_err)?,
                    event_id: row.try_get(1).map_err(get_err)?,
                    stream_id: row.try_get(2).map_err(get_err)?,
                    version: u64::try_from(version)
                        .map_err(|e| corrupt("negative parked version", e))?,
                    event_type: row.try_get(4).map_err(get_err)?,
                    error: row.try_get(5).map_err(get_err)?,
                    parked_at: row.try_get(6).map_err(get_err)?,
                })
            })
            .collect()
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
mod tests {
    use std::sync::Arc;

    use ordo_domain::event::{OrderCancelled, OrderCreated, OrderDeleted, OrderStatusChanged};
    use ordo_domain::values::LineItem;
    use ordo_domain::{Currency, CustomerEmail, OrderEvent, OrderProjection, Status};
    use ordo_es::{DomainEvent, Metadata, Position, Projection, RecordedEvent, StreamId};
    use time::macros::{date, datetime};

    use super::*;
    use crate::testdb;

    /// A read store in a fresh schema, the projection over it, and the schema name.
    struct Fixture {
        store: Arc<PgReadStore>,
        projection: OrderProjection,
        checkpoint: Checkpoint,
        next_position: u64,
        schema: String,
    }

    impl Fixture {
        async fn new() -> Self {
            let (url, schema) = testdb::fresh_url().await;
            let store = Arc::new(
                PgReadStore::connect(&url)
                    .await
                    .expect("connect to the test server"),
            );
            Fixture {
                projection: OrderProjection::new(store.clone()),
                store,
                checkpoint: Checkpoint::origin(1),
                next_position: 1,
                schema,
            }
        }

        /// Projects `events` (order id, version, event, time) as one batch.
        async fn project(&mut self, events: Vec<(Uuid, u64, OrderEvent, OffsetDateTime)>) {
            let mut recorded = Vec::new();
            let mut to = self.checkpoint.clone();
            for (id, version, event, at) in events {
                let position = Position::new(0, self.next_position, 0);
                self.next_position += 1;
                to.advance(&position);
                recorded.push(RecordedEvent {
                    event_id: Uuid::now_v7(),
                    stream_id: StreamId::new(id.to_string()),
                    aggregate_type: "Order".into(),
                    version,
                    position,
                    event_type: event.event_type().into(),
                    schema_version: event.schema_version(),
                    occurred_at: at,
                    data: event.encode(),
                    metadata: Metadata::default(),
                });
            }
            self.projection
                .apply_batch(&recorded, &self.checkpoint, &to)
                .await
                .expect("apply batch");
            self.checkpoint = to;
        }

        async fn done(self) {
            drop(self.projection);
            drop(self.store);
            testdb::drop_schema(&self.schema).await;
        }
    }

    fn created(name: &str, email: &str, product: &str, cents: i128) -> OrderEvent {
        let price = Money::from_cents(cents);
        OrderEvent::Created(OrderCreated {
            customer_name: name.into(),
            customer_email: CustomerEmail::parse(email).expect("email"),
            currency: Currency::usd(),
            items: vec![LineItem {
                product_id: "p-1".into(),
                product_name: product.into(),
                quantity: 1,
                unit_price: price,
                line_total: price,
            }],
            total_amount: price,
            shipping_address: None,
        })
    }

    fn cancelled() -> OrderEvent {
        OrderEvent::Cancelled(OrderCancelled {
            reason: Some("changed my mind".into()),
            previous_status: Status::Pending,
        })
    }

    fn query() -> ListQuery {
        ListQuery::default()
    }

    #[tokio::test]
    async fn orders_stored_before_the_search_table_are_still_found() {
        // Two orders as the current schema stores them ...
        let mut f = Fixture::new().await;
        let (ada, gone) = (Uuid::now_v7(), Uuid::now_v7());
        let at = OffsetDateTime::now_utc();
        f.project(vec![
            (
                ada,
                1,
                created("Ada", "ada@example.com", "Analytical Engine", 100),
                at,
            ),
            (
                gone,
                1,
                created("Bob", "bob@example.com", "Steam Engine", 200),
                at,
            ),
            (gone, 2, OrderEvent::Deleted(OrderDeleted {}), at),
        ])
        .await;
        // ... copied into a schema at migration 2, where the text was a column of orders.
        let (url, old) = testdb::fresh_url().await;
        let options = ConnectOptions::parse(&url).expect("url");
        let pool = options.pool().expect("pool");
        migrate(&pool, &options, "read_models", &MIGRATIONS[..2])
            .await
            .expect("schema 2");
        let client = testdb::raw_client().await;
        client
            .batch_execute(&format!(
                "INSERT INTO \"{old}\".orders
                 SELECT o.order_id, o.version, o.deleted, o.doc, o.status, o.customer_email,
                        o.customer_name, o.total_cents, o.created_at, t.search_text
                 FROM \"{new}\".orders o LEFT JOIN \"{new}\".order_search t USING (order_id)",
                new = f.schema
            ))
            .await
            .expect("copy the orders");
        drop(pool);
        let store = PgReadStore::connect(&url).await.expect("migrate to 3");
        let found = |page: OrderPage| page.orders.iter().map(|v| v.order_id).collect::<Vec<_>>();
        let search = |term: &str| ListQuery {
            search: Some(term.into()),
            ..query()
        };
        assert_eq!(
            found(store.list(&search("engine")).await.expect("search")),
            vec![ada]
        );
        assert_eq!(
            found(store.list(&search("analytical")).await.expect("search")),
            vec![ada]
        );
        assert!(found(store.list(&search("steam")).await.expect("search")).is_empty());
        drop(store);
        testdb::drop_schema(&old).await;
        f.done().await;
    }

    fn status(from: Status, to: Status) -> OrderEvent {
        OrderEvent::StatusChanged(OrderStatusChanged { from, to })
    }

    fn deleted() -> OrderEvent {
        OrderEvent::Deleted(OrderDeleted {})
    }

    type Step = (Uuid, u64, OrderEvent, OffsetDateTime);

    /// Orders created on four days, then changed, cancelled and deleted later; the
    /// figures they leave are [`daily_expected`].
    fn daily_history() -> Vec<Step> {
        let [a, b, c, d, e, g] = [(); 6].map(|_| Uuid::now_v7());
        let order = |cents| created("Ada", "ada@example.com", "Lamp", cents);
        vec![
            (g, 1, order(900), datetime!(2026-11-29 08:00 UTC)),
            (
                a,
                1,
                order(1_000),
                datetime!(2026-11-30 23:59:59.999999 UTC),
            ),
            (b, 1, order(2_550), datetime!(2026-12-01 00:00 UTC)),
            (c, 1, order(450), datetime!(2026-12-01 12:00 UTC)),
            (g, 2, deleted(), datetime!(2026-12-01 14:00 UTC)),
            (
                a,
                2,
                status(Status::Pending, Status::Confirmed),
                datetime!(2026-12-02 09:00 UTC),
            ),
            (b, 2, cancelled(), datetime!(2026-12-02 09:01 UTC)),
            (c, 2, deleted(), datetime!(2026-12-02 09:02 UTC)),
            (d, 1, order(10_000), datetime!(2026-12-01 18:00 UTC)),
            (d, 2, deleted(), datetime!(2026-12-02 09:03 UTC)),
            (e, 1, order(725), datetime!(2026-12-02 10:00 UTC)),
            (
                e,
                2,
                status(Status::Pending, Status::Confirmed),
                datetime!(2026-12-02 11:00 UTC),
            ),
        ]
    }

    /// 11-29: its only order deleted, no row; 11-30: the order of a microsecond before
    /// midnight; 12-01: one cancelled order (one deleted, one created and deleted);
    /// 12-02: one order.
    fn daily_expected() -> Vec<DailyFigures> {
        let day = |date, orders, cents| DailyFigures {
            date,
            orders,
            revenue: Money::from_cents(cents),
        };
        vec![
            day(date!(2026 - 11 - 30), 1, 1_000),
            day(date!(2026 - 12 - 01), 1, 0),
            day(date!(2026 - 12 - 02), 1, 725),
        ]
    }

    const DAILY_FROM: Date = date!(2026 - 11 - 01);
    const DAILY_TO: Date = date!(2026 - 12 - 31);

    async fn daily_of(store: &PgReadStore) -> Vec<DailyFigures> {
        store.daily(DAILY_FROM, DAILY_TO).await.expect("daily")
    }

    #[tokio::test]
    async fn the_figures_of_each_day_follow_creates_status_changes_cancels_and_deletes() {
        let mut f = Fixture::new().await;
        let steps = daily_history();
        f.project(steps[..5].to_vec()).await;
        assert_eq!(
            daily_of(&f.store).await,
            vec![
                DailyFigures {
                    date: date!(2026 - 11 - 30),
                    orders: 1,
                    revenue: Money::from_cents(1_000)
                },
                DailyFigures {
                    date: date!(2026 - 12 - 01),
                    orders: 2,
                    revenue: Money::from_cents(3_000)
                },
            ],
            "the day whose only order was deleted has no row left"
        );
        for step in &steps[5..] {
            f.project(vec![step.clone()]).await;
        }
        let stored = daily_of(&f.store).await;
        assert_eq!(stored, daily_expected());
        assert_eq!(
            f.store
                .daily(date!(2026 - 12 - 01), date!(2026 - 12 - 01))
                .await
                .expect("daily"),
            vec![daily_expected()[1]],
            "both ends are included"
        );
        // Summed over the days: the summary's totals.
        let summary = f.store.summary().await.expect("summary");
        let filled = ordo_domain::fill_days(DAILY_FROM, DAILY_TO, &stored);
        assert_eq!(filled.len(), 61);
        assert_eq!(
            filled.iter().map(|d| d.orders).sum::<u64>(),
            summary.total_orders
        );
        assert_eq!(
            filled.iter().map(|d| d.revenue).sum::<Money>(),
            summary.total_revenue
        );
        // Changes that cancel out within a batch write nothing.
        let (kept, gone) = (Uuid::now_v7(), Uuid::now_v7());
        let at = datetime!(2026-12-02 15:00 UTC);
        f.project(vec![
            (gone, 1, created("Bo", "bo@example.com", "Desk", 800), at),
            (gone, 2, deleted(), at),
            (kept, 1, created("Cy", "cy@example.com", "Pen", 25), at),
        ])
        .await;
        assert_eq!(daily_of(&f.store).await[2].revenue, Money::from_cents(750));
        // A reset empties the model; the log projected again gives the same figures.
        f.store.reset().await.expect("reset");
        assert!(daily_of(&f.store).await.is_empty());
        f.checkpoint = Checkpoint::origin(1);
        f.project(steps).await;
        assert_eq!(daily_of(&f.store).await, daily_expected());
        f.done().await;
    }

    #[tokio::test]
    async fn a_bulk_load_gives_the_daily_figures_of_batches_applied_one_by_one() {
        let steps = daily_history();
        let mut usual = Fixture::new().await;
        for step in &steps {
            usual.project(vec![step.clone()]).await;
        }
        let mut bulk = Fixture::new().await;
        bulk.projection.begin_bulk().await.expect("bulk mode");
        for chunk in steps.chunks(5) {
            bulk.project(chunk.to_vec()).await;
        }
        bulk.projection.finish_bulk().await.expect("finish");
        assert_eq!(daily_of(&usual.store).await, daily_expected());
        assert_eq!(daily_of(&bulk.store).await, daily_expected());
        usual.done().await;
        bulk.done().await;
    }

    #[tokio::test]
    async fn orders_stored_before_the_daily_table_are_counted_by_its_migration() {
        let mut f = Fixture::new().await;
        f.project(daily_history()).await;
        // The orders copied into a schema at migration 3, before the daily table.
        let (url, old) = testdb::fresh_url().await;
        let options = ConnectOptions::parse(&url).expect("url");
        let pool = options.pool().expect("pool");
        migrate(&pool, &options, "read_models", &MIGRATIONS[..3])
            .await
            .expect("schema 3");
        drop(pool);
        let client = testdb::raw_client().await;
        client
            .batch_execute(&format!(
                "INSERT INTO \"{old}\".orders SELECT * FROM \"{new}\".orders",
                new = f.schema
            ))
            .await
            .expect("copy the orders");
        let upgraded = PgReadStore::connect(&url).await.expect("migrate to 4");
        assert_eq!(daily_of(&upgraded).await, daily_expected());
        drop(upgraded);
        testdb::drop_schema(&old).await;
        f.done().await;
    }

    /// The index definitions of the fixture's schema, sorted.
    async fn index_defs(f: &Fixture) -> Vec<String> {
        let client = f.store.pool.get().await.expect("client");
        let mut defs: Vec<String> = client
            .query(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1",
                &[&f.schema],
            )
            .await
            .expect("indexes")
            .iter()
            .map(|r| r.get(0))
            .collect();
        defs.sort();
        defs
    }

    #[tokio::test]
    async fn a_finish_that_stopped_half_way_can_be_run_again() {
        let mut f = Fixture::new().await;
        let before = index_defs(&f).await;
        f.store.begin_bulk().await.expect("bulk mode");
        let at = datetime!(2026-01-02 03:04:05 UTC);
        f.project(vec![(
            Uuid::now_v7(),
            1,
            created("Ada", "ada@example.com", "Analytical Engine", 12_000),
            at,
        )])
        .await;
        // The indexes are built one transaction at a time: a finish that failed after
        // the first left it behind.
        let first = bulk_state(&f.store.bulk)
            .as_ref()
            .and_then(|defs| defs.first().cloned())
            .expect("deferred indexes");
        f.store
            .pool
            .get()
            .await
            .expect("client")
            .batch_execute(&first)
            .await
            .expect("build one index");
        f.store.finish_bulk().await.expect("finish");
        assert_eq!(index_defs(&f).await, before);
        assert_eq!(
            f.store.top_customers(10).await.expect("top")[0].customer_name,
            "Ada"
        );
        f.done().await;
    }

    #[tokio::test]
    async fn a_bulk_load_defers_the_indexes_and_names_and_then_answers_as_usual() {
        let mut f = Fixture::new().await;
        let before = index_defs(&f).await;
        f.store
            .begin_bulk()
            .await
            .expect("bulk mode on an empty store");
        let during = index_defs(&f).await;
        assert!(
            during.len() < before.len(),
            "secondary indexes dropped: {during:?}"
        );
        let on = |table: &str| format!(".{table} USING");
        assert!(
            during
                .iter()
                .filter(|d| d.contains(&on("orders")) || d.contains(&on("top_customers")))
                .all(|d| d.contains("_pkey ON")),
            "only the primary keys of orders and top customers stay: {during:?}"
        );
        let at = datetime!(2026-01-02 03:04:05 UTC);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        f.project(vec![
            (
                a,
                1,
                created("Ada", "ada@example.com", "Analytical Engine", 12_000),
                at,
            ),
            (
                b,
                1,
                created("Ada L.", "ada@example.com", "Difference Engine", 5_000),
                at + time::Duration::SECOND,
            ),
            (c, 1, created("Bob", "bob@example.com", "Loom", 700), at),
        ])
        .await;
        f.project(vec![(b, 2, cancelled(), at + time::Duration::MINUTE)])
            .await;
        f.store.finish_bulk().await.expect("finish");
        f.store
            .finish_bulk()
            .await
            .expect("finishing twice is harmless");
        assert_eq!(
            index_defs(&f).await,
            before,
            "every index is back as the migrations made it"
        );

        let search = ListQuery {
            search: Some("engine".into()),
            ..query()
        };
        assert_eq!(f.store.list(&search).await.expect("search").total, 2);
        let top = f.store.top_customers(10).await.expect("top");
        assert_eq!(top[0].customer_email, "ada@example.com");
        // Ada's newest order is cancelled: the name comes from the one still counted.
        assert_eq!(top[0].customer_name, "Ada");
        assert_eq!(top[0].order_count, 1);
        assert!(
            f.store.begin_bulk().await.is_err(),
            "only an empty store loads in bulk"
        );
        f.done().await;
    }

    #[tokio::test]
    async fn a_committed_order_can_be_read_back_with_its_checkpoint() {
        let mut f = Fixture::new().await;
        let id = Uuid::now_v7();
        let at = datetime!(2026-01-02 03:04:05.123456 UTC);
        f.project(vec![(
            id,
            1,
            created("Ada", "Ada@Example.com", "Widget", 1990),
            at,
        )])
        .await;
        let view = f
            .store
            .get(id)
            .await
            .expect("get")
            .expect("the order is there");
        assert_eq!(view.customer_email, "ada@example.com");
        assert_eq!(view.total_amount, Money::from_cents(1990));
        assert_eq!(
            (view.status, view.version, view.created_at),
            (Status::Pending, 1, at)
        );
        assert_eq!(
            f.store
                .load_checkpoint(OrderProjection::NAME)
                .await
                .expect("load"),
            Some(f.checkpoint.clone())
        );
        let states = f
            .store
            .load_views(&[id, Uuid::now_v7()])
            .await
            .expect("load views");
        assert_eq!(states.len(), 1);
        assert_eq!(states[&id].version(), 1);

        f.project(vec![(
            id,
            2,
            OrderEvent::StatusChanged(OrderStatusChanged {
                from: Status::Pending,
                to: Status::Confirmed,
            }),
            at,
        )])
        .await;
        assert_eq!(
            f.store
                .get(id)
                .await
                .expect("get")
                .map(|v| (v.status, v.version)),
            Some((Status::Confirmed, 2))
        );
        assert!(
            f.store
                .get(Uuid::now_v7())
                .await
                .expect("get unknown")
                .is_none()
        );
        f.done().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_concurrent_commits_from_one_checkpoint_exactly_one_wins() {
        let f = Fixture::new().await;
        // First from the origin (nothing stored: the insert path), then from the
        // checkpoint the winner stored (the update path).
        let mut from = Checkpoint::origin(1);
        for round in 0..2u64 {
            let mut tasks = Vec::new();
            for i in 1..=8u64 {
                let store = f.store.clone();
                let from = from.clone();
                tasks.push(tokio::spawn(async move {
                    let mut to = from.clone();
                    to.advance(&Position::new(0, 1_000 * (round + 1) + i, i));
                    store
                        .commit("race", ReadModelBatch::default().into(), &from, &to)
                        .await
                }));
            }
            let mut won = 0;
            for task in tasks {
                match task.await.expect("task") {
                    Ok(()) => won += 1,
                    Err(ReadStoreError::CheckpointMoved) => {}
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            assert_eq!(won, 1, "round {round}");
            from = f
                .store
                .load_checkpoint("race")
                .await
                .expect("load")
                .expect("stored");
        }
        f.done().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn processes_starting_together_migrate_once() {
        let (url, schema) = testdb::fresh_url().await;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let events = crate::PgEventStore::connect(&url)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
                let reads = PgReadStore::connect(&url)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
                (events, reads)
            }));
        }
        for task in tasks {
            let (events, reads) = task.await.expect("task");
            events.expect("event store connect");
            reads.expect("read store connect");
        }
        let client = testdb::raw_client().await;
        let rows = client
            .query(
                &format!(
                    "SELECT component, version FROM \"{schema}\".schema_migrations ORDER BY 1, 2"
                ),
                &[],
            )
            .await
            .expect("migrations");
        let applied: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            applied,
            [
                ("event_store".to_string(), 1),
                ("event_store".to_string(), 2),
                ("read_models".to_string(), 1),
                ("read_models".to_string(), 2),
                ("read_models".to_string(), 3),
                ("read_models".to_string(), 4),
            ]
        );
        testdb::drop_schema(&schema).await;
    }

    fn parked_event(n: u64, error: &str) -> ParkedEvent {
        ParkedEvent {
            position: format!("0.{n}.{n}"),
            event_id: Uuid::now_v7(),
            stream_id: format!("stream-{n}"),
            version: n,
            event_type: "OrderCreated".into(),
            error: error.into(),
            parked_at: ordo_es::now_micros(),
        }
    }

    fn past(checkpoint: &Checkpoint, n: u64) -> Checkpoint {
        let mut to = checkpoint.clone();
        to.advance(&Position::new(0, n, n));
        to
    }

    #[tokio::test]
    async fn parking_moves_the_checkpoint_and_lists_oldest_first() {
        let f = Fixture::new().await;
        let origin = Checkpoint::origin(1);
        let (one, two) = (past(&origin, 1), past(&past(&origin, 1), 2));
        let first = parked_event(1, "cannot decode: bad total ✗");
        f.store
            .park("p", first.clone(), &origin, &one)
            .await
            .expect("park from the origin");
        assert_eq!(
            f.store.load_checkpoint("p").await.expect("load"),
            Some(one.clone())
        );

        // A stale checkpoint parks nothing and moves nothing.
        let refused = parked_event(2, "refused");
        for stale in [&origin, &two] {
            let err = f
                .store
                .park("p", refused.clone(), stale, &two)
                .await
                .expect_err("stale from");
            assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
        }
        assert_eq!(
            f.store.parked("p").await.expect("parked"),
            vec![first.clone()]
        );

        // The same event parked again (a redelivery) is kept once; the checkpoint moves.
        let mut second = parked_event(2, "nul \0 inside");
        f.store
            .park("p", second.clone(), &one, &two)
            .await
            .expect("park the second");
        let three = past(&two, 3);
        f.store
            .park("p", first.clone(), &two, &three)
            .await
            .expect("park the first again");
        assert_eq!(
            f.store.load_checkpoint("p").await.expect("load"),
            Some(three)
        );
        second.error = "nul \u{FFFD} inside".into();
        assert_eq!(
            f.store.parked("p").await.expect("parked"),
            [first.clone(), second],
            "oldest first, each once; a NUL in the message is replaced"
        );
        assert!(f.store.parked("other").await.expect("parked").is_empty());

        // Parked events of one projection are apart from another's, and reset clears all.
        f.store
            .park("other", first.clone(), &origin, &one)
            .await
            .expect("park in another projection");
        assert_eq!(f.store.parked("other").await.expect("parked").len(), 1);
        f.store.reset().await.expect("reset");
        assert!(f.store.parked("p").await.expect("parked").is_empty());
        assert!(f.store.parked("other").await.expect("parked").is_empty());
        assert_eq!(f.store.load_checkpoint("p").await.expect("load"), None);
        f.done().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_a_park_and_a_commit_from_one_checkpoint_exactly_one_wins() {
        let f = Fixture::new().await;
        let origin = Checkpoint::origin(1);
        for round in 0..5u64 {
            let from = f
                .store
                .load_checkpoint("race")
                .await
                .expect("load")
                .unwrap_or_else(|| origin.clone());
            let to = past(&from, 10 + round);
            let (a, b) = (f.store.clone(), f.store.clone());
            let (from_a, to_a, from_b, to_b) = (from.clone(), to.clone(), from.clone(), to.clone());
            let parked = parked_event(round, "poison");
            let park = tokio::spawn(async move { a.park("race", parked, &from_a, &to_a).await });
            let commit = tokio::spawn(async move {
                b.commit("race", ReadModelBatch::default().into(), &from_b, &to_b)
                    .await
            });
            let results = [park.await.expect("task"), commit.await.expect("task")];
            let parked_won = results[0].is_ok();
            assert_eq!(
                results.iter().filter(|r| r.is_ok()).count(),
                1,
                "{results:?}"
            );
            for r in &results {
                if let Err(e) = r {
                    assert!(matches!(e, ReadStoreError::CheckpointMoved), "{e:?}");
                }
            }
            let stored = f.store.parked("race").await.expect("parked");
            assert_eq!(
                stored.iter().any(|p| p.version == round),
                parked_won,
                "round {round}: the event is parked exactly when the park won"
            );
        }
        f.done().await;
    }

    #[tokio::test]
    async fn a_commit_from_a_checkpoint_that_moved_changes_nothing() {
        let f = Fixture::new().await;
        let origin = Checkpoint::origin(1);
        let mut one = origin.clone();
        one.advance(&Position::new(0, 5, 1));
        let mut two = one.clone();
        two.advance(&Position::new(0, 6, 2));
        f.store
            .commit("p", ReadModelBatch::default().into(), &origin, &one)
            .await
            .expect("first commit from the origin");
        let id = Uuid::now_v7();
        assert!(
            f.store
                .load_views(&[])
                .await
                .expect("load nothing")
                .is_empty()
        );
        let view = ViewState::Live(Box::new(OrderView {
            order_id: id,
            customer_name: "Bo".into(),
            customer_email: "bo@example.com".into(),
            items: Vec::new(),
            total_amount: Money::from_cents(100),
            currency: "USD".into(),
            status: Status::Pending,
            cancellation_reason: None,
            shipping_address: None,
            created_at: datetime!(2026-01-01 00:00 UTC),
            updated_at: datetime!(2026-01-01 00:00 UTC),
            version: 1,
        }));
        let batch = ReadModelBatch {
            views: vec![(id, view)],
            status_delta: [1, 0, 0, 0, 0, 0],
            revenue_delta: Money::from_cents(100),
            ..ReadModelBatch::default()
        };
        for stale in [&origin, &two] {
            let err = f
                .store
                .commit("p", batch.clone().into(), stale, &two)
                .await
                .expect_err("stale from");
            assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
        }
        assert!(
            f.store.get(id).await.expect("get").is_none(),
            "a refused commit stored a view"
        );
        assert_eq!(f.store.summary().await.expect("summary").total_orders, 0);
        assert_eq!(
            f.store.load_checkpoint("p").await.expect("load"),
            Some(one.clone())
        );
        f.store
            .commit("p", batch.into(), &one, &two)
            .await
            .expect("commit from the stored checkpoint");
        assert_eq!(f.store.load_checkpoint("p").await.expect("load"), Some(two));
        assert!(f.store.get(id).await.expect("get").is_some());
        assert_eq!(f.store.load_checkpoint("other").await.expect("load"), None);
        f.done().await;
    }

    #[tokio::test]
    async fn summary_and_top_customers_follow_creates_cancels_and_deletes() {
        let mut f = Fixture::new().await;
        let (a1, a2, b1, c1) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let t = |h: u8| datetime!(2026-03-01 00:00 UTC) + time::Duration::hours(i64::from(h));
        f.project(vec![
            (
                a1,
                1,
                created("Ann Old", "ann@example.com", "Lamp", 1000),
                t(1),
            ),
            (b1, 1, created("Ben", "ben@example.com", "Desk", 2500), t(2)),
            (
                a2,
                1,
                created("Ann New", "ann@example.com", "Chair", 1500),
                t(3),
            ),
            (c1, 1, created("Cat", "cat@example.com", "Rug", 2500), t(4)),
        ])
        .await;
        let summary = f.store.summary().await.expect("summary");
        assert_eq!(summary.total_orders, 4);
        assert_eq!(summary.orders_by_status.get(Status::Pending), 4);
        assert_eq!(summary.total_revenue, Money::from_cents(7500));
        assert_eq!(summary.last_updated, Some(t(4)));
        let top = f.store.top_customers(10).await.expect("top");
        let rows: Vec<_> = top
            .iter()
            .map(|c| {
                (
                    c.customer_email.as_str(),
                    c.customer_name.as_str(),
                    c.order_count,
                    c.total_spent.cents(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("ann@example.com", "Ann New", 2, 2500),
                ("ben@example.com", "Ben", 1, 2500),
                ("cat@example.com", "Cat", 1, 2500),
            ]
        );
        assert_eq!(f.store.top_customers(1).await.expect("top 1").len(), 1);

        // Cancelling Ann's newest order: out of revenue, and her name comes from the
        // most recent order still counted.
        f.project(vec![(a2, 2, cancelled(), t(5))]).await;
        let summary = f.store.summary().await.expect("summary");
        assert_eq!(summary.total_orders, 4);
        assert_eq!(summary.orders_by_status.get(Status::Cancelled), 1);
        assert_eq!(summary.total_revenue, Money::from_cents(6000));
        assert_eq!(summary.average_order_value, Money::from_cents(2000));
        let top = f.store.top_customers(10).await.expect("top");
        assert_eq!(top[2].customer_email, "ann@example.com");
        assert_eq!(
            (top[2].customer_name.as_str(), top[2].order_count),
            ("Ann Old", 1)
        );

        // Deleting Ben's only order removes him everywhere; the tombstone keeps the version.
        f.project(vec![(b1, 2, OrderEvent::Deleted(OrderDeleted {}), t(6))])
            .await;
        let summary = f.store.summary().await.expect("summary");
        assert_eq!(summary.total_orders, 3);
        assert_eq!(summary.total_revenue, Money::from_cents(3500));
        let emails: Vec<_> = f
            .store
            .top_customers(10)
            .await
            .expect("top")
            .into_iter()
            .map(|c| c.customer_email)
            .collect();
        assert_eq!(emails, ["cat@example.com", "ann@example.com"]);
        assert!(f.store.get(b1).await.expect("get").is_none());
        assert_eq!(
            f.store.load_views(&[b1]).await.expect("load")[&b1],
            ViewState::Deleted { version: 2 }
        );
        assert_eq!(f.store.list(&query()).await.expect("list").total, 3);

        // Redelivering an old event changes nothing.
        let before = f.store.summary().await.expect("summary");
        f.project(vec![(
            b1,
            1,
            created("Ben", "ben@example.com", "Desk", 2500),
            t(2),
        )])
        .await;
        assert_eq!(
            f.store.summary().await.expect("summary").total_revenue,
            before.total_revenue
        );

        f.store.reset().await.expect("reset");
        let summary = f.store.summary().await.expect("summary");
        assert_eq!(
            (
                summary.total_orders,
                summary.total_revenue,
                summary.last_updated
            ),
            (0, Money::ZERO, None)
        );
        assert!(f.store.top_customers(10).await.expect("top").is_empty());
        assert_eq!(
            f.store
                .load_checkpoint(OrderProjection::NAME)
                .await
                .expect("load"),
            None
        );
        f.done().await;
    }

    #[tokio::test]
    async fn lists_filter_sort_page_and_search_case_insensitively() {
        let mut f = Fixture::new().await;
        let t = |h: u8| datetime!(2026-04-01 00:00 UTC) + time::Duration::hours(i64::from(h));
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        f.project(vec![
            (
                ids[0],
                1,
                created("Zoë Quinn", "zoe@example.com", "Blue 100% Wool Scarf", 500),
                t(1),
            ),
            (
                ids[1],
                1,
                created("Max", "max@shop.example", "Red Mug", 1500),
                t(2),
            ),
            (
                ids[2],
                1,
                created("Max", "max@shop.example", "Green Mug", 1000),
                t(3),
            ),
            (
                ids[3],
                1,
                created("Ivy", "ivy@example.com", "Tea", 2000),
                t(4),
            ),
        ])
        .await;
        let found = |page: &OrderPage| page.orders.iter().map(|o| o.order_id).collect::<Vec<_>>();

        let all = f.store.list(&query()).await.expect("list");
        assert_eq!(
            (all.total, found(&all)),
            (4, vec![ids[3], ids[2], ids[1], ids[0]])
        );
        let oldest_first = f
            .store
            .list(&ListQuery {
                sort: Sort::CreatedAt,
                ..query()
            })
            .await
            .expect("list");
        assert_eq!(found(&oldest_first), [ids[0], ids[1], ids[2], ids[3]]);
        let cheap_first = f
            .store
            .list(&ListQuery {
                sort: Sort::TotalAmount,
                ..query()
            })
            .await
            .expect("list");
        assert_eq!(found(&cheap_first), [ids[0], ids[2], ids[1], ids[3]]);

        let mugs = f
            .store
            .list(&ListQuery {
                search: Some("mug".into()),
                ..query()
            })
            .await
            .expect("search");
        assert_eq!(found(&mugs), [ids[2], ids[1]]);
        let wool = f
            .store
            .list(&ListQuery {
                search: Some("100% wool".into()),
                ..query()
            })
            .await
            .expect("search");
        assert_eq!(found(&wool), [ids[0]]);
        let literal = f
            .store
            .list(&ListQuery {
                search: Some("0%".into()),
                ..query()
            })
            .await
            .expect("search");
        assert_eq!(found(&literal), [ids[0]], "% is literal in a search");
        let by_name = f
            .store
            .list(&ListQuery {
                search: Some("zoë q".into()),
                ..query()
            })
            .await
            .expect("search");
        assert_eq!(found(&by_name), [ids[0]]);
        let by_email = f
            .store
            .list(&ListQuery {
                search: Some("shop.ex".into()),
                ..query()
            })
            .await
            .expect("search");
        assert_eq!(by_email.total, 2);
        let by_id = f
            .store
            .list(&ListQuery {
                search: Some(ids[3].to_string()[24..].to_string()),
                ..query()
            })
            .await
            .expect("search");
        assert_eq!(found(&by_id), [ids[3]]);

        let filtered = ListQuery {
            customer_email: Some("max@shop.example".into()),
            min_total: Some(Money::from_cents(1000)),
            max_total: Some(Money::from_cents(1500)),
            created_from: Some(t(2)),
            created_to: Some(t(3)),
            status: Some(Status::Pending),
            ..query()
        };
        assert_eq!(
            found(&f.store.list(&filtered).await.expect("list")),
            [ids[2], ids[1]],
            "filters are inclusive"
        );
        let none = ListQuery {
            status: Some(Status::Shipped),
            ..query()
        };
        assert_eq!(f.store.list(&none).await.expect("list").total, 0);

        let page2 = f
            .store
            .list(&ListQuery {
                page: 2,
                limit: 3,
                ..query()
            })
            .await
            .expect("page 2");
        assert_eq!(
            (page2.total, found(&page2), page2.page, page2.limit),
            (4, vec![ids[0]], 2, 3)
        );
        let past = f
            .store
            .list(&ListQuery {
                page: 9,
                limit: 3,
                ..query()
            })
            .await
            .expect("past the end");
        assert_eq!((past.total, past.orders.len()), (4, 0));

        // With a table of realistic size the planner serves a search from the trigram
        // index instead of reading every row.
        let client = testdb::raw_client().await;
        let plan = client
            .simple_query(&format!(
                "CREATE TEMP TABLE filler AS SELECT gen_random_uuid() AS id, i FROM generate_series(1, 5000) AS i;
                 INSERT INTO \"{s}\".orders (order_id, version, deleted, doc, status, customer_email, customer_name,
                     total_cents, created_at)
                 SELECT id, 1, false, '{{}}', 'pending', 'filler' || i || '@example.com', 'Filler', i, now()
                 FROM filler;
                 INSERT INTO \"{s}\".order_search (order_id, search_text)
                 SELECT id, 'filler ' || md5(i::text) FROM filler;
                 ANALYZE \"{s}\".orders;
                 ANALYZE \"{s}\".order_search;
                 EXPLAIN SELECT order_id FROM \"{s}\".orders o WHERE NOT o.deleted AND o.order_id IN
                     (SELECT t.order_id FROM \"{s}\".order_search t WHERE t.search_text LIKE '%green mug%')",
                s = f.schema
            ))
            .await
            .expect("explain");
        let plan: String = plan
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            plan.contains("order_search_text"),
            "search does not use the trigram index:\n{plan}"
        );
        f.done().await;
    }
}
