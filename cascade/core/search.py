"""Ad-hoc search over a bound corpus, and reranking of plain lists of texts (the RAG use case).

``stage.index(corpus)`` binds a corpus (its cached artifacts are built or reused, content-addressed);
``stage.search("question", k=10)`` returns a :class:`Ranking`. ``stage.rerank(query, docs)`` ranks a
plain list of texts by an ordinary run of the stage over that list as a corpus of its own, indexed in
a private temporary folder (:func:`rerank_texts`), so nothing is written to the cache. Results carry
each document's id, score, text and position.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cascade.core.candidates import PAD, Batch, Candidates
from cascade.core.checks import check_k
from cascade.core.data import Corpus, Dataset
from cascade.core.errors import DataError
from cascade.core.scratch import scratch_cache
from cascade.core.sources import corpus as corpus_from

if TYPE_CHECKING:
    from cascade.core.stage import Stage


@dataclass(frozen=True)
class Hit:
    """One ranked document: ``rank`` counts from 1; ``index`` is its corpus row (search) or its
    position in the list given to ``rerank``."""

    doc_id: str
    score: float
    text: str
    rank: int
    index: int


@dataclass(frozen=True)
class Ranking(Sequence):
    """The ranked hits of one query, best first; a sequence of :class:`Hit`."""

    query: str
    hits: tuple[Hit, ...]

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i):
        return self.hits[i]

    @property
    def doc_ids(self) -> list[str]:
        return [h.doc_id for h in self.hits]

    @property
    def scores(self) -> list[float]:
        return [h.score for h in self.hits]

    @property
    def texts(self) -> list[str]:
        return [h.text for h in self.hits]

    @property
    def indices(self) -> list[int]:
        return [h.index for h in self.hits]

    def to_list(self) -> list[dict]:
        """One dict per hit: ``doc_id``, ``score``, ``text``, ``rank``, ``index``."""
        return [dict(doc_id=h.doc_id, score=h.score, text=h.text, rank=h.rank, index=h.index) for h in self.hits]

    def to_pandas(self):
        """One row per hit: columns ``query``, ``rank``, ``doc_id``, ``score``, ``text``, ``index``."""
        import pandas as pd

        columns = ["query", "rank", "doc_id", "score", "text", "index"]
        return pd.DataFrame([{"query": self.query, **row} for row in self.to_list()], columns=columns)


def texts_or_batch(rerank_batch):
    """Let ``rerank`` also take ``(query, docs)``: plain texts go to :meth:`Stage.rerank_texts`.

    Applied to :meth:`Stage.rerank` and, through ``__init_subclass__``, to every override of it,
    so ``rerank(batch) -> batch`` stays the one stage interface.
    """
    @functools.wraps(rerank_batch)
    def rerank(self, batch, docs=None, **kwargs):
        if isinstance(batch, Batch):
            if docs is not None or kwargs:
                raise TypeError(f"{self.name}.rerank(batch) takes only a Batch; rerank(query, docs, k=...) "
                                "ranks a list of texts")
            return rerank_batch(self, batch)
        return self.rerank_texts(batch, docs, **kwargs)

    cast(Any, rerank).texts_dispatch = True
    return rerank


def as_corpus(corpus: Any) -> Corpus:
    """A :class:`Corpus` from a Dataset or any source :func:`cascade.core.sources.corpus` takes
    (a Corpus, a list of texts, a dict id -> text, a DataFrame, a BEIR folder...)."""
    return corpus.corpus if isinstance(corpus, Dataset) else corpus_from(corpus)


def _check_texts(texts: Sequence, what: str) -> None:
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"{what}: item {bad} is a {type(texts[bad]).__name__}, expected a string")


def _queries(query: Any) -> tuple[tuple[str, ...], bool]:
    """(query texts, whether one query was given as a string)."""
    if isinstance(query, str):
        return (query,), True
    if isinstance(query, Sequence) and not isinstance(query, bytes):
        _check_texts(query, "queries")
        return tuple(query), False
    raise DataError(f"a query must be a string or a list of strings, got {type(query).__name__}")


def search(stage: Stage, query: str | Sequence[str], k: int | None, corpus: Corpus, subset: Any = None,
           where: Mapping | None = None) -> Ranking | list[Ranking]:
    """Run ``stage`` for ``query`` (one string or a list) over ``corpus``; the top ``k`` of each query.

    ``subset`` (document ids) and ``where`` (metadata equalities, see :func:`allowed_rows`) restrict
    every stage to those documents, the first stage included.
    """
    k = check_k(k, f"{stage.name}.search")
    texts, single = _queries(query)
    if not texts:
        return []
    allowed = allowed_rows(corpus, subset, where)
    if allowed is not None and not allowed.any():
        out = [Ranking(q, ()) for q in texts]
        return out[0] if single else out
    batch = stage.rerank(Batch(texts, corpus, allowed=allowed))
    cands = batch.candidates.topk(k)
    out = [_ranking(q, row_idx, row_sc, corpus.ids, corpus.texts) for q, row_idx, row_sc in
           zip(texts, cands.doc_idx, cands.scores)]
    return out[0] if single else out


def allowed_rows(corpus: Corpus, subset: Any = None, where: Mapping | None = None) -> np.ndarray | None:
    """The rows a filtered search may return (bool per corpus row), None when unfiltered.

    ``subset``: document ids (every one must be in the corpus). ``where``: ``{field: value}`` (or
    ``{field: [values]}``, any of them) on each document's metadata, all fields matching; the corpus
    must keep metadata (a saved index, :func:`cascade.load`). Both given: documents meeting both.
    """
    if subset is None and where is None:
        return None
    mask = np.ones(len(corpus), bool)
    if subset is not None:
        if isinstance(subset, (str, bytes)) or not isinstance(subset, (Sequence, set, frozenset, np.ndarray)):
            raise DataError(f"subset must be a list of document ids, got {type(subset).__name__}")
        index = corpus.index_of
        ids = [str(i) for i in subset]
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise DataError(f"subset names {len(unknown)} document id(s) not in the corpus, e.g. "
                            f"{', '.join(map(repr, unknown[:5]))}; give ids of indexed documents")
        mask[:] = False
        mask[np.fromiter((index[i] for i in ids), np.int64, len(ids))] = True
    if where is not None:
        if not isinstance(where, Mapping) or not where:
            raise DataError(f"where must be a non-empty dict {{field: value}}, got {where!r}")
        rows_where = getattr(corpus, "rows_where", None)
        if rows_where is None:
            raise DataError("where= filters on document metadata, which this corpus does not keep; save the "
                            "index and open it with cascade.load(DIR) (documents added with metadata), or "
                            "filter by ids with subset=")
        mask &= rows_where(where)
    return mask


def _ranking(query: str, idx: np.ndarray, scores: np.ndarray, ids: Sequence[str], texts: Sequence[str]) -> Ranking:
    keep = idx != PAD
    return Ranking(query, tuple(Hit(ids[i], float(s), texts[i], rank, int(i))
                                for rank, (i, s) in enumerate(zip(idx[keep], scores[keep]), 1)))


@dataclass(frozen=True)
class TextLists:
    """Queries, each with its own list of document texts and ids (what ``rerank(query, docs)`` ranks)."""

    queries: tuple[str, ...]
    texts: list[list[str]]
    ids: list[list[str]]

    @classmethod
    def make(cls, query: Any, docs: Any) -> tuple[TextLists, bool]:
        """From one query and a list of texts (or a dict id -> text), or a list of queries with one such list each."""
        queries, single = _queries(query)
        rows = [docs] if single else docs
        if not single and (not isinstance(rows, Sequence) or isinstance(rows, (str, bytes))):
            raise DataError("with a list of queries, give a list of document lists (one per query)")
        if len(rows) != len(queries):
            raise DataError(f"{len(queries)} queries but {len(rows)} document lists; give one list per query")
        texts, ids = [], []
        for row in rows:
            if isinstance(row, Mapping):
                ids.append([str(i) for i in row])
                texts.append(list(row.values()))
            elif isinstance(row, Sequence) and not isinstance(row, (str, bytes)):
                ids.append([str(i) for i in range(len(row))])
                texts.append(list(row))
            else:
                raise DataError(f"documents must be a list of strings or a dict of id -> text, "
                                f"got {type(row).__name__}")
            _check_texts(texts[-1], "documents")
        return cls(queries, texts, ids), single

    def corpora(self) -> list[tuple[Corpus, list[int]]]:
        """Each distinct non-empty list as a :class:`Corpus` (ids as given), with the queries it belongs to
        (queries given the same list share one run over it)."""
        found: dict[tuple, list[int]] = {}
        for q, (ids, texts) in enumerate(zip(self.ids, self.texts)):
            if texts:
                found.setdefault((tuple(ids), tuple(texts)), []).append(q)
        for (_, texts), members in found.items():
            if not any(t.strip() for t in texts):
                raise DataError(f"every one of the {len(texts)} documents given for query "
                                f"{self.queries[members[0]]!r} is empty; nothing can be ranked")
        return [(Corpus(ids, texts), members) for (ids, texts), members in found.items()]


def rerank_texts(stage: Stage, query: str | Sequence[str], docs: Any, k: int | None = None
                 ) -> Ranking | list[Ranking]:
    """Rank ``docs`` (texts, or a dict id -> text) for ``query``; with a list of queries, one list per query.

    An ordinary run of ``stage``: each list is a small corpus of its own (ids: positions, or the dict's
    keys), indexed by the stages as any corpus is (BM25 with that list's term statistics), and every
    one of its documents, in the given order, is a candidate. The stages that see those candidates
    first rank them by their own scores (the candidates carry none yet); each later stage ranks what
    the one before kept, keeping its own ``k``, fused as configured; ``k`` here cuts the final ranking.
    The run happens on a copy of ``stage`` (:func:`detached`), with its artifacts in a private folder
    deleted afterwards (:func:`cascade.core.scratch.scratch_cache`): nothing is written to the cache and
    ``stage`` stays as it was (bound to the corpus it searches, if any). Hits keep their position in
    the given list (``index``).
    """
    k = check_k(k, f"{stage.name}.rerank")
    lists, single = TextLists.make(query, docs)
    out = [Ranking(q, ()) for q in lists.queries]
    groups = lists.corpora()
    if groups:
        run = detached(stage)
        with scratch_cache():
            for corpus, members in groups:
                start = Candidates(np.tile(np.arange(len(corpus)), (len(members), 1)),
                                   np.zeros((len(members), len(corpus)), np.float32))
                queries = tuple(lists.queries[q] for q in members)
                cands = run.rerank(Batch(queries, corpus, start)).need_candidates().topk(k)
                for q, row_idx, row_sc in zip(members, cands.doc_idx, cands.scores):
                    out[q] = _ranking(lists.queries[q], row_idx, row_sc, corpus.ids, corpus.texts)
    return out[0] if single else out


def detached(stage: Stage, fresh: bool = True) -> Stage:
    """A copy of ``stage``'s tree to run over a corpus of its own, leaving ``stage`` untouched.

    Composites are copied with :meth:`Stage.replace`, leaves shallowly: a copy shares its settings and
    loaded models (nothing is reloaded), and whatever it prepares for a corpus (opened indexes, the
    bound corpus) is its own, so the caller's stages stay prepared for their corpus and concurrent
    calls never share that state. Leaves also show no progress bars. ``fresh``: ``stage`` sees the
    incoming candidates, which carry no scores, so the leaves that see them rank by their own scores
    (no fusion), as a retriever's would: a pipeline passes its input to its first part only (its
    ``entry()`` lies inside it), any other composite (a union) to every inner stage.
    """
    inner = stage.children()
    if inner:
        sequential = stage.entry() is not stage
        clone = stage.replace([detached(child, fresh and not (sequential and i)) for i, child in enumerate(inner)])
    else:
        clone = stage.replace([])
        if fresh:
            clone.fusion = None
        if isinstance(getattr(clone, "progress", None), bool):
            clone.progress = False  # type: ignore[attr-defined]
    clone._prepared_for = None
    clone.__dict__.pop("_search_corpus", None)
    return clone
