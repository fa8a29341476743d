"""``python -m sessiond_seat``: the command line, as ``sessiond-seat``."""

from .cli import main

main()
