"""Union fusion: several stages on the same input, the union of their candidates fused into one ranking.

``BM25() % 100 + BiEncoder() % 100`` retrieves with both and ranks the union of the two top-100
lists by reciprocal rank fusion, as PyTerrier's ``+`` and ranx's ``fuse`` do. Given candidates
(later in a pipeline), every side reranks the same incoming candidates. A document that one side
did not return gets that side's floor: nothing under RRF, and the side's lowest (normalized) score
of that query under ``zscore``, ``minmax`` and ``linear``. Equal fused scores rank by document index.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from cascade.core.candidates import PAD, Batch, Candidates
from cascade.core.data import Corpus
from cascade.core.errors import ConfigError
from cascade.core.fusion import normalize
from cascade.core.stage import Stage, prepare_stages

METHODS = ("rrf", "zscore", "minmax", "linear")


def _contributions(side: Candidates, method: str, rrf_k: float) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's share of the fused score (Q, K) and the side's floor per query (Q, 1)."""
    mask = side.mask
    if method == "linear":
        values = np.where(mask, side.scores.astype(np.float64), 0.0)
    else:
        values = normalize(side.scores, mask, method, rrf_k)
    if method == "rrf":
        return values, np.zeros((side.num_queries, 1))
    lowest = np.where(mask, values, np.inf).min(axis=1, keepdims=True, initial=np.inf)
    return values, np.where(np.isfinite(lowest), lowest, 0.0)


def _lookup(doc_idx: np.ndarray, values: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` of the documents ``want`` (Q, M) in each row of ``doc_idx`` (Q, K), and whether found."""
    if doc_idx.shape[1] == 0:
        return np.zeros(want.shape), np.zeros(want.shape, bool)
    width = int(max(doc_idx.max(initial=0), want.max(initial=0))) + 2
    rows = np.arange(len(doc_idx))[:, None]
    keys = (rows * width + doc_idx + 1).ravel()  # padding (-1) becomes row*width: never wanted
    order = np.argsort(keys, kind="stable")
    wanted = (rows * width + want + 1).ravel()
    pos = np.minimum(np.searchsorted(keys[order], wanted), len(keys) - 1)
    found = (keys[order][pos] == wanted) & (want.ravel() != PAD)
    return values.ravel()[order][pos].reshape(want.shape), found.reshape(want.shape)


def fuse_union(sides: Sequence[Candidates], method: str = "rrf", weights: Sequence[float] | None = None,
               rrf_k: float = 60.0) -> Candidates:
    """The union of every side's candidates per query, scored ``sum_i weight_i * contribution_i``.

    Contributions: ``1 / (rrf_k + rank)`` (``rrf``, rank from 1, tied scores share a rank), the z-score
    or min-max normalized score over the side's candidates of the query, or the raw score (``linear``).
    A side that did not return a document adds its floor (0 for rrf, else its lowest contribution
    for that query).
    Rows come back sorted by fused score, ties by document index.
    """
    if method not in METHODS:
        raise ConfigError(f"union fusion method {method!r} is unknown; use one of {', '.join(METHODS)}")
    weights = [1.0] * len(sides) if weights is None else list(weights)
    num_q = sides[0].num_queries
    every = np.concatenate([np.zeros((num_q, 0), np.int64)] + [s.doc_idx for s in sides], axis=1)
    ordered = np.sort(every, axis=1)  # padding (-1) first
    first = np.ones(ordered.shape, bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first &= ordered != PAD
    counts = first.sum(axis=1)
    pack = np.argsort(~first, axis=1, kind="stable")  # each row's distinct documents first, ascending
    width = int(counts.max(initial=0))
    union = np.take_along_axis(ordered, pack, axis=1)[:, :width]
    union = np.where(np.arange(width)[None, :] < counts[:, None], union, PAD)
    fused = np.zeros(union.shape)
    for side, weight in zip(sides, weights):
        values, floor = _contributions(side, method, rrf_k)
        found_values, found = _lookup(side.doc_idx, values, union)
        fused += weight * np.where(found, found_values, floor)
    return Candidates(union, np.where(union != PAD, fused, -np.inf).astype(np.float32)).topk(None)


class UnionFusion(Stage, builds="union"):
    """Run every stage in ``stages`` on the same input and fuse the union of their candidates.

    Args:
        stages: two or more stages or pipelines (retrievers first in a pipeline; rerankers later).
        method: ``rrf`` (reciprocal rank), ``zscore``, ``minmax`` or ``linear`` (raw scores).
        weights: one non-negative weight per stage (None: all 1).
        rrf_k: the constant of reciprocal rank fusion, ``1 / (rrf_k + rank)``.
        k: documents kept per query (None: the whole union); ``%`` sets it.

    ``a + b`` (or ``a | b``) makes an RRF union; ``a + b + c`` fuses all three at once.
    """

    def __init__(self, stages: Sequence[Stage], method: str = "rrf", weights: Sequence[float] | None = None,
                 rrf_k: float = 60.0, k: int | None = None, name: str = "union"):
        super().__init__(k=k, name=name)
        stages = list(stages)
        for stage in stages:
            if not isinstance(stage, Stage):
                raise TypeError(f"a union fuses Stage objects, got {type(stage).__name__}: {stage!r}")
        if len(stages) < 2:
            raise ConfigError(f"{self.name}: a union needs at least two stages, got {len(stages)}")
        if method not in METHODS:
            raise ConfigError(f"{self.name}: method {method!r} is unknown; use one of {', '.join(METHODS)}")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(stages) or min(weights) < 0 or sum(weights) == 0:
                raise ConfigError(f"{self.name}: give one non-negative weight per stage ({len(stages)}), "
                                  f"not all zero; got {weights}")
        if float(rrf_k) < 0:
            raise ConfigError(f"{self.name}: rrf_k must be >= 0, got {rrf_k}")
        self.stages, self.method, self.weights, self.rrf_k = stages, method, weights, float(rrf_k)

    # --- indexing: the sides' artifacts are planned with the rest of the pipeline ----------------
    def artifacts(self, corpus: Corpus) -> list:
        return [a for s in self.leaves() if not s.is_prepared(corpus) for a in s.artifacts(corpus)]

    def load(self, corpus: Corpus, artifacts: list) -> None:
        prepare_stages(self.stages, corpus)  # built already by the caller's plan: this opens them

    def children(self) -> list[Stage]:
        return list(self.stages)

    def replace(self, children: Sequence[Stage]) -> UnionFusion:
        clone = copy.copy(self)
        clone.stages = list(children)
        return clone

    # --- ranking --------------------------------------------------------------------------------------
    def can_retrieve(self) -> bool:
        return all(s.entry().can_retrieve() for s in self.stages)

    def retrieve(self, batch: Batch, k: int | None) -> Candidates:
        for side in self.stages:
            first = side.entry()
            if not first.can_retrieve():
                first.retrieve(batch, first.k)  # raises NeedsCandidatesError before any indexing
        self.prepare(batch.corpus)
        return self._fuse([side.rerank(batch).candidates for side in self.stages]).topk(k)

    def rerank(self, batch: Batch) -> Batch:
        if batch.candidates is None:
            return batch.with_candidates(self.retrieve(batch, self.k))
        self.prepare(batch.corpus)
        sides = [side.rerank(batch).candidates for side in self.stages]
        return batch.with_candidates(self._fuse(sides).topk(self.k))

    def score(self, batch: Batch) -> np.ndarray:
        """The fused score of every incoming candidate (``-inf`` where no side kept it)."""
        self.prepare(batch.corpus)
        fused = self._fuse([side.rerank(batch).candidates for side in self.stages])
        values, found = _lookup(fused.doc_idx, fused.scores, batch.need_candidates().doc_idx)
        return np.where(found, values, -np.inf).astype(np.float32)

    def _fuse(self, sides: list[Candidates]) -> Candidates:
        return fuse_union(sides, self.method, self.weights, self.rrf_k)

    def is_plain(self) -> bool:
        """An unweighted RRF union without a cutoff, as ``+`` makes (so ``a + b + c`` is one union)."""
        return (type(self) is UnionFusion and self.k is None and self.method == "rrf" and self.weights is None
                and self.rrf_k == 60.0)

    @classmethod
    def of(cls, a: Stage, b: Stage) -> UnionFusion:
        """``a + b``: an RRF union of both (plain unions on either side are merged into one)."""
        if not isinstance(b, Stage):
            raise TypeError(f"can only fuse stages with + or |, got {type(b).__name__}: {b!r}")
        parts: list[Stage] = []
        for stage in (a, b):
            parts.extend(stage.stages if isinstance(stage, UnionFusion) and stage.is_plain() else [stage])
        return cls(parts)

    def __repr__(self) -> str:
        inner = " + ".join(repr(s) for s in self.stages)
        extra = f"{self.method}" + (f", weights={self.weights}" if self.weights else "")
        return f"({inner} [{extra}])" + (f" % {self.k}" if self.k else "")


def union_of(a: Stage, b: Stage) -> UnionFusion:
    """``a + b``: an RRF union of both (plain unions on either side are merged into one)."""
    return UnionFusion.of(a, b)
