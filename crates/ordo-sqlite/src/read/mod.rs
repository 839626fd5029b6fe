//! The SQLite read store: order views, summary, top customers, orders per day, search,
//! checkpoints.
//!
//! - `schema.rs`: the schema steps (migrations) and the search index's tables.
//! - `write.rs`: projection commits with the checkpoint compare-and-set, parking, reset.
//! - `query.rs`: the reads behind the API.
//! - `bulk.rs`: bulk mode for a load from the whole log.
//!
//! The read-store contract ([`ReadModelWriter`], [`OrderQueries`], [`ReadStoreLifecycle`]) is implemented in this file, each method handing over to the file of
//! its concern.
//!
//! This file: opening (with the unsynced-writes guard), the blocking jobs on the writer
//! and the reader pool, and the read-only look that `ordo status` takes.

mod bulk;
mod query;
mod schema;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::Connection;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use ordo_domain::read_store::{
    ListQuery, OrderQueries, ParkedEvent, ReadModelBatch, ReadModelWriter, ReadStoreError,
    ReadStoreLifecycle, refuse_fence,
};
use ordo_domain::{DailyFigures, Money, OrderPage, OrderView, Summary, TopCustomer, ViewState};
use ordo_es::{Checkpoint, Lease};

use crate::events::migrate;
use crate::files;
use crate::pool::{Checkpointer, ReadPool, open_writer, start_checkpointer};

use schema::SCHEMA;
use write::{parked_events, stored_checkpoint};

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
    /// [`ReadModelWriter::begin_bulk`]), holding the `CREATE INDEX` statements of the
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

/// An error inside a read-model operation run on a blocking thread.
enum BlockingError {
    Sql(rusqlite::Error),
    Store(ReadStoreError),
}

impl From<rusqlite::Error> for BlockingError {
    fn from(e: rusqlite::Error) -> Self {
        BlockingError::Sql(e)
    }
}

impl From<ReadStoreError> for BlockingError {
    fn from(e: ReadStoreError) -> Self {
        BlockingError::Store(e)
    }
}

impl From<BlockingError> for ReadStoreError {
    fn from(e: BlockingError) -> Self {
        match e {
            BlockingError::Sql(e) => unavailable(e),
            BlockingError::Store(e) => e,
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
    /// [`close`](ReadStoreLifecycle::close) syncs everything and removes the marker, so a
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
        // What the writer deletes or overwrites (an erased customer's name in a row
        // rewritten by the erasure) is zeroed in the file, not left in a free page.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(unavailable)?;
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
        f: impl FnOnce(&Connection) -> Result<T, BlockingError> + Send + 'static,
    ) -> Result<T, ReadStoreError> {
        self.readers
            .read(move |conn| Ok(f(conn)))
            .await
            .map_err(|e| ReadStoreError::Other(Box::new(e)))?
            .map_err(unavailable)?
            .map_err(ReadStoreError::from)
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, BlockingError> + Send + 'static,
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

#[async_trait]
impl ReadModelWriter for SqliteReadStore {
    async fn load_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        write::load_checkpoint(self, projection).await
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
        refuse_fence(fence, "embedded")?;
        write::commit(self, projection, batch, from, to).await
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
        refuse_fence(fence, "embedded")?;
        write::park(self, projection, parked, from, to).await
    }
}

#[async_trait]
impl OrderQueries for SqliteReadStore {
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
impl ReadStoreLifecycle for SqliteReadStore {
    async fn reset(&self) -> Result<(), ReadStoreError> {
        write::reset(self).await
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
            files::remove_durably(&marker).map_err(|e| BlockingError::Store(unavailable(e)))?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), ReadStoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    /// The writer zeroes what it deletes and overwrites (`secure_delete`, set at open),
    /// but FTS5 keeps a removed row's terms in its segments until they are merged, a page
    /// SQLite defragments keeps stale copies of moved cells in its free space, and the
    /// log keeps old page images until it is checkpointed. So the indexes are merged, the
    /// file is rebuilt (`VACUUM`: time and a temporary copy in proportion to the read
    /// models; the projection's commits wait meanwhile, queries do not) and the log
    /// emptied. Erasures are rare; this is their price on the embedded store.
    async fn purge_deleted(&self) -> Result<(), ReadStoreError> {
        self.write(|conn| {
            for index in schema::SEARCH_INDEXES {
                conn.execute(&format!("INSERT INTO {index} ({index}) VALUES ('optimize')"), [])?;
            }
            conn.execute_batch("VACUUM")?;
            let (busy, _, _): (i64, i64, i64) =
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            if busy != 0 {
                tracing::warn!(
                    "readers kept the read models' log from being emptied after an erasure: it is emptied at the next checkpoint"
                );
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
