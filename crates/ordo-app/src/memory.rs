//! Read stores kept in memory: the read-store contract with nothing behind it, so that
//! tests of the read side (the projection, the blue-green switch, replays) run without a
//! database and fail only for what they test.
//!
//! Each store applies a [`ReadModelBatch`] the way the SQL stores do: the views are
//! replaced, the summary, top-customer and daily rows move by the batch's deltas, and the
//! checkpoint moves by compare-and-set. Nothing is durable; nothing is bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use ordo_domain::read_store::{fencing_unsupported, projection_of, search_text};
use ordo_domain::{
    DailyFigures, EmailKey, ListQuery, Money, OrderPage, OrderQueries, OrderReadStore, OrderView,
    ParkedEvent, ReadGeneration, ReadModelBatch, ReadModelWriter, ReadStoreError,
    ReadStoreLifecycle, ReadStoreProvider, RebuildLock, Sort, StatusCounts, Summary, TopCustomer,
    ViewState,
};
use ordo_es::{Checkpoint, Cursor, InMemoryLeases, Lease};

/// One read-store generation in memory.
#[derive(Debug, Default)]
pub struct InMemoryReadStore {
    models: Mutex<Models>,
    /// The leases fenced writes are checked against; `None`: fences are refused.
    leases: Option<Arc<InMemoryLeases>>,
}

#[derive(Debug, Default)]
struct Models {
    checkpoints: HashMap<String, Checkpoint>,
    views: HashMap<Uuid, ViewState>,
    counts: [i64; 6],
    revenue: Money,
    last_event_at: Option<OffsetDateTime>,
    /// Per customer: counted orders and their spend.
    customers: BTreeMap<EmailKey, (i64, Money)>,
    daily: BTreeMap<Date, (i64, Money)>,
    parked: HashMap<String, Vec<ParkedEvent>>,
}

impl Models {
    /// The compare-and-set every write of a projection's checkpoint goes through.
    fn move_checkpoint(
        &mut self,
        projection: &str,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        let is_from = match self.checkpoints.get(projection) {
            Some(stored) => stored == from,
            None => from.cursors().iter().all(|c| *c == Cursor::ORIGIN),
        };
        if !is_from {
            return Err(ReadStoreError::CheckpointMoved);
        }
        self.checkpoints.insert(projection.to_owned(), to.clone());
        Ok(())
    }

    fn apply(&mut self, batch: &ReadModelBatch) {
        for (id, state) in &batch.views {
            self.views.insert(*id, state.clone());
        }
        for (count, delta) in self.counts.iter_mut().zip(batch.status_delta) {
            *count += delta;
        }
        self.revenue = self.revenue + batch.revenue_delta;
        self.last_event_at = self.last_event_at.max(batch.last_event_at);
        for (email, (orders, spent)) in &batch.customer_deltas {
            let entry = self
                .customers
                .entry(email.clone())
                .or_insert((0, Money::ZERO));
            entry.0 += orders;
            entry.1 = entry.1 + *spent;
            if entry.0 <= 0 {
                self.customers.remove(email);
            }
        }
        for (day, delta) in &batch.daily_deltas {
            let entry = self.daily.entry(*day).or_insert((0, Money::ZERO));
            entry.0 += delta.orders;
            entry.1 = entry.1 + delta.revenue;
            if *entry == (0, Money::ZERO) {
                // A day left with no order has no row, as in the SQL stores.
                self.daily.remove(day);
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &OrderView> {
        self.views.values().filter_map(ViewState::live)
    }

    /// The name of the customer's most recent counted order, as the SQL stores pick it.
    fn customer_name(&self, email: &EmailKey) -> String {
        self.live()
            .filter(|v| v.customer_key().as_ref() == Some(email) && v.counts_as_revenue())
            .max_by_key(|v| (v.created_at, v.order_id))
            .and_then(|v| v.customer_name.clone())
            .unwrap_or_default()
    }
}

fn matches(query: &ListQuery, view: &OrderView) -> bool {
    query.status.is_none_or(|s| view.status == s)
        && query
            .customer_email
            .as_ref()
            .is_none_or(|e| view.customer_key().as_ref() == Some(e))
        && query.min_total.is_none_or(|m| view.total_amount >= m)
        && query.max_total.is_none_or(|m| view.total_amount <= m)
        && query.created_from.is_none_or(|t| view.created_at >= t)
        && query.created_to.is_none_or(|t| view.created_at <= t)
        && query
            .search
            .as_ref()
            .is_none_or(|term| search_text(view).contains(term.as_str()))
}

impl InMemoryReadStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A store whose fenced writes are checked against `leases`.
    pub fn fenced_by(leases: Arc<InMemoryLeases>) -> Self {
        Self {
            leases: Some(leases),
            ..Self::default()
        }
    }

    fn models(&self) -> MutexGuard<'_, Models> {
        self.models.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `write` on the models, while `fence` (when given) is its shard's current
    /// lease, with the leases held so that no takeover happens meanwhile.
    fn fenced(
        &self,
        projection: &str,
        fence: Option<&Lease>,
        write: impl FnOnce(&mut Models) -> Result<(), ReadStoreError>,
    ) -> Result<(), ReadStoreError> {
        let Some(lease) = fence else {
            return write(&mut self.models());
        };
        let Some(leases) = &self.leases else {
            return Err(fencing_unsupported("in-memory"));
        };
        leases
            .while_current(lease, || write(&mut self.models()))
            .unwrap_or_else(|| {
                Err(ReadStoreError::LeaseLost {
                    projection: lease.projection.clone(),
                    shard: lease.shard,
                })
            })
            .inspect_err(|e| tracing::debug!(projection, error = %e, "fenced write refused"))
    }
}

#[async_trait]
impl ReadModelWriter for InMemoryReadStore {
    async fn load_checkpoint(
        &self,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        Ok(self.models().checkpoints.get(projection).cloned())
    }

    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
        let models = self.models();
        Ok(ids
            .iter()
            .filter_map(|id| models.views.get(id).map(|s| (*id, s.clone())))
            .collect())
    }

    async fn commit_fenced(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError> {
        self.fenced(projection, fence, |models| {
            models.move_checkpoint(projection, from, to)?;
            models.apply(&batch);
            Ok(())
        })
    }

    async fn park_fenced(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
        fence: Option<&Lease>,
    ) -> Result<(), ReadStoreError> {
        self.fenced(projection, fence, |models| {
            models.move_checkpoint(projection, from, to)?;
            let parked_here = models
                .parked
                .entry(projection_of(projection).to_owned())
                .or_default();
            // A redelivered event is kept once.
            if !parked_here.iter().any(|p| p.event_id == parked.event_id) {
                parked_here.push(parked);
            }
            Ok(())
        })
    }
}

#[async_trait]
impl OrderQueries for InMemoryReadStore {
    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError> {
        Ok(self
            .models()
            .views
            .get(&id)
            .and_then(ViewState::live)
            .cloned())
    }

    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError> {
        let models = self.models();
        let mut found: Vec<&OrderView> = models.live().filter(|v| matches(query, v)).collect();
        found.sort_by(|a, b| match query.sort {
            Sort::CreatedAtDesc => (b.created_at, b.order_id).cmp(&(a.created_at, a.order_id)),
            Sort::CreatedAt => (a.created_at, a.order_id).cmp(&(b.created_at, b.order_id)),
            Sort::TotalAmount => (a.total_amount, a.order_id).cmp(&(b.total_amount, b.order_id)),
            Sort::TotalAmountDesc => {
                (b.total_amount, b.order_id).cmp(&(a.total_amount, a.order_id))
            }
        });
        let offset = usize::try_from(query.offset()).unwrap_or(usize::MAX);
        Ok(OrderPage {
            total: found.len() as u64,
            orders: found
                .into_iter()
                .skip(offset)
                .take(query.limit as usize)
                .cloned()
                .collect(),
            page: query.page,
            limit: query.limit,
        })
    }

    async fn summary(&self) -> Result<Summary, ReadStoreError> {
        let models = self.models();
        Ok(Summary::from_counters(
            StatusCounts(models.counts),
            models.revenue,
            models.last_event_at,
        ))
    }

    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError> {
        let models = self.models();
        let mut customers: Vec<(&EmailKey, &(i64, Money))> = models.customers.iter().collect();
        // Highest spend first; the e-mail breaks ties (the map iterates in e-mail order
        // and the sort is stable).
        customers.sort_by_key(|(_, (_, spent))| std::cmp::Reverse(*spent));
        Ok(customers
            .into_iter()
            .take(limit as usize)
            .map(|(email, (orders, spent))| TopCustomer {
                customer_email: email.as_str().to_owned(),
                customer_name: models.customer_name(email),
                order_count: u64::try_from(*orders).unwrap_or(0),
                total_spent: *spent,
            })
            .collect())
    }

    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError> {
        Ok(self
            .models()
            .daily
            .range(from..=to)
            .map(|(date, (orders, revenue))| DailyFigures {
                date: *date,
                orders: u64::try_from(*orders).unwrap_or(0),
                revenue: *revenue,
            })
            .collect())
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        Ok(self
            .models()
            .parked
            .get(projection)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl ReadStoreLifecycle for InMemoryReadStore {
    async fn reset(&self) -> Result<(), ReadStoreError> {
        *self.models() = Models::default();
        Ok(())
    }

    async fn ping(&self) -> Result<(), ReadStoreError> {
        Ok(())
    }
}

/// Generations of [`InMemoryReadStore`]s, with the blue-green switch of the SQL providers:
/// a new generation is made beside the active one and activated in one step.
#[derive(Debug)]
pub struct InMemoryReadStores {
    generations: Mutex<Generations>,
    next_id: AtomicU64,
    rebuilding: Arc<AtomicBool>,
    /// The leases every generation's fenced writes are checked against, if any.
    leases: Option<Arc<InMemoryLeases>>,
}

#[derive(Debug)]
struct Generations {
    active: String,
    stores: HashMap<String, Arc<InMemoryReadStore>>,
}

impl Generations {
    fn generation(&self, id: &str) -> Result<ReadGeneration, ReadStoreError> {
        let store = self
            .stores
            .get(id)
            .ok_or_else(|| ReadStoreError::Corrupt(format!("no generation {id}")))?;
        Ok(ReadGeneration {
            id: id.to_owned(),
            store: Arc::clone(store) as Arc<dyn OrderReadStore>,
        })
    }
}

impl Default for InMemoryReadStores {
    fn default() -> Self {
        let first = "g0".to_owned();
        Self {
            generations: Mutex::new(Generations {
                stores: HashMap::from([(first.clone(), InMemoryReadStore::new())]),
                active: first,
            }),
            next_id: AtomicU64::new(1),
            rebuilding: Arc::new(AtomicBool::new(false)),
            leases: None,
        }
    }
}

impl InMemoryReadStores {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Generations whose fenced writes are checked against `leases` (as a database's
    /// generations are against the leases beside them).
    pub fn fenced_by(leases: Arc<InMemoryLeases>) -> Arc<Self> {
        let first = "g0".to_owned();
        let store = Arc::new(InMemoryReadStore::fenced_by(Arc::clone(&leases)));
        Arc::new(Self {
            generations: Mutex::new(Generations {
                stores: HashMap::from([(first.clone(), store)]),
                active: first,
            }),
            leases: Some(leases),
            ..Self::default()
        })
    }

    /// The ids of every generation that exists, in no particular order.
    pub fn generation_ids(&self) -> Vec<String> {
        self.generations().stores.keys().cloned().collect()
    }

    fn generations(&self) -> MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl ReadStoreProvider for InMemoryReadStores {
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        let generations = self.generations();
        generations.generation(&generations.active)
    }

    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        let id = format!("g{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let store = match &self.leases {
            Some(leases) => Arc::new(InMemoryReadStore::fenced_by(Arc::clone(leases))),
            None => InMemoryReadStore::new(),
        };
        let mut generations = self.generations();
        generations.stores.insert(id.clone(), store);
        generations.generation(&id)
    }

    async fn activate(&self, id: &str) -> Result<(), ReadStoreError> {
        let mut generations = self.generations();
        generations.generation(id)?;
        generations.active = id.to_owned();
        Ok(())
    }

    async fn drop_inactive(&self) -> Result<u32, ReadStoreError> {
        let mut generations = self.generations();
        let active = generations.active.clone();
        let before = generations.stores.len();
        generations.stores.retain(|id, _| *id == active);
        Ok(u32::try_from(before - generations.stores.len()).unwrap_or(u32::MAX))
    }

    async fn active_id(&self) -> Result<String, ReadStoreError> {
        Ok(self.generations().active.clone())
    }

    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError> {
        Ok(RebuildLock::take_flag(&self.rebuilding))
    }
}

#[cfg(test)]
mod conformance {
    ordo_domain::read_store_conformance!(async { super::InMemoryReadStore::default() });
}

#[cfg(test)]
mod provider_conformance {
    ordo_domain::read_store_provider_conformance!(async { super::InMemoryReadStores::default() });
}

#[cfg(test)]
mod fencing_conformance {
    use std::sync::Arc;

    use ordo_es::{InMemoryLeases, LeaseStore};

    ordo_domain::read_store_fencing_conformance!(async {
        let leases = Arc::new(InMemoryLeases::new());
        let store = super::InMemoryReadStore::fenced_by(Arc::clone(&leases));
        (store, leases as Arc<dyn LeaseStore>, ())
    });
}
