"""One query per neural pass: the switch that makes a server's merged batch answer like a lone request.

A transformer's pass over several texts pads them to a common shape and runs matmuls whose blocking
follows the batch, so a text's vectors round differently with different neighbours (MiniLM on
SciFact, bf16: 16 of 64 query vectors differ from the same query encoded alone). Inside
:func:`solo_passes`, encoders run one text per forward pass and cross-encoders one query's pairs per
call, so every query's scores are bit for bit those it gets alone, while the stages' batched kernels
(BM25, MaxSim, dense scoring) still run over the whole batch. The dynamic batcher of ``cascade serve``
(:mod:`cascade.app.batching`) runs every merged batch inside it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_solo: ContextVar[bool] = ContextVar("cascade_solo_passes", default=False)


@contextmanager
def solo_passes() -> Iterator[None]:
    """Within the block (this thread or task), neural passes take one query (one text) at a time."""
    token = _solo.set(True)
    try:
        yield
    finally:
        _solo.reset(token)


def solo_passes_active() -> bool:
    """Whether the caller is inside :func:`solo_passes`."""
    return _solo.get()
