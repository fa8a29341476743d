"""The library against a real server: what a program embedding it sees (the command
line's behaviour is the scenarios' business)."""

import os
import shutil
import subprocess
import sys

import pytest

from harness import BOUND_S, Sessiond, app_key, client_key
from sessiond_seat import ApiError, SeatClient, SeatsExhausted, TransportError

SERVER = {
    "expiry_interval_ms": 100,
    "apps": {
        "gestan": {"seats": 1, "heartbeat": {"interval_s": 1, "grace_s": 2}},
        # A heartbeat far apart, so that what arrives sooner came by the event stream.
        "slow": {"seats": 2, "heartbeat": {"interval_s": 60, "grace_s": 60}},
    },
}


def server(workdir, store="memory:"):
    return Sessiond(workdir, SERVER, store).start()


def test_open_heartbeat_logout(workdir):
    s = server(workdir)
    client = SeatClient(s.http_url, client_key("gestan"))
    seat = client.open("gestan", "ann", label="pc-ann", heartbeat=2)
    assert seat.interval == 2
    assert seat.session["user"] == "ann" and seat.session["client"]["label"] == "pc-ann"
    ack = seat.heartbeat()
    assert ack == {"status": "open", "next_heartbeat_s": 2}
    assert seat.read()["status"] == "open"
    closed = seat.logout()
    assert (closed["status"], closed["reason"]) == ("closed", "logout")
    assert seat.wait(0) is None  # given back, not ended by the server
    with pytest.raises(ApiError) as gone:
        seat.heartbeat()
    assert (gone.value.status, gone.value.code, gone.value.body["reason"]) == (
        410, "session_closed", "logout")


def test_no_token_in_what_a_program_may_print(workdir):
    s = server(workdir)
    seat = SeatClient(s.http_url, client_key("gestan")).open("gestan", "ann")
    token = seat._token
    assert token.startswith("gestan:")
    assert token not in repr(seat) and token not in str(seat.session)
    assert client_key("gestan") not in repr(SeatClient(s.http_url, client_key("gestan")))
    seat.logout()


def test_a_full_house_lists_the_holders_and_a_take_over_ends_the_holder(workdir):
    s = server(workdir)
    client = SeatClient(s.http_url, client_key("gestan"))
    ann = client.open("gestan", "ann", label="pc-ann").start()
    with pytest.raises(SeatsExhausted) as full:
        client.open("gestan", "bob")
    holders = full.value.holders
    assert [(h["id"], h["user"], h["client"]["label"]) for h in holders] == [
        (ann.id, "ann", "pc-ann")]
    # The client credential sees no addresses of others.
    assert holders[0]["client"]["ip"] is None
    assert full.value.seats == {"used": 1, "total": 1}
    bob = client.open("gestan", "bob", take_over=full.value.idlest()["id"])
    ended = ann.wait(BOUND_S)
    assert (ended.reason, ended.by, ended.exit_code) == ("taken_over", f"session:{bob.id}", 12)
    with pytest.raises(ApiError) as gone:
        client.open("gestan", "cid", take_over=ann.id)
    assert gone.value.code == "take_over_target"
    bob.logout()


def test_the_close_comes_by_the_event_stream(workdir):
    s = server(workdir)
    seat = SeatClient(s.http_url, client_key("slow")).open("slow", "ann").start()
    assert seat.interval == 60
    status, _ = s.call("DELETE", f"/v1/sessions/{seat.id}", app_key("slow"))
    assert status == 200
    # Long before the first heartbeat is due.
    ended = seat.wait(BOUND_S)
    assert (ended.reason, ended.by, ended.exit_code) == ("killed", "app", 10)


def test_the_event_stream_comes_back_after_a_server_restart(workdir):
    s = server(workdir, "file:")
    seat = SeatClient(s.http_url, client_key("slow")).open("slow", "ann").start()
    s.restart()
    status, _ = s.call("POST", "/v1/apps/slow/sessions/close-all", app_key("slow"), {})
    assert status == 200
    ended = seat.wait(BOUND_S)
    assert (ended.reason, ended.exit_code) == ("closed_all", 11)


def test_a_server_that_forgot_the_session_ends_the_seat(workdir):
    s = server(workdir)
    seat = SeatClient(s.http_url, client_key("gestan")).open("gestan", "ann").start()
    s.restart()
    ended = seat.wait(BOUND_S)
    assert (ended.reason, ended.exit_code) == (None, 1)


def test_refusals(workdir):
    s = server(workdir)
    with pytest.raises(ApiError) as wrong:
        SeatClient(s.http_url, "wrong-credential-0123456789").open("gestan", "ann")
    assert (wrong.value.status, wrong.value.code) == (401, "unauthorized")
    with pytest.raises(ApiError) as privileged:
        SeatClient(s.http_url, client_key("gestan")).server.call(
            "GET", "/v1/apps/gestan/sessions", client_key("gestan"))
    assert privileged.value.status == 403
    s.stop()
    with pytest.raises(TransportError, match="cannot talk to the sessiond server"):
        SeatClient(s.http_url, client_key("gestan")).open("gestan", "ann")


def test_the_package_installs_with_its_command(tmp_path):
    """pyproject.toml builds (offline, with the pinned setuptools) and its entry point
    runs."""
    # Built from a copy: a build leaves build/ and *.egg-info beside the sources.
    source = tmp_path / "package"
    shutil.copytree(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), source,
                    ignore=shutil.ignore_patterns("tests", "__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check",
                    "--target", str(tmp_path / "site"), str(source)],
                   check=True, timeout=120, capture_output=True)
    script = tmp_path / "site" / "bin" / "sessiond-seat"
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True,
                         timeout=BOUND_S, check=True)
    assert out.stdout.strip() == "sessiond-seat 0.1.0"
