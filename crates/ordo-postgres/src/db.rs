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
/// How long a caller waits for a pooled connection, and a new connection may take.
const POOL_WAIT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Key of the transaction-scoped advisory lock that serialises migrations (all schemas:
/// `CREATE EXTENSION` is database-wide). "ordo" in ASCII.
const MIGRATION_LOCK: i64 = 0x6f72_646f;

/// A parsed connection URL: the driver's configuration plus ordo's own parameters.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub pg: tokio_postgres::Config,
    /// Validated identifier; see [`ConnectOptions::qualified`].
    pub schema: String,
    pub pool_size: usize,
}

impl ConnectOptions {
    /// Splits ordo's parameters (`schema`, `pool_size`) off a `postgres://` URL (or a
    /// `key=value` connection string) and hands the rest to tokio-postgres.
    pub fn parse(url: &str) -> Result<Self, String> {
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut take = |key: &str, value: &str| -> Result<bool, String> {
            match key {
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
                _ => Ok(false),
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
        Ok(Self {
            pg,
            schema,
            pool_size,
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
        // 57P01..57P03: shutdown, crash, cannot connect now.
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03");
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
    let s = options.qualified();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
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
    for migration in migrations.iter().filter(|m| !applied.contains(&m.version)) {
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
}
