//! The SQLite key store: customers' data keys (wrapped by the master key) and the
//! record of erasures, in a file of their own beside the event store.
//!
//! A file of its own (`<data-dir>/keys.sqlite`) so that a copy of the event store never
//! holds key material: the events are sealed under keys that live only here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use ordo_domain::privacy::{EraseOutcome, Erasure, KeyStore, KeyStoreError, Subject, WrappedKey};

use crate::events::migrate;
use crate::pool::open_writer;

const SCHEMA: &[&str] = &[
    // 1: the live keys (erasure deletes a key: every stored key is live) and the latest
    // erasure of each subject.
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX keys_live_subject ON keys (subject);
    CREATE TABLE erasures (
        subject TEXT PRIMARY KEY,
        erased_at INTEGER NOT NULL,
        erased_by TEXT NOT NULL,
        keys_destroyed INTEGER NOT NULL
    );",
];

const KEY_COLUMNS: &str = "id, subject, wrapped, created_at";

/// The embedded key store. Cheap to clone.
///
/// One connection, behind a lock, used from blocking threads: the store has little
/// traffic (the key ring caches keys in front of it), and with no other connection in
/// the process nothing holds the log open when an erasure empties it.
///
/// What an erasure leaves behind: `secure_delete` zeroes a deleted key's bytes in the
/// pages that held it, and the log (`keys.sqlite-wal`, which holds the pages as written
/// before the erasure) is copied into the database and truncated to nothing right after
/// the erasure commits, and again on opening (should the process have stopped in
/// between). Copies of the file made before the erasure (backups) keep the wrapped key:
/// rotating the master key is what shreds those.
#[derive(Debug, Clone)]
pub struct SqliteKeys {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

/// An error inside a key-store operation on the blocking thread.
enum BlockingError {
    Sql(rusqlite::Error),
    Store(KeyStoreError),
}

impl From<rusqlite::Error> for BlockingError {
    fn from(e: rusqlite::Error) -> Self {
        BlockingError::Sql(e)
    }
}

impl From<BlockingError> for KeyStoreError {
    fn from(e: BlockingError) -> Self {
        match e {
            BlockingError::Sql(e) => classify(e),
            BlockingError::Store(e) => e,
        }
    }
}

/// Bad stored bytes are `Corrupt`; anything else SQLite says (I/O, locks, a full disk)
/// is `Unavailable`.
fn classify(e: rusqlite::Error) -> KeyStoreError {
    match &e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => KeyStoreError::Corrupt(e.to_string()),
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            KeyStoreError::Corrupt(e.to_string())
        }
        _ => KeyStoreError::Unavailable(e.to_string()),
    }
}

fn corrupt(
    column: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

fn from_micros(column: usize, us: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| corrupt(column, e))
}

fn subject_from(column: usize, text: &str) -> rusqlite::Result<Subject> {
    Subject::from_hex(text)
        .ok_or_else(|| corrupt(column, format!("subject {text:?} is not 64 hex digits")))
}

fn row_to_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<WrappedKey> {
    let id: String = row.get(0)?;
    let subject: String = row.get(1)?;
    Ok(WrappedKey {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(0, e))?,
        subject: subject_from(1, &subject)?,
        wrapped: row.get(2)?,
        created_at: from_micros(3, row.get(3)?)?,
    })
}

fn row_to_erasure(row: &rusqlite::Row<'_>) -> rusqlite::Result<Erasure> {
    let subject: String = row.get(0)?;
    Ok(Erasure {
        subject: subject_from(0, &subject)?,
        erased_at: from_micros(1, row.get(1)?)?,
        erased_by: row.get(2)?,
        keys_destroyed: row.get(3)?,
    })
}

impl SqliteKeys {
    /// Opens (creating if needed) the key store in the file at `path`, which must not be
    /// the event store's.
    ///
    /// Synced like the event store (`synchronous=FULL`): a key that was handed out has
    /// sealed events, and losing it would lose their personal fields; an erasure that
    /// was acknowledged must stay done.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KeyStoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_writer(&path, "FULL", 2).map_err(classify)?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(classify)?;
        migrate(&mut conn, SCHEMA).map_err(classify)?;
        // An erasure whose log was not emptied (the process stopped in between).
        empty_log(&conn);
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, BlockingError> + Send + 'static,
    ) -> Result<T, KeyStoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn).map_err(KeyStoreError::from)
        })
        .await
        .map_err(|e| KeyStoreError::Unavailable(format!("key store job failed: {e}")))?
    }
}

/// Copies the whole log into the database file and truncates the log to nothing, so
/// that the pages the log held (a destroyed key among them) are in no file any more.
/// The erasure has committed either way: a failure is logged, and the next erasure or
/// opening tries again.
fn empty_log(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((0, log, copied)) if log == copied => {}
        Ok((busy, log, copied)) => tracing::warn!(
            busy,
            log,
            copied,
            "another connection kept the key store's log from being emptied: \
             destroyed keys' bytes stay in keys.sqlite-wal until the next erasure or opening"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not empty the key store's log: destroyed keys' bytes stay in \
             keys.sqlite-wal until the next erasure or opening"
        ),
    }
}

fn live_key_of(conn: &Connection, subject: &str) -> rusqlite::Result<Option<WrappedKey>> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM keys WHERE subject = ?1"
    ))?
    .query_row([subject], row_to_key)
    .optional()
}

#[async_trait]
impl KeyStore for SqliteKeys {
    async fn live_key(&self, subject: &Subject) -> Result<Option<WrappedKey>, KeyStoreError> {
        let subject = subject.to_hex();
        self.run(move |conn| Ok(live_key_of(conn, &subject)?)).await
    }

    async fn create_key(&self, key: WrappedKey) -> Result<WrappedKey, KeyStoreError> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let subject = key.subject.to_hex();
            tx.prepare_cached(
                "INSERT INTO keys (id, subject, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                key.id.to_string(),
                subject,
                key.wrapped,
                micros(key.created_at)
            ])?;
            let live = live_key_of(&tx, &subject)?;
            tx.commit()?;
            // Nothing for the subject after an insert that was dropped: the id is taken.
            live.ok_or_else(|| {
                BlockingError::Store(KeyStoreError::Corrupt(format!(
                    "key id {} is taken by another subject",
                    key.id
                )))
            })
        })
        .await
    }

    async fn keys(&self, ids: &[Uuid]) -> Result<Vec<WrappedKey>, KeyStoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let mut found = Vec::with_capacity(ids.len());
            {
                let mut stmt =
                    tx.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"))?;
                for id in &ids {
                    if let Some(key) = stmt.query_row([id], row_to_key).optional()? {
                        found.push(key);
                    }
                }
            }
            tx.commit()?;
            Ok(found)
        })
        .await
    }

    /// Deletes the keys and writes the record in one transaction, then empties the log
    /// (see [`SqliteKeys`]).
    async fn erase(
        &self,
        subject: &Subject,
        at: OffsetDateTime,
        by: &str,
    ) -> Result<EraseOutcome, KeyStoreError> {
        let subject = *subject;
        let by = by.to_string();
        self.run(move |conn| {
            let hex = subject.to_hex();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let destroyed = tx
                .prepare_cached("DELETE FROM keys WHERE subject = ?1")?
                .execute([&hex])?;
            if destroyed == 0 {
                let last = tx
                    .prepare_cached(
                        "SELECT subject, erased_at, erased_by, keys_destroyed FROM erasures
                         WHERE subject = ?1",
                    )?
                    .query_row([&hex], row_to_erasure)
                    .optional()?;
                tx.commit()?;
                return Ok(match last {
                    Some(e) => EraseOutcome::AlreadyErased(e),
                    None => EraseOutcome::Unknown,
                });
            }
            let erasure = Erasure {
                subject,
                erased_at: at,
                erased_by: by,
                keys_destroyed: u32::try_from(destroyed).unwrap_or(u32::MAX),
            };
            tx.prepare_cached(
                "INSERT INTO erasures (subject, erased_at, erased_by, keys_destroyed)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (subject) DO UPDATE SET erased_at = excluded.erased_at,
                   erased_by = excluded.erased_by, keys_destroyed = excluded.keys_destroyed",
            )?
            .execute(params![
                hex,
                micros(erasure.erased_at),
                erasure.erased_by,
                erasure.keys_destroyed
            ])?;
            tx.commit()?;
            empty_log(conn);
            Ok(EraseOutcome::Erased(erasure))
        })
        .await
    }

    async fn page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<WrappedKey>, KeyStoreError> {
        // Hyphenated lower-case text sorts as the UUIDs' bytes do; "" is before them all.
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after, i64::from(limit)], row_to_key)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn rewrap(&self, id: Uuid, old: &[u8], new: &[u8]) -> Result<bool, KeyStoreError> {
        let (old, new) = (old.to_vec(), new.to_vec());
        self.run(move |conn| {
            let changed = conn
                .prepare_cached("UPDATE keys SET wrapped = ?1 WHERE id = ?2 AND wrapped = ?3")?
                .execute(params![new, id.to_string(), old])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn ping(&self) -> Result<(), KeyStoreError> {
        self.run(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

#[cfg(test)]
mod conformance {
    ordo_domain::key_store_conformance!(guarded async { super::tests::temp_keys() });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key store in its own temporary directory, removed when the guard drops.
    pub(super) fn temp_keys() -> (SqliteKeys, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = SqliteKeys::open(dir.path().join("keys.sqlite")).expect("open key store");
        (keys, dir)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Bytes that occur nowhere by chance: 56 distinct values, not a fill.
    fn distinctive(seed: u8) -> Vec<u8> {
        (0..56u8)
            .map(|i| seed.wrapping_add(i.wrapping_mul(37)))
            .collect()
    }

    fn key(subject: u8, wrapped: Vec<u8>) -> WrappedKey {
        WrappedKey {
            id: Uuid::now_v7(),
            subject: Subject::from_bytes([subject; 32]),
            wrapped,
            created_at: ordo_es::now_micros(),
        }
    }

    fn file_bytes(path: &Path) -> Vec<u8> {
        match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_erased_key_is_in_neither_the_database_nor_its_log() {
        let (keys, dir) = temp_keys();
        let database = dir.path().join("keys.sqlite");
        let log = dir.path().join("keys.sqlite-wal");
        let doomed = keys
            .create_key(key(1, distinctive(7)))
            .await
            .expect("create");
        // Into the database file; then a write to the same page puts a copy of the page,
        // the key in it, into the log as well.
        empty_log(&keys.conn.lock().expect("lock"));
        let kept = keys
            .create_key(key(2, distinctive(101)))
            .await
            .expect("create");
        for path in [&database, &log] {
            assert!(
                contains(&file_bytes(path), &doomed.wrapped),
                "{} holds the stored key (else the search proves nothing)",
                path.display()
            );
        }
        let outcome = keys
            .erase(&doomed.subject, ordo_es::now_micros(), "admin")
            .await
            .expect("erase");
        assert!(matches!(outcome, EraseOutcome::Erased(_)), "{outcome:?}");
        for path in [&database, &log] {
            assert!(
                !contains(&file_bytes(path), &doomed.wrapped),
                "the destroyed key's bytes are in {}",
                path.display()
            );
        }
        assert_eq!(keys.keys(&[kept.id]).await.expect("keys"), vec![kept]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_and_erasures_survive_reopening_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.sqlite");
        let (made, erasure) = {
            let keys = SqliteKeys::open(&path).expect("open");
            let made = keys
                .create_key(key(1, distinctive(1)))
                .await
                .expect("create");
            let gone = keys
                .create_key(key(2, distinctive(2)))
                .await
                .expect("create");
            let EraseOutcome::Erased(erasure) = keys
                .erase(&gone.subject, ordo_es::now_micros(), "cli")
                .await
                .expect("erase")
            else {
                panic!("a live key is erased");
            };
            (made, erasure)
        };
        let keys = SqliteKeys::open(&path).expect("reopen");
        assert_eq!(
            keys.live_key(&made.subject).await.expect("live"),
            Some(made)
        );
        assert_eq!(
            keys.erase(&erasure.subject, ordo_es::now_micros(), "cli")
                .await
                .expect("erase again"),
            EraseOutcome::AlreadyErased(erasure)
        );
    }

    #[tokio::test]
    async fn a_stored_subject_that_is_not_hex_is_corrupt() {
        let (keys, _dir) = temp_keys();
        keys.conn
            .lock()
            .expect("lock")
            .execute(
                "INSERT INTO keys (id, subject, wrapped, created_at) VALUES (?1, 'nope', x'00', 0)",
                [Uuid::nil().to_string()],
            )
            .expect("insert");
        let err = keys.page(None, 10).await.expect_err("corrupt");
        assert!(matches!(err, KeyStoreError::Corrupt(_)), "{err:?}");
    }
}
