"""PLAID-style centroid-pruned late-interaction search over a residual-compressed index.

The index is (codes (T,) int32 centroid id of every token, offsets (N+1,): document
``d`` owns tokens ``offsets[d]:offsets[d+1]``), the centroids (C, dim) and an IVF
(centroid -> sorted unique documents). Per query (only its unmasked tokens):

1. ``S = Q @ centroids.T`` (Lq, C).
2. Candidates: union of the IVF lists of each query token's top ``ncells`` centroids.
3. Centroid interaction with pruning: a centroid is *pruned* when ``max_i S[i, c] <
   centroid_score_threshold``; pruned tokens are dropped from the doc (``-inf`` in the
   max, as colbert-ai's ``filter_pids``), so approx(d) = sum_i max over d's kept codes of
   S[i, code]; a doc whose codes are all pruned scores ``-inf`` and ranks last. Keep the
   best ``ndocs``.
4. Centroid interaction without pruning on those; keep the best ``rerank_docs``
   (colbert-ai: ``ndocs // 4``; here at least ``k``).
5. ``exact_fn`` scores the survivors exactly (e.g. MaxSim on decompressed residuals).

Every ranking orders by score descending, ties by document index ascending.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from cascade.kernels import interaction_fused
from cascade.kernels.maxsim import bf16_pays
from cascade.kernels.plaid_plan import append_tail, default_search_params  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# exact_fn(queries (B, Lq, dim), query_mask (B, Lq), doc_idx (B, K) -1 padded) -> (B, K) float32
ExactFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# Floats gathered per step of the centroid interaction (tokens x Lq): 2**22 x 4 B = 16 MiB.
APPROX_TILE_ELEMENTS = 1 << 22
# Centroid-interaction kernels of approx_scores over documents' own tokens.
APPROX_KERNELS = ("auto", "fused", "numpy")
# Floats of one exhaustive-search similarity tile (tokens x unmasked query tokens): 2**21 x 4 B = 8 MiB,
# so the tile and its reductions stay in the last-level cache whatever the number of queries.
EXHAUSTIVE_TILE_ELEMENTS = 1 << 21
# Tokens per step when building the IVF (bounds the int64 key arrays).
IVF_CHUNK_TOKENS = 1 << 22


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n), vectorized (int64)."""
    lengths = np.asarray(lengths, np.int64)
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0, dtype=np.int64) + np.repeat(
        np.asarray(starts, np.int64) - (ends - lengths), lengths)


def _chunks(lengths: np.ndarray, budget: int):
    """Yield (i0, i1) consecutive item ranges whose total length stays within ``budget`` (>= 1 item)."""
    ends = np.cumsum(np.asarray(lengths, np.int64))
    i0 = 0
    while i0 < len(ends):
        base = ends[i0 - 1] if i0 else 0
        i1 = max(int(np.searchsorted(ends, base + budget, side="right")), i0 + 1)
        yield i0, i1
        i0 = i1


def build_ivf(codes: np.ndarray, offsets: np.ndarray, num_centroids: int,
              chunk_tokens: int = IVF_CHUNK_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """(ivf_docs int32, ivf_offsets int64 (C+1,)): sorted unique documents of each centroid.

    Works in document-aligned chunks of about ``chunk_tokens`` tokens; each chunk's
    (code, doc) keys are deduplicated with ``np.unique`` before one global sort, so
    peak memory is ~8 bytes per (centroid, document) pair plus one chunk.
    """
    offsets = np.asarray(offsets, np.int64)
    num_docs = len(offsets) - 1
    lengths, parts = np.diff(offsets), []
    for d0, d1 in _chunks(lengths, chunk_tokens):
        docs = np.repeat(np.arange(d0, d1, dtype=np.int64), lengths[d0:d1])
        parts.append(np.unique(np.asarray(codes[offsets[d0]:offsets[d1]], np.int64) * num_docs + docs))
    keys = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    ivf_offsets = np.zeros(num_centroids + 1, np.int64)
    np.cumsum(np.bincount(keys // max(num_docs, 1), minlength=num_centroids), out=ivf_offsets[1:])
    return (keys % max(num_docs, 1)).astype(np.int32), ivf_offsets


def centroid_scores(query: np.ndarray, centroids: np.ndarray | torch.Tensor) -> np.ndarray:
    """(Lq, C) float32 ``query @ centroids.T``, a transposed view of a C-contiguous (C, Lq) array.

    ``centroids``: a (C, dim) array, or a torch tensor whose dtype the matmul runs in (bfloat16
    reads half the bytes: at 131k x 384 centroids, 14 ms against 40 ms in float32 on 2 cores).
    (Computed as ``centroids @ query.T``: torch's CPU matmul is ~20x slower the other way round.)
    """
    q = torch.from_numpy(np.ascontiguousarray(query, np.float32))
    if isinstance(centroids, torch.Tensor):
        return (centroids @ q.T.to(centroids.dtype)).float().numpy().T
    c = torch.from_numpy(np.ascontiguousarray(centroids, np.float32))
    return (c @ q.T).numpy().T


def approx_scores(scores: np.ndarray, codes: np.ndarray, offsets: np.ndarray, doc_ids: np.ndarray,
                  keep: np.ndarray | None = None, ivf: tuple[np.ndarray, np.ndarray] | None = None,
                  tile_elements: int = APPROX_TILE_ELEMENTS, kernel: str = "auto") -> np.ndarray:
    """Centroid interaction: (n,) float32 ``sum_i max_{t in d, keep[code_t]} scores[i, code_t]``.

    scores: (Lq, C) centroid scores of one query; doc_ids: (n,) sorted unique documents;
    keep: (C,) bool, None keeps all (pruned codes are skipped, -inf if a doc has none).
    (doc, code) pairs come from the docs' tokens or, given ``ivf`` and ``keep`` and when
    that is fewer pairs, from the kept centroids' IVF lists (same result). Pairs are folded
    into a running (n, Lq) max (IVF pairs: a scatter ``amax``; the docs' own tokens, which are contiguous:
    ``maximum.reduceat`` over each document's run), in steps of ``tile_elements`` floats, so memory stays
    bounded; there is no Python loop over documents. ``kernel``: ``numpy`` as above; ``fused``: one
    numba pass that reads each token's code (or each IVF pair) and its table row, no gathered tile
    (:mod:`cascade.kernels.interaction_fused`, identical maxima); ``auto``: fused when numba is installed.
    """
    if kernel not in APPROX_KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(APPROX_KERNELS)}, got {kernel!r}")
    doc_ids = np.asarray(doc_ids, np.int64)
    scores_t = torch.from_numpy(np.ascontiguousarray(scores.T, dtype=np.float32))  # (C, Lq)
    best = torch.full((len(doc_ids), scores_t.shape[1]), float("-inf"))
    budget = max(1, tile_elements // max(1, scores_t.shape[1]))

    def fold(owner: np.ndarray, pair_codes: np.ndarray) -> None:
        vals = scores_t[torch.from_numpy(pair_codes)]  # (m, Lq)
        best.scatter_reduce_(0, torch.from_numpy(owner)[:, None].expand_as(vals), vals, reduce="amax")

    offsets = np.asarray(offsets, np.int64)
    lengths = offsets[doc_ids + 1] - offsets[doc_ids]
    kept = np.flatnonzero(keep) if keep is not None and len(doc_ids) else np.zeros(0, np.int64)
    ivf_len = ivf[1][kept + 1] - ivf[1][kept] if ivf is not None else np.zeros(0, np.int64)
    if ivf is not None and len(kept) and ivf_len.sum() < lengths.sum():
        ivf_docs, ivf_offsets = ivf
        slot = np.full(len(offsets) - 1, -1, np.int32)  # document -> its position in doc_ids, or -1
        slot[doc_ids] = np.arange(len(doc_ids), dtype=np.int32)
        if kernel == "fused" or (kernel == "auto" and interaction_fused.available()):
            maxima = interaction_fused.ivf_maxima(scores_t.numpy(), kept, ivf_docs, ivf_offsets, slot, len(doc_ids))
            return torch.from_numpy(maxima).sum(dim=1).numpy()  # summed as the numpy path sums
        for c0, c1 in _chunks(ivf_len, budget):
            starts = ivf_offsets[kept[c0:c1]]
            pair_docs = np.concatenate([ivf_docs[a:a + n] for a, n in zip(starts.tolist(), ivf_len[c0:c1].tolist())])
            loc = slot[pair_docs]  # a gather, not a search
            hit = np.flatnonzero(loc >= 0)  # most pairs are not candidates: find each hit's centroid alone
            owner_c = np.searchsorted(np.cumsum(ivf_len[c0:c1]), hit, side="right")
            fold(loc[hit].astype(np.int64), kept[c0:c1][owner_c])
    else:
        # a document's tokens are contiguous: gather their rows and fold each document's run with one
        # ``maximum.reduceat`` (no scatter); pruned centroids read -inf, so they never win
        table = scores_t if keep is None else scores_t.masked_fill(torch.from_numpy(~np.asarray(keep, bool))[:, None],
                                                                    float("-inf"))
        if kernel == "fused" or (kernel == "auto" and interaction_fused.available()):
            best = torch.from_numpy(interaction_fused.doc_maxima(table.numpy(), codes, offsets[doc_ids], lengths))
            return best.sum(dim=1).numpy()
        best_np = best.numpy()
        for d0, d1 in _chunks(lengths, budget):
            run = lengths[d0:d1]
            live = np.flatnonzero(run > 0)  # an empty document keeps -inf (reduceat would copy a neighbour)
            if not len(live):
                continue
            pair_codes = np.asarray(codes[_ranges(offsets[doc_ids[d0:d1]], run)], np.int64)
            vals = table[torch.from_numpy(pair_codes)].numpy()  # (m, Lq)
            starts = np.concatenate([[0], np.cumsum(run)[:-1]])[live]
            best_np[d0 + live] = np.maximum.reduceat(vals, starts, axis=0)
    return best.sum(dim=1).numpy()


def _top(doc_ids: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` best of ``doc_ids`` (ascending) by score descending, ties by doc ascending."""
    if len(doc_ids) > count:
        # partition first; the stable sort of the survivors keeps ties by doc ascending
        thresh = np.partition(-scores, count - 1)[count - 1]
        sel = np.flatnonzero(-scores <= thresh)
        doc_ids, scores = doc_ids[sel], scores[sel]
    order = np.argsort(-scores, kind="stable")[:count]
    return doc_ids[order]


def _top_cells(scores: np.ndarray, ncells: int) -> np.ndarray:
    """Sorted unique centroids among each query token's ``ncells`` best (ties by centroid id)."""
    top = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), ncells + 1, dim=1)
    values, indices = top.values.numpy(), top.indices.numpy()
    if not (values[:, ncells - 1] == values[:, ncells]).any():  # no tie at the cutoff: topk decides
        return np.unique(indices[:, :ncells])
    cut = values[:, ncells - 1:ncells]
    equal = scores == cut
    room = ncells - (scores > cut).sum(axis=1, keepdims=True)  # tied slots left, given to the lowest ids
    chosen = (scores > cut) | (equal & (np.cumsum(equal, axis=1) <= room))
    return np.unique(np.nonzero(chosen)[1])


def plaid_candidates(query: np.ndarray, centroids: np.ndarray, codes: np.ndarray, offsets: np.ndarray,
                     ivf_docs: np.ndarray, ivf_offsets: np.ndarray, ncells: int,
                     centroid_score_threshold: float, ndocs: int, rerank_docs: int,
                     allowed: np.ndarray | None = None, min_docs: int = 0,
                     with_scores: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Stages 1-4 for one query (Lq, dim) of valid tokens: the ``rerank_docs`` docs to score exactly.
    ``centroids``: an array or a torch tensor, as :func:`centroid_scores` takes. ``allowed`` (bool per
    document): candidates are only those; when the probed cells hold fewer than ``min_docs`` of them,
    every allowed document is a candidate (a filter still yields its k documents). ``with_scores``:
    (docs in stage-4 order, their unpruned centroid-interaction scores)."""
    if len(query) == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.float32)) if with_scores else np.zeros(0, np.int64)
    scores = centroid_scores(query, centroids)
    num_c = scores.shape[1]
    by_centroid = torch.from_numpy(scores.T)  # (C, Lq) C-contiguous: torch reduces it ~2x faster than numpy
    if ncells >= num_c:
        cells = np.arange(num_c)
    elif ncells == 1:
        cells = np.unique(by_centroid.argmax(dim=0).numpy())  # first maximum on ties, as np.argmax
    else:
        cells = _top_cells(scores, ncells)
    docs = np.unique(ivf_docs[_ranges(ivf_offsets[cells], ivf_offsets[cells + 1] - ivf_offsets[cells])])
    docs = docs.astype(np.int64)
    if allowed is not None:
        docs = docs[allowed[docs]]
        if len(docs) < min_docs:
            docs = np.flatnonzero(allowed)
    keep = by_centroid.amax(dim=1).numpy() >= centroid_score_threshold
    stage2 = approx_scores(scores, codes, offsets, docs, keep=keep, ivf=(ivf_docs, ivf_offsets))
    docs = np.sort(_top(docs, stage2, ndocs))
    stage3 = approx_scores(scores, codes, offsets, docs)
    log.debug("plaid: %d cells, %d kept centroids, %d candidates -> %d", len(cells), keep.sum(),
              len(stage2), min(len(docs), rerank_docs))
    top = _top(docs, stage3, rerank_docs)
    return (top, stage3[np.searchsorted(docs, top)]) if with_scores else top


def _pad(rows: list[np.ndarray], width: int | None = None) -> np.ndarray:
    """Ragged int rows -> (len(rows), width) int64 padded with -1."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = np.full((len(rows), width), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out


def _sort_results(doc_idx: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: score descending, ties by doc ascending, padding (-1) last; first ``k`` columns."""
    scores = np.where(doc_idx >= 0, scores, -np.inf).astype(np.float32)
    big = np.iinfo(np.int64).max
    order = np.lexsort((np.where(doc_idx >= 0, doc_idx, big), -scores.astype(np.float64), doc_idx < 0), axis=1)
    doc_idx, scores = np.take_along_axis(doc_idx, order, 1)[:, :k], np.take_along_axis(scores, order, 1)[:, :k]
    pad = k - doc_idx.shape[1]
    if pad > 0:
        doc_idx = np.pad(doc_idx, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return doc_idx, scores


def plaid_search(queries: np.ndarray, query_mask: np.ndarray, centroids: np.ndarray, codes: np.ndarray,
                 offsets: np.ndarray, ivf_docs: np.ndarray, ivf_offsets: np.ndarray, k: int, ncells: int,
                 centroid_score_threshold: float, ndocs: int, exact_fn: ExactFn,
                 rerank_docs: int | None = None, query_block: int = 16, allowed: np.ndarray | None = None,
                 fill: bool = False, approx_tail: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` documents per query: (doc_idx (Q, k) int64 -1 padded, scores (Q, k) float32 -inf padded).

    ``rerank_docs`` (default ``max(k, ndocs // 4)``, colbert-ai's stage 3) documents per
    query reach ``exact_fn``, called once per block of ``query_block`` queries; pass
    ``rerank_docs=ndocs`` to skip stage 3 (stages 2 and 3 merged). ``allowed`` (bool per document)
    restricts the candidates; with ``fill`` a query whose cells hold fewer than ``k`` allowed documents
    takes every allowed one (see :func:`plaid_candidates`). With ``approx_tail`` and ``rerank_docs < k``,
    ranks ``rerank_docs + 1 .. k`` are the next documents of stage 3's order, with their approximate
    scores (lowered where needed to rank below the exact ones; :func:`~cascade.kernels.plaid_plan.append_tail`).
    """
    rerank = max(k, ndocs // 4) if rerank_docs is None else rerank_docs
    tail = approx_tail and rerank < k
    mask = np.asarray(query_mask, bool)
    out_idx, out_sc = [], []
    for b0 in range(0, len(queries), query_block):
        found = [plaid_candidates(np.asarray(queries[q], np.float32)[mask[q]], centroids, codes, offsets,
                                  ivf_docs, ivf_offsets, ncells, centroid_score_threshold, ndocs,
                                  k if tail else rerank, allowed, k if fill else 0, with_scores=True)
                 for q in range(b0, min(b0 + query_block, len(queries)))]
        rows = [r for r in found if isinstance(r, tuple)]  # with_scores: (docs, scores), every one
        cand = _pad([docs[:rerank] for docs, _ in rows])
        exact = exact_fn(queries[b0:b0 + len(rows)], mask[b0:b0 + len(rows)], cand) if cand.size else cand
        idx, sc = _sort_results(cand, np.asarray(exact, np.float32).reshape(cand.shape), k)
        if tail:
            idx, sc = _sort_results(*append_tail(idx, sc, [(d[rerank:], s[rerank:]) for d, s in rows]), k)
        out_idx.append(idx)
        out_sc.append(sc)
    if not out_idx:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate(out_idx), np.concatenate(out_sc)


def prune_candidates(queries: np.ndarray, query_mask: np.ndarray, centroids: np.ndarray, codes: np.ndarray,
                     offsets: np.ndarray, doc_idx: np.ndarray, keep: int,
                     centroid_score_threshold: float = -np.inf) -> np.ndarray:
    """Rerank given candidates (Q, K) (-1 padded) by centroid interaction; the best ``keep`` (Q, keep).

    Duplicates and padding are dropped; rows with fewer candidates are padded with -1.
    With a finite threshold, pruned codes are skipped as in stage 2 of :func:`plaid_search`.
    """
    mask = np.asarray(query_mask, bool)
    rows = []
    for q in range(len(doc_idx)):
        docs = np.unique(np.asarray(doc_idx[q], np.int64))
        docs = docs[docs >= 0]
        scores = centroid_scores(np.asarray(queries[q], np.float32)[mask[q]], centroids)
        prune = np.isfinite(centroid_score_threshold) and len(scores) > 0
        kept = scores.max(axis=0) >= centroid_score_threshold if prune else None
        rows.append(_top(docs, approx_scores(scores, codes, offsets, docs, keep=kept), keep))
    return _pad(rows, keep)


def exhaustive_search(queries: np.ndarray, query_mask: np.ndarray, tokens: np.ndarray, offsets: np.ndarray,
                      k: int, tile_tokens: int = 1 << 14, allowed: np.ndarray | None = None,
                      tile_elements: int = EXHAUSTIVE_TILE_ELEMENTS,
                      compute_dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim top ``k`` over every document, scanning ``tokens`` in doc-aligned tiles.

    ``tokens``: the (T, dim) token matrix, or a callable ``(start, stop) -> (stop - start, dim)``
    array that decodes those rows (a compressed index, decoded tile by tile). ``allowed`` (bool per
    document): only those are ranked (tiles without one are skipped).

    Each tile (t, dim) is multiplied with all queries' unmasked tokens at once (t, V) and
    folded per document with ``np.maximum.reduceat``, then per query over its tokens;
    empty documents are never returned. A tile holds at most ``tile_tokens`` tokens and at most
    ``tile_elements // V`` (V = unmasked query tokens in all), so its (t, V) similarities stay
    cache-sized as the batch grows (a tile never splits a document, so a long one may exceed it).
    ``compute_dtype="bfloat16"``: tiles and queries are multiplied in bf16, each similarity rounded
    to bf16 and the maxima summed in float32, as :func:`cascade.kernels.maxsim.maxsim` computes them.
    """
    if compute_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
    cdt = torch.bfloat16 if compute_dtype == "bfloat16" else torch.float32
    if cdt == torch.bfloat16 and not bf16_pays(torch.device("cpu")):
        log.warning("no native bf16 on this CPU: searching in float32")
        cdt = torch.float32
    offsets = np.asarray(offsets, np.int64)
    num_q, lq, dim = queries.shape
    mask = np.asarray(query_mask, bool)
    valid = np.ascontiguousarray(np.asarray(queries, np.float32)[mask])  # (V, dim), query by query
    qt = torch.from_numpy(valid).T.to(cdt)
    per_query = mask.sum(axis=1)
    col_starts = np.concatenate([[0], np.cumsum(per_query)[:-1]])
    live = np.flatnonzero(per_query > 0)  # a query without tokens scores 0 everywhere
    parts_idx: list[np.ndarray] = [np.zeros((num_q, 0), np.int64)]
    parts_sc: list[np.ndarray] = [np.zeros((num_q, 0), np.float32)]
    held = 0  # columns in the parts
    tile_tokens = max(1, min(tile_tokens, tile_elements // max(len(valid), 1)))
    for d0, d1 in _chunks(np.diff(offsets), tile_tokens):
        if allowed is not None and not allowed[d0:d1].any():
            continue
        docs = np.arange(d0, d1)[np.diff(offsets[d0:d1 + 1]) > 0]
        if len(docs):
            rows = tokens(offsets[d0], offsets[d1]) if callable(tokens) else tokens[offsets[d0]:offsets[d1]]
            tile = torch.from_numpy(np.array(rows, dtype=np.float32)).to(cdt)
            sim = (tile @ qt).float().numpy()  # (t, V)
            per_doc = np.maximum.reduceat(sim, offsets[docs] - offsets[d0], axis=0)  # (n, V)
            sc = np.zeros((num_q, len(docs)), np.float32)
            if len(live):
                sc[live] = np.add.reduceat(per_doc, col_starts[live], axis=1).T
            if allowed is not None:  # every document was scored (each owns a span of the tile); keep the allowed
                docs, sc = docs[allowed[docs]], sc[:, allowed[docs]]
            parts_idx.append(np.broadcast_to(docs, sc.shape))
            parts_sc.append(sc)
            held += len(docs)
            if held > 4 * k:  # merge the pending tiles into the running top k
                merged = _sort_results(np.concatenate(parts_idx, axis=1), np.concatenate(parts_sc, axis=1), k)
                parts_idx, parts_sc, held = [merged[0]], [merged[1]], merged[0].shape[1]
    return _sort_results(np.concatenate(parts_idx, axis=1), np.concatenate(parts_sc, axis=1), k)


def residual_exact_fn(decompress: Callable[[np.ndarray, np.ndarray], np.ndarray], codes: np.ndarray,
                      residuals: np.ndarray, offsets: np.ndarray, maxsim_fn: Callable[..., np.ndarray]) -> ExactFn:
    """ExactFn decompressing only the candidates' tokens (``decompress(codes, residuals)``, e.g.
    ``codec.decompress``), then ``maxsim_fn(queries, mask, tokens, local_offsets, local_doc_idx)``."""
    offsets = np.asarray(offsets, np.int64)

    def exact(queries: np.ndarray, query_mask: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
        valid = doc_idx >= 0
        docs, inverse = np.unique(doc_idx[valid], return_inverse=True)
        lengths = offsets[docs + 1] - offsets[docs]
        rows = _ranges(offsets[docs], lengths)
        tokens = decompress(codes[rows], residuals[rows])
        local = np.full(doc_idx.shape, -1, np.int64)
        local[valid] = inverse.ravel()
        return maxsim_fn(queries, query_mask, tokens, np.concatenate([[0], np.cumsum(lengths)]), local)
    return exact
