"""The one stage interface (``rerank(batch) -> batch``) and pipelines built with ``>>`` and ``%``."""
from __future__ import annotations

import copy
import logging
import numbers
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cascade.candidates import Batch, Candidates
from cascade.data import Corpus, Dataset
from cascade.errors import ConfigError, NeedsCandidatesError
from cascade.fusion import Fusion
from cascade.run import Run, StageTrace
from cascade.timing import collect, run_scope

log = logging.getLogger(__name__)


def check_positive(value: Any, what: str, allow_none: bool = True, null_means: str = "") -> int | None:
    """A positive integer setting (or None where allowed), else a ConfigError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        hint = f"; null means {null_means}" if allow_none and null_means else ""
        raise ConfigError(f"{what} must be a positive integer{' or null' if allow_none else ''}, got {value!r}{hint}")
    return int(value)


def check_k(k: Any, owner: str = "stage") -> int | None:
    """Validate a cutoff: a positive integer, or None for "keep all"."""
    return check_positive(k, f"{owner}: k", null_means="keep every candidate")


def _as_fusion(fusion: Fusion | dict | str | None) -> Fusion | None:
    if fusion is None or isinstance(fusion, Fusion):
        return fusion
    if isinstance(fusion, str):
        return Fusion(method=fusion)
    if isinstance(fusion, Mapping):  # a dict, or an OmegaConf DictConfig from a YAML config
        return Fusion(**fusion)
    raise ConfigError(f"fusion must be a Fusion, a method name or a dict, got {type(fusion).__name__}")


class Stage:
    """A ranking stage: retrieves from the corpus or rescores given candidates, keeping the top ``k``.

    Subclasses implement :meth:`score` (rescore candidates) and, if they can
    retrieve from the whole corpus, :meth:`retrieve`; :meth:`index` builds or
    loads whatever the stage needs for a corpus.
    """

    def __init__(self, k: int | None = None, fusion: Fusion | dict | str | None = None, name: str | None = None):
        self.name = name or type(self).__name__.lower()
        self.k = check_k(k, self.name)
        self.fusion = _as_fusion(fusion)
        self._prepared_for: str | None = None

    # --- what subclasses implement -------------------------------------------------
    def index(self, corpus: Corpus) -> None:
        """Build or load the index for ``corpus`` (no-op by default)."""

    def retrieve(self, batch: Batch, k: int | None) -> Candidates:
        """Top ``k`` candidates per query from the whole corpus."""
        raise NeedsCandidatesError(
            f"stage {self.name!r} reranks candidates and cannot retrieve from the whole corpus; "
            f"put a retriever before it, e.g. BM25() % 1000 >> {type(self).__name__}(...)"
        )

    def score(self, batch: Batch) -> np.ndarray:
        """Scores (Q, K) for ``batch.candidates``; values at padding are ignored."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    # --- the interface ------------------------------------------------------------------
    def index_together(self, corpus: Corpus, peers: Sequence["Stage"]) -> None:
        """Hook run before :meth:`index` when a pipeline prepares this stage, with all the pipeline's stages.

        A stage that can share indexing work with others (e.g. one encoder pass over the
        corpus filling several stages' caches) builds the shared artifacts here. No-op by default.
        """

    def prepare(self, corpus: Corpus, peers: Sequence["Stage"] = ()) -> None:
        """Make sure the index for ``corpus`` is built or loaded (once per corpus).

        ``peers``: the other stages being prepared with this one (see :meth:`index_together`).
        """
        if self._prepared_for != corpus.fingerprint:
            if peers:
                self.index_together(corpus, peers)
            self.index(corpus)
            self._prepared_for = corpus.fingerprint

    def rerank(self, batch: Batch) -> Batch:
        """Return ``batch`` with new candidates: sorted by score, at most ``k`` per query."""
        self.prepare(batch.corpus)
        if batch.candidates is None:
            return batch.with_candidates(self.retrieve(batch, self.k))
        cands = batch.candidates
        if cands.doc_idx.shape[1] == 0:
            return batch
        scores = np.asarray(self.score(batch), dtype=np.float32)
        if scores.shape != cands.doc_idx.shape:
            raise ValueError(f"{self.name}.score returned shape {scores.shape}, expected {cands.doc_idx.shape}")
        if self.fusion is not None:
            scores = self.fusion(cands.scores, scores, cands.mask)
        return batch.with_candidates(Candidates(cands.doc_idx, scores).topk(self.k))

    def __call__(self, data: Dataset | Batch) -> Run:
        """Run this stage (or pipeline) over a dataset's queries; returns a :class:`Run`."""
        return Pipeline([self]).run(data)

    # --- composition --------------------------------------------------------------------
    def __mod__(self, k: int) -> "Stage":
        """A copy of this stage that keeps the top ``k``."""
        clone = copy.copy(self)
        clone.k = check_k(k, self.name)
        return clone

    def __rshift__(self, other: "Stage") -> "Pipeline":
        if not isinstance(other, Stage):
            raise TypeError(f"can only chain stages with >>, got {type(other).__name__}: {other!r}")
        return Pipeline([self, other])

    def __rrshift__(self, other: Any) -> "Pipeline":
        raise TypeError(f"can only chain stages with >>, got {type(other).__name__}: {other!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"


class Pipeline(Stage):
    """Stages run in order; each reranks what the one before kept. ``>>`` flattens nested pipelines."""

    def __init__(self, stages: list[Stage], k: int | None = None, name: str = "pipeline"):
        flat: list[Stage] = []
        for stage in stages:
            if not isinstance(stage, Stage):
                raise TypeError(f"pipeline stages must be Stage objects, got {type(stage).__name__}: {stage!r}")
            # a nested pipeline with its own cutoff stays one unit so that cutoff still applies
            flat.extend(stage.stages if isinstance(stage, Pipeline) and stage.k is None else [stage])
        if not flat:
            raise ConfigError("a pipeline needs at least one stage")
        super().__init__(k=k, name=name)
        self.stages = flat

    def __call__(self, data: Dataset | Batch) -> Run:
        return self.run(data)

    def index(self, corpus: Corpus) -> None:
        self.index_seconds(corpus)

    def index_seconds(self, corpus: Corpus) -> list[float]:
        """Prepare every stage for ``corpus``; return the seconds each took."""
        seconds = []
        for stage in self.stages:
            start = time.perf_counter()
            stage.prepare(corpus, peers=self.stages)
            seconds.append(time.perf_counter() - start)
        return seconds

    def rerank(self, batch: Batch) -> Batch:
        with run_scope():
            for stage in self.stages:
                batch = stage.rerank(batch)
        return batch.with_candidates(batch.candidates.topk(self.k)) if self.k else batch

    def run(self, data: Dataset | Batch) -> Run:
        """Run every stage over ``data``, tracing each stage's output and wall time."""
        if isinstance(data, Dataset):
            batch = Batch(data.query_texts, data.corpus, None, data.query_ids)
        else:
            batch = data
        index_s = self.index_seconds(batch.corpus)
        trace = []
        with run_scope():
            for stage, built in zip(self.stages, index_s):
                start = time.perf_counter()
                with collect() as phases:
                    batch = stage.rerank(batch)
                seconds = time.perf_counter() - start
                trace.append(StageTrace(stage.name, stage.k, batch.candidates, seconds, dict(phases), built))
                log.info("stage %s: k=%s, %.1f ms/query", stage.name, stage.k,
                         1000 * seconds / max(batch.num_queries, 1))
        final = batch.candidates.topk(self.k) if self.k else batch.candidates
        qids = batch.query_ids or tuple(str(i) for i in range(batch.num_queries))
        return Run(qids, batch.corpus.ids, final, tuple(trace))

    def __repr__(self) -> str:
        inner = " >> ".join(f"{s!r}" for s in self.stages)
        return f"({inner}) % {self.k}" if self.k else inner
