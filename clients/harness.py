"""What the tests of the seat clients share (conftest.py makes the fixtures): a real
``sessiond serve`` on a loopback port (its binary from ``SESSIOND_BIN``), the three seat
client programs with their output collected as it comes, and the cleanup of every
process they start, also when a test fails.

Every process runs in its own process group and is killed at the end of its test (and
at exit, whatever happened); every wait is bounded.
"""

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

CLIENTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(CLIENTS_DIR)
PYTHON_SRC = os.path.join(CLIENTS_DIR, "python", "src")
JS_BIN = os.path.join(CLIENTS_DIR, "js", "bin", "sessiond-seat.js")
sys.path.insert(0, PYTHON_SRC)

ADMIN_TOKEN = "clients-admin-token-0123456789abcdef"
# How long any wait for something to happen may last: generous, it only bounds a hang.
BOUND_S = 20.0

_PROCS = []  # every Popen started, killed at the end of its test and at exit


def kill_all():
    """Kills every process started (each with its process group)."""
    while _PROCS:
        proc = _PROCS.pop()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


atexit.register(kill_all)


def spawn(argv, **kwargs):
    """Starts a process in its own process group, to be killed at the end of the test."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    _PROCS.append(proc)
    return proc


def not_run(what, why):
    """A test that cannot run here: with CI=true it fails, otherwise it is skipped and
    written to $SESSIOND_SKIPPED_LOG for scripts/test's summary (scripts/lib/skip.sh)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: every test must run, but {what}: {why}")
    log = os.environ.get("SESSIOND_SKIPPED_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{what}: {why}\n")
    pytest.skip(f"{what}: {why}")


def sessiond_bin():
    """The server binary: $SESSIOND_BIN, else the newest of the repository's
    target/{release,debug}/sessiond (scripts/test-clients builds one when neither is
    there)."""
    given = os.environ.get("SESSIOND_BIN")
    if given:
        return given
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    found = [p for p in (os.path.join(target, k, "sessiond") for k in ("release", "debug"))
             if os.access(p, os.X_OK)]
    if not found:
        pytest.fail("no sessiond binary: set SESSIOND_BIN or run `cargo build -p sessiond`")
    return max(found, key=os.path.getmtime)


def app_key(app):
    """The app key the test configuration gives ``app``."""
    return f"{app}-app-key-test-0123456789"


def client_key(app):
    """The client credential the test configuration gives ``app``."""
    return f"{app}-client-key-test-0123456789"


def toml_value(value):
    """``value`` in TOML (what a test configuration needs of it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def config_toml(server):
    """The configuration file of ``server`` (``{setting: value, apps: {name: policy}}``);
    each app gets its ``key`` and ``client_key`` (``app_key``, ``client_key``)."""
    lines = [f"admin_token = {toml_value(ADMIN_TOKEN)}"]
    for name, value in server.items():
        if name != "apps":
            lines.append(f"{name} = {toml_value(value)}")
    for app, policy in server.get("apps", {}).items():
        lines += ["", f"[apps.{app}]", f"key = {toml_value(app_key(app))}",
                  f"client_key = {toml_value(client_key(app))}"]
        lines += [f"{k} = {toml_value(v)}" for k, v in policy.items()]
    return "\n".join(lines) + "\n"


class Sessiond:
    """A ``sessiond serve`` of its own, on 127.0.0.1 (port 0 the first time, the same
    port on a restart, so that clients find it again)."""

    def __init__(self, workdir, server, store="memory:", tls=None):
        self.workdir = workdir
        self.store = store
        self.tls = tls
        self.config = os.path.join(workdir, "sessiond.toml")
        with open(self.config, "w") as f:
            f.write(config_toml(server))
        self.port = 0
        self.tls_port = 0
        self.proc = None
        self.logs = []

    def start(self):
        log = os.path.join(self.workdir, f"server-{len(self.logs)}.log")
        self.logs.append(log)
        argv = [sessiond_bin(), "serve", "--config", self.config,
                "--listen", f"127.0.0.1:{self.port}", "--store", self.store,
                "--data-dir", os.path.join(self.workdir, "data")]
        if self.tls:
            argv += ["--tls-cert", self.tls["cert"], "--tls-key", self.tls["key"],
                     "--tls-listen", f"127.0.0.1:{self.tls_port}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIOND_")}
        env["SESSIOND_LOG"] = "info"
        with open(log, "wb") as out:
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            text = open(log, encoding="utf-8", errors="replace").read()
            found = re.search(r"listen=127\.0\.0\.1:(\d+) listen_tls=(\S+)", text)
            if found:
                self.port = int(found.group(1))
                if self.tls:
                    self.tls_port = int(found.group(2).rsplit(":", 1)[1])
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the server did not start:\n{open(log).read()}")

    def stop(self):
        """SIGTERM (every change flushed), then wait for it to end."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(BOUND_S) == 0, open(self.logs[-1]).read()

    def restart(self):
        self.stop()
        return self.start()

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.port}"

    def call(self, method, path, credential, body=None):
        """One API call; returns ``(status, json)``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=BOUND_S)
        headers = {"Authorization": f"Bearer {credential}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, (json.loads(raw) if raw else None)


def client_argv(kind):
    """How to run each seat client program."""
    if kind == "connect":
        return [sessiond_bin(), "connect"]
    if kind == "python":
        return [sys.executable, "-m", "sessiond_seat"]
    if kind == "node":
        node = shutil.which("node")
        if node is None:
            not_run("the Node seat client", "no node on this machine")
        return [node, JS_BIN]
    raise ValueError(kind)


def client_env(extra=None):
    """A clean environment for a client: none of the caller's sessiond or TLS settings."""
    drop = ("SESSIOND_", "SSL_CERT_", "NODE_EXTRA_CA_CERTS", "NODE_OPTIONS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = PYTHON_SRC
    env.update(extra or {})
    return env


class Running:
    """A client program running, its output collected as it comes."""

    def __init__(self, argv, env, stdin_text=None):
        self.argv = argv
        self.proc = spawn(argv, env=env,
                          stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._out = {"stdout": b"", "stderr": b""}
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._pump, args=(name,), daemon=True)
                         for name in ("stdout", "stderr")]
        for reader in self._readers:
            reader.start()
        if stdin_text is not None:
            self.proc.stdin.write(stdin_text.encode())
            self.proc.stdin.close()

    def _pump(self, name):
        stream = getattr(self.proc, name)
        for chunk in iter(lambda: stream.read1(4096), b""):
            with self._cond:
                self._out[name] += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def stdout(self):
        with self._cond:
            return self._out["stdout"].decode("utf-8", errors="replace")

    @property
    def stderr(self):
        with self._cond:
            return self._out["stderr"].decode("utf-8", errors="replace")

    def wait_for(self, predicate, what, timeout=BOUND_S):
        """Waits until ``predicate(stdout)`` is true (or the process has ended)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = self._out["stdout"].decode("utf-8", errors="replace")
                result = predicate(text)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    raise AssertionError(f"no {what} within {timeout:.0f} s\n{self.transcript()}")
                self._cond.wait(min(left, 0.2))

    def wait_exit(self, timeout=BOUND_S):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout:.0f} s\n{self.transcript()}") from None
        for reader in self._readers:
            reader.join(BOUND_S)
        return code

    def transcript(self):
        return (f"$ {' '.join(self.argv)}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
                f"--- exit {self.proc.poll()}")
