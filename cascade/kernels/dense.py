"""Dense-vector kernels: dot-product scores of given candidates and exact top-k over a matrix."""
from __future__ import annotations

import numpy as np


def dot_scores(query_vecs: np.ndarray, doc_vecs: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
    """(Q, K) dot products of each query vector with its candidates' vectors; ``-inf`` at padding."""
    docs = np.asarray(doc_vecs[np.maximum(doc_idx, 0).ravel()], np.float32)
    docs = docs.reshape(*doc_idx.shape, -1)
    scores = np.einsum("qkd,qd->qk", docs, np.asarray(query_vecs, np.float32))
    return np.where(doc_idx >= 0, scores, -np.inf).astype(np.float32)


def topk_dot(query_vecs: np.ndarray, doc_vecs: np.ndarray, k: int, chunk_size: int = 32768,
             query_block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` documents by dot product, scanning ``doc_vecs`` in chunks (bounded memory).

    Returns ``(doc_idx, scores)``, each (Q, min(k, N)), sorted by descending score (ties by index).
    """
    num_docs = doc_vecs.shape[0]
    k = min(k, num_docs)
    num_q = query_vecs.shape[0]
    best_idx = np.zeros((num_q, k), np.int64)
    best_sc = np.zeros((num_q, k), np.float32)
    for qs in range(0, num_q, query_block):
        q = np.asarray(query_vecs[qs:qs + query_block], np.float32)
        idx = np.zeros((len(q), 0), np.int64)
        sc = np.zeros((len(q), 0), np.float32)
        for start in range(0, num_docs, chunk_size):
            chunk = np.asarray(doc_vecs[start:start + chunk_size], np.float32)
            idx = np.concatenate([idx, np.broadcast_to(np.arange(start, start + len(chunk)), (len(q), len(chunk)))], 1)
            sc = np.concatenate([sc, q @ chunk.T], axis=1)
            if sc.shape[1] > k:
                keep = np.argpartition(-sc, k - 1, axis=1)[:, :k]
                idx, sc = np.take_along_axis(idx, keep, 1), np.take_along_axis(sc, keep, 1)
        order = np.lexsort((idx, -sc.astype(np.float64)), axis=1)
        best_idx[qs:qs + len(q)] = np.take_along_axis(idx, order, 1)
        best_sc[qs:qs + len(q)] = np.take_along_axis(sc, order, 1)
    return best_idx, best_sc
