//! Bulk mode, for loading an empty read store from the whole log: secondary indexes dropped
//! at the start and rebuilt concurrently at the end, commits that do not wait for their WAL
//! flush, customer names filled in once.

use deadpool_postgres::GenericClient;

use ordo_domain::ReadStoreError;

use super::PgReadStore;
use crate::db::DbError;

pub(super) fn bulk_state(
    m: &std::sync::Mutex<Option<Vec<String>>>,
) -> std::sync::MutexGuard<'_, Option<Vec<String>>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) async fn begin_bulk(store: &PgReadStore) -> Result<(), ReadStoreError> {
    if bulk_state(&store.bulk).is_some() {
        return Ok(());
    }
    let s = &store.sql.s;
    let mut client = store.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let empty: bool = tx
        .query_one(
            &format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {s}.orders) AND NOT EXISTS (SELECT 1 FROM {s}.checkpoints)"
            ),
            &[],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    if !empty {
        return Err(ReadStoreError::Other(
            "bulk mode is for an empty read store".into(),
        ));
    }
    // The secondary indexes as the migrations made them (not those behind a primary
    // key or unique constraint): rebuilt once at the end instead of row by row.
    let indexes: Vec<(String, String)> = tx
        .query(
            "SELECT i.indexname::text, i.indexdef FROM pg_indexes i
                 WHERE i.schemaname = $1 AND i.tablename IN ('orders', 'order_search', 'top_customers')
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                   WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)",
            &[&store.schema],
        )
        .await
        .map_err(DbError::from)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, _) in &indexes {
        tx.batch_execute(&format!("DROP INDEX {s}.\"{}\"", name.replace('"', "\"\"")))
            .await
            .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    *bulk_state(&store.bulk) = Some(indexes.into_iter().map(|(_, def)| def).collect());
    Ok(())
}

pub(super) async fn finish_bulk(store: &PgReadStore) -> Result<(), ReadStoreError> {
    let Some(indexes) = bulk_state(&store.bulk).clone() else {
        return Ok(());
    };
    let s = &store.sql.s;
    // Index builds on a large read store take longer than the statement timeout of
    // pooled connections: this one goes without, and is taken out of the pool (closed
    // when done), so that its setting never reaches another caller, even when this
    // future is dropped half-way.
    let mut client =
        deadpool_postgres::Object::take(store.pool.get().await.map_err(DbError::from)?);
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(DbError::from)?;
    // Built CONCURRENTLY: a plain CREATE INDEX is a writing transaction for as long as
    // it builds (2.4 s for the trigram index of 100,000 orders on 2 busy cores), and a
    // writing transaction holds back the server's xmin, and with it every projection
    // that reads events from this server (see the crate README): the live read models
    // stood still that long. A concurrent build holds no transaction id while it
    // scans, and lets the batches still arriving write meanwhile (they then keep the
    // index up to date). An index such a build left invalid when it failed is
    // dropped first (IF NOT EXISTS would keep it); valid ones a finish that stopped
    // half-way built are kept.
    let invalid: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indexrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND NOT i.indisvalid",
            &[&store.schema],
        )
        .await
        .map_err(DbError::from)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in &invalid {
        client
            .batch_execute(&format!("DROP INDEX {s}.\"{}\"", name.replace('"', "\"\"")))
            .await
            .map_err(DbError::from)?;
    }
    for def in &indexes {
        let started = std::time::Instant::now();
        client
            .batch_execute(&def.replacen(" INDEX ", " INDEX CONCURRENTLY IF NOT EXISTS ", 1))
            .await
            .map_err(DbError::from)?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, index = %def, "built a deferred index");
    }
    client
        .batch_execute(&format!(
            "ANALYZE {s}.orders; ANALYZE {s}.order_search; ANALYZE {s}.top_customers;"
        ))
        .await
        .map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    // Batches still arrive: wait for those that wrote, hold off the next ones.
    tx.batch_execute(&format!(
        "LOCK TABLE {s}.orders, {s}.order_search, {s}.top_customers IN SHARE MODE"
    ))
    .await
    .map_err(DbError::from)?;
    tx.batch_execute(&format!(
        "UPDATE {s}.top_customers t SET customer_name = (
                 SELECT o.customer_name FROM {s}.orders o
                 WHERE o.customer_email = t.customer_email AND NOT o.deleted AND o.status <> 'cancelled'
                 ORDER BY o.created_at DESC, o.order_id DESC LIMIT 1)"
    ))
    .await
    .map_err(DbError::from)?;
    // Cleared before the commit: a batch waiting on the lock above must then see it.
    *bulk_state(&store.bulk) = None;
    if let Err(e) = tx.commit().await {
        *bulk_state(&store.bulk) = Some(indexes);
        return Err(DbError::from(e).into());
    }
    Ok(())
}
