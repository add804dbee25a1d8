"""The bi-encoder's candidate scoring on SciFact: the old gather-everything path against the tiled one.

    CASCADE_CACHE_DIR=/work/cache python experiments/biencoder_scoring/run.py [--data ../shared/data/scifact]

BM25's top 1000 for the 300 test queries are scored by the bi-encoder's cached document vectors
(nothing is encoded but the queries; the script stops if the vectors are not in the cache). Timed in
the same run: ``old`` (:func:`cascade.kernels.dense.dot_scores_gathered`, the code ``dot_scores`` had
before: one ``(Q, K, dim)`` gather, then an einsum), ``new`` (:func:`cascade.kernels.dense.dot_scores`)
and two bounds: the tiled gather alone (the memory traffic) and one BLAS matmul of all queries with
the union of their candidates (the arithmetic, at BLAS speed). Each method's first call is timed in a fresh
process (as in ``cascade run``, which scores once per process), then medians of ``--repeats`` calls,
rounds interleaved. Then the stage's own ``score`` phase of ``BM25 % 1000 >> BiEncoder % 100`` with each
function. Writes results.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
METHODS = ("old", "new")


def setup(data: str):
    """(queries (Q, dim), memory-mapped vectors, BM25 doc_idx (Q, 1000), the pipeline's stages)."""
    from cascade import Pipeline, load_beir
    from cascade.stages.biencoder import BiEncoder
    from cascade.stages.bm25 import BM25

    ds = load_beir(data)
    bm25, bi = BM25(k=1000), BiEncoder(k=100, progress=False)
    art = bi.artifacts(ds.corpus)[0]
    if not art.is_built():  # the documents must not be re-encoded
        sys.exit(f"bi-encoder vectors not in the cache ({art.path}): set CASCADE_CACHE_DIR")
    Pipeline([bm25, bi]).prepare(ds.corpus)
    first = Pipeline([bm25]).run(ds)
    queries = bi.query_vectors(tuple(ds.query_texts))
    return ds, bm25, bi, queries, bi._vectors, first.candidates.doc_idx


def methods(vectors: np.ndarray):
    from cascade.kernels.dense import DOT_TILE_ELEMENTS, dot_scores, dot_scores_gathered

    plain = np.asarray(vectors)
    rows = DOT_TILE_ELEMENTS // plain.shape[1]

    def gather_only(q, v, idx):
        per = max(1, rows // idx.shape[1])
        buf = np.empty((per * idx.shape[1], plain.shape[1]), np.float32)
        for s in range(0, len(idx), per):
            np.take(plain, np.maximum(idx[s:s + per], 0).ravel(), axis=0, out=buf[:idx[s:s + per].size], mode="clip")

    def union_matmul(q, v, idx):
        union = np.unique(np.maximum(idx, 0))
        return q @ plain[union].T

    return {"old": dot_scores_gathered, "new": dot_scores, "gather alone (tiled)": gather_only,
            "BLAS matmul over the union": union_matmul}


def child(args) -> None:
    """One method's first call in this fresh process; prints ms/query."""
    _, _, _, queries, vectors, idx = setup(args.data)
    fn = methods(vectors)[args.child]
    start = time.perf_counter()
    fn(queries, vectors, idx)
    print(json.dumps({"ms": 1000 * (time.perf_counter() - start) / len(queries)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    load_start = os.getloadavg()
    ds, bm25, bi, queries, vectors, idx = setup(args.data)
    fns = methods(vectors)
    ref = fns["old"](queries, vectors, idx)
    new = fns["new"](queries, vectors, idx)
    assert np.array_equal(ref, new), "the tiled path must give the old scores bit for bit"
    first = {}
    for name in METHODS:
        out = subprocess.run([sys.executable, __file__, "--data", args.data, "--threads", str(args.threads),
                              "--child", name], capture_output=True, text=True, check=True)
        first[name] = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
    times = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(queries, vectors, idx)
            times[name].append(1000 * (time.perf_counter() - start) / len(queries))
    median = {name: float(np.median(t)) for name, t in times.items()}
    stage = {}
    import cascade.stages.biencoder as module  # the stage's own score phase, with each function
    from cascade import Pipeline
    for name in METHODS:
        module.dot_scores = fns[name]
        run = Pipeline([bm25, bi]).run(ds)
        stage[name] = 1000 * run.stages[1].phases.get("score", float("nan")) / len(ds.query_ids)
    module.dot_scores = fns["new"]
    result = {"vectors": str(bi.artifacts(ds.corpus)[0].path), "cache hit": True, "queries": len(queries),
              "candidates": int(idx.shape[1]), "padding": int((idx < 0).sum()),
              "dim": int(vectors.shape[1]), "first call ms/query": first, "median ms/query": median,
              "repeats": args.repeats, "stage score phase ms/query": stage,
              "speed-up first call": first["old"] / first["new"], "speed-up median": median["old"] / median["new"],
              "load average start": load_start, "load average end": os.getloadavg(), "threads": args.threads,
              "machine": platform.processor() or platform.machine(), "numpy": np.__version__}
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
