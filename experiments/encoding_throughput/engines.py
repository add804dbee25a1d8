"""Corpus-encoding throughput of each encoding engine: local, and Ray with 1 and 2 local workers.

Every engine encodes the same first ``--docs`` SciFact documents with the packaged
all-MiniLM-L6-v2 (the shared pass: pooled vectors and token vectors, 256 tokens) into the
same chunk layout (``--chunk`` documents per chunk), through the code ``cascade index`` runs
(:meth:`encode_chunks` of the engine, saving each chunk as it arrives). Per engine:

* ``total_s``: from the call to the last chunk saved (Ray: starting Ray, the actors and their
  model loads included; local: the model is already loaded, as after the first stage loads it);
* ``startup_s``: until the first chunk was saved;
* ``steady docs/s``: documents of the chunks after the first, over the time between the first
  and the last chunk saved: the rate a long build runs at, used for the 1M-document projection;
  ``steady_vs_local`` divides it by the mean of the two local runs (first and last, which
  bracket a load that drifts during the run).

Each engine's arrays are checked against the local ones (max abs difference printed).
Run under the bench lock, and record the load average:

    flock /work/scratch/bench.lock python experiments/encoding_throughput/engines.py --docs 512
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from cascade import load_beir
from cascade.app.tables import markdown_table
from cascade.encoders.sentence import SentenceEncoder
from cascade.index.encoding import LocalEngine

HERE = Path(__file__).resolve().parent
SCIFACT = HERE.parents[2] / "shared" / "data" / "scifact"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(engine, doc_pass, texts: list[str], chunk: int) -> tuple[dict, dict]:
    chunks = [(s, min(s + chunk, len(texts))) for s in range(0, len(texts), chunk)]
    saved: dict[int, tuple[float, object]] = {}
    start = time.perf_counter()
    engine.encode_chunks(doc_pass, lambda s, e: texts[s:e], chunks,
                         lambda s, e, enc: saved.__setitem__(s, (time.perf_counter(), enc)), lambda n: None)
    stamps = sorted(t for t, _ in saved.values())
    first_docs = next(e - s for s, e in chunks if saved[s][0] == stamps[0])
    steady = (len(texts) - first_docs) / (stamps[-1] - stamps[0])
    row = {"total_s": stamps[-1] - start, "startup_s": stamps[0] - start, "steady_docs_per_s": steady,
           "hours_for_1M_docs": 1e6 / steady / 3600}
    return row, {s: enc for s, (_, enc) in saved.items()}


def max_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for s in a:
        assert a[s].lengths.tolist() == b[s].lengths.tolist(), f"chunk {s}: token counts differ"
        worst = max(worst, float(np.abs(a[s].pooled - b[s].pooled).max()),
                    float(np.abs(a[s].tokens - b[s].tokens).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "results_engines.json")
    args = parser.parse_args()
    import torch

    from cascade.index.ray_engine import RayEngine

    texts = list(load_beir(SCIFACT).corpus.texts[: args.docs])
    encoder = SentenceEncoder(None, "cpu", "fp32")  # fp32, as the README figures (precision.py: bf16)
    doc_pass = encoder.doc_pass(encoder.default_max_length, "", args.batch_size)
    doc_pass.encode(texts[:8], None)  # load the model and warm up, as a local build finds it
    engines = [(f"local (this process, {torch.get_num_threads()} torch threads)", LocalEngine()),
               ("ray, 1 worker x 1 CPU", RayEngine(num_workers=1)),
               ("ray, 2 workers x 1 CPU", RayEngine(num_workers=2)),
               ("local again (brackets load drift)", LocalEngine())]
    rows, reference = [], None
    print(f"{len(texts)} SciFact documents, chunks of {args.chunk}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs; load average before: {load_average()}", flush=True)
    for name, engine in engines:
        before = load_average()
        row, encoded = measure(engine, doc_pass, texts, args.chunk)
        reference = reference or encoded
        rows.append({"engine": name, **row, "max_abs_diff_vs_local": max_diff(encoded, reference),
                     "load_avg_before": before, "load_avg_after": load_average()})
        print(markdown_table(rows[-1:]), flush=True)
    local = (rows[0]["steady_docs_per_s"] + rows[-1]["steady_docs_per_s"]) / 2  # the mean of the two local runs
    for row in rows:
        row["steady_vs_local"] = row["steady_docs_per_s"] / local
    print()
    print(markdown_table(rows))
    args.out.write_text(json.dumps({"docs": len(texts), "chunk": args.chunk, "batch_size": args.batch_size,
                                    "cpus": os.cpu_count(), "torch": torch.__version__, "rows": rows},
                                   indent=2) + "\n")
    header = (f"{len(texts)} SciFact documents (the first), packaged all-MiniLM-L6-v2, 256 tokens, chunks of "
              f"{args.chunk}, batch {args.batch_size}; {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"`python {Path(__file__).relative_to(HERE.parents[1])} --docs {args.docs}` under the bench lock; "
              "no GPU on this machine (no GPU figures).")
    table = markdown_table([{k: (f"{v:.1e}" if k == "max_abs_diff_vs_local" else round(v, 2) if isinstance(v, float)
                                 else v) for k, v in row.items()} for row in rows])
    args.out.with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(f"\nsaved {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
