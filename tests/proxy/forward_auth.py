#!/usr/bin/env python3
"""Forward-auth end to end: a real nginx in front of an app, asking a real sessiond
server before every request (tests/proxy/nginx.conf.in, docs/PROXIES.md).

Starts sessiond (memory store, app `shop` with bind_ip, 127.0.0.1 a trusted proxy) and
nginx on free loopback ports, then checks, through nginx: no cookie -> 401 and nothing
reaches the app; a signed-in cookie -> the app sees the user, privileges, session id
and guest flag; a page that needs a privilege -> 403 without it; a killed session ->
401 on its next request, with the clearing Set-Cookie passed on to the browser; the
client address nginx forwards is the one bind_ip checks (another address, or a forged
X-Forwarded-For, is refused); a client's own X-User header never reaches the app.

Usage: tests/proxy/forward_auth.py SESSIOND_BIN NGINX_BIN   (tests/proxy/run.sh)
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "shop-proxy-test-key-000001"
ADMIN = "proxy-test-admin-token-0001"
FAILED = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log):
    for _ in range(150):
        if proc.poll() is not None:
            sys.exit(f"exited early:\n{open(log).read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}:\n{open(log).read()}")


def request(port, method, path, headers=None, body=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    conn.close()
    return out


def check(name, cond, detail=""):
    print(("ok     " if cond else "FAILED ") + name + ("" if cond else f": {detail}"))
    if not cond:
        FAILED.append(name)


def main():
    sessiond_bin, nginx_bin = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="sessiond-proxy-")
    sd_port, proxy_port, app_port = free_port(), free_port(), free_port()
    with open(f"{work}/sessiond.toml", "w") as f:
        f.write(
            f'admin_token = "{ADMIN}"\nstore = "memory:"\ntrusted_proxies = ["127.0.0.1"]\n'
            f'[apps.shop]\nkey = "{KEY}"\nbind_ip = true\n'
        )
    sd_log = f"{work}/sessiond.log"
    sd = subprocess.Popen(
        [sessiond_bin, "serve", "--config", f"{work}/sessiond.toml",
         "--listen", f"127.0.0.1:{sd_port}", "--data-dir", work],
        stdout=subprocess.DEVNULL, stderr=open(sd_log, "w"),
    )
    conf = open(f"{HERE}/nginx.conf.in").read()
    for k, v in {"@WORK@": work, "@SESSIOND@": f"127.0.0.1:{sd_port}",
                 "@PROXY_PORT@": str(proxy_port), "@APP_PORT@": str(app_port)}.items():
        conf = conf.replace(k, v)
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(conf)
    ng_log = f"{work}/nginx-error.log"
    open(ng_log, "w").close()
    ng = subprocess.Popen([nginx_bin, "-c", f"{work}/nginx.conf", "-p", work, "-e", ng_log],
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port(sd_port, sd, sd_log)
        wait_port(proxy_port, ng, ng_log)
        run(sd_port, proxy_port)
    finally:
        for p in (ng, sd):
            p.terminate()
            p.wait()
        if FAILED:
            print("--- sessiond log ---\n" + open(sd_log).read()[-3000:])
            print("--- nginx log ---\n" + open(ng_log).read()[-3000:])
    if FAILED:
        sys.exit(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
    print("forward-auth behind nginx: every check passed")


def open_session(sd_port, body):
    status, _, text = request(sd_port, "POST", "/v1/apps/shop/sessions",
                              {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                              json.dumps(body))
    assert status == 201, text
    return json.loads(text)


def run(sd_port, proxy_port):
    status, _, body = request(proxy_port, "GET", "/orders")
    check("no cookie: 401, the app is not reached", status == 401 and body == "sign in first\n", (status, body))

    ann = open_session(sd_port, {"user": "ann", "privileges": ["sales"], "client": {"ip": "127.0.0.1"}})
    cookie = {"Cookie": f"SESSION={ann['token']}"}
    status, _, body = request(proxy_port, "GET", "/orders", cookie)
    want = f"user=ann privileges=sales session={ann['id']} guest=false\n"
    check("a signed-in cookie: the app sees who", status == 200 and body == want, (status, body))

    forged = dict(cookie, **{"X-User": "root", "X-Privileges": "WebAdmin"})
    status, _, body = request(proxy_port, "GET", "/orders", forged)
    check("a client's own X-User never reaches the app", status == 200 and body == want, body)

    status, _, body = request(proxy_port, "GET", "/admin/users", cookie)
    check("a page needing WebAdmin: 403 without it", status == 403, (status, body))
    boss = open_session(sd_port, {"user": "boss", "privileges": ["WebAdmin"], "client": {"ip": "127.0.0.1"}})
    status, _, body = request(proxy_port, "GET", "/admin/users", {"Cookie": f"SESSION={boss['token']}"})
    check("... and 200 with it", status == 200 and body.startswith("user=boss "), (status, body))

    status, _, body = request(proxy_port, "GET", "/orders", cookie, source="127.0.0.2")
    check("bind_ip: another client address is refused", status == 403, (status, body))
    lie = dict(cookie, **{"X-Forwarded-For": "127.0.0.1"})
    status, _, body = request(proxy_port, "GET", "/orders", lie, source="127.0.0.2")
    check("bind_ip: a forged X-Forwarded-For does not pass", status == 403, (status, body))
    status, _, _ = request(proxy_port, "GET", "/orders", cookie)
    check("bind_ip: the session is intact for its own address", status == 200, status)

    status, _, text = request(sd_port, "DELETE", f"/v1/sessions/{ann['id']}",
                              {"Authorization": f"Bearer {KEY}"})
    assert status == 200, text
    status, headers, body = request(proxy_port, "GET", "/orders", cookie)
    clear = headers.get("set-cookie", "")
    check("a killed session: 401 on its next request", status == 401, (status, body))
    check("... and the clearing cookie reaches the browser",
          re.match(r"SESSION=; Path=/;.*Max-Age=0", clear) is not None, clear)


if __name__ == "__main__":
    main()
