"""nDCG@10 of every shipped pipeline in float32 and in bfloat16, on SciFact's 300 test queries.

For each pipeline of ``conf/pipeline`` (but those ending in a cross-encoder: no cross-encoder
checkpoint is available offline, and the cross-encoder's own passes run in float32 regardless),
two ``cascade run``s in subprocesses, each on the same cache:

* ``fp32``: ``encoding.precision=fp32 stage.colbert.compute_dtype=float32`` (documents, queries and
  MaxSim in float32: the reference);
* ``bf16``: ``encoding.precision=bf16 stage.colbert.compute_dtype=bfloat16`` (bf16 autocast for the
  encoder passes, bf16 MaxSim and PLAID centroid scores: what ``auto`` runs on a CPU with AVX-512 BF16
  or AMX, and on GPUs).

The cache key includes the precision, so each side encodes (or reuses) its own document vectors.
Writes ``results.json`` and ``results.md`` (the two nDCG@10s, their difference, ms/query of both).

    CASCADE_CACHE_DIR=/work/cache_bf16 python experiments/bf16_defaults/run.py --out experiments/bf16_defaults
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIDES = {"fp32": ["encoding.precision=fp32", "stage.colbert.compute_dtype=float32"],
         "bf16": ["encoding.precision=bf16", "stage.colbert.compute_dtype=bfloat16"]}


def pipelines() -> list[str]:
    names = sorted(p.stem for p in (ROOT / "conf" / "pipeline").glob("*.yaml"))
    return [n for n in names if not n.endswith("_ce")]


def run_one(pipe: str, side: str, runs: Path, data: str) -> dict:
    out = runs / f"{pipe}_{side}"
    has_colbert = "/stage/colbert@" in (ROOT / "conf" / "pipeline" / f"{pipe}.yaml").read_text()
    sets = [s for s in SIDES[side] if has_colbert or not s.startswith("stage.colbert.")]
    cmd = [sys.executable, "-m", "cascade.app.cli", "run", f"pipeline={pipe}", f"dataset.path={data}", "device=cpu",
           *sets, f"hydra.run.dir={out}"]
    start, load = time.perf_counter(), os.getloadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (runs / f"{pipe}_{side}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}; see {runs / f'{pipe}_{side}.log'}")
    metrics = json.loads((out / "metrics.json").read_text())
    stages = json.loads((out / "stages.json").read_text()) if (out / "stages.json").is_file() else None
    return {"ndcg10": metrics["nDCG@10"], "wall_s": wall, "load_avg_start": list(load), "stages": stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--runs", type=Path, default=Path("/tmp/bf16_defaults_runs"))
    ap.add_argument("--data", default=os.environ.get("SCIFACT", str(ROOT.parent / "shared/data/scifact")))
    ap.add_argument("--only", help="comma-separated pipelines (default: every shipped one but *_ce)")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else pipelines()
    rows = []
    for pipe in names:
        res = {side: run_one(pipe, side, args.runs, args.data) for side in SIDES}
        rows.append({"pipeline": pipe, **{f"ndcg10_{s}": r["ndcg10"] for s, r in res.items()},
                     "delta": res["bf16"]["ndcg10"] - res["fp32"]["ndcg10"],
                     "runs": res})
        print(f"{pipe}: fp32 {res['fp32']['ndcg10']:.4f} bf16 {res['bf16']['ndcg10']:.4f}", flush=True)
    when = time.strftime("%Y-%m-%d %H:%M")
    (args.out / "results.json").write_text(json.dumps({"when": when, "rows": rows}, indent=1) + "\n")
    lines = ["# bf16 against fp32, every shipped pipeline (SciFact test, 300 queries)\n",
             f"Recorded {when} by `python experiments/bf16_defaults/run.py`.\n",
             "| pipeline | nDCG@10 fp32 | nDCG@10 bf16 | bf16 - fp32 | within 0.001 |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pipeline']} | {r['ndcg10_fp32']:.4f} | {r['ndcg10_bf16']:.4f} | {r['delta']:+.4f} | "
                     f"{'yes' if abs(r['delta']) <= 0.001 else 'NO'} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
