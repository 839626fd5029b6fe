//! Generations of the PostgreSQL read store, for blue-green rebuilds.
//!
//! The configured schema `S` is the first generation. A rebuild creates a schema
//! `S_g<12 hex digits>` beside it and fills it; activating it records its name in the
//! one-row table `S.read_generation`, which is what every later start opens. The pointer
//! always lives in `S`, so `S` itself is never dropped: when another generation is
//! active, `drop_inactive` only empties `S`'s read models.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use uuid::Uuid;

use ordo_domain::{
    OrderQueries, ParkedEvent, ReadGeneration, ReadStoreError, ReadStoreInspector,
    ReadStoreProvider, RebuildLock,
};
use ordo_es::Checkpoint;

use crate::PgReadStore;
use crate::db::{ConnectOptions, DbError, Migration, migrate, missing_migrations};
use crate::read;

/// Key (with the schema's hash) of the transaction-scoped advisory lock that serialises
/// `activate` and `drop_inactive`, so a generation is never dropped while it is being
/// made active. "ordg" in ASCII.
const GENERATION_LOCK: i32 = 0x6f72_6467;
/// Key (with the schema's hash) of the session-level advisory lock a rebuild holds from
/// start to end, across processes. "ordr" in ASCII. Distinct from `GENERATION_LOCK`, which
/// the rebuilding process itself takes inside `activate`.
const REBUILD_LOCK: i32 = 0x6f72_6472;
/// Hex digits after `_g`: the random end of a UUID v7.
const SUFFIX_DIGITS: usize = 12;
/// PostgreSQL truncates identifiers longer than this (bytes).
const MAX_IDENTIFIER: usize = 63;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "active read-store generation",
    sql: r#"
        -- The active read-store generation (a schema name); no row: this schema.
        CREATE TABLE {s}.read_generation (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            active text NOT NULL,
            activated_at timestamptz NOT NULL DEFAULT now()
        );
    "#,
}];

/// The generations of one PostgreSQL read store: the configured schema and the
/// `<schema>_g<hex>` schemas made beside it for rebuilds.
#[derive(Debug)]
pub struct PgReadStores {
    /// The configured schema's options; generations differ only in the schema.
    options: ConnectOptions,
    /// A small pool for the pointer and schema changes.
    pool: Pool,
    /// `S.read_generation`, quoted.
    pointer: String,
}

fn other(message: String) -> ReadStoreError {
    ReadStoreError::Other(message.into())
}

/// True when the `(namespace, relation)` exists.
async fn has_table<C: GenericClient>(
    client: &C,
    schema: &str,
    table: &str,
) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = $1 AND c.relname = $2)",
            &[&schema, &table],
        )
        .await?;
    Ok(row.get(0))
}

fn quote(schema: &str) -> String {
    // Only validated names reach here (plain identifiers); doubling quotes is belt and
    // braces.
    format!("\"{}\"", schema.replace('"', "\"\""))
}

impl PgReadStores {
    /// Connects to the database at `url` (same URL and `schema=` convention as
    /// [`PgReadStore::connect`]). The configured schema is the first generation and
    /// holds the pointer to the active one (created if missing).
    pub async fn connect(url: &str) -> Result<PgReadStores, ReadStoreError> {
        let options = ConnectOptions::parse(url).map_err(other)?;
        let mut admin = options.clone();
        admin.pool_size = admin.pool_size.min(2);
        let pool = admin.pool().map_err(other)?;
        migrate(&pool, &options, "read_generations", MIGRATIONS).await?;
        Ok(PgReadStores {
            pointer: format!("{}.read_generation", options.qualified()),
            options,
            pool,
        })
    }

    /// [`connect`](Self::connect) to read models that exist, creating and migrating
    /// nothing (for tools that look, such as `ordo status`, through
    /// [`ReadStoreInspector`]): an error naming what is missing when the schema holds no
    /// ordo read store.
    pub async fn connect_existing(url: &str) -> Result<PgReadStores, ReadStoreError> {
        let mut options = ConnectOptions::parse(url).map_err(other)?;
        options.pool_size = 1;
        let pool = options.pool().map_err(other)?;
        if let Some(missing) = missing_migrations(
            &pool,
            &options,
            "read_generations",
            "read store",
            MIGRATIONS,
        )
        .await?
        {
            return Err(other(missing));
        }
        Ok(PgReadStores {
            pointer: format!("{}.read_generation", options.qualified()),
            options,
            pool,
        })
    }

    /// The configured schema: the first generation, and home of the pointer.
    pub fn schema(&self) -> &str {
        &self.options.schema
    }

    fn generation_prefix(&self) -> String {
        format!("{}_g", self.options.schema)
    }

    /// `S` itself, or `S_g` followed by exactly 12 lower-case hex digits.
    fn is_generation(&self, id: &str) -> bool {
        id == self.options.schema
            || id
                .strip_prefix(&self.generation_prefix())
                .is_some_and(|hex| {
                    hex.len() == SUFFIX_DIGITS
                        && hex
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
    }

    /// The id of the active generation, from the pointer (`S` when none is recorded).
    async fn active_id<C: GenericClient>(&self, client: &C) -> Result<String, ReadStoreError> {
        let rows = client
            .query(&format!("SELECT active FROM {}", self.pointer), &[])
            .await
            .map_err(DbError::from)?;
        let Some(row) = rows.first() else {
            return Ok(self.options.schema.clone());
        };
        let active: String = row.get(0);
        if self.is_generation(&active) {
            Ok(active)
        } else {
            Err(ReadStoreError::Corrupt(format!(
                "{} names {active:?}, which is not a generation of schema {:?}",
                self.pointer, self.options.schema
            )))
        }
    }

    async fn open(&self, id: &str) -> Result<ReadGeneration, ReadStoreError> {
        let mut options = self.options.clone();
        options.schema = id.to_string();
        // Every generation's writes are fenced by the leases of the configured schema,
        // which outlive the generations.
        let store = PgReadStore::open_fenced_by(options, &self.options.qualified()).await?;
        Ok(ReadGeneration {
            id: id.to_string(),
            store: Arc::new(store),
        })
    }

    async fn lock_generations(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), DbError> {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&GENERATION_LOCK, &self.options.schema],
        )
        .await?;
        Ok(())
    }
}

/// A session holding the rebuild advisory lock; dropping it closes the session, which
/// releases the lock on the server (also when the process dies).
struct RebuildSession {
    _client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for RebuildSession {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

#[async_trait]
impl ReadStoreProvider for PgReadStores {
    async fn active_id(&self) -> Result<String, ReadStoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        PgReadStores::active_id(self, &client).await
    }

    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError> {
        // A dedicated session: a session-level lock on a pooled connection would outlive
        // the rebuild.
        let (client, connection) = self
            .options
            .pg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(DbError::from)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "rebuild-lock session ended");
            }
        });
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&REBUILD_LOCK, &self.options.schema],
            )
            .await
            .map_err(DbError::from)?;
        let session = RebuildSession {
            _client: client,
            connection,
        };
        if row.get::<_, bool>(0) {
            Ok(Some(RebuildLock::new(session)))
        } else {
            Ok(None)
        }
    }

    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        let id = self.active_id(&client).await?;
        if id != self.options.schema && !has_table(&client, &id, "orders").await? {
            // Derived data: recreated empty, the projection rebuilds it from the log.
            tracing::warn!(generation = %id, "the active read-store generation is missing; recreating it empty");
        }
        drop(client);
        self.open(&id).await
    }

    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        let base = &self.options.schema;
        let max_base = MAX_IDENTIFIER - 2 - SUFFIX_DIGITS;
        if base.len() > max_base {
            return Err(other(format!(
                "schema {base:?} is too long for read-store generations (at most {max_base} bytes)"
            )));
        }
        let uuid = Uuid::now_v7().simple().to_string();
        // The end of a v7 UUID is random (the start is the clock).
        let id = format!(
            "{}{}",
            self.generation_prefix(),
            &uuid[uuid.len() - SUFFIX_DIGITS..]
        );
        let client = self.pool.get().await.map_err(DbError::from)?;
        // Plain CREATE SCHEMA: a name that exists already is an error, never reused.
        client
            .batch_execute(&format!("CREATE SCHEMA {}", quote(&id)))
            .await
            .map_err(DbError::from)?;
        match self.open(&id).await {
            Ok(generation) => Ok(generation),
            Err(e) => {
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(&id)))
                    .await;
                Err(e)
            }
        }
    }

    async fn activate(&self, id: &str) -> Result<(), ReadStoreError> {
        if !self.is_generation(id) {
            return Err(ReadStoreError::Corrupt(format!(
                "{id:?} is not a read-store generation of schema {:?}",
                self.options.schema
            )));
        }
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        self.lock_generations(&tx).await?;
        if id != self.options.schema && !has_table(&tx, id, "orders").await? {
            return Err(ReadStoreError::Corrupt(format!(
                "no read-store generation {id:?}"
            )));
        }
        tx.execute(
            &format!(
                "INSERT INTO {} (singleton, active) VALUES (true, $1)
                 ON CONFLICT (singleton) DO UPDATE SET active = excluded.active, activated_at = now()",
                self.pointer
            ),
            &[&id],
        )
        .await
        .map_err(DbError::from)?;
        tx.commit().await.map_err(DbError::from)?;
        tracing::info!(generation = %id, "activated read-store generation");
        Ok(())
    }

    async fn drop_inactive(&self) -> Result<u32, ReadStoreError> {
        let base = &self.options.schema;
        // Bring S's read models (when it has any) to the current tables first, outside
        // the lock: the migration runner takes a connection and a lock of its own.
        {
            let client = self.pool.get().await.map_err(DbError::from)?;
            let has_read_models = has_table(&client, base, "orders").await?;
            drop(client);
            if has_read_models {
                migrate(&self.pool, &self.options, "read_models", read::MIGRATIONS).await?;
            }
        }
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        self.lock_generations(&tx).await?;
        let active = self.active_id(&tx).await?;
        let candidates: Vec<String> = tx
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname::text, $1) ORDER BY 1",
                &[&self.generation_prefix()],
            )
            .await
            .map_err(DbError::from)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut dropped = 0u32;
        for schema in candidates {
            if schema != active && schema != *base && self.is_generation(&schema) {
                tx.batch_execute(&format!("DROP SCHEMA {} CASCADE", quote(&schema)))
                    .await
                    .map_err(DbError::from)?;
                tracing::info!(generation = %schema, "dropped read-store generation");
                dropped += 1;
            }
        }
        if active != *base && has_table(&tx, base, "orders").await? {
            let s = self.options.qualified();
            let row = tx
                .query_one(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM {s}.orders) OR EXISTS (SELECT 1 FROM {s}.checkpoints)
                             OR EXISTS (SELECT 1 FROM {s}.parked_events) OR EXISTS (SELECT 1 FROM {s}.top_customers)"
                    ),
                    &[],
                )
                .await
                .map_err(DbError::from)?;
            if row.get::<_, bool>(0) {
                tx.batch_execute(&read::reset_sql(&s))
                    .await
                    .map_err(DbError::from)?;
                tracing::info!(generation = %base, "emptied the inactive read models of the configured schema");
                dropped += 1;
            }
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(dropped)
    }
}

impl PgReadStores {
    /// Generation `id` read-only; `None` when it holds no read models.
    async fn inspect(&self, id: &str) -> Result<Option<PgReadStore>, ReadStoreError> {
        if !self.is_generation(id) {
            return Err(ReadStoreError::Corrupt(format!(
                "no read-store generation {id:?}"
            )));
        }
        let mut options = self.options.clone();
        options.schema = id.to_string();
        PgReadStore::open_existing(options).await
    }
}

/// Read-only: no schema, table or lock is created or taken.
#[async_trait]
impl ReadStoreInspector for PgReadStores {
    async fn active_generation(&self) -> Result<String, ReadStoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        PgReadStores::active_id(self, &client).await
    }

    /// The active generation and every `S_g<hex>` schema; `S` itself only when active
    /// (otherwise it just holds the pointer).
    async fn generation_ids(&self) -> Result<Vec<String>, ReadStoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        let active = PgReadStores::active_id(self, &client).await?;
        let mut ids: Vec<String> = client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname::text, $1) ORDER BY 1",
                &[&self.generation_prefix()],
            )
            .await
            .map_err(DbError::from)?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .filter(|id| self.is_generation(id))
            .collect();
        if !ids.contains(&active) {
            ids.push(active);
        }
        ids.sort();
        Ok(ids)
    }

    /// Whether some session holds the rebuild advisory lock, from `pg_locks`: asking
    /// never takes it. A two-key advisory lock shows as classid = key 1, objid = key 2
    /// (as unsigned 32-bit values), objsubid = 2.
    async fn rebuild_running(&self) -> Result<bool, ReadStoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        let row = client
            .query_one(
                "SELECT EXISTS (
                     SELECT 1 FROM pg_locks
                      WHERE locktype = 'advisory' AND granted AND objsubid = 2
                        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND classid = ((($1::int4)::bigint) & 4294967295)::oid
                        AND objid = (((hashtext($2::text))::bigint) & 4294967295)::oid)",
                &[&REBUILD_LOCK, &self.options.schema],
            )
            .await
            .map_err(DbError::from)?;
        Ok(row.get(0))
    }

    async fn checkpoint(
        &self,
        generation: &str,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        match self.inspect(generation).await? {
            // Every shard's checkpoint too, where the projection is divided into shards.
            Some(store) => {
                ordo_domain::read_store::stored_projection_checkpoint(&store, projection, None)
                    .await
            }
            None => Ok(None),
        }
    }

    async fn parked(
        &self,
        generation: &str,
        projection: &str,
    ) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        match self.inspect(generation).await? {
            Some(store) => store.parked(projection).await,
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use ordo_domain::{OrderReadStore, ParkedEvent, ReadModelBatch, ReadModelWriter};
    use ordo_es::{Checkpoint, Position};

    use super::*;
    use crate::testdb;

    async fn schemas_like(base: &str) -> Vec<String> {
        let client = testdb::raw_client().await;
        client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname::text, $1 || '_g') ORDER BY 1",
                &[&base],
            )
            .await
            .expect("list schemas")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Moves `projection`'s checkpoint from the origin, so the store holds something.
    async fn touch(store: &dyn OrderReadStore, projection: &str) -> Checkpoint {
        let origin = Checkpoint::origin(1);
        let mut to = origin.clone();
        to.advance(&Position::new(0, 7, 1));
        store
            .commit(projection, ReadModelBatch::default().into(), &origin, &to)
            .await
            .expect("commit");
        to
    }

    #[tokio::test]
    async fn a_new_generation_becomes_active_durably_and_the_others_are_dropped() {
        let (url, base) = testdb::fresh_url().await;
        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        assert_eq!(provider.schema(), base);
        let first = provider.open_active().await.expect("open");
        assert_eq!(first.id, base);
        touch(first.store.as_ref(), "p").await;

        let second = provider.create_generation().await.expect("create");
        let hex = second
            .id
            .strip_prefix(&format!("{base}_g"))
            .expect("named after the schema");
        assert_eq!(hex.len(), 12, "{}", second.id);
        assert!(second.id.len() <= 63);
        assert_eq!(
            second.store.load_checkpoint("p").await.expect("load"),
            None,
            "a new generation starts empty"
        );
        let moved = touch(second.store.as_ref(), "p").await;
        assert_eq!(
            provider.open_active().await.expect("still the first").id,
            base
        );

        provider.activate(&second.id).await.expect("activate");
        drop(first);
        let reopened = PgReadStores::connect(&url)
            .await
            .expect("a second provider")
            .open_active()
            .await
            .expect("reopen");
        assert_eq!(reopened.id, second.id);
        assert_eq!(
            reopened.store.load_checkpoint("p").await.expect("load"),
            Some(moved)
        );

        // A third generation (say, an interrupted rebuild) and the first are removed;
        // the configured schema stays (it holds the pointer) with its read models empty.
        let third = provider.create_generation().await.expect("create");
        assert_ne!(third.id, second.id);
        drop(third);
        assert_eq!(schemas_like(&base).await.len(), 3);
        assert_eq!(provider.drop_inactive().await.expect("drop"), 2);
        assert_eq!(schemas_like(&base).await, [base.clone(), second.id.clone()]);
        let emptied = PgReadStore::connect(&url).await.expect("open the base");
        assert_eq!(emptied.load_checkpoint("p").await.expect("load"), None);
        assert_eq!(provider.drop_inactive().await.expect("again"), 0);
        assert_eq!(
            provider.open_active().await.expect("active").id,
            second.id,
            "dropping never touches the active generation"
        );

        // Back to the configured schema: the generation goes.
        provider.activate(&base).await.expect("activate the base");
        assert_eq!(provider.open_active().await.expect("active").id, base);
        assert_eq!(provider.drop_inactive().await.expect("drop"), 1);
        assert_eq!(schemas_like(&base).await, vec![base.clone()]);
        drop((reopened, emptied));
        testdb::drop_schema_family(&base).await;
    }

    #[tokio::test]
    async fn a_new_generation_keeps_daily_figures_and_dropping_the_old_one_empties_them() {
        use ordo_domain::{DailyFigures, DayDelta, Money};
        use time::macros::date;
        let (url, base) = testdb::fresh_url().await;
        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        let day = date!(2026 - 12 - 02);
        let commit = |store: Arc<dyn OrderReadStore>, orders: i64, cents: i128| async move {
            let mut batch = ReadModelBatch::default();
            batch.daily_deltas.insert(
                day,
                DayDelta {
                    orders,
                    revenue: Money::from_cents(cents),
                },
            );
            let origin = Checkpoint::origin(1);
            let mut to = origin.clone();
            to.advance(&Position::new(0, 1, 0));
            store
                .commit("orders", batch.into(), &origin, &to)
                .await
                .expect("commit");
        };
        let figures = |orders, cents| {
            vec![DailyFigures {
                date: day,
                orders,
                revenue: Money::from_cents(cents),
            }]
        };
        let first = provider.open_active().await.expect("open");
        commit(first.store.clone(), 2, 500).await;
        let second = provider.create_generation().await.expect("create");
        assert!(
            second
                .store
                .daily(day, day)
                .await
                .expect("daily")
                .is_empty(),
            "a new generation has the table, empty"
        );
        commit(second.store.clone(), 3, 700).await;
        provider.activate(&second.id).await.expect("activate");
        assert_eq!(provider.drop_inactive().await.expect("drop"), 1);
        assert!(first.store.daily(day, day).await.expect("daily").is_empty());
        let active = provider.open_active().await.expect("active");
        assert_eq!(
            active.store.daily(day, day).await.expect("daily"),
            figures(3, 700)
        );
        drop((first, second, active));
        testdb::drop_schema_family(&base).await;
    }

    #[tokio::test]
    async fn the_inspector_creates_nothing_and_sees_a_rebuild_by_its_lock() {
        let (url, base) = testdb::fresh_url().await;
        let err = PgReadStores::connect_existing(&url)
            .await
            .expect_err("no read store there");
        assert!(err.to_string().contains("read store failure"), "{err}");
        assert!(schemas_like(&base).await.is_empty(), "nothing was created");

        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        let active = provider.open_active().await.expect("open");
        let moved = touch(active.store.as_ref(), "p").await;
        let inspector = PgReadStores::connect_existing(&url)
            .await
            .expect("an existing read store");
        assert_eq!(inspector.active_generation().await.expect("active"), base);
        assert_eq!(
            inspector.checkpoint(&base, "p").await.expect("read"),
            Some(moved)
        );
        assert!(inspector.parked(&base, "p").await.expect("read").is_empty());
        assert!(!inspector.rebuild_running().await.expect("ask"));

        let lock = provider
            .try_lock_rebuild()
            .await
            .expect("ask")
            .expect("free");
        let building = provider.create_generation().await.expect("create");
        assert!(inspector.rebuild_running().await.expect("ask"));
        assert_eq!(
            inspector.generation_ids().await.expect("list"),
            [base.clone(), building.id.clone()]
        );
        assert_eq!(
            inspector.checkpoint(&building.id, "p").await.expect("read"),
            None
        );
        assert!(
            provider.try_lock_rebuild().await.expect("ask").is_none(),
            "looking never took the lock from its holder"
        );
        drop(lock);
        let mut released = false;
        for _ in 0..100 {
            // The session closes in the background.
            if !inspector.rebuild_running().await.expect("ask") {
                released = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(released, "the lock's release is seen");
        drop((active, building));
        testdb::drop_schema_family(&base).await;
    }

    #[tokio::test]
    async fn ids_that_are_not_existing_generations_are_refused() {
        let (url, base) = testdb::fresh_url().await;
        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        let generation = provider.create_generation().await.expect("create");
        let missing = format!("{base}_g0123456789ab");
        let upper = generation.id.to_uppercase();
        let longer = format!("{}0", generation.id);
        for bad in [
            missing.as_str(),
            "public",
            "",
            upper.as_str(),
            longer.as_str(),
            &format!("{base}_gxyz"),
            &format!("{base}_g0123456789a\""),
            &format!("{base}x"),
        ] {
            let err = provider.activate(bad).await.expect_err(bad);
            assert!(
                matches!(err, ReadStoreError::Corrupt(_)),
                "{bad:?}: {err:?}"
            );
        }
        assert_eq!(provider.open_active().await.expect("active").id, base);

        // A pointer that names something else is reported, never followed.
        let client = testdb::raw_client().await;
        client
            .execute(
                &format!("INSERT INTO \"{base}\".read_generation (active) VALUES ('public')"),
                &[],
            )
            .await
            .expect("corrupt the pointer");
        let err = provider.open_active().await.expect_err("corrupt pointer");
        assert!(matches!(err, ReadStoreError::Corrupt(_)), "{err:?}");
        assert!(provider.drop_inactive().await.is_err());
        drop(generation);
        testdb::drop_schema_family(&base).await;
    }

    #[tokio::test]
    async fn a_schema_too_long_for_a_generation_name_cannot_make_one() {
        let (url, base) = testdb::fresh_url().await;
        // t_<32 hex> is 34 bytes; 50 is one more than a generation name leaves.
        let long = format!("{base}_{}", "x".repeat(50 - base.len() - 1));
        let url = url.replace(&base, &long);
        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        let err = provider.create_generation().await.expect_err("too long");
        assert!(matches!(err, ReadStoreError::Other(_)), "{err:?}");
        assert_eq!(provider.open_active().await.expect("open").id, long);
        testdb::drop_schema_family(&long).await;
    }

    #[tokio::test]
    async fn a_parked_event_in_the_inactive_base_counts_as_read_models_to_empty() {
        let (url, base) = testdb::fresh_url().await;
        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        let first = provider.open_active().await.expect("open");
        let origin = Checkpoint::origin(1);
        let mut to = origin.clone();
        to.advance(&Position::new(0, 3, 1));
        first
            .store
            .park(
                "p",
                ParkedEvent {
                    position: "0.3.1".into(),
                    event_id: Uuid::now_v7(),
                    stream_id: "s".into(),
                    version: 1,
                    event_type: "Broken".into(),
                    error: "bad".into(),
                    parked_at: ordo_es::now_micros(),
                },
                &origin,
                &to,
            )
            .await
            .expect("park");
        let second = provider.create_generation().await.expect("create");
        provider.activate(&second.id).await.expect("activate");
        assert_eq!(provider.drop_inactive().await.expect("drop"), 1);
        assert!(first.store.parked("p").await.expect("parked").is_empty());
        assert_eq!(first.store.load_checkpoint("p").await.expect("load"), None);
        drop((first, second));
        testdb::drop_schema_family(&base).await;
    }
}
