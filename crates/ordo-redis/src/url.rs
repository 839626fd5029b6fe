//! The store's connection string.
//!
//! ```text
//! redis://[USER:PASSWORD@]HOST:PORT[/DB][?prefix=NAME&partitions=N]
//! redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?prefix=NAME&partitions=N]
//! ```

use std::fmt;

use crate::keys::is_valid_prefix;

pub(crate) const DEFAULT_PREFIX: &str = "ordo";
pub(crate) const DEFAULT_PARTITIONS: u32 = 16;
/// More partitions than slots in a three-node cluster's worth of sense; a guard against
/// typos, not a design limit.
const MAX_PARTITIONS: u32 = 1024;

/// A parsed connection string. The password never appears in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoreUrl {
    pub cluster: bool,
    /// `USER:PASSWORD@` or empty.
    userinfo: String,
    /// `HOST:PORT`, one for a single server, one or more seeds for a cluster.
    pub nodes: Vec<String>,
    /// Database number (single server only).
    db: Option<u32>,
    pub prefix: String,
    pub partitions: u32,
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (cluster, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else {
            return Err("expected redis://HOST:PORT[/DB] or \
                        redis+cluster://HOST:PORT[,HOST:PORT...]"
                .into());
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), authority),
        };

        let nodes: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        for node in &nodes {
            let valid = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!("expected HOST:PORT, found {node:?}"));
            }
        }
        if !cluster && nodes.len() != 1 {
            return Err("redis:// takes one HOST:PORT; use redis+cluster:// for a cluster".into());
        }

        let db = match path {
            "" => None,
            db => Some(
                db.parse::<u32>()
                    .map_err(|_| format!("expected a database number after '/', found {db:?}"))?,
            ),
        };
        if cluster && db.is_some_and(|db| db != 0) {
            return Err("Redis Cluster has only database 0".into());
        }

        let mut prefix = DEFAULT_PREFIX.to_owned();
        let mut partitions = DEFAULT_PARTITIONS;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", value)) => {
                    if !is_valid_prefix(value) {
                        return Err(format!(
                            "prefix must be 1 to 64 of A-Z a-z 0-9 - _ . (found {value:?})"
                        ));
                    }
                    value.clone_into(&mut prefix);
                }
                Some(("partitions", value)) => {
                    partitions = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
                        .ok_or_else(|| {
                            format!("partitions must be 1 to {MAX_PARTITIONS} (found {value:?})")
                        })?;
                }
                _ => {
                    return Err(format!(
                        "unknown query parameter {pair:?} (known: prefix, partitions)"
                    ));
                }
            }
        }

        Ok(Self {
            cluster,
            userinfo,
            nodes,
            db: if cluster { None } else { db },
            prefix,
            partitions,
        })
    }

    /// The `redis://` URL of one node, with credentials and database, for redis-rs.
    pub fn node_url(&self, node: &str) -> String {
        match self.db {
            Some(db) => format!("redis://{}{node}/{db}", self.userinfo),
            None => format!("redis://{}{node}", self.userinfo),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.cluster {
            "redis+cluster"
        } else {
            "redis"
        };
        let user = match self.userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@"),
            None if self.userinfo.is_empty() => String::new(),
            None => "***@".to_owned(),
        };
        write!(f, "{scheme}://{user}{}", self.nodes.join(","))?;
        if let Some(db) = self.db {
            write!(f, "/{db}")?;
        }
        write!(f, "?prefix={}&partitions={}", self.prefix, self.partitions)
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_server_url_with_defaults() {
        let url = StoreUrl::parse("redis://127.0.0.1:6379").expect("valid");
        assert!(!url.cluster);
        assert_eq!(url.nodes, vec!["127.0.0.1:6379"]);
        assert_eq!(url.prefix, "ordo");
        assert_eq!(url.partitions, 16);
        assert_eq!(url.node_url("127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_single_server_url_with_database_prefix_and_partitions() {
        let url = StoreUrl::parse("redis://h:1/3?prefix=t-1&partitions=4").expect("valid");
        assert_eq!(url.prefix, "t-1");
        assert_eq!(url.partitions, 4);
        assert_eq!(url.node_url("h:1"), "redis://h:1/3");
    }

    #[test]
    fn a_cluster_url_lists_its_seeds() {
        let url = StoreUrl::parse("redis+cluster://a:7001,b:7002,c:7003?prefix=x").expect("valid");
        assert!(url.cluster);
        assert_eq!(url.nodes, vec!["a:7001", "b:7002", "c:7003"]);
        assert_eq!(url.prefix, "x");
    }

    #[test]
    fn passwords_never_print() {
        let url = StoreUrl::parse("redis://user:s3cret@h:1").expect("valid");
        assert_eq!(url.node_url("h:1"), "redis://user:s3cret@h:1");
        assert!(!url.to_string().contains("s3cret"));
        assert!(!format!("{url:?}").contains("s3cret"));
        let url = StoreUrl::parse("redis://s3cret@h:1").expect("valid");
        assert!(!url.to_string().contains("s3cret"));
    }

    #[test]
    fn bad_urls_are_rejected_with_a_reason() {
        for bad in [
            "http://h:1",
            "redis://h",
            "redis://h:x",
            "redis://a:1,b:2",
            "redis://h:1/x",
            "redis+cluster://h:1/2",
            "redis://h:1?prefix=a{b}",
            "redis://h:1?prefix=",
            "redis://h:1?partitions=0",
            "redis://h:1?partitions=many",
            "redis://h:1?protocol=3",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
