"""Fused decode-and-score of residual-compressed tokens: no decoded vector is ever formed.

A token stored as centroid ``c``, packed residual bytes and norm delta ``delta`` scores
``q . normalize(c + r) = (q . c + q . r) * (1 + delta)`` against a query token ``q``.
``q . c`` comes from the query's centroid scores. ``q . r`` is a sum over the residual's bytes:
byte ``j`` packs the buckets of dimensions ``j * p .. j * p + p - 1`` (``p = 8 / nbits``), so per
query a table ``lut[j, byte, t] = sum_k q_t[j * p + k] * weight[bucket_k(byte)]`` (``dim / p`` x 256
entries per query token, one small batched matmul) turns each token's score into one table row
added per byte: 96 vector additions per token at dim 384 and 2 bits, instead of decoding 384
values and 384 multiply-adds per query token (the implicit decompression of WARP and PLAID).

The kernel is numba (``pip install numba``, an optional dependency imported lazily); it works on
groups of 16 query tokens (one 16-float register of accumulators; more query tokens run the
kernel once per group). :func:`available` says whether it can run; ``ResidualCodec.scorer`` uses
it when it can and the torch decode-then-matmul tile otherwise. numba leaves LLVM's SLP
vectorizer off by default; the kernel is compiled with it on (and the loop vectorizer, which would
turn the byte loop into gathers, off), else it is 4x slower.
"""
from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from cascade.kernels.bitpack import byte_table

__all__ = ["available", "lookup_tables", "score_rows", "score_rows_naive"]

log = logging.getLogger(__name__)

GROUP = 16  # query tokens per kernel pass (the accumulators of one AVX-512 register)
INSTALL_HINT = "pip install numba (optional: the fused compressed-index kernel)"


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when numba imports (the fused kernel can run)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def match_torch_threads() -> None:
    """numba's parallel loops use as many threads as torch (``torch.set_num_threads``), within numba's pool."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _require() -> None:
    if not available():
        raise ImportError(f"the fused residual kernel needs numba: {INSTALL_HINT}")


def lookup_tables(q: torch.Tensor, bucket_weights: np.ndarray, nbits: int) -> np.ndarray:
    """(G, dim * nbits / 8, 256, 16) float32 ``q . r`` partial sums of every byte value.

    q: (dim, Lv) float32 query tokens, in G = ceil(Lv / 16) groups of 16 (zero-padded columns).
    A byte's high nibble holds the first half of its dimensions, the low nibble the rest: two
    16-entry tables per byte position, and the 256 entries are their pairwise sums (one add each).
    """
    dim, lv = q.shape
    per = 8 // nbits
    half, nb = per // 2, dim // per
    width = max(1, -(-lv // GROUP)) * GROUP
    padded = np.zeros((dim, width), np.float32)
    padded[:, :lv] = q.to(device="cpu", dtype=torch.float32).numpy()
    qg = padded.reshape(nb, per, width)
    values = np.asarray(bucket_weights, np.float32)[byte_table(nbits)]  # (256, per)
    nibble = np.arange(16)
    high, low = values[nibble << 4, :half], values[nibble, half:]  # (16, half) each
    hi = sum(high[None, :, k, None] * qg[:, None, k, :] for k in range(half))  # (nb, 16, W)
    lo = sum(low[None, :, k, None] * qg[:, None, half + k, :] for k in range(half))
    groups = width // GROUP  # laid out group-major: each kernel pass reads one contiguous table
    hi = hi.reshape(nb, 16, groups, GROUP).transpose(2, 0, 1, 3)
    lo = lo.reshape(nb, 16, groups, GROUP).transpose(2, 0, 1, 3)
    lut = np.empty((groups, nb, 16, 16, GROUP), np.float32)
    np.add(hi[:, :, :, None, :], lo[:, :, None, :, :], out=lut)
    return lut.reshape(groups, nb, 256, GROUP)


@functools.lru_cache(maxsize=1)
def _kernel():
    """The scoring kernel, compiled by numba on first use (and cached on disk by numba)."""
    import numba
    from numba import njit, prange

    saved = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = 1, 0
    try:
        t = numba.types
        sigs = [t.void(t.float32[:, :, ::1], t.float32[:, ::1], t.int64[::1], t.float32[::1],
                       t.Array(t.uint8, 2, "C", readonly=readonly), t.int64[::1], t.float32[:, ::1], t.int64)
                for readonly in (False, True)]  # residuals: writable, or a read-only memmap
        score = njit(sigs, parallel=True, fastmath=True, error_model="numpy", cache=True)(_group_kernel(prange))
    finally:
        numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = saved
    return score


def _group_kernel(prange):
    """One group of 16 query tokens: ``out[i, col:col + 16] = (cs[cidx[i], col:col + 16] + sum_j lut[j, res[rows[i], j],
    col:col + 16]) * scale[i]``.

    Written out per accumulator so that LLVM's SLP vectorizer packs them into one register; two
    chains (even and odd bytes) halve the dependency of the additions.
    """
    def kernel(lut, cs, cidx, scale, residuals, rows, out, col):  # pragma: no cover - compiled by numba
        nb = lut.shape[0]
        half = nb // 2
        for i in prange(rows.shape[0]):
            res = residuals[rows[i]]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0)
            a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = np.float32(0)
            b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = np.float32(0)
            b8 = b9 = b10 = b11 = b12 = b13 = b14 = b15 = np.float32(0)
            for h in range(half):
                e = lut[2 * h, res[2 * h]]
                a0 += e[0]; a1 += e[1]; a2 += e[2]; a3 += e[3]; a4 += e[4]; a5 += e[5]; a6 += e[6]; a7 += e[7]  # noqa: E702
                a8 += e[8]; a9 += e[9]; a10 += e[10]; a11 += e[11]; a12 += e[12]; a13 += e[13]; a14 += e[14]; a15 += e[15]  # noqa: E501,E702
                f = lut[2 * h + 1, res[2 * h + 1]]
                b0 += f[0]; b1 += f[1]; b2 += f[2]; b3 += f[3]; b4 += f[4]; b5 += f[5]; b6 += f[6]; b7 += f[7]  # noqa: E702
                b8 += f[8]; b9 += f[9]; b10 += f[10]; b11 += f[11]; b12 += f[12]; b13 += f[13]; b14 += f[14]; b15 += f[15]  # noqa: E501,E702
            if nb % 2:
                e = lut[nb - 1, res[nb - 1]]
                a0 += e[0]; a1 += e[1]; a2 += e[2]; a3 += e[3]; a4 += e[4]; a5 += e[5]; a6 += e[6]; a7 += e[7]  # noqa: E702
                a8 += e[8]; a9 += e[9]; a10 += e[10]; a11 += e[11]; a12 += e[12]; a13 += e[13]; a14 += e[14]; a15 += e[15]  # noqa: E501,E702
            c = cs[cidx[i], col:]
            s = scale[i]
            o = out[i]
            o[col + 0] = (c[0] + a0 + b0) * s; o[col + 1] = (c[1] + a1 + b1) * s  # noqa: E702
            o[col + 2] = (c[2] + a2 + b2) * s; o[col + 3] = (c[3] + a3 + b3) * s  # noqa: E702
            o[col + 4] = (c[4] + a4 + b4) * s; o[col + 5] = (c[5] + a5 + b5) * s  # noqa: E702
            o[col + 6] = (c[6] + a6 + b6) * s; o[col + 7] = (c[7] + a7 + b7) * s  # noqa: E702
            o[col + 8] = (c[8] + a8 + b8) * s; o[col + 9] = (c[9] + a9 + b9) * s  # noqa: E702
            o[col + 10] = (c[10] + a10 + b10) * s; o[col + 11] = (c[11] + a11 + b11) * s  # noqa: E702
            o[col + 12] = (c[12] + a12 + b12) * s; o[col + 13] = (c[13] + a13 + b13) * s  # noqa: E702
            o[col + 14] = (c[14] + a14 + b14) * s; o[col + 15] = (c[15] + a15 + b15) * s  # noqa: E702
    return kernel


def score_rows(lut: np.ndarray, cscores: np.ndarray, cidx: np.ndarray, scale: np.ndarray,
               residuals: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(n, W) float32 scores of token ``rows`` (the fused kernel; needs numba).

    lut: from :func:`lookup_tables`; cscores: (C', W) the query's centroid scores (zero-padded to
    W = 16 G columns); cidx: (n,) int64 row of each token's centroid in ``cscores``; scale: (n,)
    ``1 + delta``; residuals: (T, bytes) uint8, C-contiguous (may be memory-mapped); rows: (n,)
    int64 global token rows. Columns past the query's tokens score 0 (``q`` padded with zeros).
    """
    _require()
    kernel = _kernel()
    match_torch_threads()
    width = lut.shape[0] * GROUP
    if out is None:
        out = np.empty((len(rows), width), np.float32)
    res = np.asarray(residuals)  # a memmap as a plain ndarray view
    for g in range(lut.shape[0]):  # one pass per group of 16 query tokens
        kernel(lut[g], cscores, cidx, scale, res, rows, out, g * GROUP)
    return out


def score_rows_naive(q: np.ndarray, centroids: np.ndarray, codes: np.ndarray, residuals: np.ndarray,
                     deltas: np.ndarray, bucket_weights: np.ndarray, nbits: int, rows: np.ndarray) -> np.ndarray:
    """Reference for :func:`score_rows`: each token decoded in a Python loop, then ``q . (c + r) * (1 + delta)``.

    q: (dim, Lv) float32. Returns (len(rows), Lv) float32.
    """
    table = byte_table(nbits)
    weights = np.asarray(bucket_weights, np.float64)
    out = np.empty((len(rows), q.shape[1]), np.float32)
    for n, row in enumerate(rows):
        r = np.concatenate([weights[table[b]] for b in np.asarray(residuals[row])])
        x = np.asarray(centroids[codes[row]], np.float64) + r
        out[n] = (x @ np.asarray(q, np.float64)) * (1.0 + float(deltas[row]))
    return out


def fused_tile(q32: torch.Tensor, cscores: torch.Tensor, used: np.ndarray | None, codes: np.ndarray,
               residuals: np.ndarray, deltas: np.ndarray, bucket_weights: np.ndarray, nbits: int):
    """A query's ``tile(rows) -> (len(rows), Lv)`` scorer for ``ResidualCodec.scorer`` (CPU, needs numba).

    q32: (dim, Lv) float32; cscores: (C', Lv) its centroid scores, of all centroids (``used`` None)
    or of the sorted centroid ids ``used``. The returned tensor is a view of a buffer reused by
    the next call (``maxsim`` consumes each tile before asking for the next).
    """
    lv = q32.shape[1]
    lut = lookup_tables(q32, bucket_weights, nbits)
    width = lut.shape[0] * GROUP
    cs = np.zeros((len(cscores), width), np.float32)
    cs[:, :lv] = cscores.to(device="cpu", dtype=torch.float32).numpy()
    res = np.asarray(residuals)
    buf = np.empty((0, width), np.float32)
    position = None
    if used is not None:  # centroid id -> its row in cscores
        position = np.zeros(int(used[-1]) + 1 if len(used) else 1, np.int64)
        position[used] = np.arange(len(used))

    def tile(rows: np.ndarray) -> torch.Tensor:
        nonlocal buf
        rows = np.ascontiguousarray(rows, np.int64)
        if len(buf) < len(rows):
            buf = np.empty((len(rows), width), np.float32)
        idx = np.asarray(codes[rows], np.int64) if position is None else position[np.asarray(codes[rows])]
        scale = np.asarray(deltas[rows], np.float32) + np.float32(1)
        out = score_rows(lut, cs, idx, scale, res, rows, buf[:len(rows)])
        return torch.from_numpy(out[:, :lv])
    return tile


def fusable(residuals: np.ndarray, device: torch.device) -> bool:
    """Whether the fused kernel can score this index here: numba present, CPU, C-contiguous uint8 residuals."""
    res = np.asarray(residuals)
    return (device.type == "cpu" and res.dtype == np.uint8 and res.ndim == 2 and res.flags.c_contiguous
            and available())
