"""``sessiond-seat``: the seat client on the command line, with the flags, the words and
the exit codes of ``sessiond connect`` (``crates/sessiond/src/connect.rs``).

It opens a seat; when the house is full it shows the holders and asks which to take
over (or quits, or takes the idlest); it heartbeats at the interval the server gives;
it listens to its event stream; when its session is closed it prints why and exits
with the code of the reason; Ctrl-C, SIGTERM and SIGHUP log out and exit 0.
"""

import argparse
import os
import signal
import sys
import re

from . import exits
from .seat import SeatClient
from .transport import ApiError, SeatError, SeatsExhausted
from .version import __version__

PROG = "sessiond-seat"
DEFAULT_SERVER = "http://127.0.0.1:7420"
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


# A session id as ``Uuid::parse_str`` reads it: hyphenated, simple, braced or URN.
_HYPHENATED = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SESSION_ID = re.compile(
    f"(?:[0-9a-f]{{32}}|{_HYPHENATED}|\\{{{_HYPHENATED}\\}}|urn:uuid:{_HYPHENATED})",
    re.IGNORECASE,
)


class _Usage(Exception):
    """Bad flags: exit 2 with this message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _Usage(message)


def parser():
    """The command line's flags (``sessiond connect``'s, less ``--data-dir``)."""
    p = _Parser(
        prog=PROG,
        description=(
            "Take a seat in an app, like a desktop client: heartbeat, listen, exit when "
            "closed"
        ),
        epilog=exits.help_table()
        + "\nExamples:\n"
        + f'  {PROG} --app gestan --user ann --label desk-1 --token "$GESTAN_KEY"\n'
        + f"  {PROG} --app gestan --user bob --on-full take-over-idlest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    p.add_argument(
        "--server",
        default=env("SESSIOND_SERVER", DEFAULT_SERVER),
        help=f"URL of the sessiond server [env: SESSIOND_SERVER] [default: {DEFAULT_SERVER}]",
    )
    p.add_argument(
        "--token",
        default=env("SESSIOND_TOKEN"),
        help="the app's client credential (client_key, made for programs on users' "
        "machines: it can only take a seat), or its app key, or the admin token "
        "[env: SESSIOND_TOKEN]",
    )
    p.add_argument(
        "--ca-cert",
        metavar="PEM",
        default=env("SESSIOND_CA_CERT"),
        help="for an https:// server whose certificate a private CA signed: that CA's "
        "certificate (PEM), trusted besides the system's roots [env: SESSIOND_CA_CERT]",
    )
    p.add_argument("--app", required=True, help="the app to take a seat in")
    p.add_argument("--user", required=True, help="the user")
    p.add_argument("--label", help="a label for this client (machine name...)")
    p.add_argument(
        "--heartbeat",
        type=_seconds,
        help="heartbeat interval in seconds (default: the app's, else 30)",
    )
    p.add_argument(
        "--on-full",
        choices=("ask", "quit", "take-over-idlest"),
        help="what to do when every seat is taken: ask which to take over (the default "
        "on a terminal), quit with exit code 3 (the default otherwise), or take over "
        "the seat idle the longest",
    )
    p.add_argument("--take-over", help="take over this session's seat right away")
    p.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    return p


def _seconds(text):
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid digit found in string: {text!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text} is out of range")
    return value


def say(text=""):
    """A line for the user, on standard output, at once."""
    print(text, flush=True)


def complain(text):
    """A line on standard error, at once."""
    print(text, file=sys.stderr, flush=True)


def short_time(rfc3339):
    """``2026-05-01T08:00:00.123Z`` as ``2026-05-01 08:00:00Z``; anything else as is."""
    if not isinstance(rfc3339, str):
        return "-"
    if len(rfc3339) < 20 or rfc3339[10] != "T":
        return rfc3339
    zone = rfc3339[19:].lstrip(".0123456789")
    return f"{rfc3339[:10]} {rfc3339[11:19]}{zone}"


def rows(indent, lines):
    """Columns two spaces apart, each as wide as its widest cell, no trailing spaces."""
    widths = []
    for cells in lines:
        widths += [0] * (len(cells) - len(widths))
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], len(cell))
    out = []
    for cells in lines:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(cells)]
        out.append((indent + "  ".join(padded)).rstrip() + "\n")
    return "".join(out)


def holders_text(holders):
    """The seat holders of a full house, numbered from 1 as the prompt asks."""
    lines = []
    for i, s in enumerate(holders):
        client = s.get("client") or {}
        lines.append(
            [
                f"[{i + 1}]",
                s.get("user") or "(guest)",
                client.get("label") or "-",
                client.get("ip") or "-",
                f"opened {short_time(s.get('created_at'))}",
                f"last activity {short_time(s.get('last_activity_at'))}",
                f"last heartbeat {short_time(s.get('last_heartbeat_at'))}",
            ]
        )
    return rows("  ", lines)


def full_house_text(app, seats):
    total = seats.get("total")
    if total == 1:
        return f"The only seat of {app} is taken:"
    if total is None:
        return f"Every seat of {app} is taken:"
    return f"All {total} seats of {app} are taken:"


def ask(prompt):
    """The answer to ``prompt`` from standard input, or ``None`` at its end."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        return None
    return line.strip()


def choose(on_full, full):
    """The id of the holder to take over, or ``None`` to quit."""
    if on_full == "take-over-idlest":
        idlest = full.idlest()
        return idlest.get("id") if idlest else None
    if on_full == "ask":
        answer = ask("Take over which seat? Enter its number, or q to quit: ")
        try:
            n = int(answer or "", 10)
        except ValueError:
            return None
        if 1 <= n <= len(full.holders):
            return full.holders[n - 1].get("id")
    return None


class _Stop(BaseException):
    """A stop signal arrived while the seat was held."""


def _raise_stop(signum, frame):
    raise _Stop()


def run(argv=None):
    """Runs the seat client to its end and returns the exit code."""
    try:
        args = parser().parse_args(argv)
    except _Usage as e:
        complain(f"{PROG}: {e}")
        return exits.USAGE
    try:
        client = SeatClient(
            args.server,
            args.token,
            ca_cert=args.ca_cert,
            user_agent=f"sessiond-seat-python/{__version__}",
        )
    except ValueError as e:
        complain(f"{PROG}: {e}")
        return exits.FAILED
    if args.take_over is not None:
        if not SESSION_ID.fullmatch(args.take_over):
            complain(
                f"{PROG}: --take-over {args.take_over[:64]!r}: not a session id "
                "(see `sessiond sessions list`)"
            )
            return exits.USAGE
    interactive = sys.stdin is not None and sys.stdin.isatty()
    on_full = args.on_full or ("ask" if interactive else "quit")
    take_over = args.take_over
    # Whether the take-over being tried is the one the flag asked for (not a holder
    # picked after a full house, which may have left meanwhile).
    asked = take_over is not None
    while True:
        asked_now, asked = asked, False
        try:
            seat = client.open(
                args.app, args.user, label=args.label, heartbeat=args.heartbeat, take_over=take_over
            )
            break
        except SeatsExhausted as full:
            say(full_house_text(args.app, full.seats))
            sys.stdout.write(holders_text(full.holders))
            choice = choose(on_full, full)
            if choice is None:
                say("No seat taken; quitting.")
                return exits.HOUSE_FULL
            say(f"Taking over seat {choice}...")
            take_over = choice
            continue
        except ApiError as e:
            if e.code == "take_over_target":
                if asked_now:
                    complain(f"{PROG}: --take-over: no open session of {args.app} has that id")
                    return exits.USAGE
                say("That seat was freed or taken meanwhile; trying again.")
                take_over = None
                continue
            complain(f"{PROG}: cannot connect: {e}")
            return exits.REFUSED if e.code in exits.REFUSALS else exits.FAILED
        except SeatError as e:
            complain(f"{PROG}: cannot connect: {e}")
            return exits.FAILED
    # Signals are caught before the user is told to press Ctrl-C, so that no signal
    # after that line leaves the seat taken.
    for s in STOP_SIGNALS:
        signal.signal(s, _raise_stop)
    ended = None
    try:
        say(
            f"Connected to {args.app} as {args.user} (session {seat.id}). "
            f"Heartbeat every {seat.interval} s. Press Ctrl-C to disconnect."
        )
        seat.start(on_warning=complain)
        ended = seat.wait()
    except _Stop:
        pass
    finally:
        # A second signal while logging out changes nothing (as `sessiond connect`).
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
    if ended is not None:
        say(str(ended))
        return ended.exit_code
    try:
        seat.logout()
        say("Logged out.")
    except SeatError as e:
        complain(f"logout failed: {e}")
    return exits.DONE


def main(argv=None):
    """The console entry point."""
    try:
        code = run(argv)
    except KeyboardInterrupt:
        # Ctrl-C before the seat was held: end as the signal would have ended us.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    sys.exit(code)
