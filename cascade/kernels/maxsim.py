"""Late-interaction MaxSim over a packed token matrix (fp16 or decoded tile by tile), and its naive reference.

Token vectors of a corpus live in one contiguous ``(T, dim)`` array; document ``i``
owns rows ``offsets[i]:offsets[i + 1]``. Candidates come as ``(Q, K)`` corpus row
indices with ``-1`` padding. Every kernel here has a naive reference it is tested
against (``maxsim_naive``, plain numpy for the others).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Token rows planned per block of candidates: bounds the int64 plan arrays (2 x 8 MiB).
DEFAULT_BLOCK_ROWS = 1 << 20
# Float elements (rows x dim) gathered, converted and multiplied per tile: 2**20 elements
# (2730 rows at dim 384, 2 MiB fp16 + 4 MiB fp32) stay in cache; 2**19-2**22 measure alike.
DEFAULT_TILE_ELEMENTS = 1 << 20

Gather = Callable[[np.ndarray], torch.Tensor]
# scorer(q (dim, Lv) float32, all token rows the query will score) -> tile(rows) -> (len(rows), Lv)
# similarities of those token rows
Scorer = Callable[[torch.Tensor, np.ndarray], Callable[[np.ndarray], torch.Tensor]]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def candidate_lengths(offsets: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
    """Token count of every candidate (0 for padding), shape ``doc_idx.shape``."""
    lengths = np.r_[np.diff(np.asarray(offsets, dtype=np.int64)), 0]  # doc -1 -> the trailing 0
    return lengths[np.where(doc_idx >= 0, doc_idx, -1)]


def bf16_pays(device: torch.device) -> bool:
    """bf16 matmuls are only faster with native support (CUDA, or CPUs with AVX512-BF16/AMX)."""
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _direct_gather(tokens: np.ndarray, tile_rows: int, device: torch.device) -> Gather:
    """Default gather: ``index_select`` (multi-threaded) from ``tokens`` into a reused staging tile."""
    with warnings.catch_warnings():  # read-only memmaps: torch never writes through this view
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(tokens)
    stage = torch.empty((tile_rows, tokens.shape[1]), dtype=source.dtype,
                        pin_memory=device.type == "cuda")

    def gather(rows: np.ndarray) -> torch.Tensor:
        return torch.index_select(source, 0, torch.from_numpy(rows), out=stage[: len(rows)])

    return gather


def maxsim(queries: np.ndarray, query_mask: np.ndarray, tokens: np.ndarray | None, offsets: np.ndarray,
           doc_idx: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS,
           tile_elements: int = DEFAULT_TILE_ELEMENTS, *, gather: Gather | None = None,
           scorer: Scorer | None = None, compute_dtype: str = "float32", device: str | None = None) -> np.ndarray:
    """Late-interaction scores ``sum_i max_j <q_i, d_j>`` of each query against its candidates.

    Args:
        queries: (Q, Lq, dim) query token vectors; query_mask: (Q, Lq) bool, False at padding.
        tokens: (T, dim) every document's token vectors (any float dtype, may be memory-mapped);
            may be None when ``gather`` is given.
        offsets: (N + 1,) document ``i`` owns token rows ``offsets[i]:offsets[i + 1]``.
        doc_idx: (Q, K) candidate documents, ``-1`` for padding.
        block_rows: bound on token rows planned at once (memory of the int64 plan).
        tile_elements: bound on float elements (rows x dim) gathered and multiplied at once.
        gather: decoder of a tile, for compressed indexes. Called with a 1-D int64 numpy array
            of *global token row indices* (rows of ``tokens``, in the order they are wanted;
            consecutive runs are whole or partial documents, at most ``tile_elements // dim``
            rows, the array is only valid during the call) and must return a ``(len(rows), dim)``
            float tensor (any float dtype, any device; converted as needed; it may reuse
            one buffer between calls). None: rows are read from ``tokens``.
        scorer: instead of gathering vectors, score a tile directly: called once per query
            and block with its unmasked tokens ``(dim, Lv)`` float32 on ``device`` and all the
            token rows it will ask for in that block (in order), it returns a
            function of the same row arrays as ``gather`` giving ``(len(rows), Lv)``
            similarities (e.g. a compressed index scored without decompressing,
            :meth:`cascade.kernels.residual.ResidualCodec.scorer`).
        compute_dtype: "float32", or "bfloat16" to run the matmul in bf16 (falls back to
            float32, with a warning, on CPUs without native bf16). Maxima are exact in either
            dtype; the sum over query tokens and the output are float32.
        device: torch device for the conversion, matmul and maxima ("cuda", ...); None: CPU.

    Returns (Q, K) float32; ``-inf`` at padding and for documents without tokens; a query
    whose positions are all masked scores 0 against documents with tokens.

    Live candidates (not padding, at least one token) are flattened row-major and cut into
    blocks of whole candidates holding at most ``block_rows`` token rows (a longer candidate
    is a block of its own). Per block and query, the candidates' token rows form one packed
    stream (no padding rows, so nothing to mask) processed in tiles: gather -> convert ->
    ``(rows, dim) @ (dim, Lv)`` with only the query's Lv unmasked tokens -> ``scatter_reduce``
    ``amax`` of each row into its candidate's ``(n, Lv)`` running maximum, which also merges
    documents split across tiles. No 4-D tensor, no Python loop over documents.
    """
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    num_q, num_k = doc_idx.shape
    out = np.full((num_q, num_k), -np.inf, np.float32)
    if tokens is None and gather is None and scorer is None:
        raise ValueError("maxsim needs tokens, gather or scorer")
    if compute_dtype not in _DTYPES:
        raise ValueError(f"compute_dtype must be one of {sorted(_DTYPES)}, got {compute_dtype!r}")
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    cdt = _DTYPES[compute_dtype]
    if cdt == torch.bfloat16 and not bf16_pays(dev):
        logger.warning("no native bf16 on this CPU: computing MaxSim in float32")
        cdt = torch.float32
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = candidate_lengths(offsets, doc_idx)
    qi, ki = np.nonzero(lengths > 0)  # live candidates, row-major: each query's are contiguous
    if len(qi) == 0:
        return out
    dim = queries.shape[-1] if tokens is None else tokens.shape[1]
    tile_rows = max(1, tile_elements // dim)
    if gather is None and scorer is None:
        assert tokens is not None  # checked above: tokens, gather or scorer
        gather = _direct_gather(tokens, tile_rows, dev)
    lens, starts = lengths[qi, ki], offsets[doc_idx[qi, ki]]
    ends = np.cumsum(lens)
    a = 0
    while a < len(qi):  # blocks of whole candidates, at most block_rows rows (or one candidate)
        done = ends[a - 1] if a else 0
        b = max(a + 1, int(np.searchsorted(ends, done + block_rows, side="right")))
        _maxsim_block(queries, query_mask, gather, scorer, qi[a:b], ki[a:b], starts[a:b], lens[a:b],
                      tile_rows, dim, cdt, dev, out)
        a = b
    return out


def _maxsim_block(queries: np.ndarray, query_mask: np.ndarray, gather: Gather | None, scorer: Scorer | None,
                  qi: np.ndarray,
                  ki: np.ndarray, starts: np.ndarray, lens: np.ndarray, tile_rows: int, dim: int,
                  cdt: torch.dtype, dev: torch.device, out: np.ndarray) -> None:
    """Score a block of live candidates (several queries' runs) into ``out`` in place."""
    ends = np.cumsum(lens)
    first = ends - lens  # stream position of each candidate's first row
    rows = np.repeat(starts - first, lens) + np.arange(ends[-1], dtype=np.int64)  # global token rows
    seg = np.flatnonzero(np.r_[True, qi[1:] != qi[:-1], True])  # runs of one query's candidates
    slot = np.arange(len(qi)) - np.repeat(seg[:-1], np.diff(seg))  # candidate's index in its run
    owner = torch.from_numpy(np.repeat(slot, lens)).to(dev)
    buf32 = torch.empty((tile_rows if gather is not None else 0, dim), dtype=torch.float32, device=dev)
    bufc = buf32 if cdt == torch.float32 else torch.empty(buf32.shape, dtype=cdt, device=dev)
    logger.debug("maxsim block: %d candidates, %d queries, %d rows", len(qi), len(seg) - 1, len(rows))
    for c0, c1 in zip(seg[:-1], seg[1:]):
        q = int(qi[c0])
        qv = np.asarray(queries[q], np.float32)[np.asarray(query_mask[q], bool)]  # (Lv, dim)
        if len(qv) == 0:  # every position masked: nothing contributes
            out[q, ki[c0:c1]] = 0.0
            continue
        q32 = torch.from_numpy(qv).to(device=dev).T  # (dim, Lv)
        q_rows = rows[int(first[c0]):int(ends[c1 - 1])]
        q_t, tile = q32.to(cdt), scorer(q32, q_rows) if scorer is not None else None
        best = torch.full((c1 - c0, len(qv)), float("-inf"), dtype=cdt if tile is None else torch.float32, device=dev)
        for s in range(int(first[c0]), int(ends[c1 - 1]), tile_rows):
            e = min(s + tile_rows, int(ends[c1 - 1]))
            # a one-row tile is multiplied as two copies of the row: a 1-row matmul takes BLAS's
            # matrix-vector path, whose rounding differs, and equal documents must score equally
            if tile is not None:
                sim = tile(rows[s:e] if e - s > 1 else np.repeat(rows[s:e], 2))
            else:
                assert gather is not None  # no scorer: maxsim() made the gather
                x = torch.as_tensor(gather(rows[s:e]))
                if x.dtype != cdt or x.device != dev:
                    if x.dtype == torch.float16 and cdt == torch.bfloat16 and dev.type == "cpu":
                        x = buf32[: e - s].copy_(x)  # fp16->bf16 is 6x faster through fp32 on CPU
                    x = bufc[: e - s].copy_(x)
                sim = (x if e - s > 1 else x.repeat(2, 1)) @ q_t  # (rows, Lv)
            sim = sim[: e - s]
            best.scatter_reduce_(0, owner[s:e, None].expand_as(sim), sim, reduce="amax")
        out[q, ki[c0:c1]] = best.to(torch.float32).sum(dim=1).cpu().numpy()


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
