//! The event-store benchmarks (see ordo-es's `benches/support/store_kit.rs`) against one
//! Redis server, under a key prefix of their own (`bench-<uuid>`), deleted at the end.
//!
//! The server is `ORDO_BENCH_REDIS_URL`, else `ORDO_TEST_REDIS_URL`, else
//! `redis://127.0.0.1:6379` (what `scripts/test.sh` starts). How durable an append is
//! (and so what it costs) is the server's `appendonly`/`appendfsync` setting: the figures
//! are only comparable between runs on the same setting.
//!
//! `cargo bench -p ordo-redis --bench redis_store`

use std::sync::Arc;

use criterion::Criterion;
use uuid::Uuid;

use ordo_redis::RedisEventStore;

#[path = "../../ordo-es/benches/support/store_kit.rs"]
mod store_kit;

use store_kit::{Profile, bench_appends, bench_loads, runtime};

fn server_url() -> String {
    std::env::var("ORDO_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("ORDO_TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// Deletes every key under the benchmark's prefix when the run ends, also when a
/// benchmark panics.
struct PrefixGuard {
    url: String,
    prefix: String,
}

impl PrefixGuard {
    fn delete_keys(&self) -> redis::RedisResult<u64> {
        let mut con = redis::Client::open(self.url.as_str())?.get_connection()?;
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0_u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query(&mut con)?;
            if !keys.is_empty() {
                deleted += redis::cmd("UNLINK").arg(&keys).query::<u64>(&mut con)?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        if let Err(e) = self.delete_keys() {
            eprintln!("could not delete the benchmark keys {}:*: {e}", self.prefix);
        }
    }
}

fn main() {
    let url = server_url();
    let prefix = format!("bench-{}", Uuid::now_v7().simple());
    let rt = runtime();
    let guard = PrefixGuard {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = rt
        .block_on(RedisEventStore::connect(&format!(
            "{url}{separator}prefix={prefix}"
        )))
        .unwrap_or_else(|e| {
            panic!("Redis is unreachable at {url} (set ORDO_BENCH_REDIS_URL): {e}")
        });
    let store = Arc::new(store);

    let mut c = Criterion::default().configure_from_args();
    bench_appends(&mut c, "redis", &rt, Profile::DURABLE, || {
        Arc::clone(&store)
    });
    bench_loads(&mut c, "redis", &rt, Profile::DURABLE, &store);
    c.final_summary();

    drop(store);
    drop(rt);
    drop(guard);
}
