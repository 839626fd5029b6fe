//! The SQLite read store: order views, summary, top customers, orders per day, search,
//! checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use ordo_domain::read::{
    ListQuery, OrderReadStore, ParkedEvent, ReadModelBatch, ReadStoreError, Sort, search_text,
};
use ordo_domain::{
    DailyFigures, Money, OrderPage, OrderView, StatusCounts, Summary, TopCustomer, ViewState,
};
use ordo_es::Checkpoint;

use crate::events::migrate;
use crate::files;
use crate::pool::{Checkpointer, ReadPool, open_writer, start_checkpointer};

const SCHEMA: &[&str] = &[
    // 1: read models.
    "CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        status TEXT,
        customer_email TEXT,
        customer_name TEXT,
        total_cents INTEGER,
        created_at INTEGER,
        search_text TEXT,
        doc TEXT
    );
    CREATE INDEX orders_by_created ON orders (created_at, order_id) WHERE deleted = 0;
    CREATE INDEX orders_by_status ON orders (status, created_at, order_id) WHERE deleted = 0;
    CREATE INDEX orders_by_customer ON orders (customer_email, created_at, order_id) WHERE deleted = 0;
    CREATE INDEX orders_by_total ON orders (total_cents, order_id) WHERE deleted = 0;
    CREATE VIRTUAL TABLE orders_search USING fts5 (search_text, content = '', contentless_delete = 1, tokenize = 'trigram');
    CREATE TABLE customers (
        customer_email TEXT PRIMARY KEY,
        customer_name TEXT NOT NULL,
        order_count INTEGER NOT NULL,
        total_cents INTEGER NOT NULL
    );
    CREATE INDEX customers_by_spent ON customers (total_cents DESC, customer_email);
    CREATE TABLE summary (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        status_counts TEXT NOT NULL,
        revenue_cents TEXT NOT NULL,
        last_updated INTEGER
    );
    CREATE TABLE checkpoints (
        projection TEXT PRIMARY KEY,
        checkpoint TEXT NOT NULL
    );",
    // 2: poison events set aside by projections.
    "CREATE TABLE parked_events (
        projection TEXT NOT NULL,
        position TEXT NOT NULL,
        event_id TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        error TEXT NOT NULL,
        parked_at INTEGER NOT NULL,
        PRIMARY KEY (projection, event_id)
    );",
    // 3: the search index without positions (detail = none): a third faster to build
    // and to maintain, and smaller. It only narrows the candidates (every trigram of the
    // term is in the order's text); `instr` on `orders.search_text` decides.
    "DROP TABLE orders_search;
    CREATE VIRTUAL TABLE orders_search USING fts5 (search_text, content = '', contentless_delete = 1, tokenize = 'trigram', detail = none);
    INSERT INTO orders_search (rowid, search_text)
        SELECT rowid, search_text FROM orders NOT INDEXED WHERE deleted = 0 ORDER BY rowid;",
    // 4: a second search index for the orders stored by live batches; `orders_search`
    // keeps those indexed in bulk (see `SEARCH_INDEXES`).
    "CREATE VIRTUAL TABLE orders_search_live USING fts5 (search_text, content = '', contentless_delete = 1, tokenize = 'trigram', detail = none);",
    // 5: orders and revenue per UTC day of createdAt, filled from the orders already
    // stored. `day` counts days since 1970-01-01; the floor division keeps an order's
    // microseconds whole (SQLite's date functions round to milliseconds).
    "CREATE TABLE daily_orders (
        day INTEGER PRIMARY KEY,
        orders INTEGER NOT NULL,
        revenue_cents INTEGER NOT NULL
    );
    INSERT INTO daily_orders (day, orders, revenue_cents)
        SELECT day, count(*), sum(CASE WHEN status <> 'cancelled' THEN total_cents ELSE 0 END)
        FROM (SELECT (created_at - ((created_at % 86400000000) + 86400000000) % 86400000000) / 86400000000 AS day,
                     status, total_cents
              FROM orders NOT INDEXED WHERE deleted = 0)
        GROUP BY day;",
];

/// The search index is two FTS5 tables, searched together, each order in one of them:
/// `orders_search` holds the orders indexed in bulk (`finish_bulk`, or the migration that
/// built it), `orders_search_live` those that live batches stored since. FTS5 keeps an
/// index as segments on levels and merges the segments of a level together, and a new
/// segment joins any lower level that holds one as large: in one table, the few large
/// segments of a bulk load drew every live batch's small one to them, and now and then a
/// live commit merged the whole index at once (1.1 s at 300,000 orders, seconds at
/// 1,000,000; see docs/benchmarks-history.md). The live table only ever holds segments of
/// live batches, which FTS5 merges in step with their size; the bulk table only gets
/// deletions.
const SEARCH_INDEXES: [&str; 2] = ["orders_search", "orders_search_live"];

/// The writer's page cache while it follows the log: a batch touches the pages of the
/// orders it changes, the customers and the day rows; a larger cache only holds pages
/// the OS page cache holds anyway, and counts in the process's RSS (32 MiB here, with
/// the event writer's 16, was over a third of the service's memory at 256 clients).
/// 8 MiB slowed a catch-up of a long backlog (large live batches) by about a fifth;
/// 16 MiB did not (BENCHMARKS.md, "Memory under 256 clients").
const LIVE_CACHE_MIB: i64 = 16;
/// The page cache while a generation is loaded in bulk (`begin_bulk` to `finish_bulk`):
/// batches of thousands of orders and the index builds at the end re-read pages a
/// small cache would have dropped.
const BULK_CACHE_MIB: i64 = 32;

/// The embedded read store.
#[derive(Debug, Clone)]
pub struct SqliteReadStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<ReadPool>,
    /// `Some` in bulk mode (a generation being rebuilt, see
    /// [`OrderReadStore::begin_bulk`]), holding the `CREATE INDEX` statements of the
    /// secondary indexes dropped for the load. Commits then leave the search index, the
    /// secondary indexes and top-customer names alone and do not sync; `finish_bulk`
    /// builds all of them at once and syncs. Used under the writer lock only.
    bulk: Arc<Mutex<Option<Vec<String>>>>,
    /// The writer's `synchronous` outside bulk mode: `OFF` when the store is guarded by
    /// an unsynced-writes marker (see [`SqliteReadStore::open`]), else `NORMAL`.
    synchronous: &'static str,
    /// The marker beside the database while it may hold writes not synced to disk.
    unsynced_marker: Option<PathBuf>,
    checkpointer: Arc<Checkpointer>,
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> ReadStoreError {
    ReadStoreError::Unavailable(Box::new(e))
}

fn corrupt(e: impl std::fmt::Display) -> ReadStoreError {
    ReadStoreError::Corrupt(e.to_string())
}

/// An error inside a blocking read-model job.
enum JobError {
    Sql(rusqlite::Error),
    Store(ReadStoreError),
}

impl From<rusqlite::Error> for JobError {
    fn from(e: rusqlite::Error) -> Self {
        JobError::Sql(e)
    }
}

impl From<ReadStoreError> for JobError {
    fn from(e: ReadStoreError) -> Self {
        JobError::Store(e)
    }
}

impl From<JobError> for ReadStoreError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Sql(e) => unavailable(e),
            JobError::Store(e) => e,
        }
    }
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

fn from_micros(us: i64) -> Result<OffsetDateTime, ReadStoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).map_err(corrupt)
}

fn cents_i64(m: Money) -> Result<i64, ReadStoreError> {
    i64::try_from(m.cents()).map_err(|_| corrupt("amount out of range"))
}

/// The Julian day number of 1970-01-01: `daily_orders.day` counts days from it.
const EPOCH_JULIAN_DAY: i32 = OffsetDateTime::UNIX_EPOCH.date().to_julian_day();

/// A date as the key of `daily_orders`.
fn day_number(date: Date) -> i64 {
    i64::from(date.to_julian_day() - EPOCH_JULIAN_DAY)
}

fn from_day_number(day: i64) -> Result<Date, ReadStoreError> {
    i32::try_from(day)
        .ok()
        .and_then(|d| d.checked_add(EPOCH_JULIAN_DAY))
        .and_then(|jd| Date::from_julian_day(jd).ok())
        .ok_or_else(|| corrupt(format!("day {day} of daily_orders is out of range")))
}

impl SqliteReadStore {
    /// Opens (creating if needed) the read store in the file at `path`.
    ///
    /// Read models are derived data: they need to survive a crash of the process, not a
    /// crash of the machine, after which the projections can rebuild them from the event
    /// log. So on Linux the store writes without syncing (`synchronous = OFF`: after a
    /// process crash the operating system still holds every write) and keeps a marker
    /// file beside the database, `<path>.unsynced`, naming the boot (Linux's boot id)
    /// under which the database may hold writes not yet on disk. Opening it under
    /// another boot means the machine stopped in between: the database may be torn, and
    /// it is discarded (the projections then load the read models again). A clean
    /// [`close`](OrderReadStore::close) syncs everything and removes the marker, so a
    /// reboot after a clean stop keeps the read models. Where there is no boot id the
    /// store syncs at its checkpoints (`synchronous = NORMAL`) and keeps no marker.
    /// Measured: the read database's syncs delayed the event log's on the same disk
    /// (docs/benchmarks-history.md).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReadStoreError> {
        Self::open_under_boot(path.as_ref(), boot_id().as_deref())
    }

    /// [`open`](Self::open) as if the machine's boot id were `boot`.
    fn open_under_boot(path: &Path, boot: Option<&str>) -> Result<Self, ReadStoreError> {
        let path = path.to_path_buf();
        let unsynced_marker = match boot {
            Some(boot) => Some(guard_unsynced_writes(&path, boot).map_err(unavailable)?),
            None => None,
        };
        let synchronous = if unsynced_marker.is_some() {
            "OFF"
        } else {
            "NORMAL"
        };
        let mut conn = open_writer(&path, synchronous, LIVE_CACHE_MIB).map_err(unavailable)?;
        migrate(&mut conn, SCHEMA).map_err(unavailable)?;
        let checkpointer = start_checkpointer(&path, &conn, synchronous).map_err(unavailable)?;
        Ok(Self {
            checkpointer: Arc::new(checkpointer),
            readers: Arc::new(ReadPool::new(&path)),
            writer: Arc::new(Mutex::new(conn)),
            path,
            bulk: Arc::new(Mutex::new(None)),
            synchronous,
            unsynced_marker,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, JobError> + Send + 'static,
    ) -> Result<T, ReadStoreError> {
        self.readers
            .run(move |conn| Ok(f(conn)))
            .await
            .map_err(|e| ReadStoreError::Other(Box::new(e)))?
            .map_err(unavailable)?
            .map_err(ReadStoreError::from)
    }

    /// Runs `change` in one transaction that also moves the checkpoint of `projection`
    /// from `from` to `to`, with compare-and-set: nothing changes when the stored
    /// checkpoint is not `from` ([`ReadStoreError::CheckpointMoved`]).
    async fn moving_checkpoint(
        &self,
        projection: &str,
        from: &Checkpoint,
        to: &Checkpoint,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), JobError> + Send + 'static,
    ) -> Result<(), ReadStoreError> {
        let projection = projection.to_string();
        let from = from.clone();
        let to = to.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            check_checkpoint(&tx, &projection, &from)?;
            change(&tx)?;
            store_checkpoint(&tx, &projection, &to)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, JobError> + Send + 'static,
    ) -> Result<T, ReadStoreError> {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn).map_err(ReadStoreError::from)
        })
        .await
        .map_err(|e| ReadStoreError::Other(Box::new(e)))?
    }
}

/// Linux's id of the running boot: it changes when the machine starts again, and only then.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// The marker beside the database at `path` naming the boot its unsynced writes belong to.
fn unsynced_marker_of(path: &Path) -> PathBuf {
    files::with_suffix(path, ".unsynced")
}

/// Discards the database at `path` when its marker names another boot than `boot`, then
/// makes sure the marker names `boot` (durably, before any unsynced write). Returns the
/// marker's path.
fn guard_unsynced_writes(path: &Path, boot: &str) -> std::io::Result<PathBuf> {
    let marker = unsynced_marker_of(path);
    match std::fs::read_to_string(&marker) {
        Ok(recorded) if recorded.trim() == boot => return Ok(marker),
        Ok(recorded) => {
            tracing::warn!(
                path = %path.display(),
                written_under_boot = recorded.trim(),
                "the machine stopped while these read models held writes not synced to disk: \
                 discarding them; the projections load them again from the event log"
            );
            files::remove_database(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    files::write_durably(&marker, boot.as_bytes())?;
    Ok(marker)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_doc(doc: &str) -> Result<OrderView, ReadStoreError> {
    serde_json::from_str(doc).map_err(corrupt)
}

/// Stores one order's state. `search`: keep the search index in step, the rows it must
/// index being added to it for [`index_for_search`] (`None` in bulk mode, where
/// `finish_bulk` builds the index at once).
fn apply_view(
    tx: &rusqlite::Transaction<'_>,
    id: Uuid,
    state: &ViewState,
    search: Option<&mut Vec<i64>>,
) -> Result<(), JobError> {
    let key = id.to_string();
    let existing: Option<(i64, bool)> = if search.is_some() {
        tx.prepare_cached("SELECT rowid, deleted FROM orders WHERE order_id = ?1")?
            .query_row([&key], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))
            .optional()?
    } else {
        None
    };
    match state {
        ViewState::Absent => {}
        ViewState::Live(view) => {
            let doc = serde_json::to_string(view.as_ref())
                .map_err(|e| ReadStoreError::Other(Box::new(e)))?;
            let text = search_text(view);
            let rowid: i64 = tx
                .prepare_cached(
                    "INSERT INTO orders (order_id, version, deleted, status, customer_email, customer_name, total_cents, created_at, search_text, doc)
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (order_id) DO UPDATE SET version = excluded.version, deleted = 0, status = excluded.status,
                       customer_email = excluded.customer_email, customer_name = excluded.customer_name,
                       total_cents = excluded.total_cents, created_at = excluded.created_at,
                       search_text = excluded.search_text, doc = excluded.doc
                     RETURNING rowid",
                )?
                .query_row(
                    params![
                        key,
                        view.version as i64,
                        view.status.as_str(),
                        view.customer_email,
                        view.customer_name,
                        cents_i64(view.total_amount)?,
                        micros(view.created_at),
                        &text,
                        doc
                    ],
                    |r| r.get(0),
                )?;
            // An order's search text never changes: it is indexed once, when the order is
            // first stored (or stored again after a deletion).
            if let Some(added) = search
                && existing.is_none_or(|(_, deleted)| deleted)
            {
                added.push(rowid);
            }
        }
        ViewState::Deleted { version } => {
            if let Some((rowid, false)) = existing {
                for index in SEARCH_INDEXES {
                    tx.prepare_cached(&format!("DELETE FROM {index} WHERE rowid = ?1"))?
                        .execute([rowid])?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO orders (order_id, version, deleted) VALUES (?1, ?2, 1)
                 ON CONFLICT (order_id) DO UPDATE SET version = excluded.version, deleted = 1, status = NULL,
                   customer_email = NULL, customer_name = NULL, total_cents = NULL, created_at = NULL,
                   search_text = NULL, doc = NULL",
            )?
            .execute(params![key, *version as i64])?;
        }
    }
    Ok(())
}

/// Adds the orders stored at `rowids` to the live search index, in one statement. FTS5
/// writes the terms it holds in memory out as a new segment of the index at every
/// statement savepoint, and SQLite opens one for every write statement inside a
/// transaction: indexing order by order between the orders' own statements wrote a segment
/// per order, and the merges of those segments were most of the cost of a live commit.
/// One statement at the end of the batch writes one segment for the whole batch.
fn index_for_search(tx: &rusqlite::Transaction<'_>, rowids: &[i64]) -> Result<(), JobError> {
    if rowids.is_empty() {
        return Ok(());
    }
    let list = serde_json::to_string(rowids).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
    tx.prepare_cached(
        "INSERT INTO orders_search_live (rowid, search_text)
         SELECT o.rowid, o.search_text FROM json_each(?1) AS j CROSS JOIN orders AS o ON o.rowid = j.value",
    )?
    .execute([list])?;
    Ok(())
}

/// Moves a customer's top-customer row by the batch's delta (O(1), whatever their number
/// of orders) and refreshes its name from their most recent counted order (an index seek).
fn apply_customer(
    tx: &rusqlite::Transaction<'_>,
    email: &str,
    delta: Option<&(i64, Money)>,
    refresh_name: bool,
) -> Result<(), JobError> {
    if let Some((count, spent)) = delta
        && (*count != 0 || *spent != Money::ZERO)
    {
        tx.prepare_cached(
            "INSERT INTO customers (customer_email, customer_name, order_count, total_cents) VALUES (?1, '', ?2, ?3)
             ON CONFLICT (customer_email) DO UPDATE SET order_count = order_count + excluded.order_count,
               total_cents = total_cents + excluded.total_cents",
        )?
        .execute(params![email, count, cents_i64(*spent)?])?;
    }
    tx.prepare_cached("DELETE FROM customers WHERE customer_email = ?1 AND order_count <= 0")?
        .execute([email])?;
    if !refresh_name {
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE customers SET customer_name =
           (SELECT customer_name FROM orders
             WHERE customer_email = ?1 AND deleted = 0 AND status <> 'cancelled'
             ORDER BY created_at DESC, order_id DESC LIMIT 1)
         WHERE customer_email = ?1",
    )?
    .execute([email])?;
    Ok(())
}

fn read_counters(conn: &Connection) -> Result<(StatusCounts, Money, Option<i64>), JobError> {
    let row: Option<(String, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT status_counts, revenue_cents, last_updated FROM summary WHERE id = 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((counts, revenue, last)) = row else {
        return Ok((StatusCounts::default(), Money::ZERO, None));
    };
    let mut parsed = StatusCounts::default();
    let parts: Vec<&str> = counts.split(',').collect();
    if parts.len() != 6 {
        return Err(corrupt("summary status counts").into());
    }
    for (slot, part) in parsed.0.iter_mut().zip(parts) {
        *slot = part.parse().map_err(corrupt)?;
    }
    let revenue = Money::from_cents(revenue.parse().map_err(corrupt)?);
    Ok((parsed, revenue, last))
}

fn apply_summary(tx: &rusqlite::Transaction<'_>, batch: &ReadModelBatch) -> Result<(), JobError> {
    let (mut counts, revenue, last) = read_counters(tx)?;
    for (slot, delta) in counts.0.iter_mut().zip(batch.status_delta) {
        *slot += delta;
    }
    let revenue = revenue + batch.revenue_delta;
    let last = batch.last_event_at.map(micros).max(last);
    let counts_text = counts
        .0
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    tx.prepare_cached(
        "INSERT INTO summary (id, status_counts, revenue_cents, last_updated) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET status_counts = excluded.status_counts,
           revenue_cents = excluded.revenue_cents, last_updated = excluded.last_updated",
    )?
    .execute(params![counts_text, revenue.cents().to_string(), last])?;
    Ok(())
}

/// Adds the batch's per-day deltas to `daily_orders`; a day left with no order has no row.
fn apply_daily(tx: &rusqlite::Transaction<'_>, batch: &ReadModelBatch) -> Result<(), JobError> {
    for (day, delta) in &batch.daily_deltas {
        let day = day_number(*day);
        tx.prepare_cached(
            "INSERT INTO daily_orders (day, orders, revenue_cents) VALUES (?1, ?2, ?3)
             ON CONFLICT (day) DO UPDATE SET orders = orders + excluded.orders,
               revenue_cents = revenue_cents + excluded.revenue_cents",
        )?
        .execute(params![day, delta.orders, cents_i64(delta.revenue)?])?;
        tx.prepare_cached(
            "DELETE FROM daily_orders WHERE day = ?1 AND orders = 0 AND revenue_cents = 0",
        )?
        .execute([day])?;
    }
    Ok(())
}

fn stored_checkpoint(conn: &Connection, projection: &str) -> Result<Option<Checkpoint>, JobError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT checkpoint FROM checkpoints WHERE projection = ?1")?
        .query_row([projection], |r| r.get(0))
        .optional()?;
    match text {
        None => Ok(None),
        Some(t) => Ok(Some(Checkpoint::decode(&t).map_err(corrupt)?)),
    }
}

/// A read-only connection to the read store at `path` and the schema steps it has, or
/// `None` when there is no such file: opening it creates, migrates and locks nothing, so
/// it is safe beside the process that writes it.
fn open_read_only(path: &Path) -> Result<Option<(Connection, usize)>, ReadStoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(unavailable)?;
    let steps: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    if steps > SCHEMA.len() as i64 {
        return Err(ReadStoreError::Corrupt(format!(
            "{} was written by a newer ordo (schema step {steps}; this one knows {})",
            path.display(),
            SCHEMA.len()
        )));
    }
    Ok(Some((conn, steps.max(0) as usize)))
}

/// The checkpoint of `projection` in the read store at `path`, read without changing
/// anything; `None` when there is no store there or it was never projected into.
pub(crate) fn read_only_checkpoint(
    path: &Path,
    projection: &str,
) -> Result<Option<Checkpoint>, ReadStoreError> {
    match open_read_only(path)? {
        // Step 1 creates the checkpoints table.
        Some((conn, steps)) if steps >= 1 => Ok(stored_checkpoint(&conn, projection)?),
        _ => Ok(None),
    }
}

/// The events `projection` parked in the read store at `path`, read without changing
/// anything (none when there is no store there).
pub(crate) fn read_only_parked(
    path: &Path,
    projection: &str,
) -> Result<Vec<ParkedEvent>, ReadStoreError> {
    match open_read_only(path)? {
        // Step 2 creates the parked_events table.
        Some((conn, steps)) if steps >= 2 => Ok(parked_events(&conn, projection)?),
        _ => Ok(Vec::new()),
    }
}

/// The events `projection` parked, oldest first.
fn parked_events(conn: &Connection, projection: &str) -> Result<Vec<ParkedEvent>, JobError> {
    let mut stmt = conn.prepare_cached(
        "SELECT position, event_id, stream_id, version, event_type, error, parked_at
           FROM parked_events WHERE projection = ?1 ORDER BY parked_at, rowid",
    )?;
    let rows = stmt
        .query_map([projection], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (position, event_id, stream_id, version, event_type, error, at) in rows {
        out.push(ParkedEvent {
            position,
            event_id: Uuid::parse_str(&event_id).map_err(corrupt)?,
            stream_id,
            version: version as u64,
            event_type,
            error,
            parked_at: from_micros(at)?,
        });
    }
    Ok(out)
}

/// Compare-and-set: the stored checkpoint must be `from` (none stored counts as origin).
fn check_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    projection: &str,
    from: &Checkpoint,
) -> Result<(), JobError> {
    let matches = match stored_checkpoint(tx, projection)? {
        Some(s) => s == *from,
        None => *from == Checkpoint::origin(from.partitions()),
    };
    if matches {
        Ok(())
    } else {
        Err(ReadStoreError::CheckpointMoved.into())
    }
}

fn store_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    projection: &str,
    to: &Checkpoint,
) -> Result<(), JobError> {
    tx.prepare_cached(
        "INSERT INTO checkpoints (projection, checkpoint) VALUES (?1, ?2)
         ON CONFLICT (projection) DO UPDATE SET checkpoint = excluded.checkpoint",
    )?
    .execute(params![projection, to.encode()])?;
    Ok(())
}

/// The SQL of one page of a list, with its parameters (limit and offset bound too, so
/// that the statement cache serves every page).
fn page_sql(query: &ListQuery) -> (String, Vec<SqlValue>) {
    let (from, filter, mut params) = list_filter(query);
    let order = match query.sort {
        Sort::CreatedAtDesc => "o.created_at DESC, o.order_id DESC",
        Sort::CreatedAt => "o.created_at ASC, o.order_id ASC",
        Sort::TotalAmount => "o.total_cents ASC, o.order_id ASC",
        Sort::TotalAmountDesc => "o.total_cents DESC, o.order_id DESC",
    };
    params.push(SqlValue::Integer(i64::from(query.limit)));
    params.push(SqlValue::Integer(
        i64::try_from(query.offset()).unwrap_or(i64::MAX),
    ));
    let n = params.len();
    let sql = format!(
        "SELECT o.doc FROM {from} WHERE {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{n}",
        n - 1
    );
    (sql, params)
}

/// Builds the WHERE clause and parameters of a list query.
/// The FROM clause and the WHERE clause of a list query, with their parameters. A search
/// of three or more characters starts from the trigram index (`CROSS JOIN` keeps SQLite
/// from walking every order in sort order instead), and the small result is sorted after.
fn list_filter(query: &ListQuery) -> (String, String, Vec<SqlValue>) {
    let mut from = "orders o".to_string();
    let mut clauses = vec!["o.deleted = 0".to_string()];
    let mut params: Vec<SqlValue> = Vec::new();
    let mut push = |clause: &str, value: SqlValue| {
        params.push(value);
        clauses.push(clause.replace('?', &format!("?{}", params.len())));
    };
    if let Some(status) = query.status {
        push("o.status = ?", SqlValue::Text(status.as_str().into()));
    }
    if let Some(email) = &query.customer_email {
        push("o.customer_email = ?", SqlValue::Text(email.clone()));
    }
    if let Some(min) = query.min_total {
        push(
            "o.total_cents >= ?",
            SqlValue::Integer(i64::try_from(min.cents()).unwrap_or(i64::MAX)),
        );
    }
    if let Some(max) = query.max_total {
        push(
            "o.total_cents <= ?",
            SqlValue::Integer(i64::try_from(max.cents()).unwrap_or(i64::MAX)),
        );
    }
    if let Some(from) = query.created_from {
        push("o.created_at >= ?", SqlValue::Integer(micros(from)));
    }
    if let Some(to) = query.created_to {
        push("o.created_at <= ?", SqlValue::Integer(micros(to)));
    }
    if let Some(term) = &query.search {
        push("instr(o.search_text, ?) > 0", SqlValue::Text(term.clone()));
        // Terms of 3+ characters use the trigram indexes; shorter ones fall back to a scan.
        if let Some(trigrams) = trigram_query(term) {
            params.push(SqlValue::Text(trigrams));
            let n = params.len();
            // Each order is in one of the two indexes (see `SEARCH_INDEXES`).
            from = format!(
                "(SELECT rowid FROM orders_search WHERE orders_search MATCH ?{n}
                  UNION ALL SELECT rowid FROM orders_search_live WHERE orders_search_live MATCH ?{n}) s
                 CROSS JOIN orders o ON o.rowid = s.rowid"
            );
        }
    }
    (from, clauses.join(" AND "), params)
}

/// The FTS5 query for the orders whose search text holds every trigram of `term` (the
/// index keeps no positions, so no phrase query): each distinct trigram quoted, ANDed.
/// `None` for terms shorter than three characters, which have no trigram.
fn trigram_query(term: &str) -> Option<String> {
    let chars: Vec<char> = term.chars().collect();
    let mut seen = std::collections::HashSet::new();
    let quoted: Vec<String> = chars
        .windows(3)
        .map(|w| w.iter().collect::<String>())
        .filter(|t| seen.insert(t.clone()))
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!quoted.is_empty()).then(|| quoted.join(" "))
}

#[async_trait]
impl OrderReadStore for SqliteReadStore {
    async fn load_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        let projection = projection.to_string();
        self.read(move |conn| stored_checkpoint(conn, &projection))
            .await
    }

    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.read(move |conn| {
            let mut out = HashMap::with_capacity(ids.len());
            let mut stmt = conn
                .prepare_cached("SELECT version, deleted, doc FROM orders WHERE order_id = ?1")?;
            for id in &ids {
                let row: Option<(i64, i64, Option<String>)> = stmt
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let state = match row {
                    None => continue,
                    Some((version, 1, _)) => ViewState::Deleted {
                        version: version as u64,
                    },
                    Some((_, _, Some(doc))) => ViewState::Live(Box::new(parse_doc(&doc)?)),
                    Some((_, _, None)) => {
                        return Err(corrupt("live order without a document").into());
                    }
                };
                out.insert(Uuid::parse_str(id).map_err(corrupt)?, state);
            }
            Ok(out)
        })
        .await
    }

    async fn commit(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        let bulk = Arc::clone(&self.bulk);
        self.moving_checkpoint(projection, from, to, move |tx| {
            let in_bulk = lock(&bulk).is_some();
            let mut added = Vec::new();
            for (id, state) in &batch.views {
                apply_view(tx, *id, state, (!in_bulk).then_some(&mut added))?;
            }
            index_for_search(tx, &added)?;
            for email in &batch.customers {
                apply_customer(tx, email, batch.customer_deltas.get(email), !in_bulk)?;
            }
            apply_daily(tx, &batch)?;
            apply_summary(tx, &batch)
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError> {
        let key = id.to_string();
        self.read(move |conn| {
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM orders WHERE order_id = ?1 AND deleted = 0")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            Ok(doc.map(|d| parse_doc(&d)).transpose()?)
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError> {
        let query = query.clone();
        self.read(move |conn| {
            let (from, filter, params) = list_filter(&query);
            // With no filter but status, the summary's counters already hold the total:
            // no query counts every order.
            let total: i64 = if query.only_status_filter() {
                let (counts, _, _) = read_counters(conn)?;
                match query.status {
                    Some(status) => counts.get(status),
                    None => counts.total(),
                }
            } else {
                conn.prepare_cached(&format!("SELECT COUNT(*) FROM {from} WHERE {filter}"))?
                    .query_row(params_from_iter(params.iter()), |r| r.get(0))?
            };
            let (sql, page_params) = page_sql(&query);
            let mut stmt = conn.prepare_cached(&sql)?;
            let docs = stmt
                .query_map(params_from_iter(page_params.iter()), |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let orders = docs
                .iter()
                .map(|d| parse_doc(d))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(OrderPage {
                orders,
                total: total as u64,
                page: query.page,
                limit: query.limit,
            })
        })
        .await
    }

    async fn summary(&self) -> Result<Summary, ReadStoreError> {
        self.read(|conn| {
            let (counts, revenue, last) = read_counters(conn)?;
            let last = last.map(from_micros).transpose()?;
            Ok(Summary::from_counters(counts, revenue, last))
        })
        .await
    }

    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT customer_email, customer_name, order_count, total_cents FROM customers
                 ORDER BY total_cents DESC, customer_email ASC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([i64::from(limit)], |r| {
                    Ok(TopCustomer {
                        customer_email: r.get(0)?,
                        customer_name: r.get(1)?,
                        order_count: r.get::<_, i64>(2)? as u64,
                        total_spent: Money::from_cents(i128::from(r.get::<_, i64>(3)?)),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError> {
        let (from, to) = (day_number(from), day_number(to));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT day, orders, revenue_cents FROM daily_orders
                 WHERE day BETWEEN ?1 AND ?2 ORDER BY day",
            )?;
            let rows = stmt
                .query_map([from, to], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(rows.len());
            for (day, orders, cents) in rows {
                out.push(DailyFigures {
                    date: from_day_number(day)?,
                    orders: u64::try_from(orders)
                        .map_err(|_| corrupt(format!("day {day} has {orders} orders")))?,
                    revenue: Money::from_cents(i128::from(cents)),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn reset(&self) -> Result<(), ReadStoreError> {
        self.write(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(
                "DELETE FROM orders; DELETE FROM orders_search; DELETE FROM orders_search_live; DELETE FROM customers;
                 DELETE FROM summary; DELETE FROM daily_orders; DELETE FROM checkpoints; DELETE FROM parked_events;",
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        let bulk = Arc::clone(&self.bulk);
        self.write(move |conn| {
            let mut bulk = lock(&bulk);
            if bulk.is_some() {
                return Ok(());
            }
            let empty: bool = conn.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM orders) AND NOT EXISTS (SELECT 1 FROM checkpoints)",
                [],
                |r| r.get(0),
            )?;
            if !empty {
                return Err(JobError::Store(ReadStoreError::Other(
                    "bulk mode is for an empty read store".into(),
                )));
            }
            // The secondary indexes, as the schema defines them: built once at the end
            // (a sort) instead of row by row.
            let indexes: Vec<(String, String)> = conn
                .prepare(
                    "SELECT name, sql FROM sqlite_schema
                     WHERE type = 'index' AND tbl_name IN ('orders', 'customers') AND sql IS NOT NULL",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (name, _) in &indexes {
                tx.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
            }
            tx.commit()?;
            // Nothing depends on this generation until finish_bulk syncs it: a crash
            // loses it, and an interrupted rebuild is discarded anyway.
            conn.pragma_update(None, "synchronous", "OFF")?;
            conn.pragma_update(None, "cache_size", -BULK_CACHE_MIB * 1024)?;
            *bulk = Some(indexes.into_iter().map(|(_, sql)| sql).collect());
            Ok(())
        })
        .await
    }

    /// Stops the background checkpointer (its connection writes without syncing), then,
    /// on the writer's connection with syncs on from now on, copies the whole log into
    /// the database file, syncs it and empties the log; only then removes the
    /// unsynced-writes marker. When readers keep the log from being emptied the marker
    /// stays, and a reboot before the next clean close discards the read models.
    async fn close(&self) -> Result<(), ReadStoreError> {
        let Some(marker) = self.unsynced_marker.clone() else {
            return Ok(());
        };
        let checkpointer = Arc::clone(&self.checkpointer);
        self.write(move |conn| {
            checkpointer.stop();
            conn.pragma_update(None, "synchronous", "FULL")?;
            let (busy, log, copied): (i64, i64, i64) =
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            if busy != 0 || log != copied {
                tracing::warn!(
                    log,
                    copied,
                    "readers kept the read models' log from being copied whole at close: \
                     a reboot before the next clean stop discards the read models"
                );
                return Ok(());
            }
            files::remove_durably(&marker).map_err(|e| JobError::Store(unavailable(e)))?;
            Ok(())
        })
        .await
    }

    async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        let bulk = Arc::clone(&self.bulk);
        // Back to writing without syncs only while the marker guards them (not after a
        // `close`, which removed it).
        let synchronous = match &self.unsynced_marker {
            Some(marker) if !marker.exists() => "NORMAL",
            _ => self.synchronous,
        };
        self.write(move |conn| {
            let mut bulk = lock(&bulk);
            let Some(indexes) = bulk.as_ref() else {
                return Ok(());
            };
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for sql in indexes {
                tx.execute_batch(sql)?;
            }
            // FTS5 keeps pending index data in memory up to `hashsize` and merges what it
            // flushed: 16 MiB instead of 1 MiB flushes, and merges, far less often (for
            // this one statement; commits of single batches hold far less).
            tx.execute(
                "INSERT INTO orders_search (orders_search, rank) VALUES ('hashsize', 16777216)",
                [],
            )?;
            // The whole index is built here (see `SEARCH_INDEXES`); in rowid order, so that
            // FTS5 appends instead of merging overlapping segments.
            tx.execute_batch("DELETE FROM orders_search; DELETE FROM orders_search_live;")?;
            tx.execute(
                "INSERT INTO orders_search (rowid, search_text)
                 SELECT rowid, search_text FROM orders NOT INDEXED WHERE deleted = 0 ORDER BY rowid",
                [],
            )?;
            tx.execute(
                "INSERT INTO orders_search (orders_search, rank) VALUES ('hashsize', 1048576)",
                [],
            )?;
            tx.execute(
                "UPDATE customers SET customer_name =
                   (SELECT o.customer_name FROM orders o
                     WHERE o.customer_email = customers.customer_email AND o.deleted = 0
                       AND o.status <> 'cancelled'
                     ORDER BY o.created_at DESC, o.order_id DESC LIMIT 1)",
                [],
            )?;
            tx.commit()?;
            *bulk = None;
            conn.pragma_update(None, "cache_size", -LIVE_CACHE_MIB * 1024)?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // Copies the whole log into the database file and syncs both.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", synchronous)?;
            Ok(())
        })
        .await
    }

    async fn park(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        let name = projection.to_string();
        self.moving_checkpoint(projection, from, to, move |tx| {
            tx.prepare_cached(
                "INSERT INTO parked_events (projection, position, event_id, stream_id, version, event_type, error, parked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                name,
                parked.position,
                parked.event_id.to_string(),
                parked.stream_id,
                parked.version as i64,
                parked.event_type,
                parked.error,
                micros(parked.parked_at)
            ])?;
            Ok(())
        })
        .await
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        let projection = projection.to_string();
        self.read(move |conn| parked_events(conn, &projection))
            .await
    }

    async fn ping(&self) -> Result<(), ReadStoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every list query's plan, as SQLite reports it.
    fn plan(conn: &Connection, query: &ListQuery) -> String {
        let (sql, params) = page_sql(query);
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let rows = stmt
            .query_map(params_from_iter(params.iter()), |r| r.get::<_, String>(3))
            .expect("plan rows")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan");
        rows.join("\n")
    }

    #[test]
    fn list_queries_are_served_from_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("read.db");
        let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
        migrate(&mut conn, SCHEMA).expect("schema");
        // No ANALYZE, as in service (the store never runs it): statistics of empty tables
        // would have SQLite walk a whole index for every search candidate.
        let status = Some(ordo_domain::Status::Confirmed);
        let cases = [
            ListQuery::default(),
            ListQuery {
                sort: Sort::CreatedAt,
                ..ListQuery::default()
            },
            ListQuery {
                sort: Sort::TotalAmount,
                ..ListQuery::default()
            },
            ListQuery {
                sort: Sort::TotalAmountDesc,
                ..ListQuery::default()
            },
            ListQuery {
                status,
                ..ListQuery::default()
            },
            ListQuery {
                customer_email: Some("ada@example.com".into()),
                ..ListQuery::default()
            },
            ListQuery {
                min_total: Some(Money::from_cents(100)),
                sort: Sort::TotalAmount,
                ..ListQuery::default()
            },
            ListQuery {
                search: Some("engine".into()),
                ..ListQuery::default()
            },
        ];
        for query in cases {
            let plan = plan(&conn, &query);
            let first = plan.lines().next().unwrap_or("");
            // A full scan of orders is "SCAN o" with no index; an index walked in sort
            // order stops after one page.
            assert!(
                !plan
                    .lines()
                    .any(|l| l == "SCAN o" || (l.starts_with("SCAN o ") && !l.contains("USING"))),
                "{query:?} scans every order:\n{plan}"
            );
            if query.search.is_some() {
                // The candidates of both indexes first, then one order by rowid for each.
                let lines: Vec<&str> = plan.lines().collect();
                assert!(
                    first == "CO-ROUTINE s"
                        && SEARCH_INDEXES.iter().all(|index| {
                            lines.iter().any(|l| {
                                l.starts_with(&format!("SCAN {index} VIRTUAL TABLE INDEX"))
                            })
                        })
                        && lines.contains(&"SEARCH o USING INTEGER PRIMARY KEY (rowid=?)"),
                    "search must start from the trigram indexes:\n{plan}"
                );
            }
        }
    }

    #[test]
    fn search_terms_become_their_distinct_trigrams() {
        assert_eq!(trigram_query("ab"), None);
        assert_eq!(trigram_query(""), None);
        assert_eq!(trigram_query("abc").as_deref(), Some(r#""abc""#));
        assert_eq!(
            trigram_query("aaaa b").as_deref(),
            Some(r#""aaa" "aa " "a b""#)
        );
        assert_eq!(
            trigram_query(r#"a"b"c"#).as_deref(),
            Some(r#""a""b" """b""" "b""c""#)
        );
        assert_eq!(trigram_query("éüß").as_deref(), Some(r#""éüß""#));
    }

    #[tokio::test]
    async fn a_store_from_before_the_positionless_search_index_still_finds_its_orders() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("read.db");
        let ada = view(
            Uuid::now_v7(),
            "ada@example.com",
            "Ada",
            "Analytical \"Engine\"",
            100,
        );
        let bob = view(
            Uuid::now_v7(),
            "bob@example.com",
            "Bob",
            "Loom abcd xbcy",
            200,
        );
        {
            // The schema as the previous release left it, with two orders in it.
            let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
            migrate(&mut conn, &SCHEMA[..2]).expect("old schema");
            let tx = conn.transaction().expect("tx");
            for v in [&ada, &bob] {
                // Stored, and indexed as that release did (it had one search index).
                apply_view(&tx, v.order_id, &ViewState::Live(Box::new(v.clone())), None)
                    .unwrap_or_else(|_| panic!("store an order"));
                tx.execute(
                    "INSERT INTO orders_search (rowid, search_text)
                     SELECT rowid, search_text FROM orders WHERE order_id = ?1",
                    [v.order_id.to_string()],
                )
                .expect("index an order");
            }
            tx.commit().expect("commit");
        }
        let store = SqliteReadStore::open(&path).expect("open and migrate");
        let search = |term: &str| ListQuery {
            search: Some(term.into()),
            ..ListQuery::default()
        };
        let found = |page: OrderPage| page.orders.iter().map(|v| v.order_id).collect::<Vec<_>>();
        assert_eq!(
            found(store.list(&search("engine")).await.expect("search")),
            vec![ada.order_id]
        );
        assert_eq!(
            found(store.list(&search("l \"e")).await.expect("search")),
            vec![ada.order_id],
            "spaces and quotes in a term"
        );
        assert_eq!(
            found(store.list(&search("loom")).await.expect("search")),
            vec![bob.order_id]
        );
        // Both trigrams of "abcy" are in Bob's text, but not the term itself.
        assert!(found(store.list(&search("abcy")).await.expect("search")).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_from_before_the_daily_model_fills_it_from_its_orders() {
        use time::macros::{date, datetime};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("read.db");
        let at = |v: &mut OrderView, t: OffsetDateTime, status: ordo_domain::Status| {
            v.created_at = t;
            v.updated_at = t;
            v.status = status;
        };
        let mut live = Vec::new();
        for (t, status, cents) in [
            // A microsecond before midnight, and half a second before the epoch: the
            // day is the floor, never rounded.
            (datetime!(2026-11-30 23:59:59.999999 UTC), "pending", 1_000),
            (datetime!(1969-12-31 23:59:59.5 UTC), "shipped", 100),
            (datetime!(2026-12-01 00:00 UTC), "cancelled", 2_550),
            (datetime!(2026-12-01 13:00 UTC), "confirmed", 300),
        ] {
            let mut v = view(Uuid::now_v7(), "ada@example.com", "Ada", "Lamp", cents);
            at(
                &mut v,
                t,
                ordo_domain::Status::parse(status).expect("status"),
            );
            live.push(v);
        }
        let deleted = Uuid::now_v7();
        {
            // The schema as the previous release left it, with those orders in it.
            let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
            migrate(&mut conn, &SCHEMA[..4]).expect("old schema");
            let tx = conn.transaction().expect("tx");
            for v in &live {
                apply_view(&tx, v.order_id, &ViewState::Live(Box::new(v.clone())), None)
                    .unwrap_or_else(|_| panic!("store an order"));
            }
            apply_view(&tx, deleted, &ViewState::Deleted { version: 2 }, None)
                .unwrap_or_else(|_| panic!("store a tombstone"));
            tx.commit().expect("commit");
        }
        let (from, to) = (date!(1969 - 12 - 01), date!(2026 - 12 - 31));
        let upgraded = SqliteReadStore::open(&path).expect("open and migrate");
        let figures = upgraded.daily(from, to).await.expect("daily");
        let day = |date, orders, cents| DailyFigures {
            date,
            orders,
            revenue: Money::from_cents(cents),
        };
        assert_eq!(
            figures,
            vec![
                day(date!(1969 - 12 - 31), 1, 100),
                day(date!(2026 - 11 - 30), 1, 1_000),
                day(date!(2026 - 12 - 01), 2, 300),
            ]
        );
        // The same as the projection's batches give.
        let fresh = SqliteReadStore::open(dir.path().join("fresh.db")).expect("open");
        Projected::new().commit(&fresh, batch(&live, &[])).await;
        assert_eq!(fresh.daily(from, to).await.expect("daily"), figures);
    }

    #[test]
    fn no_statement_is_recompiled_per_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("read.db");
        let mut conn = open_writer(&path, "NORMAL", 32).expect("open");
        migrate(&mut conn, SCHEMA).expect("schema");
        let by_status = page_sql(&ListQuery {
            status: Some(ordo_domain::Status::Confirmed),
            ..ListQuery::default()
        });
        let by_customer = page_sql(&ListQuery {
            customer_email: Some("ada@example.com".into()),
            ..ListQuery::default()
        });
        let reader = crate::pool::ReadPool::new(&path);
        for round in 0..3i64 {
            let tx = conn.transaction().expect("tx");
            tx.execute(
                "INSERT INTO orders (order_id, version, status, customer_email, customer_name, created_at)
                 VALUES (?1, 1, 'confirmed', ?2, 'Ada', ?3)",
                params![format!("o{round}"), format!("c{round}@example.com"), round],
            )
            .expect("insert");
            apply_customer(
                &tx,
                &format!("c{round}@example.com"),
                Some(&(1, Money::from_cents(5))),
                true,
            )
            .unwrap_or_else(|_| panic!("apply customer"));
            tx.commit().expect("commit");
            reader
                .with(|r| {
                    for (sql, params) in [&by_status, &by_customer] {
                        let mut stmt = r.prepare_cached(sql)?;
                        stmt.query(params_from_iter(params.iter()))?.next()?;
                        assert_eq!(
                            stmt.get_status(rusqlite::StatementStatus::RePrepare),
                            0,
                            "{sql}"
                        );
                    }
                    Ok(())
                })
                .expect("read");
        }
        let name_lookup = conn
            .prepare_cached(
                "UPDATE customers SET customer_name =
           (SELECT customer_name FROM orders
             WHERE customer_email = ?1 AND deleted = 0 AND status <> 'cancelled'
             ORDER BY created_at DESC, order_id DESC LIMIT 1)
         WHERE customer_email = ?1",
            )
            .expect("cached");
        assert_eq!(name_lookup.get_status(rusqlite::StatementStatus::Run), 3);
        assert_eq!(
            name_lookup.get_status(rusqlite::StatementStatus::RePrepare),
            0
        );
    }

    fn view(id: Uuid, email: &str, name: &str, product: &str, cents: i64) -> OrderView {
        serde_json::from_value(serde_json::json!({
            "orderId": id,
            "customerName": name,
            "customerEmail": email,
            "items": [{
                "productId": "p-1",
                "productName": product,
                "quantity": 1,
                "unitPrice": cents as f64 / 100.0,
                "lineTotal": cents as f64 / 100.0,
            }],
            "totalAmount": cents as f64 / 100.0,
            "currency": "EUR",
            "status": "pending",
            "cancellationReason": null,
            "shippingAddress": null,
            "createdAt": "2026-11-26T10:00:00Z",
            "updatedAt": "2026-11-26T10:00:00Z",
            "version": 1,
        }))
        .expect("a valid view")
    }

    /// A test projection's checkpoint, moved past one event per order of each batch.
    struct Projected {
        at: Checkpoint,
        events: u64,
    }

    impl Projected {
        fn new() -> Self {
            Self {
                at: Checkpoint::origin(1),
                events: 0,
            }
        }

        /// Commits `batch` as the projection's next one.
        async fn commit(&mut self, store: &SqliteReadStore, batch: ReadModelBatch) {
            let from = self.at.clone();
            self.events += batch.views.len().max(1) as u64;
            self.at.advance(&ordo_es::Position::new(0, self.events, 0));
            store
                .commit("orders", batch.into(), &from, &self.at)
                .await
                .expect("commit");
        }
    }

    /// One batch as the projection would commit it: live orders created, and deletions.
    fn batch(live: &[OrderView], deleted: &[Uuid]) -> ReadModelBatch {
        let mut batch = ReadModelBatch::default();
        for v in live {
            let after = ViewState::Live(Box::new(v.clone()));
            batch.record_change(&ViewState::Absent, &after);
            batch.views.push((v.order_id, after));
        }
        for id in deleted {
            batch.views.push((*id, ViewState::Deleted { version: 2 }));
        }
        batch
    }

    /// The ids a search finds, in the list's order.
    async fn search(store: &SqliteReadStore, term: &str) -> Vec<Uuid> {
        let query = ListQuery {
            search: Some(term.into()),
            ..ListQuery::default()
        };
        let page = store.list(&query).await.expect("search");
        let ids: Vec<Uuid> = page.orders.iter().map(|v| v.order_id).collect();
        assert_eq!(page.total, ids.len() as u64, "{term}: total and page agree");
        ids
    }

    /// The search indexes' entries holding `trigram`.
    fn indexed(store: &SqliteReadStore, trigram: &str) -> i64 {
        let conn = Connection::open(store.path()).expect("open");
        SEARCH_INDEXES
            .iter()
            .map(|index| {
                conn.query_row(
                    &format!("SELECT count(*) FROM {index} WHERE {index} MATCH ?1"),
                    [format!("\"{trigram}\"")],
                    |r| r.get::<_, i64>(0),
                )
                .expect("indexed")
            })
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_search_index_follows_orders_stored_deleted_and_stored_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
        let mut projected = Projected::new();
        let mut commit = async |batch: ReadModelBatch| projected.commit(&store, batch).await;
        let ada = view(
            Uuid::now_v7(),
            "ada@example.com",
            "Ada",
            "Analytical Engine",
            100,
        );
        let bob = view(
            Uuid::now_v7(),
            "bob@example.com",
            "Bob",
            "Difference Engine",
            200,
        );
        let eve = view(Uuid::now_v7(), "eve@example.com", "Eve", "Loom", 300);
        commit(batch(&[ada.clone(), bob.clone(), eve.clone()], &[])).await;
        assert_eq!(indexed(&store, "eng"), 2);
        assert_eq!(
            search(&store, "engine").await,
            vec![bob.order_id, ada.order_id]
        );
        assert_eq!(search(&store, "loom").await, vec![eve.order_id]);
        assert!(search(&store, "jacquard").await.is_empty());

        // Stored again (a new version): indexed once still.
        let mut ada2 = ada.clone();
        ada2.version = 2;
        commit(batch(&[ada2], &[])).await;
        assert_eq!(indexed(&store, "eng"), 2);

        // Deleted: out of the index and of every search.
        commit(batch(&[], &[bob.order_id])).await;
        assert_eq!(indexed(&store, "eng"), 1);
        assert_eq!(search(&store, "engine").await, vec![ada.order_id]);

        // Stored again after its deletion (a replayed history): searchable again.
        commit(batch(std::slice::from_ref(&bob), &[])).await;
        assert_eq!(indexed(&store, "eng"), 2);
        assert_eq!(
            search(&store, "engine").await,
            vec![bob.order_id, ada.order_id]
        );

        store.reset().await.expect("reset");
        assert_eq!(indexed(&store, "eng"), 0);
        assert!(search(&store, "engine").await.is_empty());
    }

    /// The segments a search index (`orders_search` or `orders_search_live`) is made of.
    fn search_segments(store: &SqliteReadStore, index: &str) -> Vec<i64> {
        Connection::open(store.path())
            .expect("open")
            .prepare(&format!(
                "SELECT DISTINCT segid FROM {index}_idx ORDER BY segid"
            ))
            .expect("segments")
            .query_map([], |r| r.get(0))
            .expect("segments")
            .collect::<rusqlite::Result<_>>()
            .expect("segments")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_new_orders_is_one_segment_of_the_search_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
        // No merges, so that every segment written stays to be counted.
        Connection::open(store.path())
            .expect("open")
            .execute_batch(
                "INSERT INTO orders_search_live (orders_search_live, rank) VALUES ('automerge', 0);
                 INSERT INTO orders_search_live (orders_search_live, rank) VALUES ('crisismerge', 1000);",
            )
            .expect("merges off");
        let orders = |names: std::ops::Range<u32>| -> Vec<OrderView> {
            names
                .map(|n| {
                    view(
                        Uuid::now_v7(),
                        &format!("c{n}@example.com"),
                        &format!("Customer {n}"),
                        "Analytical Engine",
                        100 + i64::from(n),
                    )
                })
                .collect()
        };
        let mut projected = Projected::new();
        for (done, names) in [0..20, 20..40].into_iter().enumerate() {
            projected.commit(&store, batch(&orders(names), &[])).await;
            assert_eq!(
                search_segments(&store, "orders_search_live").len(),
                done + 1,
                "one segment per batch"
            );
        }
        assert_eq!(indexed(&store, "eng"), 40);
        assert_eq!(search(&store, "customer 3").await.len(), 11);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_batches_never_merge_the_search_index_built_in_bulk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
        let order = |n: u32| {
            view(
                Uuid::now_v7(),
                &format!("c{n}@example.com"),
                &format!("Customer {n}"),
                if n.is_multiple_of(2) {
                    "Analytical Engine"
                } else {
                    "Loom"
                },
                100 + i64::from(n),
            )
        };
        let mut projected = Projected::new();
        let mut commit = async |batch: ReadModelBatch| projected.commit(&store, batch).await;
        store.begin_bulk().await.expect("bulk");
        for first in (0..2_000).step_by(500) {
            commit(batch(
                &(first..first + 500).map(order).collect::<Vec<_>>(),
                &[],
            ))
            .await;
        }
        store.finish_bulk().await.expect("finish");
        let bulk = search_segments(&store, "orders_search");
        assert!(!bulk.is_empty());
        assert!(search_segments(&store, "orders_search_live").is_empty());
        // More live batches than FTS5's `crisismerge` (16): in one index, the 16th segment
        // on the lowest level merged all of them, the bulk load's among them.
        let mut live = Vec::new();
        for n in 2_000..2_040 {
            let o = order(n);
            live.push(o.order_id);
            commit(batch(&[o], &[])).await;
        }
        assert_eq!(search_segments(&store, "orders_search"), bulk);
        assert_eq!(indexed(&store, "eng"), 1_020);
        // Deleted from either index, and searchable again once stored again.
        let (from_bulk, from_live) = (search(&store, "c10@").await, vec![live[1]]);
        assert_eq!(from_bulk.len(), 1);
        commit(batch(&[], &[from_bulk[0], from_live[0]])).await;
        assert!(search(&store, "c10@").await.is_empty());
        assert!(search(&store, "c2001@").await.is_empty());
        assert_eq!(indexed(&store, "eng"), 1_019);
        assert_eq!(indexed(&store, "loo"), 1_019);
        let again = |id: Uuid, n: u32| {
            let mut v = order(n);
            v.order_id = id;
            v
        };
        commit(batch(
            &[again(from_bulk[0], 10), again(from_live[0], 2_001)],
            &[],
        ))
        .await;
        assert_eq!(search(&store, "c10@").await, from_bulk);
        assert_eq!(search(&store, "c2001@").await, from_live);
        assert_eq!(indexed(&store, "eng"), 1_020);
        assert_eq!(indexed(&store, "loo"), 1_020);
        // A search finds orders of both indexes, each once.
        let query = ListQuery {
            search: Some("analytical".into()),
            limit: 100,
            ..ListQuery::default()
        };
        let page = store.list(&query).await.expect("search");
        assert_eq!(page.total, 1_020);
        let ids: std::collections::HashSet<Uuid> = page.orders.iter().map(|v| v.order_id).collect();
        assert_eq!(ids.len(), 100);
    }

    fn index_sql(conn: &Connection) -> Vec<String> {
        let mut sql: Vec<String> = conn
            .prepare("SELECT sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .expect("schema")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("sql");
        sql.sort();
        sql
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_load_answers_every_query_like_batches_applied_one_by_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bulk = SqliteReadStore::open(dir.path().join("bulk.db")).expect("open");
        let usual = SqliteReadStore::open(dir.path().join("usual.db")).expect("open");
        let schema_indexes = index_sql(&Connection::open(usual.path()).expect("open"));

        bulk.begin_bulk()
            .await
            .expect("bulk mode on an empty store");
        assert!(
            index_sql(&Connection::open(bulk.path()).expect("open")).is_empty(),
            "secondary indexes are built at the end"
        );
        let a = view(
            Uuid::now_v7(),
            "ada@example.com",
            "Ada",
            "Analytical Engine",
            12_000,
        );
        let b = view(
            Uuid::now_v7(),
            "ada@example.com",
            "Ada L.",
            "Difference Engine",
            5_000,
        );
        let c = view(Uuid::now_v7(), "bob@example.com", "Bob", "Loom", 700);
        let origin = Checkpoint::origin(1);
        let mut one = origin.clone();
        one.advance(&ordo_es::Position::new(0, 3, 0));
        let mut two = one.clone();
        two.advance(&ordo_es::Position::new(0, 4, 0));
        for store in [&bulk, &usual] {
            store
                .commit(
                    "orders",
                    batch(&[a.clone(), b.clone(), c.clone()], &[]).into(),
                    &origin,
                    &one,
                )
                .await
                .expect("first batch");
            // An order deleted by a later batch leaves every query.
            let mut gone = batch(&[], &[c.order_id]);
            gone.record_change(
                &ViewState::Live(Box::new(c.clone())),
                &ViewState::Deleted { version: 2 },
            );
            store
                .commit("orders", gone.into(), &one, &two)
                .await
                .expect("second batch");
        }
        // Still in bulk mode: nothing searchable yet, by design (nothing queries it).
        bulk.finish_bulk().await.expect("finish");
        bulk.finish_bulk()
            .await
            .expect("finishing twice is harmless");
        assert_eq!(
            index_sql(&Connection::open(bulk.path()).expect("open")),
            schema_indexes,
            "every index of the schema is back, as the schema defines it"
        );

        let queries = [
            ListQuery::default(),
            ListQuery {
                search: Some("engine".into()),
                ..ListQuery::default()
            },
            ListQuery {
                search: Some("loom".into()),
                ..ListQuery::default()
            },
            ListQuery {
                customer_email: Some("ada@example.com".into()),
                ..ListQuery::default()
            },
            ListQuery {
                status: Some(ordo_domain::Status::Pending),
                sort: Sort::TotalAmount,
                ..ListQuery::default()
            },
        ];
        for query in &queries {
            let from_bulk = bulk.list(query).await.expect("list");
            assert_eq!(
                from_bulk,
                usual.list(query).await.expect("list"),
                "{query:?}"
            );
        }
        assert_eq!(bulk.list(&queries[1]).await.expect("search").total, 2);
        assert_eq!(
            bulk.summary().await.expect("summary"),
            usual.summary().await.expect("summary")
        );
        let top = bulk.top_customers(10).await.expect("top");
        assert_eq!(top, usual.top_customers(10).await.expect("top"));
        let (from, to) = (
            time::macros::date!(2026 - 11 - 01),
            time::macros::date!(2026 - 11 - 30),
        );
        let daily = bulk.daily(from, to).await.expect("daily");
        assert_eq!(daily, usual.daily(from, to).await.expect("daily"));
        assert_eq!(
            (daily.len(), daily[0].orders),
            (1, 2),
            "the deleted order left its day"
        );
        // Both of Ada's orders have one createdAt; the later id decides.
        assert_eq!(
            top[0].customer_name, "Ada L.",
            "the name of the most recent order"
        );

        // After the bulk load, batches keep the search index in step as usual.
        let d = view(
            Uuid::now_v7(),
            "eve@example.com",
            "Eve",
            "Jacquard loom",
            900,
        );
        let mut three = two.clone();
        three.advance(&ordo_es::Position::new(0, 5, 0));
        bulk.commit("orders", batch(&[d], &[]).into(), &two, &three)
            .await
            .expect("third batch");
        assert_eq!(bulk.list(&queries[2]).await.expect("search").total, 1);

        // Only an empty store loads in bulk.
        assert!(usual.begin_bulk().await.is_err());
    }

    async fn has_order(store: &SqliteReadStore, id: Uuid) -> bool {
        store
            .load_views(&[id])
            .await
            .expect("load")
            .get(&id)
            .is_some_and(|v| matches!(v, ViewState::Live(_)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsynced_read_models_are_discarded_after_a_reboot_unless_closed_cleanly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("read.db");
        let marker = unsynced_marker_of(&path);
        let first = view(Uuid::now_v7(), "a@example.com", "Ann", "Lamp", 1_000);
        {
            // Written under boot A and never closed: the process crashed.
            let store = SqliteReadStore::open_under_boot(&path, Some("boot-a")).expect("open");
            Projected::new()
                .commit(&store, batch(std::slice::from_ref(&first), &[]))
                .await;
            assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "boot-a");
        }
        {
            // The process starts again on the same boot: the system kept every write.
            let store = SqliteReadStore::open_under_boot(&path, Some("boot-a")).expect("open");
            assert!(has_order(&store, first.order_id).await);
        }
        let second = view(Uuid::now_v7(), "b@example.com", "Bo", "Desk", 2_000);
        {
            // The machine started again: what was not synced may be torn; discarded.
            let store = SqliteReadStore::open_under_boot(&path, Some("boot-b")).expect("open");
            assert!(!has_order(&store, first.order_id).await);
            assert_eq!(store.load_checkpoint("orders").await.expect("load"), None);
            assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "boot-b");
            let mut projected = Projected::new();
            projected
                .commit(&store, batch(std::slice::from_ref(&second), &[]))
                .await;
            // A clean stop syncs everything and drops the marker; the store stays usable.
            store.close().await.expect("close");
            assert!(!marker.exists(), "the marker outlived a clean close");
            let third = view(Uuid::now_v7(), "c@example.com", "Cy", "Pen", 300);
            projected
                .commit(&store, batch(std::slice::from_ref(&third), &[]))
                .await;
            assert!(has_order(&store, third.order_id).await);
        }
        {
            // A reboot after a clean stop keeps the read models.
            let store = SqliteReadStore::open_under_boot(&path, Some("boot-c")).expect("open");
            assert!(has_order(&store, second.order_id).await);
        }
        {
            // Without a boot id the store syncs at its checkpoints and keeps no marker.
            std::fs::remove_file(&marker).expect("the marker of boot C");
            let store = SqliteReadStore::open_under_boot(&path, None).expect("open");
            assert!(has_order(&store, second.order_id).await);
            store.close().await.expect("close");
            assert!(!marker.exists());
        }
    }

    fn writer_synchronous(store: &SqliteReadStore) -> i64 {
        lock(&store.writer)
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("synchronous")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_load_writes_without_syncs_afterwards_only_while_the_marker_guards_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let guarded = SqliteReadStore::open_under_boot(&dir.path().join("a.db"), Some("boot-a"))
            .expect("open");
        guarded.begin_bulk().await.expect("begin");
        guarded.finish_bulk().await.expect("finish");
        assert_eq!(writer_synchronous(&guarded), 0, "OFF under the marker");
        let closed = SqliteReadStore::open_under_boot(&dir.path().join("b.db"), Some("boot-a"))
            .expect("open");
        closed.close().await.expect("close");
        closed.begin_bulk().await.expect("begin");
        closed.finish_bulk().await.expect("finish");
        assert_eq!(
            writer_synchronous(&closed),
            1,
            "NORMAL once the marker is gone"
        );
    }
}
