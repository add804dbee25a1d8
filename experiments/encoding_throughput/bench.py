"""Corpus encoding throughput (docs/s) of the packaged all-MiniLM-L6-v2 on SciFact documents.

Compares sentence-transformers' own ``encode`` (pooled vectors only) with cascade's
shared pass (pooled vectors *and* per-token vectors from one forward pass), at a few
batch sizes, on the first ``--docs`` SciFact documents truncated at 256 tokens. Also
prints the throughput recorded in the metadata of full-corpus indexes found in the cache.

    python experiments/encoding_throughput/bench.py --docs 512
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cascade import load_beir
from cascade.app.tables import markdown_table
from cascade.encoders.sentence import SentenceEncoder
from cascade.index.store import resolve_cache_dir

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scifact"


def rate(fn, num_docs: int) -> float:
    start = time.perf_counter()
    fn()
    return num_docs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    import torch

    texts = list(load_beir(SCIFACT).corpus.texts[: args.docs])
    encoder = SentenceEncoder(None, "cpu", "fp32")  # fp32, as the README figures (precision.py: bf16)
    model = encoder.model
    model.max_seq_length = args.max_length
    encoder.encode(texts[:32], args.max_length)  # warm up
    print(f"{len(texts)} SciFact documents, max {args.max_length} tokens, torch threads {torch.get_num_threads()}")
    rows = []
    for bs in args.batch_sizes:
        st = rate(lambda bs=bs: model.encode(texts, batch_size=bs, show_progress_bar=False), len(texts))
        ours = rate(lambda bs=bs: encoder.encode(texts, args.max_length, batch_size=bs), len(texts))
        rows.append({"batch_size": bs, "st_encode_pooled_docs/s": st, "cascade_pooled+tokens_docs/s": ours,
                     "ratio": ours / st})
        print(markdown_table(rows[-1:]), flush=True)
    print()
    print(markdown_table(rows))
    found = []
    for meta_path in sorted(resolve_cache_dir(None).glob("*/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("docs_per_second") and meta.get("num_docs", 0) >= 1000:
            found.append({"artifact": f"{meta_path.parent.parent.name}/{meta_path.parent.name}",
                          "docs": meta["num_docs"], "views_in_pass": "+".join(meta.get("shared_with", [])),
                          "encode_s": meta["encode_seconds"], "docs/s": meta["docs_per_second"]})
    if found:
        print("\nfull-corpus index builds recorded in the cache (meta.json):")
        print(markdown_table(found))


if __name__ == "__main__":
    main()
