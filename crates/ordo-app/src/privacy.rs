//! Erasing a customer's personal data (crypto-shredding), end to end.
//!
//! 1. The customer's data keys are destroyed and the erasure recorded, in the key store,
//!    in one step ([`KeyRing::erase`]). From then on every read of their events opens
//!    the personal fields as erased: the event endpoints, time travel, the event
//!    stream, `ordo events`, and every replay.
//! 2. After the time other processes may still hold the keys in their caches (zero on
//!    the embedded store), and once the projection has committed every event stored
//!    before then, the customer's orders still shown with personal data are found in
//!    the read models (the customer query) and folded again from their events (the
//!    repair of `replay`), which now open erased: the views keep their orders and
//!    figures, with null personal fields and `personalDataErased`, and the search index
//!    and top customers drop them through the usual commit.
//!
//! Waiting for the projection first is what makes step 2 final: a batch read before the
//! keys were destroyed (and so opened in clear) is committed before the repair, which
//! then overwrites it; every batch read after opens erased. When the projection does not
//! catch up in time, the erasure answers [`EraseError::ReadModelsBehind`]: the keys are
//! destroyed already, and asking again finishes the read models.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use ordo_domain::privacy::sealed::SEALED_SINCE;
use ordo_domain::privacy::{EraseOutcome, KeyRing, KeyRingError, SealedEventStore};
use ordo_domain::read_store::ReadStoreError;
use ordo_domain::{CustomerEmail, ListQuery, OrderEvent};
use ordo_es::{DomainEvent, EventRewriter, Position, Rewrite, StoreError};

use crate::read_side::ReadSide;
use crate::replay::ReplayJobs;

/// What an erasure did, as the endpoint answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureReport {
    pub customer_email: String,
    /// Orders whose personal data this call removed from the read models (0 when
    /// repeated: an erased customer's orders show none).
    pub orders_affected: u64,
    /// When the keys were destroyed (the first erasure's time when repeated).
    pub erased_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// No order ever had this e-mail address (no key was ever made for it).
    #[error("no order ever had this customer e-mail")]
    NotFound,
    #[error(transparent)]
    Keys(#[from] KeyRingError),
    #[error(transparent)]
    Events(#[from] StoreError),
    #[error(transparent)]
    Reads(#[from] ReadStoreError),
    #[error("repairing the read models failed: {0}")]
    Repair(String),
    /// The keys are destroyed, but the projection did not catch up in time to rebuild the
    /// read models after them: asking again finishes.
    #[error(
        "the customer's keys are destroyed, but the read models are behind the event log: ask again to finish erasing them from the read models"
    )]
    ReadModelsBehind,
    /// The keys are destroyed, but a rebuild of the read models is loading a generation
    /// that may have read the customer's events before: asking again after its switch
    /// finishes.
    #[error(
        "the customer's keys are destroyed, but a rebuild of the read models is running: ask again when it has switched over to finish erasing them from the read models"
    )]
    RebuildRunning,
}

/// The erasures of one process.
#[derive(Debug)]
pub struct Erasures {
    ring: Arc<KeyRing>,
    read_side: Arc<ReadSide>,
    jobs: Arc<ReplayJobs>,
    /// How long other processes may still hold a destroyed key in their caches.
    settle: Duration,
    /// How long to wait for the projection to commit what was stored before.
    catch_up: Duration,
}

/// Orders read from the customer query per page.
const PAGE: u32 = 100;

impl Erasures {
    pub fn new(
        ring: Arc<KeyRing>,
        read_side: Arc<ReadSide>,
        jobs: Arc<ReplayJobs>,
        settle: Duration,
    ) -> Self {
        Self {
            ring,
            read_side,
            jobs,
            settle,
            catch_up: Duration::from_secs(20),
        }
    }

    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    /// Erases the personal data of the customer with `email`; `by` says who asked
    /// (recorded; never personal data).
    pub async fn erase(
        &self,
        email: &CustomerEmail,
        by: &str,
    ) -> Result<ErasureReport, EraseError> {
        let (_, outcome) = self.ring.erase(email.as_str(), by).await?;
        let record = match outcome {
            EraseOutcome::Erased(record) => {
                tracing::info!(
                    subject = %record.subject,
                    keys = record.keys_destroyed,
                    by = %record.erased_by,
                    "personal data erased: the customer's keys are destroyed"
                );
                record
            }
            EraseOutcome::AlreadyErased(record) => record,
            EraseOutcome::Unknown => return Err(EraseError::NotFound),
        };
        if !self.settle.is_zero() {
            tokio::time::sleep(self.settle).await;
        }
        self.wait_for_projection().await?;
        let orders_affected = self.repair_views(email).await?;
        if self.read_side.loading_generation().is_some() {
            return Err(EraseError::RebuildRunning);
        }
        Ok(ErasureReport {
            customer_email: email.as_str().to_owned(),
            orders_affected,
            erased_at: record.erased_at,
        })
    }

    /// Waits until the read models cover every event stored now.
    async fn wait_for_projection(&self) -> Result<(), EraseError> {
        let head = self.read_side.events().head().await?;
        let deadline = tokio::time::Instant::now() + self.catch_up;
        for (partition, cursor) in head.cursors().iter().enumerate() {
            if cursor.major == 0 && cursor.minor == 0 {
                continue;
            }
            let position = Position {
                partition: partition as u32,
                cursor: *cursor,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.read_side.wait_for(&position, left).await {
                return Err(EraseError::ReadModelsBehind);
            }
        }
        Ok(())
    }

    /// Folds again the customer's orders the read models still show with personal
    /// data; returns how many of them now show it erased.
    async fn repair_views(&self, email: &CustomerEmail) -> Result<u64, EraseError> {
        let shown = self.customer_orders(email).await?;
        if shown.is_empty() {
            return Ok(0);
        }
        for chunk in shown.chunks(200) {
            self.jobs
                .repair_orders(chunk)
                .await
                .map_err(EraseError::Repair)?;
        }
        // What the stores keep of the rewritten rows (old index entries, log pages).
        if let Err(e) = self.read_side.store().purge_deleted().await {
            tracing::warn!(error = %e, "could not purge the read store's old rows after an erasure");
        }
        // Orders made after the erasure have a new key and stay as they are.
        let still = self.customer_orders(email).await?;
        Ok(shown.iter().filter(|id| !still.contains(id)).count() as u64)
    }

    async fn customer_orders(&self, email: &CustomerEmail) -> Result<Vec<Uuid>, EraseError> {
        let store = self.read_side.store();
        let mut ids = Vec::new();
        let mut page = 1;
        loop {
            let query = ListQuery {
                customer_email: Some(email.key()),
                page,
                limit: PAGE,
                ..ListQuery::default()
            };
            let found = store.list(&query).await?;
            let n = found.orders.len();
            ids.extend(found.orders.into_iter().map(|o| o.order_id));
            if n < PAGE as usize {
                return Ok(ids);
            }
            page += 1;
        }
    }
}

/// Events read and rewritten per step of the migration.
const MIGRATION_BATCH: usize = 500;

/// The one-time migration of events stored before encryption: every `OrderCreated` of
/// schema version 1 or 2 is upcast to the current shape, its personal fields sealed under
/// its customer's key, and written back in place as version 3; then the store purges the
/// old bytes where it can (`EventRewriter::purge_old_versions`). Returns how many events
/// it sealed. Idempotent (an event rewritten already is not found again), and recorded
/// in the key store once complete, so that later starts skip the scan.
///
/// An event that does not decode (stored malformed: the projection parks it) has its
/// personal fields sealed as they are, so that no plain text stays behind either.
pub async fn seal_stored_events(
    rewriter: &dyn EventRewriter,
    sealed: &SealedEventStore,
) -> Result<u64, StoreError> {
    let ring = sealed.ring();
    let failure = |e: KeyRingError| StoreError::Other(Box::new(e));
    if ring.migrated().await.map_err(failure)? {
        return Ok(0);
    }
    let mut after = None;
    let mut sealed_count = 0u64;
    loop {
        let (events, next) = rewriter
            .legacy_events(OrderEvent::CREATED, SEALED_SINCE, after, MIGRATION_BATCH)
            .await?;
        let mut changes = Vec::with_capacity(events.len());
        for event in &events {
            let opened = match OrderEvent::decode(
                &event.event_type,
                event.schema_version,
                &event.data,
            ) {
                Ok(decoded) => decoded.encode(),
                Err(e) => {
                    tracing::warn!(
                        event_id = %event.event_id,
                        error = %e,
                        "an event stored before encryption does not decode: its personal fields are sealed as they are"
                    );
                    event.data.clone()
                }
            };
            let stored = sealed.seal_payload(event.event_id, &opened).await?;
            changes.push(Rewrite::of(event, OrderEvent::CREATED_VERSION, stored));
        }
        if !changes.is_empty() {
            sealed_count += rewriter.rewrite(&changes).await?;
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    // The purge runs on any store that holds events, not only when this run sealed
    // some: a start that sealed them and then failed to purge has left no mark, and the
    // next start purges. A new, empty store has nothing to purge.
    let head = sealed.inner().head().await?;
    let holds_events = head.cursors().iter().any(|c| *c != ordo_es::Cursor::ORIGIN);
    if holds_events {
        rewriter.purge_old_versions().await?;
    }
    if sealed_count > 0 {
        tracing::info!(
            events = sealed_count,
            "sealed the personal data of the events stored before encryption, and purged the old bytes"
        );
    }
    ring.mark_migrated().await.map_err(failure)?;
    Ok(sealed_count)
}
