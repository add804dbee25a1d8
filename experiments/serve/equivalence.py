"""Batched answers against one-query answers on SciFact: what the server's batches return, and merged passes.

    CASCADE_CACHE_DIR=/work/cache_serve python experiments/serve/equivalence.py [--queries 64] [--batch 32]

For each pipeline (config overrides as `cascade serve` takes them) it searches the first N test queries
one at a time (what `cascade serve --no-batching` runs) and in batches of B two ways, k=10:

- ``solo``: inside :func:`cascade.core.passes.solo_passes`, as the dynamic batcher of `cascade serve` runs
  every merged batch (neural passes one query at a time, every other kernel over the batch);
- ``merged``: a plain ``pipe.search(batch)``, whose neural passes take the whole padded batch (what a
  batch job does).

and reports per way: queries whose top 10 differ (ids or order), queries exactly equal (ids and scores),
the largest score difference, nDCG@10, and the wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import time

import numpy as np

from cascade import evaluate
from cascade.app.index_cmd import compose_config
from cascade.app.runner import build_dataset, build_pipeline
from cascade.core.passes import solo_passes

PIPELINES = {"bm25": ["pipeline=bm25"], "cascade": [], "colbert": ["pipeline=colbert"]}


def compare(overrides: list[str], n: int, batch: int) -> dict:
    cfg = compose_config([*overrides, "log_level=WARNING"])
    ds = build_dataset(cfg).subset(n)
    pipe = build_pipeline(cfg).index(ds.corpus)
    queries = list(ds.query_texts)
    start = time.perf_counter()
    alone = [pipe.search(q, k=10) for q in queries]
    alone_s = time.perf_counter() - start
    out = {"queries": n, "batch": batch, "alone_s": round(alone_s, 2), "ndcg10_alone": ndcg(ds, alone)}
    for way in ("solo", "merged"):
        start = time.perf_counter()
        with solo_passes() if way == "solo" else contextlib.nullcontext():
            batched = [r for i in range(0, n, batch) for r in pipe.search(queries[i:i + batch], k=10)]
        out[way] = {"seconds": round(time.perf_counter() - start, 2), **compare_rankings(ds, alone, batched)}
    return {**out, "load": os.getloadavg()}


def ndcg(ds, rankings) -> float:
    run = {qid: dict(zip(r.doc_ids, r.scores)) for qid, r in zip(ds.query_ids, rankings)}
    return evaluate(run, ds.qrels, ["nDCG@10"])["nDCG@10"]


def compare_rankings(ds, alone, batched) -> dict:
    differ = sum(a.doc_ids != b.doc_ids for a, b in zip(alone, batched))
    same_ids = [(a, b) for a, b in zip(alone, batched) if a.doc_ids == b.doc_ids]
    delta = max((float(np.max(np.abs(np.subtract(a.scores, b.scores)))) for a, b in same_ids if len(a)), default=0.0)
    exact = sum(a.doc_ids == b.doc_ids and a.scores == b.scores for a, b in zip(alone, batched))
    return {"exactly_equal": exact, "top10_differs": differ, "max_abs_score_delta_same_ids": delta,
            "ndcg10": ndcg(ds, batched)}


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
