"""Late-interaction MaxSim over a packed token matrix, and its naive reference.

Token vectors of a corpus live in one contiguous ``(T, dim)`` array; document ``i``
owns rows ``offsets[i]:offsets[i + 1]``. Candidates come as ``(Q, K)`` corpus row
indices with ``-1`` padding. Every kernel here has a naive reference it is tested
against (``maxsim_naive``, plain numpy for the others).
"""
from __future__ import annotations

import numpy as np
import torch

# Index entries (token slots) planned per block of queries: bounds the integer arrays.
DEFAULT_BLOCK_ROWS = 1 << 20
# Float elements (rows x dim) gathered, converted and multiplied per tile: 2**20 x 4 bytes
# = 4 MiB of float32, small enough to stay in cache (tuned in experiments/maxsim_bench).
DEFAULT_TILE_ELEMENTS = 1 << 20


def candidate_lengths(offsets: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
    """Token count of every candidate (0 for padding), shape ``doc_idx.shape``."""
    lengths = np.diff(np.asarray(offsets, dtype=np.int64))
    return np.where(doc_idx >= 0, lengths[np.maximum(doc_idx, 0)], 0)


def _query_blocks(rows_needed: np.ndarray, budget: int) -> list[np.ndarray]:
    """Split queries (in order) into blocks whose padded plan ``n * max(rows)`` fits the budget."""
    blocks, start, widest = [], 0, 0
    for i, need in enumerate(rows_needed):
        widest_if = max(widest, int(need))
        if i > start and (i - start + 1) * widest_if > budget:
            blocks.append(np.arange(start, i))
            start, widest_if = i, int(need)
        widest = widest_if
    if len(rows_needed):
        blocks.append(np.arange(start, len(rows_needed)))
    return blocks


def maxsim(queries: np.ndarray, query_mask: np.ndarray, tokens: np.ndarray, offsets: np.ndarray,
           doc_idx: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS,
           tile_elements: int = DEFAULT_TILE_ELEMENTS) -> np.ndarray:
    """Late-interaction scores ``sum_i max_j <q_i, d_j>`` of each query against its candidates.

    Args:
        queries: (Q, Lq, dim) query token vectors; query_mask: (Q, Lq) bool, False at padding.
        tokens: (T, dim) every document's token vectors (any float dtype, may be memory-mapped).
        offsets: (N + 1,) document ``i`` owns ``tokens[offsets[i]:offsets[i + 1]]``.
        doc_idx: (Q, K) candidate documents, ``-1`` for padding.
        block_rows: bound on token slots planned per block of queries (memory of the plan).
        tile_elements: bound on float elements gathered and multiplied at once (cache).

    Returns (Q, K) float32; ``-inf`` at padding and for documents without tokens.

    A block of B queries lays its candidates' tokens out packed per query in a (B, S)
    plan (S = most tokens any query of the block has; no per-document padding). Tiles
    of that plan are gathered as (B, s, dim), converted to float32 and multiplied with
    all B queries in one batched matmul; slots past a query's tokens are set to ``-inf``
    and a segment max (scatter ``amax``) folds token rows into their documents. Nothing
    4-D is built and there is no Python loop over documents.
    """
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    num_q, num_k = doc_idx.shape
    out = np.full((num_q, num_k), -np.inf, np.float32)
    if num_q == 0 or num_k == 0:
        return out
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = candidate_lengths(offsets, doc_idx)
    starts = np.where(doc_idx >= 0, offsets[:-1][np.maximum(doc_idx, 0)], 0)
    for rows in _query_blocks(lengths.sum(axis=1), block_rows):
        out[rows] = _maxsim_block(queries[rows], query_mask[rows], tokens, starts[rows], lengths[rows],
                                  tile_elements)
    return out


def _plan(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every slot of the packed (B, S) layout: source row in ``tokens``, owning candidate, validity."""
    num_q, num_k = lengths.shape
    per_query = lengths.sum(axis=1)
    width = int(per_query.max())
    ends = np.cumsum(lengths, axis=1)
    # one search serves the whole block: running token counts offset per query
    base = (np.arange(num_q, dtype=np.int64) * (width + 1))[:, None]
    pos = np.arange(width, dtype=np.int64)[None, :]
    owner = np.searchsorted((ends + base).ravel(), (pos + base).ravel(), side="right").reshape(num_q, width)
    owner -= np.arange(num_q, dtype=np.int64)[:, None] * num_k
    valid = pos < per_query[:, None]
    owner = np.where(valid, owner, 0)
    first = np.take_along_axis(ends - lengths, owner, axis=1)
    rows = np.where(valid, np.take_along_axis(starts, owner, axis=1) + pos - first, 0)
    return rows, owner, valid


def _maxsim_block(queries: np.ndarray, query_mask: np.ndarray, tokens: np.ndarray, starts: np.ndarray,
                  lengths: np.ndarray, tile_elements: int) -> np.ndarray:
    num_q, num_k = lengths.shape
    if not lengths.any():
        return np.full((num_q, num_k), -np.inf, np.float32)
    rows, owner, valid = _plan(starts, lengths)
    owner_t, invalid_t = torch.from_numpy(owner), torch.from_numpy(~valid)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).transpose(1, 2)  # (B, dim, Lq)
    best = torch.full((num_q, num_k, q.shape[2]), float("-inf"), dtype=torch.float32)
    step = max(1, tile_elements // (tokens.shape[1] * num_q))
    for s0 in range(0, rows.shape[1], step):
        cols = slice(s0, s0 + step)
        # gather in the index's dtype (numpy reads memory-mapped rows fast), convert in torch
        tile = torch.from_numpy(np.asarray(np.take(tokens, rows[:, cols].ravel(), axis=0)))
        sim = torch.bmm(tile.reshape(num_q, -1, tokens.shape[1]).to(torch.float32), q)  # (B, s, Lq)
        sim.masked_fill_(invalid_t[:, cols].unsqueeze(-1), float("-inf"))
        best.scatter_reduce_(1, owner_t[:, cols].unsqueeze(-1).expand_as(sim), sim, reduce="amax")
    qmask = torch.from_numpy(np.asarray(query_mask, dtype=bool)).unsqueeze(1)
    scores = torch.where(qmask, best, torch.zeros((), dtype=best.dtype)).sum(-1)
    # A candidate with no tokens keeps -inf in every query position; the masked sum
    # above would turn an all-masked query into 0, so restore -inf explicitly.
    scores = torch.where(torch.from_numpy(lengths > 0), scores, torch.tensor(float("-inf")))
    return scores.numpy()


def maxsim_naive(queries: np.ndarray, query_mask: np.ndarray, tokens: np.ndarray, offsets: np.ndarray,
                 doc_idx: np.ndarray) -> np.ndarray:
    """Reference MaxSim: one small matmul per (query, document) pair, in Python loops."""
    out = np.full(doc_idx.shape, -np.inf, np.float32)
    for qi in range(doc_idx.shape[0]):
        q = np.asarray(queries[qi], np.float32)[np.asarray(query_mask[qi], bool)]
        for ki, doc in enumerate(doc_idx[qi]):
            if doc < 0:
                continue
            d = np.asarray(tokens[offsets[doc]:offsets[doc + 1]], np.float32)
            if len(d):
                out[qi, ki] = (q @ d.T).max(axis=1).sum() if len(q) else 0.0
    return out
