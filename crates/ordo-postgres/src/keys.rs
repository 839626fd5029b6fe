//! The key store of crypto-shredding in PostgreSQL ([`KeyStore`]): customers' data keys,
//! wrapped by the master key, and the record of erasures, in two tables of the event
//! store's schema (`data_keys`, `key_erasures`).
//!
//! A subject has at most one key (a unique index on `data_keys.subject`: every stored key
//! is live, an erasure deletes them), so concurrent creates have one winner: an
//! `INSERT ... ON CONFLICT (subject) DO NOTHING`, and the loser reads the winner. An
//! erasure deletes the subject's keys and upserts its record in one transaction.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use ordo_domain::privacy::{EraseOutcome, Erasure, KeyStore, KeyStoreError, Subject, WrappedKey};

use crate::db::{ConnectOptions, DbError, Migration, migrate};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "data keys and erasures",
    sql: r#"
        -- The live data keys: `wrapped` is the key encrypted under the master key; the
        -- subject is the keyed hash of the customer's e-mail, 64 hex digits.
        CREATE TABLE {s}.data_keys (
            id uuid PRIMARY KEY,
            subject text NOT NULL,
            wrapped bytea NOT NULL,
            created_at timestamptz NOT NULL
        );
        -- At most one key per subject: concurrent creates have one winner.
        CREATE UNIQUE INDEX data_keys_subject ON {s}.data_keys (subject);
        -- The latest erasure of each subject.
        CREATE TABLE {s}.key_erasures (
            subject text PRIMARY KEY,
            erased_at timestamptz NOT NULL,
            erased_by text NOT NULL,
            keys_destroyed integer NOT NULL
        );
    "#,
}];

/// A create that lost to a key erased before it could read it tries again this often.
const CREATE_ATTEMPTS: usize = 8;

const KEY_COLUMNS: &str = "id, subject, wrapped, created_at";
const ERASURE_COLUMNS: &str = "subject, erased_at, erased_by, keys_destroyed";

/// The data keys of one ordo schema in PostgreSQL.
///
/// What an erasure leaves behind: the deleted row stays in the table's heap as a dead
/// tuple until VACUUM. After an erasure that destroyed keys the store runs a plain
/// `VACUUM` of `data_keys`, which makes the dead row's space reusable (once no
/// transaction could still see it) but does not zero it: the bytes stay in the data
/// file until overwritten. The server's WAL (and so its archive and replicas' WAL) and
/// every base backup taken before the erasure keep the wrapped key as well. That is why
/// the master key must be rotated to shred those copies: a wrapped key is nothing
/// without the master key that wrapped it.
#[derive(Debug)]
pub struct PgKeys {
    pool: Pool,
    /// `S.data_keys` and `S.key_erasures`, quoted.
    keys: String,
    erasures: String,
}

impl PgKeys {
    /// Connects to the schema of the event store at `url` (the URL of
    /// [`crate::PgEventStore::connect`]; `schema=` as there), creating the key tables
    /// when missing. The pool is at most 4 connections: the store has little traffic.
    pub async fn connect(url: &str) -> Result<PgKeys, KeyStoreError> {
        let mut options = ConnectOptions::parse(url)
            .map_err(|e| KeyStoreError::Unavailable(format!("invalid key store URL: {e}")))?;
        options.pool_size = options.pool_size.min(4);
        let pool = options.pool().map_err(KeyStoreError::Unavailable)?;
        migrate(&pool, &options, "data_keys", MIGRATIONS).await?;
        let s = options.qualified();
        Ok(PgKeys {
            pool,
            keys: format!("{s}.data_keys"),
            erasures: format!("{s}.key_erasures"),
        })
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    /// The subject's live key, by a statement of its own (so with a snapshot taken now).
    async fn live(&self, subject: &str) -> Result<Option<WrappedKey>, KeyStoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM {} WHERE subject = $1", self.keys);
        self.query(&sql, &[&subject])
            .await?
            .first()
            .map(key_of)
            .transpose()
    }

    /// Makes the space of the destroyed keys' rows reusable; see [`PgKeys`] for what it
    /// does not do. Outside a transaction (VACUUM cannot run in one).
    async fn vacuum(&self) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .batch_execute(&format!("VACUUM {}", self.keys))
            .await?;
        Ok(())
    }
}

impl From<DbError> for KeyStoreError {
    /// Nothing the server says about a statement is about the stored bytes: those are
    /// judged as rows are read ([`corrupt`]).
    fn from(e: DbError) -> Self {
        KeyStoreError::Unavailable(e.to_string())
    }
}

fn corrupt(e: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Corrupt(e.to_string())
}

fn subject_of(text: &str) -> Result<Subject, KeyStoreError> {
    Subject::from_hex(text).ok_or_else(|| corrupt(format!("subject {text:?} is not 64 hex digits")))
}

/// An `(id, subject, wrapped, created_at)` row.
fn key_of(row: &Row) -> Result<WrappedKey, KeyStoreError> {
    Ok(WrappedKey {
        id: row.try_get(0).map_err(corrupt)?,
        subject: subject_of(row.try_get(1).map_err(corrupt)?)?,
        wrapped: row.try_get(2).map_err(corrupt)?,
        created_at: row.try_get(3).map_err(corrupt)?,
    })
}

/// A `(subject, erased_at, erased_by, keys_destroyed)` row.
fn erasure_of(row: &Row) -> Result<Erasure, KeyStoreError> {
    let destroyed: i32 = row.try_get(3).map_err(corrupt)?;
    Ok(Erasure {
        subject: subject_of(row.try_get(0).map_err(corrupt)?)?,
        erased_at: row.try_get(1).map_err(corrupt)?,
        erased_by: row.try_get(2).map_err(corrupt)?,
        keys_destroyed: u32::try_from(destroyed).map_err(corrupt)?,
    })
}

#[async_trait]
impl KeyStore for PgKeys {
    async fn live_key(&self, subject: &Subject) -> Result<Option<WrappedKey>, KeyStoreError> {
        self.live(&subject.to_hex()).await
    }

    /// The insert returns the key when it is stored; when another key holds the subject
    /// the insert does nothing, and a second statement reads that key (the first's
    /// snapshot may predate it). Should it be erased in between, the insert goes again.
    async fn create_key(&self, key: WrappedKey) -> Result<WrappedKey, KeyStoreError> {
        let subject = key.subject.to_hex();
        let insert = format!(
            "INSERT INTO {} ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4)
             ON CONFLICT (subject) DO NOTHING
             RETURNING {KEY_COLUMNS}",
            self.keys
        );
        for _ in 0..CREATE_ATTEMPTS {
            let rows = self
                .query(&insert, &[&key.id, &subject, &key.wrapped, &key.created_at])
                .await
                .map_err(|e| {
                    // Another subject's key has this id (the subject's own is a conflict
                    // the insert takes in its stride).
                    if e.is_unique_violation() {
                        corrupt(format!("key id {} is taken by another subject", key.id))
                    } else {
                        e.into()
                    }
                })?;
            if let Some(row) = rows.first() {
                return key_of(row);
            }
            if let Some(winner) = self.live(&subject).await? {
                return Ok(winner);
            }
        }
        Err(KeyStoreError::Unavailable(format!(
            "the subject's keys were erased under {CREATE_ATTEMPTS} creates in a row"
        )))
    }

    async fn keys(&self, ids: &[Uuid]) -> Result<Vec<WrappedKey>, KeyStoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {KEY_COLUMNS} FROM {} WHERE id = ANY($1)", self.keys);
        self.query(&sql, &[&ids])
            .await?
            .iter()
            .map(key_of)
            .collect()
    }

    /// One transaction: the keys deleted, then the record upserted (or, when nothing was
    /// deleted, the last record read, by a statement that sees an erasure committed
    /// while the delete waited for it). Then, outside it, a `VACUUM` (see [`PgKeys`]).
    async fn erase(
        &self,
        subject: &Subject,
        at: OffsetDateTime,
        by: &str,
    ) -> Result<EraseOutcome, KeyStoreError> {
        let hex = subject.to_hex();
        let outcome = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let delete = tx
                .prepare_cached(&format!("DELETE FROM {} WHERE subject = $1", self.keys))
                .await?;
            let destroyed = tx.execute(&delete, &[&hex]).await?;
            if destroyed == 0 {
                let last = tx
                    .prepare_cached(&format!(
                        "SELECT {ERASURE_COLUMNS} FROM {} WHERE subject = $1",
                        self.erasures
                    ))
                    .await?;
                let row = tx.query_opt(&last, &[&hex]).await?;
                tx.commit().await?;
                return Ok(Err(row));
            }
            let destroyed = i32::try_from(destroyed).unwrap_or(i32::MAX);
            let record = tx
                .prepare_cached(&format!(
                    "INSERT INTO {} ({ERASURE_COLUMNS}) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (subject) DO UPDATE SET erased_at = EXCLUDED.erased_at,
                       erased_by = EXCLUDED.erased_by, keys_destroyed = EXCLUDED.keys_destroyed
                     RETURNING {ERASURE_COLUMNS}",
                    self.erasures
                ))
                .await?;
            let row = tx.query_one(&record, &[&hex, &at, &by, &destroyed]).await?;
            tx.commit().await?;
            Ok::<_, DbError>(Ok(row))
        }
        .await?;
        match outcome {
            Ok(row) => {
                let erasure = erasure_of(&row)?;
                // The erasure stands either way; autovacuum (or the next erasure's
                // VACUUM) does the same later.
                if let Err(e) = self.vacuum().await {
                    tracing::warn!(error = %e, "VACUUM of data_keys after an erasure failed");
                }
                Ok(EraseOutcome::Erased(erasure))
            }
            Err(Some(row)) => Ok(EraseOutcome::AlreadyErased(erasure_of(&row)?)),
            Err(None) => Ok(EraseOutcome::Unknown),
        }
    }

    async fn page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<WrappedKey>, KeyStoreError> {
        let k = &self.keys;
        let limit = i64::from(limit);
        let rows = match after {
            Some(after) => {
                let sql =
                    format!("SELECT {KEY_COLUMNS} FROM {k} WHERE id > $1 ORDER BY id LIMIT $2");
                self.query(&sql, &[&after, &limit]).await?
            }
            None => {
                let sql = format!("SELECT {KEY_COLUMNS} FROM {k} ORDER BY id LIMIT $1");
                self.query(&sql, &[&limit]).await?
            }
        };
        rows.iter().map(key_of).collect()
    }

    async fn rewrap(&self, id: Uuid, old: &[u8], new: &[u8]) -> Result<bool, KeyStoreError> {
        let sql = format!(
            "UPDATE {} SET wrapped = $3 WHERE id = $1 AND wrapped = $2 RETURNING id",
            self.keys
        );
        Ok(!self.query(&sql, &[&id, &old, &new]).await?.is_empty())
    }

    async fn ping(&self) -> Result<(), KeyStoreError> {
        self.query("SELECT 1", &[]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod conformance {
    use crate::testdb::{self, SchemaGuard};

    ordo_domain::key_store_conformance!(guarded async {
        let (url, schema) = testdb::fresh_url().await;
        let keys = super::PgKeys::connect(&url)
            .await
            .expect("connect to the test server");
        (keys, SchemaGuard(schema))
    });
}

#[cfg(test)]
mod tests {
    use ordo_domain::privacy::{KeyStore, KeyStoreError};

    use crate::testdb::{self, SchemaGuard};

    #[tokio::test]
    async fn the_key_tables_are_in_the_event_stores_schema_and_vacuum_runs_on_a_pooled_connection()
    {
        let (url, schema) = testdb::fresh_url().await;
        let _guard = SchemaGuard(schema.clone());
        drop(
            crate::PgEventStore::connect(&url)
                .await
                .expect("event store"),
        );
        let keys = super::PgKeys::connect(&url).await.expect("connect");
        // Connecting again finds the tables made.
        drop(super::PgKeys::connect(&url).await.expect("reconnect"));
        let client = testdb::raw_client().await;
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = $1 AND table_name IN ('events', 'data_keys', 'key_erasures')
                 ORDER BY 1",
                &[&schema],
            )
            .await
            .expect("tables")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(tables, ["data_keys", "events", "key_erasures"]);
        keys.vacuum().await.expect("VACUUM outside a transaction");
    }

    #[tokio::test]
    async fn a_stored_subject_that_is_not_hex_is_corrupt() {
        let (url, schema) = testdb::fresh_url().await;
        let _guard = SchemaGuard(schema.clone());
        let keys = super::PgKeys::connect(&url).await.expect("connect");
        testdb::raw_client()
            .await
            .execute(
                &format!(
                    "INSERT INTO \"{schema}\".data_keys VALUES (gen_random_uuid(), 'nope', '\\x00', now())"
                ),
                &[],
            )
            .await
            .expect("a row the store did not write");
        let error = keys.page(None, 10).await.expect_err("corrupt");
        assert!(matches!(error, KeyStoreError::Corrupt(_)), "{error:?}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        let error = super::PgKeys::connect(
            "postgres://postgres@127.0.0.1:1/test?schema=t_none&connect_timeout=1",
        )
        .await
        .expect_err("nothing listens on port 1");
        assert!(matches!(error, KeyStoreError::Unavailable(_)), "{error:?}");
    }
}
