"""A seat client of sessiond, standard library only (Python 3.9+).

Open a seat with an app's client credential, keep it alive and learn why it ended::

    from sessiond_seat import SeatClient, SeatsExhausted

    client = SeatClient("https://sessions.example.com", client_key)
    try:
        seat = client.open("gestan", "ann", label="desk-1")
    except SeatsExhausted as full:
        seat = client.open("gestan", "ann", label="desk-1", take_over=full.idlest()["id"])
    seat.start()
    ended = seat.wait()          # blocks until the session is closed
    print(ended)                 # "Disconnected: an administrator closed this session (killed, by app)."
    raise SystemExit(ended.exit_code)

``seat.logout()`` gives the seat back. The command line (``sessiond-seat`` or
``python -m sessiond_seat``) behaves as ``sessiond connect``; docs/CLIENTS.md has the
protocol step by step.
"""

from . import exits
from .exits import exit_code_for, explain
from .seat import Ended, Seat, SeatClient
from .transport import ApiError, SeatError, SeatsExhausted, Server, TransportError
from .version import __version__

__all__ = [
    "ApiError",
    "Ended",
    "Seat",
    "SeatClient",
    "SeatError",
    "SeatsExhausted",
    "Server",
    "TransportError",
    "exit_code_for",
    "exits",
    "explain",
    "__version__",
]
