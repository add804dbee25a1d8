"""ColBERT on vs off at the same BM25 and bi-encoder cutoffs, from a finished cutoffs sweep.

    python experiments/sweep_cutoffs/colbert_on_off.py multirun/cutoffs

Pairs each ``pipeline=cascade`` job with the ``pipeline=bm25_dense`` job of the same cutoffs
and prints the paired t-test and randomization test of per-query nDCG@10.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cascade.app.significance import compare


def main(root: Path) -> None:
    def scores(name: str) -> dict[str, float]:
        return json.loads((root / name / "per_query.json").read_text())["nDCG@10"]

    print("| BM25 k | bi-encoder k | Δ nDCG@10 (ColBERT on − off) | p (t-test) | p (randomization) |")
    print("|---:|---:|---:|---:|---:|")
    for bm25 in (100, 300, 1000):
        for dense in (20, 50, 100):
            cutoffs = f"stage.biencoder.k={dense},stage.bm25.k={bm25}"
            off, on = scores(f"pipeline=bm25_dense,{cutoffs}"), scores(f"pipeline=cascade,{cutoffs}")
            t, r = compare(off, on, "ttest"), compare(off, on, "randomization")
            print(f"| {bm25} | {dense} | {t.delta:+.4f} | {t.p_value:.3f} | {r.p_value:.3f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, nargs="?", default=Path("multirun/cutoffs"),
                    help="the finished cutoffs sweep's folder (default: %(default)s)")
    main(ap.parse_args().root)
