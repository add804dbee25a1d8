"""How much should ColBERT (plain all-MiniLM-L6-v2 token vectors) count? A grid over its fusion weights on SciFact.

Runs BM25 (k=1000) >> bi-encoder (k=100, z-score fused 0.3/0.7 with BM25) once, then the
ColBERT stage (k=10) with no fusion and with each (method, weight_in, weight_own) of the
grid on the same candidates. Caches under $CASCADE_CACHE_DIR are reused (built on first run).

    python experiments/neural_cascade/fusion_grid.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cascade import Batch, Fusion, evaluate, load_beir
from cascade.app.tables import markdown_table
from cascade.core.results import Run
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scifact"
WEIGHTS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SCIFACT, help="the SciFact folder (default: %(default)s)")
    args = ap.parse_args()
    ds = load_beir(args.data)
    batch = Batch(ds.query_texts, ds.corpus, None, ds.query_ids)

    def ndcg(b: Batch) -> float:
        run = Run(ds.query_ids, ds.corpus.ids, b.candidates)
        return evaluate(run, ds.qrels, ["nDCG@10"])["nDCG@10"]

    after_bm25 = BM25(k=1000).rerank(batch)
    after_bi = BiEncoder(k=100, fusion=Fusion("zscore", 0.3, 0.7)).rerank(after_bm25)
    colbert = ColBERT(k=10)
    rows = [{"colbert_fusion": "none (MaxSim alone)", "nDCG@10": ndcg(colbert.rerank(after_bi))}]
    for method in ("zscore", "minmax", "rrf"):
        for w in WEIGHTS:
            fused = ColBERT(k=10, fusion=Fusion(method, w, round(1 - w, 2)))
            fused.prepare(ds.corpus)
            rows.append({"colbert_fusion": f"{method} {w}/{round(1 - w, 2)}", "nDCG@10": ndcg(fused.rerank(after_bi))})
    print(f"BM25@1000: {ndcg(after_bm25):.4f}; >> bi-encoder@100 fused: {ndcg(after_bi):.4f}; then ColBERT@10:")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
