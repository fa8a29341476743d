"""How a seat client ends: the exit codes of ``sessiond connect`` and the close reason
each one stands for.

The table is the one of ``crates/sessiond/src/exit.rs``, code for code, so that a
program using this package ends the way the reference client does and scripts can
read either the same way. The scenario tests compare the ``--help`` tables of the
three clients, so the text cannot drift from the Rust one either.
"""

# The exit codes, by name.
DONE = 0
FAILED = 1
USAGE = 2
HOUSE_FULL = 3
REFUSED = 4
KILLED = 10
CLOSED_ALL = 11
TAKEN_OVER = 12
HEARTBEAT_LOST = 13
IDLE_TIMEOUT = 14
ABSOLUTE_TIMEOUT = 15
EVICTED = 16
REPLACED = 17
LOGGED_OUT_ELSEWHERE = 18
CLOSED_OTHER = 19

# What 0 means for a seat client.
DONE_MEANING = "logged out (Ctrl-C, SIGTERM or SIGHUP: the seat is given back)"

# Every code and what it means, in the order ``--help`` lists them.
MEANINGS = (
    (DONE, DONE_MEANING),
    (FAILED, "failed: a store, the disk, the network or the server"),
    (USAGE, "bad flags, configuration or input; nothing was tried"),
    (HOUSE_FULL, "house full, no seat taken"),
    (REFUSED, "refused (user limit, license)"),
    (KILLED, "killed by an administrator"),
    (CLOSED_ALL, "closed_all: an administrator disconnected everyone"),
    (TAKEN_OVER, "taken_over by another client"),
    (HEARTBEAT_LOST, "heartbeat_lost (or lease_expired)"),
    (IDLE_TIMEOUT, "idle_timeout"),
    (ABSOLUTE_TIMEOUT, "absolute_timeout"),
    (EVICTED, "evicted to make room"),
    (REPLACED, "replaced: the same user connected elsewhere"),
    (LOGGED_OUT_ELSEWHERE, "logged out elsewhere"),
    (CLOSED_OTHER, "closed for another reason"),
)

# Each close reason the server sends, with its exit code and the words that tell the
# user what happened. A reason not listed (a newer server) ends with CLOSED_OTHER.
REASONS = {
    "killed": (KILLED, "an administrator closed this session"),
    "closed_all": (CLOSED_ALL, "an administrator disconnected everyone"),
    "taken_over": (TAKEN_OVER, "another client took this seat over"),
    "heartbeat_lost": (HEARTBEAT_LOST, "the server stopped hearing from this client"),
    "lease_expired": (
        HEARTBEAT_LOST,
        "the server stopped hearing from this client, and its seat's lease ran out",
    ),
    "idle_timeout": (IDLE_TIMEOUT, "the session was idle too long"),
    "absolute_timeout": (ABSOLUTE_TIMEOUT, "the session reached its maximum lifetime"),
    "evicted": (EVICTED, "the session was evicted to make room"),
    "replaced": (REPLACED, "the same user connected elsewhere"),
    "logout": (LOGGED_OUT_ELSEWHERE, "the session was logged out"),
}

# Refusals of an open that the user must fix (exit REFUSED); any other refusal is
# FAILED.
REFUSALS = frozenset({"user_limit", "license_expired", "license_invalid"})


def exit_code_for(reason):
    """The exit code of a seat whose session was closed for ``reason``."""
    return REASONS.get(reason, (CLOSED_OTHER, ""))[0]


def explain(reason):
    """What a close ``reason`` means, in words for the user."""
    return REASONS.get(reason, (CLOSED_OTHER, "the session was closed"))[1]


def help_table():
    """The ``Exit codes:`` section of ``--help``, laid out as ``sessiond`` lays it."""
    lines = ["Exit codes:"]
    for code, meaning in MEANINGS:
        lines.append(f"  {code:<2}  {meaning}")
    return "\n".join(lines) + "\n"
