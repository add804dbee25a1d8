"""Saved-index updates on SciFact: adding 1% against a full build, search after 10 updates against the
compacted index, and what ``cascade.load`` costs (time, resident memory).

    CASCADE_DATA_DIR=/work/shared/data python experiments/index_updates/run.py --work /tmp/index_updates

Steps (each timed in wall and CPU seconds, with the load average before and after, since the
machine is shared):

1. full build: ``cascade index pipeline=P`` from an empty cache (a subprocess);
2. save the built pipeline as an index folder; hold out 1% of the documents (52, seed 0): delete them
   and compact, giving the 99% index;
3. add the 52 documents to copies of the 99% index (in this process, index already open; and the
   command ``cascade index add`` end to end), ``--repeats`` times;
4. ``updates``: 10 updates of the 99% index (each adds a tenth of the held-out documents and replaces 5
   others), and a copy of it compacted; ``search``: the test queries through both, alternately, after
   a warm-up round, ``--repeats`` times;
5. ``cascade.load`` of the compacted index in fresh subprocesses: first after a copy (every file
   hashed), then again (verified files only stat-ed).

``--steps`` runs some of them (later steps reuse the folders an earlier run left in ``--work``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = ("build", "save", "add", "updates", "search", "load")
REPO = HERE.parents[1]


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Clock:
    """Wall and CPU seconds of a block (this process, or its children with ``children=True``)."""

    def __init__(self, children: bool = False):
        self.who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF

    def __enter__(self):
        self.load0, self.t0 = load_avg(), time.perf_counter()
        use = resource.getrusage(self.who)
        self.c0 = use.ru_utime + use.ru_stime
        return self

    def __exit__(self, *exc):
        use = resource.getrusage(self.who)
        self.wall = round(time.perf_counter() - self.t0, 3)
        self.cpu = round(use.ru_utime + use.ru_stime - self.c0, 3)
        self.record = {"wall_s": self.wall, "cpu_s": self.cpu, "load_before": self.load0, "load_after": load_avg()}


def full_build(pipeline: str, cache: Path) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "CASCADE_CACHE_DIR": str(cache)}
    with Clock(children=True) as clock:
        subprocess.run([sys.executable, "-m", "cascade.app.cli", "index", f"pipeline={pipeline}"], env=env,
                       check=True, capture_output=True, text=True)
    return clock.record


def load_in_subprocess(folder: Path) -> dict:
    """``cascade.load`` in a fresh process: the models' load, the index's open (verification, docstore, stage
    files), the first search; resident memory after opening and its high-water mark (VmRSS, VmHWM)."""
    code = f"""
import json, time
def mem(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
t0 = time.perf_counter()
import cascade
from cascade.encoders.sentence import get_sentence_encoder
get_sentence_encoder(None).model
t1 = time.perf_counter()
rss0 = mem("VmRSS")
index = cascade.load({str(folder)!r})
t2 = time.perf_counter()
rss1 = mem("VmRSS")
index.search("statins and heart disease", k=10)
t3 = time.perf_counter()
print(json.dumps({{"import_and_model_s": t1 - t0, "open_s": t2 - t1, "first_search_s": t3 - t2,
                  "rss_models_mib": rss0, "rss_open_mib": rss1, "rss_after_search_mib": mem("VmRSS"),
                  "hwm_mib": mem("VmHWM")}}))
"""
    load0 = load_avg()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return {**{k: round(v, 3) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()},
            "load_before": load0, "load_after": load_avg()}


def latency(a, b, queries: list[str], repeats: int) -> dict:
    """ms/query of the same queries through ``a`` and ``b``, alternately, after one warm-up round each."""
    for index in (a, b):
        index.search(queries, k=10)
    times = {"after_10_updates": [], "compacted": []}
    for _ in range(repeats):
        for name, index in (("after_10_updates", a), ("compacted", b)):
            start = time.perf_counter()
            index.search(queries, k=10)
            times[name].append(round(1000 * (time.perf_counter() - start) / len(queries), 3))
    ratios = [x / y for x, y in zip(times["after_10_updates"], times["compacted"])]
    return {**times, "ratio_per_round": [round(r, 4) for r in ratios],
            "ratio_median": round(statistics.median(ratios), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default="cascade")
    parser.add_argument("--work", type=Path, default=Path("/tmp/index_updates"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--queries", type=int, default=None, help="the first N test queries time the search")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help="which steps to run (a later step reuses the folders of earlier runs in --work)")
    args = parser.parse_args()
    args.steps = tuple(args.steps.split(","))
    import numpy as np

    import cascade
    from cascade.app.index_cmd import compose_config
    from cascade.app.runner import build_dataset, build_pipeline

    work = args.work
    results = json.loads(args.out.read_text()) if args.out.is_file() and args.steps != STEPS else {}
    results.update({"pipeline": args.pipeline, "cpus": os.cpu_count()})
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    if "build" in args.steps:
        results["full_build"] = full_build(args.pipeline, cache)
        print("full build", results["full_build"], flush=True)
    os.environ["CASCADE_CACHE_DIR"] = str(cache)
    cfg = compose_config([f"pipeline={args.pipeline}"])
    dataset = build_dataset(cfg)
    ids = list(dataset.corpus.ids)
    held = sorted(np.random.default_rng(0).choice(len(ids), len(ids) // 100, replace=False).tolist())
    held_docs = {ids[i]: dataset.corpus.texts[i] for i in held}
    if "save" in args.steps:
        for name in ("full", "base"):
            shutil.rmtree(work / name, ignore_errors=True)
        with Clock() as clock:
            build_pipeline(cfg).index(dataset.corpus).save(work / "full")
        results["save"] = clock.record
        shutil.copytree(work / "full", work / "base")
        base = cascade.load(work / "base")
        with Clock() as clock:
            base.delete(list(held_docs))
        results["delete_1pct"] = clock.record
        with Clock() as clock:
            base.compact()
        results["compact_after_delete"] = clock.record
    if "add" in args.steps:
        adds = []
        for _ in range(args.repeats):
            shutil.rmtree(work / "add", ignore_errors=True)
            shutil.copytree(work / "base", work / "add")
            index = cascade.load(work / "add")
            with Clock() as clock:
                index.add(held_docs)
            adds.append(clock.record)
            print("add", clock.record, flush=True)
        results["add_1pct"] = adds
        (work / "held.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n"
                                                 for d, t in held_docs.items()))
        shutil.rmtree(work / "add", ignore_errors=True)
        shutil.copytree(work / "base", work / "add")
        with Clock(children=True) as clock:
            subprocess.run([sys.executable, "-m", "cascade.app.cli", "index", "add", str(work / "add"),
                            str(work / "held.jsonl")], check=True, capture_output=True, text=True)
        results["add_1pct_cli"] = clock.record
        build = results["full_build"]
        add_wall = statistics.median(a["wall_s"] for a in adds)
        add_cpu = statistics.median(a["cpu_s"] for a in adds)
        results["add_over_build"] = {"wall": round(add_wall / build["wall_s"], 4),
                                     "cpu": round(add_cpu / build["cpu_s"], 4),
                                     "cli_wall": round(results["add_1pct_cli"]["wall_s"] / build["wall_s"], 4),
                                     "cli_cpu": round(results["add_1pct_cli"]["cpu_s"] / build["cpu_s"], 4)}
        print("add / build", results["add_over_build"], flush=True)
    if "updates" in args.steps:  # 10 updates, then the same compacted
        for name in ("A", "B"):
            shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(work / "base", work / "A")
        a = cascade.load(work / "A")
        rng = np.random.default_rng(1)
        for piece in np.array_split(np.array(list(held_docs)), 10):
            replaced = rng.choice(sorted(a.corpus.index_of), 5, replace=False).tolist()
            a.add({d: held_docs[d] for d in piece})
            a.update({d: a.doc(d)["text"] + " (revised)" for d in replaced})
        shutil.copytree(work / "A", work / "B")
        cascade.load(work / "B").compact()
        drift = a.codec_drift()
        if drift:
            results["codec_drift"] = drift
    if "search" in args.steps:
        a, b = cascade.load(work / "A"), cascade.load(work / "B")
        queries = list(dataset.query_texts)[:args.queries]
        same = [r.doc_ids for r in a.search(queries, k=10)] == [r.doc_ids for r in b.search(queries, k=10)]
        results["latency_ms_per_query"] = {**latency(a, b, queries, args.repeats), "same_rankings": same,
                                           "queries": len(queries), "generations_A": a.generation,
                                           "deleted_rows_A": a.info()["deleted"], "load": load_avg()}
        print("latency", results["latency_ms_per_query"], flush=True)
    if "load" in args.steps:
        shutil.rmtree(work / "C", ignore_errors=True)
        shutil.copytree(work / "B", work / "C")  # new inodes: the first open hashes every file
        results["load"] = {"first_after_copy": load_in_subprocess(work / "C"), "again": load_in_subprocess(work / "C"),
                           "index_bytes": cascade.load(work / "C").info()["bytes"]}
        print("load", results["load"], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
