//! Test servers for sessiond's own tests, in one place so that the store crates and
//! the server's tests start them the same way rather than each keeping a copy:
//!
//! - [`TestCa`]: a private certificate authority made in the test (rcgen), which issues
//!   server certificates for the names a test chooses;
//! - [`Tmpfs`]: a small file system of its own (a tmpfs, mounted as root) for a test
//!   whose disk must fill up;
//! - [`TlsRedis`]: a `redis-server` of its own, TLS only, on a free loopback port;
//! - [`RedisCluster`]: a Redis Cluster of its own (three primaries or more), with a
//!   way to move a slot between them;
//! - [`TlsPostgres`]: a private PostgreSQL cluster (`initdb`, `ssl = on`, plain TCP
//!   refused by `pg_hba.conf`) on a free loopback port.
//!
//! Each server lives in a temporary directory and is stopped and removed when its
//! handle is dropped, also when the test panics. Starting one answers `Err(why)` when
//! this machine cannot run it (no `redis-server`, no PostgreSQL binaries): the caller
//! then skips with `sessiond_core::skip::skip`, which fails under `CI=true`.
//!
//! Not published: a dev-dependency of the store crates, `sessiond-axum` and `sessiond`
//! only.

mod ca;
#[cfg(unix)]
mod os_unix;
mod postgres;
mod redis;
mod redis_cluster;
mod scratch;
#[cfg(unix)]
mod tmpfs;

pub use ca::{Issued, TestCa};
pub use postgres::TlsPostgres;
pub use redis::TlsRedis;
pub use redis_cluster::RedisCluster;
pub use scratch::{free_port, Scratch};
#[cfg(unix)]
pub use tmpfs::Tmpfs;
