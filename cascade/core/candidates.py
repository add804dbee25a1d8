"""Padded-array candidate lists and the batch that travels between stages."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cascade.core.errors import CascadeError, NeedsCandidatesError

if TYPE_CHECKING:
    from cascade.core.data import Corpus

PAD = -1


@dataclass(frozen=True)
class Candidates:
    """Per-query candidate documents as padded arrays.

    ``doc_idx`` (Q, K) int64 holds corpus row indices, ``-1`` for padding;
    ``scores`` (Q, K) float32 holds their scores, ``-inf`` at padding. Valid
    entries are packed to the left of each row.

    ``features`` (Q, K, F) float32, NaN at padding, holds named per-candidate columns
    (``feature_names``, e.g. ``bm25.score``, ``colbert.tok_max``) that stages record while
    features are recorded (:mod:`cascade.core.features`); :meth:`topk` and :meth:`restrict`
    carry them along, so a later stage never recomputes an earlier stage's columns.
    """

    doc_idx: np.ndarray
    scores: np.ndarray
    features: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        doc_idx = np.asarray(self.doc_idx)
        scores = np.asarray(self.scores)
        if doc_idx.ndim != 2 or scores.shape != doc_idx.shape:
            raise ValueError(
                f"doc_idx and scores must be 2-D arrays of one shape (queries, k); "
                f"got {doc_idx.shape} and {scores.shape}"
            )
        if doc_idx.size and not np.issubdtype(doc_idx.dtype, np.integer):
            raise TypeError(f"doc_idx must hold integers, got {doc_idx.dtype}")
        doc_idx = doc_idx.astype(np.int64, copy=False)
        scores = scores.astype(np.float32, copy=False)
        pad = doc_idx == PAD
        if (doc_idx < PAD).any():
            raise ValueError("doc_idx holds negative values other than the padding value -1")
        if doc_idx.shape[1] > 1 and (pad[:, :-1] & ~pad[:, 1:]).any():
            raise ValueError("padding (-1) must come after every valid doc_idx in a row")
        if np.isnan(scores[~pad]).any():
            raise ValueError("scores of valid candidates must not be NaN")
        if not np.isneginf(scores[pad]).all():
            scores = np.where(pad, np.float32(-np.inf), scores)
        object.__setattr__(self, "doc_idx", doc_idx)
        object.__setattr__(self, "scores", scores)
        self._check_features(pad)

    def _check_features(self, pad: np.ndarray) -> None:
        names = tuple(str(n) for n in self.feature_names)
        if self.features is None:
            if names:
                raise ValueError(f"feature_names {names} given without features")
            object.__setattr__(self, "feature_names", ())
            return
        feats = np.asarray(self.features, np.float32)
        if feats.shape != (*self.doc_idx.shape, len(names)):
            raise ValueError(f"features must have shape (queries, k, {len(names)}) to match doc_idx "
                             f"{self.doc_idx.shape} and feature_names, got {feats.shape}")
        if len(set(names)) != len(names):
            raise ValueError(f"feature_names must be unique, got {names}")
        if pad.any() and not np.isnan(feats[pad]).all():
            feats = np.where(pad[..., None], np.float32(np.nan), feats)
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "feature_names", names)

    def feature(self, name: str) -> np.ndarray:
        """The (Q, K) column ``name`` (NaN at padding); a KeyError naming the columns there are."""
        if self.features is None or name not in self.feature_names:
            raise KeyError(f"no feature column {name!r}; these candidates have {list(self.feature_names) or 'none'}")
        assert self.features is not None  # feature_names name its columns
        return self.features[:, :, self.feature_names.index(name)]

    def rescored(self, scores: np.ndarray, columns: dict[str, np.ndarray] | None = None) -> Candidates:
        """The same documents with new ``scores``, their feature columns kept and ``columns`` (name -> (Q, K)) added."""
        names, feats = self.feature_names, self.features
        if columns:
            new = tuple(columns)
            clash = sorted(set(new) & set(names))
            if clash:
                raise ValueError(f"feature columns {clash} are recorded twice; give the stages distinct names")
            stacked = np.stack([np.asarray(columns[n], np.float32) for n in new], axis=-1)
            feats = stacked if feats is None else np.concatenate([feats, stacked], axis=-1)
            names = names + new
        return Candidates(self.doc_idx, scores, feats, names)

    def _take(self, order: np.ndarray, width: int, keep: np.ndarray | None = None) -> np.ndarray | None:
        """Features reordered along K like doc_idx (``keep`` False: padding), cut to ``width``."""
        if self.features is None:
            return None
        feats = self.features if keep is None else np.where(keep[..., None], self.features, np.float32(np.nan))
        return np.take_along_axis(feats, order[..., None], axis=1)[:, :width]

    @classmethod
    def empty(cls, num_queries: int) -> Candidates:
        """Candidates with no documents for ``num_queries`` queries."""
        return cls(np.full((num_queries, 0), PAD, np.int64), np.zeros((num_queries, 0), np.float32))

    @classmethod
    def from_lists(cls, doc_idx: Sequence[Sequence[int] | np.ndarray],
                   scores: Sequence[Sequence[float] | np.ndarray]) -> Candidates:
        """Build from ragged per-query lists (or 1-D arrays), padding to the longest row."""
        if len(doc_idx) != len(scores):
            raise ValueError("doc_idx and scores need one list per query")
        width = max((len(row) for row in doc_idx), default=0)
        idx = np.full((len(doc_idx), width), PAD, np.int64)
        val = np.full((len(doc_idx), width), -np.inf, np.float32)
        for i, (ids, sc) in enumerate(zip(doc_idx, scores)):
            if len(ids) != len(sc):
                raise ValueError(f"query row {i}: {len(ids)} doc ids but {len(sc)} scores")
            idx[i, : len(ids)] = ids
            val[i, : len(sc)] = sc
        return cls(idx, val)

    @property
    def num_queries(self) -> int:
        return self.doc_idx.shape[0]

    @property
    def mask(self) -> np.ndarray:
        """Boolean (Q, K): True where an entry is a real candidate."""
        return self.doc_idx != PAD

    @property
    def lengths(self) -> np.ndarray:
        """Number of valid candidates per query."""
        return self.mask.sum(axis=1)

    def topk(self, k: int | None) -> Candidates:
        """Sort every row by descending score (ties by doc index) and keep at most ``k``."""
        # lexsort: last key is primary; padding has -inf so it sinks to the end.
        order = np.lexsort((self.doc_idx, -self.scores.astype(np.float64)), axis=1)
        doc_idx = np.take_along_axis(self.doc_idx, order, axis=1)
        pad = doc_idx == PAD
        # -inf scored real docs could precede padding only if ties; re-pack defensively.
        if (pad[:, :-1] & ~pad[:, 1:]).any():
            order = np.take_along_axis(order, np.argsort(pad, axis=1, kind="stable"), axis=1)
            doc_idx = np.take_along_axis(self.doc_idx, order, axis=1)
        scores = np.take_along_axis(self.scores, order, axis=1)
        width = int(self.lengths.max(initial=0))
        if k is not None:
            width = min(width, k)
        return Candidates(doc_idx[:, :width], scores[:, :width], self._take(order, width), self.feature_names)

    def restrict(self, allowed: np.ndarray) -> Candidates:
        """These candidates without the documents ``allowed`` (bool, one per corpus row) excludes; order kept."""
        keep = (self.doc_idx != PAD) & allowed[np.maximum(self.doc_idx, 0)]
        if keep.all() or not self.doc_idx.size:
            return self
        order = np.argsort(~keep, axis=1, kind="stable")  # kept entries first, in their order
        doc_idx = np.take_along_axis(np.where(keep, self.doc_idx, PAD), order, axis=1)
        scores = np.take_along_axis(np.where(keep, self.scores, np.float32(-np.inf)), order, axis=1)
        width = int(keep.sum(axis=1).max(initial=0))
        return Candidates(doc_idx[:, :width], scores[:, :width], self._take(order, width, keep), self.feature_names)

    def check_within(self, num_docs: int) -> None:
        """Raise if any candidate index is outside a corpus of ``num_docs`` documents."""
        if self.doc_idx.size and self.doc_idx.max() >= num_docs:
            bad = int(self.doc_idx.max())
            raise CascadeError(
                f"candidate doc index {bad} is outside the corpus ({num_docs} documents); "
                "the candidates were made for another corpus - build them from this dataset"
            )


@dataclass(frozen=True, init=False)
class Batch:
    """What one stage hands the next: the queries, the corpus and the current candidates.

    ``allowed`` (bool, one per corpus row; None: every row) is a filtered search's set of documents.
    Together with the corpus's own ``live`` rows (a saved index's documents not deleted, when it has
    any deletions) it makes :attr:`row_mask`: retrieving stages rank only those rows, and candidates
    outside it are dropped whenever a batch is made, so no stage ever sees them.
    """

    query_texts: tuple[str, ...]
    corpus: Corpus
    candidates: Candidates | None = None
    query_ids: tuple[str, ...] = field(default=())
    allowed: np.ndarray | None = field(default=None, compare=False)

    def __init__(self, query_texts: Sequence[str], corpus: Corpus, candidates: Candidates | None = None,
                 query_ids: Sequence[str] = (), allowed: np.ndarray | None = None) -> None:
        # query texts and ids: any sequences, kept as tuples
        object.__setattr__(self, "query_texts", tuple(query_texts))
        object.__setattr__(self, "corpus", corpus)
        object.__setattr__(self, "candidates", candidates)
        object.__setattr__(self, "query_ids", tuple(query_ids))
        object.__setattr__(self, "allowed", allowed)
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.query_ids and len(self.query_ids) != len(self.query_texts):
            raise ValueError("query_ids and query_texts differ in length")
        if self.allowed is not None:
            allowed = np.asarray(self.allowed)
            if allowed.dtype != bool or allowed.shape != (len(self.corpus),):
                raise ValueError(f"allowed must be a bool array with one entry per corpus row ({len(self.corpus)}), "
                                 f"got {allowed.dtype} {allowed.shape}")
            object.__setattr__(self, "allowed", allowed)
        if self.candidates is not None:
            if self.candidates.num_queries != len(self.query_texts):
                raise ValueError(
                    f"candidates have {self.candidates.num_queries} rows for "
                    f"{len(self.query_texts)} queries"
                )
            self.candidates.check_within(len(self.corpus))
            if self.row_mask is not None:
                object.__setattr__(self, "candidates", self.candidates.restrict(self.row_mask))

    @property
    def row_mask(self) -> np.ndarray | None:
        """Rows a stage may return: the corpus's live rows and the filter (None: every row)."""
        if "_row_mask" not in self.__dict__:
            live = getattr(self.corpus, "live", None)
            mask = self.allowed if live is None else live if self.allowed is None else live & self.allowed
            self.__dict__["_row_mask"] = mask
        return self.__dict__["_row_mask"]

    @property
    def num_queries(self) -> int:
        return len(self.query_texts)

    def need_candidates(self) -> Candidates:
        """The candidates a stage reranks; :class:`NeedsCandidatesError` when the batch carries none
        (it is the input of a first stage, which retrieves)."""
        if self.candidates is None:
            raise NeedsCandidatesError("this batch carries no candidates to score; put a retriever first")
        return self.candidates

    def with_candidates(self, candidates: Candidates) -> Batch:
        """A copy of this batch carrying new candidates."""
        return Batch(self.query_texts, self.corpus, candidates, self.query_ids, self.allowed)
