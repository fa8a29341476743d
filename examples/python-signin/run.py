#!/usr/bin/env python3
"""Runs the Python sign-in example with one command: sessiond (its embedded store, in a
scratch directory), the app (app.py) and nginx in front of both, on loopback.

    python3 examples/python-signin/run.py            # then open http://127.0.0.1:8080/

Sign in as ann / ann-password (privilege sales) or root / root-password (sales and
WebAdmin, which /admin/ needs). Ctrl-C stops everything and removes the scratch
directory.

Needs nginx (apt-get install nginx-light) and Rust's cargo to build sessiond (or
SESSIOND_BIN, a built binary). Options: --port (0 picks a free one), the heartbeat's
--heartbeat-interval and --heartbeat-grace, the sessions' --idle-timeout (seconds),
--allowed-origin (repeatable: an origin whose pages may call the heartbeat directly),
and --ready-file, where a JSON line with the addresses and the app key is written once
everything answers (the browser test reads it).
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(name, port, proc, log):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"{name} stopped at start; its log:\n{open(log).read()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{name} does not answer on port {port}; its log:\n{open(log).read()[-3000:]}")


def sessiond_binary():
    given = os.environ.get("SESSIOND_BIN")
    if given:
        return given
    print("building sessiond (cargo build -p sessiond)...", flush=True)
    subprocess.run(["cargo", "build", "--quiet", "-p", "sessiond"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "sessiond")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8080, help="where browsers connect (0: a free port)")
    ap.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between a page's beats")
    ap.add_argument("--heartbeat-grace", type=int, default=10, help="seconds past a missed beat before a closed page's session ends")
    ap.add_argument("--idle-timeout", type=int, default=1800, help="seconds without activity before a session ends")
    ap.add_argument("--allowed-origin", action="append", default=[], help="an origin whose pages may call the heartbeat directly")
    ap.add_argument("--ready-file", help="write the addresses here as JSON once everything answers")
    args = ap.parse_args()

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        sys.exit("nginx is not installed: apt-get install nginx-light")
    binary = sessiond_binary()

    work = tempfile.mkdtemp(prefix="sessiond-python-signin-")
    port = args.port or free_port()
    sd_port, app_port = free_port(), free_port()
    admin, app_key = secrets.token_hex(16), secrets.token_hex(16)
    origins = json.dumps(args.allowed_origin)
    with open(f"{work}/sessiond.toml", "w") as f:
        f.write(
            f'admin_token = "{admin}"\n'
            'store = "file:"\n'
            "expiry_interval_ms = 200\n"
            "# nginx and the app both forward the browser's address.\n"
            'trusted_proxies = ["127.0.0.1"]\n'
            "[apps.shop]\n"
            f'key = "{app_key}"\n'
            "bind_ip = true\n"
            f"idle_timeout_s = {args.idle_timeout}\n"
            "[apps.shop.web]\n"
            f"heartbeat_interval_s = {args.heartbeat_interval}\n"
            f"heartbeat_grace_s = {args.heartbeat_grace}\n"
            f"allowed_origins = {origins}\n"
        )
    conf = open(f"{HERE}/nginx.conf.in").read()
    for k, v in {"@WORK@": work, "@PORT@": str(port), "@SESSIOND@": f"127.0.0.1:{sd_port}",
                 "@APP_PORT@": str(app_port)}.items():
        conf = conf.replace(k, v)
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(conf)

    procs = []

    def start(name, cmd, env=None):
        log = f"{work}/{name}.log"
        p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                             env=env, cwd=work)
        procs.append(p)
        return p, log

    def stop(*_):
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sd, sd_log = start("sessiond", [binary, "serve", "--config", f"{work}/sessiond.toml",
                                        "--listen", f"127.0.0.1:{sd_port}",
                                        "--data-dir", f"{work}/data"])
        app_env = dict(os.environ, SESSIOND_URL=f"http://127.0.0.1:{sd_port}", SESSIOND_APP="shop",
                       SESSIOND_APP_KEY=app_key, APP_PORT=str(app_port), PYTHONDONTWRITEBYTECODE="1")
        app, app_log = start("app", [sys.executable, "-u", f"{HERE}/app.py"], app_env)
        open(f"{work}/nginx-error.log", "w").close()
        px, px_log = start("nginx", [nginx, "-c", f"{work}/nginx.conf", "-p", work,
                                     "-e", f"{work}/nginx-error.log"])
        wait_port("sessiond", sd_port, sd, sd_log)
        wait_port("the app", app_port, app, app_log)
        wait_port("nginx", port, px, f"{work}/nginx-error.log")
        url = f"http://127.0.0.1:{port}"
        if args.ready_file:
            with open(args.ready_file + ".tmp", "w") as f:
                json.dump({"url": url, "sessiond": f"http://127.0.0.1:{sd_port}", "app_key": app_key,
                           "work": work}, f)
            os.rename(args.ready_file + ".tmp", args.ready_file)
        print(f"open {url}/ and sign in as ann / ann-password or root / root-password "
              f"(logs in {work}; Ctrl-C stops)", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        for p, name, log in ((sd, "sessiond", sd_log), (app, "the app", app_log),
                             (px, "nginx", f"{work}/nginx-error.log")):
            if p.poll() is not None:
                sys.exit(f"{name} stopped; its log:\n{open(log).read()[-3000:]}")
    except KeyboardInterrupt:
        pass
    finally:
        stop()


if __name__ == "__main__":
    main()
