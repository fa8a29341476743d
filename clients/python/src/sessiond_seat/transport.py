"""Talking to a sessiond server: one HTTP/1.1 request at a time over ``http.client``,
JSON in and out, the API's error bodies turned into :class:`ApiError`, and event
streams opened for reading.

Credentials travel as ``Authorization: Bearer`` and nowhere else: a server URL with a
user name or password is refused, and no message built here quotes a header, so a
secret never ends up in an error the program prints.
"""

import http.client
import json
import ssl
import urllib.parse

from .version import __version__

USER_AGENT = f"sessiond-seat-python/{__version__}"

# Longest piece of a non-API error body kept in a message.
BODY_SNIPPET_CHARS = 200


class SeatError(Exception):
    """Any failure of a call to the server."""


class TransportError(SeatError):
    """The request could not be sent or the answer not received (the server is down,
    the network is cut, its certificate is not trusted...)."""

    def __init__(self, cause):
        super().__init__(f"cannot talk to the sessiond server: {cause}")


class ApiError(SeatError):
    """The server refused the call. ``code`` is the API's error code (``None`` when the
    answer had no API error body, e.g. from a proxy); ``body`` the whole error body,
    with its extra fields (``reason``, ``seats``, ``sessions``...)."""

    def __init__(self, status, code, message, body):
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        super().__init__(f"{message} ({code})" if code else message)


class SeatsExhausted(ApiError):
    """409 ``seats_exhausted``: every seat is taken. ``seats`` is ``{used, total}``
    (``total`` is ``None`` when unlimited), ``holders`` the open sessions holding them;
    open again with ``take_over`` set to one of their ids to take its seat."""

    def __init__(self, status, code, message, body):
        super().__init__(status, code, message, body)
        self.seats = body.get("seats") or {}
        self.holders = list(body.get("sessions") or [])

    def idlest(self):
        """The holder idle the longest (the earliest ``last_activity_at``), or
        ``None``: whom ``--on-full take-over-idlest`` takes over."""
        if not self.holders:
            return None
        return min(self.holders, key=lambda s: s.get("last_activity_at") or "")


def api_error(status, raw):
    """The error of an answer with ``status`` and body ``raw`` (bytes)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body["error"]
        message = str(body.get("message", ""))
        cls = SeatsExhausted if code == "seats_exhausted" else ApiError
        return cls(status, code, message, body)
    snippet = raw.decode("utf-8", errors="replace")[:BODY_SNIPPET_CHARS]
    return ApiError(
        status,
        None,
        f"the server answered HTTP {status} without an API error body: {snippet}",
        {},
    )


class Server:
    """The address of a sessiond server and how to reach it.

    ``url`` is the server's base URL (``https://sessions.example.com``, or with a path
    prefix behind a proxy); an address without a scheme (``127.0.0.1:7420``) is taken
    as ``http://``. Over HTTPS the system's roots are trusted, and with ``ca_cert``
    (a PEM file) that file's certificates too.
    """

    def __init__(self, url, ca_cert=None):
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        parts = urllib.parse.urlsplit(text)
        # First, so that the messages below, which quote the URL, never quote a password.
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "the server URL must not carry a user name or password; "
                "pass the credential instead"
            )
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{text}: the scheme must be http or https")
        if parts.query or parts.fragment or not parts.hostname:
            raise ValueError(f"{text}: give the server's address without query or fragment")
        try:
            self.port = parts.port
        except ValueError as e:
            raise ValueError(f"{text}: {e}") from None
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.prefix = parts.path.rstrip("/")
        self.url = f"{self.scheme}://{parts.netloc}{self.prefix}"
        # The context is made for an http:// URL too, so that a CA file that cannot be
        # used is refused whatever the URL (as `sessiond connect` does).
        context = ssl.create_default_context()
        if ca_cert is not None:
            try:
                context.load_verify_locations(cafile=ca_cert)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"--ca-cert {ca_cert}: {e}") from None
        self._context = context

    def __repr__(self):
        return f"Server({self.url!r})"

    def connection(self, timeout):
        """A new connection (not yet connected) with ``timeout`` seconds for every
        connect, send and receive."""
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self._context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self, credential, accept="application/json"):
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        return headers

    def call(self, method, path, credential=None, body=None, timeout=30.0):
        """Sends one request and returns the answer's JSON; raises :class:`ApiError`
        when refused, :class:`TransportError` when the server cannot be reached."""
        headers = self._headers(credential)
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self.connection(timeout)
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(describe(e)) from None
        finally:
            conn.close()
        # Redirects are not followed (a credential must not be sent on): any status
        # from 300 up is an error.
        if status >= 300:
            raise api_error(status, raw)
        try:
            return json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            raise SeatError(f"the server's answer to {method} {path} is not JSON") from None

    def open_stream(self, path, credential=None, timeout=45.0):
        """Opens an event stream; returns ``(connection, response)`` once the server
        has answered 200. ``timeout`` bounds the connection and every read after it: a
        stream silent that long (the server sends a keep-alive every 15 s) raises
        ``OSError`` from ``response.readline``."""
        conn = self.connection(timeout)
        try:
            headers = self._headers(credential, "text/event-stream")
            conn.request("GET", self.prefix + path, headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                raw = response.read()
                conn.close()
                raise api_error(response.status, raw)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransportError(describe(e)) from None
        return conn, response


def describe(error):
    """A transport error in words (its class name when it has no message)."""
    text = str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        text = error.verify_message or text
        return f"the server's certificate is not trusted ({text})"
    return text or type(error).__name__


def quote(segment):
    """One path segment, escaped."""
    return urllib.parse.quote(segment, safe="")
