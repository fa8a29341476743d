//! Integration tests of sessiond-axum through a real axum router (driven with `oneshot`),
//! on the real FileStore in a temporary directory, the MemoryStore, and a fault
//! injector around a real MemoryStore. One binary, a module per area; `modules` reads the
//! crate's own sources for the shape of its module graph.

mod addresses;
mod common;
mod concurrency;
mod cookies;
mod disk;
mod faults;
mod heartbeat;
mod modules;
mod privileges;
mod signin;
mod storage;
