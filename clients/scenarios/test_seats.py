"""Runs clients/scenarios/seats.json against the three seat clients alike: `sessiond
connect`, the Python client and the Node client. Each (scenario, client) pair gets a
server of its own; the expectations are the file's, the same for every client.

A scenario may name a client in ``known_divergence``: that client is expected to fail
it (strict, so the day it passes the note must go), and the reason is in the file.
"""

import json
import os
import re
import signal
import socket
import time

import pytest

from harness import (
    ADMIN_TOKEN,
    BOUND_S,
    Running,
    Sessiond,
    app_key,
    client_argv,
    client_env,
    client_key,
)

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "seats.json")) as f:
    SPEC = json.load(f)

CLIENTS = ("connect", "python", "node")
CONNECTED = re.compile(
    r"^Connected to (?P<app>\S+) as (?P<user>\S+) \(session (?P<id>[0-9a-f-]{36})\)\. "
    r"Heartbeat every (?P<interval>\d+) s\. Press Ctrl-C to disconnect\.$",
    re.MULTILINE,
)
# A session token (`<prefix>:<32 hex digits>`) anywhere in a client's output.
TOKEN = re.compile(r"[0-9a-f]{32}")


def cases():
    for scenario in SPEC["scenarios"]:
        for kind in CLIENTS:
            marks = []
            why = scenario.get("known_divergence", {}).get(kind)
            if why:
                marks.append(pytest.mark.xfail(reason=why, strict=True))
            yield pytest.param(scenario, kind, id=f"{scenario['name']}-{kind}", marks=marks)


class Run:
    """One scenario being played against one client program."""

    def __init__(self, scenario, kind, workdir, test_ca):
        self.scenario = scenario
        self.kind = kind
        self.tls = test_ca if scenario.get("tls") else None
        store = "file:" if scenario.get("store") == "file" else "memory:"
        self.server = Sessiond(workdir, SPEC["server"], store, self.tls).start()
        self.clients = {}
        self.ids = {}
        self.secrets = [ADMIN_TOKEN, "wrong-credential-0123456789abcdef"]
        for app in SPEC["server"]["apps"]:
            self.secrets += [app_key(app), client_key(app)]

    def fill(self, text):
        """The placeholders of a value: {id:NAME}, {ca_cert}, {not_a_pem}."""
        def sub(m):
            key = m.group(1)
            if key.startswith("id:"):
                return self.ids[key[3:]]
            if key == "ca_cert":
                return self.tls["ca"]
            if key == "not_a_pem":
                path = os.path.join(self.server.workdir, "not-a-certificate.pem")
                with open(path, "w") as f:
                    f.write("not a certificate\n")
                return path
            raise KeyError(key)
        return re.sub(r"\{([a-z_]+(?::[a-z]+)?)\}", sub, text)

    def record(self, name):
        status, body = self.server.call("GET", f"/v1/sessions/{self.ids[name]}",
                                        app_key(self.app_of(name)))
        assert status == 200, body
        return body

    def app_of(self, name):
        args = self.clients[name].args
        return args[args.index("--app") + 1]

    def until(self, what, probe, timeout=BOUND_S):
        """Polls ``probe()`` until it returns something true; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            ok, last = probe()
            if ok:
                return last
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout:.0f} s; last seen: {last}\n"
                             + self.transcripts())

    def transcripts(self):
        return "\n".join(c.transcript() for c in self.clients.values())

    # --- the steps ---

    def start(self, step):
        args = [self.fill(a) for a in step["args"]]
        app = args[args.index("--app") + 1]
        token = {"client_key": client_key(app), "wrong": "wrong-credential-0123456789abcdef"}[
            step.get("token", "client_key")]
        server = step.get("server", "http")
        if server == "http":
            url = self.server.http_url
        elif server == "https":
            url = f"https://127.0.0.1:{self.server.tls_port}"
        elif server == "https_localhost":
            url = f"https://localhost:{self.server.tls_port}"
        elif server == "closed_port":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                url = f"http://127.0.0.1:{s.getsockname()[1]}"
        else:
            raise ValueError(server)
        env = {k: self.fill(v) for k, v in step.get("env", {}).items()}
        argv = client_argv(self.kind) + ["--server", url] + args
        if step.get("token_by") == "flag":
            argv += ["--token", token]
        else:
            env["SESSIOND_TOKEN"] = token
        running = Running(argv, client_env(env), step.get("stdin"))
        running.args = args
        self.clients[step["as"]] = running

    def connected(self, step):
        name = step["as"]
        client = self.clients[name]
        found = client.wait_for(lambda out: CONNECTED.search(out), "'Connected to' line")
        assert found.group("app") == self.app_of(name)
        assert found.group("user") == client.args[client.args.index("--user") + 1]
        if "interval" in step:
            assert int(found.group("interval")) == step["interval"], client.transcript()
        self.ids[name] = found.group("id")

    def output(self, step):
        client = self.clients[step["as"]]
        for line in step.get("lines", []):
            line = self.fill(line)
            client.wait_for(lambda out: line in out.splitlines(), f"line {line!r}")
        for piece in step.get("contains", []):
            piece = self.fill(piece)
            client.wait_for(lambda out: piece in out, f"output {piece!r}")

    def heartbeat_seen(self, step):
        name = step["as"]
        before = self.record(name)["last_heartbeat_at"]

        def probe():
            seen = self.record(name)
            return seen["last_heartbeat_at"] > before, seen["last_heartbeat_at"]
        self.until(f"a heartbeat of {name} after {before}", probe)

    def session(self, step):
        name = step["as"]
        expect = {k: self.fill(v) if isinstance(v, str) else v for k, v in step["expect"].items()}

        def probe():
            record = self.record(name)
            seen = {}
            for path in expect:
                value = record
                for part in path.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                seen[path] = value
            return seen == expect, seen
        self.until(f"the session of {name} to have {expect}", probe)

    def seats(self, step):
        app = step["app"]

        def probe():
            status, body = self.server.call("GET", f"/v1/apps/{app}", app_key(app))
            used = body["seats"]["used"] if status == 200 else body
            return used == step["used"], used
        self.until(f"{app} to have {step['used']} seat(s) used", probe)

    def kill(self, step):
        name = step["as"]
        status, body = self.server.call("DELETE", f"/v1/sessions/{self.ids[name]}",
                                        app_key(self.app_of(name)))
        assert status == 200, body

    def close_all(self, step):
        app = step["app"]
        keep = [self.ids[n] for n in step.get("except", [])]
        status, body = self.server.call("POST", f"/v1/apps/{app}/sessions/close-all",
                                        app_key(app), {"except": keep})
        assert status == 200, body

    def signal(self, step):
        self.clients[step["as"]].proc.send_signal(getattr(signal, step["signal"]))

    def pause(self, step):
        self.clients[step["as"]].proc.send_signal(signal.SIGSTOP)

    def resume(self, step):
        self.clients[step["as"]].proc.send_signal(signal.SIGCONT)

    def restart_server(self, step):
        self.server.restart()

    def exit(self, step):
        client = self.clients[step["as"]]
        code = client.wait_exit(step.get("within_s", BOUND_S))
        assert code == step["code"], f"exit {code}, expected {step['code']}\n{client.transcript()}"
        lines = client.stdout.splitlines()
        for line in step.get("lines", []):
            assert self.fill(line) in lines, client.transcript()
        for piece in step.get("contains", []):
            assert self.fill(piece) in client.stdout, client.transcript()
        for piece in step.get("stderr_contains", []):
            assert self.fill(piece) in client.stderr, client.transcript()

    def no_secret_printed(self):
        for name, client in self.clients.items():
            text = client.stdout + client.stderr
            for secret in self.secrets:
                assert secret not in text, f"{name} printed a credential\n{client.transcript()}"
            assert not TOKEN.search(text), f"{name} printed a token\n{client.transcript()}"


@pytest.mark.parametrize("scenario,kind", list(cases()))
def test_scenario(scenario, kind, workdir, request):
    test_ca = request.getfixturevalue("test_ca") if scenario.get("tls") else None
    run = Run(scenario, kind, workdir, test_ca)
    for step in scenario["steps"]:
        getattr(run, step["do"])(step)
    run.no_secret_printed()


def exit_table(text):
    """The ``Exit codes:`` section of a ``--help`` text, as lines."""
    lines = text.splitlines()
    start = lines.index("Exit codes:")
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start:end]


def test_every_client_lists_the_same_exit_codes():
    """The three `--help` texts list the same codes with the same meanings (the Rust
    one is made from crates/sessiond/src/exit.rs, the table the others copy)."""
    import subprocess

    tables = {}
    for kind in CLIENTS:
        out = subprocess.run(client_argv(kind) + ["--help"], env=client_env(), timeout=BOUND_S,
                             capture_output=True, text=True, check=True).stdout
        tables[kind] = exit_table(out)
    assert len(tables["connect"]) == 16, tables["connect"]
    assert tables["python"] == tables["connect"]
    assert tables["node"] == tables["connect"]


def test_the_scenarios_cover_every_close_reason_a_server_can_give():
    """Every close reason a seat can learn of from the server, but `logout` from
    elsewhere (the harness cannot hold the client's token), ends some scenario."""
    codes = {step["code"] for s in SPEC["scenarios"] for step in s["steps"]
             if step["do"] == "exit"}
    assert codes >= {0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17}, sorted(codes)
