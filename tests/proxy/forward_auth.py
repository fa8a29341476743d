#!/usr/bin/env python3
"""Forward-auth end to end: a real reverse proxy (nginx, Caddy or Traefik) in front of
an app, asking a real sessiond server before every request (the configurations beside
this file; docs/PROXIES.md).

Starts sessiond (memory store, app `shop` with bind_ip, 127.0.0.1 a trusted proxy), the
app (a few lines of Python here that answer with the X-Sessiond-* headers it was given)
and the proxy on free loopback ports, then checks, through the proxy: no cookie -> 401
and nothing reaches the app; a signed-in cookie -> the app sees the user, privileges,
session id and guest flag; a client's own X-Sessiond-* headers never reach the app; a
page that needs a privilege -> 403 without it, 200 with it; the client address the
proxy forwards is the one bind_ip checks (another address, or a forged
X-Forwarded-For, is refused); a killed session -> 401 on its next request, with the
clearing Set-Cookie passed on to the browser.

Usage: tests/proxy/forward_auth.py SESSIOND_BIN nginx|caddy|traefik PROXY_BIN
       (tests/proxy/run.sh runs the three)
"""

import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
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


class App(http.server.BaseHTTPRequestHandler):
    """The upstream app: it tells what the proxy said about the session."""

    def do_GET(self):
        body = (
            f"user={self.cgi('X-Sessiond-User')} privileges={self.cgi('X-Sessiond-Privileges')} "
            f"session={self.cgi('X-Sessiond-Session')} guest={self.cgi('X-Sessiond-Guest')}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def cgi(self, name):
        """A header as CGI and FastCGI apps (PHP) read it: by HTTP_X_SESSIOND_USER, which
        `X-Sessiond-User` and the look-alike `X_Sessiond_User` both become."""
        want = name.upper().replace("-", "_")
        for k, v in self.headers.items():
            if k.upper().replace("-", "_") == want:
                return v
        return ""

    def log_message(self, *args):
        pass


def start_proxy(kind, binary, work, sd_port, proxy_port, app_port):
    """Writes the proxy's configuration and starts it; answers (process, log path)."""
    subst = {"@WORK@": work, "@SESSIOND@": f"127.0.0.1:{sd_port}",
             "@PROXY_PORT@": str(proxy_port), "@APP_PORT@": str(app_port)}
    name = {"nginx": "nginx.conf.in", "caddy": "Caddyfile.in", "traefik": "traefik-dynamic.toml.in"}[kind]
    conf = open(f"{HERE}/{name}").read()
    for k, v in subst.items():
        conf = conf.replace(k, v)
    path = f"{work}/{name[:-3]}"
    with open(path, "w") as f:
        f.write(conf)
    log = f"{work}/{kind}.log"
    if kind == "nginx":
        open(f"{work}/nginx-error.log", "w").close()
        cmd = [binary, "-c", path, "-p", work, "-e", f"{work}/nginx-error.log"]
        log = f"{work}/nginx-error.log"
    elif kind == "caddy":
        cmd = [binary, "run", "--config", path, "--adapter", "caddyfile"]
    else:
        cmd = [binary, f"--entryPoints.web.address=127.0.0.1:{proxy_port}",
               f"--providers.file.filename={path}", "--log.level=ERROR"]
    out = open(log if kind != "nginx" else f"{work}/nginx-stdout.log", "a")
    env = dict(os.environ, HOME=work, XDG_DATA_HOME=work, XDG_CONFIG_HOME=work)
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work), log


def main():
    sessiond_bin, kind, proxy_bin = sys.argv[1], sys.argv[2], sys.argv[3]
    work = tempfile.mkdtemp(prefix=f"sessiond-{kind}-")
    sd_port, proxy_port = free_port(), free_port()
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    app_port = app.server_address[1]
    threading.Thread(target=app.serve_forever, daemon=True).start()
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
    proxy, proxy_log = start_proxy(kind, proxy_bin, work, sd_port, proxy_port, app_port)
    try:
        wait_port(sd_port, sd, sd_log)
        wait_port(proxy_port, proxy, proxy_log)
        # Traefik loads its routes a moment after it listens: wait for the check to run.
        for _ in range(100):
            if request(proxy_port, "GET", "/")[0] == 401:
                break
            time.sleep(0.1)
        run(kind, sd_port, proxy_port)
    finally:
        for p in (proxy, sd):
            p.terminate()
            p.wait()
        app.shutdown()
        if FAILED:
            print("--- sessiond log ---\n" + open(sd_log).read()[-3000:])
            print(f"--- {kind} log ---\n" + open(proxy_log).read()[-3000:])
    if FAILED:
        sys.exit(f"{len(FAILED)} check(s) failed behind {kind}: {', '.join(FAILED)}")
    print(f"forward-auth behind {kind}: every check passed")


def open_session(sd_port, body):
    status, _, text = request(sd_port, "POST", "/v1/apps/shop/sessions",
                              {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                              json.dumps(body))
    assert status == 201, text
    return json.loads(text)


def run(kind, sd_port, proxy_port):
    def say(name, cond, detail=""):
        check(f"{kind}: {name}", cond, detail)

    status, _, body = request(proxy_port, "GET", "/orders")
    say("no cookie: 401, the app is not reached", status == 401 and "user=" not in body, (status, body))

    ann = open_session(sd_port, {"user": "ann", "privileges": ["sales"], "client": {"ip": "127.0.0.1"}})
    cookie = {"Cookie": f"SESSION={ann['token']}"}
    status, _, body = request(proxy_port, "GET", "/orders", cookie)
    want = f"user=ann privileges=sales session={ann['id']} guest=false\n"
    say("a signed-in cookie: the app sees who", status == 200 and body == want, (status, body))

    forged = dict(cookie, **{"X-Sessiond-User": "root", "X-Sessiond-Privileges": "WebAdmin"})
    status, _, body = request(proxy_port, "GET", "/orders", forged)
    say("a client's own X-Sessiond-* never reach the app", status == 200 and body == want, body)
    guest = open_session(sd_port, {"client": {"ip": "127.0.0.1"}})
    forged = {"Cookie": f"SESSION={guest['token']}", "X-Sessiond-User": "root"}
    status, _, body = request(proxy_port, "GET", "/orders", forged)
    say("... not even beside a guest, which has no user", status == 200 and body.startswith("user= ") and "guest=true" in body, body)

    # Look-alike names (CGI reads X_Sessiond_User as X-Sessiond-User), and the hop-by-hop
    # trick that makes a proxy drop the real headers so only the look-alikes remain.
    lookalike = dict(cookie, **{"X_Sessiond_User": "root", "X-Sessiond_Privileges": "WebAdmin",
                                "X_Sessiond-Session": "forged", "x_sessiond_guest": "forged"})
    status, _, body = request(proxy_port, "GET", "/orders", lookalike)
    say("look-alike header names never reach the app", status == 200 and body == want, body)
    hop = dict(lookalike, **{"Connection": "X-Sessiond-User, X-Sessiond-Privileges, "
                                           "X-Sessiond-Session, X-Sessiond-Guest"})
    status, _, body = request(proxy_port, "GET", "/orders", hop)
    say("... nor with Connection naming the real ones",
        "root" not in body and "WebAdmin" not in body and "forged" not in body, (status, body))

    status, _, body = request(proxy_port, "GET", "/orders?page=2&privilege=x", cookie)
    say("a page's own query does not change the check", status == 200 and body == want, (status, body))

    status, _, body = request(proxy_port, "GET", "/admin/users", cookie)
    say("a page needing WebAdmin: 403 without it", status == 403 and "user=" not in body, (status, body))
    boss = open_session(sd_port, {"user": "boss", "privileges": ["WebAdmin"], "client": {"ip": "127.0.0.1"}})
    status, _, body = request(proxy_port, "GET", "/admin/users", {"Cookie": f"SESSION={boss['token']}"})
    say("... and 200 with it", status == 200 and body.startswith("user=boss "), (status, body))

    status, _, body = request(proxy_port, "GET", "/orders", cookie, source="127.0.0.2")
    say("bind_ip: another client address is refused", status == 403, (status, body))
    lie = dict(cookie, **{"X-Forwarded-For": "127.0.0.1"})
    status, _, body = request(proxy_port, "GET", "/orders", lie, source="127.0.0.2")
    say("bind_ip: a forged X-Forwarded-For does not pass", status == 403, (status, body))
    status, _, _ = request(proxy_port, "GET", "/orders", cookie)
    say("bind_ip: the session is intact for its own address", status == 200, status)

    if kind != "nginx":
        # login=/login (nginx's auth_request cannot pass a redirect on: error_page does it).
        nav = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
        # On the site the browser asked for (the proxy's Host), never on sessiond's.
        site = f"http://127.0.0.1:{proxy_port}"
        status, headers, body = request(proxy_port, "GET", "/account/orders?page=2", nav)
        say("login=: a page navigation without a session is sent to sign in",
            status == 302 and headers.get("location") == f"{site}/login?next=/account/orders%3Fpage%3D2",
            (status, headers.get("location"), body))
        status, headers, _ = request(proxy_port, "GET", "/account/x?login=//evil.example", nav)
        say("... never where the browser's own query says",
            status == 302 and headers.get("location", "").startswith(f"{site}/login?next=/account/x"),
            (status, headers.get("location")))
        status, _, body = request(proxy_port, "GET", "/account/orders", {"Sec-Fetch-Mode": "cors"})
        say("... while a script's request is told 401", status == 401 and "user=" not in body, (status, body))
        status, _, body = request(proxy_port, "GET", "/account/orders", dict(cookie, **nav))
        say("... and a live session goes through", status == 200 and body == want, (status, body))

    status, _, text = request(sd_port, "DELETE", f"/v1/sessions/{ann['id']}",
                              {"Authorization": f"Bearer {KEY}"})
    assert status == 200, text
    status, headers, body = request(proxy_port, "GET", "/orders", cookie)
    clear = headers.get("set-cookie", "")
    say("a killed session: 401 on its next request", status == 401 and "user=" not in body, (status, body))
    say("... and the clearing cookie reaches the browser",
        re.match(r"SESSION=; Path=/;.*Max-Age=0", clear) is not None, clear)


if __name__ == "__main__":
    main()
