"""ColBERTv2-style residual compression of token vectors (numpy + faiss, CPU).

A token vector ``x`` is stored as the id of its nearest centroid (by inner product,
``int32``; exact or coarse-to-fine, :mod:`cascade.kernels.assign`) plus its residual
``x - centroid`` quantized per dimension to ``nbits`` bits against ``2**nbits`` buckets,
bit-packed into ``dim * nbits / 8`` bytes. Decompression adds the bucket weights to the
centroid and renormalizes to unit length.

Trained codecs keep their centroids in float16, the dtype they are stored in: assignment,
residuals, buckets and norm deltas are all computed against the same rounded centroids that
decoding and scoring use (in float32 or bfloat16).

The bit layout is colbert-ai's (see :mod:`cascade.kernels.bitpack`).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable

import numpy as np
import torch

from cascade.kernels import residual_fused
from cascade.kernels.assign import CoarseAssigner, assign_exact, resolve_assignment
from cascade.kernels.bitpack import bucket_bytes, byte_table, check_nbits
from cascade.kernels.kmeans import train_centroids

__all__ = ["ResidualCodec", "fit_buckets", "num_centroids_for", "train_centroids", "train_codec"]

log = logging.getLogger(__name__)

# Rows converted to float32 and assigned per step: bounds memory to chunk x dim floats.
ASSIGN_CHUNK = 1 << 16
# The scorer computes a query's centroid scores only for the centroids its rows use when they are
# fewer than this fraction of all centroids (else all of them, in one matmul).
CENTROID_SUBSET_FRACTION = 0.5
# Tile scorers of ResidualCodec.scorer: auto (fused when numba is installed), fused, torch.
SCORER_KERNELS = ("auto", "fused", "torch")
# Heldout split for the bucket statistics, as colbert-ai: 5% of the sample, at most 50k.
HELDOUT_FRACTION, HELDOUT_MAX = 0.05, 50_000


def num_centroids_for(num_tokens: int) -> int:
    """colbert-ai's partition count ``2**floor(log2(16 * sqrt(T)))``, clipped to ``[1, T]``.

    E.g. 4M tokens -> 16384 centroids, 10M -> 32768; tiny corpora get at most one
    centroid per token.
    """
    if num_tokens <= 0:
        return 1
    count = 2 ** int(math.floor(math.log2(16 * math.sqrt(num_tokens))))
    return int(max(1, min(count, num_tokens)))


@dataclasses.dataclass(frozen=True, eq=False)
class ResidualCodec:
    """Centroids plus residual buckets; ``compress`` / ``decompress`` token vectors.

    centroids: (C, dim) unit rows (float32 or float16). bucket_cutoffs: (2**nbits - 1,)
    increasing thresholds. bucket_weights: (2**nbits,) value decoded for each bucket.
    assigner: coarse-to-fine assignment over these centroids; None assigns exactly.
    """
    centroids: np.ndarray
    bucket_cutoffs: np.ndarray
    bucket_weights: np.ndarray
    nbits: int
    dim: int
    assigner: CoarseAssigner | None = None

    def __post_init__(self) -> None:
        check_nbits(self.nbits, self.dim)
        if self.centroids.ndim != 2 or self.centroids.shape[1] != self.dim:
            raise ValueError(f"centroids must be (C, {self.dim}), got {self.centroids.shape}")
        if self.bucket_cutoffs.shape != (2 ** self.nbits - 1,) or self.bucket_weights.shape != (2 ** self.nbits,):
            raise ValueError(f"need {2 ** self.nbits - 1} cutoffs and {2 ** self.nbits} weights for nbits={self.nbits}")

    @property
    def num_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def bytes_per_token(self) -> int:
        """Stored bytes per token: 4 for the int32 code plus the packed residual."""
        return 4 + self.dim * self.nbits // 8

    def with_assignment(self, mode: str, seed: int = 0) -> ResidualCodec:
        """This codec assigning by ``mode`` (``auto``, ``exact``, ``coarse``; see :mod:`cascade.kernels.assign`)."""
        if resolve_assignment(mode, self.num_centroids) == "exact":
            return dataclasses.replace(self, assigner=None)
        if self.assigner is not None:
            return self
        return dataclasses.replace(self, assigner=CoarseAssigner.build(self._centroids32, seed=seed))

    def assign(self, vectors: np.ndarray, chunk: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(n,) int32 id of each row's nearest centroid by inner product: exact (float32 over all
        centroids) or, with an ``assigner``, coarse-to-fine. ``progress(rows)`` is called per chunk."""
        if self.assigner is not None:
            return self.assigner.assign(vectors, **({"chunk": chunk} if chunk else {}), progress=progress)
        return assign_exact(vectors, self._centroids32, **({"chunk": chunk} if chunk else {}), progress=progress)

    @functools.cached_property
    def _centroids32(self) -> np.ndarray:
        """The centroids as float32 (exactly the stored values, converted once)."""
        return np.ascontiguousarray(self.centroids, dtype=np.float32)

    def compress(self, vectors: np.ndarray, codes: np.ndarray | None = None,
                 chunk: int = ASSIGN_CHUNK) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) -> (codes int32 (n,), residuals uint8 (n, dim * nbits / 8)).

        ``codes`` may be passed when already known (e.g. from a codec with the same
        centroids and another ``nbits``) to skip the assignment.
        """
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}), got {vectors.shape}")
        codes = self.assign(vectors) if codes is None else np.asarray(codes, np.int32)
        residuals = np.empty((len(vectors), self.dim * self.nbits // 8), np.uint8)
        cutoffs = torch.from_numpy(np.asarray(self.bucket_cutoffs, np.float32))
        for s in range(0, len(vectors), chunk):
            block = torch.from_numpy(np.ascontiguousarray(vectors[s:s + chunk], np.float32))
            idx = torch.from_numpy(np.asarray(codes[s:s + chunk], np.int64))
            block = block - self._centroids_t.index_select(0, idx).float()
            residuals[s:s + len(block)] = bucket_bytes(block, cutoffs, self.nbits)
        return codes, residuals

    @functools.cached_property
    def _centroids_t(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self.centroids))  # a writable copy (torch refuses read-only memory)

    def centroids_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The centroids as a CPU torch tensor of ``dtype``, converted once and cached (e.g. bfloat16
        for :func:`cascade.kernels.plaid.centroid_scores`)."""
        cache = self.__dict__.setdefault("_centroid_tensors", {})
        if dtype not in cache:
            cache[dtype] = self._centroids_t.to(dtype)
        return cache[dtype]

    @functools.cached_property
    def _byte_values(self) -> np.ndarray:
        """(256,) opaque items: the 8 // nbits float32 residual values one packed byte decodes to."""
        table = np.ascontiguousarray(np.asarray(self.bucket_weights, np.float32)[byte_table(self.nbits)])
        return table.view(np.dtype((np.void, table.shape[1] * 4))).ravel()

    def decompress(self, codes: np.ndarray, residuals: np.ndarray, dtype: type = np.float32,
                   chunk: int = ASSIGN_CHUNK, deltas: np.ndarray | None = None) -> np.ndarray:
        """(codes (n,), residuals (n, bytes)) -> (n, dim) unit vectors of ``dtype``.

        With the stored ``deltas`` (:meth:`norm_deltas`) each vector is scaled by ``1 + delta``
        instead of being normalized: the vectors :meth:`scorer` scores, to float rounding.

        Per chunk: one ``np.take`` decodes each packed byte into its residual values (the
        table's rows are opaque items, copied in one go), then torch adds the centroids
        (converted from their stored dtype on the fly) and normalizes in place.
        """
        codes = np.asarray(codes)
        if residuals.shape != (len(codes), self.dim * self.nbits // 8):
            raise ValueError(f"residuals must be ({len(codes)}, {self.dim * self.nbits // 8}), got {residuals.shape}")
        out = np.empty((len(codes), self.dim), np.float32)
        for s in range(0, len(codes), chunk):
            x = torch.from_numpy(self._decode(codes[s:s + chunk], residuals[s:s + chunk], out[s:s + chunk]))
            if deltas is not None:
                x.mul_(torch.from_numpy(np.asarray(deltas[s:s + chunk], np.float32)).add_(1.0)[:, None])
            else:
                x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-30))  # zero rows stay zero
        return out if dtype == np.float32 else out.astype(dtype)


    def norm_deltas(self, codes: np.ndarray, residuals: np.ndarray, chunk: int = ASSIGN_CHUNK) -> np.ndarray:
        """(n,) float16 ``1 / ||centroid + residual|| - 1`` of each stored token (0 for a zero vector).

        Stored beside the codes, it lets :meth:`scorer` score tokens without rebuilding and
        normalizing them; being a small deviation from 1, fp16 keeps it to ~1e-5 absolute.
        """
        codes = np.asarray(codes)
        out = np.empty(len(codes), np.float16)
        for s in range(0, len(codes), chunk):
            x = self._decode(codes[s:s + chunk], residuals[s:s + chunk])
            norms = torch.linalg.vector_norm(torch.from_numpy(x), dim=1).numpy()
            out[s:s + len(x)] = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0) - 1.0, 0.0)
        return out

    def scorer(self, codes: np.ndarray, residuals: np.ndarray, deltas: np.ndarray,
               compute_dtype: torch.dtype = torch.float32, device: torch.device | None = None,
               subset_fraction: float = CENTROID_SUBSET_FRACTION, kernel: str = "auto"):
        """A MaxSim tile scorer (see :func:`cascade.kernels.maxsim.maxsim`) for a stored index.

        For a query's unmasked tokens ``q_t`` (dim, Lv) and the token rows it will score, it returns
        ``tile(rows) -> (len(rows), Lv)`` with ``q . normalize(c + r) = (q . c + q . r) * (1 + delta)``:
        ``q . c`` is looked up in the query's centroid scores, ``r`` is decoded (one table lookup per
        packed byte) and multiplied in ``compute_dtype``; the centroids are never gathered per token
        and nothing is normalized. The centroid scores cover all C centroids, or only those the
        query's rows use when those are fewer than ``subset_fraction * C`` (few candidates against a
        large codebook: 64 documents use ~10k of 131k centroids). ``codes``/``residuals``/``deltas``
        are indexed by global token row (may be memory-mapped). ``kernel``: ``torch`` decodes as above;
        ``fused`` never decodes (:mod:`cascade.kernels.residual_fused`: per-byte lookup tables of ``q . r``,
        float32 whatever ``compute_dtype``; CPU, needs numba); ``auto``: fused when it can run.
        """
        device = device or torch.device("cpu")
        if kernel not in SCORER_KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(SCORER_KERNELS)}, got {kernel!r}")
        fused = kernel != "torch" and residual_fused.fusable(residuals, device)
        if kernel == "fused" and not fused:
            raise ValueError("the fused kernel needs numba, the CPU and C-contiguous uint8 residuals "
                             f"({residual_fused.INSTALL_HINT}); or use kernel='torch'")
        values = self._byte_values
        centroids = self._centroids_t.to(device=device, dtype=torch.float32)
        num_c = len(centroids)

        def for_query(q_t: torch.Tensor, query_rows: np.ndarray | None = None):
            q32 = q_t.to(torch.float32)
            used = None
            if query_rows is not None:  # the distinct codes, by marking them: O(rows + C)
                seen = np.zeros(num_c, bool)
                seen[np.asarray(codes[query_rows])] = True
                used = np.flatnonzero(seen)
            if used is not None and len(used) < subset_fraction * num_c:
                cscores = centroids.index_select(0, torch.from_numpy(used.astype(np.int64)).to(device)) @ q32
            else:
                used, cscores = None, centroids @ q32  # (C, Lv)
            if fused:
                return residual_fused.fused_tile(q32, cscores, used, codes, residuals, deltas,
                                                 self.bucket_weights, self.nbits)
            qc = q_t.to(compute_dtype)
            buf = np.empty((0, self.dim), np.float32)

            def tile(rows: np.ndarray) -> torch.Tensor:
                nonlocal buf
                if len(buf) < len(rows):
                    buf = np.empty((len(rows), self.dim), np.float32)
                r = buf[:len(rows)]
                np.take(values, np.asarray(residuals[rows]), out=r.view(values.dtype), mode="clip")
                sim = torch.from_numpy(r).to(device=device, dtype=compute_dtype) @ qc
                cells = np.asarray(codes[rows], np.int64)
                idx = torch.from_numpy(cells if used is None else np.searchsorted(used, cells)).to(device)
                scale = torch.from_numpy(np.asarray(deltas[rows], np.float32)).to(device).add_(1.0)
                return sim.to(torch.float32).add_(cscores.index_select(0, idx)).mul_(scale[:, None])
            return tile
        return for_query

    def _decode(self, codes: np.ndarray, residuals: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n, dim) float32 ``centroid + residual``, not normalized (into ``out`` when given)."""
        out = np.empty((len(codes), self.dim), np.float32) if out is None else out
        # mode="clip" (a no-op for bytes): with the default "raise", np.take buffers ``out`` (30x slower)
        np.take(self._byte_values, residuals, out=out.view(self._byte_values.dtype), mode="clip")
        idx = torch.from_numpy(np.asarray(codes).astype(np.int64))
        torch.from_numpy(out).add_(self._centroids_t.index_select(0, idx).float())  # a mixed-dtype add_ is 10x slower
        return out


def fit_buckets(residuals: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """colbert-ai's buckets from residual values (all dimensions pooled).

    cutoffs: quantiles ``i / 2**nbits`` for ``i = 1 .. 2**nbits - 1``; weights: quantiles
    ``(i + 0.5) / 2**nbits`` for ``i = 0 .. 2**nbits - 1`` (the median of each bucket).
    """
    n = 2 ** nbits
    values = np.asarray(residuals, np.float32).ravel()
    cutoffs = np.quantile(values, np.arange(1, n) / n).astype(np.float32)
    weights = np.quantile(values, (np.arange(n) + 0.5) / n).astype(np.float32)
    return cutoffs, weights


def train_codec(sample: np.ndarray, num_centroids: int, nbits: int, seed: int = 0, niter: int = 20,
                centroids: np.ndarray | None = None, assignment: str = "auto",
                progress: bool = False) -> ResidualCodec:
    """Train a codec as colbert-ai: k-means on 95% of ``sample``, buckets on the heldout 5%.

    sample: (n, dim) float token vectors. ``centroids``: reuse already trained (C, dim)
    centroids and only fit the buckets (e.g. one k-means for several ``nbits``). ``assignment``
    (``auto``, ``exact``, ``coarse``): coarse also trains the centroids by the two-level k-means.
    The centroids are rounded to float16 first (see the module docstring).
    Raises ValueError for nbits not in {1, 2, 4} or dim * nbits not divisible by 8.
    """
    sample = np.asarray(sample)
    check_nbits(nbits, sample.shape[1])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sample))
    heldout_size = min(int(HELDOUT_FRACTION * len(sample)), HELDOUT_MAX)
    train, heldout = order[:len(sample) - heldout_size], order[len(sample) - heldout_size:]
    if heldout_size == 0:  # tiny sample: fit the buckets on the training points themselves
        heldout = train
    if centroids is None:
        two_level = resolve_assignment(assignment, min(num_centroids, len(train))) == "coarse"
        centroids = train_centroids(sample, num_centroids, seed, niter, two_level=two_level, progress=progress,
                                    rows=np.sort(train))
    centroids = np.ascontiguousarray(centroids, np.float16)
    probe = ResidualCodec(centroids, np.zeros(2 ** nbits - 1, np.float32), np.zeros(2 ** nbits, np.float32),
                          nbits, sample.shape[1]).with_assignment(assignment, seed)
    held = np.asarray(sample[np.sort(heldout)], np.float32)
    cutoffs, weights = fit_buckets(held - centroids[probe.assign(held)].astype(np.float32), nbits)
    log.info("codec: %d centroids, nbits=%d, cutoffs=%s, weights=%s", len(centroids), nbits,
             np.round(cutoffs, 4).tolist(), np.round(weights, 4).tolist())
    return dataclasses.replace(probe, bucket_cutoffs=cutoffs, bucket_weights=weights)
