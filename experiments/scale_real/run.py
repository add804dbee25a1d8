#!/usr/bin/env python3
"""Real-text scale benchmark: GCIDE (126k dictionary entries) indexed end to end by `cascade index`.

    apt-get install dict-gcide
    python experiments/scale_real/make_corpus.py /work/gcide          # the BEIR folder (34 MB)
    python experiments/scale_real/run.py --data /work/gcide --cache /work/cache_gcide build
    python experiments/scale_real/run.py --data /work/gcide --cache /work/cache_gcide measure
    python experiments/scale_real/run.py report                        # results.md from parts/

`build` runs the library's own command, `cascade index pipeline=colbert` (bf16 encoding where the
CPU has it, 2-bit residual compression, PLAID's IVF), in a subprocess: wall time, the child's
peak RSS, and the compressed artifact's own record of its phases (`build_phases` in its meta.json:
wall and CPU seconds and peak RSS per phase). `measure` opens the built index through the same config
(`stage.colbert.search=plaid|exhaustive`) and times each query alone (after a warm-up):
encode and search milliseconds, p50/p95, at k=10 and k=100, and recall@k of PLAID's top k
against exhaustive search's. It also reports MRR@10 of both on the known-item queries
(each query is a sentence of one entry: that entry is its judged document; see make_corpus.py).
CI never runs this: it needs the Debian package and about an hour of CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = HERE / "parts"
CLI = [sys.executable, "-m", "cascade.app.cli"]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build(data: Path, cache: Path, extra: list[str]) -> dict:
    """`cascade index pipeline=colbert` on ``data`` into ``cache``; what it cost."""
    args = [*CLI, "index", "pipeline=colbert", f"dataset.path={data}", *extra]
    env = {**os.environ, "CASCADE_CACHE_DIR": str(cache)}
    load_before, t0 = _load(), time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"cascade index failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (art,) = [p for p in (cache / "colbert_residual").iterdir() if p.is_dir() and not p.name.startswith(".")
              and (p / "meta.json").is_file()]
    meta = json.loads((art / "meta.json").read_text())
    files = {name: f["bytes"] for name, f in meta["files"].items()}
    sidecars = {}  # every other artifact the index needs (e.g. the centroids cache), counted too
    for other in cache.glob("colbert_centroids/*/meta.json"):
        files = json.loads(other.read_text())["files"]
        sidecars.update({f"{other.parent.name}/{n}": f["bytes"] for n, f in files.items()})
    tokens = int(meta["num_tokens"])
    return {
        "command": " ".join(["cascade", *args[len(CLI):]]), "wall_s": round(wall, 1),
        "child_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "child_peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "load_before": load_before, "load_after": _load(), "docs": meta["num_docs"], "tokens": tokens,
        "num_centroids": meta.get("num_centroids"), "precision": meta.get("precision"),
        "assignment": meta.get("assignment"), "encode_seconds": meta.get("encode_seconds"),
        "docs_per_second": meta.get("docs_per_second"), "build_phases": meta.get("build_phases"),
        "index_bytes": sum(files.values()), "sidecar_bytes": sum(sidecars.values()),
        "bytes_per_token_all": round((sum(files.values()) + sum(sidecars.values())) / tokens, 2),
        "stdout_tail": proc.stdout[-2000:], "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def measure(data: Path, cache: Path, n_queries: int) -> dict:
    """Per-query PLAID and exhaustive latency at k=10 and k=100, recall of PLAID against exhaustive."""
    os.environ["CASCADE_CACHE_DIR"] = str(cache)
    import numpy as np
    import torch

    from cascade.app.index_cmd import compose_config
    from cascade.app.runner import build_dataset, build_pipeline
    from cascade.core.candidates import Batch
    from cascade.core.timing import collect, run_scope

    torch.set_num_threads(2)
    base = ["pipeline=colbert", f"dataset.path={data}"]  # the config `build` indexed with: the same artifact
    ds = build_dataset(compose_config(base))
    queries = list(ds.query_texts[:n_queries])
    gold = [next(iter(ds.qrels[q])) for q in ds.query_ids[:n_queries]]
    out: dict = {"queries": len(queries), "load_before": _load()}
    for k in (10, 100):
        runs = {}
        for search in ("plaid", "exhaustive"):
            cfg = compose_config([*base, f"stage.colbert.k={k}", f"stage.colbert.search={search}",
                                  "stage.colbert.progress=false"])
            (stage,) = build_pipeline(cfg).stages
            stage.prepare(ds.corpus)
            batch = lambda q: Batch((q,), ds.corpus)  # noqa: E731
            with run_scope():
                stage.rerank(batch(queries[0]))  # warm-up
            enc, score, tops = [], [], []
            for q in queries:
                with run_scope(), collect() as acc:
                    got = stage.rerank(batch(q)).candidates
                enc.append(acc["encode"] * 1e3)
                score.append(acc["score"] * 1e3)
                tops.append([int(d) for d in got.doc_idx[0] if d >= 0])
            runs[search] = {"encode_ms_p50": round(_percentile(enc, 50), 2),
                            "search_ms_p50": round(_percentile(score, 50), 2),
                            "search_ms_p95": round(_percentile(score, 95), 2), "tops": tops}
        recall = np.mean([len(set(p) & set(e)) / max(len(e), 1)
                          for p, e in zip(runs["plaid"]["tops"], runs["exhaustive"]["tops"])])
        for r in runs.values():
            ids = [[ds.corpus.ids[d] for d in t[:10]] for t in r.pop("tops")]
            r["mrr@10"] = round(float(np.mean([1 / (row.index(g) + 1) if g in row else 0.0
                                                for row, g in zip(ids, gold)])), 4)
        out[f"k={k}"] = {**runs, f"plaid_recall@{k}_vs_exhaustive": round(float(recall), 4),
                         "speedup": round(runs["exhaustive"]["search_ms_p50"] / runs["plaid"]["search_ms_p50"], 2)}
    out["load_after"] = _load()
    return out


def saved_load(data: Path, cache: Path, folder: Path) -> dict:
    """Save the built index (``cascade index ... --out``), then ``cascade.load`` it in fresh processes."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("index_updates", HERE.parent / "index_updates" / "run.py")
    updates = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(updates)  # its load_in_subprocess: the same measurement as for SciFact
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "CASCADE_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    subprocess.run([*CLI, "index", "pipeline=colbert", f"dataset.path={data}", "--out", str(folder)],
                   env=env, check=True, capture_output=True, text=True)
    save_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"save_s": round(save_s, 1), "folder_bytes": size, "first_open": updates.load_in_subprocess(folder),
            "again": updates.load_in_subprocess(folder)}


def report() -> str:
    build_part = json.loads((PARTS / "build.json").read_text())
    lines = ["# Real-text scale: GCIDE through `cascade index`", "",
             f"Built by `{build_part['command']}` on {build_part['machine']}: {build_part['docs']:,} documents, "
             f"{build_part['tokens']:,} tokens, {build_part['num_centroids']:,} centroids, precision "
             f"{build_part['precision']}, assignment {build_part['assignment']}. Load average before/after: "
             f"{build_part['load_before']} / {build_part['load_after']}.", "",
             "| what | value |", "|---|---|",
             f"| build wall time | {build_part['wall_s']} s |",
             f"| build CPU time (child) | {build_part['child_cpu_s']} s |",
             f"| peak RSS (child) | {build_part['child_peak_rss_mib']} MiB |",
             f"| encoding | {build_part['encode_seconds']} s ({build_part['docs_per_second']} docs/s) |",
             f"| bytes per token, everything included | {build_part['bytes_per_token_all']} |"]
    for name, phase in (build_part.get("build_phases") or {}).items():
        lines.append(f"| phase {name} | {phase} |")
    if (PARTS / "load.json").is_file():
        ld = json.loads((PARTS / "load.json").read_text())
        lines += ["", f"Saved with `cascade index pipeline=colbert dataset.path=... --out DIR` from the built cache "
                  f"in {ld['save_s']} s ({ld['folder_bytes'] / 1e6:.0f} MB); "
                  "`cascade.load(DIR)` in fresh processes:", "",
                  "| open | import + model s | open s | first search s | RSS open MiB | RSS after search MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in ("first_open", "again"):
            r = ld[name]
            lines.append(f"| {name.replace('_', ' ')} | {r['import_and_model_s']} | {r['open_s']} | "
                         f"{r['first_search_s']} | {r['rss_open_mib']} | {r['rss_after_search_mib']} |")
    if (PARTS / "measure.json").is_file():
        m = json.loads((PARTS / "measure.json").read_text())
        lines += ["", f"Queries: {m['queries']} known-item sentences of the corpus, each timed alone. "
                  f"Load average before/after: {m['load_before']} / {m['load_after']}.", "",
                  "| k | search | encode ms p50 | search ms p50 | search ms p95 | MRR@10 "
                  "| PLAID recall@k vs exhaustive | speed-up |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for k in (10, 100):
            row = m[f"k={k}"]
            for search in ("plaid", "exhaustive"):
                r = row[search]
                lines.append(f"| {k} | {search} | {r['encode_ms_p50']} | {r['search_ms_p50']} | {r['search_ms_p95']} | "
                             f"{r['mrr@10']} | {row[f'plaid_recall@{k}_vs_exhaustive'] if search == 'plaid' else ''} | "
                             f"{row['speedup'] if search == 'plaid' else ''} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["build", "measure", "load", "report"])
    ap.add_argument("--saved", type=Path, default=Path("/work/gcide_saved"), help="folder for `load`")
    ap.add_argument("--data", type=Path, default=Path("/work/gcide"))
    ap.add_argument("--cache", type=Path, default=Path("/work/cache_gcide"))
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("overrides", nargs="*", help="extra `cascade index` overrides (build only)")
    args = ap.parse_args()
    PARTS.mkdir(exist_ok=True)
    if args.what == "build":
        (PARTS / "build.json").write_text(json.dumps(build(args.data, args.cache, args.overrides), indent=2))
    elif args.what == "load":
        (PARTS / "load.json").write_text(json.dumps(saved_load(args.data, args.cache, args.saved), indent=2))
    elif args.what == "measure":
        (PARTS / "measure.json").write_text(json.dumps(measure(args.data, args.cache, args.queries), indent=2))
    print(report())


if __name__ == "__main__":
    main()
