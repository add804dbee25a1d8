"""Benchmark MaxSim: old kernel vs new kernel (fp32, bf16) vs the fp32 matmul bound, same run.

Corpus: 5,183 documents (SciFact-sized), token counts lognormal clipped to [20, 256]
(mean ~238), random unit vectors stored as an fp16 ``.npy`` in a temp dir and memory-mapped
(page cache warm: the file was just written and is read once before timing). 200 queries of
32 unmasked tokens, dim 384, K distinct random candidates per query, torch 2 threads.

Bound: per query, one fp32 matmul ``(sum of candidate tokens) x 384 @ 384 x 32`` on a
preallocated contiguous fp32 array (the same shapes as the kernel's queries).
Every method is warmed up on 20 queries, then runs once per round over all 200 queries
(one call); rounds are interleaved and medians over rounds are reported (ratios: median
of same-round ratios; min = best round), because the machine is shared: ms/query. faults/q: minor page faults per
query in the last round (fresh large allocations fault on every page).

    python experiments/maxsim_bench/bound_bench.py                          # K=100 and K=1000, writes bound_results.txt
    python experiments/maxsim_bench/bound_bench.py --skip-old --tile-sweep 18 19 21 22 --out sweep.txt
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from cascade.kernels.maxsim import candidate_lengths, maxsim

DEFAULT_BLOCK_ROWS = 1 << 20
DEFAULT_TILE_ELEMENTS = 1 << 20


# ---- old kernel (cascade/kernels.py before this rewrite), verbatim apart from names ----
def _query_blocks(rows_needed: np.ndarray, budget: int) -> list[np.ndarray]:
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


def maxsim_old(queries, query_mask, tokens, offsets, doc_idx, block_rows=DEFAULT_BLOCK_ROWS,
               tile_elements=DEFAULT_TILE_ELEMENTS):
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    num_q, num_k = doc_idx.shape
    out = np.full((num_q, num_k), -np.inf, np.float32)
    if num_q == 0 or num_k == 0:
        return out
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = candidate_lengths(offsets, doc_idx)
    starts = np.where(doc_idx >= 0, offsets[:-1][np.maximum(doc_idx, 0)], 0)
    for rows in _query_blocks(lengths.sum(axis=1), block_rows):
        out[rows] = _maxsim_block_old(queries[rows], query_mask[rows], tokens, starts[rows], lengths[rows],
                                      tile_elements)
    return out


def _plan_old(starts, lengths):
    num_q, num_k = lengths.shape
    per_query = lengths.sum(axis=1)
    width = int(per_query.max())
    ends = np.cumsum(lengths, axis=1)
    base = (np.arange(num_q, dtype=np.int64) * (width + 1))[:, None]
    pos = np.arange(width, dtype=np.int64)[None, :]
    owner = np.searchsorted((ends + base).ravel(), (pos + base).ravel(), side="right").reshape(num_q, width)
    owner -= np.arange(num_q, dtype=np.int64)[:, None] * num_k
    valid = pos < per_query[:, None]
    owner = np.where(valid, owner, 0)
    first = np.take_along_axis(ends - lengths, owner, axis=1)
    rows = np.where(valid, np.take_along_axis(starts, owner, axis=1) + pos - first, 0)
    return rows, owner, valid


def _maxsim_block_old(queries, query_mask, tokens, starts, lengths, tile_elements):
    num_q, num_k = lengths.shape
    if not lengths.any():
        return np.full((num_q, num_k), -np.inf, np.float32)
    rows, owner, valid = _plan_old(starts, lengths)
    owner_t, invalid_t = torch.from_numpy(owner), torch.from_numpy(~valid)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).transpose(1, 2)
    best = torch.full((num_q, num_k, q.shape[2]), float("-inf"), dtype=torch.float32)
    step = max(1, tile_elements // (tokens.shape[1] * num_q))
    for s0 in range(0, rows.shape[1], step):
        cols = slice(s0, s0 + step)
        tile = torch.from_numpy(np.asarray(np.take(tokens, rows[:, cols].ravel(), axis=0)))
        sim = torch.bmm(tile.reshape(num_q, -1, tokens.shape[1]).to(torch.float32), q)
        sim.masked_fill_(invalid_t[:, cols].unsqueeze(-1), float("-inf"))
        best.scatter_reduce_(1, owner_t[:, cols].unsqueeze(-1).expand_as(sim), sim, reduce="amax")
    qmask = torch.from_numpy(np.asarray(query_mask, dtype=bool)).unsqueeze(1)
    scores = torch.where(qmask, best, torch.zeros((), dtype=best.dtype)).sum(-1)
    scores = torch.where(torch.from_numpy(lengths > 0), scores, torch.tensor(float("-inf")))
    return scores.numpy()


# ---- benchmark ----
def make_corpus(path: str, num_docs: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    lengths = np.clip(rng.lognormal(np.log(330), 0.45, num_docs), 20, 256).astype(np.int64)
    offsets = np.r_[0, np.cumsum(lengths)]
    tokens = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(int(offsets[-1]), dim))
    for s in range(0, len(tokens), 1 << 18):  # unit vectors, written in chunks
        x = rng.standard_normal((min(1 << 18, len(tokens) - s), dim), dtype=np.float32)
        tokens[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    tokens.flush()
    del tokens
    return offsets


def bound(a32: np.ndarray, per_query_rows: np.ndarray, queries: np.ndarray) -> None:
    a = torch.from_numpy(a32)
    for n, q in zip(per_query_rows, queries):
        a[:n] @ torch.from_numpy(q).T


def timed_methods(tokens: np.ndarray, offsets: np.ndarray, queries: np.ndarray, mask: np.ndarray,
                  doc_idx: np.ndarray, a32: np.ndarray, per_query_rows: np.ndarray, tile_sweep: list[int],
                  skip_old: bool) -> dict[str, Callable[[slice], np.ndarray | None]]:
    """The timed methods for one K, each called on a slice of the queries; every input bound here, not
    read from the caller's loop (a closure over the loop would see the last K's arrays)."""
    methods: dict[str, Callable[[slice], np.ndarray | None]] = {
        "bound (fp32 matmul)": lambda sl: bound(a32, per_query_rows[sl], queries[sl]),
        "old kernel": lambda sl: maxsim_old(queries[sl], mask[sl], tokens, offsets, doc_idx[sl]),
        "new fp32": lambda sl: maxsim(queries[sl], mask[sl], tokens, offsets, doc_idx[sl]),
        "new bf16": lambda sl: maxsim(queries[sl], mask[sl], tokens, offsets, doc_idx[sl],
                                      compute_dtype="bfloat16"),
    }
    for x in tile_sweep:
        methods[f"new fp32 tile 2^{x}"] = (
            lambda sl, x=x: maxsim(queries[sl], mask[sl], tokens, offsets, doc_idx[sl], tile_elements=1 << x))
    if skip_old:
        del methods["old kernel"]
    return methods


def ratio(times: dict[str, list[float]], m: str, base: str) -> float:
    """Median over rounds of the same-round ratios of method ``m`` to method ``base``."""
    return statistics.median(a / b for a, b in zip(times[m], times[base]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ks", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--docs", type=int, default=5183)
    ap.add_argument("--tile-sweep", type=int, nargs="*", default=[],
                    help="also time new fp32 with tile_elements = 2**x for these x")
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "bound_results.txt"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    dim, lq = 384, 32
    rng = np.random.default_rng(0)
    lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokens.npy")
        offsets = make_corpus(path, args.docs, dim, rng)
        tokens = np.load(path, mmap_mode="r")
        float(np.asarray(tokens[::64]).sum())  # touch the file: page cache warm
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
        lengths = np.diff(offsets)
        emit(f"corpus: {args.docs} docs, {len(tokens)} tokens ({lengths.mean():.1f}/doc, "
             f"min {lengths.min()}, max {lengths.max()}), dim {dim}, fp16 memmap {tokens.nbytes / 2**20:.0f} MiB; "
             f"{args.queries} queries x {lq} tokens; torch threads {torch.get_num_threads()}")
        emit(f"load average at the start (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        emit(f"{'K':>5} {'method':<22} {'median':>8} {'min':>8} {'x bound':>8} {'x new fp32':>10} {'faults/q':>9}  "
             "rounds (ms/query)")
        for k in args.ks:
            queries = rng.standard_normal((args.queries, lq, dim), dtype=np.float32)
            queries /= np.linalg.norm(queries, axis=-1, keepdims=True)
            mask = np.ones((args.queries, lq), bool)
            doc_idx = np.stack([rng.choice(args.docs, k, replace=False) for _ in range(args.queries)])
            per_query_rows = candidate_lengths(offsets, doc_idx).sum(axis=1)
            a32 = rng.standard_normal((int(per_query_rows.max()), dim), dtype=np.float32)
            methods = timed_methods(tokens, offsets, queries, mask, doc_idx, a32, per_query_rows,
                                    args.tile_sweep, args.skip_old)
            times: dict[str, list[float]] = {m: [] for m in methods}
            faults: dict[str, float] = {}
            results = {}
            for fn in methods.values():  # warm-up on 20 queries
                fn(slice(0, 20))
            for _ in range(args.rounds):
                for m, fn in methods.items():
                    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
                    results[m] = fn(slice(None))
                    times[m].append(1000 * (time.perf_counter() - t0) / args.queries)
                    faults[m] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / args.queries
            med = {m: statistics.median(t) for m, t in times.items()}
            for m in methods:
                emit(f"{k:>5} {m:<22} {med[m]:8.2f} {min(times[m]):8.2f} "
                     f"{ratio(times, m, 'bound (fp32 matmul)'):8.2f} {ratio(times, m, 'new fp32'):10.2f} "
                     f"{faults[m]:9.0f}  {' '.join(f'{t:.2f}' for t in times[m])}")
            old, new, bf = results.get("old kernel", results["new fp32"]), results["new fp32"], results["new bf16"]
            ref_top = np.argsort(-new, axis=1, kind="stable")[:, :10]
            bf_top = np.argsort(-bf, axis=1, kind="stable")[:, :10]
            overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref_top, bf_top)])
            gap = np.mean(-np.diff(np.take_along_axis(new, ref_top, 1), axis=1))
            emit(f"{k:>5} check: |new fp32 - old| max {np.abs(new - old).max():.2e}")
            emit(f"{k:>5} bf16 vs fp32: max abs {np.abs(bf - new).max():.4f}, mean abs {np.abs(bf - new).mean():.5f} "
                 f"(scores {new.min():.2f}..{new.max():.2f}, mean gap between neighbours in the top 10 {gap:.4f}); "
                 f"top-10 set overlap {overlap:.3f}, same doc at the same top-10 position "
                 f"{np.mean(ref_top == bf_top):.3f}, "
                 f"identical top-10 lists {np.mean(np.all(ref_top == bf_top, axis=1)):.3f}, "
                 f"top-1 agreement {np.mean(ref_top[:, 0] == bf_top[:, 0]):.3f}")
            del methods  # its closures hold the memmap, released before the temp dir goes
        del tokens
    emit(f"load average at the end (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
         f"on {os.cpu_count()} CPUs")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
