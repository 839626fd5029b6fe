//! Per-store environments: a private data dir, a unique PostgreSQL schema or Redis key
//! prefix, the server flags that point ordo at them, and the clean-up afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use ordo_domain::ReadStoreProvider;
use ordo_es::EventStore;
use tempfile::TempDir;

use crate::server::free_port;

/// Which stores the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Embedded: events and read models in SQLite files (durable: fsync per group commit).
    Sqlite,
    /// Events and read models in PostgreSQL.
    Postgres,
    /// Events in the shared Redis (as configured: no persistence), read models in SQLite.
    Redis,
    /// Events in a private Redis with appendonly yes, appendfsync always (durable), read
    /// models in SQLite.
    RedisAof,
    /// Events in the 3-master Redis Cluster (appendfsync always), read models in PostgreSQL.
    RedisCluster,
}

impl StoreKind {
    pub const ALL: [StoreKind; 5] = [
        StoreKind::Sqlite,
        StoreKind::Postgres,
        StoreKind::Redis,
        StoreKind::RedisAof,
        StoreKind::RedisCluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
            StoreKind::Redis => "redis",
            StoreKind::RedisAof => "redis-aof",
            StoreKind::RedisCluster => "redis-cluster",
        }
    }

    fn read_store_name(self) -> &'static str {
        match self {
            StoreKind::Postgres | StoreKind::RedisCluster => "postgres",
            _ => "sqlite",
        }
    }
}

/// Where the shared servers are.
#[derive(Clone, Debug, clap::Args)]
pub struct Backends {
    /// PostgreSQL (loopback only).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_url: String,
    /// The shared Redis (loopback only).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis_addr: String,
    /// The Redis Cluster is started (idempotently) with `<script> start <dir> <base port>`.
    #[arg(long, default_value = "scripts/redis-cluster.sh")]
    pub cluster_script: PathBuf,
    #[arg(long, default_value = "/tmp/ordo-bench-cluster")]
    pub cluster_dir: PathBuf,
    #[arg(long, default_value_t = 21000)]
    pub cluster_base_port: u16,
    /// Parent of the temporary data dirs (must be on the disk to measure, not tmpfs).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
}

/// A private redis-server, stopped when dropped.
#[derive(Debug)]
struct PrivateRedis {
    child: std::process::Child,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// One store's private resources.
#[derive(Debug)]
pub struct StoreEnv {
    pub kind: StoreKind,
    pub dir: TempDir,
    pub event_url: String,
    pub read_url: String,
    /// The unique name (schema or key prefix) of this environment.
    pub unique: String,
    pg_base: String,
    redis_nodes: Vec<String>,
    _private_redis: Option<PrivateRedis>,
    /// The bench cluster this environment started (script, directory): stopped by
    /// `cleanup`. A cluster that was already running is left running.
    started_cluster: Option<(PathBuf, PathBuf)>,
}

fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

fn wait_for_redis(addr: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let ok = redis::Client::open(format!("redis://{addr}"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok();
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("redis at {addr} did not answer PING within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl StoreEnv {
    pub async fn create(kind: StoreKind, b: &Backends) -> anyhow::Result<StoreEnv> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ordo-load-{}-", kind.name()))
            .tempdir_in(&b.work_dir)
            .with_context(|| format!("create a data dir in {}", b.work_dir.display()))?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let short = &id[id.len() - 10..];
        let unique = match kind {
            StoreKind::Postgres => format!("ordo_load_{short}"),
            _ => format!("ordo-load-{short}"),
        };
        let sqlite_read = format!("sqlite://{}", dir.path().join("read.db").display());
        let pg_schema_url = |schema: &str| with_param(&b.pg_url, "schema", schema);
        let mut private = None;
        let mut started_cluster = None;
        let mut redis_nodes = vec![b.redis_addr.clone()];
        let (event_url, read_url) = match kind {
            StoreKind::Sqlite => (
                format!("sqlite://{}", dir.path().join("events.db").display()),
                sqlite_read,
            ),
            StoreKind::Postgres => {
                let url = pg_schema_url(&unique);
                (url.clone(), url)
            }
            StoreKind::Redis => (
                with_param(&format!("redis://{}", b.redis_addr), "prefix", &unique),
                sqlite_read,
            ),
            StoreKind::RedisAof => {
                let port = free_port()?;
                let redis_dir = dir.path().join("redis");
                std::fs::create_dir_all(&redis_dir)?;
                let log = std::fs::File::create(dir.path().join("redis.log"))?;
                let child = std::process::Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--appendonly", "yes", "--appendfsync", "always"])
                    .args(["--save", "", "--protected-mode", "yes"])
                    .arg("--dir")
                    .arg(&redis_dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start a private redis-server (is redis-server on PATH?)")?;
                private = Some(PrivateRedis { child });
                let addr = format!("127.0.0.1:{port}");
                wait_for_redis(&addr, Duration::from_secs(10))?;
                redis_nodes = vec![addr.clone()];
                (
                    with_param(&format!("redis://{addr}"), "prefix", &unique),
                    sqlite_read,
                )
            }
            StoreKind::RedisCluster => {
                let running = std::process::Command::new(&b.cluster_script)
                    .arg("status")
                    .arg(&b.cluster_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                let status = std::process::Command::new(&b.cluster_script)
                    .arg("start")
                    .arg(&b.cluster_dir)
                    .arg(b.cluster_base_port.to_string())
                    .stdout(Stdio::null())
                    .status()
                    .with_context(|| format!("run {}", b.cluster_script.display()))?;
                anyhow::ensure!(
                    status.success(),
                    "the Redis Cluster did not start ({status})"
                );
                if !running {
                    started_cluster = Some((b.cluster_script.clone(), b.cluster_dir.clone()));
                }
                redis_nodes = (1..=3)
                    .map(|i| format!("127.0.0.1:{}", b.cluster_base_port + i))
                    .collect();
                let pg_schema = format!("ordo_load_{short}");
                (
                    with_param(
                        &format!("redis+cluster://{}", redis_nodes.join(",")),
                        "prefix",
                        &unique,
                    ),
                    pg_schema_url(&pg_schema),
                )
            }
        };
        Ok(StoreEnv {
            kind,
            dir,
            event_url,
            read_url,
            unique,
            pg_base: b.pg_url.clone(),
            redis_nodes,
            _private_redis: private,
            started_cluster,
        })
    }

    /// The flags that point `ordo serve` at this environment.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--data-dir".into(),
            self.dir.path().display().to_string(),
            "--event-store".into(),
            self.event_url.clone(),
            "--read-store".into(),
            self.read_url.clone(),
        ]
    }

    pub fn read_store_name(&self) -> &'static str {
        self.kind.read_store_name()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn redis_nodes(&self) -> &[String] {
        &self.redis_nodes
    }

    pub fn is_cluster(&self) -> bool {
        self.kind == StoreKind::RedisCluster
    }

    /// The Redis URL of the backend floor (no prefix parameter).
    pub fn redis_floor_url(&self) -> String {
        if self.is_cluster() {
            format!("redis+cluster://{}", self.redis_nodes.join(","))
        } else {
            format!("redis://{}", self.redis_nodes[0])
        }
    }

    pub fn pg_base(&self) -> &str {
        &self.pg_base
    }

    /// The PostgreSQL schema prefix of everything this environment created.
    pub fn pg_prefix(&self) -> String {
        let id = self
            .unique
            .trim_start_matches("ordo-load-")
            .trim_start_matches("ordo_load_");
        format!("ordo_load_{id}")
    }

    /// Opens the stores in this process (for seeding and replay).
    pub async fn open(&self) -> anyhow::Result<(Arc<dyn EventStore>, Arc<dyn ReadStoreProvider>)> {
        let events: Arc<dyn EventStore> = match self.kind {
            StoreKind::Sqlite => Arc::new(ordo_sqlite::SqliteEventStore::open(
                self.dir.path().join("events.db"),
            )?),
            StoreKind::Postgres => {
                Arc::new(ordo_postgres::PgEventStore::connect(&self.event_url).await?)
            }
            StoreKind::Redis | StoreKind::RedisAof | StoreKind::RedisCluster => {
                Arc::new(ordo_redis::RedisEventStore::connect(&self.event_url).await?)
            }
        };
        let reads: Arc<dyn ReadStoreProvider> = if self.read_url.starts_with("sqlite://") {
            Arc::new(ordo_sqlite::SqliteReadStores::new(
                self.dir.path().join("read.db"),
            ))
        } else {
            Arc::new(ordo_postgres::PgReadStores::connect(&self.read_url).await?)
        };
        Ok((events, reads))
    }

    /// An event store of this environment's kind, on the same servers, in a namespace of
    /// its own (a file, a schema, a key prefix), for measuring ordo's append without the
    /// server: nothing the server later reads. The Redis key prefix comes back for
    /// clean-up.
    pub async fn open_scratch_events(&self) -> anyhow::Result<(Arc<dyn EventStore>, String)> {
        let prefix = format!("{}-append", self.unique);
        let store: Arc<dyn EventStore> = match self.kind {
            StoreKind::Sqlite => Arc::new(ordo_sqlite::SqliteEventStore::open(
                self.dir.path().join("append-bench.db"),
            )?),
            StoreKind::Postgres => {
                let url = with_param(
                    &self.pg_base,
                    "schema",
                    &format!("{}_append", self.pg_prefix()),
                );
                Arc::new(ordo_postgres::PgEventStore::connect(&url).await?)
            }
            StoreKind::Redis | StoreKind::RedisAof | StoreKind::RedisCluster => {
                let url = with_param(&self.redis_floor_url(), "prefix", &prefix);
                Arc::new(ordo_redis::RedisEventStore::connect(&url).await?)
            }
        };
        Ok((store, prefix))
    }

    /// Removes what the environment created outside its data dir.
    pub async fn cleanup(&self) {
        if matches!(self.kind, StoreKind::Postgres | StoreKind::RedisCluster)
            && let Err(e) = crate::floors::pg_cleanup(&self.pg_base, &self.pg_prefix()).await
        {
            eprintln!(
                "ordo-load: could not drop the schemas {}*: {e:#}",
                self.pg_prefix()
            );
        }
        if matches!(self.kind, StoreKind::Redis | StoreKind::RedisCluster)
            && let Err(e) = crate::floors::redis_cleanup(&self.redis_nodes, &self.unique).await
        {
            eprintln!(
                "ordo-load: could not delete the keys {}:*: {e:#}",
                self.unique
            );
        }
        if let Some((script, dir)) = &self.started_cluster {
            let stopped = std::process::Command::new(script)
                .arg("stop")
                .arg(dir)
                .stdout(Stdio::null())
                .status();
            if !stopped.as_ref().is_ok_and(|s| s.success()) {
                eprintln!(
                    "ordo-load: could not stop the bench Redis Cluster ({}): {stopped:?}",
                    dir.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_appended_to_urls() {
        assert_eq!(
            with_param("postgres://h/db", "schema", "s"),
            "postgres://h/db?schema=s"
        );
        assert_eq!(
            with_param("postgres://h/db?pool_size=4", "schema", "s"),
            "postgres://h/db?pool_size=4&schema=s"
        );
    }
}
