//! The PostgreSQL session store of sessiond: sessions shared by any number of nodes,
//! each operation one statement or one transaction, admission exact across nodes, and
//! events between nodes over `LISTEN`/`NOTIFY`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sessiond_core::{Manager, OpenRequest, Policy};
//! use sessiond_postgres::{PostgresOptions, PostgresStore};
//!
//! # async fn run() -> Result<(), sessiond_core::Error> {
//! let store = PostgresStore::connect(
//!     "postgres://postgres@127.0.0.1:5432/test",
//!     PostgresOptions::default(),
//! )
//! .await?;
//! let manager = Arc::new(Manager::new(Arc::new(store)));
//! manager.set_policy("shop", Policy { seats: Some(10), ..Default::default() })?;
//! manager.start_relay(); // closes made on other nodes reach this node's subscribers
//! let opened = manager.open("shop", OpenRequest::default()).await?;
//! # let _ = opened; Ok(()) }
//! ```
//!
//! # Schema
//!
//! Everything lives in one schema ([`PostgresOptions::schema`], default `sessiond`),
//! created on connect by versioned migrations (`<schema>.schema_migrations`). They run
//! inside one transaction holding `pg_advisory_xact_lock` keyed by the schema name, so
//! nodes starting together apply each migration exactly once.
//!
//! - `sessions`: one row per session, open or closed (until its retention ends).
//!   `id uuid` primary key; `token_hash bytea` unique (the first 128 bits of the token's
//!   SHA-256: the token itself is never stored); `app`; `user_name` (`user` is a
//!   reserved word); `open`; `counts_seat`; `deadline`, `created_at`,
//!   `last_activity_at` (`bigint` milliseconds since the Unix epoch, exactly the core's
//!   `Timestamp`; read them with `to_timestamp(created_at / 1000.0)`); `version`; and
//!   `body json`, the whole session in the core's serde form. `body` is the truth; the
//!   other columns are copies of what queries filter, sort and lock on, rewritten from
//!   it at every write. `json` rather than `jsonb` keeps the storage's key order as
//!   clients wrote it.
//! - Indexes: `token_hash` (unique; every resolve), `(app, open)` (admission counts,
//!   close-all, lists), `(app, user_name)` (per-user limits and lists), and
//!   `(open, deadline)`, which expiry reads from its low end: the cost of a sweep grows
//!   with what is due, not with what is stored.
//! - `apps`: one row per app, created on first use; it holds nothing but the lock
//!   that serialises the app's admissions.
//!
//! # Atomicity
//!
//! The rules stay in the core: the store reads inside a transaction, with row locks,
//! runs [`Session::step`](sessiond_core::Session::step) or
//! [`decide`](sessiond_core::admission::decide) in Rust, writes, and commits. At
//! `READ COMMITTED`, each statement after a lock sees every transaction that held the
//! lock before.
//!
//! - **Lock order** is the same everywhere: the app's row in `apps` (rows, in name
//!   order, for an import that moves a session between apps), then session rows (in id
//!   order where there are several). Admission, close-all, imports and privilege changes
//!   (which can make a session take a seat) lock the app row first; a change or a close
//!   of one session locks only its row; expiry locks with `SKIP LOCKED` and never
//!   waits. No two operations can wait on each other in a cycle; should PostgreSQL
//!   report a deadlock or a serialization failure all the same, the transaction is run
//!   again (a few times, with jittered pauses).
//! - **Admission** (`open`, and a privilege change that makes a session take a seat or
//!   moves it to a user): lock the app row; read what the core's `Admission::wants`
//!   asks (the seats taken; when full, the app's sessions whose timeout passed and the
//!   idlest seat holders; the user's sessions; the take-over target); run the core's
//!   `plan`; close whom it lists (timed-out sessions first); write the session. N opens
//!   or privilege changes racing for S seats (or a user's last slots) on any number of
//!   nodes admit exactly S. An open that no rule can refuse (it takes no seat or the
//!   app has no seat limit, no per-user limit applies, no take-over) is a plain insert
//!   with no lock. A refusal changes nothing.
//! - **Changes** (`modify`): a read or a touch is one `SELECT` by token hash outside
//!   any transaction; if `step` finds nothing to write (a read, a touch within the
//!   coalescing window, a refusal), that is all. Otherwise the row is locked
//!   (`SELECT ... FOR UPDATE`), `step` runs again on the locked state and the result
//!   is written. A closed session refuses every change, so no write resurrects one.
//! - **Imports** (`import`, for migrations and restores): lock the app row of the
//!   session (creating it, as admission does) and, if the stored session with that id
//!   belongs to another app, that app's row too, in name order; lock the session row;
//!   upsert every column from the session as given. No admission runs, but none can
//!   interleave with it either, so the counts an admission reads stay exact. A token
//!   hash already held by another session is refused (the unique index).
//! - **Expiry** (`expire_due`): `SELECT ... WHERE open AND deadline < now ORDER BY
//!   deadline LIMIT n FOR UPDATE SKIP LOCKED`; each node closes the rows it got, so
//!   several nodes sweeping at once close each due session exactly once. Closed
//!   sessions past retention are deleted the same way. Both go in transactions of at
//!   most 500 rows and a call stops early once half its time limit is spent, so a
//!   large backlog drains over several calls rather than timing out in one.
//!
//! # Unreadable rows
//!
//! A row whose `body` does not decode as a session (JSON nested deeper than the
//! decoder's limit of 128, JSON of another shape, a body naming another id) harms
//! only its session, as [`sessiond_core::store`] describes: reads and writes of that
//! session answer [`StoreError::Corrupt`]; lists (which fill their page from the rows
//! after it), close-all and the expiry sweep (which reads past it) pass over it.
//! Admission counts seats from the columns, so the row keeps its seat, but the
//! sessions it may displace (take-over target, the user's sessions, the idlest seat
//! holders) are read from their bodies, so it is never picked and does not count
//! against its user. The purge deletes closed rows past retention by their columns,
//! readable or not. Closing the session by id deletes the row, and with it every
//! index entry, and answers
//! [`CloseOutcome::Discarded`](sessiond_core::store::CloseOutcome::Discarded). Each
//! meeting is counted ([`PostgresStore::unreadable_records`]) and logged with the
//! session id and table, never the body.
//!
//! # Time limits
//!
//! Every operation, including the wait for a pooled connection, must finish within
//! [`PostgresOptions::op_timeout`] (default 2 s) or fails with
//! [`StoreError::Unavailable`]; so does any failure to reach the server. Once an
//! operation has sent a `COMMIT` (or a write that commits by itself), a timeout or a
//! lost connection fails with [`StoreError::OutcomeUnknown`] instead: the server may
//! have committed it and the answer been lost, so the caller must read again before
//! retrying. Before that, PostgreSQL rolls back what the operation did. An operation
//! abandoned on its deadline takes its connection out of the pool (it may still have a
//! statement running), asks the server to cancel it and closes it; the pool opens a
//! fresh one. Each pooled connection also runs with `statement_timeout` equal to the
//! operation limit and `idle_in_transaction_session_timeout` of twice that plus a
//! second, so the server frees the locks of a client that went away. Migrations at
//! connect may take up to 60 s (they may wait for another node's).
//!
//! # Durability: what a PostgreSQL crash can lose
//!
//! An operation returns once PostgreSQL acknowledged its commit. What that promise is
//! worth depends on the server's `synchronous_commit`:
//!
//! - `on` (PostgreSQL's default) or stricter: an acknowledged open, close, storage
//!   patch, heartbeat or privilege change survives a server crash or power loss (given
//!   storage that honours `fsync`). With a synchronous standby (`on`, `remote_apply`)
//!   it survives a failover too; with asynchronous replication, a failover can lose
//!   the last acknowledged transactions.
//! - `off` (for the server, the database or the role): commits are acknowledged before
//!   the WAL reaches disk. A server crash (not a client or network failure) can lose
//!   the transactions of the last `3 × wal_writer_delay` (about 600 ms by default), each
//!   whole: a session just opened disappears (its token becomes invalid), a close is
//!   undone (the session is open again until its timeout or the next close), a patch
//!   is lost. The data stays consistent: never half an admission, never a seat counted
//!   twice.
//! - Touches: with [`PostgresOptions::async_touches`] (the default) this store commits
//!   touch writes, and only those, with `SET LOCAL synchronous_commit TO OFF`, as the
//!   core allows for changes that need no durability: a crash loses at most the last
//!   ~600 ms of activity, so a session can only look idler than it was, never outlive
//!   its timeouts.
//!
//! Events (`NOTIFY`) are not durable: a node that is disconnected when one is sent
//! never receives it, and learns the state at its next read.
//!
//! # Reads from memory
//!
//! With [`PostgresOptions::read_cache`] set (off by default), a node answers a read of
//! a session by token (a resolve, or a touch that has nothing to write yet) from the
//! copy it last read, when that copy is younger than the set age (1 s is a good
//! value), the node's `LISTEN` connection on `<schema>_changes` is up, and the change
//! would write nothing; anything else goes to the store as before. Every change a node
//! makes is announced on that channel after it commits (outside the transaction: a
//! `NOTIFY` inside it would serialise every commit of the database behind one lock
//! held through the WAL flush), and the other nodes forget their copies when the
//! notice arrives: a kill, logout, rotation or storage write on one node is seen on the
//! others a few milliseconds later (docs/BENCHMARKS.md has the measured delays), and
//! never later than the set age even if notices are lost. When the listening
//! connection is lost, a node empties its copies at once and reads from the store
//! until it listens again. Every node sharing a store must have it on: a node without
//! it announces nothing. [`PostgresStore::read_cache_hits`] counts the reads answered
//! from memory. The module `cache.rs` has the details.
//!
//! # Connecting
//!
//! TLS (rustls, ring provider) follows the URL's `sslmode`: `require`, `verify-ca` and
//! `verify-full` all verify the server's certificate, host name included, against the
//! file `sslrootcert` names or else the system's roots; absent, `disable` and `prefer`
//! connect in the clear (`prefer` never tries TLS here). Note that libpq's `require`
//! verifies nothing: here it verifies as `verify-full` does. A certificate that does
//! not verify fails the connection ([`StoreError::Unavailable`], saying what to check);
//! nothing falls back to plain TCP. `sslrootcert` with a mode that does not use TLS,
//! and `sslmode=allow`, are refused. Channel binding is not offered. The pool, the
//! event listener and cancel requests all connect the same way. Behind PgBouncer, use
//! session pooling: the store relies on prepared statements, startup options and a
//! `LISTEN` connection.

mod admit;
mod bus;
mod cache;
mod db;
mod error;
mod ops;
mod outbox;
mod outcome;
mod rows;
mod schema;
mod store;
mod tls;
mod unreadable;

pub use bus::{PostgresEventBus, MAX_PAYLOAD};
pub use error::PostgresError;
pub use store::{PostgresOptions, PostgresStore};

#[doc(no_inline)]
pub use sessiond_core::StoreError;
