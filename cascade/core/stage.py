"""The one stage interface (``rerank(batch) -> batch``) and pipelines built with ``>>`` and ``%``."""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from cascade.core.candidates import Batch, Candidates
from cascade.core.checks import check_k, check_positive
from cascade.core.data import Corpus, Dataset
from cascade.core.errors import ConfigError, NeedsCandidatesError
from cascade.core.features import record_features, wants_features, with_columns
from cascade.core.fusion import Fusion
from cascade.core.indexing import Artifact, build_all
from cascade.core.results import Run, StageTrace
from cascade.core.search import Ranking, as_corpus, rerank_texts, search, texts_or_batch
from cascade.core.sources import load_dataset
from cascade.core.timing import collect, run_scope

log = logging.getLogger(__name__)

# Set by the cascade facade (cascade/__init__.py) to cascade.saved.save, which lives above the stages:
# the core calls up only through this slot.
SAVE_HOOK: Callable[..., Any] | None = None
__all__ = ["Pipeline", "Stage", "check_k", "check_positive", "prepare_stages", "stage_index_info"]


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

    Subclasses implement :meth:`score` (rescore candidates) and, if they can retrieve
    from the whole corpus, :meth:`retrieve`. A stage that needs cached corpus artifacts
    lists them in :meth:`artifacts` and opens them in :meth:`load`; a pipeline builds the
    artifacts of all its stages in one planned step (shared encoder passes run once).

    A composite stage (a pipeline, a union) exposes its inner stages through :meth:`children` and
    :meth:`replace`; :meth:`walk`, :meth:`leaves`, :meth:`parts` and :meth:`entry` read the tree.
    """

    # The composite classes that ``+`` and :meth:`from_function` build, by role. They live in modules
    # above this one (cascade.core.union, cascade.core.apply) and register themselves on definition:
    # ``class UnionFusion(Stage, builds="union")``. The facade (cascade/__init__.py) imports both.
    _builders: ClassVar[dict[str, type[Stage]]] = {}

    def __init__(self, k: int | None = None, fusion: Fusion | dict | str | None = None, name: str | None = None):
        self.name = name or type(self).__name__.lower()
        self.k = check_k(k, self.name)
        self.fusion = _as_fusion(fusion)
        self._prepared_for: str | None = None

    # --- what subclasses implement -------------------------------------------------
    def artifacts(self, corpus: Corpus) -> list[Artifact]:
        """The cached corpus artifacts this stage needs (none by default)."""
        return []

    def load(self, corpus: Corpus, artifacts: list[Artifact]) -> None:
        """Open the built ``artifacts`` (or build a private index) for ``corpus``; no-op by default."""

    def retrieve(self, batch: Batch, k: int | None) -> Candidates:
        """Top ``k`` candidates per query from the whole corpus."""
        raise NeedsCandidatesError(
            f"stage {self.name!r} reranks candidates and cannot retrieve from the whole corpus; "
            f"put a retriever before it, e.g. BM25() % 1000 >> {type(self).__name__}(...)"
        )

    def can_retrieve(self) -> bool:
        """Whether this stage can go first (it overrides :meth:`retrieve`)."""
        return type(self).retrieve is not Stage.retrieve

    def score(self, batch: Batch) -> np.ndarray:
        """Scores (Q, K) for ``batch.candidates``; values at padding are ignored."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    # --- the stage tree -----------------------------------------------------------------
    def children(self) -> list[Stage]:
        """The stages directly inside this one (none for a plain stage)."""
        return []

    def replace(self, children: Sequence[Stage]) -> Stage:
        """A shallow copy of this stage with ``children`` in place of its inner stages."""
        if list(children):
            raise TypeError(f"{self.name} ({type(self).__name__}) has no inner stages to replace")
        return copy.copy(self)

    def walk(self) -> Iterator[Stage]:
        """This stage, then every stage inside it, depth first."""
        yield self
        for child in self.children():
            yield from child.walk()

    def leaves(self) -> list[Stage]:
        """Every distinct stage with no inner stages, in order (looking inside pipelines and unions alike)."""
        return list(dict.fromkeys(s for s in self.walk() if not s.children()))

    def parts(self) -> list[Stage]:
        """The stages that index and run as units: a pipeline's parts are its stages' parts; any other
        stage (a union included) is one part."""
        return [self]

    def entry(self) -> Stage:
        """The stage that sees this one's input first (a pipeline's first part)."""
        return self

    def without_fusion(self) -> Stage:
        """A copy ranking by its own scores: no score fusion here or in any inner stage."""
        clone = self.replace([child.without_fusion() for child in self.children()])
        clone.fusion = None
        return clone

    # --- the interface ------------------------------------------------------------------
    def is_prepared(self, corpus: Corpus) -> bool:
        if self.children():
            return all(s.is_prepared(corpus) for s in self.leaves())
        return self._prepared_for == corpus.fingerprint

    def prepare(self, corpus: Corpus, engine: Any = None) -> dict[str, float]:
        """Build (or reuse) and open this stage's index for ``corpus``, once per corpus.

        Returns the seconds spent per stage name (empty when it was already prepared).
        ``engine`` runs corpus encoding (None: in this process; see :mod:`cascade.index.encoding`).
        """
        return prepare_stages([self], corpus, engine)

    @texts_or_batch
    def rerank(self, batch: Batch) -> Batch:
        """Return ``batch`` with new candidates: sorted by score, at most ``k`` per query.

        ``rerank(query, docs)`` ranks a plain list of texts instead (see :meth:`rerank_texts`).
        """
        if batch.candidates is None:
            if not self.can_retrieve():
                self.retrieve(batch, self.k)  # raises NeedsCandidatesError before any indexing
        self.prepare(batch.corpus)
        if batch.candidates is None:
            found = self.retrieve(batch, self.k)
            return batch.with_candidates(with_columns(self, batch, found, found.scores))
        cands = batch.candidates
        if cands.doc_idx.shape[1] == 0:
            return batch
        scores = np.asarray(self.score(batch), dtype=np.float32)
        if scores.shape != cands.doc_idx.shape:
            raise ValueError(f"{self.name}.score returned shape {scores.shape}, expected {cands.doc_idx.shape}")
        fused = self.fusion(cands.scores, scores, cands.mask) if self.fusion is not None else None
        return batch.with_candidates(with_columns(self, batch, cands, scores, fused).topk(self.k))  # features kept

    def __call__(self, data: Dataset | Batch) -> Run:
        """Run this stage (or pipeline) over a dataset's queries; returns a :class:`Run`."""
        return Pipeline([self]).run(data)

    # --- composition --------------------------------------------------------------------
    def __mod__(self, k: int) -> Stage:
        """A copy of this stage that keeps the top ``k``."""
        clone = copy.copy(self)
        clone.k = check_k(k, self.name)
        return clone

    def __rshift__(self, other: Stage) -> Pipeline:
        if not isinstance(other, Stage):
            raise TypeError(f"can only chain stages with >>, got {type(other).__name__}: {other!r}")
        return Pipeline([self, other])

    def __rrshift__(self, other: Any) -> Pipeline:
        raise TypeError(f"can only chain stages with >>, got {type(other).__name__}: {other!r}")

    def __add__(self, other: Stage) -> Stage:
        """``a + b`` (or ``a | b``): both on the same input, the union of their candidates fused (RRF)."""
        return Stage._builder("union").of(self, other)  # type: ignore[attr-defined]

    __or__ = __add__

    def __init_subclass__(cls, builds: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if builds is not None:
            Stage._builders[builds] = cls
        own = cls.__dict__.get("rerank")
        if own is not None and not getattr(own, "texts_dispatch", False):
            cls.rerank = texts_or_batch(own)  # type: ignore[method-assign]

    @staticmethod
    def _builder(role: str) -> type[Stage]:
        found = Stage._builders.get(role)
        if found is None:
            raise ConfigError(f"no {role} stage class is registered; import cascade (or cascade.core.{role})")
        return found

    @staticmethod
    def from_function(fn: Callable, per_query: bool = False, k: int | None = None, name: str | None = None,
                      retrieves: bool = False) -> Stage:
        """A stage from a function; see :func:`cascade.core.apply.apply`."""
        make: Any = Stage._builder("apply")
        return make(fn, per_query=per_query, k=k, name=name, retrieves=retrieves)

    # --- search and rerank of plain texts (cascade.core.search) -------------------------
    def index(self, corpus: Any) -> Stage:
        """Bind ``corpus`` (a Corpus, list of texts, dict...) for :meth:`search`, its artifacts built or reused."""
        corpus = as_corpus(corpus)
        self.prepare(corpus)
        self._search_corpus = corpus
        return self

    def search(self, query: str | Sequence[str], k: int | None = 10, corpus: Any = None, subset: Any = None,
               where: Mapping | None = None) -> Ranking | list[Ranking]:
        """The top ``k`` of the bound (or given) corpus: a :class:`~cascade.core.search.Ranking` (a list for many).

        ``subset`` (document ids) and ``where`` (``{field: value}`` on a saved index's metadata) restrict
        every stage, the first included, to those documents (:func:`~cascade.core.search.allowed_rows`).
        """
        if corpus is not None:
            self.index(corpus)
        bound = getattr(self, "_search_corpus", None)
        if bound is None:
            raise ConfigError(f"{self.name}: no corpus to search; call .index(corpus) first, "
                              "or pass search(query, corpus=...)")
        return search(self, query, k, bound, subset, where)

    def save(self, path: Any, **options: Any):
        """Write this stage (or pipeline), indexed for its bound corpus, as a saved index folder ``path``;
        returns it opened (:class:`cascade.saved.SavedIndex`). See :func:`cascade.saved.save`."""
        if SAVE_HOOK is None:
            raise ConfigError("saving needs the cascade package's saved-index layer (import cascade first)")
        return SAVE_HOOK(self, path, **options)

    def rerank_texts(self, query: str | Sequence[str], docs: Any, k: int | None = None) -> Ranking | list[Ranking]:
        """A :class:`~cascade.core.search.Ranking` of ``docs`` (texts, or dict id -> text): this stage run over
        them as a corpus of their own, indexed in a private temporary folder (nothing cached, this stage left
        as it was); a list of queries takes one list of docs each and gives a list of rankings. See
        :func:`cascade.core.search.rerank_texts`."""
        return rerank_texts(self, query, docs, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"


def prepare_stages(stages: Sequence[Stage], corpus: Corpus, engine: Any = None) -> dict[str, float]:
    """Prepare every stage not yet prepared for ``corpus`` in one planned step.

    Asks each stage for its artifacts, builds the missing ones (shared passes once,
    see :mod:`cascade.core.indexing`), then lets each stage load. Returns seconds per
    stage name: its share of the builds plus its load time. ``engine`` runs the encoder passes.
    """
    todo = [s for s in dict.fromkeys(p for stage in stages for p in stage.parts()) if not s.is_prepared(corpus)]
    needs = {id(s): list(s.artifacts(corpus)) for s in todo}
    built = build_all([a for s in todo for a in needs[id(s)]], corpus, engine)
    seconds: dict[str, float] = {}
    for stage in todo:
        start = time.perf_counter()
        stage.load(corpus, needs[id(stage)])
        stage._prepared_for = corpus.fingerprint
        own = sum(built.get(a.path, 0.0) for a in needs[id(stage)])
        seconds[stage.name] = seconds.get(stage.name, 0.0) + own + time.perf_counter() - start
    return seconds


class Pipeline(Stage):
    """Stages run in order; each reranks what the one before kept. ``>>`` flattens nested pipelines.

    ``fusion=False`` runs every stage without score fusion (each ranks by its own score):
    the fusion ablation of any pipeline without a copy of its config.
    """

    stages: list[Stage]

    def __init__(self, stages: list[Stage], k: int | None = None, name: str = "pipeline", fusion: bool = True):
        flat: list[Stage] = []
        for stage in stages:
            if not isinstance(stage, Stage):
                raise TypeError(f"pipeline stages must be Stage objects, got {type(stage).__name__}: {stage!r}")
            # a nested pipeline with its own cutoff stays one unit so that cutoff still applies
            flat.extend(stage.stages if isinstance(stage, Pipeline) and stage.k is None else [stage])
        if not flat:
            raise ConfigError("a pipeline needs at least one stage")
        if not isinstance(fusion, bool):
            raise ConfigError(f"pipeline fusion must be true or false, got {fusion!r}")
        if not fusion:
            flat = [s.without_fusion() for s in flat]
        super().__init__(k=k, name=name)
        self.stages = flat

    def __call__(self, data: Dataset | Batch) -> Run:
        return self.run(data)

    def children(self) -> list[Stage]:
        return list(self.stages)

    def replace(self, children: Sequence[Stage]) -> Pipeline:
        clone = copy.copy(self)
        clone.stages = list(children)
        return clone

    def parts(self) -> list[Stage]:
        return [p for stage in self.stages for p in stage.parts()]

    def entry(self) -> Stage:
        return self.stages[0].entry()

    def prepare(self, corpus: Corpus, engine: Any = None) -> dict[str, float]:
        """Index every stage for ``corpus`` in one planned step (see :func:`prepare_stages`)."""
        return prepare_stages(self.stages, corpus, engine)

    def rerank(self, batch: Batch) -> Batch:
        self._check_first(batch)
        self.prepare(batch.corpus)
        with run_scope(), record_features(wants_features(self.stages)):
            for stage in self.stages:
                batch = stage.rerank(batch)
        return batch.with_candidates(batch.need_candidates().topk(self.k)) if self.k else batch

    def _check_first(self, batch: Batch) -> None:
        first = self.stages[0]
        if batch.candidates is None and first is first.entry() and not first.can_retrieve():
            first.retrieve(batch, first.k)  # raises NeedsCandidatesError before any indexing

    def run(self, data: Dataset | Batch, engine: Any = None) -> Run:
        """Run every stage over ``data``, tracing each stage's output, wall time and index time.

        ``engine`` runs the corpus encoding of missing indexes (None: in this process).
        """
        if not isinstance(data, (Dataset, Batch)):  # a BEIR folder or "irds:<id>"; else a DataError saying what to do
            data = load_dataset(data)
        if isinstance(data, Dataset):
            batch = Batch(data.query_texts, data.corpus, None, data.query_ids)
        else:
            batch = data
        self._check_first(batch)
        index_s = self.prepare(batch.corpus, engine)  # 0 s for stages already indexed earlier
        trace = []
        with run_scope(), record_features(wants_features(self.stages)):
            for stage in self.stages:
                start = time.perf_counter()
                with collect() as phases:
                    batch = stage.rerank(batch)
                seconds = time.perf_counter() - start
                built = index_s.get(stage.name, 0.0)
                trace.append(StageTrace(stage.name, stage.k, batch.candidates, seconds, dict(phases), built,
                                        stage_index_info(stage)))
                log.info("stage %s: k=%s, %.1f ms/query", stage.name, stage.k,
                         1000 * seconds / max(batch.num_queries, 1))
        final = batch.need_candidates().topk(self.k) if self.k else batch.need_candidates()
        qids = batch.query_ids or tuple(str(i) for i in range(batch.num_queries))
        return Run(qids, batch.corpus.ids, final, tuple(trace))

    def __repr__(self) -> str:
        inner = " >> ".join(f"{s!r}" for s in self.stages)
        return f"({inner}) % {self.k}" if self.k else inner


def stage_index_info(stage: Stage) -> dict:
    """What a stage reports about its index (bytes, bytes per token...), if it says."""
    info = getattr(stage, "index_info", None)
    return dict(info()) if callable(info) else {}
