//! The cryptography, in one place: XChaCha20-Poly1305 (RustCrypto) for wrapping data
//! keys under the master key and for sealing personal data under a data key, and
//! HMAC-SHA-256 for the subject of an e-mail address. Key material lives in
//! [`Zeroizing`] buffers, wiped when dropped.
//!
//! XChaCha20-Poly1305's 192-bit nonces are drawn at random for every encryption: with
//! random nonces that long, a collision under one key is not a concern for any number of
//! messages a store will hold (unlike AES-GCM's 96 bits). Each ciphertext is bound to
//! where it belongs by its associated data, so a wrapped key or a sealed payload copied
//! to another row fails to open instead of opening as someone else's.

use std::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::keys::Subject;

const NONCE: usize = 24;
const TAG: usize = 16;

/// A 256-bit secret: the master key or a data key. Never printed, wiped on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|_| CryptoError::Random)?;
        Ok(SecretKey(key))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(Zeroizing::new(bytes))
    }

    /// A key from its text form: 64 hex digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CryptoError::KeyFormat);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, slot) in key.iter_mut().enumerate() {
            *slot = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| CryptoError::KeyFormat)?;
        }
        Ok(SecretKey(key))
    }

    /// The text form [`SecretKey::from_hex`] reads.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(64));
        for b in self.0.iter() {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.0).into())
    }

    /// A short public fingerprint of the key (the first 8 bytes of an HMAC of a fixed
    /// label), so that an operator can tell which master key a store was set up with
    /// without revealing it.
    pub fn fingerprint(&self) -> String {
        let mac = hmac(&self.0[..], b"ordo master key fingerprint v1");
        mac[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the operating system's random source failed")]
    Random,
    #[error("a key must be 64 hexadecimal digits (32 bytes)")]
    KeyFormat,
    /// Wrong key, or the bytes were changed or moved: authentication failed.
    #[error("ciphertext does not open with this key (wrong key, or altered data)")]
    Open,
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn encrypt(key: &SecretKey, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let sealed = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Encryption fails only for messages beyond the cipher's limit (256 GiB).
        .map_err(|_| CryptoError::Open)?;
    let mut out = Vec::with_capacity(NONCE + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn decrypt(key: &SecretKey, data: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if data.len() < NONCE + TAG {
        return Err(CryptoError::Open);
    }
    let (nonce, sealed) = data.split_at(NONCE);
    let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| CryptoError::Open)?;
    key.cipher()
        .decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Open)
}

fn wrap_aad(id: Uuid, subject: &Subject) -> Vec<u8> {
    let mut aad = b"ordo data key v1".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad.extend_from_slice(subject.as_bytes());
    aad
}

fn seal_aad(key_id: Uuid, event_id: Uuid) -> Vec<u8> {
    let mut aad = b"ordo personal data v1".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(event_id.as_bytes());
    aad
}

/// Who holds `token`, as an erasure records it: a short keyed hash (the first 8 bytes
/// of an HMAC under a fixed label), which tells tokens apart without revealing one.
pub fn token_fingerprint(token: &str) -> String {
    let mac = hmac(b"ordo admin token fingerprint v1", token.as_bytes());
    mac[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The master key: it wraps every data key and nothing else.
#[derive(Clone, Debug)]
pub struct MasterKey(SecretKey);

impl MasterKey {
    pub fn new(key: SecretKey) -> Self {
        MasterKey(key)
    }

    pub fn secret(&self) -> &SecretKey {
        &self.0
    }

    /// `data_key` encrypted for storage as key `id` of `subject`.
    pub fn wrap(
        &self,
        id: Uuid,
        subject: &Subject,
        data_key: &SecretKey,
    ) -> Result<Vec<u8>, CryptoError> {
        encrypt(&self.0, &data_key.0[..], &wrap_aad(id, subject))
    }

    /// The data key stored as key `id` of `subject`.
    pub fn unwrap(
        &self,
        id: Uuid,
        subject: &Subject,
        wrapped: &[u8],
    ) -> Result<SecretKey, CryptoError> {
        let plain = decrypt(&self.0, wrapped, &wrap_aad(id, subject))?;
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| CryptoError::Open)?;
        Ok(SecretKey::from_bytes(bytes))
    }
}

/// The subject of a normalised e-mail address under the store's subject key.
pub fn subject_of(subject_key: &SecretKey, normalised_email: &str) -> Subject {
    Subject::from_bytes(hmac(&subject_key.0[..], normalised_email.as_bytes()))
}

/// Personal data of event `event_id` sealed under data key `key_id`.
pub fn seal(
    key: &SecretKey,
    key_id: Uuid,
    event_id: Uuid,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    encrypt(key, plaintext, &seal_aad(key_id, event_id))
}

/// What [`seal`] sealed, if `key` is its key and nothing was changed or moved.
pub fn open(
    key: &SecretKey,
    key_id: Uuid,
    event_id: Uuid,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    decrypt(key, sealed, &seal_aad(key_id, event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_where_it_was_sealed() {
        let key = SecretKey::generate().expect("key");
        let (k, e) = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = seal(&key, k, e, b"Ada").expect("seal");
        assert_eq!(open(&key, k, e, &sealed).expect("open").as_slice(), b"Ada");
        assert!(!sealed.windows(3).any(|w| w == b"Ada"));
        // Moved to another event, or under another key id: refused.
        assert_eq!(
            open(&key, k, Uuid::now_v7(), &sealed),
            Err(CryptoError::Open)
        );
        assert_eq!(
            open(&key, Uuid::now_v7(), e, &sealed),
            Err(CryptoError::Open)
        );
        let other = SecretKey::generate().expect("key");
        assert_eq!(open(&other, k, e, &sealed), Err(CryptoError::Open));
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(open(&key, k, e, &altered), Err(CryptoError::Open));
        assert_eq!(open(&key, k, e, &sealed[..10]), Err(CryptoError::Open));
    }

    #[test]
    fn a_wrapped_key_unwraps_only_as_itself() {
        let master = MasterKey::new(SecretKey::generate().expect("key"));
        let data = SecretKey::generate().expect("key");
        let (id, subject) = (Uuid::now_v7(), Subject::from_bytes([7; 32]));
        let wrapped = master.wrap(id, &subject, &data).expect("wrap");
        let back = master.unwrap(id, &subject, &wrapped).expect("unwrap");
        assert_eq!(back.to_hex().as_str(), data.to_hex().as_str());
        assert!(master.unwrap(Uuid::now_v7(), &subject, &wrapped).is_err());
        assert!(
            master
                .unwrap(id, &Subject::from_bytes([8; 32]), &wrapped)
                .is_err()
        );
        let other = MasterKey::new(SecretKey::generate().expect("key"));
        assert!(other.unwrap(id, &subject, &wrapped).is_err());
    }

    #[test]
    fn keys_read_back_from_hex_and_never_print() {
        let key = SecretKey::generate().expect("key");
        let again = SecretKey::from_hex(&format!(" {}\n", key.to_hex().as_str())).expect("hex");
        assert_eq!(again.to_hex().as_str(), key.to_hex().as_str());
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
        assert_eq!(
            SecretKey::from_hex("abc").expect_err("too short"),
            CryptoError::KeyFormat
        );
        assert_eq!(
            SecretKey::from_hex(&"g".repeat(64)).expect_err("not hex"),
            CryptoError::KeyFormat
        );
        assert_eq!(key.fingerprint().len(), 16);
    }

    #[test]
    fn a_subject_depends_on_the_subject_key() {
        let a = SecretKey::generate().expect("key");
        let b = SecretKey::generate().expect("key");
        assert_eq!(
            subject_of(&a, "ada@example.com"),
            subject_of(&a, "ada@example.com")
        );
        assert_ne!(
            subject_of(&a, "ada@example.com"),
            subject_of(&b, "ada@example.com")
        );
        assert_ne!(
            subject_of(&a, "ada@example.com"),
            subject_of(&a, "bob@example.com")
        );
    }
}
