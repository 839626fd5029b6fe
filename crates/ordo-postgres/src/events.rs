//! The event store: one `events` table, a gap-safe global log split into partitions,
//! each ordered by (transaction id, position).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use ordo_es::rewrite::check_rewrites;
use ordo_es::{
    Appended, Checkpoint, Cursor, EventRewriter, EventStore, ExpectedVersion, Metadata, NewEvent,
    Payload, Position, RecordedEvent, Rewrite, RewriteCursor, Snapshot, SnapshotStore, StoreError,
    StreamId, partition_of,
};

use crate::db::{
    ConnectOptions, DbError, MIGRATION_LOCK, Migration, migrate_through, missing_migrations,
};

/// How often the waiters of one store look for events appended by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long `read_all` waits for in-flight transactions to finish when committed events
/// exist that are not yet safe to hand out (see [`PgEventStore::read_all`]).
const SETTLE_WAIT: Duration = Duration::from_millis(500);
const SETTLE_STEP: Duration = Duration::from_millis(5);
/// Positions per transaction when `connect` gives the events of an older log their
/// partition: the streams met among them are partitioned together.
const FILL_RANGE: i64 = 5_000;
/// How long `purge_old_versions` waits for transactions older than the rewrite to end.
const PURGE_WAIT: Duration = Duration::from_secs(60);
const PURGE_POLL: Duration = Duration::from_millis(100);

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "events table",
        sql: r#"
        CREATE TABLE {s}.events (
            position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
            stream_id text NOT NULL,
            version bigint NOT NULL CHECK (version >= 1),
            event_id uuid NOT NULL UNIQUE,
            aggregate_type text NOT NULL,
            event_type text NOT NULL,
            schema_version integer NOT NULL,
            occurred_at timestamptz NOT NULL,
            -- json, not jsonb: kept byte for byte (number text such as 19.90, \u0000).
            data json NOT NULL,
            metadata json NOT NULL,
            UNIQUE (stream_id, version)
        );
        CREATE INDEX events_tx_position ON {s}.events (tx_id, position);
    "#,
    },
    Migration {
        version: 2,
        description: "snapshots table",
        sql: r#"
        -- A cache of aggregate states, the newest per stream. json, not jsonb, like the
        -- events: the state reads back byte for byte.
        CREATE TABLE {s}.snapshots (
            stream_id text PRIMARY KEY,
            aggregate_type text NOT NULL,
            version bigint NOT NULL CHECK (version >= 0),
            schema_version integer NOT NULL,
            state json NOT NULL,
            taken_at timestamptz NOT NULL
        );
    "#,
    },
    Migration {
        version: 3,
        description: "events partition column (filled in by connect), log settings",
        sql: r#"
        -- Nullable at first: connect gives every event already stored its partition,
        -- then applies migration 4.
        ALTER TABLE {s}.events ADD COLUMN partition integer;
        -- One row: the partition count, fixed at first use.
        CREATE TABLE {s}.log_settings (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            partitions integer NOT NULL CHECK (partitions BETWEEN 1 AND 256)
        );
    "#,
    },
    // Applied by `connect` itself (see `partition_log`), once every event has its
    // partition; the migration runner stops before it.
    Migration {
        version: PARTITIONED,
        description: "every event partitioned: partition NOT NULL, index (partition, tx_id, position)",
        sql: r#"
        ALTER TABLE {s}.events ALTER COLUMN partition SET NOT NULL;
        CREATE INDEX events_partition_tx_position ON {s}.events (partition, tx_id, position);
        -- Every read of the log now names its partition.
        DROP INDEX {s}.events_tx_position;
    "#,
    },
];

/// The migration that `connect` applies after filling in the partitions.
const PARTITIONED: i32 = 4;

/// The columns every read selects, in the order [`decode`] expects.
const COLUMNS: &str = "e.event_id, e.stream_id, e.aggregate_type, e.version, e.tx_id::text, e.position, \
                       e.event_type, e.schema_version, e.occurred_at, e.data, e.metadata, e.partition";

/// The statements, with the schema spliced in once.
#[derive(Debug)]
struct Statements {
    append: String,
    read_stream: String,
    read_all: String,
    settled_heads: String,
    count_after: String,
    head: String,
    event_id_at: String,
    legacy_events: String,
    rewrite: String,
    purge: String,
    older_snapshots: String,
    load_snapshot: String,
    save_snapshot: String,
    delete_snapshots: String,
}

/// The partitions a statement looks at, with their cursors: `$1` partition numbers,
/// `$2` transaction ids as text (cast to xid8), `$3` positions. Each partition is then
/// one range scan of the (partition, tx_id, position) index.
const CURSORS: &str = "unnest($1::int4[], $2::text[], $3::int8[]) AS c(p, tx, pos)";

impl Statements {
    fn new(s: &str) -> Self {
        Self {
            append: append_sql(s),
            read_stream: format!(
                "SELECT {COLUMNS} FROM {s}.events e WHERE e.stream_id = $1 AND e.version >= $2 \
                 ORDER BY e.version LIMIT $3"
            ),
            // Per partition, the first `$4` rows after its cursor in (tx_id, position)
            // order, at most `$5` in all (the last partitions' tails cut off); `settled`
            // marks the ones below the snapshot's xmin, which no transaction still
            // running can precede. Those come first, so in each partition the settled
            // rows are a prefix.
            read_all: format!(
                "WITH snap AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
                 SELECT {COLUMNS}, e.tx_id < snap.xmin AS settled \
                 FROM snap CROSS JOIN {CURSORS} CROSS JOIN LATERAL ( \
                     SELECT * FROM {s}.events e \
                     WHERE e.partition = c.p AND (e.tx_id, e.position) > (c.tx::xid8, c.pos) \
                     ORDER BY e.tx_id, e.position LIMIT $4 \
                 ) e \
                 ORDER BY e.partition, e.tx_id, e.position LIMIT $5"
            ),
            // Per partition (0 to `$1 - 1`), the greatest settled (tx_id, position): one
            // backward step of the index each.
            settled_heads: format!(
                "WITH snap AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
                 SELECT g.p, h.tx_id::text, h.position \
                 FROM snap CROSS JOIN generate_series(0, $1::int4 - 1) AS g(p) CROSS JOIN LATERAL ( \
                     SELECT e.tx_id, e.position FROM {s}.events e \
                     WHERE e.partition = g.p AND e.tx_id < snap.xmin \
                     ORDER BY e.tx_id DESC, e.position DESC LIMIT 1 \
                 ) h"
            ),
            count_after: format!(
                "SELECT coalesce(sum(x.n), 0)::int8 FROM {CURSORS} CROSS JOIN LATERAL ( \
                     SELECT count(*) AS n FROM {s}.events e \
                     WHERE e.partition = c.p AND (e.tx_id, e.position) > (c.tx::xid8, c.pos) \
                 ) x"
            ),
            // Per partition, the greatest (tx_id, position) of every committed row,
            // settled or not: a position an append returned is committed, so never past
            // it. One backward step of the index per partition.
            head: format!(
                "SELECT g.p, h.tx_id::text, h.position \
                 FROM generate_series(0, $1::int4 - 1) AS g(p) CROSS JOIN LATERAL ( \
                     SELECT e.tx_id, e.position FROM {s}.events e WHERE e.partition = g.p \
                     ORDER BY e.tx_id DESC, e.position DESC LIMIT 1 \
                 ) h"
            ),
            // By the primary key; the transaction id and the partition must match too,
            // so that a row whose position is reused under another transaction is not
            // taken for it.
            event_id_at: format!(
                "SELECT e.event_id FROM {s}.events e \
                 WHERE e.position = $2 AND e.tx_id = $1::text::xid8 AND e.partition = $3"
            ),
            // One partition's events of a type below a schema version after a cursor: a
            // range scan of the (partition, tx_id, position) index, filtered.
            legacy_events: format!(
                "SELECT {COLUMNS} FROM {s}.events e \
                 WHERE e.partition = $1 AND (e.tx_id, e.position) > ($2::text::xid8, $3) \
                   AND e.event_type = $4 AND e.schema_version < $5 \
                 ORDER BY e.tx_id, e.position LIMIT $6"
            ),
            // Each row rewritten only when it still holds the event where and as it was
            // read. Event id, (stream_id, version) and position are each unique and
            // indexed, so every change is one index lookup, whichever the planner takes
            // (the (stream_id, version) one, on a table of 200,000 rows).
            rewrite: format!(
                "UPDATE {s}.events e SET schema_version = u.schema_version, data = u.data \
                 FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int4[], $5::text[], \
                             $6::int8[], $7::int4[], $8::int4[], $9::json[]) \
                     AS u(event_id, stream_id, version, partition, tx_id, position, \
                          expected_schema_version, schema_version, data) \
                 WHERE e.event_id = u.event_id AND e.stream_id = u.stream_id \
                   AND e.version = u.version AND e.partition = u.partition \
                   AND e.tx_id = u.tx_id::xid8 AND e.position = u.position \
                   AND e.schema_version = u.expected_schema_version"
            ),
            purge: format!("VACUUM FULL {s}.events"),
            // What may still see row versions that transaction `$1` (xid8 as text) saw
            // dead: sessions of this database (or of none: WAL senders with hot standby
            // feedback) whose snapshot or transaction is older, replication slots holding
            // an older xmin, and older prepared transactions. VACUUM keeps the old row
            // versions for them.
            older_snapshots: "WITH x AS (SELECT age($1::text::xid8::xid) AS age) \
                 SELECT coalesce(string_agg(h, ', '), '') FROM ( \
                     SELECT 'session ' || a.pid AS h FROM pg_stat_activity a, x \
                     WHERE a.pid <> pg_backend_pid() \
                       AND (a.datname = current_database() OR a.datname IS NULL) \
                       AND (age(a.backend_xmin) > x.age OR age(a.backend_xid) > x.age) \
                     UNION ALL \
                     SELECT 'replication slot ' || r.slot_name FROM pg_replication_slots r, x \
                     WHERE age(r.xmin) > x.age \
                     UNION ALL \
                     SELECT 'prepared transaction ' || p.gid FROM pg_prepared_xacts p, x \
                     WHERE age(p.transaction) > x.age \
                 ) holders"
                .to_owned(),
            load_snapshot: format!(
                "SELECT stream_id, aggregate_type, version, schema_version, state, taken_at \
                 FROM {s}.snapshots WHERE stream_id = $1"
            ),
            // Keeps the highest version: an older (or equal) one changes nothing.
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots AS snapshots \
                     (stream_id, aggregate_type, version, schema_version, state, taken_at) \
                 VALUES ($1, $2, $3, $4, $5::json, $6) \
                 ON CONFLICT (stream_id) DO UPDATE SET aggregate_type = excluded.aggregate_type, \
                     version = excluded.version, schema_version = excluded.schema_version, \
                     state = excluded.state, taken_at = excluded.taken_at \
                 WHERE excluded.version > snapshots.version"
            ),
            delete_snapshots: format!("DELETE FROM {s}.snapshots"),
        }
    }
}

/// The append: one statement, so one round trip. It reads the stream's version, inserts
/// every event only when that version is the expected one (`$2`, or NULL for "any"), and
/// returns the version found together with each inserted row. A failed guard inserts
/// nothing and returns one row with NULL position; a concurrent append at the same
/// version fails on UNIQUE (stream_id, version). `$10` is the stream's partition
/// ([`partition_of`] its id and the store's partition count), computed by the caller.
///
/// ordo's append statement for schema `s` (quoted), exported so that benchmarks drive
/// exactly what the store runs.
pub fn append_sql(s: &str) -> String {
    format!(
        "WITH cur AS (
             SELECT coalesce(max(version), 0) AS v FROM {s}.events WHERE stream_id = $1::text
         ), ins AS (
             INSERT INTO {s}.events
                 (stream_id, version, event_id, aggregate_type, event_type, schema_version, occurred_at, data, metadata, partition)
             SELECT $1::text, cur.v + u.ord, u.event_id, u.aggregate_type, u.event_type, u.schema_version,
                    u.occurred_at, u.data, u.metadata, $10::int4
             FROM cur, unnest($3::uuid[], $4::text[], $5::text[], $6::int4[], $7::timestamptz[], $8::json[], $9::json[])
                 WITH ORDINALITY AS u(event_id, aggregate_type, event_type, schema_version, occurred_at, data, metadata, ord)
             WHERE $2::int8 IS NULL OR cur.v = $2::int8
             ORDER BY u.ord
             RETURNING position, tx_id, version
         )
         SELECT cur.v, ins.position, ins.tx_id::text, ins.version FROM cur LEFT JOIN ins ON true ORDER BY ins.version"
    )
}

/// The columns of an append, one array per column, as `append_sql` binds them.
#[derive(Debug, Default)]
pub(crate) struct AppendArrays {
    pub event_ids: Vec<Uuid>,
    pub aggregate_types: Vec<String>,
    pub event_types: Vec<String>,
    pub schema_versions: Vec<i32>,
    pub occurred_at: Vec<OffsetDateTime>,
    pub data: Vec<Json<Payload>>,
    pub metadata: Vec<Json<Metadata>>,
}

impl AppendArrays {
    pub(crate) fn new(events: Vec<NewEvent>) -> Result<Self, StoreError> {
        let mut a = AppendArrays::default();
        for event in events {
            let schema_version = i32::try_from(event.schema_version).map_err(|_| {
                StoreError::Invalid(format!(
                    "schema version {} is too large",
                    event.schema_version
                ))
            })?;
            a.event_ids.push(event.event_id);
            a.aggregate_types.push(event.aggregate_type);
            a.event_types.push(event.event_type);
            a.schema_versions.push(schema_version);
            a.occurred_at.push(event.occurred_at);
            a.data.push(Json(event.data));
            a.metadata.push(Json(event.metadata));
        }
        Ok(a)
    }
}

/// The PostgreSQL event store. See the crate docs for the schema and the gap problem.
///
/// The log has a fixed number of partitions (`partitions=N` in the URL, 1 to 256,
/// default 8), recorded in the schema (`log_settings`) when the store is created; a
/// later connect asking for another count is refused. Every event row carries its
/// partition, [`partition_of`] its stream id; all of a stream's events are in one
/// partition. Each partition is a gap-safe log of its own, ordered by (transaction id,
/// position), so a projection shard reads its partition alone
/// ([`Checkpoint::only`]), by one range scan of the (partition, tx_id, position)
/// index. A position token is `<partition>.<tx_id>.<position>`.
///
/// # A log written before partitions
///
/// A store created by an ordo without partitions holds events without one. `connect`
/// migrates it: migration 3 adds the column (nullable) and the settings table; then,
/// under the migration lock, the count (the URL's) is recorded, and every event gets
/// its partition, stream by stream in batches, one transaction each: the streams met in
/// a range of 5,000 positions, with all their events
/// (`UPDATE ... WHERE stream_id = ANY($1) AND partition IS NULL`); finally, with the
/// table locked, the events still without one (appended meanwhile by an older process)
/// get theirs, the column becomes NOT NULL, the index (partition, tx_id, position)
/// replaces (tx_id, position), and migration 4 is recorded. An interrupted migration
/// goes on at the next connect; processes connecting together wait for one another.
/// Updating a row leaves its `tx_id` column and position as they were, so the gap-safe
/// order is kept. Processes of the older ordo cannot append any more afterwards (their
/// rows would lack the partition): stop them before.
///
/// Positions handed out before the migration were `0.<tx_id>.<position>`; afterwards
/// an event's position is `<its partition>.<tx_id>.<position>`, the same (tx_id,
/// position) pair. A cursor is such a global pair, and each partition is ordered by
/// it, so a checkpoint of the one partition written before the migration covers, in
/// every partition, exactly what it covered in the one: a reader may take its cursor
/// for every partition and goes on without skipping or repeating an event (the
/// projection relies on this).
#[derive(Debug)]
pub struct PgEventStore {
    pool: Pool,
    schema: String,
    partitions: u32,
    sql: Statements,
    /// Woken by this process's appends; waiters also poll for other processes' ones.
    appended: Notify,
    /// This process's appends so far: a waiter woken by one reads the heads again.
    appends: AtomicU64,
    /// The settled heads all waiters of this store share, so that they poll the
    /// database at most once per [`POLL_INTERVAL`] together.
    heads: Mutex<SettledHeads>,
}

/// Per partition, the greatest settled (tx_id, position), as last read.
#[derive(Debug, Default)]
struct SettledHeads {
    heads: Vec<Option<Cursor>>,
    /// When the read started, and how many appends of this process it had seen.
    read_at: Option<Instant>,
    appends: u64,
    /// How many times they were read (for tests).
    reads: u64,
}

impl PgEventStore {
    /// Connects to the database at `url` (a `postgres://` URL; see the crate docs for
    /// `schema=`, `pool_size=` and `partitions=`), creating or migrating the schema as
    /// needed.
    pub async fn connect(url: &str) -> Result<PgEventStore, StoreError> {
        let options = ConnectOptions::parse(url).map_err(StoreError::Invalid)?;
        let pool = options.pool().map_err(|e| StoreError::Other(e.into()))?;
        migrate_through(&pool, &options, "event_store", MIGRATIONS, PARTITIONED - 1).await?;
        let partitions = partition_log(&pool, &options).await?;
        for finding in crate::durability::warnings(&pool).await {
            tracing::warn!(schema = %options.schema, "{finding}");
        }
        Ok(Self::new(pool, options, partitions))
    }

    /// [`connect`](Self::connect) to an event store that exists, creating and migrating
    /// nothing (for tools that look, such as `ordo status`): [`StoreError::Invalid`]
    /// when the schema holds no event store or an older one, or one with another
    /// partition count than the URL's.
    pub async fn connect_existing(url: &str) -> Result<PgEventStore, StoreError> {
        let options = ConnectOptions::parse(url).map_err(StoreError::Invalid)?;
        let pool = options.pool().map_err(|e| StoreError::Other(e.into()))?;
        if let Some(missing) =
            missing_migrations(&pool, &options, "event_store", "event store", MIGRATIONS).await?
        {
            return Err(StoreError::Invalid(missing));
        }
        let client = pool.get().await.map_err(DbError::from)?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT partitions FROM {}.log_settings",
                    options.qualified()
                ),
                &[],
            )
            .await
            .map_err(DbError::from)?;
        drop(client);
        let stored = match row {
            Some(row) => row.get::<_, i32>(0),
            None => {
                return Err(StoreError::Corrupt(format!(
                    "the event store in schema {:?} records no partition count",
                    options.schema
                )));
            }
        };
        let partitions = check_partitions(&options, stored)?;
        Ok(Self::new(pool, options, partitions))
    }

    fn new(pool: Pool, options: ConnectOptions, partitions: u32) -> Self {
        PgEventStore {
            pool,
            sql: Statements::new(&options.qualified()),
            schema: options.schema,
            partitions,
            appended: Notify::new(),
            appends: AtomicU64::new(0),
            heads: Mutex::new(SettledHeads::default()),
        }
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await.map_err(DbError::from)?)
    }

    /// Runs a cached prepared statement: one round trip once the connection knows it.
    async fn query_db(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        Ok(self.query_db(sql, params).await?)
    }

    /// The partitions `after` reads (those not pinned at [`Cursor::END`]), with its
    /// cursors there.
    fn unpinned(&self, after: &Checkpoint) -> CursorParams {
        let mut params = CursorParams::default();
        for p in (0..self.partitions).filter(|p| !after.is_pinned(*p)) {
            params.push(p as i32, after.cursor(p));
        }
        params
    }

    /// Per partition, the greatest settled (tx_id, position), read now.
    async fn read_settled_heads(&self) -> Result<Vec<Option<Cursor>>, StoreError> {
        let partitions = self.partitions as i32;
        let rows = self.query(&self.sql.settled_heads, &[&partitions]).await?;
        let mut heads = vec![None; self.partitions as usize];
        for row in &rows {
            let (partition, cursor) = decode_head(row)?;
            if let Some(slot) = heads.get_mut(partition as usize) {
                *slot = Some(cursor);
            }
        }
        Ok(heads)
    }

    /// The settled heads as the waiters share them: read again when older than
    /// [`POLL_INTERVAL`] or than an append of this process, by whichever waiter finds
    /// them so (the others wait for its answer). Also returns when they go stale.
    async fn settled_heads(&self) -> Result<(Vec<Option<Cursor>>, Instant), StoreError> {
        let appends = self.appends.load(Ordering::Acquire);
        let mut shared = self.heads.lock().await;
        let fresh = shared
            .read_at
            .is_some_and(|at| at.elapsed() < POLL_INTERVAL && shared.appends >= appends);
        if !fresh {
            let appends = self.appends.load(Ordering::Acquire);
            let started = Instant::now();
            shared.heads = self.read_settled_heads().await?;
            shared.read_at = Some(started);
            shared.appends = appends;
            shared.reads += 1;
        }
        let stale_at = shared.read_at.unwrap_or_else(Instant::now) + POLL_INTERVAL;
        Ok((shared.heads.clone(), stale_at))
    }
}

/// The cursors of the partitions a read looks at, as [`CURSORS`] binds them.
#[derive(Clone, Debug, Default)]
struct CursorParams {
    partitions: Vec<i32>,
    tx_ids: Vec<String>,
    positions: Vec<i64>,
}

impl CursorParams {
    fn push(&mut self, partition: i32, cursor: Cursor) {
        self.partitions.push(partition);
        self.tx_ids.push(cursor.major.to_string());
        self.positions
            .push(i64::try_from(cursor.minor).unwrap_or(i64::MAX));
    }
}

/// The stored partition count, unless the URL asks for another one.
fn check_partitions(options: &ConnectOptions, stored: i32) -> Result<u32, StoreError> {
    let stored = u32::try_from(stored)
        .map_err(|_| StoreError::Corrupt(format!("a partition count of {stored}")))?;
    if stored != options.partitions {
        return Err(StoreError::Invalid(format!(
            "the event store in schema {:?} has {stored} partitions; this process asked for {} \
             (the URL's partitions=, default {}): the count is fixed at first use, so connect \
             with partitions={stored}",
            options.schema,
            options.partitions,
            crate::db::DEFAULT_PARTITIONS
        )));
    }
    Ok(stored)
}

/// Fixes the partition count and makes sure every event has its partition (see
/// "A log written before partitions" on [`PgEventStore`]). Returns the count.
async fn partition_log(pool: &Pool, options: &ConnectOptions) -> Result<u32, StoreError> {
    let s = options.qualified();
    // Done before: one read.
    {
        let client = pool.get().await.map_err(DbError::from)?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT l.partitions FROM {s}.log_settings l WHERE EXISTS ( \
                         SELECT 1 FROM {s}.schema_migrations m \
                         WHERE m.component = 'event_store' AND m.version = $1)"
                ),
                &[&PARTITIONED],
            )
            .await
            .map_err(DbError::from)?;
        if let Some(row) = row {
            return check_partitions(options, row.get(0));
        }
    }
    let mut client = pool.get().await.map_err(DbError::from)?;
    // Every step under the migration lock, and without the statement timeout (a step
    // may wait for another process's, or scan a large table).
    let locked =
        format!("SET LOCAL statement_timeout = 0; SELECT pg_advisory_xact_lock({MIGRATION_LOCK})");

    // The count: the first process to get here records its own.
    let tx = client.transaction().await.map_err(DbError::from)?;
    tx.batch_execute(&locked).await.map_err(DbError::from)?;
    let requested = options.partitions as i32;
    tx.execute(
        &format!("INSERT INTO {s}.log_settings (partitions) VALUES ($1) ON CONFLICT DO NOTHING"),
        &[&requested],
    )
    .await
    .map_err(DbError::from)?;
    let stored: i32 = tx
        .query_one(&format!("SELECT partitions FROM {s}.log_settings"), &[])
        .await
        .map_err(DbError::from)?
        .get(0);
    let partitions = check_partitions(options, stored)?;
    if partitioned(&tx, &s).await? {
        // Another process finished while this one waited for the lock.
        tx.commit().await.map_err(DbError::from)?;
        return Ok(partitions);
    }
    let end: i64 = tx
        .query_one(
            &format!("SELECT coalesce(max(position), 0) FROM {s}.events"),
            &[],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    if end > 0 {
        // Fresh statistics: the column is new, and without them the planner may scan
        // the whole table for each batch below.
        tx.batch_execute(&format!("ANALYZE {s}.events"))
            .await
            .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;

    // Every stream's events, a batch of streams per transaction: the streams met in a
    // range of positions (a range scan of the primary key), each with all of its
    // events. What a batch did stays done; a stream met again updates nothing.
    let streams_between = format!(
        "SELECT DISTINCT stream_id FROM {s}.events \
         WHERE position > $1 AND position <= $2 AND partition IS NULL"
    );
    let mut from = 0i64;
    let mut filled = 0u64;
    while from < end {
        let to = from.saturating_add(FILL_RANGE);
        let tx = client.transaction().await.map_err(DbError::from)?;
        tx.batch_execute(&locked).await.map_err(DbError::from)?;
        let rows = tx
            .query(&streams_between, &[&from, &to])
            .await
            .map_err(DbError::from)?;
        let streams: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        filled += assign_partitions(&tx, &s, &streams, partitions).await?;
        tx.commit().await.map_err(DbError::from)?;
        from = to;
    }

    // The end: with the table locked, the events appended meanwhile without a partition
    // (by a process of an older ordo) get theirs, then migration 4.
    let tx = client.transaction().await.map_err(DbError::from)?;
    tx.batch_execute(&locked).await.map_err(DbError::from)?;
    if !partitioned(&tx, &s).await? {
        tx.batch_execute(&format!("LOCK TABLE {s}.events IN ACCESS EXCLUSIVE MODE"))
            .await
            .map_err(DbError::from)?;
        let rows = tx
            .query(
                &format!("SELECT DISTINCT stream_id FROM {s}.events WHERE partition IS NULL"),
                &[],
            )
            .await
            .map_err(DbError::from)?;
        let streams: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        filled += assign_partitions(&tx, &s, &streams, partitions).await?;
        let migration = &MIGRATIONS[MIGRATIONS.len() - 1];
        debug_assert_eq!(migration.version, PARTITIONED);
        tx.batch_execute(&migration.sql.replace("{s}", &s))
            .await
            .map_err(DbError::from)?;
        if filled > 0 {
            // The statistics read before saw the column empty.
            tx.batch_execute(&format!("ANALYZE {s}.events"))
                .await
                .map_err(DbError::from)?;
        }
        tx.execute(
            &format!(
                "INSERT INTO {s}.schema_migrations (component, version, description) VALUES ('event_store', $1, $2)"
            ),
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(DbError::from)?;
        tracing::info!(
            component = "event_store",
            schema = %options.schema,
            version = migration.version,
            migration.description,
            partitions,
            events_given_a_partition = filled,
            "applied migration"
        );
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(partitions)
}

/// Is migration 4 applied (every event has its partition)?
async fn partitioned(tx: &deadpool_postgres::Transaction<'_>, s: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.schema_migrations \
                 WHERE component = 'event_store' AND version = $1)"
            ),
            &[&PARTITIONED],
        )
        .await
        .map_err(DbError::from)?
        .get(0))
}

/// Gives the events of `streams` that have no partition yet theirs: one UPDATE per
/// partition among them. Returns how many rows it changed.
async fn assign_partitions(
    tx: &deadpool_postgres::Transaction<'_>,
    s: &str,
    streams: &[String],
    partitions: u32,
) -> Result<u64, StoreError> {
    let mut by_partition: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for stream in streams {
        by_partition
            .entry(partition_of(stream, partitions) as i32)
            .or_default()
            .push(stream);
    }
    let update = format!(
        "UPDATE {s}.events SET partition = $2 WHERE stream_id = ANY($1) AND partition IS NULL"
    );
    let mut changed = 0;
    for (partition, ids) in by_partition {
        changed += tx
            .execute(&update, &[&ids, &partition])
            .await
            .map_err(DbError::from)?;
    }
    Ok(changed)
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

fn partition_from(value: i32) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|e| corrupt("negative partition", e))
}

/// Reads one row selected with [`COLUMNS`].
fn decode(row: &Row) -> Result<RecordedEvent, StoreError> {
    let get_err = |e: tokio_postgres::Error| corrupt("unreadable event row", e);
    let version: i64 = row.try_get(3).map_err(get_err)?;
    let tx_id: String = row.try_get(4).map_err(get_err)?;
    let position: i64 = row.try_get(5).map_err(get_err)?;
    let schema_version: i32 = row.try_get(7).map_err(get_err)?;
    let partition: i32 = row.try_get(11).map_err(get_err)?;
    let Json(data) = row
        .try_get::<_, Json<Payload>>(9)
        .map_err(|e| corrupt("event data", e))?;
    let Json(metadata) = row
        .try_get::<_, Json<Metadata>>(10)
        .map_err(|e| corrupt("metadata", e))?;
    Ok(RecordedEvent {
        event_id: row.try_get(0).map_err(get_err)?,
        stream_id: StreamId::new(row.try_get::<_, String>(1).map_err(get_err)?),
        aggregate_type: row.try_get(2).map_err(get_err)?,
        version: u64::try_from(version).map_err(|e| corrupt("negative version", e))?,
        position: Position::new(
            partition_from(partition)?,
            tx_id.parse().map_err(|e| corrupt("transaction id", e))?,
            u64::try_from(position).map_err(|e| corrupt("negative position", e))?,
        ),
        event_type: row.try_get(6).map_err(get_err)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|e| corrupt("negative schema version", e))?,
        occurred_at: row.try_get(8).map_err(get_err)?,
        data,
        metadata,
    })
}

/// Reads one `(partition, tx_id text, position)` row of a head statement.
fn decode_head(row: &Row) -> Result<(u32, Cursor), StoreError> {
    let get_err = |e: tokio_postgres::Error| corrupt("unreadable event row", e);
    let partition: i32 = row.try_get(0).map_err(get_err)?;
    let tx_id: String = row.try_get(1).map_err(get_err)?;
    let position: i64 = row.try_get(2).map_err(get_err)?;
    Ok((
        partition_from(partition)?,
        Cursor::new(
            tx_id.parse().map_err(|e| corrupt("transaction id", e))?,
            u64::try_from(position).map_err(|e| corrupt("negative position", e))?,
        ),
    ))
}

#[async_trait]
impl EventStore for PgEventStore {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    #[tracing::instrument(skip(self, events), fields(count = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Err(StoreError::empty_append());
        }
        let expected_param =
            match expected.as_number() {
                Some(v) => Some(i64::try_from(v).map_err(|_| {
                    StoreError::Invalid(format!("expected version {v} is too large"))
                })?),
                None => None,
            };
        let partition = partition_of(stream.as_str(), self.partitions);
        let partition_param = partition as i32;
        let a = AppendArrays::new(events)?;
        let conflict = |actual| StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        };
        let rows = match self
            .query_db(
                &self.sql.append,
                &[
                    &stream.as_str(),
                    &expected_param,
                    &a.event_ids,
                    &a.aggregate_types,
                    &a.event_types,
                    &a.schema_versions,
                    &a.occurred_at,
                    &a.data,
                    &a.metadata,
                    &partition_param,
                ],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) if e.is_unique_violation() => return Err(conflict(None)),
            Err(e) => return Err(e.into()),
        };
        let mut positions = Vec::with_capacity(rows.len());
        let mut versions = Vec::with_capacity(rows.len());
        for row in &rows {
            let position: Option<i64> = row.get(1);
            let Some(position) = position else {
                let actual: i64 = row.get(0);
                return Err(conflict(u64::try_from(actual).ok()));
            };
            let tx_id: String = row.get(2);
            let version: i64 = row.get(3);
            positions.push(Position::new(
                partition,
                tx_id.parse().map_err(|e| corrupt("transaction id", e))?,
                u64::try_from(position).map_err(|e| corrupt("negative position", e))?,
            ));
            versions.push(u64::try_from(version).map_err(|e| corrupt("negative version", e))?);
        }
        let (Some(&first_version), Some(&last_version)) = (versions.first(), versions.last())
        else {
            return Err(StoreError::Other("the append returned no rows".into()));
        };
        self.appends.fetch_add(1, Ordering::AcqRel);
        self.appended.notify_waiters();
        Ok(Appended {
            first_version,
            last_version,
            positions,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = i64::try_from(from_version).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &self.sql.read_stream,
                &[&stream.as_str(), &from, &limit_param(limit)],
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Hands out only settled events: those of transactions below the snapshot's xmin,
    /// so that no transaction still running can later commit an event that sorts before
    /// them in its partition. One statement reads every partition not pinned, each by a
    /// range scan of the index, `limit` spread over them (never more than `limit` in
    /// all). When some partitions had fewer events than their share and others may have
    /// more, another statement reads those with what is left of `limit`: an answer
    /// shorter than `limit` means every settled event there was (readers such as the
    /// event stream take a short read for "caught up"). When committed events exist but
    /// none is settled yet (an append in flight elsewhere holds xmin back), it retries
    /// for up to half a second before answering with what is settled; a transaction
    /// left open for longer pauses readers (see the crate docs).
    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let unpinned = self.unpinned(after);
        if limit == 0 || unpinned.partitions.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let mut events = Vec::new();
            let mut unsettled = false;
            let mut open = unpinned.clone();
            while events.len() < limit && !open.partitions.is_empty() {
                let left = limit - events.len();
                let share = left.div_ceil(open.partitions.len());
                let rows = self
                    .query(
                        &self.sql.read_all,
                        &[
                            &open.partitions,
                            &open.tx_ids,
                            &open.positions,
                            &limit_param(share),
                            &limit_param(left),
                        ],
                    )
                    .await?;
                // Rows come partition by partition; in each, the settled prefix is handed
                // out. A partition that gave its whole share, all settled, may have more.
                let mut more = CursorParams::default();
                let mut i = 0;
                while i < rows.len() {
                    let partition: i32 = rows[i].get("partition");
                    let run = rows[i..]
                        .iter()
                        .take_while(|r| r.get::<_, i32>("partition") == partition)
                        .count();
                    let mut last = None;
                    for row in &rows[i..i + run] {
                        if !row.get::<_, bool>("settled") {
                            unsettled = true;
                            last = None;
                            break;
                        }
                        let event = decode(row)?;
                        last = Some(event.position.cursor);
                        events.push(event);
                    }
                    if let Some(cursor) = last.filter(|_| run == share) {
                        more.push(partition, cursor);
                    }
                    i += run;
                }
                open = more;
            }
            if !events.is_empty() || !unsettled || Instant::now() >= deadline {
                return Ok(events);
            }
            tokio::time::sleep(SETTLE_STEP).await;
        }
    }

    /// Returns when a settled event exists after the cursor of a partition not pinned.
    /// The waiters of one store share one read of every partition's settled head at a
    /// time, at most every 25 ms (and after each append of this process), however many
    /// of them wait.
    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        let unpinned: Vec<u32> = (0..self.partitions)
            .filter(|p| !after.is_pinned(*p))
            .collect();
        if unpinned.is_empty() {
            tokio::time::sleep_until(deadline).await;
            return Ok(());
        }
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (heads, stale_at) = self.settled_heads().await?;
            let readable = unpinned.iter().any(|&p| {
                heads
                    .get(p as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|head| head > after.cursor(p))
            });
            if readable || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(stale_at.min(deadline)) => {}
            }
        }
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        let c = self.unpinned(after);
        if c.partitions.is_empty() {
            return Ok(0);
        }
        let rows = self
            .query(
                &self.sql.count_after,
                &[&c.partitions, &c.tx_ids, &c.positions],
            )
            .await?;
        let count: i64 = rows.first().map_or(0, |r| r.get(0));
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Not the settled prefix `read_all` hands out but every committed event: a token from
    /// an append whose transaction is below a still-running one is committed, and must
    /// not be judged ahead of the store.
    async fn head(&self) -> Result<Checkpoint, StoreError> {
        let partitions = self.partitions as i32;
        let rows = self.query(&self.sql.head, &[&partitions]).await?;
        let mut head = Checkpoint::origin(self.partitions);
        for row in &rows {
            let (partition, cursor) = decode_head(row)?;
            head.advance(&Position { partition, cursor });
        }
        Ok(head)
    }

    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        let Ok(row_position) = i64::try_from(position.cursor.minor) else {
            return Ok(None);
        };
        if position.partition >= self.partitions {
            return Ok(None);
        }
        let tx_id = position.cursor.major.to_string();
        let partition = position.partition as i32;
        let rows = self
            .query(&self.sql.event_id_at, &[&tx_id, &row_position, &partition])
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(
                row.try_get(0)
                    .map_err(|e| corrupt("unreadable event id", e))?,
            )),
            None => Ok(None),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(DbError::from)?;
        Ok(())
    }
}

/// The columns of a rewrite, one array per column, as the rewrite statement binds them.
#[derive(Debug, Default)]
struct RewriteArrays {
    event_ids: Vec<Uuid>,
    stream_ids: Vec<String>,
    versions: Vec<i64>,
    partitions: Vec<i32>,
    tx_ids: Vec<String>,
    positions: Vec<i64>,
    expected_schema_versions: Vec<i32>,
    schema_versions: Vec<i32>,
    data: Vec<Json<Payload>>,
}

impl RewriteArrays {
    /// The changes this store could hold; one that names a place no event of it can be
    /// at (numbers out of range) is left out, as it would match no row.
    fn new(changes: &[Rewrite]) -> Result<Self, StoreError> {
        let mut a = RewriteArrays::default();
        for change in changes {
            let schema_version = i32::try_from(change.schema_version).map_err(|_| {
                StoreError::Invalid(format!(
                    "schema version {} is too large",
                    change.schema_version
                ))
            })?;
            let (Ok(version), Ok(partition), Ok(position), Ok(expected)) = (
                i64::try_from(change.version),
                i32::try_from(change.position.partition),
                i64::try_from(change.position.cursor.minor),
                i32::try_from(change.expected_schema_version),
            ) else {
                continue;
            };
            a.event_ids.push(change.event_id);
            a.stream_ids.push(change.stream_id.as_str().to_owned());
            a.versions.push(version);
            a.partitions.push(partition);
            a.tx_ids.push(change.position.cursor.major.to_string());
            a.positions.push(position);
            a.expected_schema_versions.push(expected);
            a.schema_versions.push(schema_version);
            a.data.push(Json(change.data.clone()));
        }
        Ok(a)
    }
}

/// Legacy events are read without waiting for transactions in flight (unlike
/// [`read_all`](EventStore::read_all)): they were stored long before the migration runs.
/// A rewrite is one UPDATE statement, so one transaction: all of it or nothing. It
/// leaves each row's `tx_id` and position as they were, so the log's order is kept.
#[async_trait]
impl EventRewriter for PgEventStore {
    async fn legacy_events(
        &self,
        event_type: &str,
        below: u32,
        after: Option<RewriteCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError> {
        let limit = limit.max(1);
        let below = i32::try_from(below).unwrap_or(i32::MAX);
        let mut cursor = after.unwrap_or_else(|| RewriteCursor::start(self.partitions));
        let mut found = Vec::new();
        for partition in 0..self.partitions {
            let from = cursor.cursor(partition);
            if from == Cursor::END {
                continue;
            }
            let wanted = limit - found.len();
            let rows = self
                .query(
                    &self.sql.legacy_events,
                    &[
                        &(partition as i32),
                        &from.major.to_string(),
                        &i64::try_from(from.minor).unwrap_or(i64::MAX),
                        &event_type,
                        &below,
                        &limit_param(wanted),
                    ],
                )
                .await?;
            let events = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
            let short = events.len() < wanted;
            if let Some(last) = events.last() {
                cursor.advance(&last.position);
            }
            found.extend(events);
            if !short {
                break;
            }
            cursor.finish(partition);
        }
        Ok((found, cursor.into_next(self.partitions)))
    }

    async fn rewrite(&self, changes: &[Rewrite]) -> Result<u64, StoreError> {
        check_rewrites(changes)?;
        let a = RewriteArrays::new(changes)?;
        if a.event_ids.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql.rewrite)
            .await
            .map_err(DbError::from)?;
        Ok(client
            .execute(
                &statement,
                &[
                    &a.event_ids,
                    &a.stream_ids,
                    &a.versions,
                    &a.partitions,
                    &a.tx_ids,
                    &a.positions,
                    &a.expected_schema_versions,
                    &a.schema_versions,
                    &a.data,
                ],
            )
            .await
            .map_err(DbError::from)?)
    }

    /// `VACUUM FULL` of the events table (and its TOAST table), without the statement
    /// timeout. An UPDATE leaves the old row version in the table's pages as a dead
    /// tuple; a plain VACUUM only marks its space free, to be reused, so its bytes stay
    /// in the files until overwritten. VACUUM FULL writes the table anew and removes the
    /// old files, but it copies the old row versions too while any transaction that may
    /// still see them is open. So it first waits (up to a minute) until no session of the
    /// database has a snapshot older than the call, and no replication slot or prepared
    /// transaction holds one; past that it is [`StoreError::Unavailable`], naming them.
    /// Telling other sessions' snapshots needs a superuser or `pg_read_all_stats`
    /// (others' are hidden, and not waited for).
    ///
    /// VACUUM FULL holds an ACCESS EXCLUSIVE lock on the table meanwhile (appends and
    /// reads wait), takes time and disk space in proportion to the table, and needs the
    /// table's owner.
    ///
    /// What it cannot reach: the write-ahead log (segments not yet recycled, and recycled
    /// ones, which keep their content until overwritten), archived WAL, and base backups
    /// and dumps taken before, all of which still hold the old rows; replicas replay the
    /// VACUUM FULL from the WAL, but their own WAL and archives are the same; and the
    /// disk blocks of the removed files, which the file system frees without wiping.
    async fn purge_old_versions(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        // A transaction of its own, committed now: every rewrite that returned before
        // this call has a smaller id.
        let now: String = client
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .map_err(DbError::from)?
            .get(0);
        let waited_from = Instant::now();
        loop {
            let holders: String = client
                .query_one(&self.sql.older_snapshots, &[&now])
                .await
                .map_err(DbError::from)?
                .get(0);
            if holders.is_empty() {
                break;
            }
            if waited_from.elapsed() >= PURGE_WAIT {
                return Err(StoreError::Unavailable(
                    format!(
                        "older transactions may still see the rewritten events' old rows \
                         ({holders}), and VACUUM FULL would keep them: end those and purge again"
                    )
                    .into(),
                ));
            }
            tokio::time::sleep(PURGE_POLL).await;
        }
        // VACUUM cannot run in a transaction block: two statements of their own. The
        // connection is closed afterwards rather than returned to the pool with its
        // statement timeout lifted.
        client
            .batch_execute("SET statement_timeout = 0")
            .await
            .map_err(DbError::from)?;
        let vacuumed = client.batch_execute(&self.sql.purge).await;
        drop(deadpool_postgres::Object::take(client));
        vacuumed.map_err(DbError::from)?;
        Ok(())
    }
}

#[async_trait]
impl SnapshotStore for PgEventStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let rows = self
            .query(&self.sql.load_snapshot, &[&stream.as_str()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let get_err = |e: tokio_postgres::Error| corrupt("unreadable snapshot row", e);
        let version: i64 = row.try_get(2).map_err(get_err)?;
        let schema_version: i32 = row.try_get(3).map_err(get_err)?;
        Ok(Some(Snapshot {
            stream_id: StreamId::new(row.try_get::<_, String>(0).map_err(get_err)?),
            aggregate_type: row.try_get(1).map_err(get_err)?,
            version: u64::try_from(version).map_err(|e| corrupt("negative snapshot version", e))?,
            schema_version: u32::try_from(schema_version)
                .map_err(|e| corrupt("negative snapshot schema version", e))?,
            state: row.try_get(4).map_err(get_err)?,
            taken_at: row.try_get(5).map_err(get_err)?,
        }))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let version = i64::try_from(snapshot.version).map_err(|_| {
            StoreError::Invalid(format!(
                "snapshot version {} is too large",
                snapshot.version
            ))
        })?;
        let schema_version = i32::try_from(snapshot.schema_version).map_err(|_| {
            StoreError::Invalid(format!(
                "snapshot schema version {} is too large",
                snapshot.schema_version
            ))
        })?;
        self.query(
            &self.sql.save_snapshot,
            &[
                &snapshot.stream_id.as_str(),
                &snapshot.aggregate_type,
                &version,
                &schema_version,
                &snapshot.state,
                &snapshot.taken_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql.delete_snapshots)
            .await
            .map_err(DbError::from)?;
        Ok(client
            .execute(&statement, &[])
            .await
            .map_err(DbError::from)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::testdb;

    fn event(n: u64) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            aggregate_type: "GapThing".into(),
            event_type: "ThingHappened".into(),
            schema_version: 1,
            occurred_at: OffsetDateTime::now_utc(),
            data: json!({ "n": n }).into(),
            metadata: Metadata::default(),
        }
    }

    /// A stream id starting with `label` whose partition is `partition`.
    fn stream_in(label: &str, partition: u32, partitions: u32) -> StreamId {
        (0..)
            .map(|i| format!("{label}-{i}"))
            .find(|id| partition_of(id, partitions) == partition)
            .map(StreamId::new)
            .expect("some id lands in every partition")
    }

    /// Reads until nothing more is handed out, advancing `checkpoint`.
    async fn drain(store: &PgEventStore, checkpoint: &mut Checkpoint) -> Vec<RecordedEvent> {
        let mut all = Vec::new();
        loop {
            let batch = store.read_all(checkpoint, 100).await.expect("read_all");
            if batch.is_empty() {
                return all;
            }
            for e in &batch {
                checkpoint.advance(&e.position);
            }
            all.extend(batch);
        }
    }

    /// Reads until `n` events were handed out. Another test's long transaction on the
    /// same server may hold readers back for a while, as it should.
    async fn read_n(
        store: &PgEventStore,
        checkpoint: &mut Checkpoint,
        n: usize,
    ) -> Vec<RecordedEvent> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut all = Vec::new();
        while all.len() < n && Instant::now() < deadline {
            all.extend(drain(store, checkpoint).await);
            if all.len() < n {
                store
                    .wait_for_events(checkpoint, Duration::from_secs(1))
                    .await
                    .expect("wait");
            }
        }
        all
    }

    /// Is a settled event there after `after`, in a partition it does not pin?
    async fn readable_after(store: &PgEventStore, after: &Checkpoint) -> bool {
        let heads = store.read_settled_heads().await.expect("settled heads");
        (0..store.partitions)
            .filter(|p| !after.is_pinned(*p))
            .any(|p| heads[p as usize].is_some_and(|head| head > after.cursor(p)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_never_passes_an_append_that_commits_after_a_later_position() {
        let (url, schema) = testdb::fresh_url().await;
        let store = PgEventStore::connect(&url)
            .await
            .expect("connect to the test server");
        let partitions = store.partitions();
        assert_eq!(partitions, 8, "the default count");
        // Every append of the test goes to one partition, which the shard reads alone;
        // a reader of the whole log reads beside it.
        let p = 5;
        let first = stream_in("gap-first", p, partitions);
        store
            .append(&first, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .expect("first append");
        let mut shard = Checkpoint::only(p, Cursor::ORIGIN, partitions);
        let mut whole = Checkpoint::origin(partitions);
        assert_eq!(read_n(&store, &mut shard, 1).await.len(), 1);
        assert_eq!(read_n(&store, &mut whole, 1).await.len(), 1);

        // A writer inserts (taking its position and transaction id) and stays open.
        let held_stream = stream_in("gap-held", p, partitions);
        let mut writer = testdb::raw_client().await;
        let held_tx = writer.transaction().await.expect("begin");
        let a = AppendArrays::new(vec![event(2)]).expect("arrays");
        let held = held_tx
            .query(
                &append_sql(&format!("\"{schema}\"")),
                &[
                    &held_stream.as_str(),
                    &Some(0i64),
                    &a.event_ids,
                    &a.aggregate_types,
                    &a.event_types,
                    &a.schema_versions,
                    &a.occurred_at,
                    &a.data,
                    &a.metadata,
                    &(p as i32),
                ],
            )
            .await
            .expect("held insert");
        let held_position: i64 = held[0].get(1);

        // Another append to the same partition takes a later position and commits first.
        let later = store
            .append(
                &stream_in("gap-later", p, partitions),
                ExpectedVersion::NoStream,
                vec![event(3)],
            )
            .await
            .expect("later append");
        assert_eq!(later.positions[0].partition, p);
        assert!(
            later.positions[0].cursor.minor > held_position as u64,
            "the test needs the committed event to sit after the open one"
        );

        // Meanwhile no reader moves past the open transaction's event: they hand out
        // nothing, although a committed event exists after their checkpoints.
        for checkpoint in [&mut shard, &mut whole] {
            let before = checkpoint.clone();
            let seen = drain(&store, checkpoint).await;
            assert!(seen.is_empty(), "read past an open append: {seen:?}");
            assert_eq!(*checkpoint, before);
            assert_eq!(store.count_after(checkpoint).await.expect("count"), 1);
            assert!(!readable_after(&store, checkpoint).await);
        }
        // The head is not the settled prefix: the committed append's token, which its
        // client already holds, is within it although no reader can get the event yet.
        let head = store.head().await.expect("head");
        assert!(
            head.covers(&later.positions[0]),
            "a committed append is ahead of the head {}",
            head.encode()
        );

        // Once it commits, the readers get both, none skipped, the held one first.
        held_tx.commit().await.expect("commit the held append");
        for checkpoint in [&mut shard, &mut whole] {
            let seen = read_n(&store, checkpoint, 2).await;
            let positions: Vec<Position> = seen.iter().map(|e| e.position).collect();
            assert_eq!(seen.len(), 2, "{positions:?}");
            assert_eq!(seen[0].stream_id, held_stream);
            assert_eq!(seen[1].position, later.positions[0]);
            assert!(checkpoint.covers(&later.positions[0]));
            assert_eq!(store.count_after(checkpoint).await.expect("count"), 0);
        }
        drop(store);
        testdb::drop_schema(&schema).await;
    }

    /// The bytes of `table`'s file and of its TOAST table's, as the server keeps them on
    /// disk once a checkpoint has written its buffers out (the test server's superuser
    /// may read them).
    async fn table_files(client: &tokio_postgres::Client, table: &str) -> Vec<u8> {
        client
            .batch_execute("CHECKPOINT")
            .await
            .expect("checkpoint");
        let rows = client
            .query(
                "SELECT pg_read_binary_file(pg_relation_filepath(c.oid::regclass)) \
                 FROM pg_class c \
                 WHERE c.oid = $1::text::regclass \
                    OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = $1::text::regclass)",
                &[&table],
            )
            .await
            .expect("read the table's files");
        assert!(!rows.is_empty(), "no files of {table}");
        rows.iter().flat_map(|r| r.get::<_, Vec<u8>>(0)).collect()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_plain_text_is_left_in_the_table_files_after_a_rewrite_and_a_purge() {
        const MARKER: &[u8] = b"Plain Ada Lovelace";
        let (url, schema) = testdb::fresh_url().await;
        let store = PgEventStore::connect(&format!("{url}&partitions=3"))
            .await
            .expect("connect");
        for s in 0..60u64 {
            let legacy = NewEvent {
                event_type: "OrderCreated".into(),
                data: json!({ "customerName": format!("Plain Ada Lovelace {s}"), "n": s }).into(),
                ..event(s)
            };
            store
                .append(
                    &StreamId::new(format!("order-{s}")),
                    ExpectedVersion::NoStream,
                    vec![legacy, event(s)],
                )
                .await
                .expect("append");
        }
        let client = testdb::raw_client().await;
        let table = format!("\"{schema}\".events");
        assert!(
            contains(&table_files(&client, &table).await, MARKER),
            "the check cannot see the plain text where it is stored"
        );

        // A reader whose snapshot is older than the rewrite: VACUUM FULL would keep the
        // old rows for it, so the purge must wait until it is gone.
        let mut reader = testdb::raw_client().await;
        let snapshot = reader
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .expect("begin");
        // Not reading the table: a lock on it would hold VACUUM FULL back by itself.
        snapshot
            .query("SELECT 1", &[])
            .await
            .expect("take the snapshot");

        let mut after = None;
        let mut rewritten = 0;
        loop {
            let (page, next) = store
                .legacy_events("OrderCreated", 3, after, 7)
                .await
                .expect("legacy events");
            let changes: Vec<Rewrite> = page
                .iter()
                .map(|e| Rewrite::of(e, 3, json!({ "personalData": "sealed" }).into()))
                .collect();
            rewritten += store.rewrite(&changes).await.expect("rewrite");
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(rewritten, 60);
        let store = Arc::new(store);
        let purge = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.purge_old_versions().await })
        };
        // Time for a purge that did not wait to run its VACUUM FULL under the snapshot
        // (the check below would then find the old rows); not an assertion.
        tokio::time::sleep(Duration::from_millis(500)).await;
        snapshot.commit().await.expect("end the old snapshot");
        purge.await.expect("purge task").expect("purge");
        assert!(
            !contains(&table_files(&client, &table).await, MARKER),
            "plain text left in the table's files"
        );

        // The store goes on as before: reads, the log, appends.
        let read = store
            .read_stream(&StreamId::new("order-7"), 1, 10)
            .await
            .expect("read");
        assert_eq!((read.len(), read[0].schema_version), (2, 3));
        let mut whole = Checkpoint::origin(3);
        assert_eq!(read_n(&store, &mut whole, 120).await.len(), 120);
        store
            .append(
                &StreamId::new("order-7"),
                ExpectedVersion::Exact(2),
                vec![event(1)],
            )
            .await
            .expect("append after the purge");
        drop(store);
        testdb::drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn a_bad_url_is_invalid_and_an_unreachable_server_is_unavailable() {
        let err = PgEventStore::connect("postgres://u@h/db?schema=no-dashes")
            .await
            .expect_err("bad schema");
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        for bad in ["0", "257", "x", ""] {
            let err = PgEventStore::connect(&format!("postgres://u@h/db?partitions={bad}"))
                .await
                .expect_err("bad partition count");
            assert!(
                matches!(&err, StoreError::Invalid(m) if m.contains("partitions")),
                "{err:?}"
            );
        }
        let err = PgEventStore::connect("postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn the_partition_count_is_fixed_at_first_use() {
        let (url, schema) = testdb::fresh_url().await;
        let four = format!("{url}&partitions=4");
        let store = PgEventStore::connect(&four).await.expect("create");
        assert_eq!(store.partitions(), 4);
        drop(store);
        for other in [format!("{url}&partitions=16"), url.clone()] {
            let err = PgEventStore::connect(&other)
                .await
                .expect_err("another count");
            let StoreError::Invalid(message) = &err else {
                panic!("{err:?}");
            };
            assert!(
                message.contains("fixed at first use") && message.contains("has 4 partitions"),
                "{message}"
            );
            let err = PgEventStore::connect_existing(&other)
                .await
                .expect_err("another count");
            assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        }
        let again = PgEventStore::connect(&four).await.expect("the same count");
        assert_eq!(again.partitions(), 4);
        let looked = PgEventStore::connect_existing(&four)
            .await
            .expect("look at it");
        assert_eq!(looked.partitions(), 4);
        drop((again, looked));
        testdb::drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn looking_at_a_store_creates_nothing() {
        let (url, schema) = testdb::fresh_url().await;
        let err = PgEventStore::connect_existing(&url)
            .await
            .expect_err("no store");
        assert!(
            matches!(&err, StoreError::Invalid(m) if m.contains("no event store")),
            "{err:?}"
        );
        let client = testdb::raw_client().await;
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .expect("look")
            .get(0);
        assert!(!exists, "connect_existing created the schema");
        // A store of the ordo before partitions is older: `ordo serve` migrates it.
        old_store(&url, 0).await;
        let err = PgEventStore::connect_existing(&url)
            .await
            .expect_err("an older store");
        assert!(
            matches!(&err, StoreError::Invalid(m) if m.contains("lacks 2 migration")),
            "{err:?}"
        );
        testdb::drop_schema(&schema).await;
    }

    /// A store as the ordo before partitions left it (migrations 1 and 2), holding
    /// `streams` streams of five events each, appended by five transactions (each one
    /// event to every stream, in alternating order), with no partition.
    async fn old_store(url: &str, streams: i32) {
        let options = ConnectOptions::parse(url).expect("url");
        let pool = options.pool().expect("pool");
        migrate_through(&pool, &options, "event_store", MIGRATIONS, 2)
            .await
            .expect("the old migrations");
        let s = options.qualified();
        let client = pool.get().await.expect("a connection");
        for version in 1..=5i64 {
            let order = if version % 2 == 0 { "DESC" } else { "ASC" };
            client
                .execute(
                    &format!(
                        "INSERT INTO {s}.events (stream_id, version, event_id, aggregate_type, \
                             event_type, schema_version, occurred_at, data, metadata) \
                         SELECT 'old-' || i, $1, gen_random_uuid(), 'OldThing', 'ThingHappened', 1, \
                             now(), json_build_object('n', i), '{{}}'::json \
                         FROM generate_series(0, $2 - 1) AS i ORDER BY i {order}"
                    ),
                    &[&version, &streams],
                )
                .await
                .expect("an old append");
        }
    }

    /// Every row's partition, by stream.
    async fn partitions_stored(schema: &str) -> Vec<(String, Option<i32>)> {
        let client = testdb::raw_client().await;
        client
            .query(
                &format!("SELECT stream_id, partition FROM \"{schema}\".events"),
                &[],
            )
            .await
            .expect("rows")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Reads partition `p` alone from `cursor` until `n` events came.
    async fn read_partition(
        store: &PgEventStore,
        p: u32,
        cursor: Cursor,
        n: usize,
    ) -> Vec<RecordedEvent> {
        let mut checkpoint = Checkpoint::only(p, cursor, store.partitions());
        let seen = read_n(store, &mut checkpoint, n).await;
        assert!(drain(store, &mut checkpoint).await.is_empty());
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_log_written_before_partitions_is_partitioned_at_connect() {
        const STREAMS: i32 = 1_234; // more than two batches
        let (url, schema) = testdb::fresh_url().await;
        old_store(&url, STREAMS).await;
        let total = STREAMS as usize * 5;
        // Where a reader of the old log stood: after the first half, in (tx, position)
        // order.
        let client = testdb::raw_client().await;
        let row = client
            .query_one(
                &format!(
                    "SELECT tx_id::text, position FROM \"{schema}\".events \
                     ORDER BY tx_id, position OFFSET $1 LIMIT 1"
                ),
                &[&(total as i64 / 2 - 1)],
            )
            .await
            .expect("the middle");
        let old_cursor = Cursor::new(
            row.get::<_, String>(0).parse().expect("xid"),
            row.get::<_, i64>(1) as u64,
        );

        // Two processes upgrade it at once.
        let url = format!("{url}&partitions=6");
        let (a, b) = tokio::join!(PgEventStore::connect(&url), PgEventStore::connect(&url));
        let (store, other) = (a.expect("connect"), b.expect("connect at the same time"));
        assert_eq!((store.partitions(), other.partitions()), (6, 6));
        drop(other);

        let rows = partitions_stored(&schema).await;
        assert_eq!(rows.len(), total);
        for (stream, partition) in &rows {
            assert_eq!(
                *partition,
                Some(partition_of(stream, 6) as i32),
                "the partition of {stream}"
            );
        }
        let not_null: bool = client
            .query_one(
                "SELECT a.attnotnull FROM pg_attribute a \
                 WHERE a.attrelid = ($1 || '.events')::regclass AND a.attname = 'partition'",
                &[&format!("\"{schema}\"")],
            )
            .await
            .expect("the column")
            .get(0);
        assert!(not_null);
        let indexes: Vec<String> = client
            .query(
                "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = 'events' ORDER BY 1",
                &[&schema],
            )
            .await
            .expect("indexes")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(indexes.contains(&"events_partition_tx_position".to_string()));
        assert!(!indexes.contains(&"events_tx_position".to_string()));

        // Each partition read alone: every event once, in its stream's order.
        let mut per_partition: HashMap<u32, usize> = HashMap::new();
        for (stream, _) in &rows {
            *per_partition.entry(partition_of(stream, 6)).or_default() += 1;
        }
        let mut seen = HashSet::new();
        for p in 0..6 {
            let n = per_partition.get(&p).copied().unwrap_or(0);
            let events = read_partition(&store, p, Cursor::ORIGIN, n).await;
            assert_eq!(events.len(), n, "partition {p}");
            let mut versions: HashMap<&str, u64> = HashMap::new();
            for e in &events {
                assert_eq!(e.position.partition, p);
                assert!(seen.insert(e.event_id), "{} read twice", e.event_id);
                let before = versions
                    .insert(e.stream_id.as_str(), e.version)
                    .unwrap_or(0);
                assert_eq!(before + 1, e.version, "{} out of order", e.stream_id);
            }
        }
        assert_eq!(seen.len(), total);

        // The old reader's cursor, taken for every partition, reads exactly the second
        // half.
        let mut rest = 0;
        for p in 0..6 {
            let mut checkpoint = Checkpoint::only(p, old_cursor, 6);
            for e in drain(&store, &mut checkpoint).await {
                assert!(e.position.cursor > old_cursor);
                rest += 1;
            }
        }
        assert_eq!(rest, total - total / 2);

        // Appends go on in the partitioned log.
        let appended = store
            .append(
                &StreamId::new("old-7"),
                ExpectedVersion::Exact(5),
                vec![event(6)],
            )
            .await
            .expect("append to an old stream");
        assert_eq!(appended.positions[0].partition, partition_of("old-7", 6));
        drop(store);
        testdb::drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn an_interrupted_partitioning_goes_on_at_the_next_connect() {
        let (url, schema) = testdb::fresh_url().await;
        old_store(&url, 40).await;
        // As a connect that stopped after recording the count and partitioning some
        // streams left it.
        let options = ConnectOptions::parse(&url).expect("url");
        let pool = options.pool().expect("pool");
        migrate_through(&pool, &options, "event_store", MIGRATIONS, 3)
            .await
            .expect("migration 3");
        let client = testdb::raw_client().await;
        client
            .batch_execute(&format!(
                "INSERT INTO \"{schema}\".log_settings (partitions) VALUES (3)"
            ))
            .await
            .expect("the count");
        for i in 0..15 {
            let stream = format!("old-{i}");
            client
                .execute(
                    &format!("UPDATE \"{schema}\".events SET partition = $2 WHERE stream_id = $1"),
                    &[&stream, &(partition_of(&stream, 3) as i32)],
                )
                .await
                .expect("a partitioned stream");
        }
        let err = PgEventStore::connect_existing(&url)
            .await
            .expect_err("not partitioned yet");
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        // The count recorded first holds, whatever the URL's default.
        let err = PgEventStore::connect(&url)
            .await
            .expect_err("the default 8");
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        let store = PgEventStore::connect(&format!("{url}&partitions=3"))
            .await
            .expect("connect");
        for (stream, partition) in partitions_stored(&schema).await {
            assert_eq!(partition, Some(partition_of(&stream, 3) as i32), "{stream}");
        }
        drop(store);
        testdb::drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn a_read_is_short_only_when_nothing_more_is_settled() {
        let (url, schema) = testdb::fresh_url().await;
        let store = PgEventStore::connect(&url).await.expect("connect");
        // Fifty events in partition 2, one in 5 and one in 7: a limit of 7 spread over
        // eight partitions is less than one each.
        let events: Vec<NewEvent> = (0..50).map(event).collect();
        for (stream, events) in [
            (stream_in("busy", 2, 8), events),
            (stream_in("quiet", 5, 8), vec![event(1)]),
            (stream_in("quiet", 7, 8), vec![event(1)]),
        ] {
            store
                .append(&stream, ExpectedVersion::NoStream, events)
                .await
                .expect("append");
        }
        // Once settled (another test may hold the server's xmin back for a while), every
        // read of seven gives seven, until the last.
        let mut settled = Checkpoint::origin(8);
        assert_eq!(read_n(&store, &mut settled, 52).await.len(), 52);
        let mut checkpoint = Checkpoint::origin(8);
        let mut sizes = Vec::new();
        loop {
            let batch = store.read_all(&checkpoint, 7).await.expect("read");
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            for e in &batch {
                assert!(!checkpoint.covers(&e.position));
                checkpoint.advance(&e.position);
            }
        }
        assert_eq!(sizes, [7, 7, 7, 7, 7, 7, 7, 3]);
        assert_eq!(checkpoint, settled);
        drop(store);
        testdb::drop_schema(&schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_of_one_store_share_its_polls() {
        let (url, schema) = testdb::fresh_url().await;
        let store = Arc::new(
            PgEventStore::connect(&format!("{url}&partitions=16"))
                .await
                .expect("connect"),
        );
        let started = Instant::now();
        let waiters: Vec<_> = (0..16)
            .map(|p| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let shard = Checkpoint::only(p, Cursor::ORIGIN, 16);
                    store
                        .wait_for_events(&shard, Duration::from_millis(400))
                        .await
                        .expect("wait");
                })
            })
            .collect();
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        // One read per poll interval at most, shared by the sixteen (no append happened).
        let polls = POLL_INTERVAL.as_millis() as u64;
        let bound = started.elapsed().as_millis() as u64 / polls + 1;
        let reads = store.heads.lock().await.reads;
        assert!(
            reads <= bound,
            "{reads} reads of the heads, at most {bound}"
        );

        // Each wakes for an append to its own partition.
        let mut shard = Checkpoint::only(11, Cursor::ORIGIN, 16);
        let waiter = {
            let store = Arc::clone(&store);
            let shard = shard.clone();
            tokio::spawn(async move {
                loop {
                    store
                        .wait_for_events(&shard, Duration::from_secs(600))
                        .await
                        .expect("wait");
                    if !store.read_all(&shard, 10).await.expect("read").is_empty() {
                        return;
                    }
                }
            })
        };
        store
            .append(
                &stream_in("wake", 11, 16),
                ExpectedVersion::NoStream,
                vec![event(1)],
            )
            .await
            .expect("append");
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter woke")
            .expect("waiter task");
        assert_eq!(read_n(&store, &mut shard, 1).await.len(), 1);
        drop(store);
        testdb::drop_schema(&schema).await;
    }
}
