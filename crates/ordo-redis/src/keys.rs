//! Where things live in Redis: one hash tag per partition, so that everything one append
//! touches (the aggregate stream, the partition log and its sequence counter) is in one
//! cluster slot and one Lua script can write it atomically.
//!
//! ```text
//! <prefix>:{<prefix>:p<N>}:stream:<stream id>   aggregate stream, entry ids <version>-0
//! <prefix>:{<prefix>:p<N>}:log                  partition log, entry ids <seq>-0
//! <prefix>:{<prefix>:p<N>}:seq                  last seq handed out in partition N
//! <prefix>:partitions                           the partition count, fixed at first use
//!
//! while a migration rewrites payloads in place (see `rewrite.rs`):
//! <prefix>:{<prefix>:p<N>}:rewrite:log          the partition log's copy being built
//! <prefix>:{<prefix>:p<N>}:rewrite:stream:<id>  an aggregate stream's copy being built
//! <prefix>:{<prefix>:p<N>}:rewrite:generation   rewrites committed in partition N
//! ```
//!
//! N is [`partition_of`]`(stream id, partitions)`. The hash tag is the text between the
//! first `{` and the next `}`; a prefix may not contain braces, so a stream id may.

use ordo_es::partition_of;

/// The hash tag shared by every key of one partition (`<prefix>:p<N>`, without braces).
fn tag(prefix: &str, partition: u32) -> String {
    format!("{prefix}:p{partition}")
}

/// The key of an aggregate stream: `<prefix>:{<prefix>:p<N>}:stream:<stream id>`, with N
/// the stream's partition among `partitions`.
pub fn stream_key(prefix: &str, partitions: u32, stream_id: &str) -> String {
    let partition = partition_of(stream_id, partitions);
    format!("{prefix}:{{{}}}:stream:{stream_id}", tag(prefix, partition))
}

/// The key of one partition's log: `<prefix>:{<prefix>:p<N>}:log`.
pub fn log_key(prefix: &str, partition: u32) -> String {
    format!("{prefix}:{{{}}}:log", tag(prefix, partition))
}

/// The key of one partition's sequence counter (the seq of its newest log entry).
pub fn seq_key(prefix: &str, partition: u32) -> String {
    format!("{prefix}:{{{}}}:seq", tag(prefix, partition))
}

/// The copy a rewrite builds of one partition's log, in its slot.
pub(crate) fn rewrite_log_key(prefix: &str, partition: u32) -> String {
    format!("{prefix}:{{{}}}:rewrite:log", tag(prefix, partition))
}

/// The copy a rewrite builds of an aggregate stream, in its slot.
pub(crate) fn rewrite_stream_key(prefix: &str, partitions: u32, stream_id: &str) -> String {
    let partition = partition_of(stream_id, partitions);
    format!(
        "{prefix}:{{{}}}:rewrite:stream:{stream_id}",
        tag(prefix, partition)
    )
}

/// How many rewrites were committed in a partition: a rewrite whose copies were made
/// before another one committed must not replace the other's work.
pub(crate) fn rewrite_generation_key(prefix: &str, partition: u32) -> String {
    format!("{prefix}:{{{}}}:rewrite:generation", tag(prefix, partition))
}

/// The key holding the partition count chosen when the store was first used.
pub fn partitions_key(prefix: &str) -> String {
    format!("{prefix}:partitions")
}

/// A prefix is part of every key and of every hash tag: keep it to characters that
/// cannot break either.
pub(crate) fn is_valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (or of the whole key
/// when it has none), modulo 16384. The same rule as the server's `CLUSTER KEYSLOT`.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn crc16_matches_the_reference_check_value() {
        // The CRC-16/XMODEM check value, as in the Redis Cluster specification.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
    }

    #[test]
    fn key_slot_follows_the_hash_tag_rules() {
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        for key in ["a", "ordo:{ordo:p3}:log", "x{y}z", "{"] {
            assert_eq!(
                Slot::for_key(key),
                Slot::new(key_slot(key)).expect("in range"),
                "{key}"
            );
        }
    }

    #[test]
    fn a_stream_and_its_partition_log_and_counter_share_a_slot() {
        for id in ["order-1", "order-{weird}", "ünï", "", "a}b{c"] {
            for partitions in [1, 3, 16] {
                let p = partition_of(id, partitions);
                let stream = stream_key("ordo", partitions, id);
                assert_eq!(key_slot(&stream), key_slot(&log_key("ordo", p)), "{stream}");
                assert_eq!(key_slot(&stream), key_slot(&seq_key("ordo", p)), "{stream}");
                for copy in [
                    rewrite_stream_key("ordo", partitions, id),
                    rewrite_log_key("ordo", p),
                    rewrite_generation_key("ordo", p),
                ] {
                    assert_eq!(key_slot(&stream), key_slot(&copy), "{copy}");
                    assert_ne!(copy, stream);
                }
                assert_eq!(
                    Slot::for_key(&stream),
                    Slot::for_key(log_key("ordo", p)),
                    "redis-rs disagrees for {stream}"
                );
            }
        }
    }

    #[test]
    fn partitions_spread_over_slots() {
        let slots: std::collections::HashSet<u16> =
            (0..16).map(|p| key_slot(&log_key("ordo", p))).collect();
        assert_eq!(slots.len(), 16);
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let p = partition_of("order-7", 16);
        assert_eq!(
            stream_key("ordo", 16, "order-7"),
            format!("ordo:{{ordo:p{p}}}:stream:order-7")
        );
        assert_eq!(log_key("ordo", 5), "ordo:{ordo:p5}:log");
        assert_eq!(partitions_key("t-1"), "t-1:partitions");
    }

    #[test]
    fn the_readme_example_is_right() {
        // README: "order-123" with 16 partitions is in partition 10.
        assert_eq!(partition_of("order-123", 16), 10);
        assert_eq!(
            stream_key("ordo", 16, "order-123"),
            "ordo:{ordo:p10}:stream:order-123"
        );
    }

    #[test]
    fn prefixes_that_could_break_hash_tags_are_rejected() {
        assert!(is_valid_prefix("ordo"));
        assert!(is_valid_prefix("t-0190a1b2-c3d4"));
        for bad in ["", "a{b", "a}b", "a:b", "a b", &"x".repeat(65)] {
            assert!(!is_valid_prefix(bad), "{bad:?}");
        }
    }
}
