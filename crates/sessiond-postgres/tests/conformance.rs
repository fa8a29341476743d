//! The store conformance suite on PostgreSQL, each test on a schema of its own
//! (`sessiond_test_<time>_<random>`, dropped with the store). Without a PostgreSQL at
//! `SESSIOND_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) the
//! suite is skipped loudly, except in CI (`CI=true`), where that fails.

mod common;

sessiond_core::conformance_tests!(common::fresh_store());
sessiond_core::hooks_conformance_tests!(common::fresh_store());
