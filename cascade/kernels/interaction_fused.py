"""PLAID's centroid interaction in one pass with numba (no gathered tile), two ways.

For a query's centroid-score table ``table`` (C, Lq) and documents given as runs of token rows
(``starts``, ``lengths``) into ``codes`` (T,), :func:`doc_maxima` writes
``out[i, j] = max over tokens t of document i of table[codes[t], j]`` (``-inf`` for an empty
document; a pruned centroid's row of ``table`` holds ``-inf``, so it never wins).
:func:`ivf_maxima` gives the same maxima from the other side, as stage 2 does when the kept
centroids' inverted lists hold fewer (document, centroid) pairs than the documents' tokens: for
each kept centroid, each document of its list that is a candidate takes the centroid's row.

The numpy path of :func:`cascade.kernels.plaid.approx_scores` gathers a (tokens, Lq) tile and
folds it with ``maximum.reduceat``: two passes over memory that is ~80 bytes per token. Here each
token reads its 4-byte code and one table row, which stays in cache (C x Lq floats: 1.3 MB at
C = 16,384, Lq = 20). A maximum is exact, so both paths give identical maxima.

numba is optional (``pip install numba``), imported lazily, as for :mod:`cascade.kernels.residual_fused`.
"""
from __future__ import annotations

import functools

import numpy as np

from cascade.kernels.residual_fused import INSTALL_HINT, available, match_torch_threads

__all__ = ["available", "doc_maxima", "doc_maxima_naive", "ivf_maxima", "ivf_maxima_naive"]


@functools.lru_cache(maxsize=1)
def _kernel():
    """The kernel, compiled by numba on first use (and cached on disk by numba)."""
    from numba import njit, prange

    def maxima(table, codes, starts, lengths, out):  # pragma: no cover - compiled by numba
        lq = table.shape[1]
        for i in prange(len(starts)):
            row = out[i]
            s = starts[i]
            for t in range(s, s + lengths[i]):
                src = table[codes[t]]
                for j in range(lq):
                    v = src[j]
                    if v > row[j]:
                        row[j] = v

    # no fastmath: its "no infinities" flag would let LLVM drop the -inf of pruned centroids and empty documents
    return njit(parallel=True, cache=True, error_model="numpy")(maxima)


def doc_maxima(table: np.ndarray, codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(n, Lq) float32: each document's per-query-token maximum of ``table`` over its tokens' codes.

    table: (C, Lq) float32 centroid scores (``-inf`` rows: pruned centroids); codes: (T,) integer
    centroid id per token row (may be memory-mapped); starts, lengths: (n,) each document's run of rows.
    """
    if not available():
        raise ImportError(f"the fused centroid interaction needs numba: {INSTALL_HINT}")
    table = np.ascontiguousarray(table, np.float32)
    out = np.full((len(starts), table.shape[1]), -np.inf, np.float32)
    if len(starts):
        match_torch_threads()
        _kernel()(table, np.asarray(codes), np.ascontiguousarray(starts, np.int64),
                  np.ascontiguousarray(lengths, np.int64), out)
    return out


def doc_maxima_naive(table: np.ndarray, codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reference for :func:`doc_maxima`: a Python loop over documents."""
    out = np.full((len(starts), table.shape[1]), -np.inf, np.float32)
    for i, (s, n) in enumerate(zip(np.asarray(starts).tolist(), np.asarray(lengths).tolist())):
        if n:
            out[i] = np.asarray(table, np.float32)[np.asarray(codes[s:s + n], np.int64)].max(axis=0)
    return out


@functools.lru_cache(maxsize=1)
def _ivf_kernel():
    """The inverted-list kernel, compiled by numba on first use (cached on disk)."""
    from numba import njit

    def maxima(table, kept, ivf_docs, ivf_offsets, slot, out):  # pragma: no cover - compiled by numba
        lq = table.shape[1]
        for c in kept:  # serial: two centroids may write one document's row
            src = table[c]
            for p in range(ivf_offsets[c], ivf_offsets[c + 1]):
                i = slot[ivf_docs[p]]
                if i >= 0:
                    row = out[i]
                    for j in range(lq):
                        v = src[j]
                        if v > row[j]:
                            row[j] = v

    return njit(cache=True, error_model="numpy")(maxima)  # no fastmath, as above


def ivf_maxima(table: np.ndarray, kept: np.ndarray, ivf_docs: np.ndarray, ivf_offsets: np.ndarray,
               slot: np.ndarray, n: int) -> np.ndarray:
    """(n, Lq) float32: per candidate, the maximum of ``table`` over the kept centroids whose
    inverted lists hold it (``-inf`` where none does).

    table: (C, Lq) float32; kept: centroid ids to read; ivf_docs, ivf_offsets: the inverted lists
    (centroid ``c`` holds ``ivf_docs[ivf_offsets[c]:ivf_offsets[c + 1]]``); slot: (N,) each
    document's candidate row in ``0..n-1``, or -1 for a document that is not a candidate.
    """
    if not available():
        raise ImportError(f"the fused centroid interaction needs numba: {INSTALL_HINT}")
    out = np.full((n, table.shape[1]), -np.inf, np.float32)
    if n and len(kept):
        _ivf_kernel()(np.ascontiguousarray(table, np.float32), np.ascontiguousarray(kept, np.int64),
                      np.asarray(ivf_docs), np.ascontiguousarray(ivf_offsets, np.int64),
                      np.ascontiguousarray(slot, np.int32), out)
    return out


def ivf_maxima_naive(table: np.ndarray, kept: np.ndarray, ivf_docs: np.ndarray, ivf_offsets: np.ndarray,
                     slot: np.ndarray, n: int) -> np.ndarray:
    """Reference for :func:`ivf_maxima`: Python loops over centroids and their lists."""
    out = np.full((n, np.shape(table)[1]), -np.inf, np.float32)
    for c in np.asarray(kept).tolist():
        for doc in np.asarray(ivf_docs[ivf_offsets[c]:ivf_offsets[c + 1]]).tolist():
            if slot[doc] >= 0:
                out[slot[doc]] = np.maximum(out[slot[doc]], np.asarray(table[c], np.float32))
    return out
