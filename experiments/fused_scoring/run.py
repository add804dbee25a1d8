"""Compressed (2-bit residual) MaxSim on SciFact: the fused lookup-table kernel against the torch
decode-then-matmul tile and the fp32 matmul bound, all in one run.

    CASCADE_CACHE_DIR=/work/cache python experiments/fused_scoring/run.py [--queries 100] [--rounds 5]

Opens the 2-bit SciFact index and BM25 from the cache (the script stops if the index is missing:
nothing is encoded but the queries). For each depth (BM25's top 100 and top 1000), rounds are
interleaved; each round times, over the same queries: the fp32 matmul bound (per query one
``(candidate tokens x dim) @ (dim x Lv)`` matmul on preallocated contiguous random arrays of the same
shape, Lv the query's unmasked tokens), then ``maxsim`` with: the scorer as it was before the fused
kernel (its source taken from git at ``BEFORE``), in float32 and bf16; today's torch tile
(``kernel="torch"``: the fallback without numba); the fused tile (``kernel="fused"``). Medians of the
rounds (wall and process CPU time); ratios to the bound and to before; scores checked against each
other and, for a few queries, against decompress-then-naive. Writes results.json next to this file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
# The last commit with the scorer before the fused kernel: its ResidualCodec is timed as "before".
BEFORE = "4562c4f9501d323d724d8db17e04e50fb5e67e70"


def before_codec(codec):
    """The codec as the library had it at ``BEFORE`` (its source from git, run as a module)."""
    import subprocess
    import types

    source = subprocess.run(["git", "-C", str(HERE), "show", f"{BEFORE}:cascade/kernels/residual.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("residual_before")
    module.__dict__["__name__"] = "residual_before"
    sys.modules["residual_before"] = module
    exec(compile(source, "residual_before.py", "exec"), module.__dict__)
    return module.ResidualCodec(codec.centroids, codec.bucket_cutoffs, codec.bucket_weights, codec.nbits, codec.dim)


def setup(data: str, num_queries: int):
    from cascade import Pipeline, load_beir
    from cascade.stages.bm25 import BM25
    from cascade.stages.colbert import ColBERT

    ds = load_beir(data)
    col = ColBERT(k=10, progress=False, nbits=2)
    if not all(a.is_built() for a in col.artifacts(ds.corpus)):
        sys.exit("the 2-bit ColBERT index is not in the cache: set CASCADE_CACHE_DIR")
    col.prepare(ds.corpus)
    bm25 = BM25(k=1000)
    cands = Pipeline([bm25]).run(ds).candidates
    texts = tuple(ds.query_texts[:num_queries])
    queries, mask = col._encode_queries(texts)
    return col._index, queries, mask, cands.doc_idx[:num_queries]


def bound_inputs(index, mask, doc_idx, dim):
    lengths = np.diff(index.offsets)[np.maximum(doc_idx, 0)] * (doc_idx >= 0)
    rows = lengths.sum(1)
    pairs = [(torch.randn(int(n), dim), torch.randn(dim, int(lv))) for n, lv in zip(rows, mask.sum(1)) if lv]
    return pairs, int(rows.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--queries-1000", type=int, default=30, help="queries timed at depth 1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from cascade.kernels import residual_fused
    from cascade.kernels.maxsim import maxsim, maxsim_naive

    if not residual_fused.available():
        sys.exit(f"numba is needed for the fused kernel: {residual_fused.INSTALL_HINT}")
    load_start = os.getloadavg()
    index, queries, mask, doc_idx = setup(args.data, max(args.queries, args.queries_1000))
    codec, dim = index.codec, queries.shape[2]
    old = before_codec(codec)
    stored = (index.codes, index.residuals, index.norm_deltas)
    scorers = {"before (torch tile)": old.scorer(*stored),
               "before (torch tile), bf16": old.scorer(*stored, compute_dtype=torch.bfloat16),
               "torch tile": codec.scorer(*stored, kernel="torch"), "fused": codec.scorer(*stored, kernel="fused")}
    results = []
    for depth, nq in ((100, args.queries), (1000, args.queries_1000)):
        q, m = queries[:nq], mask[:nq]
        idx = np.where(np.arange(doc_idx.shape[1]) < depth, doc_idx[:nq], -1)[:, :depth]
        pairs, total_rows = bound_inputs(index, m, idx, dim)
        # the first call of each also warms up (numba compiles or loads its cached kernel)
        scores = {k: maxsim(q, m, None, index.offsets, idx, scorer=s,
                            compute_dtype="bfloat16" if "bf16" in k else "float32") for k, s in scorers.items()}
        fin = np.isfinite(scores["fused"])
        diff = {k: float(np.max(np.abs(v[fin] - scores["fused"][fin]))) for k, v in scores.items() if k != "fused"}
        few = slice(0, 3)
        docs = np.unique(idx[few][idx[few] >= 0])  # decompress only these queries' candidates
        lens = np.diff(index.offsets)[docs]
        tokens = index.decompress_rows(np.concatenate([np.arange(index.offsets[d], index.offsets[d + 1])
                                                       for d in docs]))
        local = np.where(idx[few] >= 0, np.searchsorted(docs, idx[few]), -1)
        ref = maxsim_naive(q[few], m[few], tokens, np.r_[0, np.cumsum(lens)], local)
        ref_diff = float(np.max(np.abs(np.where(np.isfinite(ref), ref - scores["fused"][few], 0))))
        times = {k: [] for k in ["fp32 matmul bound", *scorers]}
        cpu = {k: [] for k in times}
        for _ in range(args.rounds):
            for name in times:
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "fp32 matmul bound":
                    for a, b in pairs:
                        a @ b
                else:
                    maxsim(q, m, None, index.offsets, idx, scorer=scorers[name],
                           compute_dtype="bfloat16" if "bf16" in name else "float32")
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        ms = {k: 1000 * float(np.median(v)) / nq for k, v in times.items()}
        cpu_ms = {k: 1000 * float(np.median(v)) / nq for k, v in cpu.items()}
        bound = ms["fp32 matmul bound"]
        results.append({"depth": depth, "queries": nq, "token rows per query": total_rows / nq,
                        "query tokens (mean unmasked)": float(m.sum(1).mean()), "ms/query": ms,
                        "ratio to fp32 bound": {k: v / bound for k, v in ms.items()},
                        "fused speed-up over before": ms["before (torch tile)"] / ms["fused"],
                        "fused speed-up over before, bf16": ms["before (torch tile), bf16"] / ms["fused"],
                        "cpu ms/query (process time)": cpu_ms,
                        "cpu ratio to fp32 bound": {k: v / cpu_ms["fp32 matmul bound"] for k, v in cpu_ms.items()},
                        "max |other - fused|": diff, "max |decompress-then-naive - fused| (3 queries)": ref_diff,
                        "rounds ms/query": {k: [1000 * t / nq for t in v] for k, v in times.items()}})
        print(json.dumps(results[-1], indent=2), flush=True)
    out = {"results": results, "threads": args.threads, "numba threads": args.threads,
           "load average start": load_start, "load average end": os.getloadavg(),
           "machine": platform.processor() or platform.machine(), "cpu count": os.cpu_count(),
           "torch": torch.__version__, "numba": __import__("numba").__version__,
           "index": {"tokens": int(len(index.codes)), "centroids": codec.num_centroids, "nbits": codec.nbits,
                     "dim": dim}}
    (HERE / "results.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
