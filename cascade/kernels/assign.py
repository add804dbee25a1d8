"""Nearest-centroid assignment by inner product: exact over all centroids, or coarse-to-fine.

*Exact* scores every row against all C centroids in float32 (faiss flat search, chunked): T x C x dim
multiply-adds, e.g. 2.4e16 flops for 238M tokens against 131,072 centroids: days on 2 cores.

*Coarse-to-fine* (:class:`CoarseAssigner`) groups the centroids into C0 cells by a spherical k-means
over the centroids themselves (each centroid belongs to its nearest cell centre). A row then scores

1. the C0 cell centres (one bfloat16 matmul) and keeps its ``nprobe`` best cells;
2. the centroids of those cells (cell by cell, all rows probing a cell in one bfloat16 matmul),
   keeping its ``rescore`` best candidates over all probed cells;
3. those candidates again in float32, from the float32 centroids: the best wins.

That is about C0 + nprobe * C / C0 bfloat16 inner products per row (~1,200 at C = 131,072, C0 = 512,
nprobe = 2) instead of C. bfloat16 (AMX / AVX-512 BF16 on recent CPUs) is 3-4x faster than float32
there, but rounds scores to ~0.004, hence the float32 rescoring of a few candidates. Probing every
cell with enough candidates gives the exact result. Both modes break ties by the lowest centroid id.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import warnings
from collections.abc import Callable

import faiss
import numpy as np
import torch

ASSIGNMENTS = ("auto", "exact", "coarse")
# auto: exact assignment up to this many centroids (SciFact's 16,384: ~1 min), coarse-to-fine above.
EXACT_MAX_CENTROIDS = 1 << 14
# Rows per step: exact (bounds the (rows, C) score block faiss makes) and coarse (amortizes the
# per-cell loop; ~1 GB of temporaries at dim 384 and 512 cells).
EXACT_CHUNK = 1 << 16
COARSE_CHUNK = 1 << 18
# Coarse cells probed per row, and candidates rescored in float32 per row.
NPROBE = 2
RESCORE = 4
# Tokens rescored per step (their gathered float32 candidates: 8,192 x 4 x 384 x 4 B = 48 MiB).
RESCORE_ROWS = 1 << 13


def resolve_assignment(mode: str, num_centroids: int) -> str:
    """``exact`` or ``coarse`` for the setting ``mode`` (``auto``: by centroid count)."""
    if mode not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {', '.join(ASSIGNMENTS)}, got {mode!r}")
    if mode == "auto":
        return "exact" if num_centroids <= EXACT_MAX_CENTROIDS else "coarse"
    return mode


def coarse_cells_for(num_centroids: int, nprobe: int = NPROBE) -> int:
    """Cell count minimizing C0 + nprobe * C / C0: ``2**round(log2(sqrt(nprobe * C)))``, in [1, C]."""
    if num_centroids <= 1:
        return 1
    return int(min(num_centroids, 2 ** round(math.log2(math.sqrt(nprobe * num_centroids)))))


def assign_exact(vectors: np.ndarray, centroids: np.ndarray, chunk: int = EXACT_CHUNK,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n,) int32 id of each row's nearest centroid by inner product, over all centroids (float32)."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    codes = np.empty(len(vectors), np.int32)
    for s in range(0, len(vectors), chunk):
        block = np.ascontiguousarray(vectors[s:s + chunk], dtype=np.float32)
        codes[s:s + len(block)] = index.search(block, 1)[1][:, 0]
        if progress is not None:
            progress(len(block))
    return codes


def _spherical_kmeans(points: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    kmeans = faiss.Kmeans(points.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
                          max_points_per_centroid=1 << 30, min_points_per_centroid=1)  # all points, no warning
    kmeans.train(np.ascontiguousarray(points, np.float32))
    return np.asarray(kmeans.centroids, np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class CoarseAssigner:
    """Coarse-to-fine assignment over fixed centroids (see the module docstring).

    cells: (C0, dim) float32 cell centres; members: (C,) centroid ids ordered by cell (ascending id
    within a cell); starts: (C0 + 1,) where each cell's run of ``members`` starts; centroids: (C, dim).
    """

    centroids: np.ndarray
    cells: np.ndarray
    members: np.ndarray
    starts: np.ndarray
    nprobe: int = NPROBE
    rescore: int = RESCORE

    @classmethod
    def build(cls, centroids: np.ndarray, num_cells: int | None = None, nprobe: int = NPROBE,
              rescore: int = RESCORE, seed: int = 0, niter: int = 10) -> CoarseAssigner:
        """Cells by a spherical k-means of the centroids (``num_cells`` None: :func:`coarse_cells_for`)."""
        centroids = np.ascontiguousarray(centroids, np.float32)
        num_c = len(centroids)
        if num_c == 0:
            raise ValueError("no centroids to assign to")
        num_cells = min(num_c, num_cells or coarse_cells_for(num_c, nprobe))
        if num_cells == num_c:  # one centroid per cell
            cells, owner = centroids.copy(), np.arange(num_c)
        else:
            cells = _spherical_kmeans(centroids, num_cells, seed, niter)
            owner = assign_exact(centroids, cells)
        members = np.argsort(owner, kind="stable").astype(np.int64)
        starts = np.searchsorted(owner[members], np.arange(num_cells + 1)).astype(np.int64)
        return cls(centroids, cells, members, starts, int(nprobe), int(rescore))

    @functools.cached_property
    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]:
        """(cell centres bf16, bf16 centroids ordered by cell with each cell padded to a power of two
        rows (fixed matmul shapes: oneDNN builds a kernel per shape), padded cell starts, float32
        centroids)."""
        sizes = np.diff(self.starts)
        padded = np.where(sizes > 0, 2 ** np.ceil(np.log2(np.maximum(sizes, 1))), 0).astype(np.int64)
        pstarts = np.concatenate([[0], np.cumsum(padded)])
        ordered = np.zeros((int(pstarts[-1]), self.centroids.shape[1]), np.float32)
        for cell in np.flatnonzero(sizes):
            ordered[pstarts[cell]:pstarts[cell] + sizes[cell]] = self.centroids[self.members[self.starts[cell]:
                                                                                             self.starts[cell + 1]]]
        return (torch.from_numpy(self.cells).bfloat16(), torch.from_numpy(ordered).bfloat16(), pstarts.tolist(),
                torch.from_numpy(self.centroids))

    def assign(self, vectors: np.ndarray, chunk: int = COARSE_CHUNK,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(n,) int32 centroid id of each row (float array (n, dim), e.g. a float16 memmap)."""
        codes = np.empty(len(vectors), np.int32)
        work = self._workspace  # buffers reused across chunks and calls: fresh ones fault in every page each time
        with torch.autocast("cpu", enabled=False):
            for s in range(0, len(vectors), chunk):
                block = vectors[s:s + chunk]
                x32 = work.get("x32", (len(block), self.centroids.shape[1]), torch.float32)
                with warnings.catch_warnings():  # a read-only memmap is only read here
                    warnings.simplefilter("ignore", UserWarning)
                    x32.copy_(torch.from_numpy(np.asarray(block)))  # vectorized float16 -> float32
                codes[s:s + len(block)] = self._assign_block(x32, work).numpy()
                if progress is not None:
                    progress(len(block))
        return codes

    def _assign_block(self, x: torch.Tensor, work: _Workspace | None = None) -> torch.Tensor:
        cells_b, ordered_b, pstarts, centroids32 = self._tensors
        work = work or _Workspace()
        n, dim, num_cells = len(x), x.shape[1], len(cells_b)
        p, r = min(self.nprobe, num_cells), self.rescore
        xb = work.get("xb", (n, dim), torch.bfloat16).copy_(x)
        scores = xb @ cells_b.T
        probe = scores.topk(p, dim=1).indices if p > 1 else scores.argmax(dim=1, keepdim=True)
        del scores
        flat = probe.reshape(-1)  # (n * p) pairs (token, cell), token-major
        order = torch.argsort(flat, stable=True)  # pairs by cell
        counts = torch.bincount(flat, minlength=num_cells).tolist()
        # the pairs' rows in cell order, with room to read past the end (row counts padded too)
        xsb = work.get("xsb", (n * p + _bucket(n * p), dim), torch.bfloat16)  # padding rows: ignored
        torch.index_select(xb.view(torch.int16), 0, order // p, out=xsb[:n * p].view(torch.int16))
        cand_val = torch.full((n * p, r), float("-inf"))
        cand_id = torch.zeros((n * p, r), dtype=torch.int64)
        a = 0
        for cell, count in enumerate(counts):
            lo, size = pstarts[cell], int(self.starts[cell + 1] - self.starts[cell])
            b = a + count
            if count and size:
                sims = xsb[a:a + _bucket(count)] @ ordered_b[lo:pstarts[cell + 1]].T  # bf16, fixed shapes
                sims = sims[:count, :size].float()  # torch's topk is ~2x faster on float32 than on bfloat16
                k = min(r, size)
                val, pos = sims.topk(k, dim=1) if k > 1 else sims.max(dim=1, keepdim=True)
                cand_val[a:b, :k] = val.float()
                cand_id[a:b, :k] = self._members_t[pos + int(self.starts[cell])]
            a = b
        # per token: its best ``r`` candidates over its cells by bfloat16 score, rescored in float32
        val, ids = torch.empty_like(cand_val), torch.empty_like(cand_id)
        val[order], ids[order] = cand_val, cand_id
        val, ids = val.view(n, p * r), ids.view(n, p * r)
        if p > 1:
            keep = val.topk(r, dim=1).indices
            val, ids = val.gather(1, keep), ids.gather(1, keep)
        exact = torch.empty((n, r))
        for s in range(0, n, RESCORE_ROWS):  # the gathered candidates block by block, in one reused buffer
            e = min(n, s + RESCORE_ROWS)
            rows = work.get("rescore", ((e - s) * r, dim), torch.float32)
            torch.index_select(centroids32, 0, ids[s:e].reshape(-1), out=rows)
            torch.bmm(rows.view(e - s, r, dim), x[s:e].unsqueeze(2), out=exact[s:e].unsqueeze(2))
        exact.masked_fill_(val == float("-inf"), float("-inf"))
        top = exact.max(dim=1, keepdim=True).values
        ids = torch.where(exact == top, ids, torch.iinfo(torch.int64).max)  # ties: the lowest id
        return ids.min(dim=1).values.to(torch.int32)

    @property
    def _workspace(self) -> _Workspace:
        """This thread's scratch buffers (sized by the largest chunk assigned so far)."""
        local = self._local
        if not hasattr(local, "work"):
            local.work = _Workspace()
        return local.work

    @functools.cached_property
    def _local(self) -> threading.local:
        return threading.local()

    @functools.cached_property
    def _members_t(self) -> torch.Tensor:
        return torch.from_numpy(self.members)


class _Workspace:
    """Named scratch tensors, grown when too small and otherwise reused (views of the requested shape)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = self._buffers[name] = torch.empty(size, dtype=dtype)
        return buffer[:size].view(shape)


def _bucket(count: int) -> int:
    """``count`` rounded up to a power of two (at most 2x the rows), or to a multiple of 1024 above 1024."""
    if count <= 1024:
        return 1 << max(0, (count - 1).bit_length())
    return -(-count // 1024) * 1024
