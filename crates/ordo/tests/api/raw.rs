//! The stores' raw contents, as text, for searching personal data where no API shows it:
//! the SQLite files (database, WAL, full-text index), a dump of the PostgreSQL schemas,
//! every Redis key with its values.

use std::path::Path;

use ordo::StoreArgs;

/// What to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The event store (and the key store beside it).
    EventStore,
    /// Every store: events, keys and read models.
    Everything,
}

/// The raw contents of the stores of `args` in `scope`, bytes as lossy UTF-8.
pub async fn raw_storage(args: &StoreArgs, scope: Scope) -> String {
    let mut out = String::new();
    let events = args.event_store.as_deref();
    let reads = args.read_store.as_deref();
    let sqlite_files = |prefixes: &[&str]| files_text(&args.data_dir, prefixes);
    match events {
        None => out.push_str(&sqlite_files(&["events", "keys", "master"])),
        Some(url) if url.starts_with("postgres") => out.push_str(&pg_dump(url, false)),
        Some(url) => out.push_str(&redis_dump(url).await),
    }
    if scope == Scope::Everything {
        match reads {
            None => out.push_str(&sqlite_files(&[""])),
            Some(url) if url.starts_with("postgres") => out.push_str(&pg_dump(url, true)),
            Some(url) if url.starts_with("sqlite") => out.push_str(&sqlite_files(&[""])),
            Some(other) => panic!("read store {other}"),
        }
    }
    out
}

/// The bytes of every file under `dir` whose name starts with one of `prefixes`.
fn files_text(dir: &Path, prefixes: &[&str]) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| name.starts_with(p))
                && let Ok(bytes) = std::fs::read(&path)
            {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `pg_dump` of the URL's schema (with `generations`, of every schema named after it:
/// the read models' generations).
fn pg_dump(url: &str, generations: bool) -> String {
    let schema = query_param(url, "schema").expect("the test URL names a schema");
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let mut selection: Vec<String> = Vec::new();
    if generations {
        selection.extend(["--schema".into(), format!("{schema}*")]);
    } else {
        // The event store's tables (the events' partitions included) and the key store
        // beside them; the read models' first generation shares the schema.
        for table in ["events*", "snapshots", "data_keys", "key_erasures"] {
            selection.extend(["--table".into(), format!("{schema}.{table}")]);
        }
    }
    let output = std::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner"])
        .args(&selection)
        .args(["--dbname", base])
        .output()
        .expect("pg_dump runs (postgresql-client, installed by scripts/test.sh)");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("COPY"),
        "the dump holds the tables"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn value_text(value: &redis::Value, out: &mut String) {
    match value {
        redis::Value::BulkString(bytes) => out.push_str(&String::from_utf8_lossy(bytes)),
        redis::Value::SimpleString(s) => out.push_str(s),
        redis::Value::Int(n) => out.push_str(&n.to_string()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                value_text(item, out);
                out.push('\n');
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                value_text(k, out);
                out.push('\n');
                value_text(v, out);
                out.push('\n');
            }
        }
        other => out.push_str(&format!("{other:?}")),
    }
}

/// Every key of the URL's prefix with its contents, from each node that holds keys
/// (each master of a cluster).
async fn redis_dump(url: &str) -> String {
    let prefix = query_param(url, "prefix").expect("the test URL names a key prefix");
    let nodes: Vec<String> = match url.strip_prefix("redis+cluster://") {
        Some(rest) => {
            let seed = rest.split(['?', ',']).next().expect("a seed node");
            cluster_masters(&format!("redis://{seed}")).await
        }
        None => vec![url.split_once('?').map_or(url, |(b, _)| b).to_owned()],
    };
    let mut out = String::new();
    let mut keys_seen = 0;
    for node in nodes {
        let client = redis::Client::open(node.as_str()).expect("redis url");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .expect("scan");
            for key in keys {
                keys_seen += 1;
                out.push_str(&key);
                out.push('\n');
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut con)
                    .await
                    .expect("type");
                let mut read = match kind.as_str() {
                    "stream" => redis::cmd("XRANGE"),
                    "hash" => redis::cmd("HGETALL"),
                    "string" => redis::cmd("GET"),
                    "zset" => redis::cmd("ZRANGE"),
                    "set" => redis::cmd("SMEMBERS"),
                    "list" => redis::cmd("LRANGE"),
                    _ => continue,
                };
                read.arg(&key);
                match kind.as_str() {
                    "stream" => {
                        read.arg("-").arg("+");
                    }
                    "zset" | "list" => {
                        read.arg(0).arg(-1);
                    }
                    _ => {}
                }
                let value: redis::Value = read.query_async(&mut con).await.expect("read key");
                value_text(&value, &mut out);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    assert!(keys_seen > 0, "the prefix {prefix} holds keys");
    out
}

/// The masters of the cluster `seed` belongs to, as redis:// URLs.
async fn cluster_masters(seed: &str) -> Vec<String> {
    let client = redis::Client::open(seed).expect("seed url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("seed connection");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut con)
        .await
        .expect("cluster nodes");
    nodes
        .lines()
        .filter(|line| line.contains("master"))
        .filter_map(|line| {
            let address = line.split_whitespace().nth(1)?;
            let host_port = address.split('@').next()?;
            Some(format!("redis://{host_port}"))
        })
        .collect()
}
