//! Personal data, encrypted at rest and erasable: crypto-shredding.
//!
//! The customer's name, e-mail address and shipping address are the personal data of an
//! order. They never reach an event store in clear: each customer (each normalised
//! e-mail address) has a data key of their own, every `OrderCreated` carries its
//! personal fields sealed under that key, and erasure destroys the key, so that every
//! copy of those events (replicas and backups included) stays unreadable for those
//! fields for ever. The rest of each event (items, totals, status) stays in clear: the
//! audit trail keeps its value.
//!
//! - [`crypto`]: XChaCha20-Poly1305 and HMAC-SHA-256, key material that wipes itself.
//! - [`keys`]: the [`KeyStore`] contract backends implement (data keys wrapped by the
//!   master key; erasures recorded without personal data), and [`InMemoryKeys`].
//! - [`ring`]: the [`KeyRing`]: the master key, the subject key and a bounded cache of
//!   data keys in front of a key store.
//! - [`sealed`]: [`SealedEventStore`], the event store as everything above it sees it:
//!   it seals personal data on the way in and opens it on the way out, where a key
//!   that is gone opens to the erased shape (`null` fields, `personalDataErased`).
//!
//! docs/privacy.md is the operator's account (what is encrypted, keys, backups,
//! rotation).

pub mod crypto;
pub mod keys;
pub mod ring;
pub mod sealed;

pub use crypto::{CryptoError, MasterKey, SecretKey};
pub use keys::{EraseOutcome, Erasure, InMemoryKeys, KeyStore, KeyStoreError, Subject, WrappedKey};
pub use ring::{KeyRing, KeyRingError};
pub use sealed::SealedEventStore;
