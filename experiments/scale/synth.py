"""Build a SYNTHETIC 2-bit ColBERT index of any size from real SciFact token vectors, streaming.

What is synthetic (the study's README states it too):

* Document lengths are drawn from SciFact's document lengths.
* Every synthetic document has a *main* SciFact document: each of its tokens is, with
  probability ``MAIN_SHARE``, a random token of that document, else a random token of the whole
  corpus (real fp16 MiniLM vectors of the cached SciFact token index); then isotropic Gaussian
  noise ``sigma`` per dimension is added and the vector renormalized (mean cosine ~0.9 to its
  source). Documents are so topically coherent, and the corpus is diverse.
* The codebook follows colbert-ai's rule ``2**floor(log2(16 sqrt(T)))`` for the corpus's token
  count T, as a **two-level** k-means: the 16,384 SciFact centroids (real faiss k-means on real
  SciFact tokens) are each split into ``C / 16384`` children by Lloyd iterations on synthetic
  tokens of that cell (batched in torch). Buckets are refit on the residuals to the children.
* A token is assigned among the children of its *source's* SciFact centroid (a restricted
  search: exact search over 131,072 centroids for 238M tokens is ~2.4e16 flops, days on
  2 cores). How often this differs from the exact nearest centroid, and what it costs in
  reconstruction, is measured on a sample of a built index by :func:`check_built`.

Compression and norm deltas use the library's own ``ResidualCodec.compress`` / ``norm_deltas``
and the IVF ``cascade.kernels.plaid.build_ivf``; files are the library's layout (codes,
residuals, norm_deltas, offsets, ivf_docs, ivf_offsets, centroids fp16, bucket arrays), written
chunk by chunk with plain file writes (no growing memory map), so peak memory does not grow with
the corpus except for the IVF build (8 bytes per (centroid, document) pair).
"""
from __future__ import annotations

import logging
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cascade.kernels.plaid import build_ivf
from cascade.kernels.residual import ResidualCodec, fit_buckets, num_centroids_for

log = logging.getLogger("scale.synth")

SIGMA = 0.0247
MAIN_SHARE = 0.75
POINTS_PER_CELL = 256
LLOYD_ITERS = 8
CELL_BATCH = 512
CHUNK_TOKENS = 1 << 20


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


NOISE_BANK = 1 << 17


def _perturb(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Add sigma * N(0, I) noise and renormalize. The noise rows are drawn from a bank of
    ``NOISE_BANK`` Gaussian rows (a gather is ~3x cheaper than fresh normals), so a token's noise is a
    random bank row. With 1.2M source tokens x 131k noise rows, about 0.15% of a 238M-token corpus's
    tokens share their (source, noise) pair with another token."""
    bank = getattr(_perturb, "bank", None)
    if bank is None or bank.shape[1] != x.shape[1]:
        bank = _perturb.bank = torch.randn((NOISE_BANK, x.shape[1]), generator=gen).mul_(sigma)
    x.add_(bank.index_select(0, torch.randint(0, NOISE_BANK, (len(x),), generator=gen)))
    return x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True))


def _rows(src: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """float32 copy of ``src[rows]`` (fp16 memmap): torch's gather + cast is ~9x faster than numpy's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only memory: torch warns, we only read
        table = torch.from_numpy(np.asarray(src))
    return table.index_select(0, torch.from_numpy(np.asarray(rows, np.int64))).float()


def _cells(src_codes: np.ndarray, num_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the source tokens sorted by cell, start of each cell's run (num_cells + 1,))."""
    order = np.argsort(src_codes, kind="stable")
    starts = np.searchsorted(src_codes[order], np.arange(num_cells + 1))
    return order, starts


def train_children(src: np.ndarray, src_codes: np.ndarray, coarse: np.ndarray, split: int, sigma: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(children (C0 * split, dim) unit float32, residual sample for the buckets (n, dim))."""
    num_cells, dim = coarse.shape
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    order, starts = _cells(src_codes, num_cells)
    counts = np.diff(starts)
    children = np.repeat(coarse[:, None, :], split, axis=1).astype(np.float32)  # empty cells keep the parent
    res_sample = []
    for c0 in range(0, num_cells, CELL_BATCH):
        cells = np.arange(c0, min(c0 + CELL_BATCH, num_cells))
        cells = cells[counts[cells] > 0]
        pick = starts[cells][:, None] + (rng.random((len(cells), POINTS_PER_CELL)) * counts[cells][:, None]).astype(
            np.int64)
        x = _perturb(_rows(src, order[pick.ravel()]), sigma, gen).reshape(len(cells), POINTS_PER_CELL, dim)
        cent = x[:, :split].clone()  # random members (the pick is random) as the initial children
        for _ in range(LLOYD_ITERS):
            assign = torch.bmm(x, cent.transpose(1, 2)).argmax(dim=2)  # (B, P)
            onehot = torch.nn.functional.one_hot(assign, split).float()  # (B, P, split)
            sums = torch.bmm(onehot.transpose(1, 2), x)  # (B, split, dim)
            empty = onehot.sum(dim=1) == 0
            sums[empty] = cent[empty]
            cent = sums / torch.linalg.vector_norm(sums, dim=2, keepdim=True).clamp_min(1e-12)
        children[cells] = cent.numpy()
        assign = torch.bmm(x, cent.transpose(1, 2)).argmax(dim=2)
        resid = x - torch.gather(cent, 1, assign[:, :, None].expand(-1, -1, dim))
        res_sample.append(resid[:, :8].reshape(-1, dim).numpy())  # 8 per cell for the buckets
    return children.reshape(num_cells * split, dim), np.concatenate(res_sample)


def _write_at(path: Path, header: int, row_bytes: int, start: int, array: np.ndarray) -> None:
    with open(path, "r+b") as f:
        f.seek(header + start * row_bytes)
        f.write(np.ascontiguousarray(array).tobytes())


def _new_npy(path: Path, dtype, shape) -> int:
    """Create an .npy of ``shape`` (sparse), return its header size."""
    mm = np.lib.format.open_memmap(path, "w+", dtype, shape)
    header = mm.offset
    del mm
    return header


def assign_restricted(x: torch.Tensor, coarse_sorted: np.ndarray, children: torch.Tensor, split: int) -> np.ndarray:
    """Fine code of each row of ``x`` (rows sorted by coarse cell): the best of its cell's children."""
    if split == 1:
        return coarse_sorted.astype(np.int32)
    out = np.empty(len(x), np.int32)
    bounds = np.flatnonzero(np.diff(coarse_sorted)) + 1
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(x)]])):
        c = int(coarse_sorted[a])
        out[a:b] = c * split + (x[a:b] @ children[c].T).argmax(dim=1).numpy()
    return out


def build(size: int, out_dir: Path, src: np.ndarray, src_offsets: np.ndarray, src_codes: np.ndarray,
          codec0: ResidualCodec, seed: int = 0, sigma: float = SIGMA) -> dict:
    """Write the synthetic index of ``size`` documents into ``out_dir``; returns the build report."""
    t_all = time.perf_counter()
    rng, gen = np.random.default_rng(seed + 1), torch.Generator().manual_seed(seed + 1)
    src_len = np.diff(src_offsets)
    lengths = rng.choice(src_len[src_len > 0], size=size, replace=True).astype(np.int64)
    main = rng.choice(np.flatnonzero(src_len > 0), size=size, replace=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    num_c = num_centroids_for(total)
    split = max(1, num_c // codec0.num_centroids)
    t = time.perf_counter()
    if split == 1:
        codec = codec0
    else:
        children, res_sample = train_children(src, src_codes, np.asarray(codec0.centroids, np.float32), split,
                                              sigma, seed)
        cutoffs, weights = fit_buckets(res_sample, codec0.nbits)
        codec = ResidualCodec(children, cutoffs, weights, codec0.nbits, codec0.dim)
    t_codebook = time.perf_counter() - t
    log.info("%d docs, %d tokens: %d centroids (%d x %d), codebook %.1f s", size, total, codec.num_centroids,
             codec0.num_centroids, split, t_codebook)
    children_t = torch.from_numpy(np.ascontiguousarray(codec.centroids, np.float32)).reshape(
        codec0.num_centroids, split, codec.dim)
    code_dtype = np.uint16 if codec.num_centroids <= 1 << 16 else np.int32
    width = codec.dim * codec.nbits // 8
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"codes": (code_dtype, (total,), np.dtype(code_dtype).itemsize),
             "residuals": (np.uint8, (total, width), width), "norm_deltas": (np.float16, (total,), 2)}
    headers = {name: _new_npy(out_dir / f"{name}.npy", dt, shape) for name, (dt, shape, _) in files.items()}
    timing = dict.fromkeys(("generate", "assign", "compress", "write"), 0.0)
    doc_chunks = np.searchsorted(offsets, np.arange(0, total + CHUNK_TOKENS, CHUNK_TOKENS))
    doc_chunks = np.unique(np.clip(doc_chunks, 0, size))
    t_pass = time.perf_counter()
    for step, (d0, d1) in enumerate(zip(doc_chunks[:-1], doc_chunks[1:])):
        a, b = int(offsets[d0]), int(offsets[d1])
        n = b - a
        t = time.perf_counter()
        owner = np.repeat(main[d0:d1], lengths[d0:d1])
        rows = np.where(rng.random(n) < MAIN_SHARE,
                        src_offsets[owner] + (rng.random(n) * src_len[owner]).astype(np.int64),
                        rng.integers(0, len(src), n))
        coarse = np.asarray(src_codes[rows], np.int64)
        order = np.argsort(coarse, kind="stable")
        x = _perturb(_rows(src, rows[order]), sigma, gen)
        timing["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        codes_s = assign_restricted(x, coarse[order], children_t, split)
        timing["assign"] += time.perf_counter() - t
        t = time.perf_counter()
        codes_s, resid_s = codec.compress(x.numpy(), codes=codes_s)
        deltas_s = codec.norm_deltas(codes_s, resid_s)
        timing["compress"] += time.perf_counter() - t
        t = time.perf_counter()
        inv = np.empty_like(order)
        inv[order] = np.arange(n)
        for name, arr in (("codes", codes_s.astype(code_dtype)), ("residuals", resid_s), ("norm_deltas", deltas_s)):
            _write_at(out_dir / f"{name}.npy", headers[name], files[name][2], a, arr[inv])
        timing["write"] += time.perf_counter() - t
        del x, resid_s
        el = time.perf_counter() - t_pass
        if d1 == size or step % 16 == 0:
            log.info("%d/%d docs, %.0f s, %.0f tokens/s, peak RSS %.0f MiB", d1, size, el, b / el, _rss_mib())
    t = time.perf_counter()
    codes = np.load(out_dir / "codes.npy", mmap_mode="r")
    ivf_docs, ivf_offsets = build_ivf(codes, offsets, codec.num_centroids)
    del codes
    t_ivf = time.perf_counter() - t
    np.save(out_dir / "ivf_docs.npy", ivf_docs)
    np.save(out_dir / "ivf_offsets.npy", ivf_offsets)
    np.save(out_dir / "offsets.npy", offsets)
    np.save(out_dir / "centroids.npy", np.asarray(codec.centroids, np.float16))
    np.save(out_dir / "bucket_cutoffs.npy", np.asarray(codec.bucket_cutoffs, np.float32))
    np.save(out_dir / "bucket_weights.npy", np.asarray(codec.bucket_weights, np.float32))
    file_bytes = {p.name: p.stat().st_size for p in out_dir.glob("*.npy")}
    nbytes = sum(file_bytes.values())
    return {
        "num_docs": size, "num_tokens": total, "synthetic": True, "sigma": sigma, "main_share": MAIN_SHARE,
        "seed": seed, "num_centroids": codec.num_centroids, "split": split,
        "build_s": {"codebook": t_codebook, **timing, "ivf": t_ivf, "total": time.perf_counter() - t_all},
        "build_tokens_per_s": total / (time.perf_counter() - t_all),
        "index_bytes": nbytes, "files": file_bytes, "bytes_per_token": nbytes / total,
        "payload_bytes_per_token": np.dtype(code_dtype).itemsize + width + 2,
        "ivf_pairs": int(len(ivf_docs)), "mean_docs_per_centroid": float(len(ivf_docs) / codec.num_centroids),
        "peak_rss_build_mib": _rss_mib(),
    }


def assignment_check(x: np.ndarray, restricted: np.ndarray, codec: ResidualCodec, source: np.ndarray) -> dict:
    """On a sample: restricted vs exact nearest-centroid assignment, and reconstruction cosines."""
    x = np.asarray(x, np.float32)
    exact = codec.assign(x)
    src = np.asarray(source, np.float32)
    src /= np.linalg.norm(src, axis=1, keepdims=True)

    def cos_after(codes):
        c, r = codec.compress(x, codes=codes)
        y = codec.decompress(c, r)
        return float(np.einsum("ij,ij->i", x, y).mean())

    return {"sample_tokens": len(x), "same_as_exact": float((exact == restricted).mean()),
            "mean_cos_decoded_restricted": cos_after(restricted), "mean_cos_decoded_exact": cos_after(exact),
            "mean_cos_to_source": float(np.einsum("ij,ij->i", x, src).mean()),
            "centroid_cos_restricted": float(np.einsum("ij,ij->i", x, codec.centroids[restricted]).mean()),
            "centroid_cos_exact": float(np.einsum("ij,ij->i", x, codec.centroids[exact]).mean())}


def check_built(codec: ResidualCodec, src: np.ndarray, src_codes: np.ndarray, num_cells: int, seed: int = 0,
                sigma: float = SIGMA, sample: int = 4096) -> dict:
    """:func:`assignment_check` for a built index's ``codec``, on fresh random tokens made as :func:`build`
    makes them (a random source token, perturbed, assigned among its first-level cell's children)."""
    centroids = np.ascontiguousarray(codec.centroids, np.float32)
    split = max(1, codec.num_centroids // num_cells)
    rng, gen = np.random.default_rng(seed + 7), torch.Generator().manual_seed(seed + 7)
    rows = rng.integers(0, len(src), sample)
    coarse = np.asarray(src_codes[rows], np.int64)
    order = np.argsort(coarse, kind="stable")
    x = _perturb(_rows(src, rows[order]), sigma, gen)
    children = torch.from_numpy(centroids).reshape(-1, split, centroids.shape[1])
    codes = assign_restricted(x, coarse[order], children, split)
    return {**assignment_check(x.numpy(), codes, codec, src[rows[order]]), "split": split}
