//! How a test that cannot run here says so, one way for every crate: with `CI=true` it
//! fails (CI must run every suite); otherwise it prints `SKIPPED: ...` and appends the
//! line to the file named by `SESSIOND_SKIPPED_LOG`. `scripts/test` sets that variable
//! and prints the file in its summary, so a passing run cannot hide a suite that did
//! not run (the test runner captures a passing test's output).

use std::io::Write as _;

/// Skips the test that calls it (the caller returns right after), saying `what` did not
/// run and `why`; with `CI=true`, fails it instead.
///
/// ```no_run
/// fn redis_is_here() -> bool { false }
/// if !redis_is_here() {
///     sessiond_core::skip::skip("Redis store suite", "no Redis at 127.0.0.1:6379");
///     return;
/// }
/// ```
pub fn skip(what: &str, why: &str) {
    let line = format!("{what}: {why}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: every suite must run, but {line}"
    );
    eprintln!("SKIPPED: {line}");
    if let Some(path) = std::env::var_os("SESSIOND_SKIPPED_LOG") {
        // One short line per write with O_APPEND: lines of parallel tests do not mix.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}
