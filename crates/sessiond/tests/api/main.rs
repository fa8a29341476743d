//! Integration tests of the sessiond server over real HTTP on loopback: every endpoint
//! and error of the API v1 contract, persistence across restarts and `kill -9`, and
//! a scan of the server's output for leaked tokens.

mod backup;
mod cli;
mod common;
mod console;
mod credentials;
mod errors;
mod forward_auth;
mod heartbeat;
mod hostile;
mod management;
mod migrate;
mod multinode;
mod ops;
mod outage;
mod outcome;
mod pinned;
mod portability;
mod process;
mod reload;
mod resume;
mod routes;
mod seat_client;
mod seats;
mod session;
mod store_tls;
mod tls;
mod unreadable;
mod webhooks;
