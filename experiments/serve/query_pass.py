"""What batching buys the neural stages, and what it moves: MiniLM query passes of 1 query against 32.

    python experiments/serve/query_pass.py [path/to/scifact]

For the packaged MiniLM's query encoding (max 64 tokens) in fp32 and in bf16 autocast (what
``precision: auto`` picks on CPUs with AVX-512 BF16/AMX): ms per query one query at a time (10
passes, after a warm-up) and for SciFact's first 32 test queries in one call, and the largest
difference between each query's pooled vector encoded alone and in that batch; with the load average.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from cascade import load_beir
from cascade.encoders.sentence import get_sentence_encoder

QUERY = "0-dimensional biomaterials show inductive properties."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", type=Path, nargs="?", default=Path(__file__).resolve().parents[3] / "shared/data/scifact",
                    help="the SciFact folder (default: %(default)s)")
    path = ap.parse_args().path
    logging.basicConfig(level=logging.WARNING)
    queries = list(load_beir(path).query_texts[:32])
    print(f"torch threads {torch.get_num_threads()}, load {os.getloadavg()}")
    for precision in ("fp32", "bf16"):
        encoder = get_sentence_encoder(None, "cpu", precision)
        encoder.encode([QUERY], 64)  # warm-up
        start = time.perf_counter()
        for _ in range(10):
            encoder.encode([QUERY], 64)
        one = (time.perf_counter() - start) / 10
        start = time.perf_counter()
        together = encoder.encode(queries, 64).pooled
        batch = time.perf_counter() - start
        alone = np.stack([encoder.encode([q], 64).pooled[0] for q in queries])
        same = int((alone == together).all(axis=1).sum())
        print(f"{precision}: 1 query per pass {1000 * one:.1f} ms/query; "
              f"32 in one pass {1000 * batch / 32:.1f} ms/query; "
              f"alone vs batched: max |delta| {np.abs(alone - together).max():.2g}, {same}/32 vectors identical "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
