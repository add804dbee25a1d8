"""Dense-vector kernels: dot-product scores of given candidates and exact top-k over a matrix."""
from __future__ import annotations

import numpy as np


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best of a 1-D ``scores``, best first; equal scores in index order.

    Deterministic at the cutoff: among documents tied with the k-th score, the lowest
    indices are kept (``argpartition`` alone would keep any of them).
    """
    scores = np.asarray(scores)
    n = len(scores)
    if k <= 0 or n == 0:
        return np.zeros(0, np.int64)
    if k < n:
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: k - len(above)]
        chosen = np.concatenate([above, ties])
    else:
        chosen = np.arange(n)
    return chosen[np.lexsort((chosen, -scores[chosen].astype(np.float64)))]


# dot_scores gathers at most this many float elements (rows x dim) at once: 2 MiB of float32, in cache.
DOT_TILE_ELEMENTS = 1 << 19


def dot_scores(query_vecs: np.ndarray, doc_vecs: np.ndarray, doc_idx: np.ndarray,
               tile_elements: int = DOT_TILE_ELEMENTS) -> np.ndarray:
    """(Q, K) dot products of each query vector with its candidates' vectors; ``-inf`` at padding.

    Tile by tile (whole queries' candidates, or a query's candidates in column chunks when K alone
    exceeds a tile), the candidates' vectors are gathered with ``np.take`` into one reused
    cache-sized buffer and multiplied by an einsum. Each score is the einsum's own dot product, so the
    result is bit for bit :func:`dot_scores_gathered`'s, whatever the tiling and alone or in a
    batch; but no ``(Q, K, dim)`` array is built (at 300 x 1000 x 384, faulting in those 460 MB of
    fresh memory was ~90% of the scoring time).
    """
    doc_idx = np.asarray(doc_idx)
    if doc_idx.ndim != 2 or len(doc_idx) != len(query_vecs):
        raise ValueError(f"doc_idx must be (Q, K) with Q = {len(query_vecs)} queries, got shape {doc_idx.shape}")
    num_q, num_k = doc_idx.shape
    out = np.full((num_q, num_k), -np.inf, np.float32)
    vecs = np.asarray(doc_vecs)  # a memmap as a plain ndarray view (np.take on the subclass is 10x slower)
    if num_q == 0 or num_k == 0 or not (doc_idx >= 0).any():
        return out
    queries = np.asarray(query_vecs, np.float32)
    rows = max(1, tile_elements // max(vecs.shape[1], 1))
    per_block, cols = max(1, rows // num_k), min(num_k, rows)
    buf = np.empty((per_block * cols, vecs.shape[1]), vecs.dtype)
    safe = np.maximum(doc_idx, 0)
    for qs in range(0, num_q, per_block):
        for ks in range(0, num_k, cols):
            block = safe[qs:qs + per_block, ks:ks + cols]
            tile = np.take(vecs, block.ravel(), axis=0, out=buf[:block.size], mode="clip")
            tile = tile.reshape(*block.shape, -1)
            if tile.dtype != np.float32:
                tile = tile.astype(np.float32)
            np.einsum("qkd,qd->qk", tile, queries[qs:qs + per_block], out=out[qs:qs + per_block, ks:ks + cols])
    out[doc_idx < 0] = -np.inf
    return out


def dot_scores_gathered(query_vecs: np.ndarray, doc_vecs: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
    """Reference for :func:`dot_scores`: every candidate's vector gathered into ``(Q, K, dim)``, then an einsum."""
    docs = np.asarray(doc_vecs[np.maximum(doc_idx, 0).ravel()], np.float32)
    docs = docs.reshape(*doc_idx.shape, -1)
    scores = np.einsum("qkd,qd->qk", docs, np.asarray(query_vecs, np.float32))
    return np.where(doc_idx >= 0, scores, -np.inf).astype(np.float32)


def _rank_key(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """int64 keys ordered like (score descending, index ascending) when sorted ascending; no ties.

    The float32 score's bits are mapped to an order-preserving int32 (high half, negated) and
    the document index (< 2**32) fills the low half, so one ``argpartition`` is exact at the
    k boundary. ``-0.0`` counts as ``0.0``.
    """
    bits = (np.asarray(scores, np.float32) + np.float32(0)).view(np.int32).astype(np.int64)
    ordered = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in the float value
    return ((-1 - ordered) << 32) | np.asarray(idx, np.int64)


def topk_dot(query_vecs: np.ndarray, doc_vecs: np.ndarray, k: int, chunk_size: int = 32768,
             query_block: int = 1024, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` documents by dot product, scanning ``doc_vecs`` in chunks (bounded memory).

    Returns ``(doc_idx, scores)``, each (Q, min(k, N)), sorted by descending score; equal
    scores are ordered (and cut at the k boundary) by ascending document index. ``allowed``
    (bool per document) ranks only those: the others score ``-inf`` before the top k (index -1
    where fewer than k are allowed); when few are allowed only their vectors are read.
    """
    if allowed is not None:
        rows = np.flatnonzero(allowed)
        if len(rows) <= len(allowed) // 4:  # a small subset: score its rows alone (same order, same ties)
            idx, sc = topk_dot(query_vecs, doc_vecs[rows] if len(rows) else doc_vecs[:0], k, chunk_size,
                               query_block)
            return rows[idx] if len(rows) else idx, sc
    num_docs = doc_vecs.shape[0]
    k = max(0, min(k, num_docs))
    num_q = query_vecs.shape[0]
    best_idx = np.zeros((num_q, k), np.int64)
    best_sc = np.zeros((num_q, k), np.float32)
    if k == 0:
        return best_idx, best_sc
    for qs in range(0, num_q, query_block):
        q = np.asarray(query_vecs[qs:qs + query_block], np.float32)
        idx = np.zeros((len(q), 0), np.int64)
        sc = np.zeros((len(q), 0), np.float32)
        for start in range(0, num_docs, chunk_size):
            chunk = np.asarray(doc_vecs[start:start + chunk_size], np.float32)
            idx = np.concatenate([idx, np.broadcast_to(np.arange(start, start + len(chunk)), (len(q), len(chunk)))], 1)
            # one query goes through BLAS as two rows: its matrix-vector path rounds differently,
            # and a query must score alike alone and in a batch
            part = (q if len(q) > 1 else np.repeat(q, 2, axis=0)) @ chunk.T
            part = part[:len(q)]
            if allowed is not None:
                part[:, ~allowed[start:start + len(chunk)]] = -np.inf
            sc = np.concatenate([sc, part], axis=1)
            if sc.shape[1] > k:
                keep = np.argpartition(_rank_key(sc, idx), k - 1, axis=1)[:, :k]
                idx, sc = np.take_along_axis(idx, keep, 1), np.take_along_axis(sc, keep, 1)
        order = np.argsort(_rank_key(sc, idx), axis=1)
        best_idx[qs:qs + len(q)] = np.take_along_axis(idx, order, 1)
        best_sc[qs:qs + len(q)] = np.take_along_axis(sc, order, 1)
    if allowed is not None:
        best_idx[np.isneginf(best_sc)] = -1
    return best_idx, best_sc
