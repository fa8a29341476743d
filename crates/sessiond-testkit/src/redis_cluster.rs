//! A Redis Cluster of the test's own: N primaries (`redis-server --cluster-enabled
//! yes`, no replicas, no persistence) on free loopback ports, joined by
//! `redis-cli --cluster create`; stopped and removed on drop. [`RedisCluster::move_slot`]
//! moves one slot between primaries the way an operator's resharding does
//! (`CLUSTER SETSLOT ... IMPORTING/MIGRATING`, `MIGRATE` in batches, `SETSLOT ... NODE`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::{free_port, Scratch};

/// How long the cluster may take to start and agree before the start is abandoned.
const START_LIMIT: Duration = Duration::from_secs(30);

/// One primary of the cluster.
struct Node {
    child: Child,
    port: u16,
}

/// A running cluster for one test. Dropping it kills every node and removes their
/// directory.
pub struct RedisCluster {
    nodes: Vec<Node>,
    // Dropped after the children are reaped (`Drop::drop` runs first).
    dir: Scratch,
}

impl RedisCluster {
    /// Starts `primaries` nodes (at least 3, as `redis-cli --cluster create` needs) and
    /// joins them, each holding an equal share of the slots. `Err` says why this
    /// machine cannot run one (no `redis-server` or `redis-cli`, or it did not form).
    pub fn start(primaries: usize) -> Result<RedisCluster, String> {
        let dir = Scratch::new("redis-cluster");
        let mut nodes = Vec::new();
        for i in 0..primaries {
            nodes.push(start_node(dir.path(), i)?);
        }
        let cluster = RedisCluster { nodes, dir };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli ({e})"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let started = Instant::now();
        while !cluster.nodes.iter().all(|n| {
            cli(n.port, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))
        }) {
            if started.elapsed() > START_LIMIT {
                return Err(format!("the cluster did not agree within {START_LIMIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// The primaries' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis+cluster://127.0.0.1:<port>,...`, every primary a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The slot of `key` (its hash tag's, if it has one).
    pub fn slot_of(&self, key: &str) -> Result<u16, String> {
        cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .map_err(|e| format!("CLUSTER KEYSLOT: {e}"))
    }

    /// The port of the primary that serves `slot`.
    pub fn owner(&self, slot: u16) -> Result<u16, String> {
        let text = cli(self.nodes[0].port, &["CLUSTER", "NODES"])?;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") {
                continue;
            }
            let port = port_of(f[1])?;
            for range in &f[8..] {
                if range.starts_with('[') {
                    continue;
                }
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                let (lo, hi): (u16, u16) = (
                    lo.parse().map_err(|_| format!("bad range {range}"))?,
                    hi.parse().map_err(|_| format!("bad range {range}"))?,
                );
                if (lo..=hi).contains(&slot) {
                    return Ok(port);
                }
            }
        }
        Err(format!("no primary serves slot {slot}"))
    }

    /// Moves `slot` to the primary on port `to`, with its keys, `batch` keys per
    /// `MIGRATE`, pausing `pause` between batches (so that traffic meets the slot half
    /// moved), then tells every primary the new owner.
    pub fn move_slot(
        &self,
        slot: u16,
        to: u16,
        batch: usize,
        pause: Duration,
    ) -> Result<(), String> {
        let from = self.owner(slot)?;
        if from == to {
            return Ok(());
        }
        let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).map(|s| s.trim().to_string());
        let (from_id, to_id) = (id(from)?, id(to)?);
        let slot_s = slot.to_string();
        expect_ok(cli(
            to,
            &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id],
        )?)?;
        expect_ok(cli(
            from,
            &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id],
        )?)?;
        loop {
            let keys = cli(
                from,
                &["CLUSTER", "GETKEYSINSLOT", &slot_s, &batch.to_string()],
            )?;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let to_s = to.to_string();
            args.push(&to_s);
            args.extend(["", "0", "5000", "KEYS"]);
            args.extend(keys.iter().copied());
            let out = cli(from, &args)?;
            if !(out.trim() == "OK" || out.trim() == "NOKEY") {
                return Err(format!("MIGRATE answered {out}"));
            }
            std::thread::sleep(pause);
        }
        let to_s = to_id.clone();
        for n in &self.nodes {
            expect_ok(cli(
                n.port,
                &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_s],
            )?)?;
        }
        Ok(())
    }

    /// The cluster's directory (each node's log is `node-<i>.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

fn start_node(dir: &Path, i: usize) -> Result<Node, String> {
    let mut last = String::new();
    // A port found free may be taken before the server binds it: try a few.
    for _ in 0..5 {
        let (port, bus) = (free_port(), free_port());
        let node_dir = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "5000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .arg("--logfile")
            .arg(dir.join(format!("node-{i}.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server ({e})"))?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!("redis-server exited ({status})");
                break;
            }
            if cli(port, &["PING"]).is_ok_and(|p| p.trim() == "PONG") {
                return Ok(Node { child, port });
            }
            if started.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                last = format!("nothing answered on port {port}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(format!("a cluster node did not start: {last}"))
}

/// Runs `redis-cli -p <port> <args>`; its output, or why it failed.
fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn expect_ok(answer: String) -> Result<(), String> {
    if answer.trim() == "OK" {
        Ok(())
    } else {
        Err(format!("expected OK, got {answer}"))
    }
}

/// The port of a `CLUSTER NODES` address (`host:port@bus[,hostname]`).
fn port_of(addr: &str) -> Result<u16, String> {
    addr.split(['@', ','])
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| format!("bad node address {addr}"))
}
