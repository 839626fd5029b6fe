//! The start-up durability check: does the server keep what it acknowledges?
//!
//! Reads `CONFIG GET append*` (on every master of a cluster) and explains what an
//! acknowledged append can lose under the settings found. [`RedisEventStore::connect`]
//! logs each finding with `tracing::warn!`.
//!
//! [`RedisEventStore::connect`]: crate::RedisEventStore::connect

use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{RedisError, Value};

use crate::link::Link;

/// The findings for every node: one sentence each, naming the setting to change.
pub(crate) async fn warnings(link: &Link, single_node: &str) -> Vec<String> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("append*");
    let replies: Vec<(String, Result<Value, String>)> = match link {
        Link::Single(_) => vec![(
            single_node.to_owned(),
            link.query::<Value>(&cmd).await.map_err(describe),
        )],
        Link::Cluster(conn) => {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            match conn.clone().route_command(cmd, routing).await {
                Ok(Value::Map(per_node)) => per_node
                    .into_iter()
                    .map(|(node, reply)| {
                        let node = text(&node).unwrap_or_else(|| "a cluster master".into());
                        let reply = match reply {
                            Value::ServerError(e) => Err(format!("{e:?}")),
                            other => Ok(other),
                        };
                        (node, reply)
                    })
                    .collect(),
                Ok(other) => vec![(
                    "the cluster".into(),
                    Err(format!("unexpected reply {other:?}")),
                )],
                Err(e) => vec![("the cluster".into(), Err(describe(e)))],
            }
        }
    };
    let mut findings = Vec::new();
    for (node, reply) in replies {
        match reply {
            Ok(value) => findings.extend(assess(&node, &settings(&value))),
            Err(error) => findings.push(format!(
                "Redis {node}: could not check durability settings (CONFIG GET failed: \
                 {error}); make sure it runs with `appendonly yes` and `appendfsync always`, \
                 or acknowledged events may be lost"
            )),
        }
    }
    findings
}

/// What the settings of one node risk.
pub(crate) fn assess(node: &str, settings: &[(String, String)]) -> Vec<String> {
    let get = |name: &str| {
        settings
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let (Some(appendonly), Some(appendfsync)) = (get("appendonly"), get("appendfsync")) else {
        return vec![format!(
            "Redis {node}: CONFIG GET did not report appendonly/appendfsync; could not check \
             durability: make sure it runs with `appendonly yes` and `appendfsync always`"
        )];
    };
    if !appendonly.eq_ignore_ascii_case("yes") {
        return vec![format!(
            "Redis {node}: appendonly is {appendonly}: acknowledged events live only in memory \
             (and in the last RDB snapshot, if any), so a restart or crash loses them; set \
             `appendonly yes` and `appendfsync always`"
        )];
    }
    match appendfsync.to_ascii_lowercase().as_str() {
        "always" => Vec::new(),
        "everysec" => vec![format!(
            "Redis {node}: appendfsync is everysec: about the last second of acknowledged \
             events can be lost on a crash or power loss; set `appendfsync always`"
        )],
        other => vec![format!(
            "Redis {node}: appendfsync is {other}: the operating system decides when the AOF \
             reaches the disk (often 30 s), so a crash or power loss can lose acknowledged \
             events; set `appendfsync always`"
        )],
    }
}

/// `CONFIG GET` replies with a flat array of name, value (RESP2) or a map (RESP3).
pub(crate) fn settings(value: &Value) -> Vec<(String, String)> {
    match value {
        Value::Array(flat) => flat
            .chunks_exact(2)
            .filter_map(|pair| Some((text(&pair[0])?, text(&pair[1])?)))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// A reply's text, whichever of Redis's string types it came as.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn describe(error: RedisError) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(appendonly: &str, appendfsync: &str) -> Vec<(String, String)> {
        vec![
            ("appendonly".into(), appendonly.into()),
            ("appendfsync".into(), appendfsync.into()),
        ]
    }

    #[test]
    fn aof_off_is_a_warning_naming_appendonly() {
        let found = assess("n", &pairs("no", "everysec"));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("appendonly yes"), "{found:?}");
    }

    #[test]
    fn everysec_and_no_are_warnings_naming_appendfsync() {
        for fsync in ["everysec", "no"] {
            let found = assess("n", &pairs("yes", fsync));
            assert_eq!(found.len(), 1);
            assert!(found[0].contains("appendfsync always"), "{found:?}");
        }
    }

    #[test]
    fn aof_with_fsync_always_is_fine() {
        assert!(assess("n", &pairs("yes", "always")).is_empty());
    }

    #[test]
    fn missing_settings_cannot_be_checked() {
        let found = assess("n", &[]);
        assert!(found[0].contains("could not check"), "{found:?}");
    }

    #[test]
    fn both_reply_shapes_are_read() {
        let flat = Value::Array(vec![
            Value::BulkString(b"appendonly".to_vec()),
            Value::BulkString(b"yes".to_vec()),
        ]);
        let map = Value::Map(vec![(
            Value::BulkString(b"appendonly".to_vec()),
            Value::BulkString(b"yes".to_vec()),
        )]);
        let expected = vec![("appendonly".to_owned(), "yes".to_owned())];
        assert_eq!(settings(&flat), expected);
        assert_eq!(settings(&map), expected);
    }
}
