"""What ``cascade serve`` searches with: a bound pipeline behind a :class:`~cascade.app.batching.Batcher`,
and the request statistics ``GET /stats`` reports.

A :class:`Searcher` wraps any object with ``search(queries, k) -> list[Ranking]`` (what
``pipeline.index(corpus)`` returns). For a bound stage or :class:`~cascade.core.stage.Pipeline` it
runs :meth:`Pipeline.run` over the queries instead, which ranks exactly as ``search`` does and also
records the per-stage trace (candidates kept, seconds); any other object answers without a trace.
Every call into the wrapped object holds one lock, so stages never run in two threads at once.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade.app.batching import Batcher, BatchInfo
from cascade.core.candidates import PAD, Batch
from cascade.core.search import Ranking, _ranking
from cascade.core.stage import Pipeline, Stage

WINDOW = 10_000  # latency samples kept per series (the most recent ones)


@dataclass(frozen=True)
class Answer:
    """One query's ranking and, per traced stage, how many candidates it kept for that query."""

    ranking: Ranking
    kept: tuple[int, ...] = ()


class Stats:
    """Thread-safe counters and recent latency samples (milliseconds), summarised by :meth:`snapshot`."""

    def __init__(self, window: int = WINDOW):
        self._lock = threading.Lock()
        self._series: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._counts: dict[str, int] = defaultdict(int)
        self.started = time.time()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def add(self, series: str, value: float) -> None:
        with self._lock:
            self._series[series].append(float(value))

    def batch(self, pipeline: str, info: BatchInfo, trace: Sequence[dict]) -> None:
        """Record one pipeline call: its size, queueing, and each stage's milliseconds."""
        with self._lock:
            self._counts[f"batches.{pipeline}"] += 1
            self._series[f"batch_queries.{pipeline}"].append(info.queries)
            self._series[f"batch_requests.{pipeline}"].append(info.requests)
            self._series[f"queue_ms.{pipeline}"].append(1000 * info.wait_s)
            for row in trace:
                self._series[f"stage_ms.{pipeline}.{row['stage']}"].append(row["ms"])

    def snapshot(self) -> dict[str, Any]:
        """``counts`` and, per series, n / mean / p50 / p95 / p99 / max of the recent samples."""
        with self._lock:
            counts = dict(self._counts)
            series = {name: np.asarray(values, np.float64) for name, values in self._series.items()}
        summary = {}
        for name, values in sorted(series.items()):
            if len(values):
                p50, p95, p99 = np.percentile(values, [50, 95, 99])
                summary[name] = {"n": int(len(values)), "mean": float(values.mean()), "p50": float(p50),
                                 "p95": float(p95), "p99": float(p99), "max": float(values.max())}
        return {"uptime_s": round(time.time() - self.started, 3), "counts": counts, "latency": summary}


class Searcher:
    """One servable pipeline: ``search`` goes through its batcher, ``rerank`` runs directly.

    Args:
        name: how requests choose it (``"pipeline": name``).
        target: a bound pipeline (``pipe.index(corpus)``) or any object with ``search(queries, k)``.
        max_batch, max_wait_ms: the batcher's settings (``max_batch=1``: no batching).
        stats: where batch sizes and stage times are recorded.
    """

    def __init__(self, name: str, target: Any, max_batch: int = 32, max_wait_ms: float = 2.0,
                 stats: Stats | None = None):
        self.name, self.target = name, target
        self.stats = stats or Stats()
        self.traced = isinstance(target, Stage) and self.corpus is not None
        # a single bound stage runs as a one-stage pipeline: the same ranking, with its trace
        self._pipeline = target if isinstance(target, Pipeline) or not self.traced else Pipeline([target], name=name)
        self.writable = all(callable(getattr(target, op, None)) for op in ("add", "update", "delete", "refresh"))
        self._lock = threading.Lock()
        self.batcher = Batcher(self.run, cut_answer, max_batch, max_wait_ms, on_batch=self._record,
                               name=f"batcher-{name}")

    @property
    def corpus(self):
        """The bound corpus (read each time: a saved index reopens on a new one after every write)."""
        return getattr(self.target, "_search_corpus", None)

    def describe(self) -> dict[str, Any]:
        """Name, stages (name and k), documents: what ``/health`` lists and the page shows."""
        stages = self.target.parts() if isinstance(self.target, Stage) else []
        return {"name": self.name, "stages": [{"name": s.name, "k": s.k} for s in stages],
                "documents": _live(self.corpus), "writable": self.writable,
                "max_batch": self.batcher.max_batch, "max_wait_ms": 1000 * self.batcher.max_wait_s}

    def submit(self, queries: Sequence[str], k: int) -> Future:
        """Queue a search; the future gives ``(answers, trace, BatchInfo)``."""
        return self.batcher.submit(queries, k)

    def run(self, queries: Sequence[str], k: int) -> tuple[list[Answer], list[dict]]:
        """Search ``queries`` now (the batcher's call): one :class:`Answer` each, and the shared trace."""
        with self._lock:
            if self.writable:
                self.target.refresh()  # another process wrote a new generation: search that one
            if not self.traced:
                start = time.perf_counter()
                rankings = self.target.search(list(queries), k=k)
                return [Answer(r) for r in rankings], [{"stage": "search", "k": k,
                                                         "ms": 1000 * (time.perf_counter() - start), "phases_ms": {}}]
            corpus = self.corpus
            run = self._pipeline.run(Batch(tuple(queries), corpus))
        cands = run.candidates.topk(k)
        kept = np.stack([(t.candidates.doc_idx != PAD).sum(axis=1) for t in run.stages], axis=1)
        answers = [Answer(_ranking(q, idx, sc, corpus.ids, corpus.texts), tuple(int(n) for n in kept[row]))
                   for row, (q, idx, sc) in enumerate(zip(queries, cands.doc_idx, cands.scores))]
        trace = [{"stage": t.name, "k": t.k, "ms": 1000 * t.seconds,
                  "phases_ms": {p: 1000 * s for p, s in t.phases.items()}} for t in run.stages]
        return answers, trace

    def rerank(self, query: str, docs: Any, k: int | None) -> Ranking:
        """``docs`` (texts, or id -> text) ranked for ``query`` by this pipeline, now, nothing cached."""
        with self._lock:
            return self.target.rerank(query, docs, k=k)

    def write(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """``add``, ``update`` or ``delete`` on a saved index (between two batches); its new size and generation."""
        if not self.writable:
            from cascade.core.errors import ConfigError

            raise ConfigError(f"pipeline {self.name!r} searches a corpus bound from a config, which cannot change; "
                              "serve a saved index (cascade serve DIR) to add or delete documents")
        with self._lock:
            getattr(self.target, op)(**kwargs)
            return {"documents": _live(self.corpus), "generation": getattr(self.target, "generation", None)}

    def _record(self, info: BatchInfo, trace: list[dict]) -> None:
        self.stats.batch(self.name, info, trace)

    def close(self) -> None:
        self.batcher.close()


def cut_answer(answer: Answer, k: int) -> Answer:
    """``answer`` with its ranking cut to the top ``k`` (a ranking of the larger k starts with it)."""
    if len(answer.ranking) <= k:
        return answer
    return Answer(Ranking(answer.ranking.query, answer.ranking.hits[:k]), answer.kept)


def _live(corpus) -> int | None:
    """Documents a corpus holds (a saved index's live ones), None without a corpus."""
    if corpus is None:
        return None
    return int(getattr(corpus, "num_live", len(corpus)))
