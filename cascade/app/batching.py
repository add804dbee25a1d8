"""Dynamic batching: concurrent search requests merged into one pipeline call.

A :class:`Batcher` owns one worker thread. Requests (a few queries and a ``k`` each) wait in a
queue; the worker takes the first, then keeps taking queued requests for up to ``max_wait_ms``
or until ``max_batch`` queries are gathered, runs the searcher once over all their queries and
hands every request its own rows, cut at its own ``k``. The call runs inside
:func:`cascade.core.passes.solo_passes`: encoders take one query per forward pass (cross-encoders one
query's pairs), because a transformer's pass over a padded batch rounds differently from its pass over
one query, while BM25, MaxSim and dense scoring still run over the whole batch. So a request's answer
is bit for bit the one it gets alone (``tests/test_serve_batching.py``, and
``experiments/serve/equivalence.py`` on SciFact with MiniLM). ``max_batch=1`` runs requests one at a
time, in arrival order.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from cascade.core.passes import solo_passes
from cascade.core.stage import check_positive

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One request waiting for the worker: its queries, its ``k`` and the future it is answered on."""

    queries: tuple[str, ...]
    k: int
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchInfo:
    """What one pipeline call was: queries and requests merged, seconds queued before it, seconds it ran."""

    queries: int
    requests: int
    wait_s: float
    run_s: float


# the function a batcher runs: (all queries, the largest k) -> one result per query, then the
# batch's shared trace; ``cut(result, k)`` narrows one query's result to a request's k (results and
# traces are the caller's own types: the batcher only hands them on, hence Any)
RunFn = Callable[[Sequence[str], int], tuple[list, Any]]
CutFn = Callable[[Any, int], Any]


class Batcher:
    """Merge concurrent requests into one ``run(queries, k)`` call (see the module docstring).

    Args:
        run: ``run(queries, k) -> (results, trace)``, one result per query, ``trace`` shared.
        cut: ``cut(result, k)``: one query's result narrowed to a smaller ``k``.
        max_batch: most queries per call (a request larger than that runs alone, whole).
        max_wait_ms: how long the worker waits for more requests once it holds one.
        on_batch: ``on_batch(info, trace)`` after every call, before the answers (statistics).
    """

    def __init__(self, run: RunFn, cut: CutFn, max_batch: int = 32, max_wait_ms: float = 2.0,
                 on_batch: Callable[[BatchInfo, Any], None] | None = None, name: str = "batcher"):
        self.run, self.cut, self.on_batch = run, cut, on_batch
        self.max_batch = check_positive(max_batch, "max_batch", allow_none=False)
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not max_wait_ms >= 0:
            from cascade.core.errors import ConfigError

            raise ConfigError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"cascade-{name}", daemon=True)
        self._thread.start()

    def submit(self, queries: Sequence[str], k: int) -> Future:
        """Queue ``queries`` (top ``k`` each); the future resolves to ``(results, trace, BatchInfo)``."""
        request = Request(tuple(queries), int(k))
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking requests, answer every queued one, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> list[Request] | None:
        """The next batch: the oldest request, plus those that fit within ``max_wait_s``; None once closed and empty."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            size = len(batch[0].queries)
            deadline = time.perf_counter() + self.max_wait_s
            while size < self.max_batch:
                if self._queue:
                    if size + len(self._queue[0].queries) > self.max_batch:
                        break
                    batch.append(self._queue.popleft())
                    size += len(batch[-1].queries)
                    continue
                left = deadline - time.perf_counter()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if live:
                self._answer(live)

    def _answer(self, batch: list[Request]) -> None:
        queries = [q for r in batch for q in r.queries]
        start = time.perf_counter()
        try:
            with solo_passes():  # neural passes one query at a time: each answer is the one it gets alone
                results, trace = self.run(queries, max(r.k for r in batch))
        except BaseException as err:  # noqa: BLE001 - every waiting request gets the error, the worker goes on
            log.warning("batch of %d queries failed: %s: %s", len(queries), type(err).__name__, err)
            for r in batch:
                r.future.set_exception(err)
            return
        info = BatchInfo(len(queries), len(batch), start - min(r.arrived for r in batch), time.perf_counter() - start)
        if self.on_batch is not None:
            try:
                self.on_batch(info, trace)
            except Exception:  # noqa: BLE001 - statistics never stop the answers
                log.exception("on_batch failed")
        row = 0
        for r in batch:
            mine = [self.cut(res, r.k) for res in results[row: row + len(r.queries)]]
            row += len(r.queries)
            r.future.set_result((mine, trace, info))
