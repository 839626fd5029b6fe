//! What both stores share: the connection URL, the pool, error classification and the
//! versioned migrations.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use ordo_domain::ReadStoreError;
use ordo_es::{BoxError, StoreError};

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "ordo";
/// Pool size when the URL names none.
const DEFAULT_POOL_SIZE: usize = 16;
/// Partitions of a new event log when the URL names none.
pub(crate) const DEFAULT_PARTITIONS: u32 = 8;
/// The most partitions an event log may have.
pub(crate) const MAX_PARTITIONS: u32 = 256;
/// How long a caller waits for a pooled connection, and a new connection may take.
const POOL_WAIT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server ends any one statement of ordo's that runs longer (SQLSTATE 57014, a 503):
/// a statement stuck on a lock or a server too slow to answer fails on its own, below
/// the default request deadline of 30 s, with time left for the pool wait and a second
/// statement. Schema work (migrations, deferred index builds) runs without it.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The server ends a session of ordo's that sits inside a transaction doing nothing this
/// long. ordo never waits on anything else inside a transaction, so only a lost client
/// (network gone, process stalled) trips it; until then the open transaction would hold
/// the server's xmin back and pause every reader of the event log (see the crate docs).
const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive and user timeout, unless the URL sets them: a server that vanished
/// (host down, network cut, no FIN or RST) is noticed within about half a minute,
/// instead of the kernel's two hours idle or fifteen minutes of retransmissions.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest timeout the URL may set, in milliseconds (a day; PostgreSQL's own limit is
/// about 24 days).
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Key of the transaction-scoped advisory lock that serialises migrations (all schemas:
/// `CREATE EXTENSION` is database-wide). "ordo" in ASCII.
pub(crate) const MIGRATION_LOCK: i64 = 0x6f72_646f;

/// A parsed connection URL: the driver's configuration plus ordo's own parameters.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub pg: tokio_postgres::Config,
    /// Validated identifier; see [`ConnectOptions::qualified`].
    pub schema: String,
    pub pool_size: usize,
    /// Partitions of the event log: used when the store is created, checked against the
    /// stored count after that.
    pub partitions: u32,
}

/// A timeout parameter of the URL: milliseconds, `0` for "leave the server's setting".
fn timeout_ms(key: &str, value: &str) -> Result<Option<Duration>, String> {
    match value.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) if ms <= MAX_TIMEOUT_MS => Ok(Some(Duration::from_millis(ms))),
        _ => Err(format!(
            "{key} must be 0 (the server's setting) or milliseconds up to {MAX_TIMEOUT_MS}, not {value:?}"
        )),
    }
}

impl ConnectOptions {
    /// Splits ordo's parameters (`schema`, `pool_size`, `partitions`,
    /// `statement_timeout_ms`, `idle_in_transaction_timeout_ms`) off a `postgres://` URL (or a `key=value`
    /// connection string) and hands the rest to tokio-postgres.
    pub fn parse(url: &str) -> Result<Self, String> {
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut partitions = DEFAULT_PARTITIONS;
        let mut statement_timeout = Some(DEFAULT_STATEMENT_TIMEOUT);
        let mut idle_in_transaction_timeout = Some(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT);
        // The driver's keys the URL sets, so that ordo's defaults do not override them.
        let mut driver_keys: Vec<String> = Vec::new();
        let mut take = |key: &str, value: &str| -> Result<bool, String> {
            match key {
                "statement_timeout_ms" => {
                    statement_timeout = timeout_ms(key, value)?;
                    Ok(true)
                }
                "idle_in_transaction_timeout_ms" => {
                    idle_in_transaction_timeout = timeout_ms(key, value)?;
                    Ok(true)
                }
                "schema" => {
                    schema = value.to_string();
                    Ok(true)
                }
                "pool_size" => {
                    pool_size = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1_000).contains(n))
                        .ok_or_else(|| format!("pool_size must be 1..=1000, not {value:?}"))?;
                    Ok(true)
                }
                "partitions" => {
                    partitions = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
                        .ok_or_else(|| {
                            format!("partitions must be 1..={MAX_PARTITIONS}, not {value:?}")
                        })?;
                    Ok(true)
                }
                _ => {
                    driver_keys.push(key.to_string());
                    Ok(false)
                }
            }
        };
        let rest = if url.contains("://") {
            match url.split_once('?') {
                None => url.to_string(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        if !take(key, value)? {
                            kept.push(pair);
                        }
                    }
                    if kept.is_empty() {
                        base.to_string()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            // key=value form; ordo's keys never need quoting.
            let mut kept = Vec::new();
            for word in url.split_whitespace() {
                let taken = match word.split_once('=') {
                    Some((key, value)) => take(key.trim(), value.trim())?,
                    None => false,
                };
                if !taken {
                    kept.push(word);
                }
            }
            kept.join(" ")
        };
        validate_identifier(&schema)?;
        let mut pg = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("ordo");
        }
        if !driver_keys.iter().any(|k| k == "keepalives_idle") {
            pg.keepalives_idle(KEEPALIVES_IDLE);
        }
        if !driver_keys.iter().any(|k| k == "tcp_user_timeout") {
            pg.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        // Sent as `-c` settings in the startup packet, so they hold from the first
        // statement of every connection, with no extra round trip. The URL's own
        // `options` come after them (and win for the same setting). A pooler that
        // refuses startup options takes `..._ms=0`: then nothing is sent.
        let mut settings = Vec::new();
        if let Some(t) = statement_timeout {
            settings.push(format!("-c statement_timeout={}", t.as_millis()));
        }
        if let Some(t) = idle_in_transaction_timeout {
            settings.push(format!(
                "-c idle_in_transaction_session_timeout={}",
                t.as_millis()
            ));
        }
        if !settings.is_empty() {
            if let Some(own) = pg.get_options() {
                settings.push(own.to_string());
            }
            pg.options(settings.join(" "));
        }
        Ok(Self {
            pg,
            schema,
            pool_size,
            partitions,
        })
    }

    /// The schema as a quoted identifier, ready to prefix table names.
    pub fn qualified(&self) -> String {
        format!("\"{}\"", self.schema)
    }

    pub fn pool(&self) -> Result<Pool, String> {
        let manager = Manager::from_config(
            self.pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .build()
            .map_err(|e| format!("cannot build the connection pool: {e}"))
    }
}

/// Schema names are spliced into SQL, so only plain identifiers are accepted.
fn validate_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema must be 1..=63 ASCII letters, digits or underscores, not starting with a digit: {name:?}"
        ))
    }
}

/// A failure talking to PostgreSQL, from the driver or the pool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl DbError {
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            DbError::Pg(e) => e.code(),
            DbError::Pool(PoolError::Backend(e)) => e.code(),
            DbError::Pool(_) => None,
        }
    }

    /// True when the server could not be reached or went away: transient.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Pg(e) => pg_unavailable(e),
            DbError::Pool(PoolError::Backend(e)) => pg_unavailable(e),
            DbError::Pool(PoolError::Timeout(_) | PoolError::Closed) => true,
            DbError::Pool(_) => false,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    fn boxed(self) -> BoxError {
        Box::new(self)
    }
}

fn pg_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        // 08: connection exception; 53: insufficient resources (too many connections);
        // 57014: query canceled (the statement timeout; the statement's transaction is
        // rolled back, so a canceled append is certainly not stored); 57P01..57P03:
        // shutdown, crash, cannot connect now; 25P03 and 57P05: the server ended a
        // session idle (in a transaction) past its timeout (the client was stalled).
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(
                code,
                "57014" | "57P01" | "57P02" | "57P03" | "57P05" | "25P03"
            );
    }
    // No SQLSTATE: a socket error or a connect timeout shows as an io::Error source.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            StoreError::Unavailable(e.boxed())
        } else {
            StoreError::Other(e.boxed())
        }
    }
}

impl From<DbError> for ordo_es::LeaseError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            ordo_es::LeaseError::Unavailable(e.boxed())
        } else {
            ordo_es::LeaseError::Other(e.boxed())
        }
    }
}

impl From<DbError> for ReadStoreError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            ReadStoreError::Unavailable(e.boxed())
        } else {
            ReadStoreError::Other(e.boxed())
        }
    }
}

/// One schema change. `sql` may use `{s}` for the quoted schema and `{trgm}` for the
/// quoted schema that holds the pg_trgm extension (which the runner then creates if
/// missing).
#[derive(Debug)]
pub(crate) struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Applies the migrations of `component` that the schema lacks, in one transaction under
/// a transaction-scoped advisory lock, so that processes starting together neither race
/// nor apply a change twice. Creates the schema if missing.
pub(crate) async fn migrate(
    pool: &Pool,
    options: &ConnectOptions,
    component: &str,
    migrations: &[Migration],
) -> Result<(), DbError> {
    migrate_through(pool, options, component, migrations, i32::MAX).await
}

/// [`migrate`], applying only the versions up to `through`: the later ones are the
/// caller's to apply (after work the SQL alone cannot do), but still known, so that
/// finding them applied is no sign of a newer ordo.
pub(crate) async fn migrate_through(
    pool: &Pool,
    options: &ConnectOptions,
    component: &str,
    migrations: &[Migration],
    through: i32,
) -> Result<(), DbError> {
    let s = options.qualified();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // No statement timeout here: waiting for another process's migration, or building
    // an index on a large table, may rightly take longer.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0;
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
             component text NOT NULL,
             version integer NOT NULL,
             description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (component, version)
         );"
    ))
    .await?;
    let applied: Vec<i32> = tx
        .query(
            &format!("SELECT version FROM {s}.schema_migrations WHERE component = $1"),
            &[&component],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let newest_known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newer) = applied.iter().copied().filter(|v| *v > newest_known).max() {
        tracing::warn!(component, schema = %options.schema, newer, newest_known, "the schema was migrated by a newer ordo");
    }
    for migration in migrations
        .iter()
        .filter(|m| m.version <= through && !applied.contains(&m.version))
    {
        let mut sql = migration.sql.replace("{s}", &s);
        if sql.contains("{trgm}") {
            tx.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                .await?;
            let row = tx
                .query_one(
                    "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'",
                    &[],
                )
                .await?;
            let trgm: String = row.get(0);
            sql = sql.replace("{trgm}", &format!("\"{}\"", trgm.replace('"', "\"\"")));
        }
        tx.batch_execute(&sql).await?;
        tx.execute(
            &format!("INSERT INTO {s}.schema_migrations (component, version, description) VALUES ($1, $2, $3)"),
            &[&component, &migration.version, &migration.description],
        )
        .await?;
        tracing::info!(component, schema = %options.schema, version = migration.version, migration.description, "applied migration");
    }
    tx.commit().await?;
    Ok(())
}

/// Why the schema cannot serve `component` (called `what` in the message) as it is:
/// none of its migrations applied (no such store there), or some missing. `None` when
/// every one is applied. Reads only: no schema, table or lock is taken or created.
pub(crate) async fn missing_migrations(
    pool: &Pool,
    options: &ConnectOptions,
    component: &str,
    what: &str,
    migrations: &[Migration],
) -> Result<Option<String>, DbError> {
    let client = pool.get().await?;
    let table = format!("{}.schema_migrations", options.qualified());
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    let applied: Vec<i32> = if exists {
        client
            .query(
                &format!("SELECT version FROM {table} WHERE component = $1"),
                &[&component],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let missing = migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count();
    Ok(if missing == migrations.len() {
        Some(format!("no {what} in schema {:?}", options.schema))
    } else if missing > 0 {
        Some(format!(
            "the {what} in schema {:?} lacks {missing} migration(s) of this ordo: `ordo serve` applies them",
            options.schema
        ))
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_taken_off_the_url() {
        let o = ConnectOptions::parse("postgres://u@h:5433/db?schema=shop_1&sslmode=disable")
            .expect("parse");
        assert_eq!(o.schema, "shop_1");
        assert_eq!(o.pg.get_dbname(), Some("db"));
        let o = ConnectOptions::parse("postgres://u@h/db?schema=x&pool_size=3").expect("parse");
        assert_eq!((o.schema.as_str(), o.pool_size), ("x", 3));
        let o = ConnectOptions::parse("postgres://u@h/db").expect("parse");
        assert_eq!(o.schema, DEFAULT_SCHEMA);
        let o = ConnectOptions::parse("host=h user=u dbname=d schema=kv").expect("parse");
        assert_eq!((o.schema.as_str(), o.pg.get_dbname()), ("kv", Some("d")));
    }

    #[test]
    fn schema_names_that_are_not_plain_identifiers_are_refused() {
        for bad in ["", "1abc", "a-b", "a\"b", "a;drop", &"x".repeat(64)] {
            let url = format!("postgres://u@h/db?schema={bad}");
            assert!(ConnectOptions::parse(&url).is_err(), "{bad:?} accepted");
        }
        assert!(ConnectOptions::parse("postgres://u@h/db?pool_size=0").is_err());
    }

    #[test]
    fn the_partition_count_is_taken_off_the_url_and_checked() {
        let o = ConnectOptions::parse("postgres://u@h/db").expect("parse");
        assert_eq!(o.partitions, DEFAULT_PARTITIONS);
        for n in [1, 16, 256] {
            let o = ConnectOptions::parse(&format!("postgres://u@h/db?partitions={n}&schema=x"))
                .expect("parse");
            assert_eq!((o.partitions, o.schema.as_str()), (n, "x"));
            assert_eq!(o.pg.get_dbname(), Some("db"));
        }
        let o = ConnectOptions::parse("host=h dbname=d partitions=3").expect("parse");
        assert_eq!((o.partitions, o.pg.get_dbname()), (3, Some("d")));
        for bad in ["0", "257", "-1", "1.5", "", "eight", "99999999999"] {
            let url = format!("postgres://u@h/db?partitions={bad}");
            let error = ConnectOptions::parse(&url).expect_err(&url);
            assert!(error.contains("partitions must be 1..=256"), "{error}");
        }
    }

    #[test]
    fn every_connection_gets_a_statement_and_an_idle_in_transaction_timeout() {
        let o = ConnectOptions::parse("postgres://u@h/db").expect("parse");
        assert_eq!(
            o.pg.get_options(),
            Some("-c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000")
        );
        assert_eq!(o.pg.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(o.pg.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
    }

    #[test]
    fn the_timeouts_are_set_by_url_parameters_and_zero_leaves_the_servers_setting() {
        let o = ConnectOptions::parse(
            "postgres://u@h/db?statement_timeout_ms=1500&idle_in_transaction_timeout_ms=0&sslmode=disable",
        )
        .expect("parse");
        assert_eq!(o.pg.get_options(), Some("-c statement_timeout=1500"));
        let o = ConnectOptions::parse(
            "postgres://u@h/db?statement_timeout_ms=0&idle_in_transaction_timeout_ms=0",
        )
        .expect("parse");
        assert_eq!(
            o.pg.get_options(),
            None,
            "nothing sent: a pooler may refuse options"
        );
        let o = ConnectOptions::parse("host=h dbname=d statement_timeout_ms=250").expect("parse");
        assert_eq!(
            o.pg.get_options(),
            Some("-c statement_timeout=250 -c idle_in_transaction_session_timeout=30000")
        );
    }

    #[test]
    fn the_urls_own_options_and_keepalive_settings_are_kept() {
        let o = ConnectOptions::parse(
            "postgres://u@h/db?options=-c%20synchronous_commit%3Don&keepalives_idle=300&tcp_user_timeout=5",
        )
        .expect("parse");
        assert_eq!(
            o.pg.get_options(),
            Some(
                "-c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000 -c synchronous_commit=on"
            )
        );
        assert_eq!(o.pg.get_keepalives_idle(), Duration::from_secs(300));
        assert_eq!(o.pg.get_tcp_user_timeout(), Some(&Duration::from_secs(5)));
    }

    #[test]
    fn timeouts_that_are_not_milliseconds_in_range_are_refused() {
        for key in ["statement_timeout_ms", "idle_in_transaction_timeout_ms"] {
            for bad in ["", "-1", "1.5", "10s", "86400001", "99999999999999999999"] {
                let url = format!("postgres://u@h/db?{key}={bad}");
                let error = ConnectOptions::parse(&url).expect_err(&url);
                assert!(error.contains(key), "{error}");
            }
        }
    }

    /// Against the test server: the timeout reaches the session, a statement past it is
    /// canceled (SQLSTATE 57014), and that is `Unavailable` (a 503), not a bug (a 500).
    #[tokio::test]
    async fn a_statement_past_its_timeout_is_canceled_and_reported_unavailable() {
        let (url, _schema) = crate::testdb::fresh_url().await;
        let options =
            ConnectOptions::parse(&format!("{url}&statement_timeout_ms=200")).expect("parse");
        let pool = options.pool().expect("pool");
        let client = pool.get().await.expect("a connection to the test server");
        let shown: String = client
            .query_one("SHOW statement_timeout", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(shown, "200ms");
        let idle: String = client
            .query_one("SHOW idle_in_transaction_session_timeout", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(idle, "30s");
        let error = DbError::from(
            client
                .batch_execute("SELECT pg_sleep(5)")
                .await
                .expect_err("canceled by the statement timeout"),
        );
        assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED));
        assert!(matches!(
            StoreError::from(error),
            StoreError::Unavailable(_)
        ));
        // The connection is still good for the next statement.
        client.batch_execute("SELECT 1").await.expect("usable");
    }

    /// Against the test server: a session left idle inside a transaction is ended by the
    /// server, and what the client then hears is `Unavailable`.
    #[tokio::test]
    async fn a_session_idle_in_a_transaction_is_ended_and_that_is_unavailable() {
        let (url, _schema) = crate::testdb::fresh_url().await;
        let options = ConnectOptions::parse(&format!("{url}&idle_in_transaction_timeout_ms=100"))
            .expect("parse");
        let pool = options.pool().expect("pool");
        let mut client = pool.get().await.expect("a connection to the test server");
        let tx = client.transaction().await.expect("begin");
        // Idle in the transaction past the timeout: the server ends the session, and the
        // next statement fails (with 25P03, or as a closed connection).
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let error = DbError::from(
            tx.batch_execute("SELECT 1")
                .await
                .expect_err("session ended"),
        );
        assert!(error.is_unavailable(), "{error:?}");
    }
}
