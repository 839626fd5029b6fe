//! The multiplexed command connection: one server or a cluster, behind one type.
//!
//! Every command of the store goes through a [`Link`], except the blocking XREADs of
//! [`wait_for_events`](crate::RedisEventStore): a blocked command holds its connection
//! until it returns, so those use dedicated connections (see `wait.rs`).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::url::StoreUrl;

/// How long one command may take before the store reports the backend unavailable.
/// Generous: an append under contention on a small machine must not time out (a timed
/// out append leaves the caller not knowing whether it was stored).
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    pub(crate) async fn open(url: &StoreUrl) -> RedisResult<Link> {
        if url.cluster {
            let seeds: Vec<String> = url.nodes.iter().map(|n| url.node_url(n)).collect();
            let client = ClusterClient::builder(seeds)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()?;
            Ok(Link::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(url.node_url(&url.nodes[0]))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2);
            Ok(Link::Single(
                client.get_connection_manager_with_config(config).await?,
            ))
        }
    }

    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let mut link = self.clone();
        cmd.query_async(&mut link).await
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::Single(_) => "Link::Single",
            Link::Cluster(_) => "Link::Cluster",
        })
    }
}
