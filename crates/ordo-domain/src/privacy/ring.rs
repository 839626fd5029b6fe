//! The key ring: the master key, the store's subject key, and a bounded cache of data
//! keys in front of a [`KeyStore`].
//!
//! The cache holds at most `capacity` unwrapped data keys, each trusted for `ttl` after
//! it was read from the store. An erasure through this ring drops the customer's keys
//! from it at once; another process's ring drops them when their `ttl` runs out, which is
//! why an erasure waits that long before it rebuilds the read models (see
//! `ordo_app::privacy`). Destroyed keys are never cached: a key that is gone is asked
//! for again (in one call per batch of events).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;

use super::crypto::{CryptoError, MasterKey, SecretKey, subject_of};
use super::keys::{EraseOutcome, KeyStore, KeyStoreError, Subject, WrappedKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error(transparent)]
    Store(#[from] KeyStoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A stored key does not open with the master key (or any previous one given).
    #[error(
        "the key store's keys were not wrapped by this master key (fingerprint {fingerprint}): \
         start ordo with the master key the store was set up with"
    )]
    WrongMasterKey { fingerprint: String },
}

/// The cache's bounds.
#[derive(Clone, Copy, Debug)]
pub struct CacheBounds {
    /// Data keys held at most; the oldest is dropped first.
    pub capacity: usize,
    /// How long a key read from the store is used before it is read again.
    pub ttl: Duration,
}

impl Default for CacheBounds {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl: Duration::from_secs(2),
        }
    }
}

struct Cached {
    subject: Subject,
    key: SecretKey,
    read_at: Instant,
}

#[derive(Default)]
struct Cache {
    by_id: HashMap<Uuid, Cached>,
    live: HashMap<Subject, Uuid>,
    /// Ids in the order they were cached, for dropping the oldest.
    order: VecDeque<Uuid>,
}

impl Cache {
    fn insert(&mut self, id: Uuid, cached: Cached, live: bool, capacity: usize) {
        if live {
            self.live.insert(cached.subject, id);
        }
        if self.by_id.insert(id, cached).is_none() {
            self.order.push_back(id);
        }
        while self.by_id.len() > capacity.max(1) {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_id.remove(&oldest)
                && self.live.get(&gone.subject) == Some(&oldest)
            {
                self.live.remove(&gone.subject);
            }
        }
    }

    fn forget(&mut self, subject: &Subject) {
        self.live.remove(subject);
        self.by_id.retain(|_, c| c.subject != *subject);
        let by_id = &self.by_id;
        self.order.retain(|id| by_id.contains_key(id));
    }
}

/// The master key and the data keys, as the sealed event store uses them.
pub struct KeyRing {
    store: Arc<dyn KeyStore>,
    master: MasterKey,
    /// Older master keys that still unwrap keys not yet rewrapped (during a rotation).
    previous: Vec<MasterKey>,
    subject_key: SecretKey,
    bounds: CacheBounds,
    cache: Mutex<Cache>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("store", &self.store)
            .field("master", &self.master.secret().fingerprint())
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

fn random_id() -> Result<Uuid, CryptoError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

impl KeyRing {
    /// A ring over `store`: reads the store's subject key, or makes it on a new store.
    /// Fails when the store's keys were wrapped by another master key.
    pub async fn open(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        previous: Vec<MasterKey>,
        bounds: CacheBounds,
    ) -> Result<Self, KeyRingError> {
        let index = match store.live_key(&Subject::INDEX).await? {
            Some(index) => index,
            None => {
                let fresh = SecretKey::generate()?;
                store
                    .create_key(WrappedKey {
                        id: Uuid::nil(),
                        subject: Subject::INDEX,
                        wrapped: master.wrap(Uuid::nil(), &Subject::INDEX, &fresh)?,
                        created_at: OffsetDateTime::now_utc(),
                    })
                    .await?
            }
        };
        let mut ring = KeyRing {
            store,
            master,
            previous,
            subject_key: SecretKey::from_bytes([0; 32]),
            bounds,
            cache: Mutex::new(Cache::default()),
        };
        ring.subject_key = ring.unwrap(&index)?;
        Ok(ring)
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    pub fn bounds(&self) -> CacheBounds {
        self.bounds
    }

    /// The fingerprint of the master key in use.
    pub fn master_fingerprint(&self) -> String {
        self.master.secret().fingerprint()
    }

    fn unwrap(&self, key: &WrappedKey) -> Result<SecretKey, KeyRingError> {
        std::iter::once(&self.master)
            .chain(&self.previous)
            .find_map(|m| m.unwrap(key.id, &key.subject, &key.wrapped).ok())
            .ok_or_else(|| KeyRingError::WrongMasterKey {
                fingerprint: self.master.secret().fingerprint(),
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the one-time migration of events stored before encryption has run to its
    /// end on this key store ([`Subject::MIGRATED`]).
    pub async fn migrated(&self) -> Result<bool, KeyRingError> {
        Ok(self.store.live_key(&Subject::MIGRATED).await?.is_some())
    }

    /// Records that the one-time migration has run to its end.
    pub async fn mark_migrated(&self) -> Result<(), KeyRingError> {
        let id = Uuid::max();
        self.store
            .create_key(WrappedKey {
                id,
                subject: Subject::MIGRATED,
                wrapped: self
                    .master
                    .wrap(id, &Subject::MIGRATED, &SecretKey::generate()?)?,
                created_at: OffsetDateTime::now_utc(),
            })
            .await?;
        Ok(())
    }

    /// The subject of a normalised e-mail address (see `CustomerEmail`).
    pub fn subject(&self, normalised_email: &str) -> Subject {
        subject_of(&self.subject_key, normalised_email)
    }

    /// The key new personal data of `subject` is sealed under: its live key, made when it
    /// has none (a first order, or the first since an erasure).
    pub async fn sealing_key(&self, subject: &Subject) -> Result<(Uuid, SecretKey), KeyRingError> {
        {
            let cache = self.lock();
            if let Some(cached) = cache
                .live
                .get(subject)
                .and_then(|id| cache.by_id.get(id).map(|c| (id, c)))
                && cached.1.read_at.elapsed() < self.bounds.ttl
            {
                return Ok((*cached.0, cached.1.key.clone()));
            }
        }
        let stored = match self.store.live_key(subject).await? {
            Some(key) => key,
            None => {
                let id = random_id()?;
                let fresh = SecretKey::generate()?;
                self.store
                    .create_key(WrappedKey {
                        id,
                        subject: *subject,
                        wrapped: self.master.wrap(id, subject, &fresh)?,
                        created_at: OffsetDateTime::now_utc(),
                    })
                    .await?
            }
        };
        let key = self.unwrap(&stored)?;
        let cached = Cached {
            subject: stored.subject,
            key: key.clone(),
            read_at: Instant::now(),
        };
        self.lock()
            .insert(stored.id, cached, true, self.bounds.capacity);
        Ok((stored.id, key))
    }

    /// The data keys among `ids` that still exist. A key that was destroyed is absent:
    /// what it sealed opens to the erased shape.
    pub async fn opening_keys(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, SecretKey>, KeyRingError> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let cache = self.lock();
            for id in ids {
                match cache.by_id.get(id) {
                    Some(c) if c.read_at.elapsed() < self.bounds.ttl => {
                        found.insert(*id, c.key.clone());
                    }
                    _ if !missing.contains(id) => missing.push(*id),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let stored = self.store.keys(&missing).await?;
        let now = Instant::now();
        let mut fresh = Vec::with_capacity(stored.len());
        for key in &stored {
            fresh.push((key.id, key.subject, self.unwrap(key)?));
        }
        let mut cache = self.lock();
        for (id, subject, key) in fresh {
            found.insert(id, key.clone());
            let cached = Cached {
                subject,
                key,
                read_at: now,
            };
            cache.insert(id, cached, false, self.bounds.capacity);
        }
        Ok(found)
    }

    /// Destroys the keys of the customer with this normalised e-mail and records the
    /// erasure (`by`: who asked, never personal data). This ring forgets them at once.
    pub async fn erase(
        &self,
        normalised_email: &str,
        by: &str,
    ) -> Result<(Subject, EraseOutcome), KeyRingError> {
        let subject = self.subject(normalised_email);
        self.lock().forget(&subject);
        // Stores keep microseconds: the answer now says what a repeat will.
        let now = OffsetDateTime::now_utc();
        let at = now
            .replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now);
        let outcome = self.store.erase(&subject, at, by).await?;
        // Forgotten again: a sealing in flight may have cached the key meanwhile.
        self.lock().forget(&subject);
        Ok((subject, outcome))
    }

    /// Rewraps every stored key under this ring's master key (those still wrapped by a
    /// previous one); returns how many were rewrapped. Safe to run while the service
    /// runs and to run again: each rewrap is a compare-and-set of the wrapped bytes.
    pub async fn rewrap_all(&self) -> Result<u64, KeyRingError> {
        let mut after = None;
        let mut rewrapped = 0u64;
        loop {
            let page = self.store.page(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for key in &page {
                if self
                    .master
                    .unwrap(key.id, &key.subject, &key.wrapped)
                    .is_ok()
                {
                    continue;
                }
                let plain = self.unwrap(key)?;
                let new = self.master.wrap(key.id, &key.subject, &plain)?;
                if self.store.rewrap(key.id, &key.wrapped, &new).await? {
                    rewrapped += 1;
                }
            }
        }
        Ok(rewrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::keys::InMemoryKeys;

    fn master() -> MasterKey {
        MasterKey::new(SecretKey::generate().expect("key"))
    }

    async fn ring(store: &Arc<InMemoryKeys>, master: MasterKey, bounds: CacheBounds) -> KeyRing {
        let store: Arc<dyn KeyStore> = store.clone();
        KeyRing::open(store, master, vec![], bounds)
            .await
            .expect("open")
    }

    #[tokio::test]
    async fn a_customer_keeps_one_key_until_erased_then_gets_a_new_one() {
        let store = Arc::new(InMemoryKeys::new());
        let ring = ring(&store, master(), CacheBounds::default()).await;
        let ada = ring.subject("ada@example.com");
        let (first, key) = ring.sealing_key(&ada).await.expect("key");
        assert_eq!(ring.sealing_key(&ada).await.expect("key").0, first);
        let opened = ring.opening_keys(&[first]).await.expect("open");
        assert_eq!(opened[&first].to_hex().as_str(), key.to_hex().as_str());
        let (subject, outcome) = ring.erase("ada@example.com", "cli").await.expect("erase");
        assert_eq!(subject, ada);
        assert!(matches!(outcome, EraseOutcome::Erased(_)));
        assert!(ring.opening_keys(&[first]).await.expect("open").is_empty());
        let (second, _) = ring.sealing_key(&ada).await.expect("key");
        assert_ne!(second, first);
    }

    #[tokio::test]
    async fn another_master_key_is_refused_at_open_and_a_rotation_rewraps_every_key() {
        let store = Arc::new(InMemoryKeys::new());
        let old = master();
        let first = ring(&store, old.clone(), CacheBounds::default()).await;
        let ada = first.subject("ada@example.com");
        let (id, key) = first.sealing_key(&ada).await.expect("key");
        let dyn_store: Arc<dyn KeyStore> = store.clone();
        let wrong = KeyRing::open(
            Arc::clone(&dyn_store),
            master(),
            vec![],
            CacheBounds::default(),
        )
        .await;
        assert!(matches!(wrong, Err(KeyRingError::WrongMasterKey { .. })));
        let new = master();
        let rotating = KeyRing::open(
            Arc::clone(&dyn_store),
            new.clone(),
            vec![old],
            CacheBounds::default(),
        )
        .await
        .expect("open with the old key as previous");
        assert_eq!(
            rotating.subject("ada@example.com"),
            ada,
            "subjects survive rotation"
        );
        assert_eq!(
            rotating.rewrap_all().await.expect("rewrap"),
            2,
            "the subject key and Ada's"
        );
        assert_eq!(rotating.rewrap_all().await.expect("again"), 0);
        let after = KeyRing::open(dyn_store, new, vec![], CacheBounds::default())
            .await
            .expect("the new key alone opens the store");
        let opened = after.opening_keys(&[id]).await.expect("open");
        assert_eq!(opened[&id].to_hex().as_str(), key.to_hex().as_str());
    }

    #[tokio::test]
    async fn the_cache_holds_at_most_its_capacity() {
        let store = Arc::new(InMemoryKeys::new());
        let bounds = CacheBounds {
            capacity: 3,
            ttl: Duration::from_secs(60),
        };
        let ring = ring(&store, master(), bounds).await;
        for n in 0..10 {
            let s = ring.subject(&format!("c{n}@example.com"));
            ring.sealing_key(&s).await.expect("key");
        }
        let cache = ring.lock();
        assert_eq!(cache.by_id.len(), 3);
        assert!(cache.live.len() <= 3);
        assert_eq!(cache.order.len(), 3);
    }
}
