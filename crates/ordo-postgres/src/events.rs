//! The event store: one `events` table, a gap-safe global log ordered by
//! (transaction id, position).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use ordo_es::{
    Appended, Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, Payload, Position,
    RecordedEvent, Snapshot, SnapshotStore, StoreError, StreamId,
};

use crate::db::{ConnectOptions, DbError, Migration, migrate, missing_migrations};

/// The only partition: PostgreSQL orders the whole log itself.
const PARTITION: u32 = 0;
/// How often a waiter looks for events appended by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long `read_all` waits for in-flight transactions to finish when committed events
/// exist that are not yet safe to hand out (see [`PgEventStore::read_all`]).
const SETTLE_WAIT: Duration = Duration::from_millis(500);
const SETTLE_STEP: Duration = Duration::from_millis(5);

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
];

/// The columns every read selects, in the order [`decode`] expects.
const COLUMNS: &str = "e.event_id, e.stream_id, e.aggregate_type, e.version, e.tx_id::text, e.position, \
                       e.event_type, e.schema_version, e.occurred_at, e.data, e.metadata";

/// The statements, with the schema spliced in once.
#[derive(Debug)]
struct Statements {
    append: String,
    read_stream: String,
    read_all: String,
    readable: String,
    count_after: String,
    head: String,
    event_id_at: String,
    load_snapshot: String,
    save_snapshot: String,
    delete_snapshots: String,
}

impl Statements {
    fn new(s: &str) -> Self {
        Self {
            append: append_sql(s),
            read_stream: format!(
                "SELECT {COLUMNS} FROM {s}.events e WHERE e.stream_id = $1 AND e.version >= $2 \
                 ORDER BY e.version LIMIT $3"
            ),
            // Rows are ordered by (tx_id, position); `settled` marks the ones below the
            // snapshot's xmin, which no transaction still running can precede. Those
            // come first, so the settled rows are a prefix.
            read_all: format!(
                "WITH snap AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
                 SELECT {COLUMNS}, e.tx_id < snap.xmin AS settled FROM {s}.events e, snap \
                 WHERE (e.tx_id, e.position) > ($1::text::xid8, $2::int8) \
                 ORDER BY e.tx_id, e.position LIMIT $3"
            ),
            readable: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.events e \
                 WHERE (e.tx_id, e.position) > ($1::text::xid8, $2::int8) \
                 AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot()))"
            ),
            count_after: format!(
                "SELECT count(*) FROM {s}.events e WHERE (e.tx_id, e.position) > ($1::text::xid8, $2::int8)"
            ),
            // The greatest (tx_id, position) of every committed row, settled or not: a
            // position an append returned is committed, so never past it. One backward
            // step of the (tx_id, position) index.
            head: format!(
                "SELECT e.tx_id::text, e.position FROM {s}.events e \
                 ORDER BY e.tx_id DESC, e.position DESC LIMIT 1"
            ),
            // By the primary key; the transaction id must match too, so that a row
            // whose position is reused under another transaction is not taken for it.
            event_id_at: format!(
                "SELECT e.event_id FROM {s}.events e \
                 WHERE e.position = $2 AND e.tx_id = $1::text::xid8"
            ),
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
/// version fails on UNIQUE (stream_id, version).
/// ordo's append statement for schema `s` (quoted), exported so that benchmarks drive
/// exactly what the store runs.
pub fn append_sql(s: &str) -> String {
    format!(
        "WITH cur AS (
             SELECT coalesce(max(version), 0) AS v FROM {s}.events WHERE stream_id = $1::text
         ), ins AS (
             INSERT INTO {s}.events
                 (stream_id, version, event_id, aggregate_type, event_type, schema_version, occurred_at, data, metadata)
             SELECT $1::text, cur.v + u.ord, u.event_id, u.aggregate_type, u.event_type, u.schema_version,
                    u.occurred_at, u.data, u.metadata
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
#[derive(Debug)]
pub struct PgEventStore {
    pool: Pool,
    schema: String,
    sql: Statements,
    /// Woken by this process's appends; waiters also poll for other processes' ones.
    appended: Notify,
}

impl PgEventStore {
    /// Connects to the database at `url` (a `postgres://` URL; see the crate docs for
    /// `schema=` and `pool_size=`), creating or migrating the schema as needed.
    pub async fn connect(url: &str) -> Result<PgEventStore, StoreError> {
        let options = ConnectOptions::parse(url).map_err(StoreError::Invalid)?;
        let pool = options.pool().map_err(|e| StoreError::Other(e.into()))?;
        migrate(&pool, &options, "event_store", MIGRATIONS).await?;
        for finding in crate::durability::warnings(&pool).await {
            tracing::warn!(schema = %options.schema, "{finding}");
        }
        Ok(PgEventStore {
            pool,
            sql: Statements::new(&options.qualified()),
            schema: options.schema,
            appended: Notify::new(),
        })
    }

    /// [`connect`](Self::connect) to an event store that exists, creating and migrating
    /// nothing (for tools that look, such as `ordo status`): [`StoreError::Invalid`]
    /// when the schema holds no event store or an older one.
    pub async fn connect_existing(url: &str) -> Result<PgEventStore, StoreError> {
        let options = ConnectOptions::parse(url).map_err(StoreError::Invalid)?;
        let pool = options.pool().map_err(|e| StoreError::Other(e.into()))?;
        if let Some(missing) =
            missing_migrations(&pool, &options, "event_store", "event store", MIGRATIONS).await?
        {
            return Err(StoreError::Invalid(missing));
        }
        Ok(PgEventStore {
            pool,
            sql: Statements::new(&options.qualified()),
            schema: options.schema,
            appended: Notify::new(),
        })
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

    /// Is there a settled event after `after`?
    async fn readable_after(&self, after: &Checkpoint) -> Result<bool, StoreError> {
        let (major, minor) = cursor_params(after);
        let rows = self.query(&self.sql.readable, &[&major, &minor]).await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }
}

/// The checkpoint's cursor as the (xid8 text, bigint) pair the statements take.
fn cursor_params(after: &Checkpoint) -> (String, i64) {
    let cursor = after.cursor(PARTITION);
    (
        cursor.major.to_string(),
        i64::try_from(cursor.minor).unwrap_or(i64::MAX),
    )
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// Reads one row selected with [`COLUMNS`].
fn decode(row: &Row) -> Result<RecordedEvent, StoreError> {
    let get_err = |e: tokio_postgres::Error| corrupt("unreadable event row", e);
    let version: i64 = row.try_get(3).map_err(get_err)?;
    let tx_id: String = row.try_get(4).map_err(get_err)?;
    let position: i64 = row.try_get(5).map_err(get_err)?;
    let schema_version: i32 = row.try_get(7).map_err(get_err)?;
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
            PARTITION,
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

#[async_trait]
impl EventStore for PgEventStore {
    fn partitions(&self) -> u32 {
        1
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
                PARTITION,
                tx_id.parse().map_err(|e| corrupt("transaction id", e))?,
                u64::try_from(position).map_err(|e| corrupt("negative position", e))?,
            ));
            versions.push(u64::try_from(version).map_err(|e| corrupt("negative version", e))?);
        }
        let (Some(&first_version), Some(&last_version)) = (versions.first(), versions.last())
        else {
            return Err(StoreError::Other("the append returned no rows".into()));
        };
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
    /// them. When committed events exist but none is settled yet (an append in flight
    /// elsewhere holds xmin back), it retries for up to half a second before answering
    /// with what is settled; a transaction left open for longer pauses readers (see the
    /// crate docs).
    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (major, minor) = cursor_params(after);
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let rows = self
                .query(&self.sql.read_all, &[&major, &minor, &limit_param(limit)])
                .await?;
            let mut events = Vec::with_capacity(rows.len());
            let mut unsettled = false;
            for row in &rows {
                if !row.get::<_, bool>("settled") {
                    unsettled = true;
                    break;
                }
                events.push(decode(row)?);
            }
            if !events.is_empty() || !unsettled || Instant::now() >= deadline {
                return Ok(events);
            }
            tokio::time::sleep(SETTLE_STEP).await;
        }
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.readable_after(after).await? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(POLL_INTERVAL.min(deadline - now)) => {}
            }
        }
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        let (major, minor) = cursor_params(after);
        let rows = self.query(&self.sql.count_after, &[&major, &minor]).await?;
        let count: i64 = rows.first().map_or(0, |r| r.get(0));
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Not the settled prefix `read_all` hands out but every committed event: a token from
    /// an append whose transaction is below a still-running one is committed, and must
    /// not be judged ahead of the store.
    async fn head(&self) -> Result<Checkpoint, StoreError> {
        let rows = self.query(&self.sql.head, &[]).await?;
        let mut head = Checkpoint::origin(1);
        if let Some(row) = rows.first() {
            let get_err = |e: tokio_postgres::Error| corrupt("unreadable event row", e);
            let tx_id: String = row.try_get(0).map_err(get_err)?;
            let position: i64 = row.try_get(1).map_err(get_err)?;
            head.advance(&Position::new(
                PARTITION,
                tx_id.parse().map_err(|e| corrupt("transaction id", e))?,
                u64::try_from(position).map_err(|e| corrupt("negative position", e))?,
            ));
        }
        Ok(head)
    }

    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        let Ok(row_position) = i64::try_from(position.cursor.minor) else {
            return Ok(None);
        };
        if position.partition != PARTITION {
            return Ok(None);
        }
        let tx_id = position.cursor.major.to_string();
        let rows = self
            .query(&self.sql.event_id_at, &[&tx_id, &row_position])
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_never_passes_an_append_that_commits_after_a_later_position() {
        let (url, schema) = testdb::fresh_url().await;
        let store = PgEventStore::connect(&url)
            .await
            .expect("connect to the test server");
        store
            .append(
                &StreamId::new("gap-first"),
                ExpectedVersion::NoStream,
                vec![event(1)],
            )
            .await
            .expect("first append");
        let mut checkpoint = Checkpoint::origin(1);
        assert_eq!(read_n(&store, &mut checkpoint, 1).await.len(), 1);

        // A writer inserts (taking its position and transaction id) and stays open.
        let mut writer = testdb::raw_client().await;
        let held_tx = writer.transaction().await.expect("begin");
        let a = AppendArrays::new(vec![event(2)]).expect("arrays");
        let held = held_tx
            .query(
                &append_sql(&format!("\"{schema}\"")),
                &[
                    &"gap-held",
                    &Some(0i64),
                    &a.event_ids,
                    &a.aggregate_types,
                    &a.event_types,
                    &a.schema_versions,
                    &a.occurred_at,
                    &a.data,
                    &a.metadata,
                ],
            )
            .await
            .expect("held insert");
        let held_position: i64 = held[0].get(1);

        // Another append takes a later position and commits first.
        let later = store
            .append(
                &StreamId::new("gap-later"),
                ExpectedVersion::NoStream,
                vec![event(3)],
            )
            .await
            .expect("later append");
        assert!(
            later.positions[0].cursor.minor > held_position as u64,
            "the test needs the committed event to sit after the open one"
        );

        // Meanwhile the reader must not move past the open transaction's event: it hands
        // out nothing, although a committed event exists after the checkpoint.
        let before = checkpoint.clone();
        let seen = drain(&store, &mut checkpoint).await;
        assert!(seen.is_empty(), "read past an open append: {seen:?}");
        assert_eq!(checkpoint, before);
        assert_eq!(store.count_after(&checkpoint).await.expect("count"), 1);
        assert!(!store.readable_after(&checkpoint).await.expect("readable"));
        // The head is not the settled prefix: the committed append's token, which its
        // client already holds, is within it although no reader can get the event yet.
        let head = store.head().await.expect("head");
        assert!(
            head.covers(&later.positions[0]),
            "a committed append is ahead of the head {}",
            head.encode()
        );

        // Once it commits, the reader gets both, none skipped, the held one first.
        held_tx.commit().await.expect("commit the held append");
        let seen = read_n(&store, &mut checkpoint, 2).await;
        let streams: Vec<&str> = seen.iter().map(|e| e.stream_id.as_str()).collect();
        assert_eq!(streams, ["gap-held", "gap-later"]);
        assert!(checkpoint.covers(&later.positions[0]));
        assert_eq!(store.count_after(&checkpoint).await.expect("count"), 0);
        drop(store);
        testdb::drop_schema(&schema).await;
    }

    #[tokio::test]
    async fn a_bad_url_is_invalid_and_an_unreachable_server_is_unavailable() {
        let err = PgEventStore::connect("postgres://u@h/db?schema=no-dashes")
            .await
            .expect_err("bad schema");
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        let err = PgEventStore::connect("postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
}
