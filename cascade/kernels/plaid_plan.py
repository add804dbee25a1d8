"""PLAID's default knobs for a given ``k`` *and corpus size*, and when to search exhaustively instead.

colbert-ai's ``Searcher.dense_search`` defaults (:func:`default_search_params`)
follow ``k`` alone: for k > 100 they keep ``ndocs = max(4k, 4096)`` candidates and score
``max(k, ndocs // 4)`` of them exactly. On a corpus of a few thousand documents that is most of
the corpus, on top of candidate generation, and PLAID ends up slower than scoring every document.
:func:`plan_search` keeps colbert-ai's values where they are a small share of the corpus and caps
them where they are not (``N`` documents):

============================  =====================================================================
``ncells``, threshold         colbert-ai's for ``k`` (1 / 0.5 up to k=10, 2 / 0.45 up to 100, else 4 / 0.4)
``ndocs`` (candidate budget)  ``min(colbert-ai's, max(k, N // 4))``: at most a quarter of the corpus, never below k
``rerank_docs`` (exact)       ``min(colbert-ai's max(k, ndocs // 4), max(ndocs // 4, ceil(N / 16)))``;
                              when it is below ``k``, ranks ``rerank_docs + 1 .. k`` follow the
                              centroid interaction (:func:`append_tail`)
exhaustive                    when ``ndocs >= N / 2`` (so ``k >= N / 2``): the candidate budget is half
                              the corpus and PLAID cannot win; logged once by the stage
============================  =====================================================================

Explicit settings win: any of ``ncells``, ``centroid_score_threshold``, ``ndocs`` given means PLAID
(never the exhaustive switch); an explicit ``ndocs`` is used as given, with colbert-ai's exact
budget ``max(k, ndocs // 4)`` (no approximate tail). The fractions were chosen by measurement
(``experiments/plaid_defaults``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ndocs is capped at this share of the corpus (but never below k).
CANDIDATE_FRACTION = 1 / 4
# The exact stage scores at least this share of the corpus (when colbert-ai's budget is larger).
EXACT_FRACTION = 1 / 16
# A candidate budget of at least this share of the corpus means exhaustive search.
EXHAUSTIVE_FRACTION = 1 / 2


@dataclass(frozen=True)
class SearchPlan:
    """How one retrieval runs: exhaustively, or PLAID with these knobs (``plaid_kwargs``)."""

    exhaustive: bool
    ncells: int
    centroid_score_threshold: float
    ndocs: int
    rerank_docs: int
    reason: str = ""

    def plaid_kwargs(self) -> dict:
        """Keyword arguments of :func:`~cascade.kernels.plaid.plaid_search` (approximate tail on)."""
        return dict(ncells=self.ncells, centroid_score_threshold=self.centroid_score_threshold, ndocs=self.ndocs,
                    rerank_docs=self.rerank_docs, approx_tail=True)


def default_search_params(k: int) -> dict:
    """colbert-ai's ``Searcher.dense_search`` defaults for ``k``: ncells, centroid_score_threshold, ndocs."""
    if k <= 10:
        return dict(ncells=1, centroid_score_threshold=0.5, ndocs=256)
    if k <= 100:
        return dict(ncells=2, centroid_score_threshold=0.45, ndocs=1024)
    return dict(ncells=4, centroid_score_threshold=0.4, ndocs=max(k * 4, 4096))


def plan_search(k: int, num_docs: int, ncells: int | None = None, centroid_score_threshold: float | None = None,
                ndocs: int | None = None) -> SearchPlan:
    """The search for top ``k`` of ``num_docs`` documents; None knobs follow the module's table."""
    if k < 1 or num_docs < 1:
        raise ValueError(f"k and num_docs must be positive, got k={k}, num_docs={num_docs}")
    base = default_search_params(k)
    explicit = any(v is not None for v in (ncells, centroid_score_threshold, ndocs))
    cells = base["ncells"] if ncells is None else int(ncells)
    threshold = base["centroid_score_threshold"] if centroid_score_threshold is None else float(
        centroid_score_threshold)
    if ndocs is not None:
        budget, exact = int(ndocs), max(k, int(ndocs) // 4)
    else:
        budget = min(base["ndocs"], max(k, int(num_docs * CANDIDATE_FRACTION)))
        exact = min(max(k, base["ndocs"] // 4), max(budget // 4, math.ceil(num_docs * EXACT_FRACTION)))
    if not explicit and budget >= num_docs * EXHAUSTIVE_FRACTION:
        return SearchPlan(True, cells, threshold, budget, exact,
                          f"PLAID's candidate budget ({budget} documents for k={k}) is at least "
                          f"{EXHAUSTIVE_FRACTION:g} of the corpus ({num_docs} documents)")
    return SearchPlan(False, cells, threshold, budget, max(1, min(exact, budget)))


def append_tail(doc_idx: np.ndarray, scores: np.ndarray, tails: list[tuple[np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of exactly scored results (sorted, -1 / -inf padded) followed by each row's tail.

    ``tails[q]``: (docs, approximate scores), best first, not among row ``q``'s documents. A tail
    keeps its scores when they already rank below the row's last exact score; otherwise all of it
    is shifted down by one amount so that its best ranks just below it (order and gaps kept).
    Returns (Q, K + longest tail) arrays.
    """
    width = doc_idx.shape[1] + max((len(t[0]) for t in tails), default=0)
    out_idx = np.full((len(doc_idx), width), -1, np.int64)
    out_sc = np.full((len(doc_idx), width), -np.inf, np.float32)
    out_idx[:, :doc_idx.shape[1]], out_sc[:, :doc_idx.shape[1]] = doc_idx, scores
    for q, (docs, approx) in enumerate(tails):
        head = int((doc_idx[q] >= 0).sum())
        if not len(docs):
            continue
        approx = np.asarray(approx, np.float64)
        if head:
            below = float(np.nextafter(np.float32(scores[q, head - 1]), np.float32(-np.inf)))
            if approx[0] > below:
                approx = approx - (approx[0] - below)
            tail_sc = np.minimum(approx.astype(np.float32), np.float32(below))
        else:
            tail_sc = approx.astype(np.float32)
        out_idx[q, head:head + len(docs)], out_sc[q, head:head + len(docs)] = docs, tail_sc
    return out_idx, out_sc
