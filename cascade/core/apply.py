"""Function stages: a plain function becomes a stage with ``k``, composable with ``>>``, ``%`` and ``+``.

Two forms, as PyTerrier's ``pt.apply``::

    # per query: (query text, doc ids, doc texts, incoming scores) -> new scores
    shortest = cascade.apply(lambda q, ids, texts, scores: [-len(t) for t in texts], per_query=True)
    # on the whole batch: Batch -> (Q, K) scores for batch.candidates, or new Candidates / Batch
    flip = cascade.apply(lambda batch: -batch.candidates.scores)
    pipe = BM25() % 100 >> shortest % 10
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cascade.core.candidates import PAD, Batch, Candidates
from cascade.core.errors import ConfigError, NeedsCandidatesError
from cascade.core.stage import Stage


class FunctionStage(Stage, builds="apply"):
    """A stage that calls ``fn``; see :func:`apply`."""

    def __init__(self, fn: Callable, per_query: bool = False, k: int | None = None, name: str | None = None,
                 retrieves: bool = False):
        if not callable(fn):
            raise ConfigError(f"apply needs a function, got {type(fn).__name__}: {fn!r}")
        if retrieves and per_query:
            raise ConfigError("apply: a per-query function scores given candidates; only a batch function "
                              "(per_query=False) can retrieve")
        super().__init__(k=k, name=name or getattr(fn, "__name__", "function").strip("<>") or "function")
        self.fn, self.per_query, self.retrieves = fn, bool(per_query), bool(retrieves)

    def can_retrieve(self) -> bool:
        """Whether the function makes candidates from nothing (``retrieves=True``)."""
        return self.retrieves

    def retrieve(self, batch: Batch, k: int | None) -> Candidates:
        if not self.retrieves:
            raise NeedsCandidatesError(f"stage {self.name!r} scores given candidates and cannot go first; put a "
                                       "retriever before it (e.g. BM25() % 100 >> ...), or apply(fn, retrieves=True) "
                                       "for a batch function that makes candidates")
        return self._candidates(batch, self.fn(batch)).topk(k)

    def score(self, batch: Batch) -> np.ndarray:
        """The function's scores for ``batch.candidates`` (a function that returns candidates has none)."""
        if self.per_query:
            return self._per_query(batch).scores
        result = self.fn(batch)
        if isinstance(result, (Batch, Candidates)):
            raise TypeError(f"{self.name}: the function returns candidates, not one score per candidate")
        return self._candidates(batch, result).scores

    def rerank(self, batch: Batch) -> Batch:
        if batch.candidates is None:
            return batch.with_candidates(self.retrieve(batch, self.k))
        if self.per_query:
            out = self._per_query(batch)
        else:
            out = self._candidates(batch, self.fn(batch))
        return batch.with_candidates(out.topk(self.k))

    def _per_query(self, batch: Batch) -> Candidates:
        cands = batch.need_candidates()
        scores = np.full(cands.doc_idx.shape, -np.inf, np.float32)
        ids, texts = batch.corpus.ids, batch.corpus.texts
        for q, (row, incoming) in enumerate(zip(cands.doc_idx, cands.scores)):
            docs = row[row != PAD]
            new = self._no_nan(self.fn(batch.query_texts[q], [ids[d] for d in docs], [texts[d] for d in docs],
                                       incoming[: len(docs)].copy())).reshape(-1)
            if len(new) != len(docs):
                raise ValueError(f"{self.name}: the function returned {len(new)} scores for {len(docs)} documents "
                                 f"of query {q}; return one score per document")
            scores[q, : len(docs)] = new
        return Candidates(cands.doc_idx, scores)

    def _candidates(self, batch: Batch, result) -> Candidates:
        """``result`` (a Batch, Candidates, or scores for ``batch.candidates``) as Candidates."""
        if isinstance(result, Batch):
            result = result.candidates
        if isinstance(result, Candidates):
            if result.num_queries != batch.num_queries:
                raise ValueError(f"{self.name}: the function returned {result.num_queries} rows for "
                                 f"{batch.num_queries} queries")
            result.check_within(len(batch.corpus))
            return result
        cands = batch.candidates
        if cands is None:
            raise NeedsCandidatesError(f"{self.name}: given no candidates, the function must return a Batch or "
                                       f"Candidates, not {type(result).__name__}; or put a retriever before it")
        scores = np.asarray(result, np.float32)
        if scores.shape != cands.doc_idx.shape:
            raise ValueError(f"{self.name}: the function returned scores of shape {scores.shape}, expected "
                             f"{cands.doc_idx.shape} (one per candidate)")
        self._no_nan(scores[cands.mask])  # padding may hold anything
        return Candidates(cands.doc_idx, np.where(cands.mask, scores, -np.inf))

    def _no_nan(self, scores) -> np.ndarray:
        scores = np.asarray(scores, np.float32)
        if np.isnan(scores).any():
            raise ValueError(f"{self.name}: the function returned NaN scores; return a number for every document")
        return scores

    def __repr__(self) -> str:
        return f"apply({self.name}, per_query={self.per_query}, k={self.k})"


def apply(fn: Callable | None = None, *, per_query: bool = False, k: int | None = None, name: str | None = None,
          retrieves: bool = False):
    """Make a stage of ``fn``; also usable as a decorator (``@cascade.apply(per_query=True)``).

    ``per_query=False``: ``fn(batch)`` returns (Q, K) scores for ``batch.candidates`` (rows are then
    sorted and cut at ``k``), or new :class:`Candidates` / a :class:`Batch`; with ``retrieves=True``
    it is also called with no candidates (first in a pipeline) and must then return candidates.
    ``per_query=True``: ``fn(query, doc_ids, texts, scores)`` gets one query's text, its candidates'
    ids and texts and their incoming scores (a float32 array), and returns one new score per document.
    """
    if fn is None:
        return lambda f: FunctionStage(f, per_query=per_query, k=k, name=name, retrieves=retrieves)
    return FunctionStage(fn, per_query=per_query, k=k, name=name, retrieves=retrieves)
