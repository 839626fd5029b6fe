//! The SQLite event store, with group commit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use ordo_es::rewrite::check_rewrites;
use ordo_es::{
    Appended, Checkpoint, Cursor, EventRewriter, EventStore, ExpectedVersion, Metadata, NewEvent,
    Payload, Position, RecordedEvent, Rewrite, RewriteCursor, Snapshot, SnapshotStore, StoreError,
    StreamId,
};

use crate::pool::{Checkpointer, ReadPool, open_writer, start_checkpointer};

/// Appends taken into one transaction at most (bounds the latency of the first).
const MAX_GROUP: usize = 512;
/// Requests the writer thread's channel holds at most: four groups. The service bounds the
/// operations it sends to any store (`--max-pending`, `ordo_es::admission`) well below
/// this; the channel's own bound is what keeps any other caller from queueing without
/// limit behind a slow disk: a request past it is answered `Overloaded` at once.
const WRITE_QUEUE: usize = 4 * MAX_GROUP;

const SCHEMA: &[&str] = &[
    // 1: the event log.
    "CREATE TABLE events (
        position INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        stream_id TEXT NOT NULL,
        aggregate_type TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        occurred_at INTEGER NOT NULL,
        data TEXT NOT NULL,
        metadata TEXT NOT NULL,
        UNIQUE (stream_id, version)
    )",
    // 2: snapshots, a cache beside the events.
    "CREATE TABLE snapshots (
        stream_id TEXT PRIMARY KEY,
        aggregate_type TEXT NOT NULL,
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        taken_at INTEGER NOT NULL
    )",
];

/// Work for the writer thread: every write to the events file goes through it.
enum WriteRequest {
    Append(AppendRequest),
    SaveSnapshot(Snapshot, oneshot::Sender<Result<(), StoreError>>),
    DeleteSnapshots(oneshot::Sender<Result<u64, StoreError>>),
    /// A migration's rewrite of stored payloads ([`EventRewriter::rewrite`]).
    Rewrite(Vec<Rewrite>, oneshot::Sender<Result<u64, StoreError>>),
    /// [`EventRewriter::purge_old_versions`].
    Purge(oneshot::Sender<Result<(), StoreError>>),
}

struct AppendRequest {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// The embedded event store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteEventStore {
    path: PathBuf,
    requests: mpsc::SyncSender<WriteRequest>,
    readers: Arc<ReadPool>,
    /// The highest position committed by this store.
    head: watch::Receiver<u64>,
    _checkpointer: Arc<Checkpointer>,
}

impl std::fmt::Debug for AppendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendRequest")
            .field("stream", &self.stream)
            .finish()
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

pub(crate) fn migrate(conn: &mut Connection, steps: &[&str]) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
    for (i, step) in steps.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

impl SqliteEventStore {
    /// Opens (creating if needed) the event store in the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), true)
    }

    /// Opens the event store at `path` only if it exists and has this version's schema,
    /// creating, migrating and writing nothing (for tools that look, such as
    /// `ordo status`); [`StoreError::Invalid`] says what is missing.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(StoreError::Invalid(format!(
                "no event store at {}: {} does not exist",
                path.display(),
                dir.display()
            )));
        }
        if !path.is_file() {
            return Err(StoreError::Invalid(format!(
                "no event store at {}",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(unavailable)?;
        let steps: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(unavailable)?;
        drop(conn);
        if steps != SCHEMA.len() as i64 {
            return Err(StoreError::Invalid(format!(
                "the event store at {} has schema step {steps}, this ordo has {}: {}",
                path.display(),
                SCHEMA.len(),
                if steps < SCHEMA.len() as i64 {
                    "`ordo serve` migrates it"
                } else {
                    "it was written by a newer ordo"
                }
            )));
        }
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, migrate_schema: bool) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        // Appends touch the right edge of the log and of the (stream, version) index (ids
        // are time-ordered) and a stream's last page: a few MiB of cache hold them all.
        let mut conn = open_writer(&path, "FULL", 4).map_err(unavailable)?;
        zero_deleted_content(&conn)?;
        if migrate_schema {
            migrate(&mut conn, SCHEMA).map_err(unavailable)?;
        }
        let checkpointer = start_checkpointer(&path, &conn, "FULL").map_err(unavailable)?;
        let head: u64 = conn
            .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(unavailable)? as u64;
        let (head_tx, head_rx) = watch::channel(head);
        let (requests, rx) = mpsc::sync_channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("ordo-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, head_tx))
            .map_err(unavailable)?;
        Ok(Self {
            readers: Arc::new(ReadPool::new(&path)),
            path,
            requests,
            head: head_rx,
            _checkpointer: Arc::new(checkpointer),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers
            .read(f)
            .await
            .map_err(|e| StoreError::Other(Box::new(e)))?
            .map_err(classify)
    }
}

/// `PRAGMA secure_delete = ON` on the writer, the one connection that changes the file:
/// content that is deleted or overwritten (a payload a migration rewrites, see
/// [`EventRewriter`]) is overwritten with zeros in its page, and freed pages are zeroed,
/// instead of lingering in the file until reused. Nothing else changes: it works with WAL
/// and every other setting of the writer (the read-only connections never write), and
/// costs little, as appends free next to nothing (snapshot updates free their old state).
/// A SQLite that does not report it on is refused rather than left to keep old bytes.
fn zero_deleted_content(conn: &Connection) -> Result<(), StoreError> {
    let on: i64 = conn
        .pragma_update_and_check(None, "secure_delete", "ON", |r| r.get(0))
        .map_err(unavailable)?;
    if on != 1 {
        return Err(StoreError::Other(
            format!("this SQLite does not take PRAGMA secure_delete = ON (it answered {on})")
                .into(),
        ));
    }
    Ok(())
}

fn classify(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(e.to_string())
        }
        other => unavailable(other),
    }
}

/// The writer thread: takes every append that is waiting, commits them together.
fn writer_loop(
    mut conn: Connection,
    requests: mpsc::Receiver<WriteRequest>,
    head: watch::Sender<u64>,
) {
    let mut pending: Option<WriteRequest> = None;
    loop {
        let first = match pending.take() {
            Some(request) => request,
            None => match requests.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        let first = match first {
            WriteRequest::Append(append) => append,
            other => {
                write_other(&mut conn, other);
                continue;
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(WriteRequest::Append(request)) => group.push(request),
                Ok(other) => {
                    pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let (results, last_position) = match commit_group(&mut conn, &group) {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, appends = group.len(), "event store commit failed");
                let message = e.to_string();
                let results = group
                    .iter()
                    .map(|_| Err(StoreError::Unavailable(message.clone().into())))
                    .collect();
                (results, None)
            }
        };
        if let Some(p) = last_position {
            head.send_if_modified(|h| {
                let moved = *h < p;
                *h = (*h).max(p);
                moved
            });
        }
        for (request, result) in group.into_iter().zip(results) {
            // The caller may have gone away (request cancelled); the append stands.
            let _ = request.reply.send(result);
        }
    }
}

/// Every write but an append (those are grouped): one at a time.
fn write_other(conn: &mut Connection, request: WriteRequest) {
    match request {
        WriteRequest::SaveSnapshot(snapshot, reply) => {
            let result = (|| -> rusqlite::Result<()> {
                conn.prepare_cached(
                    "INSERT INTO snapshots (stream_id, aggregate_type, version, schema_version, state, taken_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (stream_id) DO UPDATE SET aggregate_type = excluded.aggregate_type,
                       version = excluded.version, schema_version = excluded.schema_version,
                       state = excluded.state, taken_at = excluded.taken_at
                     WHERE excluded.version > snapshots.version",
                )?
                .execute(params![
                    snapshot.stream_id.as_str(),
                    snapshot.aggregate_type,
                    snapshot.version.min(i64::MAX as u64) as i64,
                    snapshot.schema_version,
                    snapshot.state.to_string(),
                    micros(snapshot.taken_at),
                ])?;
                Ok(())
            })();
            let _ = reply.send(result.map_err(unavailable));
        }
        WriteRequest::DeleteSnapshots(reply) => {
            let result = conn.execute("DELETE FROM snapshots", []).map(|n| n as u64);
            let _ = reply.send(result.map_err(unavailable));
        }
        WriteRequest::Rewrite(changes, reply) => {
            let _ = reply.send(rewrite_events(conn, &changes).map_err(unavailable));
        }
        WriteRequest::Purge(reply) => {
            let _ = reply.send(purge(conn));
        }
        WriteRequest::Append(_) => unreachable!("appends are grouped by the caller"),
    }
}

type GroupResult = (Vec<Result<Appended, StoreError>>, Option<u64>);

fn commit_group(conn: &mut Connection, group: &[AppendRequest]) -> rusqlite::Result<GroupResult> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    let mut last_position = None;
    for request in group {
        let mut sp = tx.savepoint()?;
        match append_one(&sp, request)? {
            Ok(appended) => {
                last_position = Some(appended.last_position().cursor.major);
                sp.commit()?;
                results.push(Ok(appended));
            }
            Err(e) => {
                sp.rollback()?;
                results.push(Err(e));
            }
        }
    }
    tx.commit()?;
    Ok((results, last_position))
}

/// Rewrites the events in one transaction: each row found by its position (the rowid)
/// and rewritten only when it still holds the event as the migration read it.
fn rewrite_events(conn: &mut Connection, changes: &[Rewrite]) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut rewritten = 0;
    {
        let mut update = tx.prepare_cached(
            "UPDATE events SET schema_version = ?1, data = ?2
             WHERE position = ?3 AND event_id = ?4 AND stream_id = ?5 AND version = ?6
               AND schema_version = ?7",
        )?;
        for change in changes {
            let position = change.position;
            let (0, Ok(row), 0) = (
                position.partition,
                i64::try_from(position.cursor.major),
                position.cursor.minor,
            ) else {
                continue;
            };
            let Ok(version) = i64::try_from(change.version) else {
                continue;
            };
            rewritten += update.execute(params![
                change.schema_version,
                change.data.as_str(),
                row,
                change.event_id.to_string(),
                change.stream_id.as_str(),
                version,
                change.expected_schema_version,
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(rewritten)
}

/// Rebuilds the database file and empties the log (why: the docs of
/// `purge_old_versions` in the [`EventRewriter`] impl below).
fn purge(conn: &Connection) -> Result<(), StoreError> {
    // VACUUM builds the new database in a temporary one first: in a file rather than in
    // memory (the writer's setting), which would take as much memory as the database.
    conn.pragma_update(None, "temp_store", "FILE")
        .map_err(unavailable)?;
    let vacuumed = conn.execute_batch("VACUUM");
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(unavailable)?;
    vacuumed.map_err(unavailable)?;
    let (busy, log, checkpointed): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(unavailable)?;
    if busy != 0 {
        return Err(StoreError::Unavailable(
            format!(
                "the checkpoint that empties the write-ahead log could not finish \
                 ({checkpointed} of {log} pages copied): readers held it; try again"
            )
            .into(),
        ));
    }
    Ok(())
}

fn append_one(
    conn: &Connection,
    request: &AppendRequest,
) -> rusqlite::Result<Result<Appended, StoreError>> {
    if request.events.is_empty() {
        return Ok(Err(StoreError::empty_append()));
    }
    let current: u64 =
        conn.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")?
            .query_row([request.stream.as_str()], |r| r.get::<_, i64>(0))? as u64;
    if let Some(expected) = request.expected.as_number()
        && expected != current
    {
        return Ok(Err(StoreError::Conflict {
            stream: request.stream.clone(),
            expected: request.expected,
            actual: Some(current),
        }));
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (event_id, stream_id, aggregate_type, version, event_type, schema_version, occurred_at, data, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut positions = Vec::with_capacity(request.events.len());
    for (i, event) in request.events.iter().enumerate() {
        let metadata = match serde_json::to_string(&event.metadata) {
            Ok(m) => m,
            Err(e) => return Ok(Err(StoreError::Invalid(format!("metadata: {e}")))),
        };
        insert.execute(params![
            event.event_id.to_string(),
            request.stream.as_str(),
            event.aggregate_type,
            (current + 1 + i as u64) as i64,
            event.event_type,
            event.schema_version,
            micros(event.occurred_at),
            event.data.as_str(),
            metadata,
        ])?;
        positions.push(Position::new(0, conn.last_insert_rowid() as u64, 0));
    }
    Ok(Ok(Appended {
        first_version: current + 1,
        last_version: current + request.events.len() as u64,
        positions,
    }))
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

fn from_micros(us: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Integer, Box::new(e))
    })
}

const COLUMNS: &str = "position, event_id, stream_id, aggregate_type, version, event_type, schema_version, occurred_at, data, metadata";

fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<RecordedEvent> {
    let bad = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let event_id: String = row.get(1)?;
    let data: String = row.get(8)?;
    let metadata: String = row.get(9)?;
    Ok(RecordedEvent {
        position: Position::new(0, row.get::<_, i64>(0)? as u64, 0),
        event_id: Uuid::parse_str(&event_id).map_err(|e| bad(1, Box::new(e)))?,
        stream_id: StreamId::new(row.get::<_, String>(2)?),
        aggregate_type: row.get(3)?,
        version: row.get::<_, i64>(4)? as u64,
        event_type: row.get(5)?,
        schema_version: row.get(6)?,
        occurred_at: from_micros(row.get(7)?)?,
        data: Payload::from_json(data).map_err(|e| bad(8, Box::new(e)))?,
        metadata: serde_json::from_str::<Metadata>(&metadata).map_err(|e| bad(9, Box::new(e)))?,
    })
}

#[async_trait]
impl EventStore for SqliteEventStore {
    fn partitions(&self) -> u32 {
        1
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(WriteRequest::Append(AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        }))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the event store writer has stopped".into()))?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = stream.as_str().to_string();
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = ?1 AND version >= ?2 ORDER BY version LIMIT ?3"
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    stream,
                    from_version.min(i64::MAX as u64) as i64,
                    limit.min(i64::MAX as usize) as i64
                ],
                row_to_event,
            )?;
            rows.collect()
        })
        .await
    }

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = after.cursor(0).major.min(i64::MAX as u64) as i64;
        let sql =
            format!("SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2");
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![from, limit.min(i64::MAX as usize) as i64],
                row_to_event,
            )?;
            rows.collect()
        })
        .await
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let cursor = after.cursor(0).major;
        let mut head = self.head.clone();
        let _ = tokio::time::timeout(timeout, head.wait_for(|h| *h > cursor)).await;
        Ok(())
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        let from = after.cursor(0).major.min(i64::MAX as u64) as i64;
        self.read(move |conn| {
            // Positions are rowids handed out by one writer, never deleted, never skipped
            // (a rolled-back append's rowid is handed out again): the count is a
            // subtraction, not a scan.
            conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|max| max.saturating_sub(from).max(0) as u64)
        })
        .await
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        // From the database rather than the writer's watch, so that the answer is what
        // the file holds; the writer commits before it answers, so an append's answer is
        // followed by a read that sees it. MAX of the rowid is one B-tree descent.
        let max = self
            .read(|conn| {
                conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .await?;
        let mut head = Checkpoint::origin(1);
        head.advance(&Position::new(0, max.max(0) as u64, 0));
        Ok(head)
    }

    /// One lookup by the primary key.
    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        let row_position = match i64::try_from(position.cursor.major) {
            Ok(p) if position.partition == 0 && position.cursor.minor == 0 => p,
            _ => return Ok(None),
        };
        let id: Option<String> = self
            .read(move |conn| {
                conn.query_row(
                    "SELECT event_id FROM events WHERE position = ?1",
                    [row_position],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        id.map(|id| {
            Uuid::parse_str(&id)
                .map_err(|e| StoreError::Corrupt(format!("event id {id:?} at {position}: {e}")))
        })
        .transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

impl SqliteEventStore {
    fn writer_gone() -> StoreError {
        StoreError::Unavailable("the event store writer has stopped".into())
    }

    /// Hands `request` to the writer thread, or answers at once when its queue is full.
    fn submit(&self, request: WriteRequest) -> Result<(), StoreError> {
        self.requests.try_send(request).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => StoreError::Overloaded(ordo_es::Overloaded {
                queue: "sqlite_writer",
                limit: WRITE_QUEUE,
            }),
            mpsc::TrySendError::Disconnected(_) => Self::writer_gone(),
        })
    }
}

/// A rewrite is one transaction on the writer thread (appends wait for it), each row
/// found by its rowid. With `secure_delete` on (see [`SqliteEventStore::open`]), the old
/// payload is overwritten with zeros where it was stored, in the new page images; the
/// old page images themselves are still in the write-ahead log until
/// [`purge_old_versions`](EventRewriter::purge_old_versions) empties it.
#[async_trait]
impl EventRewriter for SqliteEventStore {
    async fn legacy_events(
        &self,
        event_type: &str,
        below: u32,
        after: Option<RewriteCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError> {
        let limit = limit.max(1);
        let mut cursor = after.unwrap_or_else(|| RewriteCursor::start(1));
        let from = cursor.cursor(0);
        if from == Cursor::END {
            return Ok((Vec::new(), None));
        }
        let from = i64::try_from(from.major).unwrap_or(i64::MAX);
        let event_type = event_type.to_string();
        let sql = format!(
            "SELECT {COLUMNS} FROM events
             WHERE position > ?1 AND event_type = ?2 AND schema_version < ?3
             ORDER BY position LIMIT ?4"
        );
        let events: Vec<RecordedEvent> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![
                        from,
                        event_type,
                        below,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    row_to_event,
                )?;
                rows.collect()
            })
            .await?;
        if events.len() < limit {
            cursor.finish(0);
        } else if let Some(last) = events.last() {
            cursor.advance(&last.position);
        }
        Ok((events, cursor.into_next(1)))
    }

    async fn rewrite(&self, changes: &[Rewrite]) -> Result<u64, StoreError> {
        check_rewrites(changes)?;
        if changes.is_empty() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        self.submit(WriteRequest::Rewrite(changes.to_vec(), reply))?;
        answer.await.map_err(|_| Self::writer_gone())?
    }

    /// `VACUUM`, then `PRAGMA wal_checkpoint(TRUNCATE)`, on the writer thread (appends
    /// wait meanwhile).
    ///
    /// `secure_delete` zeroes a rewritten payload where it was, but not every copy: when
    /// SQLite rebuilds a page (a row grown by its rewrite no longer fits, and rows move to
    /// a new page), the space the moved rows left is not wiped, so older copies of them
    /// may linger in pages until overwritten (this file's test of the raw bytes found
    /// one before VACUUM was added). VACUUM rebuilds the whole file from the rows as they are now, every page written afresh, so no
    /// such copy is left (the cost: time and a temporary file of the database's size,
    /// and the log grows to that size until the checkpoint).
    ///
    /// Then the write-ahead log: it still holds the page images of earlier commits, the
    /// old plain text among them. A PASSIVE checkpoint (the background one) copies them
    /// into the database and leaves the log as it is, to be overwritten bit by bit;
    /// TRUNCATE copies every page, waits for readers of older pages, then cuts the log
    /// to zero bytes. When readers keep it from finishing within the busy timeout it is
    /// [`StoreError::Unavailable`]: try again.
    ///
    /// What it cannot reach: copies outside the files (backups, file-system snapshots),
    /// and the disk blocks that the truncated log, the shrunk database and the
    /// temporary file used to occupy, which the file system frees without wiping.
    async fn purge_old_versions(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(WriteRequest::Purge(reply))?;
        answer.await.map_err(|_| Self::writer_gone())?
    }
}

#[async_trait]
impl SnapshotStore for SqliteEventStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let key = stream.as_str().to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT stream_id, aggregate_type, version, schema_version, state, taken_at FROM snapshots WHERE stream_id = ?1",
            )?
            .query_row([key], |r| {
                let state: String = r.get(4)?;
                Ok(Snapshot {
                    stream_id: StreamId::new(r.get::<_, String>(0)?),
                    aggregate_type: r.get(1)?,
                    version: r.get::<_, i64>(2)? as u64,
                    schema_version: r.get(3)?,
                    state: serde_json::from_str(&state).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
                    })?,
                    taken_at: from_micros(r.get(5)?)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(WriteRequest::SaveSnapshot(snapshot, reply))?;
        answer.await.map_err(|_| Self::writer_gone())?
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(WriteRequest::DeleteSnapshots(reply))?;
        answer.await.map_err(|_| Self::writer_gone())?
    }
}

#[cfg(test)]
mod snapshot_conformance {
    ordo_es::snapshot_store_conformance!(guarded async { super::tests::temp_store() });
}

#[cfg(test)]
mod conformance {
    ordo_es::event_store_conformance!(guarded async { super::tests::temp_store() });
}

#[cfg(test)]
mod rewriter_conformance {
    ordo_es::event_rewriter_conformance!(guarded async { super::tests::temp_store() });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store in its own temporary directory, removed when the guard drops.
    pub(crate) fn temp_store() -> (SqliteEventStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteEventStore::open(dir.path().join("events.db")).expect("open store");
        (store, dir)
    }

    #[test]
    fn opening_an_existing_store_creates_and_migrates_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nested = dir.path().join("none").join("events.db");
        let err = SqliteEventStore::open_existing(&nested).expect_err("no directory");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!dir.path().join("none").exists());
        let path = dir.path().join("events.db");
        assert!(SqliteEventStore::open_existing(&path).is_err(), "no file");
        assert!(!path.exists());
        Connection::open(&path).expect("an empty database");
        let err = SqliteEventStore::open_existing(&path).expect_err("not migrated");
        assert!(err.to_string().contains("ordo serve` migrates it"), "{err}");
        let steps = |path: &Path| -> i64 {
            Connection::open(path)
                .expect("open")
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("user_version")
        };
        assert_eq!(steps(&path), 0, "left unmigrated");
        drop(SqliteEventStore::open(&path).expect("create"));
        SqliteEventStore::open_existing(&path).expect("an existing store");
    }

    fn event() -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            aggregate_type: "T".into(),
            event_type: "E".into(),
            schema_version: 1,
            occurred_at: ordo_es::now_micros(),
            data: serde_json::json!({"x": 1}).into(),
            metadata: Metadata::default(),
        }
    }

    /// Whether `needle` occurs anywhere in the file at `path` (a missing file holds
    /// nothing).
    fn file_contains(path: &Path, needle: &[u8]) -> bool {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_plain_text_is_left_in_the_files_after_a_rewrite_and_a_purge() {
        const MARKER: &[u8] = b"Plain Ada Lovelace";
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let wal = crate::files::with_suffix(&path, "-wal");
        let store = SqliteEventStore::open(&path).expect("open");
        // Legacy events of many sizes among others, so that pages fill and split while
        // the rewrite makes most of them larger and some smaller.
        for s in 0..300u64 {
            let legacy = NewEvent {
                event_type: "OrderCreated".into(),
                data: serde_json::json!({
                    "customerName": format!("Plain Ada Lovelace {s}"),
                    "note": "n".repeat((s as usize * 37) % 900),
                })
                .into(),
                ..event()
            };
            store
                .append(
                    &StreamId::new(format!("order-{s}")),
                    ExpectedVersion::NoStream,
                    vec![legacy, event()],
                )
                .await
                .expect("append");
        }
        assert!(
            file_contains(&path, MARKER) || file_contains(&wal, MARKER),
            "the check cannot see the plain text where it is stored"
        );

        let mut after = None;
        let mut rewritten = 0;
        loop {
            let (page, next) = store
                .legacy_events("OrderCreated", 3, after, 7)
                .await
                .expect("legacy events");
            let changes: Vec<Rewrite> = page
                .iter()
                .map(|e| {
                    let size = if e.version % 5 == 0 { 10 } else { 1_500 };
                    let sealed = serde_json::json!({ "personalData": "s".repeat(size) });
                    Rewrite::of(e, 3, sealed.into())
                })
                .collect();
            rewritten += store.rewrite(&changes).await.expect("rewrite");
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(rewritten, 300);
        store.purge_old_versions().await.expect("purge");

        assert!(
            !file_contains(&path, MARKER),
            "plain text left in the database file"
        );
        assert!(
            !file_contains(&wal, MARKER),
            "plain text left in the write-ahead log"
        );
        assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
        let read = store
            .read_stream(&StreamId::new("order-7"), 1, 10)
            .await
            .expect("read");
        assert_eq!((read[0].schema_version, read.len()), (3, 2));
    }

    #[tokio::test]
    async fn events_survive_reopening_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let stream = StreamId::new("s-1");
        {
            let store = SqliteEventStore::open(&path).expect("open");
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event(), event()])
                .await
                .expect("append");
        }
        let store = SqliteEventStore::open(&path).expect("reopen");
        assert_eq!(
            store.read_stream(&stream, 1, 10).await.expect("read").len(),
            2
        );
        let appended = store
            .append(&stream, ExpectedVersion::Exact(2), vec![event()])
            .await
            .expect("append after reopen");
        assert_eq!(appended.last_version, 3);
        assert_eq!(appended.last_position(), Position::new(0, 3, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_committed_in_groups_with_isolated_conflicts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SqliteEventStore::open(dir.path().join("events.db")).expect("open"));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                // Half the tasks race for one stream at version 0: one wins.
                let stream = if i % 2 == 0 {
                    StreamId::new("shared")
                } else {
                    StreamId::new(format!("own-{i}"))
                };
                store
                    .append(&stream, ExpectedVersion::NoStream, vec![event()])
                    .await
            }));
        }
        let mut ok = 0;
        let mut conflicts = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => ok += 1,
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((ok, conflicts), (33, 31));
        assert_eq!(
            store
                .count_after(&Checkpoint::origin(1))
                .await
                .expect("count"),
            33
        );
    }
}
