//! [`Conn`]: the store's connection, to one Redis server (or a proxy in front of a
//! cluster) or to a Redis Cluster, behind one type, so every other module sends its
//! commands and scripts the same way whatever the deployment.
//!
//! What differs on a cluster, and is decided here only:
//!
//! - a command or script goes to the node that holds its keys' slot (the cluster client
//!   follows `MOVED` and `ASK` and waits out `TRYAGAIN` while a slot moves); every
//!   script's keys share one app's hash tag, so each runs on one node;
//! - the global entries (the apps set, the token and id indexes) live in slots of their
//!   own, and so do different apps' keys: commands that touch several
//!   ([`Conn::each`], [`Conn::query_all`]) go one by one, or side by side, rather than
//!   as one pipeline, which a cluster refuses across slots;
//! - scanning for keys ([`Conn::scan_all`]) asks every primary.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A connection to a single server or to a cluster. Cheap to clone (clones share it).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One endpoint, reconnected in the background.
    Single(ConnectionManager),
    /// A Redis Cluster, routed by slot.
    Cluster(Arc<LazyCluster>),
}

/// A cluster connection made at its first use (the cluster client connects eagerly; a
/// store may be built while the cluster is down), and again after a failed attempt.
pub(crate) struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    /// A connection to the cluster of `client`, made when first needed.
    pub fn new(client: ClusterClient) -> Arc<LazyCluster> {
        Arc::new(LazyCluster {
            client,
            conn: tokio::sync::OnceCell::new(),
        })
    }

    /// The connection, connecting now if none was made yet.
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(lazy) => Box::pin(async move {
                let mut c = lazy.get().await?;
                c.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(lazy) => Box::pin(async move {
                let mut c = lazy.get().await?;
                c.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

impl Conn {
    /// Runs `cmds`, in order, ignoring their answers: one pipeline on a single server,
    /// one command after the other on a cluster (their keys may lie in different
    /// slots). Not atomic either way; the first failure stops the rest.
    pub async fn each(&mut self, cmds: Vec<Cmd>) -> RedisResult<()> {
        match self {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd).ignore();
                }
                pipe.query_async(c).await
            }
            Conn::Cluster(lazy) => {
                let mut c = lazy.get().await?;
                for cmd in cmds {
                    let () = cmd.query_async(&mut c).await?;
                }
                Ok(())
            }
        }
    }

    /// The answers of `cmds`, in order: one pipeline on a single server, the commands
    /// side by side on a cluster (their keys may lie in different slots).
    pub async fn query_all<T: redis::FromRedisValue>(
        &mut self,
        cmds: Vec<Cmd>,
    ) -> RedisResult<Vec<T>> {
        match self {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(c).await
            }
            Conn::Cluster(lazy) => {
                let c = lazy.get().await?;
                futures_util::future::try_join_all(cmds.into_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<T>(&mut c).await }
                }))
                .await
            }
        }
    }

    /// Every key matching `pattern`, from every primary on a cluster.
    pub async fn scan_all(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        let nodes = match self {
            Conn::Single(_) => vec![None],
            Conn::Cluster(lazy) => {
                let text: String = redis::from_redis_value(
                    lazy.get()
                        .await?
                        .route_command(
                            redis::cmd("CLUSTER").arg("NODES").clone(),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                        )
                        .await?,
                )?;
                primaries(&text).into_iter().map(Some).collect()
            }
        };
        let mut found = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(500);
                let (next, keys): (u64, Vec<String>) = match (&mut *self, &node) {
                    (Conn::Cluster(lazy), Some((host, port))) => redis::from_redis_value(
                        lazy.get()
                            .await?
                            .route_command(
                                scan,
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                    host: host.clone(),
                                    port: *port,
                                }),
                            )
                            .await?,
                    )?,
                    (conn, _) => scan.query_async(conn).await?,
                };
                found.extend(keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(found)
    }
}

/// The primaries' addresses in a `CLUSTER NODES` answer: lines
/// `<id> <host>:<port>@<bus port>[,<hostname>] <flags> ...` whose flags name `master`
/// and not `fail`.
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((
                host.trim_matches(['[', ']']).to_string(),
                port.parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
292f 127.0.0.1:30003@40003,host-3 master - 0 1 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
aaaa [::1]:30005@40005 master,fail - 0 0 5 connected
";
        assert_eq!(
            primaries(text),
            [
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30003),
                ("127.0.0.1".to_string(), 30001)
            ]
        );
    }
}
