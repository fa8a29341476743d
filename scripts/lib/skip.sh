# Sourced by the test scripts: `skip WHAT WHY` says that WHAT did not run and why, the
# same way the Rust tests do (sessiond_core::skip): with CI=true it fails the run;
# otherwise it prints SKIPPED and appends the line to $SESSIOND_SKIPPED_LOG, which
# scripts/test prints in its summary. The caller exits 0 after it.
skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "CI=true: every suite must run, but $1: $2" >&2
    exit 1
  fi
  echo "SKIPPED: $1: $2" >&2
  if [ -n "${SESSIOND_SKIPPED_LOG:-}" ]; then
    echo "$1: $2" >>"$SESSIOND_SKIPPED_LOG"
  fi
}
