"""The event-stream framing (Server-Sent Events, the WHATWG rules): ``event:``,
``data:`` and ``id:`` lines, comments, a blank line to dispatch, any of ``\\n``,
``\\r\\n`` or ``\\r`` to end a line even when a chunk ends between the two bytes of
``\\r\\n``. It is fed bytes as they come and hands out complete events.

The seat only reads its session's stream, whose frames carry no ``id:``; the last event
id is kept anyway, as the rules say, so that the parser also serves an app stream
(where a reconnection sends it back as ``Last-Event-ID`` and may get ``resync``).
"""

import json

# Longest line, and longest event data, accepted. The server's events are a few hundred
# bytes; this only stops a broken peer from filling memory.
MAX_EVENT_BYTES = 1 << 20


class StreamError(Exception):
    """The stream sent something no sessiond server sends (an event over the limit)."""


class Event:
    """One event: its type (``message`` when the frame had no ``event:`` line), its
    ``id:`` if it had one, and its data parsed as JSON (the text when it is not)."""

    __slots__ = ("event", "id", "data")

    def __init__(self, event, id, data):
        self.event = event
        self.id = id
        self.data = data

    def __repr__(self):
        return f"Event(event={self.event!r}, id={self.id!r}, data={self.data!r})"

    def __eq__(self, other):
        return isinstance(other, Event) and (self.event, self.id, self.data) == (
            other.event,
            other.id,
            other.data,
        )


class Parser:
    """Turns the bytes of one connection into events; see :meth:`feed`."""

    def __init__(self, last_event_id=""):
        self._line = bytearray()
        self._after_cr = False
        self._seen_line = False
        self._event = None
        self._data = []
        self._data_bytes = 0
        self._id = None
        self._id_buffer = last_event_id
        self.last_event_id = last_event_id
        """The id a reconnection sends back (the last ``id:`` of a complete frame)."""

    def feed(self, chunk):
        """Reads ``chunk`` (bytes) and returns the events it completed, in order."""
        events = []
        start = 0
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                start = 1
        i = start
        n = len(chunk)
        while i < n:
            b = chunk[i]
            if b == 0x0A or b == 0x0D:
                self._line += chunk[start:i]
                self._check_size()
                line = bytes(self._line)
                self._line = bytearray()
                event = self._line_done(line)
                if event is not None:
                    events.append(event)
                if b == 0x0D:
                    if i + 1 < n:
                        if chunk[i + 1] == 0x0A:
                            i += 1
                    else:
                        self._after_cr = True
                start = i + 1
            i += 1
        self._line += chunk[start:]
        self._check_size()
        return events

    def _check_size(self):
        if len(self._line) > MAX_EVENT_BYTES or self._data_bytes > MAX_EVENT_BYTES:
            raise StreamError(f"an event is over {MAX_EVENT_BYTES} bytes")

    def _line_done(self, raw):
        if not self._seen_line:
            self._seen_line = True
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        if not raw:
            return self._dispatch()
        if raw.startswith(b":"):
            return None
        line = raw.decode("utf-8", errors="replace")
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
            self._data_bytes += len(value) + 1
            self._check_size()
        elif field == "id":
            if "\0" not in value:
                self._id = value
                self._id_buffer = value
        # `retry:` and unknown fields are ignored: the reconnection delay is the
        # client's own (with backoff), whatever the server suggests.
        return None

    def _dispatch(self):
        self.last_event_id = self._id_buffer
        event_type, frame_id, data = self._event, self._id, self._data
        self._event, self._id, self._data, self._data_bytes = None, None, [], 0
        if not data:
            return None
        text = "\n".join(data)
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        return Event(event_type or "message", frame_id, value)
