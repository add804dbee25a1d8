"""Per-stage timing: stages mark phases (``encode``, ``score``) that the pipeline collects."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[dict[str, float] | None] = ContextVar("cascade_timings", default=None)


@contextmanager
def timed(phase: str) -> Iterator[None]:
    """Add the wall time of the block to ``phase`` of the enclosing :func:`collect`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        acc = _current.get()
        if acc is not None:
            acc[phase] += time.perf_counter() - start


@contextmanager
def collect() -> Iterator[dict[str, float]]:
    """Gather the seconds spent per phase by :func:`timed` blocks inside this one."""
    acc: dict[str, float] = defaultdict(float)
    token = _current.set(acc)
    try:
        yield acc
    finally:
        _current.reset(token)


_run_state: ContextVar[dict | None] = ContextVar("cascade_run_state", default=None)


@contextmanager
def run_scope() -> Iterator[None]:
    """State shared by the stages of one pipeline run (e.g. a query forward pass two stages reuse).

    It ends with the run, so a later run (another sweep job in the same process) pays its own costs.
    """
    token = _run_state.set({})
    try:
        yield
    finally:
        _run_state.reset(token)


def run_memo(owner: object) -> dict | None:
    """A dict private to ``owner`` for the current pipeline run, or None outside a run."""
    state = _run_state.get()
    return None if state is None else state.setdefault(id(owner), {})
