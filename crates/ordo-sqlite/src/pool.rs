//! A small pool of read-only connections, used from blocking threads.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;
use tokio::task::JoinError;

/// Reads that run at once through [`ReadPool::read`]; the others wait for a connection.
/// On a machine of a few cores more would only take turns on them, each on a blocking
/// thread and a connection (page cache, prepared statements) of its own, opened for it.
const MAX_READERS: usize = 8;

#[derive(Debug)]
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_READERS)),
        }
    }

    /// Runs `f` with a read connection on a blocking thread, once fewer than
    /// [`MAX_READERS`] reads are running.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<rusqlite::Result<T>, JoinError> {
        // The semaphore is never closed; were it, the read would run without a permit.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.with(f)
        })
        .await
    }

    /// Runs `f` with a read connection.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_READERS {
            idle.push(conn);
        }
        result
    }
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    tune(&conn)?;
    Ok(conn)
}

/// Settings of every connection, reader or writer.
///
/// The query planner stability guarantee: without it, SQLite recompiles a statement on
/// every run when a bound value could change its plan, which it decides for any
/// `column = ?` on a table with partial indexes (every list by status or customer, and
/// the top-customer name lookup of every projection batch: 15% of a replay's time went
/// into re-parsing). The plans are the same either way; `list_queries_are_served_from_indexes` and
/// `no_statement_is_recompiled_per_run` check both.
fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Room for every statement the read and event stores keep prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Opens the read-write connection with WAL and the given `synchronous` level.
/// The page cache is `cache_mib` MiB: the default 2 MiB makes large batches re-read pages.
pub(crate) fn open_writer(
    path: &Path,
    synchronous: &str,
    cache_mib: i64,
) -> rusqlite::Result<Connection> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create {}: {e}", parent.display())),
            )
        })?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -cache_mib * 1024)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    tune(&conn)?;
    Ok(conn)
}

/// How often the background checkpointer copies the log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The writer checkpoints by itself only when the log has grown past this many pages
/// (32 MiB): the background checkpointer has fallen far behind.
const WRITER_CHECKPOINT_PAGES: i64 = 8_000;

/// Copies a WAL database's log into the database file from a thread of its own, so that
/// the writer's commits never wait for a checkpoint and its syncs (with SQLite's default,
/// every 1,000th page written makes the committing thread checkpoint: a stall of the
/// event writer's group commit, or of a projection batch that readers waiting for their
/// write sit behind). PASSIVE checkpoints take no lock that writers or readers wait for.
/// The thread stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Checkpointer {
    /// Stops the thread and waits until it has closed its connection (a checkpoint under
    /// way is finished first).
    pub(crate) fn stop(&self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Starts the checkpointer of the database at `path`, whose writer is `writer` (its own
/// automatic checkpoints are pushed back to a backstop).
pub(crate) fn start_checkpointer(
    path: &Path,
    writer: &Connection,
    synchronous: &str,
) -> rusqlite::Result<Checkpointer> {
    writer.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ordo-sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "background checkpoint failed; the writer checkpoints past the backstop");
                }
            }
        })
        .map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot start the checkpoint thread: {e}")),
            )
        })?;
    Ok(Checkpointer {
        stop: Mutex::new(Some(stop)),
        thread: Mutex::new(Some(thread)),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The workspace's `.cargo/config.toml` builds the bundled SQLite to sync with
    /// `fdatasync` (a measured gain, see there); cargo hands the same setting to this
    /// crate's compiler, so this fails when the setting is lost or overridden.
    #[test]
    fn the_bundled_sqlite_is_built_to_sync_with_fdatasync() {
        let flags = option_env!("LIBSQLITE3_FLAGS").unwrap_or_default();
        assert!(
            flags.split_whitespace().any(|f| f == "-DHAVE_FDATASYNC=1"),
            "LIBSQLITE3_FLAGS is {flags:?} at build time: without -DHAVE_FDATASYNC=1 SQLite syncs with fsync"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_readers_reads_run_at_once_and_the_rest_wait_their_turn() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("read.db");
        let writer = open_writer(&path, "NORMAL", 2).expect("create the database");
        writer
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);")
            .expect("a table");
        let pool = Arc::new(ReadPool::new(&path));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reads = (0..4 * MAX_READERS).map(|_| {
            let (pool, running, most) =
                (Arc::clone(&pool), Arc::clone(&running), Arc::clone(&most));
            tokio::spawn(async move {
                pool.read(move |conn| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Long enough for the other reads to pile up behind this one.
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0))?;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(x)
                })
                .await
            })
        });
        for read in reads.collect::<Vec<_>>() {
            let x = read
                .await
                .expect("task")
                .expect("blocking job")
                .expect("read");
            assert_eq!(x, 7);
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            (2..=MAX_READERS).contains(&most),
            "{most} reads ran at once"
        );
        let idle = pool.idle.lock().expect("idle").len();
        assert!(
            idle <= MAX_READERS,
            "{idle} connections kept: no more were opened than run at once"
        );
    }
}
