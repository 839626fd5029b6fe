//! Leases on projection shards in PostgreSQL ([`LeaseStore`]): two tables in the read
//! store's configured schema (the one that holds the pointer to the active generation),
//! so that they live beside the read models they guard and outlast every generation.
//!
//! Each operation is one statement (the heartbeat three), and every time is the server's:
//! a lease lapses by the database's clock, never a projector's. Whether a lease lapsed
//! is judged at the statement's start (`now()`, the conservative side); a new expiry
//! counts from when the statement got the row (`clock_timestamp()`), so a taker that
//! waited on a lock does not get a lease already half gone. A takeover is an
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE` on the shard's row, which PostgreSQL runs
//! atomically against concurrent takers, so a shard never has two holders; each new
//! holder's token is the row's token plus one.
//!
//! A fenced read-model write (`PgReadStore`'s `commit_fenced` and `park_fenced`) reads
//! the shard's row `FOR KEY SHARE` in its own transaction and compares the token, so
//! that every write begun after a takeover with the old token fails; calling
//! [`LeaseStore::is_current`] before a write instead would be check-then-act. The lock
//! keeps the row from being deleted, and nothing more: renewals and takeovers (updates
//! that change no key) do not wait for a write in flight, so a slow commit cannot make
//! its own process's leases lapse. A write that read the token before a takeover and
//! commits after it is stopped by the shard's checkpoint compare-and-set instead: the
//! successor starts from the checkpoint it finds, and of the two writes from one
//! checkpoint only one commits.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio_postgres::Row;

use ordo_es::{Lease, LeaseError, LeaseStore};

use crate::db::{ConnectOptions, DbError, Migration, migrate};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "projection shard leases and projector heartbeats",
    sql: r#"
        -- One row per shard that ever had a lease: its current holder ('' once released),
        -- the fencing token (greater at every new holder) and when it lapses.
        CREATE TABLE {s}.projection_leases (
            projection text NOT NULL,
            shard integer NOT NULL,
            owner text NOT NULL,
            token bigint NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (projection, shard)
        );
        -- The projectors alive: each renews its row; the shards are spread over them.
        CREATE TABLE {s}.projection_members (
            projection text NOT NULL,
            owner text NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (projection, owner)
        );
    "#,
}];

/// The shard leases of the projections writing to one PostgreSQL read store.
#[derive(Debug)]
pub struct PgLeases {
    pool: Pool,
    /// `S.projection_leases` and `S.projection_members`, quoted.
    leases: String,
    members: String,
}

impl PgLeases {
    /// Connects to the read store at `url` (the URL of [`crate::PgReadStores`]), creating
    /// the lease tables in its configured schema when missing.
    pub async fn connect(url: &str) -> Result<PgLeases, LeaseError> {
        let mut options = ConnectOptions::parse(url).map_err(|e| LeaseError::Other(e.into()))?;
        options.pool_size = options.pool_size.min(4);
        let pool = options.pool().map_err(|e| LeaseError::Other(e.into()))?;
        migrate(&pool, &options, "projection_leases", MIGRATIONS)
            .await
            .map_err(lease_error)?;
        let s = options.qualified();
        Ok(PgLeases {
            pool,
            leases: format!("{s}.projection_leases"),
            members: format!("{s}.projection_members"),
        })
    }

    /// The leases of the read store at `url` read-only, for `ordo status`: creates
    /// nothing; `None` when no projector ever made the lease tables there (nothing was
    /// divided into shards yet).
    pub async fn connect_existing(url: &str) -> Result<Option<PgLeases>, LeaseError> {
        let mut options = ConnectOptions::parse(url).map_err(|e| LeaseError::Other(e.into()))?;
        options.pool_size = 1;
        let pool = options.pool().map_err(|e| LeaseError::Other(e.into()))?;
        let missing = crate::db::missing_migrations(
            &pool,
            &options,
            "projection_leases",
            "lease store",
            MIGRATIONS,
        )
        .await
        .map_err(|e| LeaseError::Unavailable(Box::new(e)))?;
        if missing.is_some() {
            return Ok(None);
        }
        let s = options.qualified();
        Ok(Some(PgLeases {
            pool,
            leases: format!("{s}.projection_leases"),
            members: format!("{s}.projection_members"),
        }))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, LeaseError> {
        let client = self.pool.get().await.map_err(|e| lease_error(e.into()))?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| lease_error(e.into()))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| lease_error(e.into()))
    }
}

fn lease_error(e: DbError) -> LeaseError {
    e.into()
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn shard_param(shard: u32) -> Result<i32, LeaseError> {
    i32::try_from(shard).map_err(|e| LeaseError::Other(Box::new(e)))
}

fn token_param(token: u64) -> Result<i64, LeaseError> {
    i64::try_from(token).map_err(|e| LeaseError::Other(Box::new(e)))
}

/// A `(projection, shard, owner, token, expires_at)` row.
fn lease_of(row: &Row) -> Result<Lease, LeaseError> {
    let get = |e: tokio_postgres::Error| LeaseError::Other(Box::new(e));
    let shard: i32 = row.try_get(1).map_err(get)?;
    let token: i64 = row.try_get(3).map_err(get)?;
    Ok(Lease {
        projection: row.try_get(0).map_err(get)?,
        shard: u32::try_from(shard).map_err(|e| LeaseError::Other(Box::new(e)))?,
        owner: row.try_get(2).map_err(get)?,
        token: u64::try_from(token).map_err(|e| LeaseError::Other(Box::new(e)))?,
        expires_at: row.try_get::<_, OffsetDateTime>(4).map_err(get)?,
    })
}

const COLUMNS: &str = "projection, shard, owner, token, expires_at";

#[async_trait]
impl LeaseStore for PgLeases {
    async fn heartbeat(
        &self,
        projection: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, LeaseError> {
        let m = &self.members;
        // Three statements, each its own transaction: members beating at once never wait
        // on each other's rows (one transaction deadlocked two lapsed members sweeping
        // each other), and the sweep skips rows another statement holds.
        let beat = format!(
            "INSERT INTO {m} (projection, owner, expires_at)
                 VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond')
             ON CONFLICT (projection, owner) DO UPDATE SET expires_at = EXCLUDED.expires_at"
        );
        self.query(&beat, &[&projection, &owner, &millis(ttl)])
            .await?;
        let sweep = format!(
            "DELETE FROM {m} WHERE ctid = ANY (ARRAY (
                 SELECT ctid FROM {m} WHERE projection = $1 AND expires_at <= now()
                 FOR UPDATE SKIP LOCKED))"
        );
        self.query(&sweep, &[&projection]).await?;
        let live = format!(
            "SELECT owner FROM {m} WHERE projection = $1 AND expires_at > now() ORDER BY owner"
        );
        self.query(&live, &[&projection])
            .await?
            .iter()
            .map(|r| r.try_get(0).map_err(|e| LeaseError::Other(Box::new(e))))
            .collect()
    }

    async fn acquire(
        &self,
        projection: &str,
        shard: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let l = &self.leases;
        // Free (no row, lapsed, released): taken with the next token. Held by the asker
        // and live: renewed with its token. Held by another and live: nothing.
        let sql = format!(
            "INSERT INTO {l} AS l ({COLUMNS})
                 VALUES ($1, $2, $3, 1, clock_timestamp() + $4::bigint * interval '1 millisecond')
             ON CONFLICT (projection, shard) DO UPDATE SET
                 token = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > now()
                              THEN l.token ELSE l.token + 1 END,
                 owner = EXCLUDED.owner,
                 expires_at = EXCLUDED.expires_at
             WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner
             RETURNING {COLUMNS}"
        );
        let rows = self
            .query(
                &sql,
                &[&projection, &shard_param(shard)?, &owner, &millis(ttl)],
            )
            .await?;
        rows.first().map(lease_of).transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, LeaseError> {
        let l = &self.leases;
        let sql = format!(
            "UPDATE {l} SET expires_at = clock_timestamp() + $5::bigint * interval '1 millisecond'
             WHERE projection = $1 AND shard = $2 AND token = $3 AND owner = $4 AND owner <> ''
             RETURNING {COLUMNS}"
        );
        let rows = self
            .query(
                &sql,
                &[
                    &lease.projection,
                    &shard_param(lease.shard)?,
                    &token_param(lease.token)?,
                    &lease.owner,
                    &millis(ttl),
                ],
            )
            .await?;
        rows.first().map(lease_of).transpose()
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let l = &self.leases;
        let sql = format!(
            "UPDATE {l} SET token = token + 1, owner = '', expires_at = 'epoch'
             WHERE projection = $1 AND shard = $2 AND token = $3"
        );
        self.query(
            &sql,
            &[
                &lease.projection,
                &shard_param(lease.shard)?,
                &token_param(lease.token)?,
            ],
        )
        .await?;
        Ok(())
    }

    async fn leases(&self, projection: &str) -> Result<Vec<Lease>, LeaseError> {
        let l = &self.leases;
        let sql = format!("SELECT {COLUMNS} FROM {l} WHERE projection = $1 ORDER BY shard");
        self.query(&sql, &[&projection])
            .await?
            .iter()
            .map(lease_of)
            .collect()
    }

    async fn is_current(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let l = &self.leases;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {l}
                 WHERE projection = $1 AND shard = $2 AND token = $3 AND owner <> '')"
        );
        let rows = self
            .query(
                &sql,
                &[
                    &lease.projection,
                    &shard_param(lease.shard)?,
                    &token_param(lease.token)?,
                ],
            )
            .await?;
        rows.first()
            .map(|r| r.try_get(0).map_err(|e| LeaseError::Other(Box::new(e))))
            .transpose()
            .map(|found| found.unwrap_or(false))
    }
}

#[cfg(test)]
mod conformance {
    use crate::testdb::{self, SchemaGuard};

    /// A fenced commit reads the shard's lease row `FOR KEY SHARE`: neither its holder's
    /// renewal nor a takeover of the lapsed lease (updates that change no key) waits for
    /// it, so a commit that is slow (or whose process is paused) cannot make its own
    /// process's leases lapse, and a successor is not held up. A commit that checked the
    /// token before the takeover and commits after it is still stopped, by the shard's
    /// checkpoint compare-and-set (`PgReadStore`'s tests show the fence itself).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn renewals_and_takeovers_do_not_wait_for_a_fenced_write() {
        use std::sync::Arc;
        use std::time::Duration;

        use ordo_es::LeaseStore;

        let (url, schema) = testdb::fresh_url().await;
        let _guard = SchemaGuard(schema.clone());
        let leases = Arc::new(super::PgLeases::connect(&url).await.expect("connect"));
        let old = leases
            .acquire("p", 0, "slow", Duration::from_millis(300))
            .await
            .expect("acquire")
            .expect("free");
        let mut client = testdb::raw_client().await;
        let tx = client.transaction().await.expect("begin");
        let held = tx
            .query(
                &format!(
                    "SELECT token FROM \"{schema}\".projection_leases
                     WHERE projection = 'p' AND shard = 0 AND token = $1 FOR KEY SHARE"
                ),
                &[&i64::try_from(old.token).expect("token")],
            )
            .await
            .expect("lock the lease row");
        assert_eq!(held.len(), 1, "the lease is the current one");
        // Bounded generously: the point is that they end while the row is held, not how fast.
        let bound = Duration::from_secs(20);
        let renewed = tokio::time::timeout(bound, leases.renew(&old, Duration::from_millis(300)))
            .await
            .expect("the renewal did not wait for the fenced write")
            .expect("renew")
            .expect("still the holder");
        assert_eq!(renewed.token, old.token);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let new = tokio::time::timeout(
            bound,
            leases.acquire("p", 0, "successor", Duration::from_secs(60)),
        )
        .await
        .expect("the takeover did not wait for the fenced write")
        .expect("acquire")
        .expect("the lapsed lease is taken");
        assert!(new.token > old.token);
        assert!(!leases.is_current(&old).await.expect("is_current"));
        tx.commit().await.expect("commit");
    }

    ordo_es::lease_store_conformance!(guarded async {
        let (url, schema) = testdb::fresh_url().await;
        let leases = super::PgLeases::connect(&url)
            .await
            .expect("connect to the test server");
        (leases, SchemaGuard(schema))
    });
}
