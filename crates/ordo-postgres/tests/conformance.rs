//! The shared event-store and snapshot-store conformance suites, against a real PostgreSQL server
//! (`ORDO_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`). Each
//! case gets its own schema, so runs never see each other's data, dropped when the case's
//! store is. An unreachable server fails the tests: it never skips them.
//!
//! This suite has a test binary of its own: the gap test (in the library's unit tests)
//! holds a writing transaction open, which pauses every reader on the server meanwhile.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ordo_es::{
    Appended, Checkpoint, EventRewriter, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, Rewrite, RewriteCursor, Snapshot, SnapshotStore, StoreError, StreamId,
};
use ordo_postgres::PgEventStore;
use tokio_postgres::NoTls;
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn server_url() -> String {
    std::env::var("ORDO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}schema={schema}")
}

/// A store in a schema of its own. Test schemas are named `t_<uuid v7>`; those older
/// than an hour (left by earlier runs) are dropped on the way.
async fn fresh_store() -> TestStore {
    let url = server_url();
    drop_stale_test_schemas(&url).await;
    let schema = format!("t_{}", Uuid::now_v7().simple());
    match PgEventStore::connect(&with_schema(&url, &schema)).await {
        Ok(inner) => TestStore { inner },
        Err(e) => panic!(
            "the PostgreSQL test server is unreachable or unusable at {url} \
             (set ORDO_TEST_POSTGRES_URL): {e} ({:?})",
            std::error::Error::source(&e).map(ToString::to_string)
        ),
    }
}

async fn drop_stale_test_schemas(url: &str) {
    let Ok((client, connection)) = tokio_postgres::connect(url, NoTls).await else {
        return; // connect() right after reports the failure properly
    };
    let connection = tokio::spawn(connection);
    let hour_ago_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(3600))
        .as_millis();
    if let Ok(rows) = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'",
            &[],
        )
        .await
    {
        for row in rows {
            let name: String = row.get(0);
            let created_ms = name
                .strip_prefix("t_")
                .and_then(|hex| Uuid::try_parse(hex).ok())
                .and_then(|id| id.get_timestamp())
                .map(|ts| {
                    let (secs, nanos) = ts.to_unix();
                    u128::from(secs) * 1000 + u128::from(nanos / 1_000_000)
                });
            if created_ms.is_some_and(|ms| ms < hour_ago_ms) {
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await;
            }
        }
    }
    drop(client);
    let _ = connection.await;
}

/// A store that drops its schema when it is dropped.
#[derive(Debug)]
struct TestStore {
    inner: PgEventStore,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread
        // with a runtime of its own.
        let (url, schema) = (server_url(), self.inner.schema().to_string());
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
                        let connection = tokio::spawn(connection);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .await;
                        drop(client);
                        let _ = connection.await;
                    }
                });
            }
        });
        let _ = dropper.join();
    }
}

#[async_trait]
impl EventStore for TestStore {
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: &Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn wait_for_events(
        &self,
        after: &Checkpoint,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        self.inner.wait_for_events(after, timeout).await
    }

    async fn count_after(&self, after: &Checkpoint) -> Result<u64, StoreError> {
        self.inner.count_after(after).await
    }

    async fn head(&self) -> Result<Checkpoint, StoreError> {
        self.inner.head().await
    }

    async fn event_id_at(&self, position: &Position) -> Result<Option<Uuid>, StoreError> {
        self.inner.event_id_at(position).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl SnapshotStore for TestStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        self.inner.delete_snapshots().await
    }
}

#[async_trait]
impl EventRewriter for TestStore {
    async fn legacy_events(
        &self,
        event_type: &str,
        below: u32,
        after: Option<RewriteCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<RewriteCursor>), StoreError> {
        self.inner
            .legacy_events(event_type, below, after, limit)
            .await
    }

    async fn rewrite(&self, changes: &[Rewrite]) -> Result<u64, StoreError> {
        self.inner.rewrite(changes).await
    }

    async fn purge_old_versions(&self) -> Result<(), StoreError> {
        self.inner.purge_old_versions().await
    }
}

ordo_es::event_store_conformance!(async { fresh_store().await });

/// The rewriter suite (a migration's rewrite in place), each case in a schema of its own.
mod rewriter {
    use super::fresh_store;

    ordo_es::event_rewriter_conformance!(async { fresh_store().await });
}

/// The snapshot-store suite, each case in a schema of its own as well.
mod snapshots {
    use super::fresh_store;

    ordo_es::snapshot_store_conformance!(async { fresh_store().await });
}
