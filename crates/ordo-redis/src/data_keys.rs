//! The key store of crypto-shredding on Redis ([`KeyStore`]): customers' data keys,
//! wrapped by the master key, and the record of erasures.
//!
//! Every key of the key store carries one hash tag, `{<prefix>:keys}`, so that on a
//! cluster they are all in one slot and every operation is one Lua script over keys it
//! names, atomic on one server or a cluster alike:
//!
//! ```text
//! <prefix>:{<prefix>:keys}:wrapped    hash   key id -> wrapped key (bytes)
//! <prefix>:{<prefix>:keys}:subject    hash   key id -> subject (64 hex digits)
//! <prefix>:{<prefix>:keys}:created    hash   key id -> created_at (Unix microseconds)
//! <prefix>:{<prefix>:keys}:live       hash   subject -> the id of its key
//! <prefix>:{<prefix>:keys}:ids        zset   key ids, score 0 (ZRANGEBYLEX pages them)
//! <prefix>:{<prefix>:keys}:erasures   hash   subject -> <erased_at us>:<keys>:<erased_by>
//! ```
//!
//! Key ids are hyphenated lower-case UUIDs, whose text sorts as their bytes do: the
//! lexical order of `ids` is the id order of [`KeyStore::page`].

use std::fmt;

use async_trait::async_trait;
use redis::{RedisError, Script, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use ordo_domain::privacy::{EraseOutcome, Erasure, KeyStore, KeyStoreError, Subject, WrappedKey};

use crate::link::Link;
use crate::url::StoreUrl;

/// The key store's keys, in the order every script takes them (`KEYS[1]` to `KEYS[6]`).
fn key_names(prefix: &str) -> [String; 6] {
    ["wrapped", "subject", "created", "live", "ids", "erasures"]
        .map(|name| format!("{prefix}:{{{prefix}:keys}}:{name}"))
}

/// The live key of `ARGV[1]`: `{id, wrapped, created}`, or nil.
const LIVE: &str = r"
local id = redis.call('HGET', KEYS[4], ARGV[1])
if not id then return false end
return {id, redis.call('HGET', KEYS[1], id), redis.call('HGET', KEYS[3], id)}
";

/// Stores key `ARGV[1]` (subject `ARGV[2]`, wrapped `ARGV[3]`, created `ARGV[4]`) unless
/// the subject has a live key; answers the subject's live key `{id, wrapped, created}`.
const CREATE: &str = r"
local live = redis.call('HGET', KEYS[4], ARGV[2])
if live then
  return {live, redis.call('HGET', KEYS[1], live), redis.call('HGET', KEYS[3], live)}
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return redis.error_reply('ORDO_CORRUPT key id ' .. ARGV[1] .. ' is taken by another subject')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
return {ARGV[1], ARGV[3], ARGV[4]}
";

/// The keys among the ids in ARGV that exist: `{id, subject, wrapped, created, ...}`.
const KEYS_BY_ID: &str = r"
local found = {}
for _, id in ipairs(ARGV) do
  local wrapped = redis.call('HGET', KEYS[1], id)
  if wrapped then
    found[#found + 1] = id
    found[#found + 1] = redis.call('HGET', KEYS[2], id)
    found[#found + 1] = wrapped
    found[#found + 1] = redis.call('HGET', KEYS[3], id)
  end
end
return found
";

/// Up to `ARGV[2]` keys from `ARGV[1]` (a ZRANGEBYLEX bound):
/// `{id, subject, wrapped, created, ...}`.
const PAGE: &str = r"
local ids = redis.call('ZRANGEBYLEX', KEYS[5], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local page = {}
for _, id in ipairs(ids) do
  page[#page + 1] = id
  page[#page + 1] = redis.call('HGET', KEYS[2], id)
  page[#page + 1] = redis.call('HGET', KEYS[1], id)
  page[#page + 1] = redis.call('HGET', KEYS[3], id)
end
return page
";

/// Destroys the key of subject `ARGV[1]` and records the erasure (at `ARGV[2]`, by
/// `ARGV[3]`): `{1, record}`; with no live key, `{0, the last record}` or `{0}`.
const ERASE: &str = r"
local id = redis.call('HGET', KEYS[4], ARGV[1])
if not id then
  local last = redis.call('HGET', KEYS[6], ARGV[1])
  if last then return {0, last} end
  return {0}
end
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], id)
local record = ARGV[2] .. ':1:' .. ARGV[3]
redis.call('HSET', KEYS[6], ARGV[1], record)
return {1, record}
";

/// Replaces key `ARGV[1]`'s wrapped bytes with `ARGV[3]` if they are `ARGV[2]`: 1 or 0.
const REWRAP: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
";

/// The data keys under one prefix of one Redis server or Redis Cluster.
///
/// What an erasure leaves behind: the script deletes the key from the dataset, and
/// nothing in Redis can read it back. But with persistence on, the destroyed key
/// remains in the append-only file (the command that stored it) until the AOF is
/// rewritten (`BGREWRITEAOF`, or Redis's automatic rewrite), and in every RDB snapshot
/// taken before the erasure until it is replaced; backups of either (and replicas'
/// files) keep it for as long as they are kept. That is why the master key must be
/// rotated to shred those copies: a wrapped key is nothing without the master key that
/// wrapped it.
pub struct RedisKeys {
    url: StoreUrl,
    link: Link,
    keys: [String; 6],
    live: Script,
    create: Script,
    by_id: Script,
    page: Script,
    erase: Script,
    rewrap: Script,
}

impl fmt::Debug for RedisKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeys")
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

impl RedisKeys {
    /// Connects to the key store at `url`, the URL of
    /// [`RedisEventStore::connect`](crate::RedisEventStore::connect) (`redis://` or
    /// `redis+cluster://`, `?prefix=` as there; `partitions=` is accepted and means
    /// nothing here). Writes nothing: the keys are made by the first key stored.
    pub async fn connect(url: &str) -> Result<RedisKeys, KeyStoreError> {
        let url = StoreUrl::parse(url)
            .map_err(|e| KeyStoreError::Unavailable(format!("bad Redis key store URL: {e}")))?;
        let link = Link::open(&url)
            .await
            .map_err(|e| failure(&format!("cannot connect to Redis at {url}"), e))?;
        Ok(RedisKeys {
            keys: key_names(&url.prefix),
            url,
            link,
            live: Script::new(LIVE),
            create: Script::new(CREATE),
            by_id: Script::new(KEYS_BY_ID),
            page: Script::new(PAGE),
            erase: Script::new(ERASE),
            rewrap: Script::new(REWRAP),
        })
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.url.prefix
    }

    /// Runs `script` over the store's keys with `args`, classifying a failure with `what`.
    async fn run(
        &self,
        script: &Script,
        args: &[&[u8]],
        what: &str,
    ) -> Result<Value, KeyStoreError> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut link = self.link.clone();
        match invocation.invoke_async(&mut link).await {
            // The first command after the server came back finds the old connection
            // broken (the connection manager reconnects for the next one). Every script
            // here can run twice: a create finds its own key, an erase its own record.
            Err(e) if e.is_io_error() || e.is_connection_dropped() => invocation
                .invoke_async(&mut link)
                .await
                .map_err(|e| failure(what, e)),
            other => other.map_err(|e| failure(what, e)),
        }
    }
}

/// A script's refusal of bad stored data is `Corrupt`; anything else Redis says (no
/// connection, a timeout, a cluster in failover, an error reply) is `Unavailable`.
fn failure(what: &str, e: RedisError) -> KeyStoreError {
    if e.code() == Some("ORDO_CORRUPT") {
        return KeyStoreError::Corrupt(e.detail().unwrap_or("corrupt key store").to_owned());
    }
    KeyStoreError::Unavailable(format!("{what}: {e}"))
}

fn corrupt(what: impl fmt::Display) -> KeyStoreError {
    KeyStoreError::Corrupt(what.to_string())
}

fn micros(t: OffsetDateTime) -> String {
    (t.unix_timestamp_nanos() / 1_000).to_string()
}

fn bytes_of(value: Value, what: &str) -> Result<Vec<u8>, KeyStoreError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(corrupt(format!("{what}: expected bytes, found {other:?}"))),
    }
}

fn text_of(value: Value, what: &str) -> Result<String, KeyStoreError> {
    String::from_utf8(bytes_of(value, what)?).map_err(|_| corrupt(format!("{what}: not UTF-8")))
}

fn id_of(value: Value) -> Result<Uuid, KeyStoreError> {
    let text = text_of(value, "key id")?;
    Uuid::parse_str(&text).map_err(|_| corrupt(format!("key id {text:?} is not a UUID")))
}

fn subject_of(text: &str) -> Result<Subject, KeyStoreError> {
    Subject::from_hex(text).ok_or_else(|| corrupt(format!("subject {text:?} is not 64 hex digits")))
}

fn time_of(text: &str, what: &str) -> Result<OffsetDateTime, KeyStoreError> {
    text.parse::<i64>()
        .ok()
        .and_then(|us| OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).ok())
        .ok_or_else(|| corrupt(format!("{what} {text:?} is not a time in microseconds")))
}

fn array_of(value: Value, what: &str) -> Result<Vec<Value>, KeyStoreError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(corrupt(format!(
            "{what}: expected an array, found {other:?}"
        ))),
    }
}

/// A key from the script's `id, wrapped, created` (the subject is the one asked about).
fn key_of_subject(subject: Subject, value: Value) -> Result<WrappedKey, KeyStoreError> {
    let mut items = array_of(value, "key")?.into_iter();
    let (Some(id), Some(wrapped), Some(created), None) =
        (items.next(), items.next(), items.next(), items.next())
    else {
        return Err(corrupt(format!("key of {subject}: a part is missing")));
    };
    Ok(WrappedKey {
        id: id_of(id)?,
        subject,
        wrapped: bytes_of(wrapped, "wrapped key")?,
        created_at: time_of(&text_of(created, "created_at")?, "created_at")?,
    })
}

/// Keys from the scripts' flat `id, subject, wrapped, created, ...`.
fn keys_of(value: Value) -> Result<Vec<WrappedKey>, KeyStoreError> {
    let items = array_of(value, "keys")?;
    if items.len() % 4 != 0 {
        return Err(corrupt("keys: a part is missing"));
    }
    let mut keys = Vec::with_capacity(items.len() / 4);
    let mut items = items.into_iter();
    while let (Some(id), Some(subject), Some(wrapped), Some(created)) =
        (items.next(), items.next(), items.next(), items.next())
    {
        keys.push(WrappedKey {
            id: id_of(id)?,
            subject: subject_of(&text_of(subject, "subject")?)?,
            wrapped: bytes_of(wrapped, "wrapped key")?,
            created_at: time_of(&text_of(created, "created_at")?, "created_at")?,
        });
    }
    Ok(keys)
}

/// An erasure record `<erased_at us>:<keys destroyed>:<erased_by>` (who may hold `:`).
fn erasure_of(subject: Subject, record: &str) -> Result<Erasure, KeyStoreError> {
    let bad = || corrupt(format!("erasure record of {subject}: {record:?}"));
    let mut parts = record.splitn(3, ':');
    let (Some(at), Some(count), Some(by)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    Ok(Erasure {
        subject,
        erased_at: time_of(at, "erased_at")?,
        erased_by: by.to_owned(),
        keys_destroyed: count.parse().map_err(|_| bad())?,
    })
}

#[async_trait]
impl KeyStore for RedisKeys {
    async fn live_key(&self, subject: &Subject) -> Result<Option<WrappedKey>, KeyStoreError> {
        let hex = subject.to_hex();
        match self
            .run(&self.live, &[hex.as_bytes()], "cannot read a live key")
            .await?
        {
            Value::Nil => Ok(None),
            value => key_of_subject(*subject, value).map(Some),
        }
    }

    async fn create_key(&self, key: WrappedKey) -> Result<WrappedKey, KeyStoreError> {
        let (id, hex, created) = (
            key.id.to_string(),
            key.subject.to_hex(),
            micros(key.created_at),
        );
        let value = self
            .run(
                &self.create,
                &[
                    id.as_bytes(),
                    hex.as_bytes(),
                    &key.wrapped,
                    created.as_bytes(),
                ],
                "cannot create a key",
            )
            .await?;
        key_of_subject(key.subject, value)
    }

    async fn keys(&self, ids: &[Uuid]) -> Result<Vec<WrappedKey>, KeyStoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let args: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
        keys_of(self.run(&self.by_id, &args, "cannot read keys").await?)
    }

    /// One script: the key deleted from every hash and the id set, and the record
    /// written (see [`RedisKeys`] for what persistence keeps).
    async fn erase(
        &self,
        subject: &Subject,
        at: OffsetDateTime,
        by: &str,
    ) -> Result<EraseOutcome, KeyStoreError> {
        let (hex, at) = (subject.to_hex(), micros(at));
        let value = self
            .run(
                &self.erase,
                &[hex.as_bytes(), at.as_bytes(), by.as_bytes()],
                "cannot erase",
            )
            .await?;
        let mut items = array_of(value, "erasure")?.into_iter();
        let destroyed = match items.next() {
            Some(Value::Int(n)) => n,
            other => return Err(corrupt(format!("erasure: {other:?}"))),
        };
        let record = items
            .next()
            .map(|r| text_of(r, "erasure record"))
            .transpose()?;
        Ok(match (destroyed, record) {
            (0, None) => EraseOutcome::Unknown,
            (0, Some(record)) => EraseOutcome::AlreadyErased(erasure_of(*subject, &record)?),
            (_, Some(record)) => EraseOutcome::Erased(erasure_of(*subject, &record)?),
            (_, None) => return Err(corrupt("erasure: no record")),
        })
    }

    async fn page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<WrappedKey>, KeyStoreError> {
        let from = match after {
            Some(id) => format!("({id}"),
            None => "-".to_owned(),
        };
        let limit = limit.to_string();
        keys_of(
            self.run(
                &self.page,
                &[from.as_bytes(), limit.as_bytes()],
                "cannot page keys",
            )
            .await?,
        )
    }

    async fn rewrap(&self, id: Uuid, old: &[u8], new: &[u8]) -> Result<bool, KeyStoreError> {
        let id = id.to_string();
        match self
            .run(
                &self.rewrap,
                &[id.as_bytes(), old, new],
                "cannot rewrap a key",
            )
            .await?
        {
            Value::Int(n) => Ok(n == 1),
            other => Err(corrupt(format!("rewrap: {other:?}"))),
        }
    }

    async fn ping(&self) -> Result<(), KeyStoreError> {
        self.link
            .query::<Value>(&redis::cmd("PING"))
            .await
            .map(drop)
            .map_err(|e| failure("ping", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::key_slot;

    #[test]
    fn every_key_of_the_key_store_is_in_one_slot_apart_from_the_event_stores() {
        let names = key_names("ordo");
        assert_eq!(names[0], "ordo:{ordo:keys}:wrapped");
        assert_eq!(names[5], "ordo:{ordo:keys}:erasures");
        let slot = key_slot(&names[0]);
        assert!(names.iter().all(|k| key_slot(k) == slot), "{names:?}");
        assert_eq!(
            redis::cluster_routing::Slot::for_key(&names[3]),
            redis::cluster_routing::Slot::new(slot).expect("in range"),
            "redis-rs routes the scripts to the same slot"
        );
    }

    #[test]
    fn an_erasure_record_keeps_who_asked_whole() {
        let subject = Subject::from_bytes([7; 32]);
        let at = OffsetDateTime::from_unix_timestamp(1_777_896_000).expect("time");
        let record = format!("{}:2:admin:ab12", micros(at));
        let erasure = erasure_of(subject, &record).expect("a record");
        assert_eq!(
            erasure,
            Erasure {
                subject,
                erased_at: at,
                erased_by: "admin:ab12".into(),
                keys_destroyed: 2,
            }
        );
        for bad in ["", "12", "x:1:cli", "12:-1:cli", "12:one:cli"] {
            assert!(
                matches!(erasure_of(subject, bad), Err(KeyStoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stored_parts_that_are_missing_or_malformed_are_corrupt() {
        let subject = Subject::from_bytes([1; 32]);
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let id = Uuid::now_v7().to_string();
        let good = Value::Array(vec![bulk(&id), bulk("wrapped"), bulk("0")]);
        assert_eq!(
            key_of_subject(subject, good).expect("a key").wrapped,
            b"wrapped"
        );
        for bad in [
            Value::Array(vec![bulk(&id), Value::Nil, bulk("0")]),
            Value::Array(vec![bulk(&id), bulk("w")]),
            Value::Array(vec![bulk("not-a-uuid"), bulk("w"), bulk("0")]),
            Value::Array(vec![bulk(&id), bulk("w"), bulk("soon")]),
            Value::Int(1),
        ] {
            assert!(
                matches!(key_of_subject(subject, bad), Err(KeyStoreError::Corrupt(_))),
                "accepted"
            );
        }
        let flat = Value::Array(vec![bulk(&id), bulk("nope"), bulk("w"), bulk("0")]);
        assert!(matches!(keys_of(flat), Err(KeyStoreError::Corrupt(_))));
    }
}
