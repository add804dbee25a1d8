"""CPU encoding at fp32 against bf16 autocast, through the library's own encoders (``encoding.precision``).

The shared sentence pass of the packaged all-MiniLM-L6-v2 (the pass that fills the bi-encoder's
vectors and ColBERT's token index of the default cascade) is run by two
:class:`~cascade.encoders.sentence.SentenceEncoder` objects, one at ``fp32``, one at ``bf16``, in
interleaved rounds in this one process (fp32, bf16, then bf16, fp32...), so a load that drifts
(the CPU is shared) hits both alike. Per round and precision:

* document pass: the first ``--docs`` SciFact documents, 256 tokens, batch 32: docs/s;
* query pass: the SciFact test queries (all 300), batch 32: ms/query;

then the cosine of every bf16 vector to its fp32 one (pooled vectors and token vectors: mean
and minimum). ``fp16 (not offered)`` times ``torch.autocast("cpu", dtype=torch.float16)`` around
the fp32 encoder, the measurement behind refusing fp16 on the CPU. Medians over rounds; the
ratio is of the per-round pairs (median). Records the load average and the CPU's bf16 flags.

    flock /work/scratch/bench.lock python experiments/encoding_throughput/precision.py --docs 192 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from cascade import load_beir
from cascade.app.tables import markdown_table
from cascade.encoders.sentence import Encoded, SentenceEncoder
from cascade.kernels.precision import cpu_bf16_supported, cpu_flags, resolve_precision

HERE = Path(__file__).resolve().parent
SCIFACT = HERE.parents[2] / "shared" / "data" / "scifact"
LENGTH, BATCH = 256, 32


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def timed(fn) -> tuple[float, Encoded]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fp16", action="store_true", help="also time torch's CPU fp16 autocast (not offered)")
    parser.add_argument("--out", type=Path, default=HERE / "results_precision.json")
    args = parser.parse_args()
    import torch

    data = load_beir(SCIFACT)
    docs, queries = list(data.corpus.texts[: args.docs]), list(data.query_texts)
    encoders = {"fp32": SentenceEncoder(None, "cpu", "fp32"), "bf16": SentenceEncoder(None, "cpu", "bf16")}
    runs = {"fp32": lambda texts: encoders["fp32"].encode(texts, LENGTH, batch_size=BATCH),
            "bf16": lambda texts: encoders["bf16"].encode(texts, LENGTH, batch_size=BATCH)}
    if args.fp16:
        def fp16(texts):
            with torch.autocast("cpu", dtype=torch.float16):
                return encoders["fp32"].encode(texts, LENGTH, batch_size=BATCH)
        runs["fp16 (not offered)"] = fp16
    for run in runs.values():
        run(docs[:16])  # load the models, warm up
    print(f"{len(docs)} SciFact documents, {len(queries)} queries, {LENGTH} tokens, batch {BATCH}, "
          f"{torch.get_num_threads()} torch threads; auto here = {resolve_precision('auto', 'cpu')}; "
          f"load average {load_average()}", flush=True)
    names, rounds, outputs = list(runs), [], {}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        row = {"round": r, "order": " ".join(order), "load_before": load_average()}
        for name in order:
            doc_s, outputs[name, "docs"] = timed(lambda name=name: runs[name](docs))
            query_s, outputs[name, "queries"] = timed(lambda name=name: runs[name](queries))
            row[f"{name} docs/s"] = len(docs) / doc_s
            row[f"{name} ms/query"] = 1000 * query_s / len(queries)
        row["load_after"] = load_average()
        rounds.append(row)
        print(markdown_table([{k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}]), flush=True)

    summary = []
    for name in names:
        docs_rate = statistics.median(r[f"{name} docs/s"] for r in rounds)
        query_ms = statistics.median(r[f"{name} ms/query"] for r in rounds)
        entry = {"precision": name, "docs/s": docs_rate, "docs/s vs fp32": statistics.median(
                     r[f"{name} docs/s"] / r["fp32 docs/s"] for r in rounds),
                 "query ms": query_ms, "query speed vs fp32": statistics.median(
                     r["fp32 ms/query"] / r[f"{name} ms/query"] for r in rounds)}
        for part in ("docs", "queries"):
            ref, got = outputs["fp32", part], outputs[name, part]
            pooled, tokens = cosines(ref.pooled, got.pooled), cosines(ref.tokens, got.tokens)
            entry[f"{part} pooled cos mean/min"] = f"{pooled.mean():.6f} / {pooled.min():.6f}"
            entry[f"{part} token cos mean/min"] = f"{tokens.mean():.6f} / {tokens.min():.6f}"
        summary.append(entry)
    table = markdown_table([{k: (round(v, 2) if isinstance(v, float) else v) for k, v in e.items()} for e in summary])
    print()
    print(table)
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16", "bf16"})
    args.out.write_text(json.dumps({"docs": len(docs), "queries": len(queries), "max_length": LENGTH, "batch": BATCH,
                                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                                    "cpu_flags": flags, "cpu_bf16_supported": cpu_bf16_supported(),
                                    "rounds": rounds, "summary": summary}, indent=2) + "\n")
    header = (f"`python {Path(__file__).relative_to(HERE.parents[1])} --docs {args.docs} --rounds {args.rounds}"
              f"{' --fp16' if args.fp16 else ''}`: {len(docs)} SciFact documents, {len(queries)} queries, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags {', '.join(flags)}; "
              f"load average {rounds[0]['load_before']} before, {rounds[-1]['load_after']} after.")
    args.out.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(f"\nsaved {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
