#!/usr/bin/env python3
"""A small web app in Python (standard library only) whose sessions are sessiond's,
served behind nginx: the example of docs/PROXIES.md, "Signing in, out, and in as someone
else", done end to end.

nginx asks sessiond about every page (forward-auth) and tells this app who is signed in
by the X-Sessiond-* headers; this app only signs people in and out, over sessiond's HTTP
API with its app key, and sets the cookie itself with the attributes sessiond-axum uses:

- GET  /login   the form (not behind the check).
- POST /login   checks the password (PBKDF2, one answer for a wrong password and an
                unknown user, failures throttled), then: the browser's session of the
                same user is kept and its token rotated; another user's session (or a
                dead one) is closed and a new one opened. Sets the cookie, redirects to
                `next` when it is a path of this site.
- POST /logout  closes the session (`logout`) and clears the cookie.
- GET  /        behind the check: who is signed in; loads the browser heartbeat, which
                nginx passes to sessiond (/_sessiond/heartbeat.js).
- GET  /quiet   the same page with the heartbeat off (only the idle timeout applies).
- GET  /admin/  behind the check with the privilege WebAdmin (403 without it), which
                the app checks again itself: a proxy's path rule is a second line only.

Forms posted from another site's page are refused (Sec-Fetch-Site, else Origin).

Environment: SESSIOND_URL (http://127.0.0.1:PORT), SESSIOND_APP (default shop),
SESSIOND_APP_KEY, APP_PORT, HEARTBEAT_INTERVAL_S (the pages' beat interval; default:
sessiond's). Started by run.py beside this file.
"""

import hashlib
import hmac
import html
import http.server
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SESSIOND = os.environ["SESSIOND_URL"].rstrip("/")
APP = os.environ.get("SESSIOND_APP", "shop")
APP_KEY = os.environ["SESSIOND_APP_KEY"]
COOKIE = "SESSION"
HEARTBEAT_INTERVAL_S = os.environ.get("HEARTBEAT_INTERVAL_S", "")

# The demo's accounts: name -> (salt, PBKDF2-SHA256 of the password, privileges).
ITERATIONS = 100_000


def _hash(password, salt):
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)


def _account(password, privileges):
    salt = os.urandom(16)
    return salt, _hash(password, salt), privileges


USERS = {
    "ann": _account("ann-password", ["sales"]),
    "root": _account("root-password", ["sales", "WebAdmin"]),
}
# Compared against when the user is unknown, so both failures take the same time.
_NOBODY = _account(os.urandom(16).hex(), [])

# Sign-in failures in the last minute, per user name and per client address: 5 per
# name (a guesser cannot try more on one account), 20 per address (nor spread over
# many). Bounded: past MAX_TRACKED keys the oldest are forgotten first.
FAILURES = {}
FAILURES_LOCK = threading.Lock()
MAX_FAILURES = {"user": 5, "ip": 20}
MAX_TRACKED = 10_000
# At most this many password checks run at once (each is ~0.1 s of CPU): a flood of
# sign-ins waits here instead of taking every core.
CHECKS = threading.BoundedSemaphore(4)


def _recent(key, now):
    recent = [t for t in FAILURES.get(key, []) if now - t < 60]
    if recent:
        FAILURES[key] = recent
    else:
        FAILURES.pop(key, None)
    return recent


def throttled(user, ip):
    now = time.monotonic()
    with FAILURES_LOCK:
        return (len(_recent(("user", user), now)) >= MAX_FAILURES["user"]
                or len(_recent(("ip", ip), now)) >= MAX_FAILURES["ip"])


def failed(user, ip):
    now = time.monotonic()
    with FAILURES_LOCK:
        for key in (("user", user), ("ip", ip)):
            # Taken out and put back last: the dict's order is the age of the last failure.
            times = FAILURES.pop(key, [])
            times.append(now)
            FAILURES[key] = times
        while len(FAILURES) > MAX_TRACKED:
            FAILURES.pop(next(iter(FAILURES)))


def password_ok(user, password):
    salt, digest, _ = USERS.get(user, _NOBODY)
    with CHECKS:
        good = hmac.compare_digest(_hash(password[:1024], salt), digest)
    return good and user in USERS


def sessiond(method, path, body=None, token=None, forwarded_for=None):
    """One call to sessiond's HTTP API; answers (status, JSON or None). The app key
    authorises it, or a session's own token; the X-Forwarded-For line nginx gave this
    app is passed on unchanged (this app is one of sessiond's trusted_proxies), so
    sessiond reads the browser's address by its own rule, as for forward-auth."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SESSIOND + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or APP_KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if forwarded_for:
        req.add_header("X-Forwarded-For", forwarded_for)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None


def local_path(target):
    """`target` when it is a path of this site (never //host or /\\host; printable
    ASCII only, as a Location header carries it), else '/'."""
    if (target.startswith("/") and not target.startswith(("//", "/\\")) and target.isascii()
            and target.isprintable() and len(target) <= 2048):
        return target
    return "/"


class App(http.server.BaseHTTPRequestHandler):
    server_version = "python-signin"

    # -- what the request says -------------------------------------------------------

    def forwarded_for(self):
        """The X-Forwarded-For line as nginx sent it (the browser's own part first,
        what nginx appended last), to pass on to sessiond unchanged."""
        return ", ".join(self.headers.get_all("X-Forwarded-For") or []) or None

    def client_ip(self):
        """The browser's address as nginx (the peer) appended it, for this app's own
        throttle and the session's `client` facts."""
        hops = [h.strip() for h in (self.forwarded_for() or "").split(",") if h.strip()]
        return hops[-1] if hops else self.client_address[0]

    def https(self):
        return self.headers.get("X-Forwarded-Proto", "") == "https"

    def token(self):
        """The session cookie's value; none when two cookies claim the name."""
        names = [f"__Host-{COOKIE}"] if self.https() else [f"__Host-{COOKIE}", COOKIE]
        for name in names:
            values = []
            for line in self.headers.get_all("Cookie") or []:
                for part in line.split(";"):
                    k, _, v = part.strip().partition("=")
                    if k == name:
                        values.append(v)
            if len(values) == 1:
                return values[0]
            if values:
                return None
        return None

    def cross_site(self):
        """Whether another site's page made the browser post this (as sessiond-axum
        decides: Sec-Fetch-Site when present, else Origin against Host)."""
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site not in ("same-origin", "none")
        origin = self.headers.get("Origin")
        if origin is None:
            return False
        scheme = "https" if self.https() else "http"
        return origin.lower() != f"{scheme}://{self.headers.get('Host', '')}".lower()

    def form(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 4096:
            return None
        return urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))

    # -- answers ---------------------------------------------------------------------

    def cookie_line(self, token, clear=False):
        """The cookie as sessiond-axum writes it: HttpOnly, SameSite=Lax, Path=/; over
        HTTPS Secure with the __Host- prefix."""
        name = f"__Host-{COOKIE}" if self.https() else COOKIE
        secure = "; Secure" if self.https() else ""
        if clear:
            return f"{name}=; Path=/; HttpOnly; SameSite=Lax{secure}; Max-Age=0"
        return f"{name}={token}; Path=/; HttpOnly; SameSite=Lax{secure}"

    def page(self, status, title, body, headers=()):
        text = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(text)

    def redirect(self, to, headers=()):
        self.send_response(303)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def login_form(self, status=200, message="", next_path="/"):
        msg = f"<p id='message'>{html.escape(message)}</p>" if message else ""
        self.page(status, "Sign in", (
            f"<h1>Sign in</h1>{msg}<form method='post' action='/login'>"
            f"<input type='hidden' name='next' value='{html.escape(next_path)}'>"
            "<label>User <input id='user' name='user' autocomplete='username'></label> "
            "<label>Password <input id='password' name='password' type='password'></label> "
            "<button id='signin'>Sign in</button></form>"
        ))

    # -- routes ----------------------------------------------------------------------

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/login":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            return self.login_form(next_path=local_path(query.get("next", ["/"])[0]))
        if path in ("/", "/quiet") or path.startswith("/admin/"):
            return self.home(quiet=path == "/quiet", admin=path.startswith("/admin/"))
        self.page(404, "Not found", "<p>Not found</p>")

    def home(self, quiet, admin):
        # Set by nginx from sessiond's answer (never the client's own headers).
        user = self.headers.get("X-Sessiond-User", "")
        privileges = self.headers.get("X-Sessiond-Privileges", "")
        session = self.headers.get("X-Sessiond-Session", "")
        if not session:
            return self.redirect("/login")
        # nginx's location rule is a second line: /admin/../ reaches the app as an
        # /admin/ path after a check made for /. The app decides on the privileges.
        if admin and "WebAdmin" not in privileges.split(","):
            return self.page(403, "Refused", "<p>This page needs the WebAdmin privilege.</p>")
        interval = f" data-interval='{int(HEARTBEAT_INTERVAL_S)}'" if HEARTBEAT_INTERVAL_S else ""
        active = " data-active='false'" if quiet else ""
        title = "Administration" if admin else "Home"
        self.page(200, title, (
            f"<h1>{title}</h1><p>Signed in as <b id='user'>{html.escape(user)}</b> "
            f"(<span id='privileges'>{html.escape(privileges)}</span>), session "
            f"<code id='session'>{html.escape(session)}</code>.</p>"
            "<p><a href='/'>Home</a> · <a href='/quiet'>A page without heartbeat</a> · "
            "<a href='/admin/'>Administration</a></p>"
            "<form method='post' action='/logout'><button id='logout'>Sign out</button></form>"
            "<p>Heartbeat: <span id='heartbeat'>starting</span></p>"
            f"<script src='/_sessiond/heartbeat.js'{interval}{active} defer></script>"
            "<script>document.addEventListener('sessiond:heartbeat', function (e) {"
            " document.getElementById('heartbeat').textContent ="
            " e.detail.status + (e.detail.active ? ' (on, every ' + e.detail.interval + ' s)' : ' (off)');"
            "});</script>"
        ))

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if path not in ("/login", "/logout"):
            return self.page(404, "Not found", "<p>Not found</p>")
        if self.cross_site():
            return self.page(403, "Refused", "<p>This form was sent from another site.</p>")
        if path == "/logout":
            return self.logout()
        form = self.form()
        if form is None:
            return self.page(413, "Too large", "<p>The form is too large.</p>")
        user = form.get("user", [""])[0]
        password = form.get("password", [""])[0]
        next_path = local_path(form.get("next", ["/"])[0])
        ip = self.client_ip()
        if throttled(user, ip):
            return self.login_form(429, "Too many failed sign-ins; wait a minute.", next_path)
        if not password_ok(user, password):
            failed(user, ip)
            return self.login_form(401, "Wrong user or password.", next_path)
        token, error = self.sign_in(user, USERS[user][2])
        if token is None:
            return self.login_form(503, error, next_path)
        self.redirect(next_path, [("Set-Cookie", self.cookie_line(token))])

    def sign_in(self, user, privileges):
        """The browser's session of `user`, with a new token; (token, None) or
        (None, what went wrong)."""
        ip = self.client_ip()
        current = self.token()
        if current:
            status, s = sessiond("GET", "/v1/session?touch=false", token=current,
                                 forwarded_for=self.forwarded_for())
            if status == 200 and s.get("app") == APP:
                if s.get("user") == user:
                    # The same person signing in again: keep the session, rotate its token
                    # (a cookie fixed before the sign-in is dead after it).
                    status, s2 = sessiond("PUT", f"/v1/sessions/{s['id']}/privileges",
                                          {"privileges": privileges, "user": user})
                    if status == 200:
                        return s2["token"], None
                # Someone else (or a failed rotation): nobody inherits this session.
                sessiond("DELETE", f"/v1/sessions/{s['id']}")
        status, s = sessiond("POST", f"/v1/apps/{APP}/sessions", {
            "user": user,
            "privileges": privileges,
            "client": {"ip": ip, "user_agent": self.headers.get("User-Agent", "")[:256]},
        })
        if status == 201:
            return s["token"], None
        return None, (s or {}).get("message", f"sessiond answered {status}")

    def logout(self):
        token = self.token()
        if token:
            sessiond("DELETE", "/v1/session", token=token, forwarded_for=self.forwarded_for())
        self.redirect("/login", [("Set-Cookie", self.cookie_line("", clear=True))])

    def log_message(self, fmt, *args):
        # Paths only; a query could hold anything.
        print(f"app: {self.command} {urllib.parse.urlsplit(self.path).path} -> {args[1] if len(args) > 1 else ''}", flush=True)


def main():
    port = int(os.environ.get("APP_PORT", "9000"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), App)
    print(f"app listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
