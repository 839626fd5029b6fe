//! The key store: where each customer's data key lives, wrapped by the master key, and
//! where erasures are recorded. Backends implement [`KeyStore`]; the conformance suite
//! (`key_store_conformance!`, feature `conformance`) is the contract.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use time::OffsetDateTime;
use uuid::Uuid;

/// Who a data key belongs to, without saying who: the keyed hash (HMAC-SHA-256) of the
/// customer's normalised e-mail address under the store's subject key. Looking a
/// customer up needs the e-mail and the subject key; the hash alone names no one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject([u8; 32]);

impl Subject {
    /// The reserved subject under which the store keeps its own subject key (an HMAC
    /// output is never all zeros in practice: 2^-256).
    pub const INDEX: Subject = Subject([0; 32]);

    /// The reserved subject whose key marks that every event stored before encryption
    /// was sealed (the one-time migration ran to its end), so that later starts skip the
    /// scan. Its key seals nothing.
    pub const MIGRATED: Subject = Subject([0xff; 32]);

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Subject(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters: how stores write it.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    /// The subject from [`Subject::to_hex`]'s text; `None` when it is not 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(Subject(out))
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({})", self.to_hex())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A data key as stored: its id, its subject, and the key itself encrypted under the
/// master key (`wrapped`: nonce then ciphertext; see `crypto`). The store never sees a
/// key in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub id: Uuid,
    pub subject: Subject,
    pub wrapped: Vec<u8>,
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("wrapped", &format_args!("{} bytes", self.wrapped.len()))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// An erasure as recorded: when, by whom, and how many keys it destroyed. No personal
/// data: the subject is the keyed hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    pub subject: Subject,
    pub erased_at: OffsetDateTime,
    /// Who asked: the fingerprint of the admin token, or `cli` for `ordo erase`.
    pub erased_by: String,
    /// How many keys this erasure destroyed (more than one when keys were created
    /// concurrently under an earlier store version; normally one).
    pub keys_destroyed: u32,
}

/// What [`KeyStore::erase`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EraseOutcome {
    /// Keys were destroyed now; the new record.
    Erased(Erasure),
    /// The subject has no live key but was erased before: the latest record, unchanged.
    AlreadyErased(Erasure),
    /// The subject never had a key.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    #[error("key store overloaded")]
    Overloaded,
    #[error("key store data is corrupt: {0}")]
    Corrupt(String),
}

/// Where data keys live. Every method is one atomic step on the backend.
///
/// The store's own subject key is a [`WrappedKey`] like the others, under
/// [`Subject::INDEX`] with the nil id, so that it is created once (first writer wins) and
/// rewrapped with the rest when the master key rotates. `erase` never takes
/// [`Subject::INDEX`].
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug + 'static {
    /// The subject's live key, if it has one.
    async fn live_key(&self, subject: &Subject) -> Result<Option<WrappedKey>, KeyStoreError>;

    /// Makes `key` its subject's live key unless the subject already has one, and returns
    /// the subject's live key: `key` itself, or the one that won a race.
    async fn create_key(&self, key: WrappedKey) -> Result<WrappedKey, KeyStoreError>;

    /// The keys among `ids` that exist (destroyed keys are absent from the answer).
    async fn keys(&self, ids: &[Uuid]) -> Result<Vec<WrappedKey>, KeyStoreError>;

    /// Destroys every key of `subject` and records the erasure, as one step: after it
    /// returns, no reader of the store can get the keys back, and a later `create_key`
    /// for the subject makes a new key.
    async fn erase(
        &self,
        subject: &Subject,
        at: OffsetDateTime,
        by: &str,
    ) -> Result<EraseOutcome, KeyStoreError>;

    /// Up to `limit` keys, by id, after `after` (all from the start when `None`): for
    /// rotating the master key.
    async fn page(&self, after: Option<Uuid>, limit: u32)
    -> Result<Vec<WrappedKey>, KeyStoreError>;

    /// Replaces key `id`'s wrapped bytes with `new` if they are still `old`; false when
    /// the key is gone or was rewrapped by someone else.
    async fn rewrap(&self, id: Uuid, old: &[u8], new: &[u8]) -> Result<bool, KeyStoreError>;

    async fn ping(&self) -> Result<(), KeyStoreError>;
}

/// A key store in memory, for tests and the in-memory service.
#[derive(Debug, Default)]
pub struct InMemoryKeys {
    inner: Mutex<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    by_id: HashMap<Uuid, WrappedKey>,
    live: HashMap<Subject, Uuid>,
    erasures: HashMap<Subject, Erasure>,
}

impl InMemoryKeys {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl KeyStore for InMemoryKeys {
    async fn live_key(&self, subject: &Subject) -> Result<Option<WrappedKey>, KeyStoreError> {
        let keys = self.lock();
        Ok(keys
            .live
            .get(subject)
            .and_then(|id| keys.by_id.get(id))
            .cloned())
    }

    async fn create_key(&self, key: WrappedKey) -> Result<WrappedKey, KeyStoreError> {
        let mut keys = self.lock();
        if let Some(existing) = keys
            .live
            .get(&key.subject)
            .and_then(|id| keys.by_id.get(id))
        {
            return Ok(existing.clone());
        }
        keys.live.insert(key.subject, key.id);
        keys.by_id.insert(key.id, key.clone());
        Ok(key)
    }

    async fn keys(&self, ids: &[Uuid]) -> Result<Vec<WrappedKey>, KeyStoreError> {
        let keys = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| keys.by_id.get(id))
            .cloned()
            .collect())
    }

    async fn erase(
        &self,
        subject: &Subject,
        at: OffsetDateTime,
        by: &str,
    ) -> Result<EraseOutcome, KeyStoreError> {
        let mut keys = self.lock();
        let before = keys.by_id.len();
        keys.by_id.retain(|_, k| k.subject != *subject);
        let destroyed = before - keys.by_id.len();
        keys.live.remove(subject);
        if destroyed == 0 {
            return Ok(match keys.erasures.get(subject) {
                Some(e) => EraseOutcome::AlreadyErased(e.clone()),
                None => EraseOutcome::Unknown,
            });
        }
        let erasure = Erasure {
            subject: *subject,
            erased_at: at,
            erased_by: by.to_string(),
            keys_destroyed: u32::try_from(destroyed).unwrap_or(u32::MAX),
        };
        keys.erasures.insert(*subject, erasure.clone());
        Ok(EraseOutcome::Erased(erasure))
    }

    async fn page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<WrappedKey>, KeyStoreError> {
        let keys = self.lock();
        let mut page: Vec<WrappedKey> = keys
            .by_id
            .values()
            .filter(|k| after.is_none_or(|a| k.id > a))
            .cloned()
            .collect();
        page.sort_by_key(|k| k.id);
        page.truncate(limit as usize);
        Ok(page)
    }

    async fn rewrap(&self, id: Uuid, old: &[u8], new: &[u8]) -> Result<bool, KeyStoreError> {
        let mut keys = self.lock();
        match keys.by_id.get_mut(&id) {
            Some(k) if k.wrapped == old => {
                k.wrapped = new.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn ping(&self) -> Result<(), KeyStoreError> {
        Ok(())
    }
}

#[cfg(all(test, feature = "conformance"))]
mod conformance {
    use super::InMemoryKeys;

    crate::key_store_conformance!(async { InMemoryKeys::new() });
}
