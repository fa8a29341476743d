"""The event-stream framing, byte by byte: whatever the chunks, the same events."""

import pytest

from sessiond_seat.sse import MAX_EVENT_BYTES, Event, Parser, StreamError

STREAM = (
    b": keep-alive\n\n"
    b"event: closed\r\n"
    b'data: {"id":"s1","reason":"killed","by":"app"}\r\n\r\n'
    b"id: 3f9a0c51d2e4b877-7\r"
    b"event: opened\r"
    b"data: first line\r"
    b"data: second line\r\r"
    b"data: 42\n\n"
)
EVENTS = [
    Event("closed", None, {"id": "s1", "reason": "killed", "by": "app"}),
    Event("opened", "3f9a0c51d2e4b877-7", "first line\nsecond line"),
    Event("message", None, 42),
]


def feed_all(parser, chunks):
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def test_one_chunk():
    assert feed_all(Parser(), [STREAM]) == EVENTS


def test_every_split_point_and_byte_by_byte():
    for cut in range(len(STREAM) + 1):
        assert feed_all(Parser(), [STREAM[:cut], STREAM[cut:]]) == EVENTS, cut
    assert feed_all(Parser(), [STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS


def test_the_last_event_id_stays_across_frames_and_a_bom_is_dropped():
    parser = Parser()
    assert parser.feed(b"\xef\xbb\xbfid: e-1\ndata: x\n\n") == [Event("message", "e-1", "x")]
    assert parser.last_event_id == "e-1"
    # A frame with an id and no data dispatches nothing but moves the id on.
    assert parser.feed(b"id: e-2\n\n") == []
    assert parser.last_event_id == "e-2"
    assert parser.feed(b"data: y\n\n") == [Event("message", None, "y")]
    assert parser.last_event_id == "e-2"
    # An id with a NUL is ignored, as the rules say.
    parser.feed(b"id: bad\x00id\ndata: z\n\n")
    assert parser.last_event_id == "e-2"


def test_a_field_without_colon_and_without_space():
    # A bare `data` line is an empty data line: the frame is an event with data "".
    assert Parser().feed(b"data\n\nevent:x\ndata:1\n\n") == [
        Event("message", None, ""), Event("x", None, 1)]


def test_a_frame_left_unfinished_is_not_dispatched():
    assert Parser().feed(b"event: closed\ndata: {}\n") == []


def test_an_oversized_event_is_refused():
    with pytest.raises(StreamError):
        Parser().feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1))
    parser = Parser()
    with pytest.raises(StreamError):
        for _ in range(MAX_EVENT_BYTES // 1000 + 2):
            parser.feed(b"data: " + b"x" * 1000 + b"\n")
