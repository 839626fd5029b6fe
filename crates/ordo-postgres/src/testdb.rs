//! Test helpers: the test server, and a schema of its own per test.
//!
//! The server is `ORDO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached the tests fail
//! with a message saying so; they never skip.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn server_url() -> String {
    std::env::var("ORDO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A plain connection to the test server (no ordo parameters).
pub async fn raw_client() -> Client {
    let url = server_url();
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL test server is unreachable at {url} (set ORDO_TEST_POSTGRES_URL): {e}"));
    tokio::spawn(connection);
    client
}

/// A new schema name `t_<uuid v7>` and the server URL that selects it. Schemas left
/// by earlier runs more than an hour ago are dropped on the way.
pub async fn fresh_url() -> (String, String) {
    let client = raw_client().await;
    drop_stale_schemas(&client).await;
    let schema = format!("t_{}", Uuid::now_v7().simple());
    let url = server_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{separator}schema={schema}"), schema)
}

pub async fn drop_schema(schema: &str) {
    let client = raw_client().await;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("drop the test schema");
}

/// Drops the schema `base` and the generations made beside it when dropped: the guard of
/// a test's store, for suites whose cases end synchronously.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let base = std::mem::take(&mut self.0);
        // Off the test's runtime: the guard is dropped inside an async function.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(drop_schema_family(&base));
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop the test schema");
        }
    }
}

/// Drops `base` and every read-store generation made beside it (`<base>_g...`).
pub async fn drop_schema_family(base: &str) {
    let client = raw_client().await;
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname::text, $1 || '_g')",
            &[&base],
        )
        .await
        .expect("list the test schemas");
    for row in rows {
        let name: String = row.get(0);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
            .await
            .expect("drop a test schema");
    }
}

async fn drop_stale_schemas(client: &Client) {
    let hour_ago_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(3600))
        .as_millis();
    let Ok(rows) = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created_ms = name
            .strip_prefix("t_")
            // t_<uuid>, or a schema named after one: t_<uuid>_g<hex> (a generation).
            .and_then(|rest| rest.split('_').next())
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
