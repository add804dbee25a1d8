"""Union fusion on SciFact: BM25 + bi-encoder candidates fused (RRF, z-score, linear) against the BM25 >> dense cascade.

    CASCADE_CACHE_DIR=/work/cache python experiments/union/run.py [path/to/scifact] > experiments/union/results.md

Every pipeline runs on the same dataset in one process (warm caches); metrics by ir-measures. Quality only:
the union costs about what its sides cost together (see each run's stage report for timings).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cascade import UnionFusion, evaluate, load_beir
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25

METRICS = ["nDCG@10", "R@100", "R@1000"]


def pipelines():
    bm25, dense = BM25(), BiEncoder(progress=False)
    fused = {"method": "zscore", "weight_in": 0.3, "weight_own": 0.7}
    yield "BM25 % 1000 >> BiEncoder % 100 (zscore 0.3/0.7; conf pipeline=bm25_dense)", \
        bm25 % 1000 >> BiEncoder(k=100, progress=False, fusion=fused)
    yield "BM25 % 100 + BiEncoder % 100, RRF, % 100 (conf pipeline=union)", (bm25 % 100 + dense % 100) % 100
    yield "BM25 % 100 + BiEncoder % 100, RRF (whole union)", bm25 % 100 + dense % 100
    yield "BM25 % 1000 + BiEncoder % 1000, RRF", bm25 % 1000 + dense % 1000
    for method in ("zscore", "minmax", "linear"):
        yield f"BM25 % 1000 + BiEncoder % 1000, {method}", UnionFusion([bm25 % 1000, dense % 1000], method=method)
    yield "BM25 % 1000 + BiEncoder % 1000, zscore 0.3/0.7", \
        UnionFusion([bm25 % 1000, dense % 1000], method="zscore", weights=[0.3, 0.7])
    yield "BM25 % 1000 (alone)", bm25 % 1000
    yield "BiEncoder % 1000 (alone)", dense % 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", type=Path, nargs="?", default=Path(__file__).resolve().parents[3] / "shared/data/scifact",
                    help="the SciFact folder (default: %(default)s)")
    path = ap.parse_args().path
    logging.basicConfig(level=logging.WARNING)
    ds = load_beir(path)
    print(f"SciFact test, {len(ds.query_ids)} queries, {len(ds.corpus)} documents\n")
    print("| pipeline | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, pipe in pipelines():
        scores = evaluate(pipe(ds), ds.qrels, METRICS)
        print(f"| {name} | " + " | ".join(f"{scores[m]:.4f}" for m in METRICS) + " |", flush=True)


if __name__ == "__main__":
    main()
