//! The event-store benchmarks (see ordo-es's `benches/support/store_kit.rs`) against
//! PostgreSQL, in a schema of their own (`bench_<uuid>`), dropped at the end.
//!
//! The server is `ORDO_BENCH_POSTGRES_URL`, else `ORDO_TEST_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test` (what `scripts/test.sh` starts). With the
//! server's default `synchronous_commit = on`, each append waits for its WAL flush.
//!
//! `cargo bench -p ordo-postgres --bench postgres_store`

use std::sync::Arc;

use criterion::Criterion;
use tokio_postgres::NoTls;
use uuid::Uuid;

use ordo_postgres::PgEventStore;

#[path = "../../ordo-es/benches/support/store_kit.rs"]
mod store_kit;

use store_kit::{Profile, bench_appends, bench_loads, runtime};

fn server_url() -> String {
    std::env::var("ORDO_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("ORDO_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// Drops the benchmark's schema when the run ends, also when a benchmark panics.
struct SchemaGuard {
    url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let dropped = runtime().block_on(async {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                    self.schema
                ))
                .await
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the benchmark schema {}: {e}", self.schema);
        }
    }
}

fn main() {
    let url = server_url();
    let schema = format!("bench_{}", Uuid::now_v7().simple());
    let rt = runtime();
    let guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let store = rt
        .block_on(PgEventStore::connect(&with_param(
            &url,
            &format!("schema={schema}"),
        )))
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is unreachable at {url} (set ORDO_BENCH_POSTGRES_URL): {e}")
        });
    let store = Arc::new(store);

    let mut c = Criterion::default().configure_from_args();
    bench_appends(&mut c, "postgres", &rt, Profile::DURABLE, || {
        Arc::clone(&store)
    });
    bench_loads(&mut c, "postgres", &rt, Profile::DURABLE, &store);
    c.final_summary();

    drop(store);
    drop(rt);
    drop(guard);
}
