//! What a projection writes: each batch in one transaction with its checkpoint moved by
//! compare-and-set first, the checkpoint and views it reads back, parked events, and the
//! reset that empties everything.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use ordo_domain::read_store::{projection_of, search_text};
use ordo_domain::{EmailKey, Money, ParkedEvent, ReadModelBatch, ReadStoreError, ViewState};
use ordo_es::{Checkpoint, Lease};

use super::{PgReadStore, bulk::bulk_state, corrupt, get_err, is_origin, parse_view, query_cached};
use crate::db::DbError;

/// How long a fenced write's transaction may sit idle (its client paused between two
/// statements) before the server ends the session: well under the default lease time.
const FENCED_IDLE_LIMIT: &str = "SET LOCAL idle_in_transaction_session_timeout = '5s'";

impl PgReadStore {
    /// Moves the checkpoint of `projection` from `from` to `to` by compare-and-set, inside
    /// the caller's transaction. Done first: it takes the checkpoint row's lock, so a
    /// second writer of the same projection waits here and then finds the checkpoint
    /// moved. [`ReadStoreError::CheckpointMoved`] when the stored one is not `from`
    /// (nothing stored counts as the origin). With a `fence`, the shard's lease row is
    /// read `FOR KEY SHARE` before that: [`ReadStoreError::LeaseLost`] unless the lease is
    /// still current. A takeover does not wait for this transaction; should it commit
    /// meanwhile, the successor's first write and this one move the shard's checkpoint
    /// from the same place, and only one of them commits.
    async fn move_checkpoint(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        projection: &str,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError> {
        if let Some(lease) = fence {
            // A projector paused inside this transaction (SIGSTOP, a frozen VM) must not
            // keep it open: it holds rows other shards' commits need, and the database's
            // xmin, below which alone the event log is read. Its session ends after this long idle, so the shard moves on
            // within about the lease time, whatever the server-wide timeout.
            tx.batch_execute(FENCED_IDLE_LIMIT)
                .await
                .map_err(DbError::from)?;
            let shard =
                i32::try_from(lease.shard).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
            let token =
                i64::try_from(lease.token).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
            let current =
                query_cached(tx, &self.sql.fence, &[&lease.projection, &shard, &token]).await?;
            if current.is_empty() {
                return Err(ReadStoreError::LeaseLost {
                    projection: lease.projection.clone(),
                    shard: lease.shard,
                });
            }
        }
        let (from_text, to_text) = (from.encode(), to.encode());
        // True when the compare-and-set matched no row: another writer moved it first.
        let mut missed = query_cached(
            tx,
            &self.sql.cas_checkpoint,
            &[&projection, &from_text, &to_text],
        )
        .await?
        .is_empty();
        if missed && is_origin(from) {
            missed = query_cached(tx, &self.sql.insert_checkpoint, &[&projection, &to_text])
                .await?
                .is_empty();
        }
        if missed {
            return Err(ReadStoreError::CheckpointMoved);
        }
        Ok(())
    }
}

/// The columns of an orders upsert, one array per column.
#[derive(Debug, Default)]
struct OrderRows {
    ids: Vec<Uuid>,
    versions: Vec<i64>,
    deleted: Vec<bool>,
    docs: Vec<Option<String>>,
    statuses: Vec<Option<String>>,
    emails: Vec<Option<String>>,
    names: Vec<Option<String>>,
    totals: Vec<Option<String>>,
    created_at: Vec<Option<OffsetDateTime>>,
    search: Vec<Option<String>>,
}

impl OrderRows {
    fn push(&mut self, id: Uuid, state: &ViewState) -> Result<(), ReadStoreError> {
        let version =
            i64::try_from(state.version()).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
        self.ids.push(id);
        self.versions.push(version);
        match state.live() {
            Some(view) => {
                let doc =
                    serde_json::to_string(view).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
                self.deleted.push(false);
                self.docs.push(Some(doc));
                self.statuses.push(Some(view.status.as_str().to_string()));
                self.emails
                    .push(view.customer_key().map(|k| k.into_string()));
                self.names.push(view.customer_name.clone());
                self.totals
                    .push(Some(view.total_amount.cents().to_string()));
                self.created_at.push(Some(view.created_at));
                self.search.push(Some(search_text(view)));
            }
            None => {
                self.deleted.push(true);
                self.docs.push(None);
                self.statuses.push(None);
                self.emails.push(None);
                self.names.push(None);
                self.totals.push(None);
                self.created_at.push(None);
                self.search.push(None);
            }
        }
        Ok(())
    }
}

pub(super) async fn load_checkpoint(
    store: &PgReadStore,
    projection: &str,
) -> Result<Option<Checkpoint>, ReadStoreError> {
    let rows = store
        .query(&store.sql.load_checkpoint, &[&projection])
        .await?;
    match rows.first() {
        None => Ok(None),
        Some(row) => {
            let text: String = row.try_get(0).map_err(get_err)?;
            Checkpoint::decode(&text)
                .map(Some)
                .map_err(|e| corrupt("stored checkpoint", format!("{text:?}: {e}")))
        }
    }
}

/// The checkpoints of `keys`, in one query.
pub(super) async fn load_checkpoints(
    store: &PgReadStore,
    keys: &[String],
) -> Result<Vec<Option<Checkpoint>>, ReadStoreError> {
    let rows = store.query(&store.sql.load_checkpoints, &[&keys]).await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let key: String = row.try_get(0).map_err(get_err)?;
        let text: String = row.try_get(1).map_err(get_err)?;
        let checkpoint = Checkpoint::decode(&text)
            .map_err(|e| corrupt("stored checkpoint", format!("{text:?}: {e}")))?;
        found.insert(key, checkpoint);
    }
    Ok(keys.iter().map(|k| found.remove(k)).collect())
}

pub(super) async fn load_views(
    store: &PgReadStore,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = store.query(&store.sql.load_views, &[&ids]).await?;
    let mut views = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = row.try_get(0).map_err(get_err)?;
        let version: i64 = row.try_get(1).map_err(get_err)?;
        let deleted: bool = row.try_get(2).map_err(get_err)?;
        let state = if deleted {
            ViewState::Deleted {
                version: u64::try_from(version).map_err(|e| corrupt("negative version", e))?,
            }
        } else {
            let doc: Option<String> = row.try_get(3).map_err(get_err)?;
            let doc = doc.ok_or_else(|| corrupt("order view", format!("{id} has no document")))?;
            ViewState::Live(Box::new(parse_view(&doc)?))
        };
        views.insert(id, state);
    }
    Ok(views)
}

#[tracing::instrument(skip(store, batch, from, to), fields(views = batch.views.len()))]
pub(super) async fn commit(
    store: &PgReadStore,
    projection: &str,
    batch: Arc<ReadModelBatch>,
    from: &Checkpoint,
    to: &Checkpoint,
    fence: Option<&Lease>,
) -> Result<(), ReadStoreError> {
    let mut rows = OrderRows::default();
    for (id, state) in &batch.views {
        // Absent: no event of the order was folded in; nothing to store.
        if !matches!(state, ViewState::Absent) {
            rows.push(*id, state)?;
        }
    }
    let customers: Vec<&str> = batch.customers.iter().map(EmailKey::as_str).collect();
    let (counts, spent): (Vec<i64>, Vec<String>) = batch
        .customers
        .iter()
        .map(|email| match batch.customer_deltas.get(email) {
            Some((n, money)) => (*n, money.cents().to_string()),
            None => (0, "0".to_string()),
        })
        .unzip();

    let mut client = store.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let sql = &store.sql;
    store
        .move_checkpoint(&tx, projection, from, to, fence)
        .await?;

    if !rows.ids.is_empty() {
        query_cached(
            &tx,
            &sql.upsert_orders,
            &[
                &rows.ids,
                &rows.versions,
                &rows.deleted,
                &rows.docs,
                &rows.statuses,
                &rows.emails,
                &rows.names,
                &rows.totals,
                &rows.created_at,
            ],
        )
        .await?;
        query_cached(&tx, &sql.upsert_search, &[&rows.ids, &rows.search]).await?;
    }
    let d = &batch.status_delta;
    if d.iter().any(|n| *n != 0)
        || batch.revenue_delta != Money::ZERO
        || batch.last_event_at.is_some()
    {
        let revenue = batch.revenue_delta.cents().to_string();
        query_cached(
            &tx,
            &sql.update_summary,
            &[
                &d[0],
                &d[1],
                &d[2],
                &d[3],
                &d[4],
                &d[5],
                &revenue,
                &batch.last_event_at,
            ],
        )
        .await?;
    }
    if !batch.daily_deltas.is_empty() {
        let mut days = Vec::with_capacity(batch.daily_deltas.len());
        let mut counts = Vec::with_capacity(days.capacity());
        let mut revenues = Vec::with_capacity(days.capacity());
        for (day, delta) in &batch.daily_deltas {
            days.push(*day);
            counts.push(delta.orders);
            revenues.push(delta.revenue.cents().to_string());
        }
        query_cached(&tx, &sql.move_days, &[&days, &counts, &revenues]).await?;
        query_cached(&tx, &sql.drop_days, &[&days]).await?;
    }
    // Read only now, after this transaction wrote orders: finish_bulk locks the
    // tables before it starts and clears the flag before it commits, so a batch sees
    // bulk mode only if finish_bulk's name refresh comes after it.
    let in_bulk = bulk_state(&store.bulk).is_some();
    if in_bulk {
        // Nothing depends on a generation being loaded until finish_bulk, whose own
        // commit waits for the WAL to be flushed past every batch before it.
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(DbError::from)?;
    }
    if !customers.is_empty() {
        query_cached(&tx, &sql.move_customers, &[&customers, &counts, &spent]).await?;
        query_cached(&tx, &sql.drop_customers, &[&customers]).await?;
        if !in_bulk {
            query_cached(&tx, &sql.name_customers, &[&customers]).await?;
        }
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

pub(super) async fn reset(store: &PgReadStore) -> Result<(), ReadStoreError> {
    let mut client = store.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    tx.batch_execute(&store.sql.reset)
        .await
        .map_err(DbError::from)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

#[tracing::instrument(skip(store, parked, from, to), fields(event_id = %parked.event_id))]
pub(super) async fn park(
    store: &PgReadStore,
    projection: &str,
    parked: ParkedEvent,
    from: &Checkpoint,
    to: &Checkpoint,
    fence: Option<&Lease>,
) -> Result<(), ReadStoreError> {
    let version = i64::try_from(parked.version).map_err(|e| ReadStoreError::Other(Box::new(e)))?;
    // text cannot hold NUL; the message is for people, so a NUL becomes U+FFFD rather
    // than failing the park (which would stall the projection on this event).
    let error = parked.error.replace('\0', "\u{FFFD}");
    let mut client = store.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    store
        .move_checkpoint(&tx, projection, from, to, fence)
        .await?;
    let statement = tx
        .prepare_cached(&store.sql.park)
        .await
        .map_err(DbError::from)?;
    tx.execute(
        &statement,
        &[
            &projection_of(projection),
            &parked.event_id,
            &parked.position,
            &parked.stream_id,
            &version,
            &parked.event_type,
            &error,
            &parked.parked_at,
        ],
    )
    .await
    .map_err(DbError::from)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

pub(super) async fn parked(
    store: &PgReadStore,
    projection: &str,
) -> Result<Vec<ParkedEvent>, ReadStoreError> {
    let rows = store.query(&store.sql.parked, &[&projection]).await?;
    rows.iter()
        .map(|row| {
            let version: i64 = row.try_get(3).map_err(get_err)?;
            Ok(ParkedEvent {
                position: row.try_get(0).map_err(get_err)?,
                event_id: row.try_get(1).map_err(get_err)?,
                stream_id: row.try_get(2).map_err(get_err)?,
                version: u64::try_from(version)
                    .map_err(|e| corrupt("negative parked version", e))?,
                event_type: row.try_get(4).map_err(get_err)?,
                error: row.try_get(5).map_err(get_err)?,
                parked_at: row.try_get(6).map_err(get_err)?,
            })
        })
        .collect()
}

/// VACUUM of the tables whose rows an erasure rewrites (one statement per table: VACUUM
/// runs outside a transaction). A failure is reported, not fatal to the erasure.
pub(super) async fn vacuum(store: &PgReadStore) -> Result<(), ReadStoreError> {
    let client = store.pool.get().await.map_err(DbError::from)?;
    let s = &store.sql.s;
    for table in ["orders", "order_search", "top_customers"] {
        client
            .simple_query(&format!("VACUUM {s}.{table}"))
            .await
            .map_err(DbError::from)?;
    }
    Ok(())
}
