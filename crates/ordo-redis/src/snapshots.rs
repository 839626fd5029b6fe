//! Snapshots beside the events: one hash per partition, in the partition's slot.
//!
//! ```text
//! <prefix>:{<prefix>:p<N>}:snapshots           stream id -> snapshot JSON
//! <prefix>:{<prefix>:p<N>}:snapshot-versions   stream id -> its version
//! ```
//!
//! A small script keeps only the newest snapshot of a stream; snapshots are a cache, so a
//! lost one only means folding more events.

use async_trait::async_trait;
use redis::Script;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo_es::{Snapshot, SnapshotStore, StoreError, StreamId, partition_of};

use crate::RedisEventStore;

fn tag(prefix: &str, partition: u32) -> String {
    format!("{prefix}:{{{prefix}:p{partition}}}")
}

/// The hash of one partition's snapshots.
pub fn snapshots_key(prefix: &str, partition: u32) -> String {
    format!("{}:snapshots", tag(prefix, partition))
}

fn versions_key(prefix: &str, partition: u32) -> String {
    format!("{}:snapshot-versions", tag(prefix, partition))
}

const SAVE: &str = r"
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
";

fn encode(snapshot: &Snapshot) -> Result<String, StoreError> {
    let taken_at = snapshot
        .taken_at
        .format(&Rfc3339)
        .map_err(|e| StoreError::Invalid(format!("snapshot time: {e}")))?;
    Ok(json!({
        "aggregateType": snapshot.aggregate_type,
        "version": snapshot.version,
        "schemaVersion": snapshot.schema_version,
        "takenAt": taken_at,
        "state": snapshot.state,
    })
    .to_string())
}

fn decode(stream: &StreamId, text: &str) -> Result<Snapshot, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("snapshot of {stream}: {what}"));
    let value: Value = serde_json::from_str(text).map_err(|_| corrupt("not JSON"))?;
    Ok(Snapshot {
        stream_id: stream.clone(),
        aggregate_type: value["aggregateType"]
            .as_str()
            .ok_or_else(|| corrupt("aggregateType"))?
            .to_string(),
        version: value["version"]
            .as_u64()
            .ok_or_else(|| corrupt("version"))?,
        schema_version: value["schemaVersion"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| corrupt("schemaVersion"))?,
        taken_at: OffsetDateTime::parse(
            value["takenAt"]
                .as_str()
                .ok_or_else(|| corrupt("takenAt"))?,
            &Rfc3339,
        )
        .map_err(|_| corrupt("takenAt"))?,
        state: value["state"].clone(),
    })
}

#[async_trait]
impl SnapshotStore for RedisEventStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let partition = partition_of(stream.as_str(), self.partitions_count());
        let text: Option<String> = self
            .send(
                redis::cmd("HGET")
                    .arg(snapshots_key(self.prefix(), partition))
                    .arg(stream.as_str()),
                || format!("cannot read the snapshot of {stream}"),
            )
            .await?;
        text.map(|t| decode(stream, &t)).transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let partition = partition_of(snapshot.stream_id.as_str(), self.partitions_count());
        let script = Script::new(SAVE);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(snapshots_key(self.prefix(), partition))
            .key(versions_key(self.prefix(), partition))
            .arg(snapshot.stream_id.as_str())
            .arg(snapshot.version)
            .arg(encode(&snapshot)?);
        let _: i64 = self
            .invoke(&invocation, || {
                format!("cannot save the snapshot of {}", snapshot.stream_id)
            })
            .await?;
        Ok(())
    }

    async fn delete_snapshots(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for partition in 0..self.partitions_count() {
            let key = snapshots_key(self.prefix(), partition);
            let n: u64 = self
                .send(redis::cmd("HLEN").arg(&key), || {
                    "cannot count snapshots".into()
                })
                .await?;
            let _: u64 = self
                .send(
                    redis::cmd("DEL")
                        .arg(&key)
                        .arg(versions_key(self.prefix(), partition)),
                    || "cannot delete snapshots".into(),
                )
                .await?;
            deleted += n;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_share_their_partition_slot() {
        use crate::keys::{key_slot, log_key};
        assert_eq!(
            key_slot(&snapshots_key("ordo", 3)),
            key_slot(&log_key("ordo", 3))
        );
        assert_eq!(
            key_slot(&versions_key("ordo", 3)),
            key_slot(&log_key("ordo", 3))
        );
    }
}
