"""What the package says and which code it ends with, without a server: the close reasons
and their exit codes, the holders' table, the command line's flags, the URL rules and
the API's error bodies."""

import json

import pytest

from sessiond_seat import exits
from sessiond_seat.cli import SESSION_ID, full_house_text, holders_text, parser, run, short_time
from sessiond_seat.seat import Ended
from sessiond_seat.transport import ApiError, SeatsExhausted, Server, api_error

# crates/sessiond/src/exit.rs, Exit::closed: the reason each code stands for.
CONNECT_EXITS = {
    "killed": 10, "closed_all": 11, "taken_over": 12, "heartbeat_lost": 13, "lease_expired": 13,
    "idle_timeout": 14, "absolute_timeout": 15, "evicted": 16, "replaced": 17,
    "logout": 18, "something_new": 19, "unknown": 19,
}


def test_every_close_reason_ends_with_the_code_of_connect():
    for reason, code in CONNECT_EXITS.items():
        assert exits.exit_code_for(reason) == code, reason
        assert Ended(reason, "app").exit_code == code
    codes = [code for code, _ in exits.MEANINGS]
    assert len(codes) == len(set(codes)) == 15


def test_what_the_user_is_told():
    assert str(Ended("taken_over", "session:01a2")) == (
        "Disconnected: another client took this seat over (taken_over, by session:01a2)."
    )
    assert str(Ended("killed")) == "Disconnected: an administrator closed this session (killed)."
    assert str(Ended("brand_new", "system")) == (
        "Disconnected: the session was closed (brand_new, by system)."
    )
    forgotten = Ended(None)
    assert forgotten.exit_code == exits.FAILED
    assert str(forgotten).startswith("Disconnected: the server no longer knows this session")


def holder(user, label, opened):
    return {
        "id": "0192f3c4-7a1e-7c2b-9d4e-5f6a7b8c9d0e", "user": user,
        "client": {"label": label, "ip": "10.0.0.7", "user_agent": None},
        "created_at": opened, "last_activity_at": "2026-05-01T08:30:00.250Z",
        "last_heartbeat_at": "2026-05-01T08:31:00.000Z",
    }


def test_holders_are_numbered_from_one_in_aligned_columns():
    # The same rows as connect.rs's own test of its table.
    text = holders_text([
        holder("ann", "pc-ann", "2026-05-01T08:00:00.000Z"),
        holder(None, None, "2026-04-30T23:59:59.999Z"),
    ])
    assert text == (
        "  [1]  ann      pc-ann  10.0.0.7  opened 2026-05-01 08:00:00Z  "
        "last activity 2026-05-01 08:30:00Z  last heartbeat 2026-05-01 08:31:00Z\n  "
        "[2]  (guest)  -       10.0.0.7  opened 2026-04-30 23:59:59Z  "
        "last activity 2026-05-01 08:30:00Z  last heartbeat 2026-05-01 08:31:00Z\n"
    )
    assert short_time("not a time") == "not a time"
    assert short_time("2026-05-01T08:00:00+02:00") == "2026-05-01 08:00:00+02:00"


def test_the_full_house_sentence():
    assert full_house_text("gestan", {"used": 1, "total": 1}) == "The only seat of gestan is taken:"
    assert full_house_text("gestan", {"used": 5, "total": 5}) == "All 5 seats of gestan are taken:"
    assert full_house_text("gestan", {"used": 5, "total": None}) == "Every seat of gestan is taken:"


def test_flags_and_their_environment(monkeypatch):
    monkeypatch.setenv("SESSIOND_SERVER", "https://seats.example")
    monkeypatch.setenv("SESSIOND_TOKEN", "from-the-environment")
    args = parser().parse_args(["--app", "gestan", "--user", "ann", "--heartbeat", "5",
                                "--on-full", "take-over-idlest"])
    assert (args.server, args.token, args.heartbeat, args.on_full) == (
        "https://seats.example", "from-the-environment", 5, "take-over-idlest")
    assert parser().parse_args(["--app", "a", "--user", "u", "--token", "flag"]).token == "flag"


@pytest.mark.parametrize("argv", [
    [], ["--app", "gestan"], ["--app", "a", "--user", "u", "--heartbeat", "-1"],
    ["--app", "a", "--user", "u", "--on-full", "never"], ["--app", "a", "--user", "u", "extra"],
    ["--app", "a", "--user", "u", "--take-over", "01a2"],
])
def test_bad_flags_exit_2(argv, capsys):
    assert run(argv) == exits.USAGE
    assert "sessiond-seat: " in capsys.readouterr().err


def test_session_ids_as_connect_reads_them():
    h = "01a24ef5-b637-7145-b234-3c191bf16474"
    for ok in (h, h.upper(), h.replace("-", ""), "{" + h + "}", "urn:uuid:" + h):
        assert SESSION_ID.fullmatch(ok), ok
    for bad in ("", h[:-1], h + "0", "{" + h, h.replace("-", "", 1)):
        assert not SESSION_ID.fullmatch(bad), bad


def test_server_urls():
    assert Server("127.0.0.1:7420").url == "http://127.0.0.1:7420"
    assert Server("https://example.com/sessions/").url == "https://example.com/sessions"
    with pytest.raises(ValueError) as refused:
        Server("https://me:hunter22@example.com")
    assert "hunter22" not in str(refused.value)
    for bad in ("ftp://example.com", "http://example.com/?x=1", "http://example.com/#f",
                "http://example.com:99999"):
        with pytest.raises(ValueError):
            Server(bad)


def test_a_ca_file_that_is_no_certificate_is_refused(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="--ca-cert"):
        Server("https://example.com", ca_cert=str(junk))
    with pytest.raises(ValueError, match="--ca-cert"):
        Server("https://example.com", ca_cert=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="--ca-cert"):
        Server("http://example.com", ca_cert=str(junk))


def test_api_error_bodies():
    full = api_error(409, json.dumps({
        "error": "seats_exhausted", "message": "all 2 seats are taken",
        "seats": {"used": 2, "total": 2},
        "sessions": [{"id": "a", "last_activity_at": "2026-05-01T08:00:01.000Z"},
                     {"id": "b", "last_activity_at": "2026-05-01T08:00:00.000Z"},
                     {"id": "c", "last_activity_at": "2026-05-01T08:00:00.000Z"}],
    }).encode())
    assert isinstance(full, SeatsExhausted)
    assert full.seats == {"used": 2, "total": 2}
    assert full.idlest()["id"] == "b"
    assert str(full) == "all 2 seats are taken (seats_exhausted)"
    closed = api_error(410, b'{"error":"session_closed","message":"closed","reason":"killed"}')
    assert type(closed) is ApiError and closed.body["reason"] == "killed"
    proxy = api_error(502, b"<html>" + b"x" * 500)
    assert proxy.code is None and proxy.status == 502
    assert str(proxy).startswith("the server answered HTTP 502 without an API error body: <html>")
    assert len(str(proxy)) < 300
