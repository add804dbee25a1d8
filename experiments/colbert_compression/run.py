"""ColBERT on SciFact: fp16 against residual compression (nbits 1, 2, 4), PLAID against exhaustive,
and reranking speed against the fp32 matmul bound of the same shape — all measured in one run.

    python experiments/colbert_compression/run.py [--data ../shared/data/scifact] [--parts quality,first,rerank]

Uses the cache ($CASCADE_CACHE_DIR): the first run builds the fp16 index (one MiniLM pass, minutes)
and each compressed index (k-means once for all nbits, then compression). Writes results.json and
results.md next to this file.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cascade import Fusion, Pipeline, Run, evaluate, load_beir
from cascade.core.candidates import Batch
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT

HERE = Path(__file__).resolve().parent
METRICS = ["nDCG@10", "R@100"]


def timed_run(pipe, ds):
    start = time.perf_counter()
    run = pipe.run(ds)
    return run, 1000 * (time.perf_counter() - start) / len(ds.query_ids)


def quality(ds, rows):
    """The default cascade (BM25 1000 -> bi-encoder 100 -> ColBERT 10, fused) with each ColBERT index."""
    bm25 = BM25(k=1000)
    bi = BiEncoder(k=100, progress=False, fusion=Fusion("zscore", 0.3, 0.7))
    for nbits in (None, 1, 2, 4):
        col = ColBERT(k=10, progress=False, nbits=nbits, fusion=Fusion("zscore", 0.5, 0.5))
        pipe = Pipeline([bm25, bi, col])
        pipe.prepare(ds.corpus)
        run, _ = timed_run(pipe, ds)
        trace = run.stages[-1]
        info = col.index_info()
        rows.append({"part": "cascade", "colbert index": "fp16" if nbits is None else f"nbits={nbits}",
                     **evaluate(run, ds.qrels, METRICS), "colbert ms/query": 1000 * trace.seconds / len(ds.query_ids),
                     "index MB": info["index_bytes"] / 1e6, "B/token": info["bytes_per_token"],
                     "payload B/token": info.get("payload_bytes_per_token", 2 * 384)})


def first_stage(ds, rows):
    """ColBERT alone over the whole corpus, k=10 and k=100: PLAID (float32 and bf16) against exhaustive
    search, all on the 2-bit index (colbert-ai's default knobs for each k)."""
    for k in (10, 100):
        for search, dtype in (("plaid", "float32"), ("plaid", "bfloat16"), ("exhaustive", "float32")):
            col = ColBERT(k=k, progress=False, nbits=2, search=search, compute_dtype=dtype)
            pipe = Pipeline([col])
            pipe.prepare(ds.corpus)
            run, ms = timed_run(pipe, ds)
            rows.append({"part": f"first stage, k={k}", "search": search if dtype == "float32" else f"{search}, bf16",
                         **evaluate(run, ds.qrels, METRICS), "ms/query": ms})
        exhaustive = rows[-1]
        for plaid in rows[-3:-1]:
            plaid["nDCG@10 / exhaustive"] = plaid["nDCG@10"] / exhaustive["nDCG@10"]
            plaid["speed-up"] = exhaustive["ms/query"] / plaid["ms/query"]


def matmul_bound(queries: np.ndarray, mask: np.ndarray, tokens_per_query: np.ndarray, dim: int, reps: int = 3) -> float:
    """ms/query of one fp32 (tokens x dim) @ (dim x Lq) matmul per query, on random data of the same shape."""
    lq = int(mask.sum(1).mean())
    total = 0.0
    for n in tokens_per_query[:50]:
        a, b = torch.randn(int(n), dim), torch.randn(dim, lq)
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        total += best
    return 1000 * total / min(len(tokens_per_query), 50)


def rerank(ds, rows):
    """ColBERT reranking BM25's top 100 and 1000: fp16 fp32/bf16, 2-bit, 2-bit pruned; vs the matmul bound."""
    bm25 = BM25(k=1000)
    bm25.prepare(ds.corpus)
    first = Pipeline([bm25]).run(ds)
    for depth in (100, 1000):
        cands = first.candidates.topk(depth)
        batch = Batch(ds.query_texts, ds.corpus, cands, ds.query_ids)
        for label, kw in (("fp16 index, fp32", {}), ("fp16 index, bf16", {"compute_dtype": "bfloat16"}),
                          ("nbits=2", {"nbits": 2}), ("nbits=2, bf16", {"nbits": 2, "compute_dtype": "bfloat16"}),
                          ("nbits=2, prune_to=100", {"nbits": 2, "prune_to": 100}),
                          ("nbits=2, prune_to=100, bf16", {"nbits": 2, "prune_to": 100, "compute_dtype": "bfloat16"})):
            if depth == 100 and "prune_to" in kw:
                continue
            col = ColBERT(k=10, progress=False, **kw)
            col.prepare(ds.corpus)
            queries, mask = col._encode_queries(tuple(ds.query_texts))  # encoded (and cached) outside the timing
            start = time.perf_counter()
            out = col.rerank(batch)
            ms = 1000 * (time.perf_counter() - start) / len(ds.query_ids)
            run = Run(first.query_ids, first.doc_ids, out.candidates)
            lengths = np.diff(col._index.offsets)[np.maximum(cands.doc_idx, 0)] * cands.mask
            bound = matmul_bound(queries, mask, lengths.sum(1), queries.shape[2])
            rows.append({"part": f"rerank {depth}", "kernel": label, "nDCG@10": evaluate(run, ds.qrels, ["nDCG@10"])[
                "nDCG@10"], "ms/query": ms, "fp32 matmul bound ms/query": bound, "ratio to bound": ms / bound})


def markdown(rows: list[dict]) -> str:
    out = []
    for part in dict.fromkeys(r["part"] for r in rows):
        group = [r for r in rows if r["part"] == part]
        cols = list(dict.fromkeys(k for r in group for k in r if k != "part"))
        out += [f"### {part}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in group:
            out.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                                         for c in cols) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--parts", default="quality,first,rerank")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=None,
                        help="first-stage and rerank parts on the first N queries (exhaustive search costs ~2 s/query)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_beir(args.data)
    rows: list[dict] = []
    small = ds.subset(args.queries) if args.queries else ds
    for part in args.parts.split(","):
        {"quality": quality, "first": first_stage, "rerank": rerank}[part](ds if part == "quality" else small, rows)
        print(markdown(rows), flush=True)
    env = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": list(__import__("os").getloadavg())}
    env["queries"] = {"quality": len(ds.query_ids), "first stage and rerank": len(small.query_ids)}
    stem = "results" if args.parts == "quality,first,rerank" else f"results_{args.parts.replace(',', '_')}"
    (HERE / f"{stem}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    (HERE / f"{stem}.md").write_text(f"Measured {env['date']}, {env['torch_threads']} torch threads, "
                                     f"load average at the end {env['load_average']}; queries: {env['queries']}.\n\n"
                                     + markdown(rows) + "\n")


if __name__ == "__main__":
    main()
