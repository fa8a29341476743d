//! The store conformance suite on PostgreSQL with the read cache on
//! (`PostgresOptions::read_cache`): every answer a node gives from its memory must be
//! one the store would have given. Each test on a schema of its own, as in
//! `conformance.rs`.

mod common;

sessiond_core::conformance_tests!(common::fresh_store_with(|o| {
    o.read_cache = Some(std::time::Duration::from_secs(1))
}));
