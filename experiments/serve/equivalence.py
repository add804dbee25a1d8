"""Batched answers against one-query answers on SciFact: how far dynamic batching moves scores and rankings.

    CASCADE_CACHE_DIR=/work/cache_serve python experiments/serve/equivalence.py [--queries 64] [--batch 32]

For each pipeline (config overrides as `cascade serve` takes them) it searches the first N test queries
one at a time (what `cascade serve --no-batching` runs) and in batches of B (what a full batch of the
dynamic batcher runs), k=10, and reports: queries whose top 10 differ (ids or order), the largest score
difference, and nDCG@10 both ways. The neural stages' query pass over a padded batch rounds differently
from a pass over one query; BM25 has no such pass.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

from cascade import evaluate
from cascade.app.index_cmd import compose_config
from cascade.app.runner import build_dataset, build_pipeline

PIPELINES = {"bm25": ["pipeline=bm25"], "cascade": [], "colbert": ["pipeline=colbert"]}


def compare(overrides: list[str], n: int, batch: int) -> dict:
    cfg = compose_config([*overrides, "log_level=WARNING"])
    ds = build_dataset(cfg).subset(n)
    pipe = build_pipeline(cfg).index(ds.corpus)
    queries = list(ds.query_texts)
    start = time.perf_counter()
    alone = [pipe.search(q, k=10) for q in queries]
    alone_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = [r for i in range(0, n, batch) for r in pipe.search(queries[i:i + batch], k=10)]
    batched_s = time.perf_counter() - start
    differ = sum(a.doc_ids != b.doc_ids for a, b in zip(alone, batched))
    same_ids = [(a, b) for a, b in zip(alone, batched) if a.doc_ids == b.doc_ids]
    delta = max((float(np.max(np.abs(np.subtract(a.scores, b.scores)))) for a, b in same_ids if len(a)), default=0.0)
    exact = sum(a.doc_ids == b.doc_ids and a.scores == b.scores for a, b in zip(alone, batched))

    def ndcg(rankings) -> float:
        run = {qid: dict(zip(r.doc_ids, r.scores)) for qid, r in zip(ds.query_ids, rankings)}
        return evaluate(run, ds.qrels, ["nDCG@10"])["nDCG@10"]

    return {"queries": n, "batch": batch, "exactly_equal": exact, "top10_differs": differ,
            "max_abs_score_delta_same_ids": delta, "ndcg10_alone": ndcg(alone), "ndcg10_batched": ndcg(batched),
            "alone_s": round(alone_s, 2), "batched_s": round(batched_s, 2), "load": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in args.pipelines:
        print(json.dumps({"pipeline": name, **compare(PIPELINES[name], args.queries, args.batch)}), flush=True)


if __name__ == "__main__":
    main()
