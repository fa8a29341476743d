"""A seat: a session opened with an app's client credential and kept alive.

:class:`SeatClient` opens it (``POST /v1/apps/{app}/sessions``); a full house raises
:class:`~sessiond_seat.transport.SeatsExhausted` with the holders, and opening again with
``take_over`` takes one of their seats. :class:`Seat` then acts with the session's own
token: one thread heartbeats at the interval the server gives, another listens to the
session's event stream (reconnecting when it drops, as across a server restart), and
whichever first learns that the session closed ends the seat with an :class:`Ended`
that says why, in words and as the exit code ``sessiond connect`` would use.

Two threads rather than one loop: a heartbeat must not wait behind a stream read that
blocks for up to its idle timeout, and the standard library has no event loop that
reads a socket and keeps a timer without one.
"""

import http.client
import random
import socket
import threading
import time

from . import exits
from .transport import ApiError, SeatError, Server, TransportError, quote
from .sse import Parser, StreamError

# The heartbeat interval when the session has none (as `sessiond connect`).
DEFAULT_INTERVAL_S = 30
# Reconnection of the event stream: the first wait, doubling after each failed attempt
# up to the longest, each drawn between half and all of it (as sessiond-client).
RECONNECT_INITIAL_S = 0.25
RECONNECT_MAX_S = 30.0
# A stream silent this long (the server sends a keep-alive every 15 s) is taken for
# dead and replaced.
STREAM_IDLE_TIMEOUT_S = 45.0


class Ended:
    """How a seat ended.

    ``reason`` is the close reason the server gave (``killed``, ``taken_over``...), or
    ``None`` when the server no longer knows the session at all (its token is refused:
    a server restarted without keeping its sessions, or the token was replaced).
    ``by`` is who closed it (``app``, ``expiry``, ``session:<id>``...) when known.
    ``exit_code`` is the code ``sessiond connect`` exits with; ``str()`` gives the
    sentence it prints.
    """

    __slots__ = ("reason", "by", "exit_code", "explanation")

    def __init__(self, reason, by=None):
        self.reason = reason
        self.by = by
        if reason is None:
            self.exit_code = exits.FAILED
            self.explanation = (
                "the server no longer knows this session (it restarted without keeping "
                "its sessions, or the session's token was replaced); start again to "
                "take a seat"
            )
        else:
            self.exit_code = exits.exit_code_for(reason)
            self.explanation = exits.explain(reason)

    def __str__(self):
        if self.reason is None:
            return f"Disconnected: {self.explanation}."
        by = f", by {self.by}" if self.by else ""
        return f"Disconnected: {self.explanation} ({self.reason}{by})."

    def __repr__(self):
        return f"Ended(reason={self.reason!r}, by={self.by!r}, exit_code={self.exit_code})"


def reconnect_delay(failures):
    """The wait before reconnection attempt ``failures + 1``, jittered."""
    full = min(RECONNECT_INITIAL_S * (2 ** min(failures, 16)), RECONNECT_MAX_S)
    return random.uniform(full / 2, full)


def retryable(status):
    """Whether a refused stream may be had by trying again: the server cannot now (5xx,
    429 while the old stream is still counted, 408). Other refusals are final."""
    return status >= 500 or status in (408, 429)


class SeatClient:
    """Opens seats in a server's apps with an app's client credential (``client_key``).

    ``credential`` may also be the app key or the admin token (what
    ``sessiond connect --token`` accepts), but a program installed on users' machines
    should carry the client credential only: it can take a seat and nothing else.
    ``timeout`` bounds each call, in seconds.
    """

    def __init__(self, server, credential=None, ca_cert=None, timeout=30.0, user_agent=None):
        self.server = server if isinstance(server, Server) else Server(server, ca_cert)
        self._credential = credential
        self.timeout = timeout
        self.user_agent = user_agent

    def __repr__(self):
        return f"SeatClient({self.server.url!r})"

    def open(self, app, user, label=None, heartbeat=None, take_over=None):
        """Opens a seat in ``app`` for ``user`` and returns it, not yet started.

        ``label`` names this client (a machine name); ``heartbeat`` asks for an
        interval in seconds instead of the app's; ``take_over`` is the id of an open
        session whose seat to take (it closes as ``taken_over``). Raises
        :class:`~sessiond_seat.transport.SeatsExhausted` on a full house, another
        :class:`~sessiond_seat.transport.ApiError` when refused (``user_limit``,
        ``take_over_target`` when that session is no longer open, a license...),
        :class:`~sessiond_seat.transport.TransportError` when the server cannot be reached.
        """
        client = {}
        if label is not None:
            client["label"] = label
        if self.user_agent is not None:
            client["user_agent"] = self.user_agent
        body = {"user": user}
        if client:
            body["client"] = client
        if heartbeat is not None:
            body["heartbeat"] = {"interval_s": heartbeat}
        if take_over is not None:
            body["take_over"] = take_over
        opened = self.server.call(
            "POST", f"/v1/apps/{quote(app)}/sessions", self._credential, body, self.timeout
        )
        token = opened.pop("token", None)
        if not isinstance(token, str) or not token:
            raise SeatError("the server's answer to an open carries no token")
        return Seat(self.server, opened, token, self.timeout)


class Seat:
    """An open seat; act on it with its own token (kept out of ``repr`` and messages).

    :meth:`start` begins heartbeating and listening, :meth:`wait` blocks until the
    session is closed (or the timeout), :meth:`logout` gives the seat back, :meth:`stop`
    stops the threads without giving it back (it then frees itself after the heartbeat
    interval and grace).
    """

    def __init__(self, server, session, token, timeout=30.0):
        self.server = server
        self.session = session
        self.timeout = timeout
        self._token = token
        beat = session.get("heartbeat") or {}
        self.interval = max(int(beat.get("interval_s") or DEFAULT_INTERVAL_S), 1)
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._ended = None
        self._stream_conn = None
        self._warn = None
        self._threads = []

    @property
    def id(self):
        """The session id."""
        return self.session.get("id")

    def __repr__(self):
        return f"Seat(id={self.id!r}, app={self.session.get('app')!r})"

    @property
    def ended(self):
        """How the seat ended, or ``None`` while it is open."""
        return self._ended

    def start(self, on_warning=None):
        """Starts the heartbeat and the event stream (daemon threads). ``on_warning``
        is called with a sentence when a heartbeat fails and will be retried."""
        self._warn = on_warning
        for target, name in ((self._beat, "heartbeat"), (self._listen, "events")):
            thread = threading.Thread(target=target, name=f"sessiond-seat-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wait(self, timeout=None):
        """Blocks until the seat ends and returns its :class:`Ended`, or ``None`` after
        ``timeout`` seconds."""
        self._done.wait(timeout)
        return self._ended

    def heartbeat(self):
        """``POST /v1/session/heartbeat`` once; returns ``{status, next_heartbeat_s}``.
        A closed session raises :class:`~sessiond_seat.transport.ApiError` 410
        ``session_closed`` (its ``body`` has ``reason`` and ``closed_by``)."""
        return self.server.call("POST", "/v1/session/heartbeat", self._token, None, self.timeout)

    def read(self):
        """``GET /v1/session?touch=false``: the session as the server has it, without
        counting as activity."""
        return self.server.call("GET", "/v1/session?touch=false", self._token, None, self.timeout)

    def logout(self):
        """``DELETE /v1/session``: gives the seat back (the session closes as
        ``logout``) and stops the threads. Returns the closed session."""
        self.stop()
        return self.server.call("DELETE", "/v1/session", self._token, None, self.timeout)

    def stop(self):
        """Stops heartbeating and listening (a :meth:`wait` returns); the session
        stays open on the server."""
        self._stopping.set()
        self._done.set()
        conn = self._stream_conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _end(self, ended):
        with self._lock:
            if self._ended is not None or self._stopping.is_set():
                return
            self._ended = ended
        self.stop()
        self._done.set()

    def _warning(self, text):
        if self._warn is not None:
            self._warn(text)

    def _beat(self):
        interval = self.interval
        due = time.monotonic() + interval
        while not self._stopping.wait(max(due - time.monotonic(), 0)):
            try:
                ack = self.heartbeat()
            except ApiError as e:
                if e.code == "session_closed":
                    self._end(Ended(e.body.get("reason") or "unknown", e.body.get("closed_by")))
                    return
                if e.code == "invalid_token":
                    # The token matches no session: retrying cannot bring it back.
                    self._end(Ended(None))
                    return
                self._warning(f"heartbeat failed (will retry): {e}")
            except SeatError as e:
                self._warning(f"heartbeat failed (will retry): {e}")
            else:
                following = ack.get("next_heartbeat_s")
                if isinstance(following, int) and following > 0 and following != interval:
                    interval = following
                    due = time.monotonic()
            # Beats keep their rhythm; one that came late is not made up twice.
            due = max(due + interval, time.monotonic())

    def _listen(self):
        failures = 0
        while not self._stopping.is_set():
            try:
                conn, response = self.server.open_stream(
                    "/v1/session/events", self._token, STREAM_IDLE_TIMEOUT_S
                )
            except ApiError as e:
                if not retryable(e.status):
                    # Refused for good (the token no longer works): the heartbeat
                    # finds out why.
                    return
                failures += 1
            except TransportError:
                failures += 1
            else:
                failures = 0
                if self._read(conn, response):
                    return
            if self._stopping.wait(reconnect_delay(failures)):
                return

    def _read(self, conn, response):
        """Reads one connection of the stream; True when the stream is over."""
        self._stream_conn = conn
        if self._stopping.is_set():
            conn.close()
            return True
        parser = Parser()
        try:
            while True:
                line = response.readline(65536)
                if not line:
                    return False
                for event in parser.feed(line):
                    if event.event == "closed":
                        data = event.data if isinstance(event.data, dict) else {}
                        self._end(Ended(data.get("reason") or "unknown", data.get("by")))
                        return True
                    if event.event == "privileges_changed":
                        # The token was replaced; the old one stops working.
                        return True
        except StreamError:
            # Not a sessiond stream; the heartbeat still tells when the session closes.
            return True
        except (OSError, ValueError, http.client.HTTPException):
            return False
        finally:
            self._stream_conn = None
            conn.close()
