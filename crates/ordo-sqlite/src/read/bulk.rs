//! Bulk mode, for loading an empty read store from the whole log: secondary indexes and
//! the search index built once at the end, no syncs until then, customer names filled in
//! once.

use std::sync::Arc;

use ordo_domain::read_store::ReadStoreError;

use super::{BULK_CACHE_MIB, BlockingError, LIVE_CACHE_MIB, SqliteReadStore, lock};

pub(super) async fn begin_bulk(store: &SqliteReadStore) -> Result<(), ReadStoreError> {
    let bulk = Arc::clone(&store.bulk);
    store
        .write(move |conn| {
            let mut bulk = lock(&bulk);
            if bulk.is_some() {
                return Ok(());
            }
            let empty: bool = conn.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM orders) AND NOT EXISTS (SELECT 1 FROM checkpoints)",
            [],
            |r| r.get(0),
        )?;
            if !empty {
                return Err(BlockingError::Store(ReadStoreError::Other(
                    "bulk mode is for an empty read store".into(),
                )));
            }
            // The secondary indexes, as the schema defines them: built once at the end
            // (a sort) instead of row by row.
            let indexes: Vec<(String, String)> = conn
                .prepare(
                    "SELECT name, sql FROM sqlite_schema
                     WHERE type = 'index' AND tbl_name IN ('orders', 'customers') AND sql IS NOT NULL",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (name, _) in &indexes {
                tx.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
            }
            tx.commit()?;
            // Nothing depends on this generation until finish_bulk syncs it: a crash
            // loses it, and an interrupted rebuild is discarded anyway.
            conn.pragma_update(None, "synchronous", "OFF")?;
            conn.pragma_update(None, "cache_size", -BULK_CACHE_MIB * 1024)?;
            *bulk = Some(indexes.into_iter().map(|(_, sql)| sql).collect());
            Ok(())
        })
        .await
}

pub(super) async fn finish_bulk(store: &SqliteReadStore) -> Result<(), ReadStoreError> {
    let bulk = Arc::clone(&store.bulk);
    // Back to writing without syncs only while the marker guards them (not after a
    // `close`, which removed it).
    let synchronous = match &store.unsynced_marker {
        Some(marker) if !marker.exists() => "NORMAL",
        _ => store.synchronous,
    };
    store
        .write(move |conn| {
            let mut bulk = lock(&bulk);
            let Some(indexes) = bulk.as_ref() else {
                return Ok(());
            };
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for sql in indexes {
                tx.execute_batch(sql)?;
            }
            // FTS5 keeps pending index data in memory up to `hashsize` and merges what it
            // flushed: 16 MiB instead of 1 MiB flushes, and merges, far less often (for
            // this one statement; commits of single batches hold far less).
            tx.execute(
                "INSERT INTO orders_search (orders_search, rank) VALUES ('hashsize', 16777216)",
                [],
            )?;
            // The whole index is built here (see `SEARCH_INDEXES`); in rowid order, so that
            // FTS5 appends instead of merging overlapping segments.
            tx.execute_batch("DELETE FROM orders_search; DELETE FROM orders_search_live;")?;
            tx.execute(
                "INSERT INTO orders_search (rowid, search_text)
                 SELECT rowid, search_text FROM orders NOT INDEXED WHERE deleted = 0 ORDER BY rowid",
                [],
            )?;
            tx.execute(
                "INSERT INTO orders_search (orders_search, rank) VALUES ('hashsize', 1048576)",
                [],
            )?;
            tx.execute(
                "UPDATE customers SET customer_name =
                   (SELECT o.customer_name FROM orders o
                     WHERE o.customer_email = customers.customer_email AND o.deleted = 0
                       AND o.status <> 'cancelled'
                     ORDER BY o.created_at DESC, o.order_id DESC LIMIT 1)",
                [],
            )?;
            tx.commit()?;
            *bulk = None;
            conn.pragma_update(None, "cache_size", -LIVE_CACHE_MIB * 1024)?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // Copies the whole log into the database file and syncs both.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", synchronous)?;
            Ok(())
        })
        .await
}
