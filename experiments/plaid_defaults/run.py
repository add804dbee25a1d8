"""pipeline=colbert at its defaults (k=1000, 2-bit index, PLAID) against search=exhaustive, on SciFact and on
a 1,400-document SciFact subset, measured in one process with interleaved rounds.

    python experiments/plaid_defaults/run.py [--data ../shared/data/scifact] [--threads 1] [--rounds 8]

- Speed and recall against exhaustive: the 809 non-test SciFact queries (queries.jsonl minus those in
  qrels/test.tsv; no qrels needed), split into ``--rounds`` rounds. Each round runs PLAID and exhaustive
  search on the same queries, one after the other, the order alternating between rounds (ABBA), so
  both see the same machine load. ms/query is the ColBERT stage's wall time over the round, query
  encoding included; "search ms/query" is its score phase alone (retrieval without query encoding).
- Quality: nDCG@10 on the 300 test queries, once per corpus and search.
- The subset (:func:`subset_corpus`): every document judged for a test query, plus a seeded random
  fill (numpy ``default_rng(0)``, without replacement, from the other documents) up to 1,400, kept in
  corpus order; its queries are the same held-out / test queries.

Uses the cache ($CASCADE_CACHE_DIR); the first run builds both 2-bit indexes (SciFact: minutes).
Writes results.json and results.md next to this file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cascade import Pipeline, Run, evaluate, load_beir
from cascade.core.candidates import Batch
from cascade.core.data import Corpus, Dataset
from cascade.kernels.plaid_plan import plan_search
from cascade.stages.colbert import ColBERT

HERE = Path(__file__).resolve().parent
K = 1000  # conf/pipeline/colbert.yaml
SUBSET_DOCS, SUBSET_SEED = 1400, 0


def held_out_queries(data: Path, test: Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ids, texts) of the queries in queries.jsonl that are not test queries, in file order."""
    rows = [json.loads(line) for line in (data / "queries.jsonl").read_text().splitlines() if line.strip()]
    test_ids = set(test.query_ids)
    keep = [(str(r["_id"]), str(r.get("text") or "")) for r in rows if str(r["_id"]) not in test_ids]
    return tuple(i for i, _ in keep), tuple(t for _, t in keep)


def subset_corpus(ds: Dataset, size: int = SUBSET_DOCS, seed: int = SUBSET_SEED) -> Dataset:
    """The documents judged for ``ds``'s queries plus a seeded random fill up to ``size``, in corpus order."""
    judged = {ds.corpus.index_of[d] for rels in ds.qrels.values() for d in rels if d in ds.corpus.index_of}
    rest = np.array(sorted(set(range(len(ds.corpus))) - judged))
    fill = np.random.default_rng(seed).choice(rest, size - len(judged), replace=False)
    rows = sorted(judged | set(fill.tolist()))
    corpus = Corpus([ds.corpus.ids[i] for i in rows], [ds.corpus.texts[i] for i in rows])
    return Dataset(corpus, ds.query_ids, ds.query_texts, ds.qrels, f"{ds.name}-{size}")


def stages(cache: str | None) -> dict[str, ColBERT]:
    """The pipeline=colbert stage (conf/pipeline/colbert.yaml: k=1000, nbits=2, search=plaid) and its reference."""
    return {"plaid": ColBERT(k=K, nbits=2, search="plaid", cache_dir=cache, progress=False),
            "exhaustive": ColBERT(k=K, nbits=2, search="exhaustive", cache_dir=cache, progress=False)}


def timed_search(stage: ColBERT, batch: Batch) -> tuple[np.ndarray, float, float]:
    """(doc_idx, wall seconds, score-phase seconds) of one retrieval by ``stage``."""
    run = Pipeline([stage]).run(batch)
    trace = run.stages[-1]
    return run.candidates.doc_idx, trace.seconds, trace.phases.get("score", float("nan"))


def overlap(a: np.ndarray, b: np.ndarray, depth: int) -> float:
    """Mean over rows of |top-depth of a ∩ top-depth of b| / |top-depth of b| (b: the reference)."""
    vals = []
    for x, y in zip(a, b):
        ref = set(y[:depth][y[:depth] >= 0].tolist())
        vals.append(len(set(x[:depth][x[:depth] >= 0].tolist()) & ref) / max(len(ref), 1))
    return float(np.mean(vals))


def measure(name: str, ds: Dataset, held: tuple[tuple[str, ...], tuple[str, ...]], rounds: int,
            cache: str | None) -> dict:
    """Interleaved speed rounds on the held-out queries, recall against exhaustive, test nDCG@10."""
    st = stages(cache)
    Pipeline(list(st.values())[:1]).prepare(ds.corpus)  # both stages share the one index
    st["exhaustive"].prepare(ds.corpus)
    plan = plan_search(K, len(ds.corpus))
    ids, texts = held
    bounds = np.linspace(0, len(ids), rounds + 1).astype(int)
    wall = {s: 0.0 for s in st}
    score = {s: 0.0 for s in st}
    out: dict[str, list[np.ndarray]] = {s: [] for s in st}
    width = min(K, len(ds.corpus))
    for r, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        batch = Batch(texts[a:b], ds.corpus, None, ids[a:b])
        for s in (("plaid", "exhaustive") if r % 2 == 0 else ("exhaustive", "plaid")):
            idx, w, sc = timed_search(st[s], batch)
            wall[s], score[s] = wall[s] + w, score[s] + sc
            out[s].append(np.pad(idx, ((0, 0), (0, width - idx.shape[1])), constant_values=-1))
        print(f"{name} round {r + 1}/{rounds}: plaid {1000 * wall['plaid'] / b:.1f}, exhaustive "
              f"{1000 * wall['exhaustive'] / b:.1f} ms/query so far; load {os.getloadavg()}", flush=True)
    got, ref = np.concatenate(out["plaid"]), np.concatenate(out["exhaustive"])
    quality = {}
    for s, stage in st.items():
        run = Pipeline([stage]).run(Batch(ds.query_texts, ds.corpus, None, ds.query_ids))
        quality[s] = evaluate(Run(ds.query_ids, ds.corpus.ids, run.candidates), ds.qrels, ["nDCG@10"])["nDCG@10"]
    n = len(ids)
    return {"corpus": name, "docs": len(ds.corpus), "held-out queries": n, "rounds": rounds,
            "plan": {"exhaustive": plan.exhaustive, "ndocs": plan.ndocs, "rerank_docs": plan.rerank_docs,
                     "ncells": plan.ncells, "centroid_score_threshold": plan.centroid_score_threshold},
            "plaid ms/query": 1000 * wall["plaid"] / n, "exhaustive ms/query": 1000 * wall["exhaustive"] / n,
            "speed-up": wall["exhaustive"] / wall["plaid"],
            "plaid search ms/query": 1000 * score["plaid"] / n,
            "exhaustive search ms/query": 1000 * score["exhaustive"] / n,
            "search speed-up": score["exhaustive"] / score["plaid"],
            f"recall@{K} vs exhaustive": overlap(got, ref, K), "recall@100 vs exhaustive": overlap(got, ref, 100),
            "recall@10 vs exhaustive": overlap(got, ref, 10),
            "nDCG@10 plaid (test)": quality["plaid"], "nDCG@10 exhaustive (test)": quality["exhaustive"],
            "nDCG@10 ratio": quality["plaid"] / quality["exhaustive"], "load average after": os.getloadavg()}


def markdown(rows: list[dict]) -> str:
    cols = [c for c in rows[0] if c not in ("plan",)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else
                                       ", ".join(f"{v:.2f}" for v in r[c]) if isinstance(r[c], tuple) else str(r[c])
                                       for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--corpora", default="scifact,subset")
    parser.add_argument("--queries", type=int, default=None, help="only the first N held-out queries")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    ds = load_beir(data)
    ids, texts = held_out_queries(data, ds)
    held = (ids[:args.queries], texts[:args.queries]) if args.queries else (ids, texts)
    corpora = {"scifact": ds, "subset": subset_corpus(ds)}
    cache = os.environ.get("CASCADE_CACHE_DIR")
    env = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_before": os.getloadavg()}
    rows = [measure(c, corpora[c], held, args.rounds, cache) for c in args.corpora.split(",")]
    env["load_average_after"] = os.getloadavg()
    (HERE / f"{args.out}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    text = (f"Measured {env['date']}, {env['torch_threads']} torch thread(s), load average before "
            f"{env['load_average_before']}, after {env['load_average_after']}.\n\n{markdown(rows)}\n")
    (HERE / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
