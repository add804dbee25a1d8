"""Time BM25 backends on SciFact: index build + top-1000 retrieval for the 300 test queries.

Usage: python experiments/bm25_backends/bench.py [--data ../shared/data/scifact] [--repeats 3]

Both backends share one tokenization (lowercase, English stopwords, Snowball
stemmer), timed once separately; each backend is timed on building its index
from the tokens and on retrieving the top 1000 for every query. Caches are
bypassed: indexes are built in memory.
"""
from __future__ import annotations

import argparse
import statistics
import time

import bm25s
import numpy as np
import rank_bm25

from cascade import Candidates, Run, evaluate, load_beir
from cascade.stages.bm25 import Tokenizer

K = 1000


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argpartition(-scores, k - 1)[:k]
    return top, scores[top]


def bench_bm25s(doc_tokens, query_tokens):
    start = time.perf_counter()
    model = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    model.index(doc_tokens, show_progress=False)
    built = time.perf_counter()
    docs, scores = model.retrieve(query_tokens, k=K, show_progress=False, n_threads=1)
    done = time.perf_counter()
    return built - start, done - built, (docs, scores)


def bench_rank_bm25(doc_tokens, query_tokens):
    start = time.perf_counter()
    model = rank_bm25.BM25Okapi(doc_tokens, k1=1.5, b=0.75)
    built = time.perf_counter()
    rows = [topk(np.asarray(model.get_scores(q), dtype=np.float32), K) for q in query_tokens]
    done = time.perf_counter()
    return built - start, done - built, (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ds = load_beir(args.data)
    tokenizer = Tokenizer("english", "en")
    start = time.perf_counter()
    doc_tokens, query_tokens = tokenizer(ds.corpus.texts), tokenizer(ds.query_texts)
    print(f"SciFact: {len(ds.corpus)} docs, {len(ds.query_ids)} queries; "
          f"tokenization (shared) {time.perf_counter() - start:.2f} s")
    results = {}
    for name, fn in [("bm25s", bench_bm25s), ("rank_bm25", bench_rank_bm25)]:
        times = [fn(doc_tokens, query_tokens) for _ in range(args.repeats)]
        index_s = statistics.median(t[0] for t in times)
        search_s = statistics.median(t[1] for t in times)
        docs, scores = times[-1][2]
        run = Run(ds.query_ids, ds.corpus.ids, Candidates(docs, scores).topk(K))
        quality = evaluate(run, ds.qrels, ["nDCG@10", "R@1000"])
        results[name] = (index_s + search_s, search_s)
        print(f"{name:9s}  index {index_s * 1000:8.1f} ms  retrieve {search_s * 1000:8.1f} ms "
              f"({search_s * 1000 / len(ds.query_ids):.2f} ms/query)  total {index_s + search_s:.3f} s  "
              f"nDCG@10 {quality['nDCG@10']:.4f}  R@1000 {quality['R@1000']:.4f}")
    (total_a, search_a), (total_b, search_b) = results["bm25s"], results["rank_bm25"]
    print(f"bm25s vs rank_bm25: {total_b / total_a:.1f}x faster on index + top-{K}, "
          f"{search_b / search_a:.1f}x faster on top-{K} retrieval alone (index cached, as cascade runs it)")


if __name__ == "__main__":
    main()
