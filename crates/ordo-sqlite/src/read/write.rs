//! What a projection writes: each batch in one transaction with its checkpoint moved by
//! compare-and-set, the checkpoint and views it reads back, parked events, and the reset
//! that empties everything.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use ordo_domain::read_store::{ParkedEvent, ReadModelBatch, ReadStoreError, search_text};
use ordo_domain::{Money, ViewState};
use ordo_es::Checkpoint;

use super::query::read_counters;
use super::schema::SEARCH_INDEXES;
use super::{
    BlockingError, SqliteReadStore, cents_i64, corrupt, day_number, from_micros, lock, micros,
    parse_doc,
};

impl SqliteReadStore {
    /// Runs `change` in one transaction that also moves the checkpoint of `projection`
    /// from `from` to `to`, with compare-and-set: nothing changes when the stored
    /// checkpoint is not `from` ([`ReadStoreError::CheckpointMoved`]).
    async fn moving_checkpoint(
        &self,
        projection: &str,
        from: &Checkpoint,
        to: &Checkpoint,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), BlockingError> + Send + 'static,
    ) -> Result<(), ReadStoreError> {
        let projection = projection.to_string();
        let from = from.clone();
        let to = to.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            check_checkpoint(&tx, &projection, &from)?;
            change(&tx)?;
            store_checkpoint(&tx, &projection, &to)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// Stores one order's state. `search`: keep the search index in step, the rows it must
/// index being added to it for [`index_for_search`] (`None` in bulk mode, where
/// `finish_bulk` builds the index at once).
pub(super) fn apply_view(
    tx: &rusqlite::Transaction<'_>,
    id: Uuid,
    state: &ViewState,
    search: Option<&mut Vec<i64>>,
) -> Result<(), BlockingError> {
    let key = id.to_string();
    let existing: Option<(i64, bool, Option<String>)> = if search.is_some() {
        tx.prepare_cached("SELECT rowid, deleted, search_text FROM orders WHERE order_id = ?1")?
            .query_row([&key], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
            })
            .optional()?
    } else {
        None
    };
    match state {
        ViewState::Absent => {}
        ViewState::Live(view) => {
            let doc = serde_json::to_string(view.as_ref())
                .map_err(|e| ReadStoreError::Other(Box::new(e)))?;
            let text = search_text(view);
            let rowid: i64 = tx
                .prepare_cached(
                    "INSERT INTO orders (order_id, version, deleted, status, customer_email, customer_name, total_cents, created_at, search_text, doc)
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (order_id) DO UPDATE SET version = excluded.version, deleted = 0, status = excluded.status,
                       customer_email = excluded.customer_email, customer_name = excluded.customer_name,
                       total_cents = excluded.total_cents, created_at = excluded.created_at,
                       search_text = excluded.search_text, doc = excluded.doc
                     RETURNING rowid",
                )?
                .query_row(
                    params![
                        key,
                        view.version as i64,
                        view.status.as_str(),
                        view.customer_key().as_ref().map(|k| k.as_str()),
                        view.customer_name,
                        cents_i64(view.total_amount)?,
                        micros(view.created_at),
                        &text,
                        doc
                    ],
                    |r| r.get(0),
                )?;
            // An order's search text changes only when its personal data is erased: it
            // is indexed when the order is first stored (or stored again after a
            // deletion), and indexed again without the erased text.
            if let Some(added) = search {
                match existing {
                    None | Some((_, true, _)) => added.push(rowid),
                    Some((_, false, Some(indexed))) if indexed == text => {}
                    Some((old, false, _)) => {
                        for index in SEARCH_INDEXES {
                            tx.prepare_cached(&format!("DELETE FROM {index} WHERE rowid = ?1"))?
                                .execute([old])?;
                        }
                        added.push(rowid);
                    }
                }
            }
        }
        ViewState::Deleted { version } => {
            if let Some((rowid, false, _)) = existing {
                for index in SEARCH_INDEXES {
                    tx.prepare_cached(&format!("DELETE FROM {index} WHERE rowid = ?1"))?
                        .execute([rowid])?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO orders (order_id, version, deleted) VALUES (?1, ?2, 1)
                 ON CONFLICT (order_id) DO UPDATE SET version = excluded.version, deleted = 1, status = NULL,
                   customer_email = NULL, customer_name = NULL, total_cents = NULL, created_at = NULL,
                   search_text = NULL, doc = NULL",
            )?
            .execute(params![key, *version as i64])?;
        }
    }
    Ok(())
}

/// Adds the orders stored at `rowids` to the live search index, in one statement. FTS5
/// writes the terms it holds in memory out as a new segment of the index at every
/// statement savepoint, and SQLite opens one for every write statement inside a
/// transaction: indexing order by order between the orders' own statements wrote a segment
/// per order, and the merges of those segments were most of the cost of a live commit.
/// One statement at the end of the batch writes one segment for the whole batch.
fn index_for_search(tx: &rusqlite::Transaction<'_>, rowids: &[i64]) -> Result<(), BlockingError> {
    if rowids.is_empty() {
        return Ok(());
    }
    let list = serde_json::to_string(rowids).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
    tx.prepare_cached(
        "INSERT INTO orders_search_live (rowid, search_text)
         SELECT o.rowid, o.search_text FROM json_each(?1) AS j CROSS JOIN orders AS o ON o.rowid = j.value",
    )?
    .execute([list])?;
    Ok(())
}

/// Moves a customer's top-customer row by the batch's delta (O(1), whatever their number
/// of orders) and refreshes its name from their most recent counted order (an index seek).
pub(super) fn apply_customer(
    tx: &rusqlite::Transaction<'_>,
    email: &str,
    delta: Option<&(i64, Money)>,
    refresh_name: bool,
) -> Result<(), BlockingError> {
    if let Some((count, spent)) = delta
        && (*count != 0 || *spent != Money::ZERO)
    {
        tx.prepare_cached(
            "INSERT INTO customers (customer_email, customer_name, order_count, total_cents) VALUES (?1, '', ?2, ?3)
             ON CONFLICT (customer_email) DO UPDATE SET order_count = order_count + excluded.order_count,
               total_cents = total_cents + excluded.total_cents",
        )?
        .execute(params![email, count, cents_i64(*spent)?])?;
    }
    tx.prepare_cached("DELETE FROM customers WHERE customer_email = ?1 AND order_count <= 0")?
        .execute([email])?;
    if !refresh_name {
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE customers SET customer_name =
           (SELECT customer_name FROM orders
             WHERE customer_email = ?1 AND deleted = 0 AND status <> 'cancelled'
             ORDER BY created_at DESC, order_id DESC LIMIT 1)
         WHERE customer_email = ?1",
    )?
    .execute([email])?;
    Ok(())
}

fn apply_summary(
    tx: &rusqlite::Transaction<'_>,
    batch: &ReadModelBatch,
) -> Result<(), BlockingError> {
    let (mut counts, revenue, last) = read_counters(tx)?;
    for (slot, delta) in counts.0.iter_mut().zip(batch.status_delta) {
        *slot += delta;
    }
    let revenue = revenue + batch.revenue_delta;
    let last = batch.last_event_at.map(micros).max(last);
    let counts_text = counts
        .0
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    tx.prepare_cached(
        "INSERT INTO summary (id, status_counts, revenue_cents, last_updated) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET status_counts = excluded.status_counts,
           revenue_cents = excluded.revenue_cents, last_updated = excluded.last_updated",
    )?
    .execute(params![counts_text, revenue.cents().to_string(), last])?;
    Ok(())
}

/// Adds the batch's per-day deltas to `daily_orders`; a day left with no order has no row.
fn apply_daily(
    tx: &rusqlite::Transaction<'_>,
    batch: &ReadModelBatch,
) -> Result<(), BlockingError> {
    for (day, delta) in &batch.daily_deltas {
        let day = day_number(*day);
        tx.prepare_cached(
            "INSERT INTO daily_orders (day, orders, revenue_cents) VALUES (?1, ?2, ?3)
             ON CONFLICT (day) DO UPDATE SET orders = orders + excluded.orders,
               revenue_cents = revenue_cents + excluded.revenue_cents",
        )?
        .execute(params![day, delta.orders, cents_i64(delta.revenue)?])?;
        tx.prepare_cached(
            "DELETE FROM daily_orders WHERE day = ?1 AND orders = 0 AND revenue_cents = 0",
        )?
        .execute([day])?;
    }
    Ok(())
}

pub(super) fn stored_checkpoint(
    conn: &Connection,
    projection: &str,
) -> Result<Option<Checkpoint>, BlockingError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT checkpoint FROM checkpoints WHERE projection = ?1")?
        .query_row([projection], |r| r.get(0))
        .optional()?;
    match text {
        None => Ok(None),
        Some(t) => Ok(Some(Checkpoint::decode(&t).map_err(corrupt)?)),
    }
}

/// The events `projection` parked, oldest first.
pub(super) fn parked_events(
    conn: &Connection,
    projection: &str,
) -> Result<Vec<ParkedEvent>, BlockingError> {
    let mut stmt = conn.prepare_cached(
        "SELECT position, event_id, stream_id, version, event_type, error, parked_at
           FROM parked_events WHERE projection = ?1 ORDER BY parked_at, rowid",
    )?;
    let rows = stmt
        .query_map([projection], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (position, event_id, stream_id, version, event_type, error, at) in rows {
        out.push(ParkedEvent {
            position,
            event_id: Uuid::parse_str(&event_id).map_err(corrupt)?,
            stream_id,
            version: version as u64,
            event_type,
            error,
            parked_at: from_micros(at)?,
        });
    }
    Ok(out)
}

/// Compare-and-set: the stored checkpoint must be `from` (none stored counts as origin).
fn check_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    projection: &str,
    from: &Checkpoint,
) -> Result<(), BlockingError> {
    let matches = match stored_checkpoint(tx, projection)? {
        Some(s) => s == *from,
        None => *from == Checkpoint::origin(from.partitions()),
    };
    if matches {
        Ok(())
    } else {
        Err(ReadStoreError::CheckpointMoved.into())
    }
}

fn store_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    projection: &str,
    to: &Checkpoint,
) -> Result<(), BlockingError> {
    tx.prepare_cached(
        "INSERT INTO checkpoints (projection, checkpoint) VALUES (?1, ?2)
         ON CONFLICT (projection) DO UPDATE SET checkpoint = excluded.checkpoint",
    )?
    .execute(params![projection, to.encode()])?;
    Ok(())
}

pub(super) async fn load_checkpoint(
    store: &SqliteReadStore,
    projection: &str,
) -> Result<Option<Checkpoint>, ReadStoreError> {
    let projection = projection.to_string();
    store
        .read(move |conn| stored_checkpoint(conn, &projection))
        .await
}

pub(super) async fn load_views(
    store: &SqliteReadStore,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    store
        .read(move |conn| {
            let mut out = HashMap::with_capacity(ids.len());
            let mut stmt = conn
                .prepare_cached("SELECT version, deleted, doc FROM orders WHERE order_id = ?1")?;
            for id in &ids {
                let row: Option<(i64, i64, Option<String>)> = stmt
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let state = match row {
                    None => continue,
                    Some((version, 1, _)) => ViewState::Deleted {
                        version: version as u64,
                    },
                    Some((_, _, Some(doc))) => ViewState::Live(Box::new(parse_doc(&doc)?)),
                    Some((_, _, None)) => {
                        return Err(corrupt("live order without a document").into());
                    }
                };
                out.insert(Uuid::parse_str(id).map_err(corrupt)?, state);
            }
            Ok(out)
        })
        .await
}

pub(super) async fn commit(
    store: &SqliteReadStore,
    projection: &str,
    batch: Arc<ReadModelBatch>,
    from: &Checkpoint,
    to: &Checkpoint,
) -> Result<(), ReadStoreError> {
    let bulk = Arc::clone(&store.bulk);
    store
        .moving_checkpoint(projection, from, to, move |tx| {
            let in_bulk = lock(&bulk).is_some();
            let mut added = Vec::new();
            for (id, state) in &batch.views {
                apply_view(tx, *id, state, (!in_bulk).then_some(&mut added))?;
            }
            index_for_search(tx, &added)?;
            for email in &batch.customers {
                apply_customer(
                    tx,
                    email.as_str(),
                    batch.customer_deltas.get(email),
                    !in_bulk,
                )?;
            }
            apply_daily(tx, &batch)?;
            apply_summary(tx, &batch)
        })
        .await
}

pub(super) async fn reset(store: &SqliteReadStore) -> Result<(), ReadStoreError> {
    store.write(|conn| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "DELETE FROM orders; DELETE FROM orders_search; DELETE FROM orders_search_live; DELETE FROM customers;
                 DELETE FROM summary; DELETE FROM daily_orders; DELETE FROM checkpoints; DELETE FROM parked_events;",
        )?;
        tx.commit()?;
        Ok(())
    })
    .await
}

pub(super) async fn park(
    store: &SqliteReadStore,
    projection: &str,
    parked: ParkedEvent,
    from: &Checkpoint,
    to: &Checkpoint,
) -> Result<(), ReadStoreError> {
    let name = ordo_domain::read_store::projection_of(projection).to_string();
    store.moving_checkpoint(projection, from, to, move |tx| {
        tx.prepare_cached(
            "INSERT INTO parked_events (projection, position, event_id, stream_id, version, event_type, error, parked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            name,
            parked.position,
            parked.event_id.to_string(),
            parked.stream_id,
            parked.version as i64,
            parked.event_type,
            parked.error,
            micros(parked.parked_at)
        ])?;
        Ok(())
    })
    .await
}

pub(super) async fn parked(
    store: &SqliteReadStore,
    projection: &str,
) -> Result<Vec<ParkedEvent>, ReadStoreError> {
    let projection = projection.to_string();
    store
        .read(move |conn| parked_events(conn, &projection))
        .await
}
