"""Named points where a saved-index writer may be killed, for the tests that kill it there.

Every step of a write that leaves a file behind calls :func:`crash_point`. With the environment
variable ``CASCADE_KILL_AT=i`` the process sends itself SIGKILL at the ``i``-th point it reaches
(no cleanup, no ``finally``: what a power cut or the OOM killer does); with
``CASCADE_KILL_LOG=FILE`` it appends each point's name to FILE, so a test can count the points of
an operation and then kill it at every one. Without either variable a point costs one dict lookup.
"""
from __future__ import annotations

import os
import signal

KILL_AT = "CASCADE_KILL_AT"
KILL_LOG = "CASCADE_KILL_LOG"
_reached = 0


def crash_point(name: str) -> None:
    """Count this point; log it and kill the process here when the environment asks for it."""
    global _reached
    at, log = os.environ.get(KILL_AT), os.environ.get(KILL_LOG)
    if at is None and log is None:
        return
    _reached += 1
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{_reached} {name}\n")
    if at is not None and int(at) == _reached:
        os.kill(os.getpid(), signal.SIGKILL)
