"""Spherical k-means for the residual codec: flat (faiss) or two-level for large codebooks.

Flat k-means costs ``niter x n x C x dim`` multiply-adds: at 131,072 centroids and 4M sample points,
~4e14 flops per iteration (hours on 2 cores). The two-level k-means (as colbert-ai's scale demands and
``faiss.contrib.clustering.two_level_clustering``) first clusters the sample into ``C0`` cells, then
splits each cell's points into a number of centroids proportional to its size: ~n x (C0 + C / C0) x dim
per iteration. Both return unit float32 centroids; both are deterministic for a seed.
"""
from __future__ import annotations

import logging

import faiss
import numpy as np
from tqdm.auto import tqdm

from cascade.kernels.assign import assign_exact, coarse_cells_for

log = logging.getLogger(__name__)

# Rows converted to float32 at a time when the sample is float16.
CAST_CHUNK = 1 << 18


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in place for float arrays."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return np.divide(x, norms, out=x, where=norms > 0)


def _faiss_kmeans(points: np.ndarray, k: int, seed: int, niter: int, bar: tqdm | None = None) -> np.ndarray:
    """faiss spherical k-means, one iteration per ``train`` call (so ``bar`` can count iterations)."""
    points = np.ascontiguousarray(points, np.float32)
    kmeans = faiss.Kmeans(points.shape[1], k, niter=1, seed=seed, spherical=True, verbose=False,
                          min_points_per_centroid=1)  # no warning for < 39 points per centroid
    kmeans.train(points)
    for _ in range(niter - 1):
        if bar is not None:
            bar.update(1)
        kmeans.train(points, init_centroids=np.asarray(kmeans.centroids))
    if bar is not None:
        bar.update(1)
    return np.asarray(kmeans.centroids, np.float32)


def split_counts(sizes: np.ndarray, total: int) -> np.ndarray:
    """Centroids per cell: proportional to ``sizes`` (largest remainders first), at most a cell's size,
    at least one for a non-empty cell when there are enough centroids, summing to ``min(total, sizes.sum())``."""
    sizes = np.asarray(sizes, np.int64)
    total = int(min(total, sizes.sum()))
    share = sizes * total / max(int(sizes.sum()), 1)
    floor = (sizes > 0).astype(np.int64) if total >= np.count_nonzero(sizes) else np.zeros_like(sizes)
    counts = np.clip(np.floor(share).astype(np.int64), floor, sizes)
    while (gap := total - int(counts.sum())) != 0:  # settle the rounding: a few cells +-1 per round
        room = counts < sizes if gap > 0 else counts > floor
        rest = (share - counts) if gap > 0 else (counts - share)
        pick = np.flatnonzero(room)[np.argsort(-rest[room], kind="stable")][:abs(gap)]
        counts[pick] += 1 if gap > 0 else -1
    return counts


def train_centroids(sample: np.ndarray, num_centroids: int, seed: int = 0, niter: int = 20,
                    two_level: bool = False, num_cells: int | None = None, progress: bool = False,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """(C, dim) float32 unit centroids, C <= len(points), by spherical k-means of ``sample[rows]``.

    sample: (n, dim) float16/32 (e.g. a memmap); rows: the rows to cluster (None: all), read a
    bounded chunk at a time by the two-level k-means. ``two_level``: cluster into ``num_cells``
    cells (None: :func:`coarse_cells_for`) first, then each cell's points into its share of the
    centroids (see the module docstring).
    """
    rows = np.arange(len(sample)) if rows is None else np.asarray(rows, np.int64)
    if len(rows) < num_centroids:
        log.warning("sample has %d points, fewer than %d centroids: training %d centroids",
                    len(rows), num_centroids, len(rows))
        num_centroids = len(rows)
    if num_centroids < 1:
        raise ValueError("cannot train centroids on an empty sample")
    num_cells = min(num_cells or coarse_cells_for(num_centroids), num_centroids)
    if not two_level or num_cells <= 1 or num_cells >= num_centroids:
        with tqdm(total=niter, desc=f"k-means ({num_centroids} centroids)", unit="iter", disable=not progress,
                  leave=False) as bar:
            return normalize_rows(_faiss_kmeans(sample[rows], num_centroids, seed, niter, bar))
    rng = np.random.default_rng(seed)
    pick = rows[np.sort(rng.choice(len(rows), min(len(rows), 256 * num_cells), replace=False))]  # faiss's cap
    with tqdm(total=niter, desc=f"k-means level 1 ({num_cells} cells)", unit="iter", disable=not progress,
              leave=False) as bar:
        cells = normalize_rows(_faiss_kmeans(sample[pick], num_cells, seed, niter, bar))
    owner = np.concatenate([assign_exact(sample[rows[s:s + CAST_CHUNK]], cells)
                            for s in range(0, len(rows), CAST_CHUNK)])
    order = rows[np.argsort(owner, kind="stable")]
    starts = np.searchsorted(np.sort(owner), np.arange(num_cells + 1))
    counts = split_counts(np.diff(starts), num_centroids)
    out, at = np.empty((int(counts.sum()), sample.shape[1]), np.float32), 0
    for cell in tqdm(range(num_cells), desc=f"k-means level 2 ({num_centroids} centroids)", unit="cell",
                     disable=not progress, leave=False):
        k = int(counts[cell])
        if k == 0:
            continue
        points = np.asarray(sample[order[starts[cell]:starts[cell + 1]]], np.float32)
        out[at:at + k] = points if k == len(points) else _faiss_kmeans(points, k, seed + cell, niter)
        at += k
    sizes = np.diff(starts)
    log.info("two-level k-means: %d cells of %d-%d points, %d-%d centroids each", num_cells,
             int(sizes.min()), int(sizes.max()), int(counts.min()), int(counts.max()))
    return normalize_rows(out)
